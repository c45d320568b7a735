"""Representation measures of the analyses chapters: spread, alignment, uniformity, sentence→region hits.

Pure functions over arrays or tensors (torch tensors are detached and moved to the CPU; all maths in
float64 numpy). They take plain embeddings, never model outputs:

* global representations ``[N, D]`` (one per sample, e.g. LoVT's ȳ^I),
* local representations ``[N, K, D]`` with a validity mask ``[N, K]`` (regions of an h×w grid in
  row-major order, or padded sentences),
* attended cross-modal representations ``[N, K, D]`` aligned position by position with their local
  counterparts (LoVT's z^{R→I}_{i,k} next to z^I_{i,k}).

**How a standard deviation of a D-dimensional set is summarised** (LoVT's official
``src/metrics/embedding_metrics.py``, whose ``ch_std`` values are Fig. 1 of the supplement): the
per-channel standard deviation is taken over the set for each of the D channels and those D values
are **averaged** (the mean per-channel std, not the norm of the std vector and not a pooled
variance). Every variance has ``ddof=1`` (torch's default, as LoVT). By default each vector is
first L2-normalised over D (LoVT analyses normalised embeddings), so a set spread evenly over the
unit sphere has a per-channel std near 1/√D; ``sqrt_d=True`` multiplies by √D, LoVT's plotting
scale (1 = "fully spread").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from localign.metrics.localization import _array, _bool_array, _finite, region_hits


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _normalize(x: np.ndarray, valid: np.ndarray | None, name: str) -> np.ndarray:
    """L2-normalise over the last axis; a zero vector at a valid position raises."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    zero = norm[..., 0] == 0
    if valid is not None:
        zero &= valid
    if zero.any():
        idx = tuple(int(i) for i in np.argwhere(zero)[0])
        raise ValueError(f"{name}: zero vector at {idx}; it has no direction to normalise")
    return x / np.where(norm == 0, 1.0, norm)


