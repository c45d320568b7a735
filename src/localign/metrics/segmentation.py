"""Segmentation metrics: LoVT's pooled Dice (spec §2.8) and the per-image Dice beside it."""

from __future__ import annotations

from typing import Any

import numpy as np

from localign.metrics.arrays import as_numpy, require_finite


def _binarise_masks(pred: Any, target: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean [N, H*W] prediction and target from [N, H, W] or [N, 1, H, W] inputs."""
    p = as_numpy(pred, "pred", dtype=None)
    t = as_numpy(target, "target", dtype=None)
    for name, a in (("pred", p), ("target", t)):
        if a.ndim == 4 and a.shape[1] != 1:
            raise ValueError(
                f"{name}: shape {tuple(a.shape)} has {a.shape[1]} channels; expected [N, H, W] or [N, 1, H, W] "
                "(call once per class for multi-class masks)"
            )
        if a.ndim not in (3, 4):
            raise ValueError(f"{name}: expected [N, H, W] or [N, 1, H, W], got shape {tuple(a.shape)}")
    p = p.reshape(p.shape[0], -1) if p.ndim == 3 else p[:, 0].reshape(p.shape[0], -1)
    t = t.reshape(t.shape[0], -1) if t.ndim == 3 else t[:, 0].reshape(t.shape[0], -1)
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in shape after removing the channel axis: {p.shape} vs {t.shape}")
    if p.dtype != np.bool_:
        p = p.astype(np.float64)
        require_finite(p, "pred")
        if p.min(initial=0.0) < 0.0 or p.max(initial=0.0) > 1.0:
            raise ValueError(
                f"pred: probabilities must lie in [0, 1], got range {p.min():.4g}..{p.max():.4g} "
                "(apply a sigmoid to logits first)"
            )
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold: expected a value in [0, 1], got {threshold}")
        p = p >= threshold
    if t.dtype != np.bool_:
        t = t.astype(np.float64)
        if not np.all((t == 0) | (t == 1)):
            raise ValueError(f"target: expected a boolean or 0/1 mask, found values {np.unique(t)[:5].tolist()}")
        t = t == 1
    return p, t


def dice_dataset(pred: Any, target: Any, threshold: float = 0.5) -> float:
    """LoVT's dataset-level Dice: one Dice over all test pixels pooled (micro F1).

    Definition: after binarising the prediction (a probability counts as positive when
    ``p ≥ threshold``; boolean masks are used as they are), TP, FP and FN are summed over every pixel
    of every image, and Dice = 2·TP / (2·TP + FP + FN). This is torchmetrics ``F1(average='micro')`` at
    threshold 0.5, which LoVT reports for all segmentation tasks (spec §2.8). Large objects therefore
    weigh more than small ones, and images without any foreground add only false positives. If no
    pixel of any image is positive in either prediction or target, the score is 1.0 (perfect
    agreement; the same convention as :func:`dice_per_image`).

    :param pred: [N, H, W] or [N, 1, H, W] probabilities in [0, 1] or booleans.
    :param target: same shape, boolean or 0/1.
    :param threshold: probability threshold (ignored for boolean ``pred``).
    :return: Dice in [0, 1].
    """
    p, t = _binarise_masks(pred, target, threshold)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom


def dice_per_image(pred: Any, target: Any, threshold: float = 0.5) -> np.ndarray:
    """Dice of every image separately.

    Definition: for image n, after binarising as in :func:`dice_dataset`,
    Dice_n = 2·TP_n / (2·TP_n + FP_n + FN_n) over its pixels; when prediction and target are both
    empty (the denominator is 0) Dice_n = 1.0, because an empty prediction for an image without a
    finding is correct (the convention of e.g. MONAI's ``ignore_empty=False`` and of the SIIM
    challenge). An empty prediction for a non-empty target scores 0, as does any prediction for an
    empty target.

    :param pred: [N, H, W] or [N, 1, H, W] probabilities in [0, 1] or booleans.
    :param target: same shape, boolean or 0/1.
    :param threshold: probability threshold (ignored for boolean ``pred``).
    :return: [N] Dice values in [0, 1].
    """
    p, t = _binarise_masks(pred, target, threshold)
    tp = np.count_nonzero(p & t, axis=1)
    fp = np.count_nonzero(p & ~t, axis=1)
    fn = np.count_nonzero(~p & t, axis=1)
    denom = 2 * tp + fp + fn
    out = np.ones(p.shape[0], dtype=np.float64)
    nonempty = denom > 0
    out[nonempty] = 2.0 * tp[nonempty] / denom[nonempty]
    return out


def mean_dice_per_image(pred: Any, target: Any, threshold: float = 0.5) -> float:
    """Mean over images of :func:`dice_per_image` (every image weighs equally; empty/empty = 1.0).

    :param pred: [N, H, W] or [N, 1, H, W] probabilities in [0, 1] or booleans.
    :param target: same shape, boolean or 0/1.
    :return: the mean Dice in [0, 1].
    """
    return float(np.mean(dice_per_image(pred, target, threshold)))
