"""`infolens eval benchmark` end to end on 3 labelled photos and 2 mosaics with tiny settings: accuracy; the removal
study (every map and control scored in both orders under every fill for the predicted and the true
class, SRG, paired Wilcoxon tests against PMI/PatchSampler, Kendall τ between fills, ROAD's protocol); the pointing
game; the negative-evidence, sanity, N and K studies; the report; a resume that computes nothing again and refuses
changed settings; the same records on Ray."""
import csv
import json
import os

import numpy as np
import pytest

from conftest import REPO, run_cli

EXAMPLES = os.path.join(REPO, "examples")
FLAGS = ["--samplers", "patchsampler,mean", "--methods", "occlusion,pda,rise,mipin,cam,random,edge", "--rise-masks",
         "8", "--fills", "blur,road,patchsampler", "--fill-draws", "2", "--smooth", "8", "--extra-photos", "1",
         "--scales", "", "--targets", "pred,true", "-K", "16", "-N", "1", "--steps", "4", "--grids", "16:16:1,8:8:1",
         "--grid-photos", "1", "--studies", "removal,grids,negative,sanity,cause,samples,patch", "--study-photos", "2",
         "--sanity-every", "25", "--sample-counts", "1,2", "--patch-sizes", "16,32", "--negative-steps", "3", "-q"]


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "labels.csv"
    # chelsea's label is tabby (281), which the classifier ranks third: pred and true differ there
    path.write_text("file,class_index,name\nchelsea.png,281,tabby\ncoffee.png,967,espresso\n"
                    "rocket.jpg,812,space shuttle\n")
    return path


def records(folder):
    return {p: json.loads((folder / p).read_text()) for p in sorted(os.listdir(folder))
            if p.endswith(".json") and p != "settings.json"}


