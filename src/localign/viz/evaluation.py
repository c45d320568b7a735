"""Figures of the downstream evaluation, drawn from the tidy results of ``evaluate_runs``.

Every function takes the tidy table (columns ``run, method, task, fraction, seed, metric, value``),
aggregates the seeds to mean ± 95 % CI with :func:`~localign.eval.stats.summarize_tidy` and returns
a :class:`matplotlib.figure.Figure`; error bars are that CI (absent for a single seed).

Each protocol of :mod:`localign.eval.protocols.registry` declares its figures
(:class:`~localign.eval.protocols.registry.FigureSpec`: name, caption, draw function);
:func:`protocol_figures` draws those of every protocol present in the results, which is what
notebook 04 shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from localign.eval.protocols.registry import FigureSpec, present_protocols
from localign.eval.stats import summarize_tidy


def _close(fig: Figure) -> Figure:
    plt.close(fig)  # returned for display; not left open in pyplot's global state
    return fig


def _subjects(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """(run, method) pairs, pretrained runs first, baselines (run "-") last, each in first-seen order."""
    pairs = list(dict.fromkeys(zip(summary["run"], summary["method"])))
    return [p for p in pairs if not p[0].startswith("-")] + [p for p in pairs if p[0].startswith("-")]


def _label(run: str, method: str) -> str:
    return method if run.startswith("-") or run == method else f"{method} ({run})"


def _select(results: pd.DataFrame, tasks: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    rows = results[results["task"].isin(tasks) & results["metric"].isin(metrics)]
    if rows.empty:
        have = sorted(set(zip(results["task"], results["metric"])))[:12]
        raise ValueError(f"no results for tasks {list(tasks)} and metrics {list(metrics)}; the table has e.g. {have}")
    return summarize_tidy(rows)


def plot_label_fraction_curves(results: pd.DataFrame, task: str = "probe", metric: str = "macro",
                               ylabel: str = "test macro AUROC (%)", scale: float = 100.0) -> Figure:
    """Metric against the fraction of training labels (log axis), one line per run/baseline."""
    s = _select(results, [task], [metric])
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for run, method in _subjects(s):
        g = s[(s["run"] == run) & (s["method"] == method)].sort_values("fraction")
        ci = np.nan_to_num(g["ci95"].to_numpy(float)) * scale
        style = "--" if run.startswith("-") else "-"
        ax.errorbar(g["fraction"].to_numpy(float) * 100, g["mean"].to_numpy(float) * scale, yerr=ci, marker="o", ls=style, capsize=3, label=_label(run, method))
    fractions = sorted(set(s["fraction"]))
    ax.set_xscale("log")
    ax.set_xticks([f * 100 for f in fractions], [f"{f * 100:g} %" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("training labels")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{task}: {metric} (mean ± 95 % CI over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _close(fig)


def plot_metric_bars(results: pd.DataFrame, tasks: Sequence[str], metric: str, fraction: float = 1.0,
                     ylabel: str | None = None, scale: float = 100.0, reference: float | None = None) -> Figure:
    """Grouped bars: one group per task, one bar per run/baseline (e.g. Dice of every segmentation task).

    ``reference`` draws a horizontal line (e.g. chance level, 50 % AUROC).
    """
    s = _select(results, tasks, [metric])
    s = s[np.isclose(s["fraction"], fraction)]
    if s.empty:
        raise ValueError(f"no {metric} results at fraction {fraction} for tasks {list(tasks)}")
    present = [t for t in tasks if t in set(s["task"])]
    subjects = _subjects(s)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.5 * len(present) * len(subjects)), 3.8))
    width = 0.8 / len(subjects)
    x = np.arange(len(present))
    for k, (run, method) in enumerate(subjects):
        g = s[(s["run"] == run) & (s["method"] == method)].set_index("task").reindex(present)
        ax.bar(x + (k - (len(subjects) - 1) / 2) * width, g["mean"] * scale, width, yerr=np.nan_to_num(g["ci95"]) * scale,
               capsize=2, label=_label(run, method), hatch="//" if run.startswith("-") else None)
    if reference is not None:
        ax.axhline(reference, color="grey", ls=":", lw=1)
    ax.set_xticks(x, present, rotation=15 if len(present) > 3 else 0)
    ax.set_ylabel(ylabel or metric)
    ax.set_title(f"{metric} at {fraction * 100:g} % labels (mean ± 95 % CI over seeds)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _close(fig)


def plot_retrieval(results: pd.DataFrame, ks: Sequence[int] = (1, 5, 10)) -> Figure:
    """R@K of image→report and report→image per run, with the chance level of the pool."""
    metrics = [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in ks]
    s = _select(results, ["retrieval"], metrics + ["pool_size"])
    subjects = _subjects(s)
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.6), sharey=True)
    width = 0.8 / len(subjects)
    x = np.arange(len(ks))
    pool = s[s["metric"] == "pool_size"]["mean"]
    for ax, direction, title in zip(axes, ("i2t", "t2i"), ("image → report", "report → image")):
        for j, (run, method) in enumerate(subjects):
            g = s[(s["run"] == run) & (s["method"] == method)].set_index("metric")["mean"]
            ax.bar(x + (j - (len(subjects) - 1) / 2) * width, [g.get(f"{direction}_R@{k}", np.nan) for k in ks], width,
                   label=_label(run, method))
        if len(pool):  # chance R@K = K / pool (in %), per pool size (one line when all runs share it)
            for p in sorted(set(pool.astype(int))):
                ax.plot(x, [min(100.0, 100.0 * k / p) for k in ks], "k:", marker="_", ms=14, label=f"chance (pool {p})")
        ax.set_xticks(x, [f"R@{k}" for k in ks])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("recall (%)")
    axes[1].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _close(fig)


def plot_grounding(results: pd.DataFrame, source: str = "ms_cxr") -> Figure:
    """Mean CNR per category (and overall) per run, error bars the 95 % CI over phrases."""
    task = f"grounding:{source}"
    rows = results[results["task"] == task]
    if rows.empty:
        raise ValueError(f"no results for task {task!r}")
    s = summarize_tidy(rows)
    categories = sorted({m for m in s["metric"] if "/" not in m and m not in ("overall", "n_phrases", "n_skipped")})
    categories.append("overall")
    subjects = _subjects(s)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(categories) * max(1, len(subjects)) / 2), 3.8))
    width = 0.8 / len(subjects)
    x = np.arange(len(categories))
    for j, (run, method) in enumerate(subjects):
        g = s[(s["run"] == run) & (s["method"] == method)].set_index("metric")["mean"]
        means = [g.get(c, np.nan) for c in categories]
        ci = [g.get(f"{c}/ci95", 0.0) for c in categories]
        ax.bar(x + (j - (len(subjects) - 1) / 2) * width, means, width, yerr=np.nan_to_num(ci), capsize=2, label=_label(run, method))
    ax.set_xticks(x, categories, rotation=30, ha="right")
    ax.set_ylabel("CNR")
    ax.set_title(f"phrase grounding ({source}): mean CNR ± 95 % CI over phrases")
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _close(fig)


def plot_zero_shot(results: pd.DataFrame, task: str = "zero_shot") -> Figure:
    """Zero-shot accuracy and macro AUROC (%) per run, error bars the 95 % CI over seeds, chance dotted."""
    s = _select(results, [task], ["accuracy", "macro", "chance_accuracy"])
    subjects = _subjects(s)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.9 * len(subjects)), 3.8))
    metrics = [("accuracy", "accuracy"), ("macro", "macro AUROC")]
    width = 0.8 / len(subjects)
    x = np.arange(len(metrics))
    for j, (run, method) in enumerate(subjects):
        g = s[(s["run"] == run) & (s["method"] == method)].set_index("metric")
        means = [g["mean"].get(m, np.nan) * 100 for m, _ in metrics]
        ci = [np.nan_to_num(g["ci95"].get(m, np.nan)) * 100 for m, _ in metrics]
        ax.bar(x + (j - (len(subjects) - 1) / 2) * width, means, width, yerr=ci, capsize=2, label=_label(run, method))
    chance = s[s["metric"] == "chance_accuracy"]["mean"]
    if len(chance):
        ax.plot([x[0] - 0.45, x[0] + 0.45], [100 * float(chance.iloc[0])] * 2, "k:", lw=1.2, label="chance")
    ax.plot([x[1] - 0.45, x[1] + 0.45], [50.0, 50.0], "k:", lw=1.2)
    ax.set_xticks(x, [label for _, label in metrics])
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.set_title("zero-shot classification from prompts (mean ± 95 % CI over seeds)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _close(fig)


# --------------------------------------------------------------------------------------------------
# the figures each protocol declares (FigureSpec.draw): None when the results hold nothing to draw
# --------------------------------------------------------------------------------------------------
def _tasks(results: pd.DataFrame) -> set[str]:
    return set(results["task"]) if len(results) else set()


def probe_figure(results: pd.DataFrame) -> Figure | None:
    return plot_label_fraction_curves(results, task="probe", metric="macro") if "probe" in _tasks(results) else None


def classification_figure(results: pd.DataFrame) -> Figure | None:
    tasks = [t for t in ("classify_frozen", "classify_tuned") if t in _tasks(results)]
    return plot_metric_bars(results, tasks, "macro", ylabel="test macro AUROC (%)", reference=50.0) if tasks else None


def segmentation_figure(results: pd.DataFrame) -> Figure | None:
    tasks = sorted(t for t in _tasks(results) if t.startswith("seg_"))
    return plot_metric_bars(results, tasks, "dice", ylabel="dataset-level Dice (%)") if tasks else None


def retrieval_figure(results: pd.DataFrame) -> Figure | None:
    return plot_retrieval(results) if "retrieval" in _tasks(results) else None


def grounding_ms_cxr_figure(results: pd.DataFrame) -> Figure | None:
    return plot_grounding(results, "ms_cxr") if "grounding:ms_cxr" in _tasks(results) else None


def grounding_synth_masks_figure(results: pd.DataFrame) -> Figure | None:
    return plot_grounding(results, "synth_masks") if "grounding:synth_masks" in _tasks(results) else None


def zero_shot_figure(results: pd.DataFrame) -> Figure | None:
    return plot_zero_shot(results) if "zero_shot" in _tasks(results) else None


def protocol_figures(results: pd.DataFrame) -> list[tuple[FigureSpec, Figure]]:
    """Every figure the registered protocols present in the results declare, in registry order
    (a figure shared by several protocols once), as (spec, figure) pairs."""
    out: list[tuple[FigureSpec, Figure]] = []
    seen: set[str] = set()
    for protocol in present_protocols(results):
        for spec in protocol.figures:
            if spec.name in seen:
                continue
            seen.add(spec.name)
            fig = spec(results)
            if fig is not None:
                out.append((spec, fig))
    return out