def _global(x: Any, name: str) -> np.ndarray:
    a = _array(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected [N, D], got shape {tuple(a.shape)}")
    _finite(a, name)
    return a


def _local(x: Any, mask: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    a = _array(x, name)
    if a.ndim != 3:
        raise ValueError(f"{name}: expected [N, K, D], got shape {tuple(a.shape)}")
    valid = np.ones(a.shape[:2], bool) if mask is None else _bool_array(mask, "mask")
    if valid.shape != a.shape[:2]:
        raise ValueError(f"mask: expected [N, K] = {tuple(a.shape[:2])}, got shape {tuple(valid.shape)}")
    _finite(np.where(valid[..., None], a, 0.0), name)
    return a, valid


def l2_normalize(x: Any, mask: Any = None) -> np.ndarray:
    """Every vector divided by its L2 norm over the last axis (D).

    :param x: [..., D]; positions where ``mask`` is False may hold anything finite (e.g. zeros).
    :param mask: [...] bool valid positions (None: all); a zero vector at a valid position raises.
    :return: [..., D] float64 (masked positions divided by 1 if zero).
    """
    a = _array(x, "x")
    valid = None if mask is None else _bool_array(mask, "mask")
    if valid is not None and valid.shape != a.shape[:-1]:
        raise ValueError(f"mask: shape {tuple(valid.shape)} differs from x's leading shape {tuple(a.shape[:-1])}")
    return _normalize(a, valid, "x")


# --------------------------------------------------------------------------------------------------
# LoVT supplementary Fig. 1: standard deviations
# --------------------------------------------------------------------------------------------------
def global_std(y: Any, normalize: bool = True, sqrt_d: bool = False) -> float:
    """Std of global representations across samples (LoVT Fig. 1, ``yg ch_std``).

    Definition: mean over channels c of std_i(ŷ_ic) with ddof=1, where ŷ_i = y_i/‖y_i‖ (or y_i
    with ``normalize=False``); times √D with ``sqrt_d``. 0 for a collapsed set (all y_i equal).

    :param y: [N, D], N ≥ 2.
    :return: the mean per-channel std.
    """
    a = _global(y, "y")
    if a.shape[0] < 2:
        raise ValueError(f"y: a std across samples needs N >= 2, got N = {a.shape[0]}")
    if normalize:
        a = _normalize(a, None, "y")
    value = float(a.std(axis=0, ddof=1).mean())
    return value * math.sqrt(a.shape[1]) if sqrt_d else value


def region_std(y: Any, mask: Any = None, normalize: bool = True, sqrt_d: bool = False) -> dict[str, float]:
    """Spread of region representations within and between samples (LoVT Fig. 1, ``yl``).

    Definition, with ŷ_ik the (L2-normalised) region k of sample i and V_i its n_i valid regions:
    per-sample centroid μ_i = mean_{k∈V_i} ŷ_ik [D]; within-sample variance
    v_ic = Σ_{k∈V_i} (ŷ_ikc − μ_ic)² / (n_i − 1) (0 when n_i = 1, as LoVT); variance of the
    centroids c_c = var_i(μ_ic) with ddof=1. Then

    * ``total`` = mean_c sqrt(c_c + mean_i v_ic) (LoVT ``ch_std``: the law of total variance),
    * ``per_sample`` = mean_i mean_c sqrt(v_ic) (``ch_std_per_sample``: how different the regions
      of one image are),
    * ``per_sample_sd`` = std_i (ddof=1) of mean_c sqrt(v_ic) (the error bar of LoVT's bar),
    * ``centroids`` = mean_c sqrt(c_c) (``ch_std_sample_centroids``: how different images are).

    All four are multiplied by √D with ``sqrt_d``. A set whose samples all have the same regions
    has ``centroids`` 0; a set whose regions are constant within each sample has ``per_sample`` 0.

    :param y: [N, K, D], N ≥ 2.
    :param mask: [N, K] bool valid regions (None: all); every sample needs one.
    :return: dict with ``total``, ``per_sample``, ``per_sample_sd``, ``centroids``.
    """
    a, valid = _local(y, mask, "y")
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"y: the std of per-sample centroids needs N >= 2 samples, got N = {n}")
    counts = valid.sum(1)
    if np.any(counts == 0):
        raise ValueError(f"mask: sample {int(np.argmin(counts))} has no valid region")
    if normalize:
        a = _normalize(a, valid, "y")
    w = valid[..., None].astype(np.float64)
    mu = (a * w).sum(1) / counts[:, None]  # [N, D]
    ss = (((a - mu[:, None, :]) ** 2) * w).sum(1)  # [N, D]
    v = np.where(counts[:, None] > 1, ss / np.maximum(counts - 1, 1)[:, None], 0.0)
    c = mu.var(axis=0, ddof=1)  # [D]
    per_sample = np.sqrt(v).mean(1)  # [N]
    out = {
        "total": float(np.sqrt(c + v.mean(0)).mean()),
        "per_sample": float(per_sample.mean()),
        "per_sample_sd": float(per_sample.std(ddof=1)),
        "centroids": float(np.sqrt(c).mean()),
    }
    if sqrt_d:
        out = {k: val * math.sqrt(a.shape[2]) for k, val in out.items()}
    return out


# --------------------------------------------------------------------------------------------------
# LoVT supplementary Fig. 2: alignment distances
# --------------------------------------------------------------------------------------------------
def alignment_distances(z: Any, z_attended: Any, mask: Any = None, normalize: bool = True) -> np.ndarray:
    """L2 distance of every local representation to its attended cross-modal counterpart (LoVT Fig. 2).

    Definition: d_ik = ‖ẑ_ik − ẑ'_ik‖₂ for every valid position, ẑ = z/‖z‖ and ẑ' = z'/‖z'‖ (both
    L2-normalised over D, as the figure; ``normalize=False`` for raw distances). With unit vectors
    d = sqrt(2 − 2·cos) ∈ [0, 2]: 0 for identical directions, √2 for orthogonal ones. Report→image:
    z = image regions z^I [N, K, D], z' = z^{R→I}; image→report: z = sentences z^R [N, M, D] with the
    sentence mask, z' = z^{I→R}.

    :param z: [N, K, D] local representations.
    :param z_attended: [N, K, D] the attended representations at the same positions.
    :param mask: [N, K] bool (None: all valid).
    :return: [n_valid] float64 distances, samples in order and positions within each.
    """
    a, valid = _local(z, mask, "z")
    b = _array(z_attended, "z_attended")
    if b.shape != a.shape:
        raise ValueError(f"z_attended: shape {tuple(b.shape)} differs from z shape {tuple(a.shape)}")
    _finite(np.where(valid[..., None], b, 0.0), "z_attended")
    if normalize:
        a, b = _normalize(a, valid, "z"), _normalize(b, valid, "z_attended")
    return np.linalg.norm(a - b, axis=-1)[valid]


# --------------------------------------------------------------------------------------------------
# Wang & Isola (2020): alignment and uniformity
# --------------------------------------------------------------------------------------------------
def wang_isola_alignment(x: Any, y: Any, alpha: float = 2.0, normalize: bool = True) -> float:
    """Alignment of positive pairs (Wang & Isola 2020, ℓ_align with α = 2).

    Definition: mean_i ‖x̂_i − ŷ_i‖₂^α over the N positive pairs (x_i, y_i), x̂ and ŷ L2-normalised
    (the measure is defined on the unit sphere; ``normalize=False`` uses the vectors as given).
    0 for identical pairs, 4 (α = 2) for antipodal ones; lower is better.

    :param x: [N, D] e.g. image embeddings.
    :param y: [N, D] the paired report embeddings.
    :param alpha: α > 0.
    """
    a, b = _global(x, "x"), _global(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"y: shape {tuple(b.shape)} differs from x shape {tuple(a.shape)}")
    if a.shape[0] == 0:
        raise ValueError("x: no pairs")
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"alpha: expected a number > 0, got {alpha!r}")
    if normalize:
        a, b = _normalize(a, None, "x"), _normalize(b, None, "y")
    return float((np.linalg.norm(a - b, axis=1) ** alpha).mean())


