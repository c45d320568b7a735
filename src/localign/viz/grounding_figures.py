"""Figures of the grounding chapter: LIMITR supplementary Fig. 2 (one row per MS-CXR category).

Each row shows an image with its phrase and ground-truth boxes, then the similarity map of every
method on the original pixels (``localign.eval.grounding.grounding_cnr`` / ``map_to_original``;
NaN pixels, never seen by the network, are left transparent) with the method's CNR in the panel
title and the boxes drawn on top. Brighter = more similar to the phrase; each map is coloured over
its own min–max range, which is how CNR sees it too (CNR is invariant to affine rescaling).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

BOX_COLOR = "lime"


@dataclass(frozen=True)
class GroundingExample:
    """One row of the grounding panel.

    :param category: MS-CXR category (e.g. "Pneumonia").
    :param phrase: the phrase.
    :param image: [H, W] original image.
    :param boxes: [B, 4] boxes (x, y, w, h) in original pixels (MS-CXR convention).
    :param maps: method → [H, W] similarity map on the original pixels (NaN = not seen).
    :param cnrs: method → CNR; a method without one gets it computed from its map and the box union
        (``localign.eval.grounding.cnr`` of ``boxes_to_mask``).
    :param signs: method → sign of μ_inside − μ_outside (+1, −1, 0); a −1 is marked "darker inside"
        in the panel title, since CNR's absolute value does not show it.
    """

    category: str
    phrase: str
    image: Any
    boxes: Any
    maps: Mapping[str, Any]
    cnrs: Mapping[str, float] = field(default_factory=dict)
    signs: Mapping[str, int] = field(default_factory=dict)


def _close(fig: Figure) -> Figure:
    plt.close(fig)  # returned for display; not left open in pyplot's global state
    return fig


def _boxes(ax, boxes: np.ndarray) -> None:
    for x, y, w, h in boxes:
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec=BOX_COLOR, lw=1.5))


def example_cnrs(example: GroundingExample) -> dict[str, float]:
    """The CNR of every method of an example: the given one, or computed from its map and boxes."""
    from localign.eval.grounding import boxes_to_mask, cnr

    img = np.asarray(example.image)
    out = {}
    for method, m in example.maps.items():
        if method in example.cnrs:
            out[method] = float(example.cnrs[method])
        else:
            out[method] = cnr(np.asarray(m, dtype=float), boxes_to_mask(example.boxes, img.shape[0], img.shape[1]))
    return out


def plot_grounding_examples(examples: Sequence[GroundingExample], methods: Sequence[str] | None = None, wrap: int = 34,
                            alpha: float = 0.6) -> Figure:
    """LIMITR supp. Fig. 2: per category, the image with phrase and boxes and each method's similarity map with its CNR.

    :param examples: one per row (typically one per MS-CXR category).
    :param methods: the column order (default: the first example's maps' order); every example
        needs a map for each.
    :return: a figure of len(examples) × (1 + len(methods)) panels.
    """
    if not examples:
        raise ValueError("examples: none")
    methods = list(methods) if methods is not None else list(examples[0].maps)
    if not methods:
        raise ValueError("methods: none")
    ncols = 1 + len(methods)
    fig, axes = plt.subplots(len(examples), ncols, figsize=(2.8 * ncols, 3.3 * len(examples)), squeeze=False,
                             layout="constrained")
    for row, ex in zip(axes, examples):
        img = np.asarray(ex.image, dtype=float)
        if img.ndim != 2:
            raise ValueError(f"{ex.category}: image must be [H, W], got shape {tuple(img.shape)}")
        boxes = np.asarray(ex.boxes, dtype=float).reshape(-1, 4)
        missing = [m for m in methods if m not in ex.maps]
        if missing:
            raise ValueError(f"{ex.category}: no map for {missing}")
        for m in methods:
            if np.asarray(ex.maps[m]).shape != img.shape:
                raise ValueError(f"{ex.category}/{m}: map shape {np.asarray(ex.maps[m]).shape} differs from image {img.shape}")
        cnrs = example_cnrs(ex)
        row[0].imshow(img, cmap="gray")
        _boxes(row[0], boxes)
        row[0].set_title(f"{ex.category}\n" + "\n".join(textwrap.wrap(f"“{ex.phrase}”", wrap)[:3]), fontsize=8)
        for ax, method in zip(row[1:], methods):
            sim = np.asarray(ex.maps[method], dtype=float)
            ax.imshow(img, cmap="gray")
            ax.imshow(np.ma.masked_invalid(sim), cmap="jet", alpha=alpha)
            _boxes(ax, boxes)
            inverted = ", darker inside" if ex.signs.get(method, 1) < 0 else ""
            ax.set_title(f"{method}\nCNR {cnrs[method]:.2f}{inverted}", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.suptitle("phrase grounding: similarity maps (bright = similar) with the ground-truth boxes", fontsize=10)
    return _close(fig)


# --------------------------------------------------------------------------------------------------
# per-category summaries (chapter 08)
# --------------------------------------------------------------------------------------------------
SOURCE_TITLES = {"ms_cxr": "MS-CXR-format file (union of the phrase's boxes)",
                 "synth_masks": "SynthCXR exact finding masks"}


def _method_colors(methods: Sequence[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def plot_category_bars(summary: Any, value: str = "mean", methods: Sequence[str] | None = None,
                       sources: Sequence[str] | None = None, ylabel: str = "CNR", chance: str | None = None,
                       published: Mapping[str, Sequence[float]] | None = None, title: str = "") -> Figure:
    """Per-category bars of one measure per method, with 95 % CIs, one panel per source.

    :param summary: tidy frame with columns source, run, category, ``value``, ci_low, ci_high (the
        output of ``localign.eval.analyses.grounding.cnr_summary`` or ``pointing_summary``); the
        category ``overall`` is drawn last, after a gap.
    :param methods: the runs, in bar order (default: their order in ``summary``).
    :param sources: the panels (default: the sources in ``summary``).
    :param chance: a column (e.g. ``chance``) drawn as a black tick per (category, method) bar.
    :param published: label → values drawn as black dots on the ``overall`` group of the
        ``ms_cxr`` panel (e.g. a paper's single-example MS-CXR CNRs).
    :return: a figure with len(sources) panels.
    """
    import pandas as pd

    s = pd.DataFrame(summary)
    for col in ("source", "run", "category", value, "ci_low", "ci_high") + ((chance,) if chance else ()):
        if col not in s.columns:
            raise ValueError(f"summary: column {col!r} missing; columns are {list(s.columns)}")
    if s.empty:
        raise ValueError("summary: empty")
    methods = list(methods) if methods is not None else list(dict.fromkeys(s["run"]))
    sources = list(sources) if sources is not None else list(dict.fromkeys(s["source"]))
    colors = _method_colors(methods)
    fig, axes = plt.subplots(len(sources), 1, figsize=(13, 3.6 * len(sources)), squeeze=False, layout="constrained")
    for ax, source in zip(axes[:, 0], sources):
        g = s[s["source"] == source]
        if g.empty:
            raise ValueError(f"sources: no rows for {source!r}")
        cats = sorted(c for c in g["category"].unique() if c != "overall") + (["overall"] if (g["category"] == "overall").any() else [])
        x = np.arange(len(cats), dtype=float)
        if cats and cats[-1] == "overall":
            x[-1] += 0.5
        width = 0.84 / len(methods)
        for j, m in enumerate(methods):
            r = g[g["run"] == m].set_index("category").reindex(cats)
            pos = x + (j - (len(methods) - 1) / 2) * width
            v = r[value].to_numpy(float)
            err = np.vstack([v - r["ci_low"].to_numpy(float), r["ci_high"].to_numpy(float) - v])
            ax.bar(pos, v, width, color=colors[m], label=m, yerr=np.nan_to_num(np.clip(err, 0, None)), capsize=1.5,
                   error_kw={"lw": 0.8})
            if chance:
                ax.hlines(r[chance].to_numpy(float), pos - width / 2, pos + width / 2, color="black", lw=1.2,
                          label="chance" if j == 0 else None)
        if published and source == "ms_cxr" and cats and cats[-1] == "overall":
            for k, (label, vals) in enumerate(published.items()):
                vals = np.asarray(list(vals), dtype=float)
                ax.scatter(np.full(vals.size, x[-1] + 0.55 + 0.15 * k), vals, s=10, color="black", marker="o", zorder=3,
                           label=label)
            ax.set_xlim(-0.6, x[-1] + 1.0)
        counts = g.groupby("category")["count"].max() if "count" in g.columns else None
        labels = [f"{c}\n(n={int(counts[c])})" if counts is not None else c for c in cats]
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(SOURCE_TITLES.get(source, source), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.axhline(0, color="grey", lw=0.6)
    axes[0, 0].legend(fontsize=8, ncol=min(len(methods) + 2, 8), loc="upper left", bbox_to_anchor=(0, 1.0), frameon=True)
    if title:
        fig.suptitle(title, fontsize=10)
    return _close(fig)


def plot_cnr_vs_pointing(cnr_summary: Any, pointing_summary: Any, methods: Sequence[str] | None = None,
                         category: str = "overall") -> Figure:
    """Mean CNR (x) against pointing-game accuracy (y) of each method, one panel per source, 95 % CIs
    on both axes and the chance rate as a dashed line.

    :param cnr_summary: columns source, run, category, mean, ci_low, ci_high.
    :param pointing_summary: columns source, run, category, accuracy, ci_low, ci_high, chance.
    """
    import pandas as pd

    c = pd.DataFrame(cnr_summary)
    p = pd.DataFrame(pointing_summary)
    c, p = c[c["category"] == category], p[p["category"] == category]
    if c.empty or p.empty:
        raise ValueError(f"category: no rows for {category!r}")
    merged = c.merge(p, on=["source", "run"], suffixes=("_cnr", "_pt"))
    methods = list(methods) if methods is not None else list(dict.fromkeys(merged["run"]))
    colors = _method_colors(methods)
    sources = list(dict.fromkeys(merged["source"]))
    fig, axes = plt.subplots(1, len(sources), figsize=(5.0 * len(sources), 4.0), squeeze=False, layout="constrained")
    for ax, source in zip(axes[0], sources):
        g = merged[merged["source"] == source].set_index("run")
        for m in methods:
            if m not in g.index:
                continue
            r = g.loc[m]
            ax.errorbar(r["mean"], r["accuracy"], xerr=[[r["mean"] - r["ci_low_cnr"]], [r["ci_high_cnr"] - r["mean"]]],
                        yerr=[[r["accuracy"] - r["ci_low_pt"]], [r["ci_high_pt"] - r["accuracy"]]], fmt="o",
                        color=colors[m], capsize=2, label=m)
        ax.axhline(float(g["chance"].mean()), color="black", ls="--", lw=1, label="chance")
        ax.set_xlabel(f"mean CNR ({category})")
        ax.set_ylabel("pointing-game accuracy")
        ax.set_title(SOURCE_TITLES.get(source, source), fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1)
    axes[0, -1].legend(fontsize=8, loc="best")
    return _close(fig)
