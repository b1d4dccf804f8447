"""`infolens eval benchmark` end to end on 3 labelled photos with tiny settings: accuracy; the AUC study (every map
scored for the predicted and the true class, paired Wilcoxon tests against PMI/PatchSampler); the negative-evidence,
sanity, N and K studies; the report; a resume that computes nothing again and refuses changed settings; the same
records on Ray."""
import csv
import json
import os

import numpy as np
import pytest

from conftest import run_cli

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
FLAGS = ["--samplers", "patchsampler,mean", "--methods", "occlusion,pda,rise,mipin,random", "--rise-masks", "8",
         "--fills", "blur", "-K", "16", "-N", "1", "--steps", "4", "--study-photos", "2", "--sanity-every", "25",
         "--sample-counts", "1,2", "--patch-sizes", "16,32", "--negative-steps", "3", "-q"]


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "labels.csv"
    # chelsea's label is tabby (281), which the classifier ranks third: pred and true differ there
    path.write_text("file,class_index,name\nchelsea.png,281,tabby\ncoffee.png,967,espresso\n"
                    "rocket.jpg,812,space shuttle\n")
    return path


def records(folder):
    return {p: json.loads((folder / p).read_text()) for p in sorted(os.listdir(folder)) if p != "settings.json"}


def test_benchmark_end_to_end_and_resume(tmp_path, labels):
    out = tmp_path / "bench"
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *FLAGS)
    assert r.returncode == 0, r.stderr
    assert "3 photos: top-1" in r.stdout
    auc = records(out / "auc")
    assert sorted(auc) == ["chelsea.json", "coffee.json", "rocket.json"]
    chelsea = auc["chelsea.json"]
    assert chelsea["top5"][0] != 281 and 281 in chelsea["top5"] and not chelsea["top1_correct"]
    groups = {(r["map"], r["sampler"], r["target"]) for r in chelsea["rows"]}
    assert len(groups) == 9 * 2  # pmi, ig × 2 samplers, occlusion, woe, rise, mipin, random; pred and true
    for row in chelsea["rows"]:
        assert 0 <= row["deletion_auc"] <= 1 and 0 <= row["insertion_auc"] <= 1
    pmi = {r["target"]: r for r in chelsea["rows"] if r["map"] == "pmi" and r["sampler"] == "patchsampler"}
    assert pmi["pred"]["class"] != pmi["true"]["class"] and pmi["pred"]["deletion_auc"] != pmi["true"]["deletion_auc"]
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == sum(len(r["rows"]) for r in auc.values())

    # negative evidence: every photo; both orders start at the photo's own p(class) and change as pixels go
    negative = records(out / "negative")
    assert len(negative) == 3
    for rec in negative.values():
        assert 0 < rec["negative_pixels"] < 224 * 224
        for key in ("patchsampler/negative", "patchsampler/random", "blur/negative", "blur/random"):
            p = rec["curves"][key]["p_class"]
            assert len(p) == 4 and np.isclose(p[0], rec["top5_probs"][0], atol=1e-6) and p[-1] != p[0]
    # sanity: 2 photos, every method's maps on the same randomized models, the cause test for each sampler
    sanity = records(out / "sanity")
    assert len(sanity) == 2
    for rec in sanity.values():
        assert [s["layers"] for s in rec["steps"]] == [0, 1, 26, 50]
        assert set(rec["steps"][0]["correlation"]) == {"pmi", "ig", "occlusion", "woe", "rise", "mipin"}
        assert all(c["spearman"] == pytest.approx(1) for c in rec["steps"][0]["correlation"].values())
        # PMI passes the check on this model (docs/sanity): its map on the fully random model is another map
        assert abs(rec["steps"][-1]["correlation"]["pmi"]["spearman"]) < 0.5
    # cause: every sampler, both maps, every covariate
    cause = records(out / "cause")
    assert len(cause) == 2
    for rec in cause.values():
        assert set(rec["cause"]) == {"patchsampler", "gray", "mean", "black", "noise", "gaussian"}
        for per_map in rec["cause"].values():
            for values in per_map.values():
                assert len(values) == 11 and all(v is None or -1 <= v <= 1 for v in values.values())
    # N: two independent runs per N; K: the PatchSampler only where one is shipped
    for rec in records(out / "samples").values():
        rows = {(r["map"], r["N"]): r for r in rec["rows"]}
        assert sorted(rows) == [("ig", 1), ("ig", 2), ("pmi", 1), ("pmi", 2)]
        assert rows[("pmi", 1)]["se_mean"] is None and rows[("pmi", 2)]["se_mean"] > 0
        assert -1 <= rows[("pmi", 2)]["split_pearson"] < 1 and rows[("pmi", 2)]["forwards"] == 2 * 196 + 1
    for rec in records(out / "patch").values():
        assert sorted({(r["sampler"], r["K"]) for r in rec["rows"]}) == [("mean", 16), ("mean", 32),
                                                                         ("patchsampler", 16)]
    report = (out / "report.md").read_text()
    assert "top-1 33.3 %" in report and "### Fill blur, class true" in report and "Wilcoxon" in report
    for heading in ("## Negative evidence", "## Sanity checks", "## Why IG stays", "## The number of in-fills N",
                    "## Patch size K"):
        assert heading in report
    for name in ("auc_blur_pred.png", "negative.png", "sanity.png", "samples.png", "negative.csv", "sanity.csv",
                 "cause.csv", "samples.csv", "patch.csv"):
        assert (out / name).stat().st_size > 100, name

    stamps = {p: os.stat(p).st_mtime_ns for p in out.glob("*/*.json")}
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *FLAGS, "--report",
                tmp_path / "docs")
    assert r.returncode == 0 and {p: os.stat(p).st_mtime_ns for p in out.glob("*/*.json")} == stamps
    assert (tmp_path / "docs" / "report.md").read_text().split("\n")[4:] == report.split("\n")[4:]
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *FLAGS[:-3],
                "--negative-steps", "8", "-q")
    assert r.returncode == 2 and "negative study with other settings (steps)" in r.stderr


