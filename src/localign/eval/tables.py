"""The tables the papers report, built from the tidy evaluation results, with the papers' numbers beside ours.

Every table aggregates the seeds of a (run, method, task, fraction, metric) to **mean ± 95 % CI**,
the half-width 1.96·s/√n with s the sample standard deviation over seeds — the "±" of LoVT's
tables (:func:`~localign.eval.stats.mean_ci95`; one seed shows the mean alone). AUROC, Dice and R@K
are shown in percent, CNR as is. Rows are labelled by their source: ``ours: <dataset>`` for the
results (default ``ours: SynthCXR``) and ``paper: <dataset>`` for :data:`PAPER_NUMBERS`, the
published values of the corresponding protocol (placed next to ours where the task corresponds; the
data differ, so they are context, not targets).

- :func:`classification_table`  probe / classifier macro AUROC at 1 / 10 / 100 % labels
- :func:`pathology9_table`      per-label AUROC of Pathology9 (local MI Table 3)
- :func:`edema_table`           EdemaSeverity ordinal AUCs (local MI Table 2)
- :func:`segmentation_table`    Dice of linear segmentation and U-Nets (LoVT)
- :func:`retrieval_table`       R@1/5/10 both directions with the pool size (LIMITR)
- :func:`grounding_table`       CNR per category (BioViL / LIMITR's MS-CXR protocol)
- :func:`summary_tables`        all of the above that the results contain
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from localign.data import layout
from localign.metrics import EDEMA_THRESHOLD_NAMES
from localign.eval.stats import summarize_tidy

# --------------------------------------------------------------------------------------------------
# published numbers
# --------------------------------------------------------------------------------------------------
# Each label names the paper and its table. LoVT's tables are reproduced in its official repository
# (results/generated/results_table_rsna.png and results_table.png for the baselines,
# downstream_*.csv for LoVT itself); the numbers below are those tables'.
_LIMITR = "Dawidowicz et al. (LIMITR, ICCV 2023), supplementary Table 1"
_LIAO2 = "Liao et al. (MICCAI 2021), Table 2"
_LIAO3 = "Liao et al. (MICCAI 2021), Table 3"
_LOVT = "Müller et al. (LoVT, ECCV 2022), RSNA results table (100 % pretraining)"
_LOVT_OTHER = "Müller et al. (LoVT, ECCV 2022), results table of the other datasets (100 % pretraining)"


def _paper_rows() -> list[dict]:
    rows: list[dict] = []

    def add(source: str, dataset: str, task: str, method: str, metric: str, value: float, fraction: float = 1.0,
            ci95: float | None = None, note: str = "") -> None:
        rows.append({"source": source, "dataset": dataset, "task": task, "method": method, "fraction": fraction,
                     "metric": metric, "value": value, "ci95": ci95, "note": note})

    # LIMITR supplementary Table 1: linear probe macro AUROC (%), CheXpert and RSNA at 1/10/100 %
    limitr = {"MGCA": (87.6, 88.0, 88.2, 88.6, 89.1, 89.9), "ConVIRT": (85.9, 86.8, 87.3, 77.4, 80.1, 81.3),
              "GLoRIA": (86.6, 87.8, 88.1, 86.1, 88.0, 88.6), "LIMITR": (88.0, 88.3, 88.7, 88.7, 89.4, 90.6)}
    for method, values in limitr.items():
        for i, fraction in enumerate((0.01, 0.1, 1.0)):
            add(_LIMITR, "CheXpert", "probe", method, "macro", values[i], fraction)
            add(_LIMITR, "RSNA", "probe", method, "macro", values[3 + i], fraction)

    # Liao et al. Table 3: Pathology9 AUCs (image-only; frozen/tuned × CPC/MINE)
    liao3 = {  # label: (image-only, global frozen CPC, MINE, global tuned CPC, MINE, local frozen CPC, MINE, local tuned CPC, MINE)
        "Atelectasis": (0.76, 0.65, 0.63, 0.74, 0.77, 0.74, 0.61, 0.73, 0.86),
        "Cardiomegaly": (0.71, 0.79, 0.79, 0.81, 0.81, 0.73, 0.77, 0.82, 0.84),
        "Consolidation": (0.78, 0.67, 0.65, 0.81, 0.82, 0.65, 0.65, 0.83, 0.83),
        "Edema": (0.89, 0.81, 0.81, 0.87, 0.88, 0.78, 0.80, 0.89, 0.89),
        "Lung Opacity": (0.86, 0.69, 0.68, 0.83, 0.84, 0.66, 0.69, 0.82, 0.88),
        "Pleural Effusion": (0.69, 0.74, 0.74, 0.90, 0.90, 0.69, 0.72, 0.92, 0.92),
        "Pneumonia": (0.75, 0.71, 0.70, 0.75, 0.76, 0.61, 0.66, 0.78, 0.79),
        "Pneumothorax": (0.65, 0.65, 0.66, 0.75, 0.77, 0.70, 0.67, 0.79, 0.76),
        "Support Devices": (0.72, 0.70, 0.68, 0.77, 0.79, 0.72, 0.74, 0.87, 0.81),
    }
    variants = [("global-mi-cpc", "classify_frozen"), ("global-mi-mine", "classify_frozen"), ("global-mi-cpc", "classify_tuned"),
                ("global-mi-mine", "classify_tuned"), ("local-mi-cpc", "classify_frozen"), ("local-mi-mine", "classify_frozen"),
                ("local-mi-cpc", "classify_tuned"), ("local-mi-mine", "classify_tuned")]
    for label, values in liao3.items():
        add(_LIAO3, "MIMIC-CXR", "classify_tuned", "image-only", label, 100 * values[0], note="supervised image-only model")
        for (method, task), v in zip(variants, values[1:]):
            add(_LIAO3, "MIMIC-CXR", task, method, label, 100 * v)
    for method, value, spread in (("local-mi", 84.0, 5.0), ("global-mi", 81.0, 5.0)):
        add(_LIAO3, "MIMIC-CXR", "classify_tuned", method, "macro", value,
            note=f"the caption's average AUC of the tuned model (printed ± {spread:g}, not a 95 % CI)")

    # Liao et al. Table 2: EdemaSeverity ordinal AUCs
    liao2 = {("image-only", "edema_tuned"): (0.80, 0.71, 0.90)}
    edema = {  # (method, task): ((CPC, MINE) per threshold)
        ("global-mi", "edema_frozen"): ((0.81, 0.83), (0.77, 0.78), (0.93, 0.89)),
        ("global-mi", "edema_tuned"): ((0.81, 0.82), (0.79, 0.81), (0.93, 0.93)),
        ("local-mi", "edema_frozen"): ((0.77, 0.76), (0.72, 0.76), (0.75, 0.86)),
        ("local-mi", "edema_tuned"): ((0.87, 0.83), (0.83, 0.85), (0.97, 0.93)),
    }
    for (method, task), values in liao2.items():
        for name, v in zip(EDEMA_THRESHOLD_NAMES, values):
            add(_LIAO2, "MIMIC-CXR", task, method, name, 100 * v, note="supervised image-only model")
    for (method, task), per_threshold in edema.items():
        for name, (cpc, mine) in zip(EDEMA_THRESHOLD_NAMES, per_threshold):
            add(_LIAO2, "MIMIC-CXR", task, f"{method}-cpc", name, 100 * cpc)
            add(_LIAO2, "MIMIC-CXR", task, f"{method}-mine", name, 100 * mine)
    add(_LIAO2, "MIMIC-CXR", "edema_tuned", "local-mi", "mean", 88.0, note="the caption's average AUC (printed ± 5, not a 95 % CI)")
    add(_LIAO2, "MIMIC-CXR", "edema_tuned", "global-mi", "mean", 85.0, note="the caption's average AUC (printed ± 6, not a 95 % CI)")

    # LoVT: RSNA linear segmentation Dice (%), mean ± 95 % CI over 5 runs
    lovt_lin = {"Random": ((21.9, 1.2), (5.3, 0.0), (5.3, 0.0)), "ImageNet": ((27.5, 0.6), (38.3, 0.0), (43.3, 0.0)),
                "CheXpert": ((40.0, 0.1), (44.3, 0.0), (46.9, 0.0)), "BYOL": ((41.9, 0.0), (45.1, 0.0), (46.8, 0.0)),
                "SimCLR": ((43.0, 0.0), (45.1, 0.0), (47.0, 0.0)), "PixelPro": ((23.9, 0.4), (34.8, 0.2), (40.2, 0.1)),
                "ConVIRT": ((44.6, 0.1), (48.5, 0.0), (50.4, 0.3)), "CLIP*": ((45.2, 0.0), (49.3, 0.1), (51.1, 0.0)),
                "LoVT_100": ((46.33, 0.02), (50.13, 0.03), (51.81, 0.01)), "LoVT_30": ((45.96, 0.03), (49.42, 0.00), (51.55, 0.00))}
    for method, values in lovt_lin.items():
        for fraction, (v, ci) in zip((0.01, 0.1, 1.0), values):
            add(_LOVT, "RSNA", "seg_linear:rsna", method, "dice", v, fraction, ci)
    # LoVT: U-Net Dice on COVID Rural and SIIM-ACR (no RSNA U-Net task exists in LoVT)
    lovt_unet = {"Random": (34.0, 1.1, 32.2, 1.8, 23.2, 1.0, 23.9, 1.6), "ImageNet": (43.9, 2.0, 41.9, 1.7, 38.5, 0.9, 36.9, 0.7),
                 "CheXpert": (46.2, 1.7, 45.9, 3.9, 34.2, 0.8, 37.7, 0.3), "BYOL": (50.7, 2.7, 42.0, 3.0, 42.6, 0.7, 40.7, 0.7),
                 "SimCLR": (48.1, 2.5, 44.1, 2.1, 41.2, 0.8, 38.7, 0.5), "PixelPro": (42.4, 4.4, 37.7, 1.0, 39.4, 1.2, 38.7, 0.6),
                 "ConVIRT": (47.9, 0.7, 46.0, 1.1, 39.3, 0.3, 43.1, 0.3), "CLIP*": (48.6, 2.4, 45.8, 4.1, 44.0, 0.7, 45.0, 0.5),
                 "LoVT_100": (51.23, 2.55, 46.24, 2.42, 44.07, 0.31, 43.85, 0.72),
                 "LoVT_30": (49.49, 1.26, 49.17, 4.65, 43.38, 0.72, 43.09, 0.65)}
    for method, v in lovt_unet.items():
        add(_LOVT_OTHER, "COVID Rural", "seg_unet_finetune", method, "dice", v[0], ci95=v[1])
        add(_LOVT_OTHER, "COVID Rural", "seg_unet_frozen", method, "dice", v[2], ci95=v[3])
        add(_LOVT_OTHER, "SIIM-ACR", "seg_unet_finetune", method, "dice", v[4], ci95=v[5])
        add(_LOVT_OTHER, "SIIM-ACR", "seg_unet_frozen", method, "dice", v[6], ci95=v[7])

    # LIMITR retrieval (a third-party listing, not verified against the paper)
    add("LIMITR retrieval (third-party listing, UNVERIFIED)", "MIMIC-CXR", "retrieval", "LIMITR", "i2t_R@1", 39.7,
        note="candidate pool 1000; not verified against the paper")
    add("LIMITR retrieval (third-party listing, UNVERIFIED)", "MIMIC-CXR", "retrieval", "LIMITR", "t2i_R@1", 37.7,
        note="candidate pool 1000; not verified against the paper")
    return rows


#: Published numbers next to which our results are shown (values in percent, as printed; ``ci95``
#: where the paper gives LoVT's 95 % CI). No aggregate MS-CXR CNR appears in the seed papers
#: (LIMITR shows per-example CNRs only), so grounding has none.
PAPER_NUMBERS: pd.DataFrame = pd.DataFrame(_paper_rows())


# --------------------------------------------------------------------------------------------------
# formatting helpers
# --------------------------------------------------------------------------------------------------
def format_mean_ci(mean: float, ci95: float | None, scale: float = 1.0, digits: int = 1) -> str:
    """``"mean ± ci"`` (``ci`` omitted when undefined, ``"n/a"`` for an undefined mean)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{mean * scale:.{digits}f}"
    if ci95 is not None and not (isinstance(ci95, float) and math.isnan(ci95)):
        text += f" ± {ci95 * scale:.{digits}f}"
    return text


