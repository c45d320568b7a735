"""Phrase grounding: patch-text similarity maps on the original image grid, and their CNR.

The pipeline follows BioViL / hi-ml (spec §6.1) and is written so that any method with a patch
grid (LoVT's 7×7, GLoRIA/LIMITR's 19×19, BioViL's 15×15) is scored the same way:

1. :func:`patch_similarity`: cosine similarity of every L2-normalised patch embedding with the
   L2-normalised phrase embedding, [h, w].
2. :func:`smooth_similarity`: Gaussian smoothing with σ = 1.5 patch units, before upsampling.
3. :func:`map_to_original`: undo the image preprocessing described by an :class:`ImageGeometry`,
   giving an [H, W] map on the original pixels, NaN where the network never saw the image.
4. :func:`cnr` against :func:`boxes_to_mask` of the phrase's MS-CXR boxes (spec §6.2).

:func:`grounding_cnr` composes the four steps and :func:`aggregate_cnr` summarises per MS-CXR
category.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import numpy as np
import pandas as pd

from localign.data.transforms import ImageGeometry, check_image_size
from localign.metrics import as_numpy, require_finite

logger = logging.getLogger(__name__)

Interpolation = Literal["bilinear", "nearest"]
# relative noise level below which a map counts as constant in cnr (float64 round-off is ~1e-16)
_CONSTANT_RTOL = 1e-10


# --------------------------------------------------------------------------------------------------
# geometry of the image preprocessing
# --------------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------------
# similarity map
# --------------------------------------------------------------------------------------------------
def patch_similarity(
    patch_embeddings: Any,
    text_embedding: Any,
    grid: tuple[int, int] | None = None,
) -> np.ndarray:
    """Cosine similarity between every patch embedding and one phrase embedding.

    Definition: s_hw = ⟨p_hw/‖p_hw‖, t/‖t‖⟩ for the patch embedding p_hw at grid row h, column w and
    the phrase embedding t, i.e. the dot product after L2 normalisation over the channel axis (hi-ml
    normalises both; spec §6.1 steps 1–3). Values lie in [−1, 1].

    :param patch_embeddings: [h, w, d], or [K, d] with ``grid=(h, w)`` and K = h·w in row-major
        order (patch k at row k // w, column k % w, as ``x.flatten(2).transpose(1, 2)`` of a
        [1, d, h, w] feature map gives).
    :param text_embedding: [d] (or [1, d]).
    :param grid: (h, w), required for [K, d] input.
    :return: [h, w] float64 map.
    """
    p = as_numpy(patch_embeddings, "patch_embeddings")
    t = as_numpy(text_embedding, "text_embedding")
    if t.ndim == 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 1:
        raise ValueError(f"text_embedding: expected shape [d] or [1, d], got {tuple(t.shape)}")
    if p.ndim == 2:
        if grid is None:
            raise ValueError(f"patch_embeddings: [K, d] input of shape {tuple(p.shape)} needs grid=(h, w)")
        gh, gw = (int(g) for g in grid)
        if gh * gw != p.shape[0]:
            raise ValueError(f"grid: {gh}×{gw} = {gh * gw} patches, but patch_embeddings has K={p.shape[0]}")
        p = p.reshape(gh, gw, p.shape[1])
    elif p.ndim == 3:
        if grid is not None and tuple(int(g) for g in grid) != p.shape[:2]:
            raise ValueError(f"grid: {tuple(grid)} differs from the patch_embeddings grid {p.shape[:2]}")
    else:
        raise ValueError(f"patch_embeddings: expected [h, w, d] or [K, d], got shape {tuple(p.shape)}")
    if p.shape[-1] != t.shape[0]:
        raise ValueError(f"text_embedding: dimension {t.shape[0]} differs from patch dimension {p.shape[-1]}")
    require_finite(p, "patch_embeddings")
    require_finite(t, "text_embedding")
    t_norm = np.linalg.norm(t)
    if t_norm == 0:
        raise ValueError("text_embedding: zero vector, cosine similarity undefined")
    p_norm = np.linalg.norm(p, axis=-1)
    if np.any(p_norm == 0):
        r, c = np.argwhere(p_norm == 0)[0]
        raise ValueError(f"patch_embeddings: zero vector at grid position ({r}, {c}), cosine similarity undefined")
    return (p @ (t / t_norm)) / p_norm


def smooth_similarity(similarity_map: Any, sigma: float = 1.5) -> np.ndarray:
    """Gaussian smoothing of a patch-grid similarity map, as hi-ml does before upsampling.

    Definition: ``scipy.ndimage.gaussian_filter(map, sigma, mode="reflect", truncate=4.0)``, an
    isotropic Gaussian with standard deviation σ in patch units (default 1.5, spec §6.1 step 4),
    kernel radius ⌊4σ + 0.5⌋, and borders extended by reflection (d c b a | a b c d). σ = 0 returns
    the map unchanged (as float64).

    :param similarity_map: [h, w] finite map.
    :param sigma: σ ≥ 0 in patch units.
    :return: [h, w] float64.
    """
    from scipy.ndimage import gaussian_filter

    m = as_numpy(similarity_map, "similarity_map")
    if m.ndim != 2:
        raise ValueError(f"similarity_map: expected [h, w], got shape {tuple(m.shape)}")
    require_finite(m, "similarity_map")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma: expected a finite number >= 0, got {sigma!r}")
    if sigma == 0:
        return m.copy()
    return gaussian_filter(m, sigma=float(sigma), mode="reflect", truncate=4.0)


def _interpolate(m: np.ndarray, size: tuple[int, int], interpolation: Interpolation) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float64))[None, None]
    if interpolation == "bilinear":
        y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    else:
        y = F.interpolate(x, size=size, mode="nearest")
    return y[0, 0].numpy()


def map_to_original(
    similarity_map: Any,
    original_size: tuple[int, int],
    geometry: ImageGeometry,
    interpolation: Interpolation = "bilinear",
) -> np.ndarray:
    """A patch-grid map on the original image's pixels, undoing the preprocessing.

    Definition: the [h, w] map, which tiles the network input, is interpolated (torch
    ``F.interpolate``: ``"bilinear"`` with align_corners=False, or ``"nearest"``) to the size of the
    input's footprint on the original image (:meth:`ImageGeometry.visible_window`) and placed there
    on an H×W canvas filled with NaN; whatever falls outside the image (the zero padding) is cut
    away. For ``pad_resize`` without crop (LoVT) the map is resized to max(H, W)² and the padding
    cropped off, so no pixel is NaN. For ``resize_center_crop`` (BioViL) it is resized to c×c with
    c = ⌊crop·min(H, W)/resize⌋ and centre-padded with NaN: left ⌊(W − c)/2⌋, right ⌈(W − c)/2⌉, top
    and bottom likewise (hi-ml, spec §6.1 step 5). For ``pad_resize`` with crop (GLoRIA/LIMITR) the
    crop's footprint c = ⌊crop·max(H, W)/size⌋ on the padded square is used, so the parts of the long
    side that the crop removed are NaN. For ``resize`` the map is resized directly to H×W.

    :param similarity_map: [h, w] finite map (smoothed or not).
    :param original_size: (H, W) of the original image in pixels.
    :param geometry: the preprocessing that produced the network input.
    :param interpolation: ``"bilinear"`` (default, the hi-ml notebook) or ``"nearest"`` (hi-ml API
        default).
    :return: [H, W] float64, NaN where the network did not see the image.
    """
    if not isinstance(geometry, ImageGeometry):
        raise ValueError(f"geometry: expected an ImageGeometry, got {type(geometry).__name__}")
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation: expected 'bilinear' or 'nearest', got {interpolation!r}")
    m = as_numpy(similarity_map, "similarity_map")
    if m.ndim != 2:
        raise ValueError(f"similarity_map: expected [h, w], got shape {tuple(m.shape)}")
    require_finite(m, "similarity_map")
    h, w = check_image_size(original_size)
    top, left, wh, ww = geometry.visible_window((h, w))
    window = _interpolate(m, (wh, ww), interpolation)
    out = np.full((h, w), np.nan, dtype=np.float64)
    # intersection of the window [top, top+wh) × [left, left+ww) with the image [0, h) × [0, w)
    r0, r1 = max(top, 0), min(top + wh, h)
    c0, c1 = max(left, 0), min(left + ww, w)
    if r0 < r1 and c0 < c1:
        out[r0:r1, c0:c1] = window[r0 - top : r1 - top, c0 - left : c1 - left]
    return out


# --------------------------------------------------------------------------------------------------
# CNR
# --------------------------------------------------------------------------------------------------
def boxes_to_mask(boxes: Any, height: int, width: int) -> np.ndarray:
    """Boolean mask of the union of boxes given as [x, y, w, h] in original-image pixels.

    Definition: MS-CXR's convention (spec §6.3): (x, y) is the top-left corner and (w, h) the size,
    in pixels of the original image, x along the width. Pixel (r, c) covers [c, c + 1) × [r, r + 1)
    and belongs to a box when its centre lies in the half-open box, x ≤ c + 0.5 < x + w and
    y ≤ r + 0.5 < y + h; for integer boxes these are exactly columns x … x + w − 1 and rows
    y … y + h − 1. Boxes reaching beyond the image are clipped to it. The mask is the union of all
    boxes of the phrase, which is the region A of :func:`cnr`.

    :param boxes: [B, 4] (or one [4] box) of x, y, w, h with w, h ≥ 0 and B ≥ 1.
    :param height: H of the original image.
    :param width: W of the original image.
    :return: [H, W] bool.
    :raises ValueError: a box with negative size, a box with no pixel inside the image (its
        coordinates are probably wrong, e.g. in another image's frame), or no boxes at all.
    """
    h, w = check_image_size((height, width))
    b = as_numpy(boxes, "boxes")
    if b.ndim == 1 and b.shape[0] == 4:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] == 0:
        raise ValueError(f"boxes: expected [B, 4] boxes (x, y, w, h) with B >= 1, got shape {tuple(b.shape)}")
    require_finite(b, "boxes")
    mask = np.zeros((h, w), dtype=bool)
    for i, (x, y, bw, bh) in enumerate(b):
        if bw < 0 or bh < 0:
            raise ValueError(f"boxes[{i}] = {b[i].tolist()}: negative width or height")
        # first/last pixel whose centre is in [x, x + w): c >= x - 0.5 and c < x + w - 0.5
        c0, c1 = max(math.ceil(x - 0.5), 0), min(math.ceil(x + bw - 0.5), w)
        r0, r1 = max(math.ceil(y - 0.5), 0), min(math.ceil(y + bh - 0.5), h)
        if c0 >= c1 or r0 >= r1:
            raise ValueError(f"boxes[{i}] = {b[i].tolist()} covers no pixel of the {h}×{w} image")
        mask[r0:r1, c0:c1] = True
    return mask


def cnr(similarity_map: Any, region_mask: Any) -> float:
    """Contrast-to-noise ratio of a similarity map between a region and the rest of the image.

    Definition (BioViL, spec §6.2): CNR = |μ_A − μ_Ā| / sqrt(σ²_A + σ²_Ā), where A is the set of
    pixels inside ``region_mask`` and Ā the pixels outside it, μ and σ² are the mean and the
    population variance (ddof = 0) of the map over each set, and pixels whose value is NaN (outside
    the network's field of view, :func:`map_to_original`) are excluded from both sets. For MS-CXR
    the region is the union of all boxes of the phrase (:func:`boxes_to_mask`): one CNR per
    phrase, rather than a per-box average in which each box's "outside" still contains the phrase's
    other boxes. CNR is invariant to affine rescalings a·m + b (a ≠ 0) of the map, so it does not
    depend on the similarity scale or temperature. If both variances are 0 (the map is constant on
    A and on Ā, e.g. an entirely constant map) the ratio is 0/0 or c/0: no finite noise-normalised
    contrast exists, so the result is NaN with a warning, and :func:`aggregate_cnr` counts such
    pairs as undefined instead of averaging them. "Constant" allows floating-point round-off:
    sqrt(σ²_A + σ²_Ā) ≤ 1e-10 · max |m| counts as zero noise.

    :param similarity_map: [H, W] map on the original pixels; NaN marks excluded pixels; ±inf raise.
    :param region_mask: [H, W] bool (or 0/1), True inside the region.
    :return: the CNR (≥ 0), or NaN as described.
    :raises ValueError: shape mismatch, or no valid (non-NaN) pixel inside or outside the region.
    """
    m = as_numpy(similarity_map, "similarity_map")
    mask = as_numpy(region_mask, "region_mask", dtype=None)
    if m.ndim != 2:
        raise ValueError(f"similarity_map: expected [H, W], got shape {tuple(m.shape)}")
    if mask.shape != m.shape:
        raise ValueError(f"region_mask: shape {tuple(mask.shape)} differs from similarity_map shape {tuple(m.shape)}")
    if mask.dtype != np.bool_:
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError("region_mask: expected a boolean or 0/1 mask")
        mask = mask == 1
    if np.any(np.isinf(m)):
        raise ValueError("similarity_map: contains ±inf")
    valid = ~np.isnan(m)
    inside = m[mask & valid]
    outside = m[~mask & valid]
    if inside.size == 0:
        raise ValueError(
            f"cnr: no valid pixel inside the region ({int(mask.sum())} region pixels, all NaN or none); "
            "the boxes may lie outside the network's field of view"
        )
    if outside.size == 0:
        raise ValueError(f"cnr: no valid pixel outside the region ({int((~mask).sum())} outside pixels, all NaN or none)")
    var_in, var_out = float(np.var(inside)), float(np.var(outside))
    denom = math.sqrt(var_in + var_out)
    # np.var of a constant array is round-off (~1e-17 relative), not 0: treat that as zero noise
    scale = max(float(np.max(np.abs(inside))), float(np.max(np.abs(outside))))
    if denom <= _CONSTANT_RTOL * scale or denom == 0.0:
        logger.warning(
            "cnr: the map is constant inside and outside the region (pooled std %.3g); CNR undefined (NaN)", denom
        )
        return float("nan")
    return abs(float(np.mean(inside)) - float(np.mean(outside))) / denom


def grounding_cnr(
    patch_embeddings: Any,
    text_embedding: Any,
    boxes: Any,
    original_size: tuple[int, int],
    geometry: ImageGeometry,
    sigma: float = 1.5,
    grid: tuple[int, int] | None = None,
    interpolation: Interpolation = "bilinear",
) -> tuple[float, np.ndarray]:
    """CNR of one phrase on one image, composing the whole grounding pipeline.

    Definition: :func:`cnr` of the map m = :func:`map_to_original` (
    :func:`smooth_similarity` (:func:`patch_similarity` (patches, phrase), σ), (H, W), geometry)
    against the union of the phrase's boxes, :func:`boxes_to_mask` (boxes, H, W). Smoothing happens on
    the patch grid, before upsampling (hi-ml).

    :param patch_embeddings: [h, w, d] or [K, d] (with ``grid``).
    :param text_embedding: [d].
    :param boxes: [B, 4] MS-CXR boxes (x, y, w, h) in original pixels.
    :param original_size: (H, W) = (image_height, image_width).
    :param geometry: the image preprocessing.
    :param sigma: Gaussian σ in patch units.
    :param grid: (h, w) for [K, d] input.
    :param interpolation: ``"bilinear"`` or ``"nearest"``.
    :return: (cnr, map [H, W]).
    """
    h, w = check_image_size(original_size)
    sim = smooth_similarity(patch_similarity(patch_embeddings, text_embedding, grid), sigma)
    full = map_to_original(sim, (h, w), geometry, interpolation)
    return cnr(full, boxes_to_mask(boxes, h, w)), full


def aggregate_cnr(
    df: pd.DataFrame,
    category_col: str = "category_name",
    value_col: str = "cnr",
) -> pd.DataFrame:
    """Mean, spread and count of per-phrase CNRs per MS-CXR category and overall.

    Definition: for each category and for all phrases together ("overall", a mean over phrases
    as BioViL reports, not a mean of category means): ``mean`` is the mean CNR of the phrases with a
    defined (non-NaN) CNR, ``std`` their sample standard deviation (ddof = 1; NaN for one phrase),
    ``ci95`` the half-width 1.96·std/√count (:func:`localign.eval.stats.mean_ci95`), ``count`` the
    number of defined CNRs and ``n_undefined`` the number of NaN CNRs (constant maps, :func:`cnr`),
    which are reported, not averaged.

    :param df: one row per (image, phrase) pair with columns ``category_col`` and ``value_col``.
    :return: DataFrame indexed by category (sorted) plus a last row "overall", columns
        mean, std, ci95, count, n_undefined.
    """
    from localign.eval.stats import mean_ci95

    for col in (category_col, value_col):
        if col not in df.columns:
            raise ValueError(f"aggregate_cnr: column {col!r} missing; columns are {list(df.columns)}")
    if len(df) == 0:
        raise ValueError("aggregate_cnr: empty DataFrame")
    if df[category_col].isna().any():
        raise ValueError(f"aggregate_cnr: {int(df[category_col].isna().sum())} rows with a missing {category_col!r}")
    values = pd.to_numeric(df[value_col], errors="raise").astype(float)
    if np.isinf(values).any():
        raise ValueError(f"aggregate_cnr: {value_col!r} contains ±inf")
    if (df[category_col] == "overall").any():
        raise ValueError("aggregate_cnr: 'overall' is reserved and cannot be a category name")

    def summary(v: pd.Series) -> dict[str, float]:
        defined = v.dropna().to_numpy()
        if defined.size == 0:
            mean, half, std = float("nan"), float("nan"), float("nan")
        else:
            mean, half = mean_ci95(defined)
            std = float(np.std(defined, ddof=1)) if defined.size > 1 else float("nan")
        return {"mean": mean, "std": std, "ci95": half, "count": int(defined.size), "n_undefined": int(v.isna().sum())}

    rows = {cat: summary(values[df[category_col] == cat]) for cat in sorted(df[category_col].unique())}
    rows["overall"] = summary(values)
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = category_col
    return out