def _uniformity(a: np.ndarray, t: float) -> float:
    sq = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    iu = np.triu_indices(a.shape[0], k=1)
    vals = -t * sq[iu]
    top = vals.max()
    return float(top + np.log(np.mean(np.exp(vals - top))))  # log-mean-exp, stable


def wang_isola_uniformity(x: Any, t: float = 2.0, normalize: bool = True) -> float:
    """Uniformity of a set of embeddings (Wang & Isola 2020, ℓ_uniform with t = 2).

    Definition: log mean_{i<j} exp(−t‖x̂_i − x̂_j‖₂²) over the N(N−1)/2 distinct pairs, x̂
    L2-normalised. 0 for a collapsed set (all x̂_i equal); more negative is more uniform (at best
    about −2t for many points on a high-dimensional sphere, where ‖x̂_i − x̂_j‖² ≈ 2; two antipodal
    points give −4t = −8 at t = 2). LoVT's own variant averages over all N² pairs including i = j and per batch; this one
    follows the paper.

    :param x: [N, D], N ≥ 2.
    :param t: t > 0.
    """
    a = _global(x, "x")
    if a.shape[0] < 2:
        raise ValueError(f"x: uniformity needs N >= 2 points, got N = {a.shape[0]}")
    if not (isinstance(t, (int, float)) and t > 0):
        raise ValueError(f"t: expected a number > 0, got {t!r}")
    if normalize:
        a = _normalize(a, None, "x")
    return _uniformity(a, float(t))


def local_uniformity(z: Any, mask: Any = None, t: float = 2.0, normalize: bool = True) -> np.ndarray:
    """Per-sample uniformity of local representations (regions or sentences within each sample).

    Definition: for sample i, :func:`wang_isola_uniformity` of its valid local vectors; NaN for a
    sample with fewer than two valid positions. LoVT reports the mean over samples (its
    ``per_sample_uniformity``, there including the i = j pairs).

    :param z: [N, K, D].
    :param mask: [N, K] bool (None: all valid).
    :return: [N] float64.
    """
    a, valid = _local(z, mask, "z")
    if not (isinstance(t, (int, float)) and t > 0):
        raise ValueError(f"t: expected a number > 0, got {t!r}")
    if normalize:
        a = _normalize(a, valid, "z")
    return np.array([_uniformity(a[i][valid[i]], float(t)) if valid[i].sum() >= 2 else np.nan for i in range(a.shape[0])])


