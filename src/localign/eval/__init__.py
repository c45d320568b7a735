"""localign.eval: metrics, phrase grounding, run statistics and feature-level probes.

Every public function documents the exact definition of what it computes (these are the
definitions quoted in the book):

- :mod:`localign.metrics`         retrieval R@K, AUROC, EdemaSeverity ordinal AUCs, Dice, box mAP (re-exported here)
- :mod:`localign.eval.grounding`  patch-text similarity maps on original pixels and their CNR
- :mod:`localign.eval.stats`      mean ± 95 % CI and the tidy results schema
- :mod:`localign.eval.probe`      label fractions by patient and the logistic-regression probe
"""

from localign.data.transforms import ImageGeometry, square_padding
from localign.eval.grounding import (
    aggregate_cnr,
    boxes_to_mask,
    cnr,
    grounding_cnr,
    map_to_original,
    patch_similarity,
    smooth_similarity,
)
from localign.metrics import (
    EDEMA_THRESHOLD_NAMES,
    RSNA_IOU_THRESHOLDS,
    auroc_per_class,
    box_iou,
    box_map,
    chance_recall_at_k,
    dice_dataset,
    dice_per_image,
    edema_ordinal_aucs,
    mean_dice_per_image,
    recall_at_k,
    retrieval_ranks,
)
from localign.eval.probe import LinearProbe, fit_linear_probe, sample_label_fraction
from localign.eval.stats import (
    TIDY_COLUMNS,
    mean_ci95,
    summarize_tidy,
    tidy_from_metrics,
    validate_tidy,
)

__all__ = [
    "EDEMA_THRESHOLD_NAMES",
    "TIDY_COLUMNS",
    "ImageGeometry",
    "LinearProbe",
    "RSNA_IOU_THRESHOLDS",
    "aggregate_cnr",
    "auroc_per_class",
    "box_iou",
    "box_map",
    "boxes_to_mask",
    "chance_recall_at_k",
    "cnr",
    "dice_dataset",
    "dice_per_image",
    "edema_ordinal_aucs",
    "fit_linear_probe",
    "grounding_cnr",
    "map_to_original",
    "mean_ci95",
    "mean_dice_per_image",
    "patch_similarity",
    "recall_at_k",
    "retrieval_ranks",
    "sample_label_fraction",
    "smooth_similarity",
    "square_padding",
    "summarize_tidy",
    "tidy_from_metrics",
    "validate_tidy",
]
