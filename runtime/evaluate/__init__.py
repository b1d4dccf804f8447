"""Evaluation of explanations (DESIGN §1 evaluate/): fills.py (what removed pixels become), curves.py (removal curves
and negative evidence), maps.py (the maps a study scores, the controls, the candidates), sanity.py (model
randomization), benchmark.py (the runner of `eval benchmark` and `eval suite`, and its statistics), removal.py,
and its studies: studies.py (the registry: names → studies), removal.py, pointing.py, indist.py, negative.py,
randomization.py (sanity, cause), settings.py (N, K), mipin.py; plots.py (matplotlib)."""
