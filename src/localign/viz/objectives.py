"""The objectives made visible on small inputs (book chapter "Objectives", notebook 02).

Every ``plot_*`` function returns a new :class:`matplotlib.figure.Figure` built without pyplot, so
nothing is registered globally and a notebook shows each figure exactly once (as the cell's value).
The data drawn are the values of :mod:`localign.losses`; the axes carry labels (``ax.get_label()``,
listed in each docstring) so that callers and tests can find a panel without relying on its
position.

* :func:`plot_lovt_positive_weights`: LoVT's spatial positives, smooth and non-smooth (spec §2.4.2).
* :func:`make_word_region_example`, :func:`plot_word_region_attention`: GLoRIA/LIMITR's
  double-softmax attention against the papers' single softmax (spec §3.2, §4.2).
* :func:`make_local_mi_example`, :func:`local_mi_region_terms`, :func:`plot_local_mi_selection`:
  the max over regions of Liao et al.'s local objective (Eq. 5).
* :func:`estimate_mi_curve`, :func:`plot_mi_curve`: MINE and CPC against the analytic MI of
  correlated Gaussians, with CPC's ``log B`` cap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from localign.losses import (
    double_softmax_attention,
    global_mi_objective,
    local_mi_objective,
    lovt_positive_weights,
    single_softmax_attention,
)
from localign.losses.mi import LOCAL_ESTIMATORS
from localign.models.heads import ConcatCritic

log = logging.getLogger(__name__)

_MISSING_COLOUR = "0.88"  # grid cells that are not positives / padded slots


def _check_grid(grid: tuple[int, int]) -> tuple[int, int]:
    if len(grid) != 2 or not all(isinstance(n, int) and n > 0 for n in grid):
        raise ValueError(f"grid must be (H, W) with positive ints, got {grid!r}")
    return grid[0], grid[1]


def _region_index(cell: tuple[int, int], grid: tuple[int, int]) -> int:
    """Row-major index ``k = h·W + w`` of a grid cell (LoVT's flattening)."""
    height, width = grid
    h, w = cell
    if not (0 <= h < height and 0 <= w < width):
        raise ValueError(f"cell {cell!r} lies outside the {height}×{width} grid")
    return h * width + w


def _outline_cell(ax: Axes, cell: tuple[int, int], colour: str = "red", lw: float = 2.0) -> None:
    h, w = cell
    ax.add_patch(Rectangle((w - 0.5, h - 0.5), 1, 1, fill=False, edgecolor=colour, lw=lw))


def _grid_axes(ax: Axes, grid: tuple[int, int]) -> None:
    ax.set_xticks(range(grid[1]))
    ax.set_yticks(range(grid[0]))
    ax.tick_params(labelsize=7, length=0)


# --------------------------------------------------------------------------------------------------
# LoVT: smooth spatial positives
# --------------------------------------------------------------------------------------------------


def plot_lovt_positive_weights(
    grid: tuple[int, int] = (7, 7),
    threshold: float = 0.5,
    lam: float = 1.0,
    anchors: Sequence[tuple[int, int]] | None = None,
) -> Figure:
    """LoVT's unnormalised positive weights π̃ (:func:`~localign.losses.lovt_positive_weights`).

    Two rows, smooth (``exp(−lam·d)`` inside the radius, LoVT) and non-smooth (equal weights inside
    the radius, ablation ``lovt_no_spatial``). Each row shows the full ``K × K`` matrix (anchor
    region k in rows, candidate region l in columns, K = H·W, row-major regions) and, for each
    anchor cell, its row drawn back on the ``H × W`` grid with the anchor outlined. Cells that are
    not positives (weight 0) are grey (masked); the colour scale is shared.

    Axes labels: ``"smooth/matrix"``, ``"smooth/<h>,<w>"`` for each anchor, and the same with
    ``"non-smooth/"``; plus the colour bar.

    :param grid: (H, W) region grid (LoVT: 7×7 at 224 px)
    :param threshold: relative distance radius (LoVT: 0.5)
    :param lam: decay of the smooth weights (LoVT: 1)
    :param anchors: grid cells whose rows are drawn; default the centre and the top-left corner
    :return: the figure
    """
    height, width = _check_grid(grid)
    if anchors is None:
        anchors = [(height // 2, width // 2), (0, 0)]
    anchors = [tuple(int(v) for v in a) for a in anchors]
    indices = [_region_index(a, grid) for a in anchors]  # validates the cells
    variants = {
        "smooth": lovt_positive_weights(grid, threshold=threshold, smooth=True, lam=lam).double().numpy(),
        "non-smooth": lovt_positive_weights(grid, threshold=threshold, smooth=False, lam=lam).double().numpy(),
    }
    positive_values = np.concatenate([w[w > 0] for w in variants.values()])
    vmin, vmax = float(positive_values.min()), float(positive_values.max())
    if vmin == vmax:  # e.g. lam = 0: every positive weighs 1
        vmin = vmax - 1.0
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=_MISSING_COLOUR)

    n_cols = 1 + len(anchors)
    fig = Figure(figsize=(3.3 * n_cols + 0.8, 6.6), layout="constrained")
    axes = fig.subplots(2, n_cols, squeeze=False)
    image = None
    num_regions = height * width
    for row, (name, weights) in enumerate(variants.items()):
        ax = axes[row, 0]
        ax.set_label(f"{name}/matrix")
        image = ax.imshow(np.ma.masked_equal(weights, 0.0), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        for k in indices:  # the rows drawn on the grid to the right
            ax.axhline(k, color="red", lw=0.8, alpha=0.8)
        ax.set(xlabel="candidate region l", ylabel="anchor region k")
        ax.set_title(f"{name}: π̃ over {num_regions}×{num_regions} region pairs", fontsize=9)
        for col, (cell, k) in enumerate(zip(anchors, indices), start=1):
            ax = axes[row, col]
            ax.set_label(f"{name}/{cell[0]},{cell[1]}")
            row_on_grid = weights[k].reshape(height, width)
            ax.imshow(np.ma.masked_equal(row_on_grid, 0.0), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            positives = row_on_grid[row_on_grid > 0]
            _outline_cell(ax, cell)
            if name == "smooth" and height * width <= 100:
                for (h, w), value in np.ndenumerate(row_on_grid):
                    if value > 0:
                        ax.text(w, h, f"{value:.2f}", ha="center", va="center", fontsize=6,
                                color="white" if value < (vmin + vmax) / 2 else "black")
            _grid_axes(ax, grid)
            spread = (f"weights {positives.min():.2f}–{positives.max():.2f}" if positives.min() < positives.max()
                      else f"all weights {positives.max():.2f}")
            ax.set_title(f"{name}: anchor {cell} (k = {k})\n{positives.size} positives, {spread}", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.8, label="unnormalised positive weight π̃ (grey: not a positive)")
    fig.suptitle(f"LoVT local image loss: positives within relative distance {threshold} on a {height}×{width} grid")
    return fig


def lovt_positive_summary(
    grid: tuple[int, int] = (7, 7),
    threshold: float = 0.5,
    lam: float = 1.0,
    anchors: Sequence[tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """Per anchor cell: the number of positives and the range of the smooth weights.

    :param grid: (H, W)
    :param threshold: relative distance radius
    :param lam: decay of the smooth weights
    :param anchors: grid cells; default the centre, the middle of the top edge and the top-left corner
    :return: one row per anchor: ``anchor`` ("h,w"), ``region`` (k), ``positives``,
        ``min_weight``, ``max_weight`` (smooth π̃ over the positives), ``positives_non_smooth``
    """
    height, width = _check_grid(grid)
    if anchors is None:
        anchors = [(height // 2, width // 2), (0, width // 2), (0, 0)]
    smooth = lovt_positive_weights(grid, threshold=threshold, smooth=True, lam=lam).double()
    hard = lovt_positive_weights(grid, threshold=threshold, smooth=False, lam=lam).double()
    rows = []
    for cell in anchors:
        k = _region_index(tuple(cell), grid)
        weights = smooth[k][smooth[k] > 0]
        rows.append({
            "anchor": f"{cell[0]},{cell[1]}", "region": k, "positives": int(weights.numel()),
            "min_weight": float(weights.min()), "max_weight": float(weights.max()),
            "positives_non_smooth": int((hard[k] > 0).sum()),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# GLoRIA / LIMITR: double-softmax attention vs the papers' single softmax
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WordRegionExample:
    """A hand-made caption whose words each match a known rectangle of an image's region grid.

    :ivar words: [T, D] word features
    :ivar regions: [K, D] region features, K = H·W in row-major order
    :ivar grid: (H, W)
    :ivar labels: T word labels
    :ivar boxes: per word the inclusive cell rectangle (h0, w0, h1, w1) it matches, or None
    """

    words: Tensor
    regions: Tensor
    grid: tuple[int, int]
    labels: tuple[str, ...]
    boxes: tuple[tuple[int, int, int, int] | None, ...]

    def patch_mask(self) -> Tensor:
        """[T, K] bool: True where region k lies in word t's rectangle (all False for None)."""
        height, width = self.grid
        mask = torch.zeros(len(self.labels), height, width, dtype=torch.bool)
        for t, box in enumerate(self.boxes):
            if box is not None:
                h0, w0, h1, w1 = box
                mask[t, h0 : h1 + 1, w0 : w1 + 1] = True
        return mask.reshape(len(self.labels), height * width)


_DEFAULT_WORD_BOXES: tuple[tuple[str, tuple[int, int, int, int] | None], ...] = (
    ("[CLS]", None),
    ("effusion", (5, 0, 6, 1)),
    ("cardiomegaly", (3, 2, 5, 4)),
    ("pneumothorax", (0, 5, 1, 6)),
)


def make_word_region_example(
    grid: tuple[int, int] = (7, 7),
    dim: int = 32,
    signal: float = 1.0,
    noise: float = 0.1,
    word_scale: float = 3.0,
    words: Sequence[tuple[str, tuple[int, int, int, int] | None]] = _DEFAULT_WORD_BOXES,
    seed: int = 0,
) -> WordRegionExample:
    """Region features with a planted direction per word inside that word's rectangle.

    Each word t gets an orthonormal direction u_t; region features are
    ``v_k = noise·ε_k + signal·Σ_t 1[k ∈ box_t] u_t`` and word features
    ``w_t = word_scale·u_t + noise·ε_t``, with ε standard normal. A word whose box is None (a
    [CLS]-like token) matches no region. Dot products w·v are then about ``signal·word_scale`` on
    the word's rectangle and about 0 elsewhere.

    :param grid: (H, W)
    :param dim: feature size D (at least the number of words)
    :param signal: strength of the planted direction in the regions
    :param noise: standard deviation of the feature noise
    :param word_scale: norm of the planted direction in the words (scales the dot products)
    :param words: (label, inclusive box (h0, w0, h1, w1) or None) per word
    :param seed: seed of a private generator
    :return: the example
    """
    height, width = _check_grid(grid)
    if dim < len(words):
        raise ValueError(f"dim must be at least the number of words ({len(words)}), got {dim}")
    for label, box in words:
        if box is not None and not (0 <= box[0] <= box[2] < height and 0 <= box[1] <= box[3] < width):
            raise ValueError(f"box {box!r} of word {label!r} does not fit the {height}×{width} grid")
    gen = torch.Generator().manual_seed(seed)
    directions, _ = torch.linalg.qr(torch.randn(dim, len(words), generator=gen, dtype=torch.float64))
    directions = directions.T.to(torch.get_default_dtype())  # [T, D] orthonormal rows
    example = WordRegionExample(
        words=torch.empty(0), regions=torch.empty(0), grid=(height, width),
        labels=tuple(label for label, _ in words), boxes=tuple(box for _, box in words),
    )
    in_box = example.patch_mask().to(directions.dtype)  # [T, K]
    regions = noise * torch.randn(height * width, dim, generator=gen) + signal * in_box.T @ directions
    word_features = word_scale * directions + noise * torch.randn(len(words), dim, generator=gen)
    return WordRegionExample(words=word_features, regions=regions, grid=example.grid, labels=example.labels, boxes=example.boxes)


def word_region_attention_maps(example: WordRegionExample, lam: float = 4.0) -> dict[str, Tensor]:
    """The three attention variants of :func:`plot_word_region_attention`, each [T, K].

    * ``"double"``: :func:`~localign.losses.double_softmax_attention` with the whole caption as queries;
    * ``"double_alone"``: the same with each word as the only query;
    * ``"single"``: :func:`~localign.losses.single_softmax_attention` (the papers' formula).

    :param example: words and regions
    :param lam: λ (GLoRIA/LIMITR: 4)
    :return: dict of [T, K] attention weights (each row sums to 1)
    """
    double = double_softmax_attention(example.words, example.regions, lam=lam)[1]
    alone = torch.cat([double_softmax_attention(example.words[t : t + 1], example.regions, lam=lam)[1]
                       for t in range(example.words.shape[0])])
    single = single_softmax_attention(example.words, example.regions, lam=lam)[1]
    return {"double": double, "double_alone": alone, "single": single}


def attention_on_patches(example: WordRegionExample, lam: float = 4.0) -> pd.DataFrame:
    """Share of each word's attention that falls inside its rectangle, per attention variant.

    :param example: words and regions
    :param lam: λ
    :return: one row per word with a box: ``word``, ``regions_in_box``, ``uniform`` (the share a
        uniform attention would give), and one column per variant of :func:`word_region_attention_maps`
    """
    maps = word_region_attention_maps(example, lam)
    mask = example.patch_mask()
    rows = []
    for t, label in enumerate(example.labels):
        if not bool(mask[t].any()):
            continue
        row = {"word": label, "regions_in_box": int(mask[t].sum()), "uniform": float(mask[t].double().mean())}
        row.update({name: float(attn[t][mask[t]].sum()) for name, attn in maps.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def plot_word_region_attention(example: WordRegionExample, lam: float = 4.0) -> Figure:
    """Word→region attention maps on the grid: double softmax (code) vs single softmax (papers).

    One row per word, three columns: the double softmax of GLoRIA's/LIMITR's code with the whole
    caption as queries; the same word attending **alone** (the first softmax runs over the
    queries, so a lone query gets uniform attention); the papers' single ``softmax(λ·cos)``. The
    word's rectangle is outlined in red. Colours are shared within a row.

    Axes labels: ``"<word>/double"``, ``"<word>/double_alone"``, ``"<word>/single"``.

    :param example: words, regions and the rectangles they were built to match
    :param lam: λ (GLoRIA/LIMITR: 4)
    :return: the figure
    """
    maps = word_region_attention_maps(example, lam)
    mask = example.patch_mask()
    height, width = example.grid
    titles = {
        "double": "double softmax (code)",
        "double_alone": "double softmax, word alone",
        "single": "single softmax(λ·cos) (papers)",
    }
    n_words = len(example.labels)
    fig = Figure(figsize=(12.0, 3.0 * n_words), layout="constrained")
    axes = fig.subplots(n_words, 3, squeeze=False)
    for t, label in enumerate(example.labels):
        vmax = max(float(attn[t].max()) for attn in maps.values())
        image = None
        for col, (name, attn) in enumerate(maps.items()):
            ax = axes[t, col]
            ax.set_label(f"{label}/{name}")
            image = ax.imshow(attn[t].reshape(height, width).numpy(), cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
            box = example.boxes[t]
            if box is not None:
                h0, w0, h1, w1 = box
                ax.add_patch(Rectangle((w0 - 0.5, h0 - 0.5), w1 - w0 + 1, h1 - h0 + 1, fill=False, edgecolor="red", lw=2))
            _grid_axes(ax, example.grid)
            ax.set_title(f"“{label}”: {titles[name]}\n{float(attn[t][mask[t]].sum()):.0%} of the attention in the box"
                         if box is not None else f"“{label}”: {titles[name]}", fontsize=9)
        fig.colorbar(image, ax=axes[t, :].tolist(), shrink=0.9, label="attention α")
    fig.suptitle(f"Word→region attention, λ = {lam:g}: the code's double softmax vs the papers' single softmax")
    return fig


# --------------------------------------------------------------------------------------------------
# Local MI (Liao et al., Eq. 5): max over regions per sentence
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalMIExample:
    """A hand-made critic score tensor for the local MI objective.

    :ivar scores: [B, B, N, M] critic scores ``f(region n of image i, sentence m of report j)``
    :ivar sentence_mask: [B, M] bool, True = real sentence
    :ivar targets: [B, M] int64, the region each sentence was built to describe (−1: padded)
    :ivar grid: (H, W) with N = H·W
    :ivar distractor: a region every critic score favours, for every image and report alike
    """

    scores: Tensor
    sentence_mask: Tensor
    targets: Tensor
    grid: tuple[int, int]
    distractor: int


def make_local_mi_example(
    sentences_per_report: Sequence[int] = (3, 2, 3),
    grid: tuple[int, int] = (4, 4),
    signal: float = 3.0,
    distractor_boost: float = 4.0,
    noise: float = 0.3,
    seed: int = 0,
) -> LocalMIExample:
    """Critic scores in which each sentence of report j singles out one region of image j.

    ``scores[i, j, n, m] = noise·ε + distractor_boost·1[n = distractor]
    + signal·1[i = j]·exp(−‖cell_n − cell_target(j,m)‖² / 2)``: a bump around the sentence's target
    region on its own image only, and a distractor region (the top-left cell, like a burnt-in
    marker) that scores high for *every* image–sentence pair. The distractor has the highest joint
    score when ``distractor_boost > signal``, but carries no information about which image goes
    with which report, so the MI terms ignore it. Targets are distinct per report and at least 2
    cells away from the distractor.
    Padded sentence slots hold large random scores (they must not matter).

    :param sentences_per_report: M_j for each report (B = its length; M = its maximum)
    :param grid: (H, W) region grid (Liao et al.'s local model: 4×4)
    :param signal: height of the matched-pair bump
    :param distractor_boost: score added at the distractor region for every pair
    :param noise: standard deviation of the score noise
    :param seed: seed of a private generator
    :return: the example
    """
    height, width = _check_grid(grid)
    num_regions = height * width
    batch, max_sentences = len(sentences_per_report), max(sentences_per_report, default=0)
    if batch < 2 or max_sentences < 1 or min(sentences_per_report) < 1:
        raise ValueError(f"need at least 2 reports with at least 1 sentence each, got {tuple(sentences_per_report)}")
    gen = torch.Generator().manual_seed(seed)
    distractor = 0
    cells = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij"), dim=-1).reshape(-1, 2).float()
    # Targets keep a distance of at least 2 cells from the distractor, so that their bumps barely reach it.
    allowed = (((cells - cells[distractor]) ** 2).sum(-1) >= 4).nonzero().flatten()
    if max_sentences > allowed.numel():
        raise ValueError(f"{max_sentences} sentences need distinct targets among the {allowed.numel()} regions "
                         f"at least 2 cells from the distractor on a {height}×{width} grid")
    sentence_mask = torch.arange(max_sentences)[None, :] < torch.tensor(list(sentences_per_report))[:, None]
    targets = torch.full((batch, max_sentences), -1, dtype=torch.int64)
    for j, count in enumerate(sentences_per_report):
        targets[j, :count] = allowed[torch.randperm(allowed.numel(), generator=gen)[:count]]
    squared = ((cells[:, None, None, :] - cells[targets.clamp_min(0)][None]) ** 2).sum(-1)  # [N, B(j), M]
    bump = signal * torch.exp(-squared / 2).permute(1, 0, 2)  # [B(j), N, M]
    scores = noise * torch.randn(batch, batch, num_regions, max_sentences, generator=gen)
    scores[:, :, distractor, :] += distractor_boost
    scores[torch.arange(batch), torch.arange(batch)] += bump
    padded = ~sentence_mask[None, :, None, :].expand_as(scores)
    scores[padded] = 50.0 * torch.randn(int(padded.sum()), generator=gen)
    return LocalMIExample(scores=scores, sentence_mask=sentence_mask, targets=targets, grid=(height, width),
                          distractor=distractor)


def local_mi_region_terms(
    scores: Tensor, sentence_mask: Tensor, estimator: str = "cpc", negative_mask: Tensor | None = None
) -> Tensor:
    """The per-region MI terms that :func:`~localign.losses.local_mi_objective` maximises over regions.

    For report j, region n and sentence m (anchor: the sentence; candidates: region n of every
    image i):

    * CPC:  ``s_jjnm − log Σ_{i valid} exp s_ijnm + log n_j``;
    * MINE: ``s_jjnm − (log Σ_{i≠j valid} exp s_ijnm − log(n_j − 1))``.

    ``local_mi_objective`` returns the mean over reports of the sum over valid sentences of
    ``max_n`` of these terms (checked in the tests), and its ``argmax`` is the selected region.

    :param scores: [B, B, N, M] critic scores (images × reports × regions × sentences)
    :param sentence_mask: [B, M] bool
    :param estimator: "cpc" or "mine"
    :param negative_mask: [B, B] bool over (image i, report j); False excludes image i for report j
    :return: [B(report), N, M] terms, 0 on padded sentences
    """
    if scores.dim() != 4 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be [B, B, N, M], got shape {tuple(scores.shape)}")
    batch, _, _, num_sentences = scores.shape
    if sentence_mask.dtype != torch.bool or tuple(sentence_mask.shape) != (batch, num_sentences):
        raise ValueError(f"sentence_mask must be bool of shape {(batch, num_sentences)}, "
                         f"got {sentence_mask.dtype} {tuple(sentence_mask.shape)}")
    if estimator not in LOCAL_ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {LOCAL_ESTIMATORS}")
    candidates = torch.ones(batch, batch, dtype=torch.bool) if negative_mask is None else negative_mask
    if tuple(candidates.shape) != (batch, batch) or not bool(candidates.diagonal().all()):
        raise ValueError(f"negative_mask must be [B, B] = {(batch, batch)} with a True diagonal")
    real = sentence_mask[None, :, None, :]
    scores = torch.where(real, scores, torch.zeros((), dtype=scores.dtype))
    joint = scores.diagonal(dim1=0, dim2=1).permute(2, 0, 1)  # [B(j), N, M]
    samples = candidates if estimator == "cpc" else candidates & ~torch.eye(batch, dtype=torch.bool)
    counts = samples.sum(dim=0).to(scores.dtype)  # per report j
    log_partition = torch.logsumexp(scores.masked_fill(~samples[:, :, None, None], float("-inf")), dim=0)
    terms = joint - log_partition + counts.log()[:, None, None]
    return torch.where(sentence_mask[:, None, :], terms, torch.zeros((), dtype=terms.dtype))


def plot_local_mi_selection(example: LocalMIExample, estimator: str = "cpc") -> Figure:
    """Each sentence's MI term per region on the grid and the region the local objective selects.

    One row per report j, one column per sentence slot m. The heat map is the per-region term of
    :func:`local_mi_region_terms` for that report and sentence; the white star marks the region
    that :func:`~localign.losses.local_mi_objective` selects (its ``return_argmax``), the cyan
    circle the sentence's planted target, and the red cross the region with the highest *joint*
    critic score ``s_jj`` alone. Padded slots are blank.

    Axes labels: ``"report <j>/sentence <m>"`` for the real sentences.

    :param example: scores, sentence mask, targets
    :param estimator: "cpc" or "mine"
    :return: the figure
    """
    estimate, selected = local_mi_objective(example.scores, example.sentence_mask, estimator=estimator, return_argmax=True)
    terms = local_mi_region_terms(example.scores, example.sentence_mask, estimator=estimator)
    height, width = example.grid
    batch, max_sentences = example.sentence_mask.shape
    real_terms = terms.permute(0, 2, 1)[example.sentence_mask]  # [n_real, N]
    vmin, vmax = float(real_terms.min()), float(real_terms.max())
    fig = Figure(figsize=(2.9 * max_sentences + 1.2, 2.7 * batch), layout="constrained")
    axes = fig.subplots(batch, max_sentences, squeeze=False)
    image = None
    for j in range(batch):
        for m in range(max_sentences):
            ax = axes[j, m]
            if not bool(example.sentence_mask[j, m]):
                ax.set_axis_off()
                ax.text(0.5, 0.5, "padded", ha="center", va="center", color="0.5", transform=ax.transAxes)
                continue
            ax.set_label(f"report {j}/sentence {m}")
            image = ax.imshow(terms[j, :, m].reshape(height, width).numpy(), cmap="viridis", vmin=vmin, vmax=vmax,
                              interpolation="nearest")
            pick = int(selected[j, m])
            joint_best = int(example.scores[j, j, :, m].argmax())
            target = int(example.targets[j, m])
            ax.plot(joint_best % width, joint_best // width, "x", color="red", ms=12, mew=2.5)
            ax.plot(target % width, target // width, "o", mfc="none", mec="cyan", ms=17, mew=2)
            ax.plot(pick % width, pick // width, "*", color="white", ms=13, mec="black")
            _grid_axes(ax, example.grid)
            ax.set_title(f"report {j}, sentence {m}: max at region {pick}", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.8, label=f"{estimator.upper()} term of the region (nats)")
    fig.suptitle(f"Local MI (Eq. 5): ★ selected region, ○ planted target, ✕ highest joint score; "
                 f"estimate {float(estimate):.2f} nats", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------
# MINE and CPC against the analytic MI of correlated Gaussians
# --------------------------------------------------------------------------------------------------


def gaussian_mi(rho: float, dim: int) -> float:
    """MI (nats) between x ~ N(0, I_d) and y = ρx + sqrt(1 − ρ²)ε: ``−d/2 · log(1 − ρ²)``."""
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must lie in (-1, 1), got {rho!r}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim!r}")
    return -dim / 2 * math.log1p(-rho * rho)


def sample_correlated_gaussians(n: int, dim: int, rho: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` pairs (x, y) with x ~ N(0, I_d), y = ρx + sqrt(1 − ρ²)ε (per-coordinate correlation ρ).

    :return: (x [n, dim], y [n, dim])
    """
    x = torch.randn(n, dim, generator=generator)
    y = rho * x + math.sqrt(1.0 - rho * rho) * torch.randn(n, dim, generator=generator)
    return x, y


MI_CURVE_COLUMNS = ("rho", "dim", "true_mi", "estimator", "estimate", "estimate_sd", "log_batch", "batch_size", "steps")


def estimate_mi_curve(
    rhos: Sequence[float] = (0.3, 0.6, 0.8, 0.9, 0.95),
    batch_size: int = 64,
    steps: int = 250,
    seed: int = 0,
    dim: int = 5,
    estimators: Sequence[str] = ("mine", "cpc"),
    hidden: tuple[int, ...] = (64, 64),
    lr: float = 2e-3,
    eval_batches: int = 32,
    num_threads: int | None = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Train a concatenation critic with each bound at each ρ and estimate MI on held-out batches.

    For every ρ and estimator a fresh :class:`~localign.models.heads.ConcatCritic` (the paper's
    critic design, MLP on ``[x; y]`` with ``hidden`` layers) is trained with Adam for ``steps``
    steps to maximise :func:`~localign.losses.global_mi_objective` on ``[B, B]`` score matrices
    of fresh batches (diagonal: joint samples; off-diagonal: product of marginals). The estimate
    is the mean over ``eval_batches`` held-out batches of the **same** size B, so CPC's estimate
    obeys its cap ``log B`` exactly. Both estimators see the same data stream and the same initial
    critic at a given ρ.

    Runtime: each step scores B² pairs; with the defaults (10 trainings of 250 steps at B = 64)
    about 25 s on one busy CPU core.
    ``num_threads`` (default 1) sets torch's intra-op threads for the duration of the call and
    restores the previous value: these tensors are too small for a second thread to help, and on
    a busy machine it only spins.

    :param rhos: per-coordinate correlations, each in (−1, 1)
    :param batch_size: B (CPC's cap is log B)
    :param steps: optimiser steps per (ρ, estimator)
    :param seed: seeds the data stream and the critic initialisation (global RNG state is restored)
    :param dim: dimension d of x and y (true MI = −d/2·log(1 − ρ²))
    :param estimators: any of "mine", "cpc"
    :param hidden: hidden layer widths of the critic
    :param lr: Adam learning rate
    :param eval_batches: held-out batches averaged for the estimate
    :param num_threads: torch threads during the call; None leaves the setting alone
    :param progress: show a tqdm bar over the (ρ, estimator) pairs
    :return: one row per (ρ, estimator) with the columns of :data:`MI_CURVE_COLUMNS`
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (MINE needs off-diagonal pairs), got {batch_size}")
    if steps < 0 or eval_batches < 1:
        raise ValueError(f"need steps >= 0 and eval_batches >= 1, got steps={steps}, eval_batches={eval_batches}")
    unknown = sorted(set(estimators) - {"mine", "cpc"})
    if unknown or not estimators:
        raise ValueError(f"estimators must be a non-empty subset of ('mine', 'cpc'), got {tuple(estimators)}")
    true_mis = [gaussian_mi(float(rho), dim) for rho in rhos]  # validates every ρ before any training

    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    rows = []
    try:
        jobs = [(float(rho), mi, estimator) for rho, mi in zip(rhos, true_mis) for estimator in estimators]
        if progress:
            from localign.progress import tqdm

            jobs = tqdm(jobs, desc="MI bounds")
        for rho, true_mi, estimator in jobs:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                critic = ConcatCritic(dim, dim, hidden=tuple(hidden))
            optimiser = torch.optim.Adam(critic.parameters(), lr=lr)
            gen = torch.Generator().manual_seed(seed)
            for _ in range(steps):
                x, y = sample_correlated_gaussians(batch_size, dim, rho, gen)
                loss = -global_mi_objective(critic.pairwise(x, y), estimator=estimator)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            with torch.no_grad():  # held-out batches of the same size B
                values = torch.stack([
                    global_mi_objective(critic.pairwise(*sample_correlated_gaussians(batch_size, dim, rho, gen)), estimator)
                    for _ in range(eval_batches)
                ])
            estimate = float(values.mean())
            sd = float(values.std()) if eval_batches > 1 else float("nan")
            log.info("rho=%.3f %s: estimate %.3f nats (true %.3f, log B %.3f)",
                     rho, estimator, estimate, true_mi, math.log(batch_size))
            rows.append((rho, dim, true_mi, estimator, estimate, sd, math.log(batch_size), batch_size, steps))
    finally:
        torch.set_num_threads(previous_threads)
    return pd.DataFrame(rows, columns=list(MI_CURVE_COLUMNS))


def plot_mi_curve(curve: pd.DataFrame) -> Figure:
    """MINE and CPC estimates against the analytic MI of correlated Gaussians.

    The black curve is ``−d/2·log(1 − ρ²)`` over ρ; markers are the estimates of
    :func:`estimate_mi_curve` (error bars: standard deviation over the held-out batches); the
    dashed line is CPC's cap ``log B``.

    Axes label: ``"mi"``; the analytic curve is the line labelled ``"true MI"``, the cap
    ``"log B"``; the estimates are error-bar containers labelled ``"MINE (Donsker–Varadhan)"`` and
    ``"CPC (InfoNCE)"``.

    :param curve: the output of :func:`estimate_mi_curve` (one batch size and one d)
    :return: the figure
    """
    missing = sorted(set(MI_CURVE_COLUMNS) - set(curve.columns))
    if missing:
        raise ValueError(f"curve lacks the columns {missing}; expected the output of estimate_mi_curve")
    if curve.empty:
        raise ValueError("curve is empty")
    for column in ("dim", "batch_size"):
        if curve[column].nunique() != 1:
            raise ValueError(f"curve mixes several values of {column!r}: {sorted(curve[column].unique())}")
    dim, batch = int(curve["dim"].iloc[0]), int(curve["batch_size"].iloc[0])
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.set_label("mi")
    top = min(0.995, max(0.99, float(curve["rho"].abs().max())))
    grid = np.linspace(0.0, top, 200)
    ax.plot(grid, -dim / 2 * np.log1p(-grid**2), color="black", lw=1.5, label="true MI")
    ax.axhline(math.log(batch), color="C1", ls="--", lw=1.2, label="log B")
    ax.text(0.01, math.log(batch), f" log B = log {batch} = {math.log(batch):.2f}", color="C1", va="bottom", fontsize=8,
            transform=ax.get_yaxis_transform())
    names = {"mine": "MINE (Donsker–Varadhan)", "cpc": "CPC (InfoNCE)"}
    for estimator, marker, colour in (("mine", "o", "C0"), ("cpc", "s", "C1")):
        part = curve[curve["estimator"] == estimator].sort_values("rho")
        if part.empty:
            continue
        ax.errorbar(part["rho"].to_numpy(float), part["estimate"].to_numpy(float),
                    yerr=part["estimate_sd"].fillna(0.0).to_numpy(float), fmt=marker + "-", color=colour,
                    ms=6, lw=1, capsize=3, label=names[estimator])
    ymax = max(float(curve["estimate"].max()), float(curve["true_mi"].max()), math.log(batch)) * 1.15
    ymin = min(0.0, float(curve["estimate"].min())) - 0.1
    ax.set(xlabel="correlation ρ (per coordinate)", ylabel="MI (nats)", xlim=(0, top), ylim=(ymin, ymax),
           title=f"MI bounds vs analytic MI, d = {dim}, B = {batch}, {int(curve['steps'].iloc[0])} steps")
    ax.legend(loc="upper left")
    return fig