@pytest.mark.slow
def test_benchmark_end_to_end_and_resume(tmp_path, labels):
    out = tmp_path / "bench"
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *FLAGS)
    assert r.returncode == 0, r.stderr
    assert "3 photos: top-1" in r.stdout
    removal = records(out / "removal")
    assert sorted(removal) == ["chelsea.json", "coffee.json", "rocket.json"]
    chelsea = removal["chelsea.json"]
    assert chelsea["top5"][0] != 281 and 281 in chelsea["top5"] and not chelsea["top1_correct"]
    groups = {(r["map"], r["sampler"], r["target"], r["fill"]) for r in chelsea["rows"]}
    # pmi, ig × 2 samplers, occlusion, woe, rise, mipin, cam, random, edge, each also smoothed (on --extra-photos 1:
    # the first photo); pred and true; 3 fills
    assert len(groups) == len(chelsea["rows"]) == 11 * 2 * 2 * 3
    assert {s for _, s, _, _ in groups} == {"patchsampler", "mean", "-", "patchsampler~smooth", "mean~smooth",
                                            "-~smooth"}
    assert {r["sampler"] for r in removal["coffee.json"]["rows"]} == {"patchsampler", "mean", "-"}
    assert chelsea["extras"] and not removal["coffee.json"]["extras"]
    for row in chelsea["rows"]:
        assert 0 <= row["morf_auc"] <= 1 and 0 <= row["lerf_auc"] <= 1
        assert row["srg"] == pytest.approx(row["lerf_auc"] - row["morf_auc"])
        # the map's own forwards (both ends of every curve are shared): blur, patchsampler (2 draws), road (10 steps)
        assert row["eval_forwards"] in (0, 2 * 3, 2 * 3 * 2, 2 * 9)
        if row["fill"] == "road":
            assert len(row["road_morf"]) == len(row["road_lerf"]) == 9
    pmi = {(r["target"], r["fill"]): r for r in chelsea["rows"] if r["map"] == "pmi" and r["sampler"] == "patchsampler"}
    assert pmi["pred", "blur"]["class"] != pmi["true", "blur"]["class"]
    assert pmi["pred", "blur"]["morf_auc"] != pmi["true", "blur"]["morf_auc"]
    assert len({pmi["pred", f]["morf_auc"] for f in ("blur", "road", "patchsampler")}) == 3
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == sum(len(r["rows"]) for r in removal.values())

    # grids: one photo, the maps that take a grid at each grid, the PatchSampler fill at the grid's K
    (grid,) = records(out / "grids").values()
    by_grid = {}
    for row in grid["rows"]:
        by_grid.setdefault(row["grid"], set()).add((row["map"], row["sampler"]))
    assert sorted(by_grid) == ["K16 S16 N1", "K8 S8 N1"]
    for maps in by_grid.values():
        assert maps == {("pmi", "patchsampler"), ("ig", "patchsampler"), ("pmi", "mean"), ("ig", "mean"),
                        ("pmi", "ring-mean"), ("ig", "ring-mean"), ("pmi", "black"), ("ig", "black"),
                        ("occlusion", "-"), ("cam", "-"), ("random", "-"), ("edge", "-")}
    k8 = {(r["map"], r["sampler"], r["fill"], r["target"]): r for r in grid["rows"] if r["grid"] == "K8 S8 N1"}
    k16 = {(r["map"], r["sampler"], r["fill"], r["target"]): r for r in grid["rows"] if r["grid"] == "K16 S16 N1"}
    assert k8["cam", "-", "blur", "pred"]["srg"] == pytest.approx(k16["cam", "-", "blur", "pred"]["srg"])
    assert k8["cam", "-", "patchsampler", "pred"]["srg"] != k16["cam", "-", "patchsampler", "pred"]["srg"]
    assert k8["pmi", "mean", "blur", "pred"]["explain_forwards"] == 28 * 28 + 1

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
        assert set(rec["steps"][0]["correlation"]) == {"pmi", "ig", "occlusion", "woe", "rise", "mipin", "cam"}
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
    assert "top-1 33.3 %" in report and "#### Fill road (10 steps, ROAD's protocol)" in report
    for text in ("### Class true", "Wilcoxon", "#### SRG averaged over the 3 fills", "Kendall τ", "### ROAD's protocol",
                 "#### Smoothed copies and candidates (1 photos)", "## Removal at other grids", "### Grid K8 S8 N1"):
        assert text in report, text
    for heading in ("## Negative evidence", "## Sanity checks", "## Why IG stays", "## The number of in-fills N",
                    "## Patch size K"):
        assert heading in report
    for name in ("srg_pred.png", "srg_true.png", "grid_k8s8n1_srg_pred.png", "grid_k16s16n1_results.csv", "negative.png", "sanity.png", "samples.png", "negative.csv", "sanity.csv",
                 "cause.csv", "samples.csv", "patch.csv"):
        assert (out / name).stat().st_size > 100, name

    stamps = {p: os.stat(p).st_mtime_ns for p in out.glob("*/*.json")}
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *FLAGS, "--report",
                tmp_path / "docs")
    assert r.returncode == 0 and {p: os.stat(p).st_mtime_ns for p in out.glob("*/*.json")} == stamps
    assert (tmp_path / "docs" / "report.md").read_text().split("\n")[4:] == report.split("\n")[4:]
    # --report-only measures nothing: a missing record stays missing, the report covers what there is
    (out / "removal" / "rocket.json").unlink()
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *FLAGS, "--report-only")
    assert r.returncode == 2 and not (out / "removal" / "rocket.json").exists()
    assert "removal (2 photos)" in (out / "report.md").read_text()
    assert "--report-only" not in (out / "report.md").read_text()
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *FLAGS[:-3],
                "--negative-steps", "8", "-q")
    assert r.returncode == 2 and "negative study with other settings (steps)" in r.stderr


@pytest.mark.slow
def test_on_ray_the_records_are_those_of_one_process(tmp_path, labels):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    flags = ["--samplers", "mean", "--methods", "occlusion,random", "--fills", "blur", "-K", "16", "--steps", "4",
             "--studies", "removal,patch", "--patch-sizes", "32", "--study-photos", "2", "--smooth", "0", "--scales", "",
             "-q"]
    for name, extra in (("plain", []), ("ray", ["--ray"])):
        r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", tmp_path / name, *flags,
                    *extra)
        assert r.returncode == 0, r.stderr

    def values(name):
        out = {}
        for study in ("removal", "patch"):
            for p, rec in records(tmp_path / name / study).items():
                out[(study, p)] = [{k: v for k, v in row.items() if "seconds" not in k} for row in rec["rows"]]
        return out

    plain = values("plain")
    assert len(plain) == 5 and values("ray") == plain


