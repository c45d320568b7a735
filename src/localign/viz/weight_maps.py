"""Figures of the weight-maps chapter: LoVT Fig. 5, LIMITR's shaded reports, local MI's selected regions, word attention.

Every function takes arrays (images, grid maps, masks, weights from
:mod:`localign.metrics.localization`) and returns a :class:`matplotlib.figure.Figure`; nothing is
shown or saved. Ground-truth masks are outlined in lime, a selected region is a rectangle (white
when it lies inside the sentence's mask, red when not, dashed gold for a sentence without a mask).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from localign.metrics.localization import cell_box, pointing_game, region_inside_mask, resample_map

MASK_COLOR = "lime"
HIT_COLOR = "white"
MISS_COLOR = "red"
NO_MASK_COLOR = "gold"  # a sentence without a finding: its region has nothing to hit (dashed)


def _close(fig: Figure) -> Figure:
    plt.close(fig)  # returned for display; not left open in pyplot's global state
    return fig


def _image(image: Any) -> np.ndarray:
    a = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=float)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"image: expected [H, W], got shape {tuple(a.shape)}")
    return a


def _on_image(grid_map: Any, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    m = np.asarray(grid_map, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"map: expected [h, w] or [H, W], got shape {tuple(m.shape)}")
    return m if m.shape == tuple(size) else resample_map(m, size, mode)  # type: ignore[arg-type]


def _outline(ax, mask: np.ndarray) -> None:
    if mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=[MASK_COLOR], linewidths=1.5)


def plot_mean_weight_map(mean_image: Any, weight_map: Any, title: str = "mean region weights over the test set", alpha: float = 0.55) -> Figure:
    """LoVT Fig. 5: the mean region-weight map drawn over the mean test image.

    :param mean_image: [H, W] (:func:`~localign.metrics.localization.mean_image`).
    :param weight_map: [h, w] grid map (:func:`~localign.metrics.localization.mean_region_weight_map`),
        resampled bilinearly to the image, or already [H, W].
    """
    img = _image(mean_image)
    grid_map = np.asarray(weight_map, dtype=float)
    full = _on_image(grid_map, img.shape)
    fig, ax = plt.subplots(figsize=(5.0, 4.4))
    ax.imshow(img, cmap="gray")
    im = ax.imshow(full, cmap="inferno", alpha=alpha)
    ax.axis("off")
    k = grid_map.size
    subtitle = f"\n{grid_map.shape[0]}×{grid_map.shape[1]} regions; uniform weighting = 1/{k} = {1 / k:.3g}" if grid_map.shape != img.shape else ""
    ax.set_title(title + subtitle, fontsize=9)
    fig.colorbar(im, ax=ax, label="mean region weight", shrink=0.85)
    fig.tight_layout()
    return _close(fig)


def plot_word_weights(words: Sequence[str], weights: Any, title: str | None = None, width: float = 7.0, fontsize: float = 11.0,
                      cmap: str = "Oranges") -> Figure:
    """LIMITR supp. Figs. 1 and 3: a report with every word shaded by its weight (darker = higher).

    :param words: the report's W words in order.
    :param weights: [W] in [0, 1], normalised per report
        (:func:`~localign.metrics.localization.word_weights`, ``norm="max"``).
    :param title: e.g. the chosen region or the method.
    :param width: figure width in inches; lines wrap at it.
    """
    w = np.asarray(weights, dtype=float)
    if w.shape != (len(words),):
        raise ValueError(f"weights: expected [{len(words)}] (one per word), got shape {tuple(w.shape)}")
    if len(words) == 0:
        raise ValueError("words: empty report")
    if np.any(~np.isfinite(w)) or np.any(w < 0) or np.any(w > 1 + 1e-9):
        raise ValueError("weights: expected values in [0, 1] (normalise per report first)")
    colormap = plt.get_cmap(cmap)
    fig = plt.figure(figsize=(width, 2.0))
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()
    margin, space, line = 0.15, fontsize / 72 * 0.35, fontsize / 72 * 1.9  # inches
    texts, x, row, rows = [], margin, 0, []
    for word in words:  # measure, then wrap greedily
        t = fig.text(0, 0, word, fontsize=fontsize, transform=fig.dpi_scale_trans)
        wd = t.get_window_extent(renderer).width / fig.dpi
        if x + wd > width - margin and x > margin:
            x, row = margin, row + 1
        texts.append(t)
        rows.append((x, row))
        x += wd + space
    top = 0.55 if title else 0.2
    bottom = 0.85  # room for the colour bar, its title and ticks
    height = top + (row + 1) * line + bottom
    fig.set_size_inches(width, height)
    for t, value, (tx, r) in zip(texts, w, rows):
        t.set_position((tx, height - top - (r + 0.75) * line))
        t.set_bbox({"boxstyle": "round,pad=0.2", "facecolor": colormap(float(value)), "edgecolor": "none"})
        t.set_color("white" if value > 0.65 else "black")
    if title:
        fig.text(margin, height - 0.3, title, fontsize=fontsize, fontweight="bold", transform=fig.dpi_scale_trans, va="center")
    cax = fig.add_axes([0.3, 0.32 / height, 0.4, 0.12 / height])
    fig.colorbar(ScalarMappable(Normalize(0, 1), colormap), cax=cax, orientation="horizontal")
    cax.set_title("word weight (darker = higher; report maximum = 1)", fontsize=8)
    cax.tick_params(labelsize=7)
    return _close(fig)


def plot_selected_regions(
    image: Any,
    sentences: Sequence[str],
    selected: Sequence[int] | Any,
    masks: Any,
    grid: tuple[int, int],
    threshold: float = 0.5,
    ncols: int = 3,
    wrap: int = 42,
) -> Figure:
    """Liao Fig. 2 on SynthCXR: for each sentence, the region local MI selects, drawn on the image with the GT mask.

    One panel per sentence: the image, the sentence's ground-truth mask outlined, the selected
    region's cell as a rectangle (white = inside the mask by
    :func:`~localign.metrics.localization.region_inside_mask`, red = outside; a sentence with an
    empty mask has no image correlate: dashed gold, marked "no mask"), the sentence as the title.

    :param image: [H, W].
    :param sentences: the M sentences.
    :param selected: [M] region index per sentence (:func:`~localign.metrics.localization.select_regions_max`).
    :param masks: [M, H, W] bool ground-truth mask per sentence.
    :param grid: (h, w) region grid.
    """
    img = _image(image)
    sel = np.asarray(selected).reshape(-1)
    m = np.asarray(masks).astype(bool)
    n = len(sentences)
    if n == 0:
        raise ValueError("sentences: none")
    if sel.shape != (n,) or m.shape != (n, *img.shape):
        raise ValueError(f"selected/masks: expected [{n}] and [{n}, {img.shape[0]}, {img.shape[1]}], got {tuple(sel.shape)} and {tuple(m.shape)}")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.7 * nrows), squeeze=False, layout="constrained")
    hits = 0
    for j, ax in enumerate(axes.flat):
        ax.axis("off")
        if j >= n:
            continue
        ax.imshow(img, cmap="gray")
        _outline(ax, m[j])
        x, y, bw, bh = cell_box(int(sel[j]), grid, img.shape)
        if m[j].any():
            hit = bool(region_inside_mask(m[j], grid, threshold).reshape(-1)[int(sel[j])])
            hits += hit
            verdict = "inside mask" if hit else "outside mask"
        else:
            hit, verdict = None, "no mask"
        colour = NO_MASK_COLOR if hit is None else HIT_COLOR if hit else MISS_COLOR
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), bw, bh, fill=False, lw=2, ec=colour, ls="--" if hit is None else "-"))
        ax.set_title("\n".join(textwrap.wrap(sentences[j], wrap)[:3]) + f"\n[{verdict}]", fontsize=7.5)
    scored = int(m.reshape(n, -1).any(1).sum())
    fig.suptitle(f"region selected per sentence (max over regions): {hits} of {scored} sentences with a mask hit it", fontsize=10)
    return _close(fig)


def plot_word_attention(image: Any, word: str, attention: Mapping[str, Any], mask: Any, alpha: float = 0.5) -> Figure:
    """GLoRIA / LIMITR word-to-region attention for one finding word, next to its ground-truth mask.

    Panels: the image with the ground-truth mask outlined, then one per method with its attention
    map over the regions (resampled bilinearly to the image) and the mask outline; each method's
    title says whether the map's maximum falls inside the mask
    (:func:`~localign.metrics.localization.pointing_game`) and how peaked the map is (its maximum
    relative to the uniform share 1/K of a [h, w] map). The colour scale of a panel runs from 0 to
    its map's maximum, so that a nearly uniform map looks flat instead of stretched to full contrast.

    :param image: [H, W].
    :param word: the finding word (e.g. "effusion").
    :param attention: method → [h, w] attention of the word over the regions (or [H, W]).
    :param mask: [H, W] bool ground-truth mask of the word's finding.
    """
    img = _image(image)
    gt = np.asarray(mask).astype(bool)
    if gt.shape != img.shape:
        raise ValueError(f"mask: shape {tuple(gt.shape)} differs from image shape {tuple(img.shape)}")
    if not attention:
        raise ValueError("attention: no methods")
    fig, axes = plt.subplots(1, 1 + len(attention), figsize=(3.2 * (1 + len(attention)), 3.6), squeeze=False)
    axes = axes[0]
    axes[0].imshow(img, cmap="gray")
    _outline(axes[0], gt)
    axes[0].set_title(f"ground truth: “{word}”", fontsize=9)
    for ax, (method, att) in zip(axes[1:], attention.items()):
        grid_map = np.asarray(att, dtype=float)
        full = _on_image(grid_map, img.shape)
        ax.imshow(img, cmap="gray")
        ax.imshow(full, cmap="inferno", alpha=alpha, vmin=0.0, vmax=max(float(full.max()), 1e-12))
        _outline(ax, gt)
        verdict = ("max inside mask" if pointing_game(full, gt) == 1.0 else "max outside mask") if gt.any() else "no mask"
        peak = "" if grid_map.shape == img.shape or grid_map.sum() <= 0 else f"; peak {grid_map.max() * grid_map.size / grid_map.sum():.2f}× uniform"
        ax.set_title(f"{method}: “{word}”\n[{verdict}{peak}]", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return _close(fig)


def plot_chosen_region(image: Any, region: int, grid: tuple[int, int], mask: Any = None, title: str = "") -> Figure:
    """One image with one region cell drawn (white), and a ground-truth mask outlined (lime) if given:
    the region whose word weights a LIMITR supp. Fig. 1 panel shows.

    :param image: [H, W].
    :param region: row-major index into the (h, w) grid.
    :param mask: [H, W] bool or None.
    """
    img = _image(image)
    fig, ax = plt.subplots(figsize=(3.4, 3.6))
    ax.imshow(img, cmap="gray")
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        if m.shape != img.shape:
            raise ValueError(f"mask: shape {tuple(m.shape)} differs from image shape {tuple(img.shape)}")
        _outline(ax, m)
    x, y, bw, bh = cell_box(int(region), grid, img.shape)
    ax.add_patch(Rectangle((x - 0.5, y - 0.5), bw, bh, fill=False, lw=2, ec=HIT_COLOR))
    r, c = divmod(int(region), grid[1])
    ax.set_title("\n".join(textwrap.wrap(title, 48)) + f"\nregion (row {r}, col {c}) of {grid[0]}×{grid[1]}" if title
                 else f"region (row {r}, col {c}) of {grid[0]}×{grid[1]}", fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    return _close(fig)


def plot_weights_beside_findings(mean_image: Any, weight_map: Any, finding_frequency: Any,
                                 title: str = "LoVT: mean region weights over the test set", alpha: float = 0.55) -> Figure:
    """LoVT Fig. 5 beside where SynthCXR's findings are: the mean region-weight map over the mean
    image (left, as :func:`plot_mean_weight_map`) and the share of test images whose finding masks
    cover each cell (right), so that the weights can be read against the findings they should find.

    :param mean_image: [H, W].
    :param weight_map: [h, w] mean region weights.
    :param finding_frequency: [h, w] in [0, 1] (:func:`~localign.eval.analyses.weight_maps.finding_cell_frequency`).
    """
    img = _image(mean_image)
    weights = np.asarray(weight_map, dtype=float)
    freq = np.asarray(finding_frequency, dtype=float)
    if weights.ndim != 2 or freq.shape != weights.shape:
        raise ValueError(f"weight_map and finding_frequency: expected two [h, w] maps of one grid, got {weights.shape} and {freq.shape}")
    k = weights.size
    fig, axes = plt.subplots(1, 2, figsize=(9.4, 4.4))
    panels = ((weights, f"{title}\n{weights.shape[0]}×{weights.shape[1]} regions; uniform weighting = 1/{k} = {1 / k:.3g}",
               "mean region weight", "inferno", None),
              (freq, "where the findings are: share of test images\nwhose finding masks cover the cell", "share of images", "viridis", (0, max(freq.max(), 1e-9))))
    for ax, (grid_map, panel_title, label, cmap, limits) in zip(axes, panels):
        ax.imshow(img, cmap="gray")
        im = ax.imshow(_on_image(grid_map, img.shape), cmap=cmap, alpha=alpha, **({} if limits is None else {"vmin": limits[0], "vmax": limits[1]}))
        ax.axis("off")
        ax.set_title(panel_title, fontsize=9)
        fig.colorbar(im, ax=ax, label=label, shrink=0.85)
    fig.tight_layout()
    return _close(fig)
