"""Evaluation of explanations (DESIGN §1 evaluate/): curves.py (deletion/insertion and negative evidence), sanity.py
(model randomization), suite.py (the methods side by side on a few images), benchmark.py (the faithfulness
benchmark on labelled photos) and studies.py (its negative-evidence, sanity, N and K sections), plots.py
(matplotlib)."""
