"""Representation rank: the dimensional-collapse diagnostic read during validation and after training."""

from __future__ import annotations

from typing import Any

import numpy as np


def effective_rank(features: Any, variance: float = 0.99) -> int:
    """Principal components that hold ``variance`` of the variance of standardised features.

    The dimensional-collapse diagnostic of contrastive learning (Jing et al., ICLR 2022): each
    feature is standardised over the samples (constant features, e.g. dead ReLU channels, count as
    0), then the smallest number of principal components whose eigenvalues sum to at least
    ``variance`` of the total is returned. A random ResNet's pooled features give hundreds; a
    collapsed representation, a handful.

    :param features: ``[N, D]``
    :return: an integer in ``[0, min(N - 1, D)]`` (0 when every feature is constant)
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    if x.shape[0] < 2:
        raise ValueError(f"effective rank needs at least 2 samples, got {x.shape[0]}")
    x = x - x.mean(axis=0)
    std = x.std(axis=0)
    live = std > 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0)))
    if not live.any():
        return 0
    z = x[:, live] / std[live]
    eig = np.linalg.svd(z, compute_uv=False) ** 2
    total = eig.sum()
    cum = np.cumsum(eig) / total
    return int(np.searchsorted(cum, variance - 1e-12) + 1)
