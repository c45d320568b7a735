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
    """

    category: str
    phrase: str
    image: Any
    boxes: Any
    maps: Mapping[str, Any]
    cnrs: Mapping[str, float] = field(default_factory=dict)


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
            ax.set_title(f"{method}\nCNR {cnrs[method]:.2f}", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.suptitle("phrase grounding: similarity maps (bright = similar) with the ground-truth boxes", fontsize=10)
    return _close(fig)