def _fraction_label(f: float) -> str:
    return f"{100 * f:g} %"


def _summary(results: pd.DataFrame, task: str | Sequence[str]) -> pd.DataFrame:
    tasks = [task] if isinstance(task, str) else list(task)
    s = summarize_tidy(results)
    return s[s["task"].isin(tasks)]


def _ours_label(data_label: str) -> str:
    return f"ours: {data_label}"


def _pivot(summary: pd.DataFrame, columns: str, scale: float, digits: int, data_label: str, index: Sequence[str] = ("run", "method"),
           column_order: Sequence | None = None) -> pd.DataFrame:
    if summary.empty:
        return pd.DataFrame()
    s = summary.assign(cell=[format_mean_ci(m, c, scale, digits) for m, c in zip(summary["mean"], summary["ci95"])])
    table = s.pivot_table(index=list(index), columns=columns, values="cell", aggfunc="first")
    if column_order is not None:
        table = table.reindex(columns=list(column_order))
    table.columns.name = None
    table = table.reset_index()
    table.insert(0, "source", _ours_label(data_label))
    return table


def _paper(task: str | Sequence[str], metrics: Sequence[str] | None, columns: str, digits: int,
           column_order: Sequence | None = None) -> pd.DataFrame:
    """Published rows of some tasks (and metrics), pivoted like ours with ``columns`` as the column key."""
    tasks = [task] if isinstance(task, str) else list(task)
    p = PAPER_NUMBERS[PAPER_NUMBERS["task"].isin(tasks)]
    if metrics is not None:
        p = p[p["metric"].isin(metrics)]
    if p.empty:
        return pd.DataFrame()
    return _paper_from(p, columns, digits, column_order)