@pytest.mark.slow
def test_bad_input_is_one_line(tmp_path, labels):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class_index\nmissing.png,3\n")
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", bad, "--out", tmp_path / "o")
    assert r.returncode == 2 and "missing.png" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", tmp_path / "none.csv", "--out", tmp_path / "o")
    assert r.returncode == 2 and "--labels" in r.stderr
    for flags, needle in ((["--studies", "removal,nope"], "unknown study 'nope': choose from removal, grids, pointing"),
                          (["--fills", "blur,fog"], "unknown fill 'fog': choose from blur, black, mean, road, "
                                                    "patchsampler (--fills)"),
                          (["--methods", "cam,magic"], "unknown method 'magic'"),
                          (["--targets", "pred,best"], "(--targets)"), (["--mosaics", "0"], "(--mosaics)"),
                          (["--sample-counts", "1,x"], "takes positive integers separated by commas, got '1,x' "
                                                       "(--sample-counts)"),
                          (["--study-photos", "0"], "(--study-photos)")):
        r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", tmp_path / "o2", *flags)
        assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_partial_spearman_removes_a_shared_cause():
    from infolens.evaluate.randomization import partial_spearman
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
    from infolens.evaluate.randomization import change_map

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    m = change_map(load_sampler("black", K=16), image, 16, 16, 4, 0)
    assert m.shape == (32, 48) and m.dtype == np.float32
    for y in (0, 16):
        for x in (0, 16, 32):
            patch = image[y:y + 16, x:x + 16].astype(np.float64)
            assert np.allclose(m[y:y + 16, x:x + 16], (patch ** 2).mean(), rtol=1e-5)


@pytest.fixture
def four(tmp_path):
    """The four example photos, each labelled with the class the shipped classifier gives it at the quadrant's size
    (none reaches p 0.5 there, so the pointing test qualifies them at --min-p 0.3)."""
    path = tmp_path / "four.csv"
    path.write_text("file,class_index\nastronaut.png,450\nchelsea.png,285\ncoffee.png,967\nrocket.jpg,540\n")
    return path


@pytest.mark.slow
def test_pointing_game_end_to_end(tmp_path, four):
    out = tmp_path / "point"
    flags = ["--studies", "pointing", "--mosaics", "2", "--min-p", "0.3", "--samplers", "mean", "--methods",
             "occlusion,cam,random,edge", "-K", "16", "-N", "1", "--smooth", "4", "--scales", "", "-q"]
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", four, "--out", out, *flags)
    assert r.returncode == 0, r.stderr
    recs = records(out / "pointing")
    assert sorted(recs) == ["mosaic_0000.json", "mosaic_0001.json"]
    with open(out / "pointing" / "mosaics.csv") as f:
        listing = list(csv.DictReader(f))
    assert len(listing) == 2 and {listing[0][f"q{q}"] for q in range(4)} == {"astronaut.png", "chelsea.png",
                                                                              "coffee.png", "rocket.jpg"}
    rec = recs["mosaic_0000.json"]
    assert sorted(rec["classes"]) == [285, 450, 540, 967]
    scores = {}
    for row in rec["rows"]:
        assert 0 <= row["score"] <= 1
        scores.setdefault((row["map"], row["sampler"]), []).append(row["score"])
    assert all(len(v) == 4 for v in scores.values()) and len(scores) == 6 * 2  # pmi, ig, occlusion, cam, controls
    for key in (("ig", "mean"), ("edge", "-"), ("random", "-"), ("edge", "-~smooth")):
        assert np.mean(scores[key]) == pytest.approx(0.25), key  # the same map for every class: chance exactly
    assert scores["pmi", "mean~smooth"] != scores["pmi", "mean"]  # the smoothed copy is another map
    report = (out / "report.md").read_text()
    assert "## The grid pointing game" in report and "4 of 4 photos qualified" in report
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", four, "--out", out, *flags[:-1], "--min-p",
                "0.9", "-q")
    assert r.returncode == 2 and "pointing study with other settings (min_p)" in r.stderr


def test_pointing_score_and_mosaic_by_construction():
    from infolens.evaluate.pointing import boxes, draw_mosaics, mosaic, pointing_score

    H, W = 10, 13
    for q, (y0, y1, x0, x1) in enumerate(boxes(H, W)):
        m = np.zeros((H, W))
        m[y0:y1, x0:x1] = 1.0
        assert pointing_score(m, q) == 1 and all(pointing_score(m, o) == 0 for o in range(4) if o != q)
        m2 = m - 0.5 * (m == 0)  # negative evidence elsewhere: only the positive mass counts
        assert pointing_score(m2, q) == 1
    half = np.zeros((H, W))
    half[:5] = 1.0  # the top half: quadrants 0 and 1 share it by area
    assert pointing_score(half, 0) == pytest.approx(6 / 13) and pointing_score(half, 2) == 0
    assert pointing_score(-np.ones((H, W)), 0) == 0
    tiles = [np.full((H, W, 3), v, np.uint8) for v in (10, 20, 30, 40)]
    mo = mosaic(tiles)
    for (y0, y1, x0, x1), v in zip(boxes(H, W), (10, 20, 30, 40)):
        assert (mo[y0:y1, x0:x1] == v).all()
    pool = [(f"p{i}", i % 5, 0.9) for i in range(12)]
    drawn = draw_mosaics(pool, 30, 0)
    assert len(drawn) == 30 and all(len({c for _, c in m}) == 4 for m in drawn)
    assert drawn == draw_mosaics(pool, 30, 0) and draw_mosaics(pool[:3], 5, 0) == []


