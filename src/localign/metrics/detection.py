"""Detection metrics: box IoU and LoVT's RSNA mAP over IoU 0.4:0.05:0.75 (spec §2.8)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from localign.metrics.arrays import as_numpy, require_finite


# LoVT's RSNA thresholds (BBoxMeanAPMetric) and bes-dev's 101 recall points, as literally written
# there: np.arange(0, 1.01, 0.01) carries float round-off (e.g. 0.07 is 0.07000000000000001), and
# keeping the same array keeps the same "recall >= t" decisions.
RSNA_IOU_THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
RECALL_POINTS_101 = np.arange(0.0, 1.01, 0.01)


def _boxes_xywh(boxes: Any, name: str) -> np.ndarray:
    b = as_numpy(boxes, name)
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name}: expected [B, 4] boxes (x, y, w, h), got shape {tuple(b.shape)}")
    require_finite(b, name)
    if np.any(b[:, 2:] < 0):
        raise ValueError(f"{name}: negative box width or height in {b[np.any(b[:, 2:] < 0, axis=1)][0].tolist()}")
    return b


def box_iou(boxes_a: Any, boxes_b: Any, plus_one: bool = True) -> np.ndarray:
    """IoU of every box in ``boxes_a`` with every box in ``boxes_b`` ([x, y, w, h] boxes).

    Definition: with corners x1 = x, x2 = x + w (and likewise y), IoU = |A ∩ B| / (|A| + |B| − |A ∩ B|).
    With ``plus_one=True`` (the PASCAL-VOC pixel convention of the ``mean_average_precision``
    package that LoVT uses) side lengths are x2 − x1 + 1, i.e. a box covers w + 1 pixels and
    intersections max(0, min(x2) − max(x1) + 1); with ``plus_one=False`` they are continuous
    lengths w and max(0, min(x2) − max(x1)).

    :param boxes_a: [A, 4]. :param boxes_b: [B, 4]. :return: [A, B].
    """
    a = _boxes_xywh(boxes_a, "boxes_a")
    b = _boxes_xywh(boxes_b, "boxes_b")
    one = 1.0 if plus_one else 0.0
    ax1, ay1, ax2, ay2 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1) + one, 0.0)
    ih = np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1) + one, 0.0)
    inter = iw * ih
    area_a = (a[:, 2:3] + one) * (a[:, 3:4] + one)
    area_b = (b[:, 2] + one) * (b[:, 3] + one)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def box_map(
    pred_boxes: Sequence[Any],
    pred_scores: Sequence[Any],
    gt_boxes: Sequence[Any],
    iou_thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
    plus_one: bool = True,
) -> dict[str, float]:
    """Single-class box mAP averaged over IoU thresholds: LoVT's RSNA pneumonia metric (spec §2.8).

    Definition (``mean_average_precision.MeanAveragePrecision2d`` with ``mpolicy="soft"`` and 101
    recall points, as LoVT's ``BBoxMeanAPMetric``): all predictions of all images are sorted by
    descending score (a stable sort, so ties keep image order then prediction order). Each
    prediction, in turn, visits the ground-truth boxes of its own image in order of decreasing IoU
    (:func:`box_iou`): the first box with IoU > t (strictly) that no earlier prediction has matched
    makes it a true positive and is marked matched; a box with IoU > t that is already matched is
    skipped ("soft", COCO-like, whereas "greedy" would stop there); reaching a box with IoU ≤ t, or
    an image without ground truth, makes it a false positive. Cumulative precision TP/(TP + FP)
    and recall TP/G (G = number of ground-truth boxes) give AP_t = (1/101) Σ_{r ∈ {0, 0.01, …, 1}}
    max{precision_i : recall_i ≥ r} (0 where no recall reaches r). The result ``mAP`` is the mean of
    AP_t over ``iou_thresholds`` (0.4, 0.45, …, 0.75), reported as a fraction in [0, 1] (LoVT's
    tables show percent).

    :param pred_boxes: per image, [P_i, 4] predicted boxes (x, y, w, h) (empty allowed).
    :param pred_scores: per image, [P_i] confidences.
    :param gt_boxes: per image, [G_i, 4] ground-truth boxes (x, y, w, h) (empty for negatives).
    :param iou_thresholds: the IoU thresholds t.
    :param plus_one: the +1 pixel convention of :func:`box_iou` (True as in LoVT).
    :return: ``{"mAP": ..., "AP@0.4": ..., ...}`` (one AP per threshold, keyed by ``f"AP@{t:g}"``),
        plus ``n_images``, ``n_gt``, ``n_pred``.
    :raises ValueError: mismatched lengths, or no ground-truth box at all (AP undefined).
    """
    if not (len(pred_boxes) == len(pred_scores) == len(gt_boxes)):
        raise ValueError(
            f"box_map: {len(pred_boxes)} pred_boxes, {len(pred_scores)} pred_scores and {len(gt_boxes)} gt_boxes "
            "entries; expected one per image"
        )
    thresholds = tuple(float(t) for t in iou_thresholds)
    if not thresholds or any(not 0.0 <= t < 1.0 for t in thresholds):
        raise ValueError(f"iou_thresholds: expected values in [0, 1), got {iou_thresholds!r}")
    # one row per prediction: image index, score, IoUs with the image's ground truth
    records: list[tuple[int, float, np.ndarray]] = []
    n_gt = 0
    for i, (pb, ps, gb) in enumerate(zip(pred_boxes, pred_scores, gt_boxes)):
        p = _boxes_xywh(pb, f"pred_boxes[{i}]")
        s = as_numpy(ps, f"pred_scores[{i}]").reshape(-1)
        g = _boxes_xywh(gb, f"gt_boxes[{i}]")
        if s.shape[0] != p.shape[0]:
            raise ValueError(f"pred_scores[{i}]: {s.shape[0]} scores for {p.shape[0]} boxes")
        require_finite(s, f"pred_scores[{i}]")
        n_gt += g.shape[0]
        ious = box_iou(p, g, plus_one) if g.shape[0] else np.zeros((p.shape[0], 0))
        records.extend((i, float(s[j]), ious[j]) for j in range(p.shape[0]))
    if n_gt == 0:
        raise ValueError("box_map: no ground-truth box in any image; average precision is undefined")
    order = np.argsort(-np.array([r[1] for r in records]), kind="stable")

    aps: dict[str, float] = {}
    for t in thresholds:
        matched: dict[int, set[int]] = {}
        tp = np.zeros(len(order))
        for rank, k in enumerate(order):
            img, _, ious = records[k]
            taken = matched.setdefault(img, set())
            for g in np.argsort(-ious, kind="stable"):
                if ious[g] <= t:
                    break
                if g not in taken:
                    taken.add(int(g))
                    tp[rank] = 1.0
                    break
        cum_tp = np.cumsum(tp)
        cum_fp = np.cumsum(1.0 - tp)
        recall = cum_tp / n_gt
        precision = cum_tp / np.maximum(cum_tp + cum_fp, np.finfo(np.float64).eps)
        ap = 0.0
        for r in RECALL_POINTS_101:
            reached = recall >= r
            ap += float(precision[reached].max()) if reached.any() else 0.0
        aps[f"AP@{t:g}"] = ap / RECALL_POINTS_101.size
    return {
        "mAP": float(np.mean(list(aps.values()))),
        **aps,
        "n_images": len(gt_boxes),
        "n_gt": n_gt,
        "n_pred": len(records),
    }