def test_on_ray_the_records_are_those_of_one_process(tmp_path, labels):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    flags = ["--samplers", "mean", "--methods", "occlusion,random", "--fills", "blur", "-K", "16", "--steps", "4",
             "--studies", "auc,patch", "--patch-sizes", "32", "--study-photos", "2", "-q"]
    for name, extra in (("plain", []), ("ray", ["--ray"])):
        r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", tmp_path / name, *flags,
                    *extra)
        assert r.returncode == 0, r.stderr

    def values(name):
        out = {}
        for study in ("auc", "patch"):
            for p, rec in records(tmp_path / name / study).items():
                out[(study, p)] = [{k: v for k, v in row.items() if "seconds" not in k} for row in rec["rows"]]
        return out

    plain = values("plain")
    assert len(plain) == 5 and values("ray") == plain


def test_bad_input_is_one_line(tmp_path, labels):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class_index\nmissing.png,3\n")
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", bad, "--out", tmp_path / "o")
    assert r.returncode == 2 and "missing.png" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", tmp_path / "none.csv", "--out", tmp_path / "o")
    assert r.returncode == 2 and "--labels" in r.stderr
    for flags, needle in ((["--studies", "auc,nope"], "unknown study 'nope': choose from auc, negative"),
                          (["--sample-counts", "1,x"], "takes positive integers separated by commas, got '1,x' "
                                                       "(--sample-counts)"),
                          (["--study-photos", "0"], "(--study-photos)")):
        r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", tmp_path / "o2", *flags)
        assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_partial_spearman_removes_a_shared_cause():
    from infolens.evaluate.studies import partial_spearman
    from infolens.evaluate.sanity import correlations

    rng = np.random.default_rng(0)
    cause = rng.random(4000)
    a, b = cause + 0.3 * rng.random(4000), cause + 0.3 * rng.random(4000)
    assert correlations(a, b)["spearman"] > 0.8 and abs(partial_spearman(a, b, cause)) < 0.05
    shared = rng.random(4000)
    assert partial_spearman(a + 3 * shared, b + 3 * shared, cause) > 0.8
    assert partial_spearman(cause, b, cause) is None
    c, o, n1, n2 = rng.standard_normal((4, 4000))  # two shared causes: one partialled out is not enough
    assert partial_spearman(c + o + n1, c + o + n2, c) > 0.4
    assert abs(partial_spearman(c + o + n1, c + o + n2, c, o)) < 0.1


def test_change_map_is_the_in_fills_distance_from_the_patch():
    from infolens import load_sampler
    from infolens.evaluate.studies import change_map

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    m = change_map(load_sampler("black", K=16), image, 16, 16, 4, 0)
    assert m.shape == (32, 48) and m.dtype == np.float32
    for y in (0, 16):
        for x in (0, 16, 32):
            patch = image[y:y + 16, x:x + 16].astype(np.float64)
            assert np.allclose(m[y:y + 16, x:x + 16], (patch ** 2).mean(), rtol=1e-5)
