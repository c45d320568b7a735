"""The ablation chapter's tables: every preset of an ablation, pretrained once, evaluated, and set beside the paper.

Three ablations of the seed papers, each a list of registry presets (:mod:`localign.models.registry`):

- LoVT supplementary Table 1 (:data:`LOVT_TABLE_PRESETS`): LoVT with one part removed at a time
  (local weighting, attention pooling, the global or a local loss, the smooth spatial positives),
  and the global baselines CLIP and ConVIRT; the paper scores them by RSNA YOLOv3 frozen mAP at
  10 % labels, we by the RSNA-format linear segmentation Dice and the linear probe at 10 %;
- Liao et al. Tables 2 and 3 (:data:`LIAO_PRESETS`): {global, local} × {MINE, CPC} MI maximisation,
  re-trained with the encoder frozen or tuned, on EdemaSeverity and Pathology9, beside the
  supervised image-only model;
- LIMITR (:data:`LIMITR_PRESETS`): the paper's model against the released configuration.

:func:`localign.chapter_runs.ensure_and_evaluate` (a face: it trains) gets every run through
:func:`~localign.train.reuse.ensure_run` (a finished run with the same settings is reused, never
trained twice) and evaluates it with :func:`~localign.eval.protocols.evaluate_runs`; the table
functions here turn its tidy rows (one per
run, method, task, fraction, seed, metric) and the published rows
(:func:`localign.published.load_published`) into side-by-side tables: our mean ± 95 % CI over
downstream seeds next to the paper's value, rows in the order of the presets asked for.
:func:`ablation_claims` tests the papers' ablation claims with :func:`~localign.eval.claims.compare_claim`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from localign.eval.stats import mean_ci95, validate_tidy
from localign.eval.tables import format_mean_ci

#: LoVT supplementary Table 1, in the paper's row order, plus ``lovt_plateau`` (LoVT with the
#: schedule of the ConVIRT row, which the table has no row for)
LOVT_TABLE_PRESETS: tuple[str, ...] = (
    "lovt", "lovt_no_weight", "lovt_no_weight_no_att", "lovt_no_global", "lovt_no_spatial", "lovt_local_report_only",
    "lovt_local_image_only", "lovt_no_local", "lovt_global_only", "clip", "convirt_cosine", "convirt", "lovt_plateau",
)
#: Liao et al. Tables 2 and 3: {global, local} × {MINE, CPC}
LIAO_PRESETS: tuple[str, ...] = ("global_mi_mine", "global_mi_cpc", "local_mi_mine", "local_mi_cpc")
#: LIMITR: the paper's model and the released configuration
LIMITR_PRESETS: tuple[str, ...] = ("limitr", "limitr_code")
#: the supervised image-only model of Liao et al. (the ``supervised`` baseline's method name)
SUPERVISED = "supervised_image_only"
#: the LoVT table's localized task: the RSNA-format linear segmentation
LOVT_SEG_TASK = "seg_linear:rsna"
#: row labels of the presets without a row label in LoVT's table
_EXTRA_LABELS = {"lovt_plateau": "LoVT with ReduceLROnPlateau (no row in the paper)"}
_MI_LEVEL = {"global_mi_mine": "global", "global_mi_cpc": "global", "local_mi_mine": "local", "local_mi_cpc": "local"}
_MI_CRITIC = {"global_mi_mine": "MINE", "global_mi_cpc": "CPC", "local_mi_mine": "MINE", "local_mi_cpc": "CPC"}


# --------------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------------
def check_presets(presets: Sequence[str], allowed: Sequence[str] | None = None, name: str = "presets") -> tuple[str, ...]:
    """The presets as a tuple, checked: non-empty, distinct, registered methods (and among ``allowed``).

    :raises ValueError: naming ``name`` and the offending preset(s).
    """
    from localign.models.registry import METHODS

    if isinstance(presets, str) or not presets:
        raise ValueError(f"{name}: expected a non-empty list of method presets, got {presets!r}")
    presets = tuple(presets)
    duplicated = sorted({p for p in presets if presets.count(p) > 1})
    if duplicated:
        raise ValueError(f"{name}: {duplicated} listed more than once")
    unknown = [p for p in presets if p not in METHODS]
    if unknown:
        raise ValueError(f"{name}: unknown method preset(s) {unknown}; registered: {', '.join(METHODS)}")
    if allowed is not None:
        outside = [p for p in presets if p not in allowed]
        if outside:
            raise ValueError(f"{name}: {outside} not part of this ablation; choose from {', '.join(allowed)}")
    return presets


def preset_label(preset: str) -> str:
    """The row label of a preset: LoVT's table row (:data:`~localign.models.registry.LOVT_ABLATIONS`), else the
    registry's description."""
    from localign.models.registry import LOVT_ABLATIONS, get_method

    if preset in LOVT_ABLATIONS:
        return LOVT_ABLATIONS[preset][0]
    if preset in _EXTRA_LABELS:
        return _EXTRA_LABELS[preset]
    return get_method(preset).description


