"""Objectives as pure functions over tensors.

Parameters (critics, attention projections, SA modules) live in :mod:`localign.models`; every
function here takes the already-computed tensors, is vectorised over the batch, differentiable and
dtype/device agnostic, and raises ``ValueError`` naming the shapes on mismatched input.

* :mod:`~localign.losses.contrastive` cosine InfoNCE (ConVIRT, CLIP, LoVT global) and shared helpers
* :mod:`~localign.losses.lovt`        LoVT's local losses and spatial positive weights
* :mod:`~localign.losses.mi`          MINE/CPC lower bounds, global and local (Liao et al.) objectives
* :mod:`~localign.losses.attention`   GLoRIA/LIMITR double-softmax and the papers' single-softmax attention
* :mod:`~localign.losses.gloria`      GLoRIA local and global losses
* :mod:`~localign.losses.limitr`      LIMITR global, external and internal losses
"""

from localign.losses.attention import (
    double_softmax_attention,
    double_softmax_weights,
    masked_softmax,
    single_softmax_attention,
)
from localign.losses.contrastive import (
    cosine_logits,
    cosine_similarity_matrix,
    diagonal_cross_entropy,
    info_nce,
    symmetric_cross_entropy,
)
from localign.losses.gloria import gloria_global_loss, gloria_inference_local_scores, gloria_local_loss, gloria_local_scores
from localign.losses.limitr import limitr_external_loss, limitr_global_loss, limitr_internal_loss
from localign.losses.lovt import lovt_local_loss, lovt_positive_weights
from localign.losses.mi import (
    cpc_lower_bound,
    global_mi_objective,
    local_mi_objective,
    mine_lower_bound,
    repo_infonce_loss,
)

__all__ = [
    "cosine_logits",
    "cosine_similarity_matrix",
    "cpc_lower_bound",
    "diagonal_cross_entropy",
    "double_softmax_attention",
    "double_softmax_weights",
    "global_mi_objective",
    "gloria_global_loss",
    "gloria_inference_local_scores",
    "gloria_local_loss",
    "gloria_local_scores",
    "info_nce",
    "limitr_external_loss",
    "limitr_global_loss",
    "limitr_internal_loss",
    "local_mi_objective",
    "lovt_local_loss",
    "lovt_positive_weights",
    "masked_softmax",
    "mine_lower_bound",
    "repo_infonce_loss",
    "single_softmax_attention",
    "symmetric_cross_entropy",
]
