"""2-D projections for the representation figures: openTSNE, deterministic by seed.

LoVT's t-SNE figures (supplementary Figs. 3 and 4) use sklearn's TSNE with perplexity 30 and PCA
initialisation (spec §2.9); this module uses openTSNE with the same perplexity and initialisation,
one thread and exact (small N) or Annoy (large N, seeded) neighbours, so that the same inputs and
seed give the same points.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

#: below this many points t-SNE is not meaningful (perplexity (N − 1)/3 < 1)
MIN_POINTS = 4


def tsne(
    x: Any,
    perplexity: float = 30.0,
    seed: int = 0,
    n_iter: int = 500,
    metric: str = "euclidean",
    normalize: bool = False,
) -> np.ndarray:
    """openTSNE embedding of a point set in 2-D.

    Definition: ``openTSNE.TSNE(n_components=2, perplexity=p, initialization="pca",
    metric=metric, n_iter=n_iter, random_state=seed, n_jobs=1)`` fitted on the rows of ``x``
    (optionally L2-normalised first). openTSNE needs 3·p < N; for fewer points the perplexity is
    lowered to p = (N − 1)/3 with a warning, as openTSNE would (but through ``warnings`` instead of a
    print). The result depends only on the inputs and ``seed``.

    :param x: [N, D] points, N ≥ 4, finite.
    :param perplexity: p > 0 (LoVT: 30).
    :param seed: random state of the optimisation and the neighbour search.
    :param n_iter: optimisation iterations after the early-exaggeration phase.
    :param metric: neighbour metric (``"euclidean"``, ``"cosine"``, ...).
    :param normalize: L2-normalise each row first.
    :return: [N, 2] float64.
    :raises ValueError: fewer than :data:`MIN_POINTS` points, wrong shape, non-finite values.
    """
    import openTSNE

    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"x: expected [N, D], got shape {tuple(a.shape)}")
    if a.shape[0] < MIN_POINTS:
        raise ValueError(f"x: t-SNE needs at least {MIN_POINTS} points, got {a.shape[0]}")
    if not np.all(np.isfinite(a)):
        raise ValueError("x: contains NaN or inf")
    if not (isinstance(perplexity, (int, float)) and perplexity > 0):
        raise ValueError(f"perplexity: expected a number > 0, got {perplexity!r}")
    if normalize:
        norm = np.linalg.norm(a, axis=1, keepdims=True)
        if np.any(norm == 0):
            raise ValueError("x: a zero row cannot be normalised")
        a = a / norm
    p = float(perplexity)
    if 3 * p >= a.shape[0]:
        p = (a.shape[0] - 1) / 3
        warnings.warn(f"tsne: perplexity {perplexity} too high for {a.shape[0]} points; using {p:.2f}", stacklevel=2)
    model = openTSNE.TSNE(
        n_components=2, perplexity=p, initialization="pca", metric=metric, n_iter=int(n_iter),
        random_state=int(seed), n_jobs=1, neighbors="exact" if a.shape[0] <= 1000 else "annoy",
        negative_gradient_method="bh" if a.shape[0] <= 10000 else "fft", verbose=False,
    )
    return np.asarray(model.fit(a), dtype=np.float64)


def tsne_joint(groups: Mapping[str, Any], **kwargs: Any) -> dict[str, np.ndarray]:
    """One t-SNE of several point sets together (e.g. regions, sentences, R→I, I→R: LoVT Fig. 3).

    Definition: :func:`tsne` of the row-wise concatenation of the groups in the mapping's order,
    split back into the groups, so that all groups share one 2-D map.

    :param groups: name → [N_g, D] (same D for all).
    :return: name → [N_g, 2].
    """
    if not groups:
        raise ValueError("groups: empty")
    arrays = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=np.float64) for k, v in groups.items()}
    dims = {k: a.shape[1] if a.ndim == 2 else None for k, a in arrays.items()}
    if any(d is None for d in dims.values()) or len(set(dims.values())) != 1:
        raise ValueError(f"groups: every group must be [N_g, D] with the same D; got shapes { {k: a.shape for k, a in arrays.items()} }")
    points = tsne(np.concatenate(list(arrays.values())), **kwargs)
    out, start = {}, 0
    for k, a in arrays.items():
        out[k] = points[start:start + a.shape[0]]
        start += a.shape[0]
    return out