@pytest.mark.slow
def test_the_candidates_shrunk_by_the_standard_error_and_multi_scale():
    from infolens import OnnxClassifier
    from infolens.evaluate.maps import make_maps, shrunk
    from infolens.evaluate.removal import RemovalStudy

    v, se = np.array([[2.0, 0.1, -1.0, 0.0]]), np.array([[0.0, 1.0, 1.0, 0.0]])
    np.testing.assert_allclose(shrunk(v, se), [[2.0, 0.1 * 0.01 / 1.01, -0.5, 0.0]], rtol=1e-6)
    clf = OnnxClassifier.from_card(os.path.join(EXAMPLES, "..", "models", "efficientnet_lite0.onnx"))
    study = RemovalStudy(clf, ["patchsampler", "mean"], ["random"], samples=2, smooth=0, shrink=True, scales=(8,))
    image = clf.load_image(os.path.join(EXAMPLES, "coffee.png"))
    maps = {(m.name, m.sampler): m for m in make_maps(study, image, [967], 0, study.maps)}
    # only the maps with a Monte-Carlo error get a shrunk copy: the mean sampler is deterministic, random has none
    assert sorted(maps) == sorted([("pmi", "patchsampler"), ("ig", "patchsampler"), ("pmi", "mean"), ("ig", "mean"),
                                   ("random", "-"), ("pmi", "patchsampler@16+8"), ("ig", "patchsampler@16+8"),
                                   ("pmi", "patchsampler+se"), ("ig", "patchsampler+se"),
                                   ("pmi", "patchsampler@16+8+se"), ("ig", "patchsampler@16+8+se")])
    base, copy = maps["pmi", "patchsampler"], maps["pmi", "patchsampler+se"]
    np.testing.assert_allclose(copy.per_class[967], shrunk(base.per_class[967], base.stderr[967]), rtol=1e-6)
    assert np.abs(copy.per_class[967]).sum() < np.abs(base.per_class[967]).sum()
    # multi-scale: the mean of the K=16 map and the K=8 (S=8) map of the same PatchSampler family
    from infolens import Explainer, load_sampler
    at8 = Explainer(clf, load_sampler("patchsampler", K=8)).explain(image, classes=[967], stride=8, samples=2)
    ms = maps["pmi", "patchsampler@16+8"]
    np.testing.assert_allclose(ms.per_class[967], (base.per_class[967] + at8.map_for("pmi", 967)) / 2, rtol=1e-5,
                               atol=1e-6)
    assert ms.forwards == base.forwards + at8.forwards  # each run counts its own p(Y|x)


def test_the_verdict_puts_the_protocols_side_by_side_against_the_default_map():
    from scipy import stats

    from infolens.evaluate.benchmark import Study
    from infolens.evaluate.report import verdict_section
    from infolens.evaluate.stats import ci
    from infolens.methods import METHODS

    base = METHODS["pmi"].default_sampler
    rng = np.random.default_rng(0)
    scores = {("pmi", base): rng.random(6), ("cam", "-"): rng.random(6) + 0.5, ("edge", "-"): rng.random(6) - 0.5}

    class Scored(Study):  # a study whose headline is given: the verdict reads nothing else of it
        def __init__(self, name, label, keys):
            super().__init__(None)
            self.name, self.headline_label, self.keys = name, label, keys

        def headline(self, records):
            return [{"map": m, "sampler": s, "image": f"photo{i}", "score": float(scores[m, s][i] + (self.name == "b"))}
                    for m, s in self.keys for i in range(6)]

    a, b = Scored("a", "SRG", list(scores)), Scored("b", "pointing", [("pmi", base), ("cam", "-")])
    lines = verdict_section([a, b, Scored("c", "", [])], {"a": [], "b": [], "c": []})
    table = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("|")]
    head, rows = table[0], {tuple(row[:2]): row[2:] for row in table[2:]}
    assert head[2::2] == ["a: SRG (rank)", "b: pointing (rank)"] and len(head) == 6  # c has no headline
    cam = rows["cam", "-"]
    d = scores["cam", "-"] - scores["pmi", base]
    m, lo, hi = ci(d)
    assert cam[0] == f"{scores['cam', '-'].mean():.3f} (1)"
    assert cam[1].startswith(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}], {stats.wilcoxon(d).pvalue:.2g}")
    assert cam[2] == f"{scores['cam', '-'].mean() + 1:.3f} (1)"
    assert rows["pmi", base][1] == "" and rows["edge", "-"][2:] == ["—", ""]  # the default is the base
    assert rows["edge", "-"][0].endswith("(3)") and len(rows) == 3
    assert verdict_section([a], {"a": []}) == []  # one protocol is not a comparison


