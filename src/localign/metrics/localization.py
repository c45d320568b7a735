"""Localization measures of the analyses chapters (weight maps, local MI's region selection, pointing game).

Pure functions over arrays or tensors (torch tensors are detached and moved to the CPU; every
computation runs in float64 numpy). Nothing here knows about models: callers pass the region grid
``(h, w)``, the per-region scores or weights, and the ground-truth masks.

Region grid convention (shared with :mod:`localign.metrics.representations`): K = h·w regions in
row-major order (region k at grid row k // w, column k % w, as ``x.flatten(2).transpose(1, 2)`` of a
[B, D, h, w] feature map gives), tiling the image uniformly. On an H×W image, pixel row i belongs to
grid row ⌊i·h/H⌋ and pixel column j to grid column ⌊j·w/W⌋; when H is a multiple of h every cell is
exactly (H/h)×(W/w) pixels, otherwise cells differ in size by at most one pixel.

"Inside a mask" for a region cell (:func:`region_inside_mask`): the cell's overlap fraction (mask
pixels in the cell / pixels in the cell, :func:`region_overlap`) is at least ``threshold`` (default
0.5), **or** the cell has the largest overlap fraction of the grid (every tied cell). The second
rule gives a mask smaller than half a cell (a nodule) its best cell, so that every non-empty mask has
at least one inside cell; ``include_best=False`` drops it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from localign.config import positive_int_pair

Ties = Literal["pessimistic", "expected"]
WordNorm = Literal["max", "sum"]


# --------------------------------------------------------------------------------------------------
# input helpers (private: this layer imports nothing above localign.metrics)
# --------------------------------------------------------------------------------------------------
def _array(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """``x`` (numpy array, torch tensor, nested sequence) as a numpy array; ``dtype=None`` keeps it."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            if x.dtype in (torch.bfloat16, torch.float16):
                x = x.float()
            x = x.numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    try:
        return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to a numeric array: {err}") from err


def _bool_array(x: Any, name: str) -> np.ndarray:
    a = _array(x, name, dtype=None)
    if a.dtype == np.bool_:
        return a
    if a.size and not np.all((a == 0) | (a == 1)):
        raise ValueError(f"{name}: expected a boolean or 0/1 array")
    return a == 1


