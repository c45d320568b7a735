"""localign.eval.analyses.grounding: per-phrase CNR / pointing tables, summaries, example selection, claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from localign.eval.analyses import grounding as G
from localign.eval.grounding import cnr
from localign.metrics.localization import pointing_game


def _scores(rows):
    cols = ["run", "method", "source", "phrase_id", "category", "text", "cnr", "contrast_sign", "pointing", "chance",
            "region_fraction"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows], columns=cols)


# --------------------------------------------------------------------------------------------------
# per-phrase measures on planted maps
# --------------------------------------------------------------------------------------------------
def test_planted_map_pointing_inside_and_outside_the_box_and_its_known_cnr():
    region = np.zeros((10, 10), dtype=bool)
    region[2:5, 2:5] = True  # 9 pixels inside, 91 outside
    m = np.zeros((10, 10))
    m[region] = 1.0
    m[0, 0] = 0.5  # outside values: one 0.5, ninety 0
    # μ_A = 1, σ²_A = 0; μ_Ā = 0.5/91, σ²_Ā = 0.25/91 − (0.5/91)²
    mu_out = 0.5 / 91
    expected = (1 - mu_out) / np.sqrt(0.25 / 91 - mu_out**2)
    assert cnr(m, region) == pytest.approx(expected, rel=1e-12)
    assert G.contrast_sign(m, region) == 1
    assert pointing_game(m, region) == 1.0
    outside_peak = m.copy()
    outside_peak[8, 8] = 2.0  # maximum moved outside the box
    assert pointing_game(outside_peak, region) == 0.0
    # the inverted map has the same CNR (absolute value) but the opposite sign, and misses
    assert cnr(-m, region) == pytest.approx(expected, rel=1e-12)
    assert G.contrast_sign(-m, region) == -1 and pointing_game(-m, region) == 0.0
    # NaN pixels are excluded from the sign, like from the CNR
    with_nan = m.copy()
    with_nan[region] = np.nan
    with_nan[2, 2] = 1.0
    assert G.contrast_sign(with_nan, region) == 1
    with pytest.raises(ValueError, match="region"):
        G.contrast_sign(m, region.astype(int))
    with pytest.raises(ValueError, match="no valid pixel"):
        G.contrast_sign(np.where(region, np.nan, 0.0), region)


def test_a_border_maximum_is_a_plateau_and_scores_its_share_inside_the_region():
    from localign.data.transforms import ImageGeometry
    from localign.eval.grounding import map_to_original

    # a 2×2 grid whose top-left region is the most similar, on a 64×64 image seen whole at 64 px:
    # bilinear upsampling holds the outer half-cell constant, so the maximum is a 16×16 corner square
    grid = np.array([[1.0, 0.5], [0.5, 0.0]])
    full = map_to_original(grid, (64, 64), ImageGeometry("pad_resize", size=64))
    peak = full == full.max()
    assert peak.sum() == 16 * 16 and peak[:16, :16].all()
    region = np.zeros((64, 64), dtype=bool)
    region[:16, :8] = True  # half of the plateau
    measures = G.phrase_measures(full, region)
    assert measures["pointing"] == pytest.approx(0.5)  # the expected hit of a random tie-break
    assert pointing_game(full, region, ties="pessimistic") == 0.0  # what the pessimistic rule would say
    assert measures["contrast_sign"] == 1 and measures["chance"] == pytest.approx(128 / 4096)
    assert measures["region_fraction"] == pytest.approx(128 / 4096)
    region[:16, :16] = True  # the whole plateau inside: a hit
    assert G.phrase_measures(full, region)["pointing"] == 1.0
    assert G.phrase_measures(full, ~region)["pointing"] == 0.0 and G.phrase_measures(full, ~region)["contrast_sign"] == -1


def test_pointing_chance_is_the_region_share_of_the_seen_pixels():
    region = np.zeros((4, 5), dtype=bool)
    region[0, :2] = True  # 2 of 20 pixels
    m = np.ones((4, 5))
    assert G.pointing_chance(m, region) == pytest.approx(2 / 20)
    m[2:, :] = np.nan  # the network saw the top 10 pixels only
    assert G.pointing_chance(m, region) == pytest.approx(2 / 10)
    m[0, 0] = np.nan  # an unseen region pixel counts neither above nor below the line
    assert G.pointing_chance(m, region) == pytest.approx(1 / 9)
    # a random point's hit rate: the mean pointing game of one-pixel maps at every seen pixel
    seen = np.argwhere(~np.isnan(m))
    hits = []
    for r, c in seen:
        one = np.where(np.isnan(m), np.nan, 0.0)
        one[r, c] = 1.0
        hits.append(pointing_game(one, region))
    assert np.mean(hits) == pytest.approx(G.pointing_chance(m, region))
    with pytest.raises(ValueError, match="NaN"):
        G.pointing_chance(np.full((4, 5), np.nan), region)
    with pytest.raises(ValueError, match="region"):
        G.pointing_chance(m, region[:, :4])


# --------------------------------------------------------------------------------------------------
# CIs and summaries
# --------------------------------------------------------------------------------------------------
def test_wilson_interval_known_values_and_errors():
    p, low, high = G.proportion_ci95(5, 10)
    assert p == 0.5 and low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    p, low, high = G.proportion_ci95(0, 20)
    assert p == 0.0 and low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)
    p, low, high = G.proportion_ci95(20, 20)
    assert p == 1.0 and high == 1.0 and low == pytest.approx(1 - 0.1611, abs=1e-4)
    # the interval contains p̂ for every count (round-off at 0 or n included) and for a sum of scores
    for n in (1, 3, 7, 22, 100):
        for k in (0, n // 2, n):
            p, low, high = G.proportion_ci95(k, n)
            assert 0 <= low <= p <= high <= 1
    p, low, high = G.proportion_ci95(2.5, 10)
    assert p == 0.25 and low < 0.25 < high
    with pytest.raises(ValueError, match="n:"):
        G.proportion_ci95(0, 0)
    with pytest.raises(ValueError, match="successes"):
        G.proportion_ci95(3, 2)


def test_summaries_per_category_and_overall():
    s = _scores([
        ("a", "lovt", "ms_cxr", 1, "Edema", "t", 1.0, 1, 1, 0.1, 0.1),
        ("a", "lovt", "ms_cxr", 2, "Edema", "t", 3.0, -1, 0, 0.3, 0.3),
        ("a", "lovt", "ms_cxr", 3, "Pneumonia", "t", 2.0, 1, 1, 0.2, 0.2),
        ("a", "lovt", "ms_cxr", 4, "Pneumonia", "t", np.nan, 0, 0, 0.2, 0.2),
    ])
    c = G.cnr_summary(s).set_index("category")
    assert list(c.index) == ["Edema", "Pneumonia", "overall"]
    assert c.loc["Edema", "mean"] == 2.0 and c.loc["Edema", "ci95"] == pytest.approx(1.96 * np.sqrt(2) / np.sqrt(2))
    assert c.loc["Pneumonia", "count"] == 1 and c.loc["Pneumonia", "n_undefined"] == 1
    assert c.loc["overall", "mean"] == 2.0 and c.loc["Edema", "negative"] == 0.5 and c.loc["overall", "negative"] == 0.25
    assert c.loc["Edema", "ci_low"] == pytest.approx(2.0 - 1.96)
    p = G.pointing_summary(s).set_index("category")
    assert p.loc["Edema", "accuracy"] == 0.5 and p.loc["Edema", "chance"] == pytest.approx(0.2)
    assert p.loc["overall", "hits"] == 2 and p.loc["overall", "count"] == 4
    assert p.loc["overall", ("ci_low")] < 0.5 < p.loc["overall", "ci_high"]
    with pytest.raises(ValueError, match="pointing"):
        G.pointing_summary(s.assign(pointing=1.5))
    # expected-tie scores in [0, 1]: accuracy is their mean, hits their sum
    half = G.pointing_summary(s.assign(pointing=[0.5, 0.25, 1.0, 0.0])).set_index("category")
    assert half.loc["Edema", "accuracy"] == pytest.approx(0.375) and half.loc["overall", "hits"] == pytest.approx(1.75)
    with pytest.raises(ValueError, match="missing"):
        G.cnr_summary(s.drop(columns="cnr"))


def test_example_selection_median_best_first_and_best_method():
    rows = []
    for i, v in enumerate([5.0, 1.0, 3.0, 2.0]):  # Edema: sorted 1, 2, 3, 5 -> lower median 2 (phrase 3)
        rows.append(("lovt", "lovt", "ms_cxr", i, "Edema", f"e{i}", v, 1, 1, 0.1, 0.1))
    rows.append(("lovt", "lovt", "ms_cxr", 10, "Pneumonia", "p", 0.7, 1, 1, 0.1, 0.1))
    rows.append(("lovt", "lovt", "ms_cxr", 11, "Pneumonia", "q", np.nan, 0, 0, 0.1, 0.1))
    rows.append(("convirt", "convirt", "ms_cxr", 0, "Edema", "e0", 0.1, 1, 0, 0.1, 0.1))
    s = _scores(rows)
    med = G.select_examples(s, "lovt")
    assert list(med["category"]) == ["Edema", "Pneumonia"]
    assert list(med["phrase_id"]) == [3, 10]  # the NaN CNR is never chosen
    assert list(G.select_examples(s, "lovt", rule="best")["phrase_id"]) == [0, 10]
    assert list(G.select_examples(s, "lovt", rule="first")["phrase_id"]) == [0, 10]
    # shuffling the rows does not change the choice
    assert list(G.select_examples(s.sample(frac=1, random_state=1), "lovt")["phrase_id"]) == [3, 10]
    assert G.best_method(s) == "lovt"
    with pytest.raises(ValueError, match="rule"):
        G.select_examples(s, "lovt", rule="mean")
    with pytest.raises(ValueError, match="by"):
        G.select_examples(s, "gloria")
    with pytest.raises(ValueError, match="source"):
        G.best_method(s, source="synth_masks")


def test_claims_local_vs_global_limitr_vs_gloria_and_pointing_above_chance():
    rng = np.random.default_rng(0)
    rows = []
    for run, mu in [("convirt", 0.2), ("clip", 1.5), ("lovt", 1.0), ("gloria", 0.5), ("limitr", 0.5)]:
        for i in range(40):
            hit = int(i % 2 == 0) if run != "convirt" else int(i % 10 == 0)
            rows.append((run, run, "synth_masks", i, "edema", "t", mu + 0.1 * rng.normal(), 1, hit, 0.1, 0.1))
    claims = G.grounding_claims(_scores(rows))
    by = {(r["claim"][:10], r["a"], r["b"]): r for r in claims}
    assert by[("local meth", "lovt", "convirt")]["verdict"] == "holds"
    assert by[("local meth", "gloria", "convirt")]["paper"] == "GLoRIA"
    assert ("local meth", "local_mi_cpc", "convirt") not in by  # runs that are absent are left out
    # every local run is compared with each global one: CLIP (1.5) is above LoVT (1.0) here
    assert by[("local meth", "lovt", "clip")]["verdict"] == "contradicted"
    assert by[("local meth", "limitr", "clip")]["difference"] == pytest.approx(-1.0, abs=0.1)
    assert sum(r["claim"].startswith("local meth") for r in claims) == 3 * 2
    assert by[("LIMITR gro", "limitr", "gloria")]["verdict"] == "not shown"
    assert by[("the map's ", "lovt", "chance")]["verdict"] == "holds"  # 0.5 hit rate vs 0.1 chance
    assert by[("the map's ", "convirt", "chance")]["mean_a"] == pytest.approx(0.1)
    assert all("SynthCXR exact masks" in r["measure"] for r in claims)


def test_published_cnrs_are_limitr_ms_cxr_examples():
    pub = G.published_cnr()
    assert len(pub) == 15 and set(pub["dataset"]) == {"MS-CXR"} and set(pub["method"]) == {"limitr"}
    assert pub["cnr"].between(0, 5).all() and list(pub["example"]) == list(range(1, 16))


def test_bad_source_is_named():
    with pytest.raises(ValueError, match="source"):
        G.phrase_table(None, source="boxes")


# --------------------------------------------------------------------------------------------------
# wiring on a tiny real run: the CNRs are the grounding protocol's
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tiny_prepared, tmp_path_factory):
    from localign.models import get_method
    from localign.train import encoder_overrides, make_train_config, pretrain
    from localign.train.runs import load_run

    from .helpers import TINY_TEXT

    overrides = encoder_overrides(get_method("gloria"), image_arch="resnet18", image_size=64, text_model="minilm")
    overrides.update({"text.random_init": True, "text.tiny": TINY_TEXT, "text.freeze_layers": 0, "text.last_layers": 1,
                      "head.d_z": 16, "head.d_hidden": 32})
    out = tmp_path_factory.mktemp("run") / "gloria_tiny"
    pretrain(make_train_config(method="gloria", overrides=overrides, data=str(tiny_prepared), out=str(out), max_steps=1,
                               batch_size=8, progress=False))
    return load_run(out)


def test_scores_on_a_tiny_run_equal_the_grounding_protocol(tiny_run, tiny_prepared):
    from localign.data.manifest import load_prepared
    from localign.eval.protocols.grounding import grounding_protocol

    prepared = load_prepared(tiny_prepared)
    scores = G.runs_phrase_scores({"g": tiny_run}, prepared, split="all", batch_size=5)
    assert list(scores.columns) == list(G.SCORE_COLUMNS)
    assert set(scores["source"]) == {"ms_cxr", "synth_masks"} and set(scores["run"]) == {"g"}
    assert set(scores["method"]) == {tiny_run.method.name}
    assert scores["pointing"].between(0, 1).all() and scores["chance"].between(0, 1).all()
    assert scores["contrast_sign"].isin([-1, 0, 1]).all()
    for source in ("ms_cxr", "synth_masks"):
        details = grounding_protocol(tiny_run.model, tiny_run.preprocessing, prepared, source=source, split="all",
                                     progress=False)[0].details.set_index("phrase_id")
        ours = scores[scores["source"] == source].set_index("phrase_id")
        assert sorted(ours.index) == sorted(details.index)
        np.testing.assert_allclose(ours["cnr"], details.loc[ours.index, "cnr"], rtol=1e-9, atol=1e-12)
    pick = G.select_examples(scores, "g")
    maps = G.phrase_maps(tiny_run, prepared, pick["phrase_id"].tolist(), split="all")
    table = G.phrase_table(prepared, "ms_cxr", "all").set_index("phrase_id")
    for pid, m in maps.items():
        assert m.shape == (table.loc[pid, "height"], table.loc[pid, "width"])
    with pytest.raises(ValueError, match="phrase_ids"):
        G.phrase_maps(tiny_run, prepared, [10**9], split="all")


def test_phrases_without_a_cnr_are_skipped_with_their_reason(tiny_run, tiny_prepared):
    from localign.data.manifest import load_prepared
    from localign.eval.protocols.grounding import iter_phrase_maps

    prepared = load_prepared(tiny_prepared)
    table = G.phrase_table(prepared, "ms_cxr", "all").iloc[:3].reset_index(drop=True)
    h, w = int(table.loc[1, "height"]), int(table.loc[1, "width"])
    table.at[0, "text"] = ""  # nothing left to tokenize
    table.at[1, "boxes"] = np.array([[0.0, 0.0, w, h]])  # the whole image: no outside, no CNR
    skipped = {}
    maps = list(iter_phrase_maps(tiny_run.model, tiny_run.preprocessing, table, "ms_cxr", skipped=skipped))
    assert [int(p.row["phrase_id"]) for p in maps] == [int(table.loc[2, "phrase_id"])]
    assert skipped == {int(table.loc[0, "phrase_id"]): "empty phrase after tokenization",
                       int(table.loc[1, "phrase_id"]): "region is empty or covers the whole image"}
    p = maps[0]
    assert p.similarity.shape == p.region.shape == (int(table.loc[2, "height"]), int(table.loc[2, "width"]))
    with pytest.raises(ValueError, match="source"):
        next(iter_phrase_maps(tiny_run.model, tiny_run.preprocessing, table, "boxes"))


# --------------------------------------------------------------------------------------------------
# display tables and figures
# --------------------------------------------------------------------------------------------------
def _two_runs():
    rows = []
    for run, base in [("lovt", 2.0), ("convirt", 1.0)]:
        for i, (cat, v, hit) in enumerate([("Edema", 0.0, 1), ("Edema", 2.0, 0), ("Pneumonia", 1.0, 1)]):
            rows.append((run, run, "ms_cxr", i, cat, "t", base + v, 1, hit, 0.2, 0.2))
            rows.append((run, run, "synth_masks", i, cat, "t", base + v, -1, hit, 0.1, 0.1))
    return _scores(rows)


def test_category_table_cells_counts_and_among_selection():
    s = _two_runs()
    t = G.category_table(G.cnr_summary(s), "ms_cxr", runs=["lovt", "convirt"])
    assert list(t.index) == ["n", "lovt", "convirt"] and list(t.columns) == ["Edema", "Pneumonia", "overall"]
    assert t.loc["n", "Edema"] == "2" and t.loc["lovt", "Edema"] == "3.00 ± 1.96"  # values 2, 4: s = √2, 1.96·√2/√2
    assert t.loc["lovt", "Pneumonia"] == "3.00"  # one phrase: no CI
    p = G.category_table(G.pointing_summary(s), "ms_cxr", value="accuracy")
    assert p.loc["lovt", "Pneumonia"].startswith("1.00 [")  # Wilson interval is asymmetric
    pt = G.pointing_table(G.pointing_summary(s), "synth_masks", runs=["convirt", "lovt"])
    assert list(pt.index) == ["n", "convirt", "lovt", "chance"]
    assert list(pt.loc["chance"]) == ["0.100", "0.100", "0.100"] and pt.loc["lovt", "Edema"] == "0.50 ± 0.41"  # Wilson at 1/2 of 2: symmetric
    with pytest.raises(ValueError, match="source"):
        G.category_table(G.cnr_summary(s), "other")
    # among: only phrases every listed run scored can be examples
    s2 = s.copy()
    s2.loc[(s2["run"] == "convirt") & (s2["phrase_id"] == 0), "cnr"] = np.nan
    assert list(G.select_examples(s2, "lovt", among=["lovt", "convirt"])["phrase_id"]) == [1, 2]
    assert list(G.select_examples(s2, "lovt")["phrase_id"]) == [0, 2]


def test_category_bars_and_cnr_vs_pointing_figures():
    from localign.viz.grounding_figures import plot_category_bars, plot_cnr_vs_pointing

    s = _two_runs()
    c, p = G.cnr_summary(s), G.pointing_summary(s)
    fig = plot_category_bars(c, "mean", methods=["convirt", "lovt"], published={"paper": [1.5, 2.0]})
    assert len(fig.axes) == 2
    top = fig.axes[0]
    assert [t.get_text() for t in top.get_xticklabels()] == ["Edema\n(n=2)", "Pneumonia\n(n=1)", "overall\n(n=3)"]
    assert len(top.patches) == 6  # 3 categories × 2 methods
    assert top.get_legend() is not None and "paper" in [t.get_text() for t in top.get_legend().get_texts()]
    fig = plot_category_bars(p, "accuracy", chance="chance", sources=["synth_masks"])
    assert len(fig.axes) == 1 and "exact" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="chance"):
        plot_category_bars(c, "mean", chance="chance")
    # the example panel: the CNR in each title, an inverted map marked as such
    from localign.viz.grounding_figures import GroundingExample, plot_grounding_examples

    image = np.zeros((8, 6))
    bright = np.zeros((8, 6))
    bright[2:4, 1:3] = 1.0
    ex = GroundingExample("Edema", "a phrase", image, [[1, 2, 2, 2]], {"lovt": bright, "convirt": -bright},
                          cnrs={"lovt": 2.5}, signs={"convirt": -1})
    fig = plot_grounding_examples([ex], methods=["lovt", "convirt"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1] == "lovt\nCNR 2.50"  # the given CNR, not recomputed
    # the CNR of a map that is 1 on the box and 0 elsewhere is undefined (both variances 0): NaN
    assert titles[2].startswith("convirt\nCNR nan") and titles[2].endswith("darker inside")
    fig = plot_cnr_vs_pointing(c, p)
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() == "pointing-game accuracy"
    with pytest.raises(ValueError, match="category"):
        plot_cnr_vs_pointing(c, p, category="Atelectasis")


def test_max_phrases_must_be_positive():
    with pytest.raises(ValueError, match="max_phrases"):
        G.phrase_scores(None, None, max_phrases=0)
