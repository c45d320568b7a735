"""Figures of the ablation chapter: LoVT's ablation table, Liao et al.'s global/local MI grid, LIMITR's two configurations.

Each function takes a frame of :mod:`localign.eval.analyses.ablations` (``measure_summary``,
``lovt_paper``, ``liao_summary``, ``phrase_cnrs``) and returns a :class:`matplotlib.figure.Figure`;
nothing is shown or saved. Our numbers (SynthCXR) and the papers' (MIMIC-CXR / RSNA) are always in
separate panels or marked apart: they share a protocol, not a scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

_OURS = "tab:blue"
_PAPER = "tab:grey"


def _close(fig: Figure) -> Figure:
    plt.close(fig)  # returned for display; not left open in pyplot's global state
    return fig


def _need(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name}: expected a DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: columns {missing} missing (has {list(frame.columns)})")
    if frame.empty:
        raise ValueError(f"{name}: no rows")


def plot_ablation_panels(summary: pd.DataFrame, paper: pd.DataFrame | None = None, paper_title: str = "paper",
                         reference: str | None = "lovt", measures: Sequence[str] | None = None,
                         data_label: str = "SynthCXR") -> Figure:
    """LoVT's ablation table as horizontal bars: one panel per measure of ours (mean ± 95 % CI over seeds), and the
    paper's column in its own grey panel; presets top to bottom in the order of ``summary``.

    :param summary: :func:`~localign.eval.analyses.ablations.measure_summary` (``preset``, ``row``,
        ``measure``, ``mean``, ``ci95``).
    :param paper: ``preset``, ``value``, ``ci95`` (e.g. ``lovt_paper()``); presets without a row show no bar.
    :param reference: the preset whose value is drawn as a dotted line in every panel (None: none).
    :param measures: the measures to draw, in this order (default: all, in first-seen order).
    """
    _need(summary, ("preset", "row", "measure", "mean", "ci95"), "summary")
    presets = list(dict.fromkeys(summary["preset"]))
    labels = dict(zip(summary["preset"], summary["row"]))
    measures = list(dict.fromkeys(summary["measure"])) if measures is None else list(measures)
    unknown = [m for m in measures if m not in set(summary["measure"])]
    if unknown:
        raise ValueError(f"measures: {unknown} not in the summary (has {sorted(set(summary['measure']))})")
    n_panels = len(measures) + (paper is not None)
    fig, axes = plt.subplots(1, n_panels, figsize=(2.0 + 2.6 * n_panels, 0.9 + 0.32 * len(presets)), sharey=True, squeeze=False)
    axes = axes[0]
    y = np.arange(len(presets))

    def draw(ax, means, cis, color, title, ref_value):
        ax.barh(y, means, xerr=np.nan_to_num(cis), color=color, alpha=0.85, capsize=2, height=0.7)
        finite = np.asarray(means, float)[np.isfinite(means)]
        if finite.size:
            lo, hi = float(np.min(finite - np.nan_to_num(np.asarray(cis, float)[np.isfinite(means)]))), float(np.max(finite + np.nan_to_num(np.asarray(cis, float)[np.isfinite(means)])))
            pad = max(0.5, 0.15 * (hi - lo))
            ax.set_xlim(max(0.0, lo - pad), hi + pad)
        if ref_value is not None and np.isfinite(ref_value):
            ax.axvline(ref_value, color="k", ls=":", lw=1)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)

    for ax, m in zip(axes, measures):
        g = summary[summary["measure"] == m].set_index("preset").reindex(presets)
        ref = float(g.at[reference, "mean"]) if reference in g.index else None
        draw(ax, g["mean"].to_numpy(float), g["ci95"].to_numpy(float), _OURS, f"ours ({data_label}):\n{m}", ref)
    if paper is not None:
        _need(paper, ("preset", "value"), "paper")
        p = paper.drop_duplicates("preset").set_index("preset").reindex(presets)
        ci = p["ci95"].to_numpy(float) if "ci95" in p.columns else np.full(len(presets), np.nan)
        ref = float(p.at[reference, "value"]) if reference in p.index and pd.notna(p.at[reference, "value"]) else None
        draw(axes[-1], p["value"].to_numpy(float), ci, _PAPER, paper_title, ref)
        for yi, v in zip(y, p["value"].to_numpy(float)):
            if not np.isfinite(v):
                axes[-1].text(axes[-1].get_xlim()[0], yi, " no row", va="center", fontsize=7, color="0.4")
    axes[0].set_yticks(y, [f"{labels[p]}  [{p}]" for p in presets], fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return _close(fig)


def plot_mi_grid(summary: pd.DataFrame, titles: dict[str, str] | None = None, data_label: str = "SynthCXR") -> Figure:
    """Liao et al.'s grid: per table (EdemaSeverity, Pathology9) the summary AUC of every preset re-trained with the
    encoder frozen and tuned, ours as bars (± 95 % CI over seeds), the paper's as diamonds beside them.

    :param summary: :func:`~localign.eval.analyses.ablations.liao_summary` (``kind``, ``preset``,
        ``encoder``, ``source``, ``mean``, ``ci95``).
    """
    _need(summary, ("kind", "preset", "encoder", "source", "mean", "ci95"), "summary")
    kinds = list(dict.fromkeys(summary["kind"]))
    titles = {"edema": "EdemaSeverity: mean of the 3 ordinal AUCs (%)", "pathology9": "Pathology9: macro AUROC (%)", **(titles or {})}
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 3.9), squeeze=False)
    encoders = [e for e in ("frozen", "tuned") if e in set(summary["encoder"])]
    width = 0.8 / max(1, len(encoders))
    colors = {"frozen": "tab:cyan", "tuned": "tab:blue"}
    for ax, kind in zip(axes[0], kinds):
        s = summary[summary["kind"] == kind]
        presets = list(dict.fromkeys(s["preset"]))
        x = np.arange(len(presets))
        for j, enc in enumerate(encoders):
            off = (j - (len(encoders) - 1) / 2) * width
            ours = s[(s["source"] == "ours") & (s["encoder"] == enc)].set_index("preset").reindex(presets)
            ax.bar(x + off, ours["mean"], width * 0.9, yerr=np.nan_to_num(ours["ci95"].to_numpy(float)), capsize=2,
                   color=colors.get(enc, _OURS), label=f"ours ({data_label}), encoder {enc}")
            paper = s[(s["source"] == "paper") & (s["encoder"] == enc)].set_index("preset").reindex(presets)
            ax.plot(x + off, paper["mean"], "D", color="k", mfc="white" if enc == "frozen" else "k", ms=5,
                    label=f"paper (MIMIC-CXR), encoder {enc}")
        ax.axhline(50, color="grey", ls=":", lw=1)
        ax.set_xticks(x, [p.replace("_", " ") for p in presets], rotation=20, ha="right", fontsize=8)
        ax.set_title(titles.get(kind, kind), fontsize=9)
        values = s["mean"].to_numpy(float)
        values = values[np.isfinite(values)]
        if values.size:
            ax.set_ylim(max(0.0, min(45.0, values.min() - 5)), min(100.0, values.max() + 8))
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("AUC (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _close(fig)


def plot_phrase_cnr_pairs(a: pd.Series, b: pd.Series, a_label: str = "limitr", b_label: str = "limitr_code",
                          title: str = "phrase grounding CNR per test phrase") -> Figure:
    """One dot per phrase scored by both models: CNR of ``a`` (y) against ``b`` (x), the diagonal dotted.

    Dots above the diagonal are phrases ``a`` grounds better. :param a, b: CNRs indexed by phrase id.
    """
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, pd.Series):
            raise ValueError(f"{name}: expected a Series of CNRs indexed by phrase id, got {type(s).__name__}")
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    if both.empty:
        raise ValueError("a, b: no phrase scored by both")
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.scatter(both["b"], both["a"], s=12, alpha=0.6, color=_OURS)
    lo, hi = float(both.min().min()), float(both.max().max())
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k:", lw=1)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    above = float((both["a"] > both["b"]).mean())
    ax.set_xlabel(f"{b_label} CNR")
    ax.set_ylabel(f"{a_label} CNR")
    ax.set_title(f"{title}\n{100 * above:.0f} % of {len(both)} phrases above the diagonal", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _close(fig)