def _paper_from(p: pd.DataFrame, columns: str, digits: int, column_order: Sequence | None,
                index: Sequence[str] = ("source", "run", "method")) -> pd.DataFrame:
    """Pivot rows of :data:`PAPER_NUMBERS`; ``source`` becomes "paper: <dataset>", ``run`` the publication."""
    p = p.assign(cell=[format_mean_ci(v, None if c is None or pd.isna(c) else c, 1.0, digits) for v, c in zip(p["value"], p["ci95"])],
                 source=["paper: " + d for d in p["dataset"]], run=p["source"])
    table = p.pivot_table(index=list(index), columns=columns, values="cell", aggfunc="first", sort=False)
    if column_order is not None:
        table = table.reindex(columns=list(column_order))
    table.columns.name = None
    return table.reset_index()


def _stack(ours: pd.DataFrame, paper: pd.DataFrame, with_paper: bool) -> pd.DataFrame:
    parts = [t for t in (ours, paper if with_paper else None) if t is not None and not t.empty]
    if not parts:
        return pd.DataFrame()
    # columns no row fills (e.g. a label fraction neither we nor the paper ran) are dropped
    return pd.concat(parts, ignore_index=True).dropna(axis=1, how="all").fillna("")


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------
def classification_table(results: pd.DataFrame, task: str = "probe", metric: str = "macro", data_label: str = "SynthCXR",
                         with_paper: bool = True) -> pd.DataFrame:
    """Macro AUROC (%) per label fraction, runs side by side (LIMITR supp. Table 1 for the probe)."""
    s = _summary(results, task)
    s = s[s["metric"] == metric].assign(fraction_label=lambda d: d["fraction"].map(_fraction_label))
    order = [_fraction_label(f) for f in sorted(set(s["fraction"]) | {0.01, 0.1, 1.0})]
    ours = _pivot(s, "fraction_label", 100.0, 1, data_label, column_order=order)
    paper = None
    if with_paper:
        p = PAPER_NUMBERS[(PAPER_NUMBERS["task"] == task) & (PAPER_NUMBERS["metric"] == metric)]
        if not p.empty:
            paper = _paper_from(p.assign(fraction_label=p["fraction"].map(_fraction_label)), "fraction_label", 1, order)
    return _stack(ours, paper, with_paper)