# --------------------------------------------------------------------------------------------------
# SynthCXR only: does a sentence's nearest region lie inside its ground-truth mask?
# --------------------------------------------------------------------------------------------------
def nearest_regions(sentences: Any, regions: Any, region_mask: Any = None) -> np.ndarray:
    """Index of the region nearest (by cosine similarity) to each sentence of the same sample.

    Definition: k*(i, m) = argmax_{k valid} ⟨ŝ_im, r̂_ik⟩ with ŝ, r̂ L2-normalised; ties go to the
    lowest index. Padded sentences get an index too (ignore them with the sentence mask).

    :param sentences: [N, M, D] sentence representations (zeros allowed at padded positions).
    :param regions: [N, K, D] region representations.
    :param region_mask: [N, K] bool (None: all valid).
    :return: [N, M] int64.
    """
    s = _array(sentences, "sentences")
    r, valid = _local(regions, region_mask, "regions")
    if s.ndim != 3 or s.shape[0] != r.shape[0] or s.shape[2] != r.shape[2]:
        raise ValueError(f"sentences: expected [N, M, D] with N, D = {r.shape[0]}, {r.shape[2]} (regions {tuple(r.shape)}), got {tuple(s.shape)}")
    _finite(s, "sentences")
    if not valid.any(1).all():
        raise ValueError(f"region_mask: sample {int(np.argmin(valid.any(1)))} has no valid region")
    s_norm = np.linalg.norm(s, axis=-1, keepdims=True)
    s_hat = s / np.where(s_norm == 0, 1.0, s_norm)  # a zero (padded) sentence scores 0 everywhere
    r_hat = _normalize(r, valid, "regions")
    cos = np.einsum("imd,ikd->imk", s_hat, r_hat)
    return np.where(valid[:, None, :], cos, -np.inf).argmax(-1)


def sentence_region_hit_rate(
    sentences: Any,
    regions: Any,
    masks: Any,
    grid: tuple[int, int],
    sentence_mask: Any = None,
    region_mask: Any = None,
    threshold: float = 0.5,
    include_best: bool = True,
) -> dict[str, Any]:
    """How often a sentence's nearest region (by cosine) lies inside the sentence's ground-truth mask.

    Definition: :func:`localign.metrics.localization.region_hits` of the
    :func:`nearest_regions` choice: a scored sentence (valid, with a non-empty mask) hits when its
    nearest region's cell is inside the mask (overlap fraction ≥ ``threshold``, or the cell of
    largest overlap; :func:`~localign.metrics.localization.region_inside_mask`). ``chance`` is the
    expected rate of a uniformly random valid region.

    :param sentences: [N, M, D].
    :param regions: [N, K, D] with K = h·w in row-major grid order.
    :param masks: [N, M, H, W] bool ground-truth mask of each sentence (all False: none).
    :param grid: (h, w).
    :param sentence_mask: [N, M] bool (None: all).
    :param region_mask: [N, K] bool (None: all).
    :return: dict ``rate``, ``chance``, ``n_scored``, ``n_hits``, ``hits`` [N, M], ``scored`` [N, M],
        ``selected`` [N, M].
    """
    r = _array(regions, "regions")
    if r.ndim == 3 and r.shape[1] != int(np.prod(grid)):
        raise ValueError(f"regions: K = {r.shape[1]} differs from the grid {tuple(grid)} ({int(np.prod(grid))} cells)")
    selected = nearest_regions(sentences, r, region_mask)
    out = region_hits(selected, masks, grid, sentence_mask, threshold, include_best, region_mask)
    out["selected"] = selected
    return out