@pytest.mark.slow
def test_a_resume_with_fewer_multi_scale_candidates_keeps_the_records(tmp_path, labels):
    out = tmp_path / "few"
    flags = ["--studies", "removal", "--limit", "1", "--samplers", "mean", "--methods", "random", "--fills", "blur",
             "--steps", "2", "-K", "32", "-N", "1", "--smooth", "0", "--shrink", "no", "--extra-photos", "1", "-q"]
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *flags, "--scales", "16")
    assert r.returncode == 0, r.stderr
    (rec,) = records(out / "removal").values()
    assert {row["sampler"] for row in rec["rows"]} == {"mean", "mean@32+16", "-"}
    stamps = {p: os.stat(p).st_mtime_ns for p in out.glob("removal/*.json") if p.name != "settings.json"}
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *flags, "--scales", "")
    assert r.returncode == 0, r.stderr
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps  # nothing measured again
    assert json.loads((out / "removal" / "settings.json").read_text())["scales"] == []
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *flags, "--scales", "16")
    assert r.returncode == 2 and "removal study with other settings (scales)" in r.stderr  # no longer promised


@pytest.mark.slow
def test_incremental_inference_scores_as_full_forwards_and_each_row_says_how_it_ran(tmp_path, labels):
    """`--incremental on`: the maps whose copies run through perturbation batches run incrementally, recorded per
    row, and score as with full forwards (the maps agree within float rounding); a resume may change the mode; a
    record from before the field existed reads as full forwards in results.csv."""
    flags = ["--studies", "removal", "--samplers", "mean", "--methods", "occlusion,cam", "--fills", "blur", "--steps",
             "4", "-K", "16", "-N", "1", "--smooth", "0", "--shrink", "no", "--scales", "", "-q"]
    full, mixed = tmp_path / "full", tmp_path / "mixed"
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", full, *flags, "--limit", 2)
    assert r.returncode == 0, r.stderr
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", mixed, *flags, "--limit", 1)
    assert r.returncode == 0, r.stderr
    (first,) = records(mixed / "removal")
    old = json.loads((mixed / "removal" / first).read_text())
    for row in old["rows"]:
        del row["explain_incremental"]  # as written before the field existed
    (mixed / "removal" / first).write_text(json.dumps(old))
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", mixed, *flags, "--limit", 2,
                "--incremental", "on")
    assert r.returncode == 0, r.stderr
    on, off = records(mixed / "removal"), records(full / "removal")
    (second,) = set(on) - {first}
    assert on[first] == old  # not measured again
    ran = {(row["map"], row["sampler"]): row["explain_incremental"] for row in on[second]["rows"]}
    assert ran == {("pmi", "mean"): True, ("ig", "mean"): True, ("occlusion", "-"): True, ("cam", "-"): False}
    assert not any(row["explain_incremental"] for rec in off.values() for row in rec["rows"])
    for a, b in zip(on[second]["rows"], off[second]["rows"]):
        assert (a["map"], a["sampler"]) == (b["map"], b["sampler"])
        assert abs(a["morf_auc"] - b["morf_auc"]) < 1e-4 and abs(a["lerf_auc"] - b["lerf_auc"]) < 1e-4, (a, b)
    with open(mixed / "results.csv") as f:
        table = list(csv.DictReader(f))
    a, b = old["image"], on[second]["image"]
    assert {(row["image"], row["explain_incremental"]) for row in table} == {(a, "False"), (b, "True"), (b, "False")}


