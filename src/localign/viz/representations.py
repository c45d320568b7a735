"""Figures of the representations chapter (LoVT supplementary Figs. 1-4 and Wang & Isola's measures).

Every function takes the measures of :mod:`localign.metrics.representations` (or 2-D points from
:mod:`localign.viz.projection`) and returns a :class:`matplotlib.figure.Figure`; nothing is shown or
saved. Colours follow LoVT's figures: image regions blue, report sentences orange, report→image
purple, image→report red; uni-modal representations are dots, cross-modal ones crosses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

#: LoVT Fig. 3's colours and markers, keyed by the kind names the figures expect
KIND_STYLES: dict[str, dict[str, Any]] = {
    "regions": {"color": "tab:blue", "marker": "o", "label": "image regions $z^I$"},
    "sentences": {"color": "tab:orange", "marker": "o", "label": "report sentences $z^R$"},
    "report_to_image": {"color": "tab:purple", "marker": "x", "label": "report→image $z^{R→I}$"},
    "image_to_report": {"color": "tab:red", "marker": "x", "label": "image→report $z^{I→R}$"},
}
#: the bars of LoVT Fig. 1, in its order: column of the std table -> legend label
STD_BARS: dict[str, str] = {
    "total": "std of regions $y^I_{i,k}$",
    "per_sample": "mean per-sample std of $y^I_{i,k}$",
    "centroids": "std of per-sample centroids of $y^I_{i,k}$",
    "global": "std of global $\\bar y^I_i$",
}
DIRECTION_STYLES: dict[str, dict[str, Any]] = {
    "report_to_image": {"color": "tab:blue", "label": "report→image vs regions"},
    "image_to_report": {"color": "tab:orange", "label": "image→report vs sentences"},
}


def _close(fig: Figure) -> Figure:
    plt.close(fig)  # returned for display; not left open in pyplot's global state
    return fig


def plot_std_bars(stds: pd.DataFrame, sqrt_d: bool = False) -> Figure:
    """LoVT Fig. 1: grouped bars of the representation stds, one group per model.

    :param stds: one row per model (index = model name), columns among ``total``, ``per_sample``,
        ``centroids`` (from :func:`~localign.metrics.representations.region_std`) and ``global``
        (:func:`~localign.metrics.representations.global_std`); an optional ``per_sample_sd``
        column draws the per-sample bar's error bar (std over samples).
    :param sqrt_d: the values are √D-scaled (1 = fully spread), for the axis label.
    """
    bars = [c for c in STD_BARS if c in stds.columns]
    if not bars or stds.empty:
        raise ValueError(f"stds: expected rows of models with columns among {list(STD_BARS)}; got columns {list(stds.columns)}")
    models = [str(m) for m in stds.index]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(models) + 1.5), 3.8))
    width = 0.8 / len(bars)
    x = np.arange(len(models))
    for j, col in enumerate(bars):
        err = stds["per_sample_sd"].to_numpy(float) if col == "per_sample" and "per_sample_sd" in stds else None
        ax.bar(x + (j - (len(bars) - 1) / 2) * width, stds[col].to_numpy(float), width, yerr=err, capsize=3,
               label=STD_BARS[col], color=f"C{j}", alpha=0.8)
    ax.set_xticks(x, models, rotation=15 if len(models) > 3 else 0)
    ax.set_ylabel("mean per-channel std" + (" × √D" if sqrt_d else " (L2-normalised)"))
    ax.set_title("spread of image representations (LoVT supp. Fig. 1)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(0, 1.4 * max(float(np.nanmax(stds[bars].to_numpy(float))), 1e-12))  # headroom for the legend
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.tight_layout()
    return _close(fig)


def plot_alignment_histograms(distances: Mapping[str, Mapping[str, Any]], bins: int = 40) -> Figure:
    """LoVT Fig. 2: histograms of the l2 distances (after L2-normalisation) to the attended counterparts.

    One panel per model, one histogram per direction (``report_to_image``: regions vs z^{R→I};
    ``image_to_report``: sentences vs z^{I→R}), each normalised to a density, with its median as a
    dashed line; the x axis spans the possible range [0, 2] and is shared.

    :param distances: model → direction → [n] distances
        (:func:`~localign.metrics.representations.alignment_distances`).
    """
    if not distances:
        raise ValueError("distances: no models")
    fig, axes = plt.subplots(1, len(distances), figsize=(4.2 * len(distances), 3.4), sharex=True, sharey=True, squeeze=False)
    edges = np.linspace(0.0, 2.0, bins + 1)
    for ax, (model, per_dir) in zip(axes[0], distances.items()):
        if not per_dir:
            raise ValueError(f"distances[{model!r}]: no directions")
        for direction, values in per_dir.items():
            style = DIRECTION_STYLES.get(direction, {"color": None, "label": direction})
            v = np.asarray(values, dtype=float)
            if v.size == 0:
                continue
            ax.hist(v, bins=edges, density=True, alpha=0.5, color=style["color"], label=f"{style['label']} (median {np.median(v):.2f})")
            ax.axvline(float(np.median(v)), color=style["color"], ls="--", lw=1)
        ax.set_title(str(model))
        ax.set_xlabel("ℓ2 distance of normalised representations")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center")
    axes[0, 0].set_ylabel("density")
    axes[0, 0].set_ylim(0, 1.45 * axes[0, 0].get_ylim()[1])  # shared y: headroom for the legends
    fig.suptitle("alignment of local representations (LoVT supp. Fig. 2): lower is better aligned", fontsize=10)
    fig.tight_layout()
    return _close(fig)


def plot_tsne_by_kind(points: Any, kinds: Sequence[str], title: str = "t-SNE of local representations", size: float = 8.0) -> Figure:
    """LoVT Fig. 3: one 2-D map of local representations, coloured and marked by kind.

    :param points: [N, 2] (e.g. :func:`localign.viz.projection.tsne`).
    :param kinds: [N] kind of each point; the names of :data:`KIND_STYLES` get LoVT's colours, other
        names the next tab10 colour.
    """
    p = np.asarray(points, dtype=float)
    k = np.asarray(kinds, dtype=object)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points: expected [N, 2], got shape {tuple(p.shape)}")
    if k.shape != (p.shape[0],):
        raise ValueError(f"kinds: expected {p.shape[0]} labels, got {k.shape[0] if k.ndim else 0}")
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    order = [name for name in KIND_STYLES if name in set(k)] + sorted({str(x) for x in k} - set(KIND_STYLES))
    for j, name in enumerate(order):
        style = KIND_STYLES.get(name, {"color": f"C{(j + 5) % 10}", "marker": "o", "label": name})
        sel = k == name
        ax.scatter(p[sel, 0], p[sel, 1], s=size, c=style["color"], marker=style["marker"], label=f"{style['label']} ({int(sel.sum())})",
                   alpha=0.7, linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best", markerscale=2)
    fig.tight_layout()
    return _close(fig)


def plot_tsne_by_overlap(points: Mapping[str, Any], overlap: Mapping[str, Any] | Any, size: float = 8.0) -> Figure:
    """LoVT Fig. 4: region t-SNE maps coloured by each region's overlap with the opacity box, one panel per model.

    :param points: model → [N, 2] points of the same N regions.
    :param overlap: [N] overlap fraction in [0, 1] of every region (e.g.
        :func:`~localign.metrics.localization.region_overlap` of the box mask), shared by all models,
        or model → [N].
    """
    if not points:
        raise ValueError("points: no models")
    fig, axes = plt.subplots(1, len(points), figsize=(3.6 * len(points) + 1.0, 3.8), squeeze=False, layout="constrained")
    scatter = None
    for ax, (model, pts) in zip(axes[0], points.items()):
        p = np.asarray(pts, dtype=float)
        o = np.asarray(overlap[model] if isinstance(overlap, Mapping) else overlap, dtype=float)
        if p.ndim != 2 or p.shape[1] != 2 or o.shape != (p.shape[0],):
            raise ValueError(f"{model}: expected points [N, 2] and overlap [N]; got {tuple(p.shape)} and {tuple(o.shape)}")
        order = np.argsort(o, kind="stable")  # positive regions drawn last, on top
        scatter = ax.scatter(p[order, 0], p[order, 1], c=o[order], cmap="viridis", vmin=0.0, vmax=1.0, s=size)
        ax.set_title(f"{model} ({int((o > 0).sum())} of {o.size} regions overlap)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(scatter, ax=list(axes[0]), label="overlap with opacity box", shrink=0.85)
    return _close(fig)


def plot_alignment_uniformity(measures: pd.DataFrame) -> Figure:
    """Wang & Isola (2020): alignment (x) against uniformity (y) of the global embeddings, one point per model.

    Lower is better on both axes (bottom left: aligned and uniform).

    :param measures: index = model, columns ``alignment`` and ``uniformity``
        (:func:`~localign.metrics.representations.wang_isola_alignment` /
        :func:`~localign.metrics.representations.wang_isola_uniformity`).
    """
    for col in ("alignment", "uniformity"):
        if col not in measures.columns:
            raise ValueError(f"measures: column {col!r} missing; columns are {list(measures.columns)}")
    if measures.empty:
        raise ValueError("measures: no models")
    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    for j, (model, row) in enumerate(measures.iterrows()):
        ax.scatter(row["alignment"], row["uniformity"], color=f"C{j % 10}", s=40, label=str(model))
        ax.annotate(str(model), (row["alignment"], row["uniformity"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("alignment $\\ell_{align}$ (α = 2), lower = better")
    ax.set_ylabel("uniformity $\\ell_{uniform}$ (t = 2), lower = better")
    ax.set_title("alignment and uniformity (Wang & Isola 2020)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _close(fig)