def preset_descriptions(presets: Sequence[str]) -> pd.DataFrame:
    """One row per preset: ``preset``, ``row`` (its label) and ``removes`` (the registry's description)."""
    from localign.models.registry import get_method

    presets = check_presets(presets)
    return pd.DataFrame({"preset": presets, "row": [preset_label(p) for p in presets],
                         "description": [get_method(p).description for p in presets]})


def relabel_twins(results: pd.DataFrame, twins: Mapping[str, str]) -> pd.DataFrame:
    """The rows of each twin's run copied under the preset's own name (``run`` and ``method``), for presets that were
    not trained because :func:`localign.chapter_runs.recipe_twins` found an identical earlier training; ``attrs`` are kept."""
    t = _check_results(results)
    parts = [t]
    for preset, twin in twins.items():
        rows = t[t["method"] == twin]
        if rows.empty:
            raise ValueError(f"twins: {preset}'s twin {twin!r} has no rows in the results")
        parts.append(rows.assign(run=preset, method=preset))
    out = validate_tidy(pd.concat(parts, ignore_index=True))
    out.attrs = dict(results.attrs)
    return out




# --------------------------------------------------------------------------------------------------
# per-seed values and summaries
# --------------------------------------------------------------------------------------------------
def _check_results(results: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(results, pd.DataFrame):
        raise ValueError(f"results: expected a tidy DataFrame, got {type(results).__name__}")
    return validate_tidy(results)


def _check_present(results: pd.DataFrame, presets: Sequence[str]) -> None:
    have = set(results["method"])
    missing = [p for p in presets if p not in have]
    if missing:
        raise ValueError(f"presets: {missing} have no rows in the results (methods there: {sorted(have)})")


def seed_values(results: pd.DataFrame, method: str, task: str, metric: str | Sequence[str], fraction: float = 1.0,
                run: str | None = None) -> pd.Series:
    """The per-seed values of one method's metric (several metrics: their mean per seed).

    :param metric: one metric, or several whose per-seed mean is taken (e.g. the three
        EdemaSeverity AUCs); a seed missing any of them is left out.
    :param run: only this run's rows (needed when the method has several, e.g. one supervised
        baseline per distinct encoder configuration).
    :return: a Series indexed by seed (sorted), NaN values dropped; empty when nothing matches.
    """
    t = _check_results(results)
    metrics = [metric] if isinstance(metric, str) else list(metric)
    if not metrics:
        raise ValueError("metric: no metric given")
    rows = t[(t["method"] == method) & (t["task"] == task) & t["metric"].isin(metrics) & np.isclose(t["fraction"], fraction)]
    if run is not None:
        rows = rows[rows["run"] == run]
    if rows["run"].nunique() > 1:
        raise ValueError(f"{method} / {task}: rows of several runs {sorted(rows['run'].unique())}; pass run=")
    wide = rows.pivot_table(index="seed", columns="metric", values="value", aggfunc="first").reindex(columns=metrics)
    return wide.dropna().mean(axis=1).sort_index().rename(f"{method}:{task}")


@dataclass(frozen=True)
class Measure:
    """One column of an ablation table: a task's metric at a label fraction (several metrics: their per-seed mean).

    :ivar label: the column heading; :ivar scale: factor to the shown unit (100: percent)
    """

    label: str
    task: str
    metric: str | tuple[str, ...]
    fraction: float = 1.0
    scale: float = 100.0


def measure_summary(results: pd.DataFrame, presets: Sequence[str], measures: Sequence[Measure]) -> pd.DataFrame:
    """Mean ± 95 % CI over seeds of every (preset, measure), presets in the order given.

    :return: columns ``preset``, ``row`` (label), ``measure`` (its label), ``mean``, ``ci95`` (both
        times the measure's scale; ``ci95`` NaN for one seed), ``n`` (seeds); a (preset, measure)
        without values has NaN mean and n = 0.
    :raises ValueError: an unknown preset, or a preset without any row in ``results``.
    """
    presets = check_presets(presets)
    t = _check_results(results)
    _check_present(t, presets)
    if not measures:
        raise ValueError("measures: no measure given")
    rows = []
    for preset in presets:
        for m in measures:
            v = seed_values(t, preset, m.task, m.metric if isinstance(m.metric, str) else list(m.metric), m.fraction).to_numpy(float)
            mean, ci = mean_ci95(v) if v.size else (math.nan, math.nan)
            rows.append({"preset": preset, "row": preset_label(preset), "measure": m.label, "mean": mean * m.scale,
                         "ci95": ci * m.scale, "n": int(v.size)})
    return pd.DataFrame(rows, columns=["preset", "row", "measure", "mean", "ci95", "n"])


def summary_cell(summary: pd.DataFrame, preset: str, measure: str, digits: int = 1) -> str:
    """One cell of :func:`measure_summary` as text, ``"mean ± ci"`` (``"n/a"`` when the preset or measure is absent)."""
    g = summary[(summary["preset"] == preset) & (summary["measure"] == measure)]
    if g.empty:
        return "n/a"
    return format_mean_ci(float(g["mean"].iloc[0]), float(g["ci95"].iloc[0]), 1.0, digits)


def rank_agreement(summary: pd.DataFrame, paper: pd.DataFrame, measure: str) -> tuple[float, int]:
    """Spearman's rank correlation between our ``measure`` and the paper's value over the presets both have.

    Ranks are average ranks of ties (pandas ``rank``); the correlation is Pearson's of the ranks.
    :return: ``(rho, n)``; ``rho`` is NaN with fewer than 3 shared presets or a constant column.
    """
    ours = summary[summary["measure"] == measure].set_index("preset")["mean"]
    theirs = paper.drop_duplicates("preset").set_index("preset")["value"]
    both = pd.concat([ours.rename("ours"), theirs.rename("paper")], axis=1, join="inner").dropna()
    if len(both) < 3:
        return math.nan, int(len(both))
    r = both.rank()
    if r["ours"].std() == 0 or r["paper"].std() == 0:
        return math.nan, int(len(both))
    return float(np.corrcoef(r["ours"], r["paper"])[0, 1]), int(len(both))


# --------------------------------------------------------------------------------------------------
# LoVT supplementary Table 1
# --------------------------------------------------------------------------------------------------
def lovt_measures(fractions: Sequence[float] = (0.1,), seg_task: str = LOVT_SEG_TASK) -> list[Measure]:
    """The LoVT table's columns: linear segmentation Dice and linear-probe macro AUROC at each fraction."""
    if not fractions:
        raise ValueError("fractions: no label fraction given")
    out = []
    for f in fractions:
        out.append(Measure(f"Dice {100 * f:g} % (%)", seg_task, "dice", float(f)))
    for f in fractions:
        out.append(Measure(f"probe AUROC {100 * f:g} % (%)", "probe", "macro", float(f)))
    return out


def lovt_paper(published: pd.DataFrame | None = None) -> pd.DataFrame:
    """LoVT supplementary Table 1 as ``preset``, ``value``, ``ci95`` (half-width of the paper's CI), ``metric``,
    ``dataset``, ``protocol`` (RSNA YOLOv3 frozen 10 % mAP in %, pretrained on 30 % of MIMIC-CXR)."""
    if published is None:
        from localign.published import load_published

        published = load_published("lovt", "supp_table1")
    missing = sorted({"method", "value", "ci_low", "ci_high", "metric", "dataset", "protocol"} - set(published.columns))
    if missing:
        raise ValueError(f"published: columns {missing} missing")
    return pd.DataFrame({"preset": published["method"].to_numpy(), "value": published["value"].to_numpy(float),
                         "ci95": ((published["ci_high"] - published["ci_low"]) / 2).to_numpy(float),
                         "metric": published["metric"].to_numpy(), "dataset": published["dataset"].to_numpy(),
                         "protocol": published["protocol"].to_numpy()})


def side_by_side_table(results: pd.DataFrame, presets: Sequence[str], measures: Sequence[Measure],
                       paper: pd.DataFrame | None = None, paper_column: str = "paper", data_label: str = "SynthCXR",
                       digits: int = 1) -> pd.DataFrame:
    """Ours (mean ± 95 % CI per measure) beside the paper's value, one row per preset in the order given.

    :param paper: rows ``preset``, ``value`` and optionally ``ci95`` (e.g. :func:`lovt_paper`);
        a preset the paper has no row for shows ``—``.
    :return: columns ``preset``, ``row``, one ``ours: <data_label>, <measure>`` column per measure
        (``n/a`` where no value exists), then ``paper_column`` (when ``paper`` is given).
    """
    s = measure_summary(results, presets, measures)
    table = pd.DataFrame({"preset": list(dict.fromkeys(s["preset"]))})
    table["row"] = [preset_label(p) for p in table["preset"]]
    for m in measures:
        g = s[s["measure"] == m.label].set_index("preset")
        table[f"ours: {data_label}, {m.label}"] = [format_mean_ci(float(g.at[p, "mean"]), float(g.at[p, "ci95"]), 1.0, digits)
                                                     for p in table["preset"]]
    if paper is not None:
        p = paper.drop_duplicates("preset").set_index("preset")
        cells = []
        for preset in table["preset"]:
            if preset not in p.index:
                cells.append("—")
                continue
            ci = p.at[preset, "ci95"] if "ci95" in p.columns else None
            cells.append(format_mean_ci(float(p.at[preset, "value"]), None if ci is None or pd.isna(ci) else float(ci), 1.0, digits))
        table[paper_column] = cells
    return table


def lovt_ablation_table(results: pd.DataFrame, presets: Sequence[str] = LOVT_TABLE_PRESETS, fractions: Sequence[float] = (0.1,),
                        seg_task: str = LOVT_SEG_TASK, published: pd.DataFrame | None = None,
                        data_label: str = "SynthCXR") -> pd.DataFrame:
    """LoVT supplementary Table 1 on our data: Dice and probe AUROC at each fraction (mean ± 95 % CI over seeds,
    %), next to the paper's RSNA YOLOv3 frozen 10 % mAP (pretrained on MIMIC-CXR)."""
    check_presets(presets, LOVT_TABLE_PRESETS)
    paper = lovt_paper(published)
    return side_by_side_table(results, presets, lovt_measures(fractions, seg_task), paper,
                              paper_column="paper: RSNA, YOLOv3 frozen 10 % mAP (%)", data_label=data_label)


# --------------------------------------------------------------------------------------------------
# Liao et al. Tables 2 and 3
# --------------------------------------------------------------------------------------------------
#: the two Liao tables: task prefix, metrics, summary column, the published table
LIAO_KINDS: dict[str, dict[str, Any]] = {
    "edema": {"tasks": ("edema_frozen", "edema_tuned"), "summary": "mean", "table": "table2"},
    "pathology9": {"tasks": ("classify_frozen", "classify_tuned"), "summary": "macro", "table": "table3"},
}


def _liao_metrics(kind: str) -> tuple[str, ...]:
    from localign.data import layout
    from localign.metrics import EDEMA_THRESHOLD_NAMES

    return tuple(EDEMA_THRESHOLD_NAMES) if kind == "edema" else tuple(layout.PATHOLOGY9)


def _baseline_runs(t: pd.DataFrame) -> dict[str, str]:
    """``{run: label}`` of the supervised baseline: ``image-only``, or ``image-only <run>`` for each of several
    (the runner builds one per distinct encoder configuration, e.g. global MI's 2×2 pooling and local MI's average)."""
    runs = sorted(set(t.loc[t["method"] == SUPERVISED, "run"]))
    if not runs:
        raise ValueError(f"baseline: no {SUPERVISED} rows in the results (evaluate with baselines=['supervised'] or pass baseline=False)")
    return {r: "image-only" if len(runs) == 1 else f"image-only, {r.lstrip('-').replace('-', ' ')}" for r in runs}


def liao_table(results: pd.DataFrame, kind: str = "edema", presets: Sequence[str] = LIAO_PRESETS, baseline: bool = True,
               published: pd.DataFrame | None = None, data_label: str = "SynthCXR", digits: int = 1) -> pd.DataFrame:
    """Liao et al. Table 2 (``kind="edema"``: the three ordinal AUCs) or Table 3 (``"pathology9"``: per finding), ours beside the paper's.

    One pair of rows per (preset, encoder frozen / tuned): ``ours: <data_label>`` (mean ± 95 % CI
    over seeds, %) then ``paper: MIMIC-CXR`` (the printed AUC, %); then the supervised image-only
    model (ours frozen and tuned re-training of its encoder, the paper's single row). The summary
    column (``mean`` of the three AUCs, ``macro`` over the nine findings) is ours as measured and,
    for the paper, the mean of its printed per-column AUCs (the paper prints none per critic).

    :return: columns ``level``, ``critic``, ``encoder``, ``source``, the metrics, the summary column.
    :raises ValueError: unknown kind or preset, a preset without rows.
    """
    if kind not in LIAO_KINDS:
        raise ValueError(f"kind: expected one of {sorted(LIAO_KINDS)}, got {kind!r}")
    presets = check_presets(presets, LIAO_PRESETS)
    spec = LIAO_KINDS[kind]
    metrics = _liao_metrics(kind)
    summary = spec["summary"]
    t = _check_results(results)
    _check_present(t, presets)
    if published is None:
        from localign.published import load_published

        published = load_published("liao", spec["table"])
    ours_label, paper_label = f"ours: {data_label}", "paper: MIMIC-CXR"

    def ours_row(method: str, task: str, level: str, critic: str, encoder: str, run: str | None = None) -> dict:
        row = {"level": level, "critic": critic, "encoder": encoder, "source": ours_label}
        for m in (*metrics, summary):
            v = seed_values(t, method, task, m, run=run).to_numpy(float)
            mean, ci = mean_ci95(v) if v.size else (math.nan, math.nan)
            row[m] = format_mean_ci(mean, ci, 100.0, digits)
        return row

    def paper_row(method: str, protocol: str, level: str, critic: str, encoder: str) -> dict:
        p = published[(published["method"] == method) & (published["protocol"] == protocol)].set_index("metric")["value"]
        row = {"level": level, "critic": critic, "encoder": encoder, "source": paper_label}
        values = [float(p[m]) if m in p.index else math.nan for m in metrics]
        for m, v in zip(metrics, values):
            row[m] = format_mean_ci(v, None, 100.0, digits)
        row[summary] = format_mean_ci(float(np.mean(values)), None, 100.0, digits) if all(map(math.isfinite, values)) else "—"
        return row

    rows = []
    for preset in presets:
        for task in spec["tasks"]:
            encoder = task.rsplit("_", 1)[1]
            rows.append(ours_row(preset, task, _MI_LEVEL[preset], _MI_CRITIC[preset], encoder))
            rows.append(paper_row(preset, task, _MI_LEVEL[preset], _MI_CRITIC[preset], encoder))
    if baseline:
        baseline_runs = _baseline_runs(t)
        for run, label in baseline_runs.items():
            for task in spec["tasks"]:
                rows.append(ours_row(SUPERVISED, task, label, "—", task.rsplit("_", 1)[1], run))
        rows.append(paper_row("image_only_supervised", "supervised", "image-only", "—", "n/a (supervised)"))
    return pd.DataFrame(rows, columns=["level", "critic", "encoder", "source", *metrics, summary])


def liao_summary(results: pd.DataFrame, presets: Sequence[str] = LIAO_PRESETS, baseline: bool = True,
                 published: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """The summary AUC (%) of both Liao tables for the figure: one row per (kind, preset, encoder, source).

    :return: columns ``kind`` (edema / pathology9), ``preset`` (the supervised baseline as
        ``image-only``, or ``image-only <run>`` for each of several), ``encoder`` (frozen / tuned / n/a),
        ``source`` (ours / paper), ``mean``, ``ci95`` (NaN for the paper and for one seed), ``n``.
    """
    presets = check_presets(presets, LIAO_PRESETS)
    t = _check_results(results)
    _check_present(t, presets)
    rows = []
    for kind, spec in LIAO_KINDS.items():
        metrics = _liao_metrics(kind)
        if published is not None and kind in published:
            pub = published[kind]
        else:
            from localign.published import load_published

            pub = load_published("liao", spec["table"])
        subjects = [(p, None, p) for p in presets]
        if baseline:
            subjects += [(SUPERVISED, run, label) for run, label in _baseline_runs(t).items()]
        for method, run, name in subjects:
            for task in spec["tasks"]:
                v = seed_values(t, method, task, spec["summary"], run=run).to_numpy(float)
                mean, ci = mean_ci95(v) if v.size else (math.nan, math.nan)
                rows.append({"kind": kind, "preset": name, "encoder": task.rsplit("_", 1)[1], "source": "ours",
                             "mean": 100 * mean, "ci95": 100 * ci, "n": int(v.size)})
                paper_method, protocol = ("image_only_supervised", "supervised") if method == SUPERVISED else (method, task)
                p = pub[(pub["method"] == paper_method) & (pub["protocol"] == protocol) & pub["metric"].isin(metrics)]
                value = 100 * float(p["value"].mean()) if len(p) == len(metrics) else math.nan
                rows.append({"kind": kind, "preset": name, "encoder": task.rsplit("_", 1)[1], "source": "paper",
                             "mean": value, "ci95": math.nan, "n": 0})
    return pd.DataFrame(rows, columns=["kind", "preset", "encoder", "source", "mean", "ci95", "n"])


# --------------------------------------------------------------------------------------------------
# per-phrase grounding CNRs (the repetitions of the LIMITR claim)
# --------------------------------------------------------------------------------------------------
def phrase_cnrs(eval_csv: str | Path, method: str, task: str = "grounding:synth_masks") -> pd.Series:
    """The per-phrase CNRs of one method's grounding task, from the details ``evaluate_runs`` wrote beside ``eval_csv``.

    :return: a Series of CNRs indexed by ``phrase_id`` (undefined CNRs dropped).
    :raises FileNotFoundError: no JSON beside the CSV; :raises ValueError: no details for (method, task).
    """
    info_path = Path(eval_csv).with_suffix(".json")
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path}: no evaluation JSON (evaluate_runs(..., out={str(eval_csv)!r}) writes it)")
    details = json.loads(info_path.read_text()).get("details", [])
    paths = [d["path"] for d in details if d.get("method") == method and d.get("task") == task]
    if not paths:
        have = sorted({(d.get("method"), d.get("task")) for d in details})
        raise ValueError(f"no per-phrase details for method {method!r}, task {task!r}; the evaluation has {have}")
    frame = pd.read_csv(paths[0])
    return frame.set_index("phrase_id")["cnr"].dropna()


# --------------------------------------------------------------------------------------------------
# claims
# --------------------------------------------------------------------------------------------------
CHAPTER = "05_ablations"


def _pool(results: pd.DataFrame, methods: Sequence[str], task: str, metric: str | Sequence[str], fraction: float = 1.0) -> list[float]:
    return [float(v) for m in methods for v in seed_values(results, m, task, metric, fraction)]


def ablation_claims(lovt: pd.DataFrame | None = None, liao: pd.DataFrame | None = None, limitr_csv: str | Path | None = None,
                    fraction: float = 0.1, seg_task: str = LOVT_SEG_TASK,
                    grounding_tasks: Sequence[str] = ("grounding:ms_cxr", "grounding:synth_masks")) -> tuple[list[dict], list[str]]:
    """The ablation claims of the three papers that the given results can test, as rows of the claims table.

    - LoVT (its Table 1 and text): LoVT's Dice at ``fraction`` beats ConVIRT's; the local losses help
      (``lovt`` vs ``lovt_no_local``); the global loss helps (``lovt`` vs ``lovt_no_global``);
    - Liao et al.: local MI tuned beats global MI tuned on EdemaSeverity (per seed the mean of the three
      ordinal AUCs, both critics pooled) and on Pathology9 (macro AUROC); local MI frozen vs global
      MI frozen (the paper: comparable, tested as local > global); tuning helps local MI (tuned > frozen);
    - LIMITR: the paper model's grounding CNR beats the released configuration's (per-phrase CNRs
      read from the details beside ``limitr_csv``), one claim per grounding task.

    The repetitions are downstream seeds (per-phrase CNRs for grounding).

    :return: ``(rows, skipped)``: claim rows (:func:`~localign.eval.claims.compare_claim`) and one line
        per claim whose methods are not in the results.
    """
    from localign.eval.claims import compare_claim

    rows, skipped = [], []

    def add(claim: str, missing: Sequence[str], make) -> None:
        if missing:
            skipped.append(f"{claim}: {list(missing)} not evaluated")
            return
        try:
            rows.append(make())
        except ValueError as err:  # no finite value (e.g. an AUROC undefined on every seed)
            skipped.append(f"{claim}: {err}")

    pct = f"{100 * fraction:g} %"
    have = set() if lovt is None else set(lovt["method"])
    measure = f"{seg_task} dice @ {pct}, per downstream seed"
    for a, b, claim in (("lovt", "convirt", f"LoVT beats ConVIRT on the localized task (linear segmentation Dice, {pct} labels)"),
                        ("lovt", "lovt_no_local", f"the local losses help LoVT's localized task (Dice {pct}: lovt vs lovt_no_local)"),
                        ("lovt", "lovt_no_global", f"the global loss helps LoVT's localized task (Dice {pct}: lovt vs lovt_no_global)")):
        add(claim, [m for m in (a, b) if m not in have],
            lambda a=a, b=b, claim=claim: compare_claim(CHAPTER, "LoVT", claim, measure, a, seed_values(lovt, a, seg_task, "dice", fraction),
                                                        b, seed_values(lovt, b, seg_task, "dice", fraction)))

    have = set() if liao is None else set(liao["method"])
    local = [m for m in ("local_mi_mine", "local_mi_cpc") if m in have]
    global_ = [m for m in ("global_mi_mine", "global_mi_cpc") if m in have]
    edema = list(_liao_metrics("edema"))
    pooled = "per seed, both critics pooled"
    for claim, (task_a, ms_a), (task_b, ms_b), metric, measure in (
            ("local MI tuned beats global MI tuned on EdemaSeverity", ("edema_tuned", local), ("edema_tuned", global_), edema,
             f"mean of the 3 ordinal AUCs {pooled}"),
            ("local MI tuned beats global MI tuned on Pathology9", ("classify_tuned", local), ("classify_tuned", global_), "macro",
             f"macro AUROC of the 9 findings {pooled}"),
            ("local MI frozen vs global MI frozen on EdemaSeverity (paper: comparable; tested as local > global)",
             ("edema_frozen", local), ("edema_frozen", global_), edema, f"mean of the 3 ordinal AUCs {pooled}"),
            ("tuning the encoder helps local MI on EdemaSeverity (tuned > frozen)", ("edema_tuned", local), ("edema_frozen", local),
             edema, f"mean of the 3 ordinal AUCs {pooled}")):
        missing = [name for name, ms in (("local MI", ms_a), ("global MI" if ms_b is global_ else "local MI", ms_b)) if not ms]
        a_name, b_name = f"{'+'.join(ms_a)} ({task_a.split('_')[1]})", f"{'+'.join(ms_b)} ({task_b.split('_')[1]})"
        add(claim, sorted(set(missing)),
            lambda claim=claim, task_a=task_a, task_b=task_b, ms_a=ms_a, ms_b=ms_b, metric=metric, measure=measure, a_name=a_name,
            b_name=b_name: compare_claim(CHAPTER, "Liao et al.", claim, measure, a_name, _pool(liao, ms_a, task_a, metric), b_name,
                                         _pool(liao, ms_b, task_b, metric)))

    if limitr_csv is not None:
        frame = pd.read_csv(limitr_csv)
        for task in grounding_tasks:
            have = set(frame.loc[frame["task"] == task, "method"])
            claim = f"the paper LIMITR grounds better than the released configuration ({task.split(':')[1]} CNR)"
            add(claim, [m for m in ("limitr", "limitr_code") if m not in have],
                lambda claim=claim, task=task: compare_claim(CHAPTER, "LIMITR", claim, f"{task} CNR per test phrase", "limitr",
                                                             phrase_cnrs(limitr_csv, "limitr", task), "limitr_code",
                                                             phrase_cnrs(limitr_csv, "limitr_code", task)))
    else:
        skipped.append("LIMITR grounding claims: no LIMITR evaluation given")
    return rows, skipped