def test_pda_shares_the_gaussian_run_and_an_equal_order_shares_the_curves(tmp_path):
    """PDA's woe comes from PMI/gaussian's forwards (the map of its own run, no forward more); on non-overlapping
    patches it orders the pixels as PMI/gaussian does, so its curves are PMI's, run once."""
    import onnx_builders
    from infolens import Explainer, OnnxClassifier, Preprocessing
    from infolens.evaluate.maps import make_maps
    from infolens.evaluate.removal import RemovalStudy

    clf = OnnxClassifier(onnx_builders.region_classifier(tmp_path / "region.onnx", 16, 16, (4, 8, 6, 12)),
                         Preprocessing(resize="none"))
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    study = RemovalStudy(clf, ["gaussian", "mean"], ["pda", "random"], K=4, stride=4, samples=3, steps=4,
                         fills=["blur", "road"], smooth=0, shrink=False, extra_photos=1)
    rows = study.measure(image, 0, 0)["rows"]
    by = {(r["map"], r["sampler"], r["fill"]): r for r in rows}
    assert {(m, s) for m, s, _ in by} == {("pmi", "gaussian"), ("ig", "gaussian"), ("woe", "-"), ("pmi", "mean"),
                                          ("ig", "mean"), ("random", "-")}
    for fill in ("blur", "road"):
        woe, pmi = by["woe", "-", fill], by["pmi", "gaussian", fill]
        assert woe["explain_forwards"] == pmi["explain_forwards"] == 1 + 16 * 3
        assert (woe["morf_auc"], woe["lerf_auc"]) == (pmi["morf_auc"], pmi["lerf_auc"])
        assert woe["eval_forwards"] == 0 < pmi["eval_forwards"]
    own = Explainer(clf, study.sampler("gaussian", 4)).explain(image, classes=[0], stride=4, samples=3, method="pda")
    before = clf.rows_run
    maps = make_maps(study, image, [0], 0, study.plain)
    assert clf.rows_run - before == (1 + 16 * 3) + (1 + 16)  # the gaussian run (N=3) and the mean run (N=1) only
    (woe_map,) = [m for m in maps if m.name == "woe"]
    np.testing.assert_array_equal(woe_map.per_class[0], own.maps["woe"][0])


def test_studies_share_the_explanations_they_have_in_common(tmp_path):
    """An explanation one study made (OUT/.explanations/) is read back by another that asks for the same one: the
    same maps, forwards and cost for no forward; any other setting, photo or classifier misses."""
    import onnx_builders
    from infolens import OnnxClassifier, Preprocessing
    from infolens.evaluate.maps import make_maps
    from infolens.evaluate.negative import NegativeStudy
    from infolens.evaluate.removal import RemovalStudy

    clf = OnnxClassifier(onnx_builders.region_classifier(tmp_path / "region.onnx", 16, 16, (4, 8, 6, 12)),
                         Preprocessing(resize="none"))
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    folder = str(tmp_path / ".explanations")

    def removal(seed=0):
        study = RemovalStudy(clf, ["gaussian", "mean"], ["pda", "rise", "random"], K=4, stride=4, samples=3,
                             rise_masks=20, seed=seed, fills=["blur"], smooth=0, shrink=False, extra_photos=1)
        study.explanations = folder
        return study

    def run(study):
        before = clf.rows_run
        maps = make_maps(study, image, [0], 0, study.plain)
        return {(m.name, m.sampler): m for m in maps}, clf.rows_run - before

    first, ran = run(removal())
    assert ran == (1 + 16 * 3) + (1 + 16) + (1 + 20)  # gaussian (with woe), mean, RISE
    assert len(os.listdir(folder)) == 2 * 3  # an .npz and a .json per explanation
    again, ran_again = run(removal())
    assert ran_again == 0 and again.keys() == first.keys()
    for k, m in first.items():
        np.testing.assert_array_equal(again[k].per_class[0 if 0 in m.per_class else None],
                                      m.per_class[0 if 0 in m.per_class else None])
        assert (again[k].forwards, again[k].seconds) == (m.forwards, m.seconds)
    _, ran_other_seed = run(removal(seed=1))
    assert ran_other_seed == ran
    negative = NegativeStudy(clf, sampler="mean", K=4, stride=4, samples=3, fills=("blur",))
    negative.explanations = folder
    before = clf.rows_run
    record = negative.measure(image, 0, 0)
    assert record["explain_forwards"] == 1 + 16 and clf.rows_run - before == 2 * 11  # its curves only
    other = image.copy()
    other[0, 0] ^= 1
    before = clf.rows_run
    make_maps(removal(), other, [0], 0, removal().plain)
    assert clf.rows_run - before == ran