def pathology9_table(results: pd.DataFrame, task: str = "classify_tuned", labels: Sequence[str] = layout.PATHOLOGY9,
                     data_label: str = "SynthCXR", with_paper: bool = True) -> pd.DataFrame:
    """Per-label test AUROC (%) and macro of a Pathology9 task at 100 % labels (local MI Table 3)."""
    columns = [*labels, "macro"]
    s = _summary(results, task)
    s = s[s["metric"].isin(columns) & (s["fraction"] == 1.0)]
    ours = _pivot(s, "metric", 100.0, 1, data_label, column_order=columns)
    paper = _paper(task, columns, "metric", 1, columns) if with_paper else None
    return _stack(ours, paper, with_paper)


def edema_table(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> pd.DataFrame:
    """EdemaSeverity ordinal AUCs (%) of the frozen and tuned re-training (local MI Table 2)."""
    columns = [*EDEMA_THRESHOLD_NAMES, "mean"]
    s = _summary(results, ["edema_frozen", "edema_tuned"])
    s = s[s["metric"].isin(columns)]
    ours = _pivot(s, "metric", 100.0, 1, data_label, index=("run", "method", "task"), column_order=columns)
    paper = None
    if with_paper:
        p = PAPER_NUMBERS[PAPER_NUMBERS["task"].isin(["edema_frozen", "edema_tuned"]) & PAPER_NUMBERS["metric"].isin(columns)]
        if not p.empty:
            paper = _paper_from(p, "metric", 1, columns, index=("source", "run", "method", "task"))
    return _stack(ours, paper, with_paper)


def segmentation_table(results: pd.DataFrame, metric: str = "dice", data_label: str = "SynthCXR",
                       with_paper: bool = True) -> pd.DataFrame:
    """Dice (%) per segmentation task (``<protocol>:<target>``) and label fraction (LoVT's tables).

    The paper rows are LoVT's RSNA linear segmentation (the ``rsna`` target's protocol) and its
    U-Nets on COVID Rural and SIIM-ACR (LoVT has no RSNA U-Net task).
    """
    s = summarize_tidy(results)
    s = s[s["task"].str.startswith("seg_") & (s["metric"] == metric)]
    if s.empty:
        return pd.DataFrame()
    s = s.assign(fraction_label=s["fraction"].map(_fraction_label))
    order = [_fraction_label(f) for f in sorted(set(s["fraction"]) | {0.01, 0.1, 1.0})]
    ours = _pivot(s, "fraction_label", 100.0, 1, data_label, index=("run", "method", "task"), column_order=order)
    paper = None
    if with_paper:
        protocols = {t.split(":")[0] for t in s["task"]}
        p = PAPER_NUMBERS[PAPER_NUMBERS["task"].map(lambda t: t.split(":")[0] in protocols) & (PAPER_NUMBERS["metric"] == metric)]
        if not p.empty:
            paper = _paper_from(p.assign(fraction_label=p["fraction"].map(_fraction_label)), "fraction_label", 1, order,
                                index=("source", "run", "method", "task"))
    return _stack(ours, paper, with_paper)


def retrieval_table(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> pd.DataFrame:
    """R@1/5/10 (%) in both directions, with the candidate pool and chance R@1 (LIMITR's protocol)."""
    columns = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"]
    s = _summary(results, "retrieval")
    if s.empty:
        return pd.DataFrame()
    ours = _pivot(s[s["metric"].isin(columns)], "metric", 1.0, 1, data_label, column_order=columns)
    extra = s[s["metric"].isin(["pool_size", "chance_R@1"])].pivot_table(index=["run", "method"], columns="metric", values="mean")
    ours = ours.merge(extra.reset_index(), on=["run", "method"], how="left")
    ours["pool_size"] = ours["pool_size"].map(lambda v: f"{int(v)}")
    ours["chance_R@1"] = ours["chance_R@1"].map(lambda v: f"{v:.2f}")
    paper = _paper("retrieval", columns, "metric", 1, columns) if with_paper else None
    if paper is not None and not paper.empty:
        paper["pool_size"] = "1000"
    return _stack(ours, paper, with_paper)


def grounding_table(results: pd.DataFrame, source: str = "ms_cxr", data_label: str = "SynthCXR") -> pd.DataFrame:
    """Mean CNR ± 95 % CI over phrases, and the phrase count, per category and overall.

    The CI here is over phrases (within one deterministic evaluation), not over seeds.
    """
    task = f"grounding:{source}"
    s = _summary(results, task)
    if s.empty:
        return pd.DataFrame()
    means = s[~s["metric"].str.contains("/") & ~s["metric"].isin(["n_phrases", "n_skipped"])]
    out = []
    for (run, method), g in means.groupby(["run", "method"], sort=True):
        row = {"source": _ours_label(data_label), "run": run, "method": method}
        metric_of = s[(s["run"] == run) & (s["method"] == method)].set_index("metric")["mean"]
        categories = sorted(c for c in g["metric"] if c != "overall") + ["overall"]
        for c in categories:
            ci = metric_of.get(f"{c}/ci95", np.nan)
            count = metric_of.get(f"{c}/count", np.nan)
            row[c] = format_mean_ci(float(metric_of[c]), float(ci), 1.0, 2) + ("" if pd.isna(count) else f" (n={int(count)})")
        out.append(row)
    return pd.DataFrame(out).fillna("")


def summary_tables(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> dict[str, pd.DataFrame]:
    """Every table the results have rows for, keyed by a title."""
    tasks = set(results["task"]) if len(results) else set()
    tables: dict[str, pd.DataFrame] = {}
    if "probe" in tasks:
        tables["Linear probe: macro AUROC (%) by label fraction"] = classification_table(results, "probe", data_label=data_label,
                                                                                          with_paper=with_paper)
    for task, title in (("classify_frozen", "encoder-frozen"), ("classify_tuned", "encoder-tuned")):
        if task in tasks:
            tables[f"Pathology9 {title}: test AUROC (%)"] = pathology9_table(results, task, data_label=data_label, with_paper=with_paper)
    if tasks & {"edema_frozen", "edema_tuned"}:
        tables["EdemaSeverity: ordinal AUCs (%)"] = edema_table(results, data_label=data_label, with_paper=with_paper)
    if any(t.startswith("seg_") for t in tasks):
        tables["Segmentation: dataset-level Dice (%)"] = segmentation_table(results, data_label=data_label, with_paper=with_paper)
    if "retrieval" in tasks:
        tables["Retrieval: R@K (%)"] = retrieval_table(results, data_label=data_label, with_paper=with_paper)
    for source in ("ms_cxr", "synth_masks"):
        if f"grounding:{source}" in tasks:
            tables[f"Phrase grounding ({source}): CNR"] = grounding_table(results, source, data_label=data_label)
    return {k: v for k, v in tables.items() if not v.empty}