def _finite(a: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{name}: non-finite value at index {tuple(int(i) for i in bad)}")


def _grid(grid: Any) -> tuple[int, int]:
    return positive_int_pair(grid, "grid", "(h, w)")


# --------------------------------------------------------------------------------------------------
# region cells and masks
# --------------------------------------------------------------------------------------------------
def region_overlap(mask: Any, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each region cell covered by a pixel mask.

    Definition: for the cell (r, c) of an h×w grid tiling the H×W mask (module docstring),
    overlap[r, c] = #(mask pixels in the cell) / #(pixels in the cell), in [0, 1].

    :param mask: [H, W] bool (or 0/1), with H ≥ h and W ≥ w.
    :param grid: (h, w).
    :return: [h, w] float64.
    """
    h, w = _grid(grid)
    m = _bool_array(mask, "mask")
    if m.ndim != 2:
        raise ValueError(f"mask: expected [H, W], got shape {tuple(m.shape)}")
    H, W = m.shape
    if H < h or W < w:
        raise ValueError(f"mask: {H}×{W} pixels cannot be tiled by a {h}×{w} grid (needs H >= h and W >= w)")
    rows = (np.arange(H) * h) // H  # grid row of every pixel row
    cols = (np.arange(W) * w) // W
    hits = np.zeros((h, w))
    np.add.at(hits, (rows[:, None], cols[None, :]), m.astype(np.float64))
    sizes = np.bincount(rows, minlength=h)[:, None] * np.bincount(cols, minlength=w)[None, :]
    return hits / sizes


def region_inside_mask(mask: Any, grid: tuple[int, int], threshold: float = 0.5, include_best: bool = True) -> np.ndarray:
    """Which region cells count as inside a mask (the module docstring's rule).

    Definition: inside[r, c] = overlap[r, c] ≥ ``threshold`` or (``include_best`` and
    overlap[r, c] = max overlap > 0), with overlap = :func:`region_overlap`.

    :param mask: [H, W] bool, non-empty.
    :param grid: (h, w).
    :param threshold: in (0, 1].
    :param include_best: also count the cell(s) of largest overlap.
    :return: [h, w] bool with at least one True when ``include_best``.
    :raises ValueError: an empty mask (a sentence without an image correlate cannot be scored).
    """
    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise ValueError(f"threshold: expected a number in (0, 1], got {threshold!r}")
    overlap = region_overlap(mask, grid)
    best = overlap.max()
    if best <= 0:
        raise ValueError("mask: empty (no pixel set); a region cannot be inside it")
    inside = overlap >= threshold
    if include_best:
        inside |= overlap == best
    return inside


def region_hits(
    selected: Any,
    masks: Any,
    grid: tuple[int, int],
    sentence_mask: Any = None,
    threshold: float = 0.5,
    include_best: bool = True,
    region_mask: Any = None,
) -> dict[str, Any]:
    """Hit rate of one selected region per sentence against the sentences' ground-truth masks.

    Definition: sentence m of sample i is *scored* when ``sentence_mask[i, m]`` is True and its
    mask is non-empty (a sentence without an image correlate has an empty mask and is skipped); it
    is a *hit* when its selected region k = ``selected[i, m]`` lies inside the mask
    (:func:`region_inside_mask` of cell (k // w, k % w)). ``rate`` = hits / scored. ``chance`` is
    the rate a uniformly random choice among the sample's valid regions would have in expectation,
    mean over scored sentences of (#valid inside cells / #valid cells).

    :param selected: [N, M] int region indices in [0, h·w) (e.g. :func:`select_regions_max`).
    :param masks: [N, M, H, W] bool ground-truth masks (all zeros for no correlate).
    :param grid: (h, w) region grid.
    :param sentence_mask: [N, M] bool, True = real sentence (None: all).
    :param threshold: overlap threshold of :func:`region_inside_mask`.
    :param include_best: see :func:`region_inside_mask`.
    :param region_mask: [N, K] bool valid regions for ``chance`` (None: all).
    :return: dict with ``rate`` (NaN if nothing is scored), ``chance``, ``n_scored``, ``n_hits``,
        ``hits`` [N, M] bool (False where not scored) and ``scored`` [N, M] bool.
    """
    h, w = _grid(grid)
    sel = _array(selected, "selected", dtype=None)
    if sel.ndim != 2:
        raise ValueError(f"selected: expected [N, M] region indices, got shape {tuple(sel.shape)}")
    if not np.issubdtype(sel.dtype, np.integer):
        raise ValueError(f"selected: expected integer region indices, got dtype {sel.dtype}")
    m = _bool_array(masks, "masks")
    if m.ndim != 4 or m.shape[:2] != sel.shape:
        raise ValueError(f"masks: expected [N, M, H, W] with [N, M] = {tuple(sel.shape)}, got shape {tuple(m.shape)}")
    n, n_sent = sel.shape
    k_total = h * w
    smask = np.ones((n, n_sent), bool) if sentence_mask is None else _bool_array(sentence_mask, "sentence_mask")
    if smask.shape != sel.shape:
        raise ValueError(f"sentence_mask: shape {tuple(smask.shape)} differs from selected {tuple(sel.shape)}")
    rmask = np.ones((n, k_total), bool) if region_mask is None else _bool_array(region_mask, "region_mask")
    if rmask.shape != (n, k_total):
        raise ValueError(f"region_mask: expected [N, K] = {(n, k_total)}, got {tuple(rmask.shape)}")
    scored = smask & m.reshape(n, n_sent, -1).any(-1)
    if np.any((sel[scored] < 0) | (sel[scored] >= k_total)):
        raise ValueError(f"selected: region indices must lie in [0, {k_total}) for the {h}×{w} grid")
    hits = np.zeros((n, n_sent), bool)
    chance = []
    for i, j in zip(*np.nonzero(scored)):
        inside = region_inside_mask(m[i, j], (h, w), threshold, include_best).reshape(-1)
        k = int(sel[i, j])
        if not rmask[i, k]:
            raise ValueError(f"selected[{i}, {j}] = {k} is a masked (invalid) region")
        hits[i, j] = inside[k]
        chance.append((inside & rmask[i]).sum() / rmask[i].sum())
    n_scored = int(scored.sum())
    return {
        "rate": float(hits.sum() / n_scored) if n_scored else float("nan"),
        "chance": float(np.mean(chance)) if chance else float("nan"),
        "n_scored": n_scored,
        "n_hits": int(hits.sum()),
        "hits": hits,
        "scored": scored,
    }


# --------------------------------------------------------------------------------------------------
# local MI's region selection (Liao et al., Eq. 5 and Fig. 2)
# --------------------------------------------------------------------------------------------------
def select_regions_max(scores: Any, region_mask: Any = None) -> np.ndarray:
    """The region each sentence selects by local MI's max over regions.

    Definition (Liao et al. Eq. 5, the one-way maximum): for sentence m, k*(m) = argmax_k s[m, k],
    s being the critic score f(z_k^I, z_m^R) (or any sentence-region similarity). Masked regions
    never win; ties go to the lowest region index (numpy argmax).

    :param scores: [M, K] or [N, M, K] (N samples, M sentences, K regions), finite where valid.
    :param region_mask: [K] or [N, K] bool, True = valid region (None: all valid).
    :return: [M] or [N, M] int64 region indices.
    """
    s = _array(scores, "scores")
    single = s.ndim == 2
    if single:
        s = s[None]
    if s.ndim != 3:
        raise ValueError(f"scores: expected [M, K] or [N, M, K], got shape {tuple(s.shape)}")
    n, _, k = s.shape
    if k == 0:
        raise ValueError("scores: no regions (K = 0)")
    if region_mask is None:
        valid = np.ones((n, k), bool)
    else:
        valid = _bool_array(region_mask, "region_mask")
        if valid.ndim == 1:
            valid = np.broadcast_to(valid, (n, k))
        if valid.shape != (n, k):
            raise ValueError(f"region_mask: expected [K] or [N, K] matching scores {tuple(s.shape)}, got {tuple(valid.shape)}")
    if not valid.any(-1).all():
        raise ValueError(f"region_mask: sample {int(np.argmin(valid.any(-1)))} has no valid region")
    _finite(np.where(valid[:, None, :], s, 0.0), "scores")
    out = np.where(valid[:, None, :], s, -np.inf).argmax(-1)
    return out[0] if single else out


# --------------------------------------------------------------------------------------------------
# pointing game
# --------------------------------------------------------------------------------------------------
def pointing_game(heatmap: Any, target: Any, ties: Ties = "pessimistic") -> float:
    """Pointing-game score of one map: is its maximum inside the target?

    Definition: P = the set of pixels where the map attains its maximum over non-NaN pixels (NaN
    marks pixels the network never saw, e.g. the padding of :func:`map_to_original` in
    ``localign.eval.grounding``, and is ignored). With ``ties="pessimistic"`` (default) the score is
    1 if every pixel of P is inside ``target`` and 0 otherwise, so a constant map only scores when
    the target covers all valid pixels; ``ties="expected"`` gives |P ∩ target| / |P|, the expected
    hit of a uniformly random tie-break. For MS-CXR boxes pass the union mask
    (``localign.eval.grounding.boxes_to_mask``).

    :param heatmap: [H, W] map; NaN = ignored; ±inf raise.
    :param target: [H, W] bool mask (box union or ground-truth mask).
    :param ties: ``"pessimistic"`` or ``"expected"``.
    :return: score in [0, 1].
    :raises ValueError: shape mismatch, an all-NaN map, ±inf, or an empty target.
    """
    if ties not in ("pessimistic", "expected"):
        raise ValueError(f"ties: expected 'pessimistic' or 'expected', got {ties!r}")
    m = _array(heatmap, "heatmap")
    t = _bool_array(target, "target")
    if m.ndim != 2:
        raise ValueError(f"heatmap: expected [H, W], got shape {tuple(m.shape)}")
    if t.shape != m.shape:
        raise ValueError(f"target: shape {tuple(t.shape)} differs from heatmap shape {tuple(m.shape)}")
    if np.any(np.isinf(m)):
        raise ValueError("heatmap: contains ±inf")
    valid = ~np.isnan(m)
    if not valid.any():
        raise ValueError("heatmap: every pixel is NaN")
    if not t.any():
        raise ValueError("target: empty mask")
    peak = valid & (m == np.nanmax(m))
    inside = int((peak & t).sum())
    if ties == "pessimistic":
        return float(inside == int(peak.sum()))
    return inside / int(peak.sum())


def pointing_accuracy(heatmaps: Sequence[Any] | Any, targets: Sequence[Any] | Any, ties: Ties = "pessimistic") -> float:
    """Mean :func:`pointing_game` score over (map, target) pairs (maps may differ in size).

    :param heatmaps: [N, H, W] array or a sequence of N [H_i, W_i] maps.
    :param targets: the matching N masks.
    :return: accuracy in [0, 1].
    """
    maps, masks = list(heatmaps), list(targets)
    if len(maps) != len(masks):
        raise ValueError(f"heatmaps: {len(maps)} maps but {len(masks)} targets")
    if not maps:
        raise ValueError("heatmaps: empty")
    return float(np.mean([pointing_game(a, b, ties) for a, b in zip(maps, masks)]))


# --------------------------------------------------------------------------------------------------
# weight maps
# --------------------------------------------------------------------------------------------------
def resample_map(grid_map: Any, size: tuple[int, int], mode: Literal["bilinear", "nearest"] = "bilinear") -> np.ndarray:
    """A grid map resampled to image size.

    Definition: torch ``F.interpolate`` of the [h, w] map to ``size`` = (H, W), ``"bilinear"`` with
    align_corners=False (each cell's value sits at its cell centre) or ``"nearest"`` (each pixel
    takes its cell's value, the module's tiling for H a multiple of h).

    :param grid_map: [h, w] finite.
    :param size: (H, W).
    :return: [H, W] float64.
    """
    import torch
    import torch.nn.functional as F

    m = _array(grid_map, "grid_map")
    if m.ndim != 2:
        raise ValueError(f"grid_map: expected [h, w], got shape {tuple(m.shape)}")
    _finite(m, "grid_map")
    H, W = _grid(size)
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode: expected 'bilinear' or 'nearest', got {mode!r}")
    x = torch.from_numpy(np.ascontiguousarray(m))[None, None]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(x, size=(H, W), mode=mode, **kw)[0, 0].numpy()


def mean_region_weight_map(
    weights: Any,
    grid: tuple[int, int],
    mask: Any = None,
    image_size: tuple[int, int] | None = None,
    mode: Literal["bilinear", "nearest"] = "bilinear",
) -> np.ndarray:
    """Region weights averaged over a test set, as LoVT's Fig. 5.

    Definition: W̄_k = Σ_i mask_ik·w_ik / Σ_i mask_ik, the mean weight of region k over the samples
    where it is valid, reshaped row-major to the (h, w) grid; with ``image_size`` it is resampled
    by :func:`resample_map`. For LoVT's attention-pool weights (a softmax over the K regions of
    each image) W̄ sums to 1 on the grid and a uniform weighting gives 1/K everywhere.

    :param weights: [N, K] region weights w_ik (K = h·w), finite where valid.
    :param grid: (h, w).
    :param mask: [N, K] bool, True = valid (None: all).
    :param image_size: (H, W) to resample to, or None for the [h, w] grid map.
    :return: [h, w] or [H, W] float64; NaN for a region never valid (and then no resampling).
    """
    h, w = _grid(grid)
    wts = _array(weights, "weights")
    if wts.ndim != 2 or wts.shape[1] != h * w:
        raise ValueError(f"weights: expected [N, K] with K = {h}×{w} = {h * w}, got shape {tuple(wts.shape)}")
    if wts.shape[0] == 0:
        raise ValueError("weights: no samples")
    valid = np.ones(wts.shape, bool) if mask is None else _bool_array(mask, "mask")
    if valid.shape != wts.shape:
        raise ValueError(f"mask: shape {tuple(valid.shape)} differs from weights {tuple(wts.shape)}")
    _finite(np.where(valid, wts, 0.0), "weights")
    count = valid.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.where(valid, wts, 0.0).sum(0) / np.maximum(count, 1), np.nan).reshape(h, w)
    if image_size is None:
        return mean
    if np.isnan(mean).any():
        raise ValueError("mean_region_weight_map: a region is masked in every sample; cannot resample a map with holes")
    return resample_map(mean, image_size, mode)


def mean_image(images: Any) -> np.ndarray:
    """Pixel-wise mean of a stack of equally sized images (the background of LoVT's Fig. 5).

    :param images: [N, H, W] (or [N, 1, H, W]).
    :return: [H, W] float64.
    """
    x = _array(images, "images")
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[0] == 0:
        raise ValueError(f"images: expected [N, H, W] with N >= 1, got shape {tuple(x.shape)}")
    _finite(x, "images")
    return x.mean(0)


def word_weights(token_weights: Any, word_ids: Any = None, norm: WordNorm = "max") -> np.ndarray:
    """Per-word weights of one report for LIMITR-style shading, normalised per report.

    Definition: token weights q_t (LIMITR's aggregation weights, or an attention row over the
    tokens) are summed over the word pieces of each word, u_j = Σ_{t: word_ids[t] = j} q_t; tokens
    with a negative word id (special tokens, padding) are dropped. Then ``norm="max"`` gives
    u_j / max_j u_j (the darkest word is 1, for shading) and ``norm="sum"`` gives u_j / Σ_j u_j (a
    distribution over the words). Words are numbered 0 … W−1 by their ids; a word id with no token
    raises.

    :param token_weights: [T] non-negative.
    :param word_ids: [T] int word index of every token (−1 = not a word), None = one token per word.
    :param norm: ``"max"`` or ``"sum"``.
    :return: [W] float64 in [0, 1].
    """
    q = _array(token_weights, "token_weights")
    if q.ndim != 1:
        raise ValueError(f"token_weights: expected [T], got shape {tuple(q.shape)}")
    _finite(q, "token_weights")
    if np.any(q < 0):
        raise ValueError("token_weights: negative weight")
    if norm not in ("max", "sum"):
        raise ValueError(f"norm: expected 'max' or 'sum', got {norm!r}")
    if word_ids is None:
        ids = np.arange(q.shape[0])
    else:
        ids = _array(word_ids, "word_ids", dtype=None)
        if ids.shape != q.shape or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"word_ids: expected [T] = {tuple(q.shape)} integers, got shape {tuple(ids.shape)} dtype {ids.dtype}")
    keep = ids >= 0
    if not keep.any():
        raise ValueError("word_ids: no token belongs to a word")
    n_words = int(ids[keep].max()) + 1
    present = np.bincount(ids[keep], minlength=n_words) > 0
    if not present.all():
        raise ValueError(f"word_ids: word {int(np.argmin(present))} has no token (ids must be 0 … W−1)")
    u = np.bincount(ids[keep], weights=q[keep], minlength=n_words)
    total = u.max() if norm == "max" else u.sum()
    if total <= 0:
        raise ValueError("token_weights: all word weights are 0; nothing to normalise")
    return u / total


def cell_box(k: int, grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Pixel rectangle (x, y, width, height) of region k on an H×W image, for drawing.

    Definition: the cell (r, c) = (k // w, k % w) spans columns [⌈c·W/w⌉, ⌈(c+1)·W/w⌉) and rows
    [⌈r·H/h⌉, ⌈(r+1)·H/h⌉), the exact pixel set of the module's tiling, returned with the
    left/top edge at the first pixel's edge.
    """
    h, w = _grid(grid)
    H, W = _grid(image_size)
    if not 0 <= int(k) < h * w:
        raise ValueError(f"k: region {k} outside the {h}×{w} grid")
    r, c = divmod(int(k), w)
    x0, x1 = math.ceil(c * W / w), math.ceil((c + 1) * W / w)
    y0, y1 = math.ceil(r * H / h), math.ceil((r + 1) * H / h)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)
