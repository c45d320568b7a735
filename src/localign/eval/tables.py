"""The tables the papers report, built from the tidy evaluation results, with the papers' numbers beside ours.

Every table aggregates the seeds of a (run, method, task, fraction, metric) to **mean ± 95 % CI**,
the half-width 1.96·s/√n with s the sample standard deviation over seeds — the "±" of LoVT's
tables (:func:`~localign.eval.stats.mean_ci95`; one seed shows the mean alone). AUROC, Dice and R@K
are shown in percent, CNR as is. Rows are labelled by their source: ``ours: <dataset>`` for the
results (default ``ours: SynthCXR``) and ``paper: <dataset>`` for :data:`PAPER_NUMBERS`, the
published values of the corresponding protocol (placed next to ours where the task corresponds; the
data differ, so they are context, not targets), read from the packaged CSV files of
:mod:`localign.published`.

- :func:`classification_table`  probe / classifier macro AUROC at 1 / 10 / 100 % labels
- :func:`pathology9_table`      per-label AUROC of Pathology9 (local MI Table 3)
- :func:`edema_table`           EdemaSeverity ordinal AUCs (local MI Table 2)
- :func:`segmentation_table`    Dice of linear segmentation and U-Nets (LoVT)
- :func:`retrieval_table`       R@1/5/10 both directions with the pool size (LIMITR)
- :func:`grounding_table`       CNR per category (BioViL / LIMITR's MS-CXR protocol)
- :func:`summary_tables`        the table of every registered protocol that the results contain
  (each protocol declares its table: ``probe_tables``, ``edema_tables``, ... below, or its own)
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
def paper_numbers(folder=None) -> pd.DataFrame:
    """The published numbers of the files ``display.yaml`` lists (:mod:`localign.published`), in the form the tables read.

    One row per published number: ``source`` (the paper table's label), ``dataset``, ``task`` and
    ``fraction`` (the file's ``protocol`` renamed as ``display.yaml`` says, its ``@<percent>%``
    suffix split off), ``method`` and ``metric`` (renamed likewise), ``value`` (times the file's
    ``scale``: percent), ``ci95`` (the half-width of the paper's 95 % CI, None without one) and
    ``note``; the files in the order of ``display.yaml``.
    """
    from localign.published import load_published, split_protocol, table_display

    parts = []
    for name, show in table_display(None if folder is None else str(folder)).items():
        source, _, table = name.partition("_")
        p = load_published(source, table, folder=folder)
        rename = lambda values, mapping: [(mapping or {}).get(v, v) for v in values]  # noqa: E731
        split = [split_protocol(t) for t in rename(p["protocol"], show.protocol)]
        half = ((p["ci_high"] - p["ci_low"]) * show.scale / 2).round(9)
        parts.append(pd.DataFrame({
            "source": show.label, "dataset": p["dataset"], "task": [t for t, _ in split],
            "method": rename(p["method"], show.method), "fraction": [f for _, f in split],
            "metric": rename(p["metric"], show.metric), "value": p["value"] * show.scale,
            "ci95": [None if pd.isna(h) else float(h) for h in half], "note": p["note"],
        }))
    return pd.concat(parts, ignore_index=True)


#: Published numbers next to which our results are shown (values in percent, as printed; ``ci95``
#: where the paper gives a 95 % CI), read from the CSV files of :mod:`localign.published`. No
#: aggregate MS-CXR CNR appears in the seed papers (LIMITR shows per-example CNRs only), so
#: grounding has none.
PAPER_NUMBERS: pd.DataFrame = paper_numbers()


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


def summarize_task(results: pd.DataFrame, task: str | Sequence[str]) -> pd.DataFrame:
    tasks = [task] if isinstance(task, str) else list(task)
    s = summarize_tidy(results)
    return s[s["task"].isin(tasks)]


def _ours_label(data_label: str) -> str:
    return f"ours: {data_label}"


def pivot_cells(summary: pd.DataFrame, columns: str, scale: float, digits: int, data_label: str, index: Sequence[str] = ("run", "method"),
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


def paper_cells(task: str | Sequence[str], metrics: Sequence[str] | None, columns: str, digits: int,
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


def stack_tables(ours: pd.DataFrame, paper: pd.DataFrame, with_paper: bool) -> pd.DataFrame:
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
    s = summarize_task(results, task)
    s = s[s["metric"] == metric].assign(fraction_label=lambda d: d["fraction"].map(_fraction_label))
    order = [_fraction_label(f) for f in sorted(set(s["fraction"]) | {0.01, 0.1, 1.0})]
    ours = pivot_cells(s, "fraction_label", 100.0, 1, data_label, column_order=order)
    paper = None
    if with_paper:
        p = PAPER_NUMBERS[(PAPER_NUMBERS["task"] == task) & (PAPER_NUMBERS["metric"] == metric)]
        if not p.empty:
            paper = _paper_from(p.assign(fraction_label=p["fraction"].map(_fraction_label)), "fraction_label", 1, order)
    return stack_tables(ours, paper, with_paper)


def pathology9_table(results: pd.DataFrame, task: str = "classify_tuned", labels: Sequence[str] = layout.PATHOLOGY9,
                     data_label: str = "SynthCXR", with_paper: bool = True) -> pd.DataFrame:
    """Per-label test AUROC (%) and macro of a Pathology9 task at 100 % labels (local MI Table 3)."""
    columns = [*labels, "macro"]
    s = summarize_task(results, task)
    s = s[s["metric"].isin(columns) & (s["fraction"] == 1.0)]
    ours = pivot_cells(s, "metric", 100.0, 1, data_label, column_order=columns)
    paper = paper_cells(task, columns, "metric", 1, columns) if with_paper else None
    return stack_tables(ours, paper, with_paper)


def edema_table(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> pd.DataFrame:
    """EdemaSeverity ordinal AUCs (%) of the frozen and tuned re-training (local MI Table 2)."""
    columns = [*EDEMA_THRESHOLD_NAMES, "mean"]
    s = summarize_task(results, ["edema_frozen", "edema_tuned"])
    s = s[s["metric"].isin(columns)]
    ours = pivot_cells(s, "metric", 100.0, 1, data_label, index=("run", "method", "task"), column_order=columns)
    paper = None
    if with_paper:
        p = PAPER_NUMBERS[PAPER_NUMBERS["task"].isin(["edema_frozen", "edema_tuned"]) & PAPER_NUMBERS["metric"].isin(columns)]
        if not p.empty:
            paper = _paper_from(p, "metric", 1, columns, index=("source", "run", "method", "task"))
    return stack_tables(ours, paper, with_paper)


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
    ours = pivot_cells(s, "fraction_label", 100.0, 1, data_label, index=("run", "method", "task"), column_order=order)
    paper = None
    if with_paper:
        protocols = {t.split(":")[0] for t in s["task"]}
        p = PAPER_NUMBERS[PAPER_NUMBERS["task"].map(lambda t: t.split(":")[0] in protocols) & (PAPER_NUMBERS["metric"] == metric)]
        if not p.empty:
            paper = _paper_from(p.assign(fraction_label=p["fraction"].map(_fraction_label)), "fraction_label", 1, order,
                                index=("source", "run", "method", "task"))
    return stack_tables(ours, paper, with_paper)


def retrieval_table(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> pd.DataFrame:
    """R@1/5/10 (%) in both directions, with the candidate pool and chance R@1 (LIMITR's protocol)."""
    columns = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"]
    s = summarize_task(results, "retrieval")
    if s.empty:
        return pd.DataFrame()
    ours = pivot_cells(s[s["metric"].isin(columns)], "metric", 1.0, 1, data_label, column_order=columns)
    extra = s[s["metric"].isin(["pool_size", "chance_R@1"])].pivot_table(index=["run", "method"], columns="metric", values="mean")
    ours = ours.merge(extra.reset_index(), on=["run", "method"], how="left")
    ours["pool_size"] = ours["pool_size"].map(lambda v: f"{int(v)}")
    ours["chance_R@1"] = ours["chance_R@1"].map(lambda v: f"{v:.2f}")
    paper = paper_cells("retrieval", columns, "metric", 1, columns) if with_paper else None
    if paper is not None and not paper.empty:
        paper["pool_size"] = "1000"
    return stack_tables(ours, paper, with_paper)


def grounding_table(results: pd.DataFrame, source: str = "ms_cxr", data_label: str = "SynthCXR") -> pd.DataFrame:
    """Mean CNR ± 95 % CI over phrases, and the phrase count, per category and overall.

    The CI here is over phrases (within one deterministic evaluation), not over seeds.
    """
    task = f"grounding:{source}"
    s = summarize_task(results, task)
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


# --------------------------------------------------------------------------------------------------
# the tables of each protocol (declared in its registry entry) and all of them
# --------------------------------------------------------------------------------------------------
def probe_tables(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> dict[str, pd.DataFrame]:
    """The linear probe's table (``probe`` protocol)."""
    return {"Linear probe: macro AUROC (%) by label fraction": classification_table(results, "probe", data_label=data_label,
                                                                                      with_paper=with_paper)}


def pathology9_frozen_tables(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> dict[str, pd.DataFrame]:
    """The encoder-frozen Pathology9 table (``classify_frozen``)."""
    return {"Pathology9 encoder-frozen: test AUROC (%)": pathology9_table(results, "classify_frozen", data_label=data_label,
                                                                           with_paper=with_paper)}


def pathology9_tuned_tables(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> dict[str, pd.DataFrame]:
    """The encoder-tuned Pathology9 table (``classify_tuned``)."""
    return {"Pathology9 encoder-tuned: test AUROC (%)": pathology9_table(results, "classify_tuned", data_label=data_label,
                                                                          with_paper=with_paper)}


def edema_tables(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> dict[str, pd.DataFrame]:
    """One EdemaSeverity table for both modes (``edema_frozen``, ``edema_tuned``)."""
    return {"EdemaSeverity: ordinal AUCs (%)": edema_table(results, data_label=data_label, with_paper=with_paper)}


def segmentation_tables(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> dict[str, pd.DataFrame]:
    """One Dice table for every segmentation protocol and target (``seg_*``)."""
    return {"Segmentation: dataset-level Dice (%)": segmentation_table(results, data_label=data_label, with_paper=with_paper)}


def retrieval_tables(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> dict[str, pd.DataFrame]:
    """The retrieval table (``retrieval``)."""
    return {"Retrieval: R@K (%)": retrieval_table(results, data_label=data_label, with_paper=with_paper)}


def grounding_tables(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> dict[str, pd.DataFrame]:
    """One CNR table per grounding source present (``grounding:<source>``); no published CNRs exist."""
    tasks = set(results["task"]) if len(results) else set()
    return {f"Phrase grounding ({source}): CNR": grounding_table(results, source, data_label=data_label)
            for source in ("ms_cxr", "synth_masks") if f"grounding:{source}" in tasks}


def summary_tables(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> dict[str, pd.DataFrame]:
    """Every table the results have rows for, keyed by a title: the ``table`` of each registered
    protocol present in the results (:mod:`localign.eval.protocols.registry`), in registry order,
    a table shared by several protocols once."""
    from localign.eval.protocols.registry import present_protocols

    tables: dict[str, pd.DataFrame] = {}
    done: set[int] = set()
    for protocol in present_protocols(results):
        if protocol.table is None or id(protocol.table) in done:
            continue
        done.add(id(protocol.table))
        for title, table in protocol.table(results, data_label=data_label, with_paper=with_paper).items():
            tables.setdefault(title, table)
    return {k: v for k, v in tables.items() if not v.empty}
