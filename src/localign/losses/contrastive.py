"""Cross-sample contrastive objectives: cosine InfoNCE and the helpers the other losses share.

Conventions used throughout :mod:`localign.losses`:

* A score or logit matrix ``[B_a, B_b]`` has the anchors of the first argument as rows and the
  candidates of the second as columns; the positive of row ``i`` is column ``i``.
* "CE" is the mean cross-entropy over the rows with the diagonal as target (what
  ``nn.CrossEntropyLoss()(logits, arange(B))`` computes in every official repository).
* Cosine similarities divide by the clamped product of norms, ``a·b / max(|a||b|, eps)`` with
  ``eps = 1e-8``. This is GLoRIA's and LIMITR's formula; for non-degenerate vectors it equals
  LoVT's ``F.normalize`` version to float precision.
"""

from __future__ import annotations

import torch
from torch import Tensor

COSINE_EPS = 1e-8


def check_positive(name: str, value: float | Tensor) -> None:
    """Raise ``ValueError`` unless a temperature/scale ``value`` is a positive number.

    A tensor (e.g. a learnable temperature) must hold a single value; reading it synchronises
    with the device once per call, which is negligible next to the losses themselves.
    """
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        if not bool(value.detach() > 0):
            raise ValueError(f"{name} must be > 0, got {value.item()}")
    elif not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_rank(name: str, tensor: Tensor, rank: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``tensor`` has ``rank`` dimensions (``layout`` names them)."""
    if tensor.dim() != rank:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(tensor.shape)}")


def check_bool_mask(name: str, mask: Tensor, shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``mask`` is a bool tensor of exactly ``shape``."""
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")


def cosine_similarity_matrix(a: Tensor, b: Tensor, eps: float = COSINE_EPS) -> Tensor:
    """All pairwise cosine similarities between the rows of ``a`` and ``b``.

    :param a: [..., N_a, D]
    :param b: [..., N_b, D] (leading dimensions broadcast with ``a``'s)
    :param eps: lower clamp of the product of norms (zero vectors give similarity 0, not NaN)
    :return: [..., N_a, N_b] with entry (k, l) = cos(a_k, b_l)
    """
    if a.dim() < 2 or b.dim() < 2 or a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"expected a [..., N_a, D] and b [..., N_b, D] with the same D, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    dots = a @ b.transpose(-1, -2)
    norms = a.norm(dim=-1).unsqueeze(-1) * b.norm(dim=-1).unsqueeze(-2)
    return dots / norms.clamp_min(eps)


def cosine_logits(a: Tensor, b: Tensor, temperature: float | Tensor) -> Tensor:
    """InfoNCE logits ``cos(a_i, b_j) / temperature``.

    :param a: [B_a, D] anchors (rows)
    :param b: [B_b, D] candidates (columns)
    :param temperature: τ > 0
    :return: [B_a, B_b]
    """
    check_rank("a", a, 2, "[B, D]")
    check_rank("b", b, 2, "[B, D]")
    check_positive("temperature", temperature)
    return cosine_similarity_matrix(a, b) / temperature


def diagonal_cross_entropy(logits: Tensor) -> Tensor:
    """Mean cross-entropy of each row against its diagonal entry.

    :param logits: [B, B] (rows = anchors, columns = candidates, positive of row i = column i)
    :return: [] the mean over rows of ``-log softmax(logits[i])[i]``
    """
    check_rank("logits", logits, 2, "[B, B]")
    if logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be square [B, B], got shape {tuple(logits.shape)}")
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


def symmetric_cross_entropy(logits: Tensor) -> Tensor:
    """``CE(logits) + CE(logitsᵀ)``: the GLoRIA/LIMITR form (a sum of the two means, not their mean).

    :param logits: [B, B]
    :return: []
    """
    return diagonal_cross_entropy(logits) + diagonal_cross_entropy(logits.transpose(0, 1))


def info_nce(a: Tensor, b: Tensor, temperature: float | Tensor, weight_a2b: float = 0.5) -> Tensor:
    """Cosine InfoNCE between the paired rows of ``a`` and ``b`` (ConVIRT, CLIP, LoVT global).

    With ``s_ij = cos(a_i, b_j) / τ``:

    * ``L_a2b`` = CE over rows: anchor ``a_i``, candidates all ``b_j``, positive ``j = i``;
    * ``L_b2a`` = CE over columns: anchor ``b_j``, candidates all ``a_i``.

    Returns ``weight_a2b · L_a2b + (1 − weight_a2b) · L_b2a``. ConVIRT and LoVT use 0.75 with
    ``a`` = images (image→report anchors weigh 0.75); CLIP uses 0.5. Only cross-modal candidates
    enter the denominators (LoVT's ``negatives_from_same_modality: false``).

    :param a: [B, D] e.g. global image embeddings
    :param b: [B, D] e.g. global report embeddings, row i paired with ``a[i]``
    :param temperature: τ > 0 (LoVT 0.1, ConVIRT 0.1, CLIP learnable)
    :param weight_a2b: weight of the a→b direction, in [0, 1]
    :return: [] the loss (to be minimised)
    """
    check_rank("a", a, 2, "[B, D]")
    check_rank("b", b, 2, "[B, D]")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape [B, D], got {tuple(a.shape)} and {tuple(b.shape)}")
    if not 0.0 <= weight_a2b <= 1.0:
        raise ValueError(f"weight_a2b must lie in [0, 1], got {weight_a2b!r}")
    logits = cosine_logits(a, b, temperature)
    loss_a2b = diagonal_cross_entropy(logits)
    loss_b2a = diagonal_cross_entropy(logits.transpose(0, 1))
    return weight_a2b * loss_a2b + (1.0 - weight_a2b) * loss_b2a
