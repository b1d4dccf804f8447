"""A quick part of the hostile-image corpus (tests/fuzz/corpus.py; the whole of it: `make fuzz`) through the library,
the CLI and the server (jobs and the KServe route): every case ends in its explanation or one clear line, never a traceback, a crash, a hang or a memory
blow-up; valid images are explained and bombs, empty files and non-images refused."""
import collections
import os
import sys

import pytest

from conftest import served_copy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402
import run  # noqa: E402


def quick(seed: int = 0) -> list[corpus.Case]:
    """The first two cases of every kind and every 8th of the rest, from the 1000-case corpus."""
    seen = collections.Counter()
    out = []
    for k, c in enumerate(corpus.cases(seed, 1000)):
        seen[c.kind] += 1
        if seen[c.kind] <= 2 or k % 8 == 0:
            out.append(c)
    return out


def test_the_corpus_is_seeded_and_covers_every_format_and_kind():
    a, b = corpus.cases(0, 1000), corpus.cases(0, 1000)
    assert len(a) >= 1000 and [c.data for c in a] == [c.data for c in b]
    assert [c.data for c in corpus.cases(1, 1000)] != [c.data for c in a]
    exts = {os.path.splitext(c.name)[1] for c in a}
    assert exts >= set(corpus.FORMATS)
    kinds = {c.kind for c in a}
    for must in ("truncated", "bit flips in the header", "bit flips in the data", "empty file", "not an image",
                 "decompression bomb", "PNG palette missing", "PNG bad CRC", "valid: 16 bits", "valid: CMYK",
                 "valid: frames", "valid: EXIF orientation", "valid: palette"):
        assert must in kinds, must
    bombs = [c for c in a if c.kind == "decompression bomb"]
    assert {os.path.splitext(c.name)[1] for c in bombs} == set(corpus.FORMATS)
    assert all(len(c.data) < 1 << 20 for c in bombs), "a bomb is small on disk"


def test_judge_flags_what_must_not_happen():
    valid, refused, other = (corpus.Case("k", "a.png", b"", valid=True), corpus.Case("k", "b.png", b"", refused=True),
                             corpus.Case("k", "c.png", b""))
    assert run.judge(valid, {"outcome": "ok"}) and not run.judge(valid, {"outcome": "refused"})
    assert run.judge(refused, {"outcome": "refused"}) and not run.judge(refused, {"outcome": "ok"})
    assert run.judge(other, {"outcome": "ok"}) and run.judge(other, {"outcome": "refused"})
    for bad in ("traceback", "crash", "hang", "memory"):
        assert not run.judge(other, {"outcome": bad})


@pytest.mark.slow
def test_a_quick_part_of_the_corpus_through_the_library_the_cli_and_the_server(model_file, tmp_path):
    served = served_copy(model_file, tmp_path / "served")
    cases = quick()
    results = run.run(cases, served, timeout=10.0, max_mb=1024)
    assert set(results) == {"library", "cli", "server jobs", "server kserve"}
    wrong = [f"{path}: {c.name} ({c.kind}): {r[c.name]}" for path, r in results.items() for c in cases
             if not run.judge(c, r[c.name])]
    assert not wrong, "\n".join(wrong)
    for path, r in results.items():  # the corpus exercises both outcomes on both paths
        outcomes = collections.Counter(v["outcome"] for v in r.values())
        assert outcomes["ok"] >= 20 and outcomes["refused"] >= 20, (path, outcomes)
