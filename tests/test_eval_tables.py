"""Result tables (localign.eval.tables): mean ± 95 % CI over seeds, and the papers' numbers beside ours."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from localign.eval.stats import validate_tidy
from localign.eval.tables import (
    PAPER_NUMBERS,
    classification_table,
    edema_table,
    format_mean_ci,
    grounding_table,
    pathology9_table,
    retrieval_table,
    segmentation_table,
    summary_tables,
)


def _rows(task: str, metric: str, values: list[float], fraction: float = 1.0, run: str = "lovt", method: str = "lovt") -> list[dict]:
    return [{"run": run, "method": method, "task": task, "fraction": fraction, "seed": s, "metric": metric, "value": v}
            for s, v in enumerate(values)]


def _paper(**where) -> pd.Series:
    p = PAPER_NUMBERS
    for k, v in where.items():
        p = p[p[k] == v]
    assert len(p) == 1, where
    return p.iloc[0]


def test_paper_numbers_match_the_sources():
    assert _paper(task="probe", dataset="CheXpert", method="ConVIRT", fraction=0.01)["value"] == 85.9
    assert _paper(task="probe", dataset="RSNA", method="LIMITR", fraction=1.0)["value"] == 90.6
    assert _paper(task="classify_tuned", method="local-mi-mine", metric="Atelectasis")["value"] == pytest.approx(86.0)
    assert _paper(task="classify_tuned", method="image-only", metric="Edema")["value"] == pytest.approx(89.0)
    assert _paper(task="classify_frozen", method="global-mi-cpc", metric="Pleural Effusion")["value"] == pytest.approx(74.0)
    assert _paper(task="edema_tuned", method="local-mi-cpc", metric="0,1,2 vs 3")["value"] == pytest.approx(97.0)
    assert _paper(task="edema_tuned", method="image-only", metric="0,1 vs 2,3")["value"] == pytest.approx(71.0)
    lovt = _paper(task="seg_linear:rsna", method="LoVT_100", fraction=0.01)
    assert lovt["value"] == 46.33 and lovt["ci95"] == 0.02 and lovt["dataset"] == "RSNA"
    assert _paper(task="seg_unet_frozen", dataset="SIIM-ACR", method="ImageNet")["value"] == 36.9
    assert set(PAPER_NUMBERS["dataset"]) == {"CheXpert", "RSNA", "MIMIC-CXR", "COVID Rural", "SIIM-ACR"}
    assert PAPER_NUMBERS[PAPER_NUMBERS["task"] == "retrieval"]["source"].str.contains("UNVERIFIED").all()


def test_format_mean_ci():
    assert format_mean_ci(0.82, 0.0226, 100.0, 1) == "82.0 ± 2.3"
    assert format_mean_ci(0.8, math.nan, 100.0) == "80.0"
    assert format_mean_ci(math.nan, math.nan) == "n/a"


def test_classification_table_mean_ci_over_seeds_with_paper_rows():
    df = pd.DataFrame(_rows("probe", "macro", [0.80, 0.82, 0.84], 0.1) + _rows("probe", "macro", [0.9], 1.0)
                      + _rows("probe", "macro", [0.5, 0.7, 0.6], 0.1, run="-", method="random_init"))
    table = classification_table(validate_tidy(df))
    ours = table[table["source"] == "ours: SynthCXR"].set_index("method")
    # 1.96 · s / √3 with s = 0.02 → 2.26 points
    assert ours.loc["lovt", "10 %"] == "82.0 ± 2.3"
    assert ours.loc["lovt", "100 %"] == "90.0"  # one seed: no CI
    assert ours.loc["random_init", "10 %"] == "60.0 ± 11.3"
    assert list(table.columns[-3:]) == ["1 %", "10 %", "100 %"]
    assert {"paper: CheXpert", "paper: RSNA"} <= set(table["source"])
    limitr = table[(table["source"] == "paper: CheXpert") & (table["method"] == "LIMITR")].iloc[0]
    assert limitr["1 %"] == "88.0" and limitr["100 %"] == "88.7"
    assert "paper: CheXpert" not in set(classification_table(df, with_paper=False)["source"])


def test_pathology_edema_segmentation_retrieval_and_grounding_tables():
    rows = _rows("classify_tuned", "Edema", [0.7, 0.8]) + _rows("classify_tuned", "macro", [0.75, 0.75])
    rows += _rows("edema_frozen", "0 vs 1,2,3", [0.6]) + _rows("edema_tuned", "mean", [0.9])
    rows += _rows("seg_linear:rsna", "dice", [0.4, 0.5], 0.01) + _rows("seg_unet_frozen:synth_opacity", "dice", [0.3])
    rows += _rows("retrieval", "i2t_R@1", [12.0]) + _rows("retrieval", "pool_size", [228.0]) + _rows("retrieval", "chance_R@1", [100 / 228])
    rows += _rows("grounding:ms_cxr", "Edema", [1.2]) + _rows("grounding:ms_cxr", "Edema/ci95", [0.1])
    rows += _rows("grounding:ms_cxr", "Edema/count", [10.0]) + _rows("grounding:ms_cxr", "overall", [1.1])
    rows += _rows("grounding:ms_cxr", "overall/ci95", [0.05]) + _rows("grounding:ms_cxr", "overall/count", [30.0])
    df = validate_tidy(pd.DataFrame(rows))

    p9 = pathology9_table(df)
    ours = p9[p9["source"] == "ours: SynthCXR"].iloc[0]
    assert ours["Edema"] == "75.0 ± 9.8" and ours["macro"] == "75.0 ± 0.0"
    assert "image-only" in set(p9["method"])

    ed = edema_table(df)
    mine = ed[ed["source"] == "ours: SynthCXR"].set_index("task")
    assert mine.loc["edema_frozen", "0 vs 1,2,3"] == "60.0" and mine.loc["edema_tuned", "mean"] == "90.0"
    assert "local-mi-cpc" in set(ed["method"])

    seg = segmentation_table(df)
    mine = seg[seg["source"] == "ours: SynthCXR"].set_index("task")
    assert mine.loc["seg_linear:rsna", "1 %"] == "45.0 ± 9.8" and mine.loc["seg_unet_frozen:synth_opacity", "100 %"] == "30.0"
    assert {"paper: RSNA", "paper: COVID Rural", "paper: SIIM-ACR"} <= set(seg["source"])

    ret = retrieval_table(df)
    mine = ret[ret["source"] == "ours: SynthCXR"].iloc[0]
    assert mine["i2t_R@1"] == "12.0" and mine["pool_size"] == "228" and mine["chance_R@1"] == "0.44"
    assert ret[ret["source"] == "paper: MIMIC-CXR"].iloc[0]["pool_size"] == "1000"

    gr = grounding_table(df).iloc[0]
    assert gr["Edema"] == "1.20 ± 0.10 (n=10)" and gr["overall"] == "1.10 ± 0.05 (n=30)"

    titles = list(summary_tables(df))
    assert any(t.startswith("Pathology9 encoder-tuned") for t in titles) and not any(t.startswith("Linear probe") for t in titles)
    assert "Phrase grounding (ms_cxr): CNR" in titles
