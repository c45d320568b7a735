"""The ablation chapter's tables, claims and figures on hand-built tidy results with known answers (no training)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from localign import chapter_runs as C
from localign.data import layout
from localign.eval.analyses import ablations as A
from localign.metrics import EDEMA_THRESHOLD_NAMES
from localign.viz import ablations as V

CI3 = 1.96 * 0.1 / math.sqrt(3)  # half-width of [x-0.1, x, x+0.1]


def tidy(rows):
    return pd.DataFrame(rows, columns=["run", "method", "task", "fraction", "seed", "metric", "value"])


def three_seeds(method, task, metric, centre, fraction=1.0, run=None):
    return [(run or method, method, task, fraction, s, metric, centre + d) for s, d in zip((0, 1, 2), (-0.1, 0.0, 0.1))]


def lovt_results():
    rows = []
    for method, dice, auroc in (("lovt", 0.6, 0.7), ("convirt", 0.3, 0.65), ("lovt_no_local", 0.4, 0.66), ("lovt_plateau", 0.5, 0.6)):
        rows += three_seeds(method, "seg_linear:rsna", "dice", dice, 0.1)
        rows += three_seeds(method, "probe", "macro", auroc, 0.1)
        rows += three_seeds(method, "probe", "macro", auroc + 0.05, 1.0)  # another fraction, ignored by the table
    return tidy(rows)


def liao_results():
    rows = []
    centres = {"global_mi_mine": 0.6, "global_mi_cpc": 0.62, "local_mi_mine": 0.8, "local_mi_cpc": 0.82, A.SUPERVISED: 0.7}
    for method, c in centres.items():
        run = "-" if method == A.SUPERVISED else method
        for task, shift in (("edema_frozen", 0.0), ("edema_tuned", 0.05)):
            for k, name in enumerate(EDEMA_THRESHOLD_NAMES):
                rows += three_seeds(method, task, name, c + shift + 0.01 * k, run=run)
            rows += three_seeds(method, task, "mean", c + shift + 0.01, run=run)
        for task, shift in (("classify_frozen", 0.0), ("classify_tuned", 0.05)):
            for name in layout.PATHOLOGY9:
                rows += three_seeds(method, task, name, c + shift, run=run)
            rows += three_seeds(method, task, "macro", c + shift, run=run)
    return tidy(rows)


# --------------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------------
def test_check_presets_errors_name_the_preset():
    assert A.check_presets(["lovt", "convirt"]) == ("lovt", "convirt")
    with pytest.raises(ValueError, match="lovt_nonsense"):
        A.check_presets(["lovt", "lovt_nonsense"])
    with pytest.raises(ValueError, match="more than once"):
        A.check_presets(["lovt", "lovt"])
    with pytest.raises(ValueError, match="non-empty"):
        A.check_presets([])
    with pytest.raises(ValueError, match="non-empty"):
        A.check_presets("lovt")
    with pytest.raises(ValueError, match=r"lovt_presets: \['gloria'\] not part"):
        A.check_presets(["lovt", "gloria"], A.LOVT_TABLE_PRESETS, name="lovt_presets")


def test_every_table_preset_is_registered_and_labelled():
    A.check_presets(A.LOVT_TABLE_PRESETS)
    A.check_presets(A.LIAO_PRESETS)
    A.check_presets(A.LIMITR_PRESETS)
    assert A.preset_label("lovt") == "LoVT"
    assert "no row" in A.preset_label("lovt_plateau")
    d = A.preset_descriptions(["lovt_no_global", "limitr_code"])
    assert list(d["preset"]) == ["lovt_no_global", "limitr_code"] and d["description"].str.len().min() > 10


def test_ensure_preset_runs_rejects_reserved_train_keys(tmp_path):
    with pytest.raises(ValueError, match="method"):
        C.ensure_preset_runs(["lovt"], tmp_path, train={"method": "clip"})
    with pytest.raises(ValueError, match="unknown method"):
        C.ensure_preset_runs(["nope"], tmp_path)


# --------------------------------------------------------------------------------------------------
# per-seed values, summaries, the LoVT table
# --------------------------------------------------------------------------------------------------
def test_seed_values_one_and_several_metrics():
    r = liao_results()
    v = A.seed_values(r, "local_mi_cpc", "edema_tuned", "0 vs 1,2,3")
    assert list(v.index) == [0, 1, 2]
    np.testing.assert_allclose(v.to_numpy(), [0.77, 0.87, 0.97])
    # the mean of the three AUCs per seed: centre + 0.05 + 0.01 (thresholds at +0, +0.01, +0.02)
    m = A.seed_values(r, "local_mi_cpc", "edema_tuned", list(EDEMA_THRESHOLD_NAMES))
    np.testing.assert_allclose(m.to_numpy(), [0.78, 0.88, 0.98])
    assert A.seed_values(r, "local_mi_cpc", "edema_tuned", "no such metric").empty
    with pytest.raises(ValueError, match="metric"):
        A.seed_values(r, "local_mi_cpc", "edema_tuned", [])


def test_measure_summary_mean_ci_and_order():
    s = A.measure_summary(lovt_results(), ["convirt", "lovt"], A.lovt_measures((0.1,)))
    assert list(s["preset"]) == ["convirt", "convirt", "lovt", "lovt"]
    dice = s[s["measure"] == "Dice 10 % (%)"].set_index("preset")
    assert dice.at["lovt", "mean"] == pytest.approx(60.0)
    assert dice.at["lovt", "ci95"] == pytest.approx(100 * CI3)
    assert dice.at["convirt", "n"] == 3
    with pytest.raises(ValueError, match=r"\['clip'\] have no rows"):
        A.measure_summary(lovt_results(), ["lovt", "clip"], A.lovt_measures())
    with pytest.raises(ValueError, match="unknown method"):
        A.measure_summary(lovt_results(), ["lovt", "lovtt"], A.lovt_measures())


def test_lovt_table_cells_order_and_paper_column():
    t = A.lovt_ablation_table(lovt_results(), ["lovt", "lovt_no_local", "convirt", "lovt_plateau"])
    assert list(t["preset"]) == ["lovt", "lovt_no_local", "convirt", "lovt_plateau"]
    assert list(t.columns) == ["preset", "row", "ours: SynthCXR, Dice 10 % (%)", "ours: SynthCXR, probe AUROC 10 % (%)",
                               "paper: RSNA, YOLOv3 frozen 10 % mAP (%)"]
    half = f"{100 * CI3:.1f}"
    assert t.iloc[0, 2] == f"60.0 ± {half}" and t.iloc[2, 2] == f"30.0 ± {half}"
    assert t.iloc[0, 3] == f"70.0 ± {half}"
    # the paper's values with the half-width of its 95 % CI (17.9 in [17.5, 18.3])
    assert list(t.iloc[:, 4]) == ["17.9 ± 0.4", "17.4 ± 0.9", "14.8 ± 1.1", "—"]
    assert t.iloc[0, 1] == "LoVT"
    with pytest.raises(ValueError, match="not part of this ablation"):
        A.lovt_ablation_table(lovt_results(), ["lovt", "gloria"])


def test_lovt_table_one_seed_and_missing_measure():
    r = lovt_results()
    r = r[(r["seed"] == 0) & ~((r["method"] == "convirt") & (r["task"] == "probe"))]
    t = A.lovt_ablation_table(r, ["lovt", "convirt"])
    assert t.iloc[0, 2] == "50.0"  # one seed: the mean alone
    assert t.iloc[1, 3] == "n/a"


def test_lovt_paper_rows():
    p = A.lovt_paper().set_index("preset")
    assert p.at["lovt", "value"] == 17.9 and p.at["lovt", "ci95"] == pytest.approx(0.4)
    assert set(A.LOVT_TABLE_PRESETS) - set(p.index) == {"lovt_plateau"}


# --------------------------------------------------------------------------------------------------
# Liao et al.
# --------------------------------------------------------------------------------------------------
def test_liao_edema_table_rows_cells_and_paper():
    t = A.liao_table(liao_results(), "edema")
    assert list(t.columns) == ["level", "critic", "encoder", "source", *EDEMA_THRESHOLD_NAMES, "mean"]
    assert len(t) == 4 * 2 * 2 + 3
    first = t.iloc[0]
    assert (first["level"], first["critic"], first["encoder"], first["source"]) == ("global", "MINE", "frozen", "ours: SynthCXR")
    assert first["0 vs 1,2,3"] == f"60.0 ± {100 * CI3:.1f}"
    assert first["mean"] == f"61.0 ± {100 * CI3:.1f}"
    paper = t.iloc[1]
    assert paper["source"] == "paper: MIMIC-CXR" and paper["0 vs 1,2,3"] == "83.0"  # global-mi MINE frozen
    # local MI CPC tuned: 0.87, 0.83, 0.97; the paper's mean of its three printed AUCs
    row = t[(t["level"] == "local") & (t["critic"] == "CPC") & (t["encoder"] == "tuned") & (t["source"] == "paper: MIMIC-CXR")].iloc[0]
    assert (row["0 vs 1,2,3"], row["mean"]) == ("87.0", "89.0")
    base = t[t["level"] == "image-only"]
    assert list(base["source"]) == ["ours: SynthCXR", "ours: SynthCXR", "paper: MIMIC-CXR"]
    assert base.iloc[2]["0,1,2 vs 3"] == "90.0"


def test_liao_pathology9_table_and_errors():
    t = A.liao_table(liao_results(), "pathology9", presets=["local_mi_cpc"], baseline=False)
    assert len(t) == 4 and list(t.columns)[-1] == "macro"
    assert t.iloc[1]["Atelectasis"] == "74.0"  # local-mi CPC frozen
    with pytest.raises(ValueError, match="kind"):
        A.liao_table(liao_results(), "chexpert")
    with pytest.raises(ValueError, match="not part of this ablation"):
        A.liao_table(liao_results(), "edema", presets=["lovt"])
    r = liao_results()
    with pytest.raises(ValueError, match="supervised"):
        A.liao_table(r[r["method"] != A.SUPERVISED], "edema")


def test_liao_summary_values():
    s = A.liao_summary(liao_results(), presets=["local_mi_cpc"])
    ours = s[(s["source"] == "ours") & (s["kind"] == "edema") & (s["encoder"] == "tuned")].set_index("preset")
    assert ours.at["local_mi_cpc", "mean"] == pytest.approx(88.0)
    paper = s[(s["source"] == "paper") & (s["kind"] == "edema") & (s["encoder"] == "tuned")].set_index("preset")
    assert paper.at["local_mi_cpc", "mean"] == pytest.approx(89.0)
    assert paper.at["image-only", "mean"] == pytest.approx(100 * (0.80 + 0.71 + 0.90) / 3)
    assert set(s["kind"]) == {"edema", "pathology9"}


def test_liao_two_supervised_baselines_one_row_each():
    r = liao_results()
    second = r[r["method"] == A.SUPERVISED].assign(run="-encoder-of-local_mi_cpc", value=lambda d: d["value"] - 0.1)
    r = pd.concat([r.assign(run=r["run"].where(r["method"] != A.SUPERVISED, "-encoder-of-global_mi_cpc")), second], ignore_index=True)
    t = A.liao_table(r, "edema", presets=["local_mi_cpc"])
    levels = list(t["level"])
    assert levels[4:] == ["image-only, encoder of global_mi_cpc", "image-only, encoder of global_mi_cpc", "image-only, encoder of local_mi_cpc", "image-only, encoder of local_mi_cpc",
                          "image-only"]
    assert t.iloc[6]["0 vs 1,2,3"] == f"60.0 ± {100 * CI3:.1f}"
    s = A.liao_summary(r, presets=["local_mi_cpc"])
    assert {"image-only, encoder of local_mi_cpc", "image-only, encoder of global_mi_cpc"} <= set(s["preset"])
    with pytest.raises(ValueError, match="pass run="):
        A.seed_values(r, A.SUPERVISED, "edema_tuned", "mean")


# --------------------------------------------------------------------------------------------------
# phrase CNRs and claims
# --------------------------------------------------------------------------------------------------
def limitr_eval(tmp_path, limitr_cnrs=(1.0, 1.2, 1.1, 0.9), code_cnrs=(0.1, 0.2, 0.0, 0.1)):
    csv = tmp_path / "limitr.csv"
    rows, details = [], []
    for method, cnrs in (("limitr", limitr_cnrs), ("limitr_code", code_cnrs)):
        for task in ("grounding:ms_cxr", "grounding:synth_masks"):
            rows.append((method, method, task, 1.0, 0, "overall", float(np.mean(cnrs))))
            path = tmp_path / f"{method}_{task.replace(':', '-')}.csv"
            pd.DataFrame({"phrase_id": range(len(cnrs)), "category": "x", "cnr": cnrs}).to_csv(path, index=False)
            details.append({"run": method, "method": method, "task": task, "path": str(path)})
    tidy(rows).to_csv(csv, index=False)
    csv.with_suffix(".json").write_text(json.dumps({"details": details}))
    return csv


def test_phrase_cnrs(tmp_path):
    csv = limitr_eval(tmp_path)
    c = A.phrase_cnrs(csv, "limitr", "grounding:ms_cxr")
    assert list(c.index) == [0, 1, 2, 3] and c.sum() == pytest.approx(4.2)
    with pytest.raises(ValueError, match="gloria"):
        A.phrase_cnrs(csv, "gloria")
    with pytest.raises(FileNotFoundError):
        A.phrase_cnrs(tmp_path / "nothing.csv", "limitr")


def test_ablation_claims_verdicts_and_skips(tmp_path):
    rows, skipped = A.ablation_claims(lovt_results(), liao_results(), limitr_eval(tmp_path))
    by_claim = {r["claim"]: r for r in rows}
    beats = by_claim["LoVT beats ConVIRT on the localized task (linear segmentation Dice, 10 % labels)"]
    assert beats["verdict"] == "holds" and beats["difference"] == pytest.approx(0.3)
    assert by_claim["local MI tuned beats global MI tuned on EdemaSeverity"]["difference"] == pytest.approx(0.2)
    assert by_claim["local MI tuned beats global MI tuned on EdemaSeverity"]["n_a"] == 6  # 2 critics x 3 seeds
    tuning = by_claim["tuning the encoder helps local MI on EdemaSeverity (tuned > frozen)"]
    assert tuning["difference"] == pytest.approx(0.05)
    grounding = [r for r in rows if r["paper"] == "LIMITR"]
    assert len(grounding) == 2 and all(r["verdict"] == "holds" for r in grounding)
    assert grounding[0]["difference"] == pytest.approx(0.95)
    # lovt_no_global was not evaluated: that claim is listed as skipped, never silently dropped
    assert any("lovt_no_global" in s for s in skipped) and len(rows) == 2 + 4 + 2


def test_ablation_claims_without_results():
    rows, skipped = A.ablation_claims()
    assert rows == [] and len(skipped) == 3 + 4 + 1
    r = liao_results()
    rows, skipped = A.ablation_claims(liao=r[~r["method"].str.startswith("global")])
    assert [row["claim"] for row in rows] == ["tuning the encoder helps local MI on EdemaSeverity (tuned > frozen)"]


def test_part_timings():
    training = pd.DataFrame({"preset": ["a", "b"], "run_dir": ["x", "y"], "trained": [True, False], "seconds": [60.0, 30.0]})
    part = C.PartResult(tidy([]), {}, training, 120.0)
    t = C.part_timings({"LoVT": part})
    assert t.iloc[0].to_dict() == {"part": "LoVT", "runs": 2, "trained": 1, "train_min": 1.5, "eval_min": 2.0, "total_min": 3.5}


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------
def test_ablation_panels_figure():
    s = A.measure_summary(lovt_results(), ["lovt", "convirt", "lovt_plateau"], A.lovt_measures())
    fig = V.plot_ablation_panels(s, A.lovt_paper(), paper_title="paper")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0].startswith("LoVT") and "[lovt_plateau]" in labels[2]
    assert len(V.plot_ablation_panels(s, None).axes) == 2
    with pytest.raises(ValueError, match="measures"):
        V.plot_ablation_panels(s, None, measures=["nope"])
    with pytest.raises(ValueError, match="columns"):
        V.plot_ablation_panels(s.drop(columns="ci95"))


def test_mi_grid_and_cnr_pairs_figures():
    fig = V.plot_mi_grid(A.liao_summary(liao_results()))
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    with pytest.raises(ValueError, match="no rows"):
        V.plot_mi_grid(A.liao_summary(liao_results()).iloc[:0])
    a, b = pd.Series([1.0, 0.5, 2.0], index=[0, 1, 2]), pd.Series([0.5, 0.7, 1.0], index=[0, 1, 3])
    fig = V.plot_phrase_cnr_pairs(a, b)
    assert "67 % of 2 phrases" not in fig.axes[0].get_title() and "of 2 phrases" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="no phrase"):
        V.plot_phrase_cnr_pairs(a.iloc[:1], b.iloc[1:2])


# --------------------------------------------------------------------------------------------------
# twins, cells, rank agreement
# --------------------------------------------------------------------------------------------------
def test_recipe_twins_demo_recipe_erases_the_plateau_schedule():
    twins = C.recipe_twins(["lovt", "lovt_no_local", "lovt_plateau", "convirt", "convirt_cosine"], "demo", {"epochs": 1})
    # the demo recipe's linear schedule and learning rate replace lovt_plateau's; convirt_cosine keeps its patience
    assert twins == {"lovt_plateau": "lovt"}
    assert C.recipe_twins(["lovt", "lovt_plateau"], "paper") == {}


def test_relabel_twins():
    r = lovt_results()
    r = r[r["method"] != "lovt_plateau"]
    out = A.relabel_twins(r, {"lovt_plateau": "lovt"})
    a = out[out["method"] == "lovt_plateau"].drop(columns=["run", "method"]).reset_index(drop=True)
    b = out[out["method"] == "lovt"].drop(columns=["run", "method"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert set(out.loc[out["method"] == "lovt_plateau", "run"]) == {"lovt_plateau"}
    with pytest.raises(ValueError, match="clip"):
        A.relabel_twins(r, {"convirt_cosine": "clip"})


def test_summary_cell_and_rank_agreement():
    s = A.measure_summary(lovt_results(), ["lovt", "convirt", "lovt_no_local", "lovt_plateau"], A.lovt_measures())
    assert A.summary_cell(s, "lovt", "Dice 10 % (%)") == f"60.0 ± {100 * CI3:.1f}"
    assert A.summary_cell(s, "clip", "Dice 10 % (%)") == "n/a"
    # Dice: lovt 60 > no_local 40 > convirt 30; paper: lovt 17.9 > no_local 17.4 > convirt 14.8 -> rho = 1
    rho, n = A.rank_agreement(s, A.lovt_paper(), "Dice 10 % (%)")
    assert (rho, n) == (pytest.approx(1.0), 3)
    paper = pd.DataFrame({"preset": ["lovt", "convirt", "lovt_no_local"], "value": [1.0, 3.0, 2.0]})
    assert A.rank_agreement(s, paper, "Dice 10 % (%)")[0] == pytest.approx(-1.0)
    assert math.isnan(A.rank_agreement(s, paper.iloc[:2], "Dice 10 % (%)")[0])
