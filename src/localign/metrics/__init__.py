"""Metrics as pure functions over numpy arrays or torch tensors: the bottom of the package, beside
:mod:`localign.losses`, used by validation (:mod:`localign.train.validation`) and evaluation alike.

Every function's docstring opens with the precise definition of what it computes; these paragraphs
are the definitions quoted in the book, so a number produced here can be reproduced by hand.

- :mod:`localign.metrics.retrieval`       ranks, R@K, MRR over an explicit candidate pool
- :mod:`localign.metrics.classification`  per-class/macro AUROC, EdemaSeverity ordinal AUCs
- :mod:`localign.metrics.segmentation`    pooled and per-image Dice
- :mod:`localign.metrics.detection`       box IoU, RSNA box mAP
- :mod:`localign.metrics.rank`            effective rank of features (dimensional collapse)
- :mod:`localign.metrics.arrays`          input conversion and checks shared by all of them
- :mod:`localign.metrics.localization`    pointing game, region hits, weight maps (imported by module)
- :mod:`localign.metrics.representations` representation analyses (imported by module)
"""

from localign.metrics.arrays import as_numpy, require_finite
from localign.metrics.classification import EDEMA_THRESHOLD_NAMES, auroc_per_class, edema_ordinal_aucs
from localign.metrics.detection import RSNA_IOU_THRESHOLDS, box_iou, box_map
from localign.metrics.rank import effective_rank
from localign.metrics.retrieval import chance_recall_at_k, recall_at_k, retrieval_ranks
from localign.metrics.segmentation import dice_dataset, dice_per_image, mean_dice_per_image

__all__ = [
    "EDEMA_THRESHOLD_NAMES", "RSNA_IOU_THRESHOLDS", "as_numpy", "auroc_per_class", "box_iou", "box_map", "chance_recall_at_k",
    "dice_dataset", "dice_per_image", "edema_ordinal_aucs", "effective_rank", "mean_dice_per_image", "recall_at_k",
    "require_finite", "retrieval_ranks",
]
