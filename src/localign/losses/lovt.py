"""LoVT's local losses (Müller et al., ECCV 2022; spec §2.4.2–2.4.4, §2.6.1).

Both local losses of LoVT are intra-sample contrastive losses between a modality's local
embeddings ``z`` (regions or sentences) and the cross-modal attended embeddings ``z'`` from the
alignment model, computed position by position:

* local image loss: ``z = z^I`` (49 regions), ``z' = z^{R→I}``, soft spatial positives
  (:func:`lovt_positive_weights`), uniform or attention-pool weights;
* local report loss: ``z = z^R`` (sentences), ``z' = z^{I→R}``, only the sentence itself is
  positive (``positive_weights=None``), padded sentences masked.

The global loss is :func:`localign.losses.contrastive.info_nce` with ``weight_a2b=0.75``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from localign.losses.contrastive import check_bool_mask, check_positive, check_rank, cosine_similarity_matrix


def lovt_positive_weights(
    grid: tuple[int, int], threshold: float = 0.5, smooth: bool = True, lam: float = 1.0
) -> Tensor:
    """LoVT's spatial positiveness of region pairs on an ``H × W`` grid (unnormalised).

    Region ``k = h·W + w`` (row-major, as LoVT flattens the feature map). With the relative
    distance ``d_kl = ‖(h_k, w_k) − (h_l, w_l)‖₂ / sqrt(H² + W²)`` (LoVT normalises by the grid
    diagonal ``sqrt(H² + W²)``, *not* by the largest distance ``sqrt((H−1)² + (W−1)²)``):

        π̃_kl = 1[d_kl ≤ threshold] · exp(−lam · d_kl)   if smooth
        π̃_kl = 1[d_kl ≤ threshold]                      otherwise.

    The rows are **not** normalised here: :func:`lovt_local_loss` normalises each row after
    masking invalid columns, as LoVT does. Computed exactly in float64 (the threshold test on
    integer squared distances) and returned in the default float dtype; LoVT's buffer comes from a
    float32 ``torch.cdist`` whose matmul path gives 0.99976 on the diagonal (spec §2.6.1), an
    artefact we do not reproduce.

    On the 7×7 grid with the defaults the centre region has all 49 regions as positives with
    weights in [e^{-0.43}, 1] = [0.651, 1], and a corner region has 22 positives.

    :param grid: (H, W), positive ints
    :param threshold: relative distance radius (LoVT image loss: 0.5); ``0`` gives the identity
    :param smooth: weight the positives by ``exp(−lam · d)`` (LoVT) or equally (ablation ``no_spatial``)
    :param lam: decay rate of the smooth weights, >= 0
    :return: [K, K] with K = H·W, entries in [0, 1], symmetric, diagonal 1
    """
    if len(grid) != 2 or not all(isinstance(n, int) and n > 0 for n in grid):
        raise ValueError(f"grid must be (H, W) with positive ints, got {grid!r}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    height, width = grid
    rows = torch.arange(height, dtype=torch.int64).repeat_interleave(width)
    cols = torch.arange(width, dtype=torch.int64).repeat(height)
    squared_cells = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    squared_diagonal = height**2 + width**2
    positive = squared_cells.to(torch.float64) <= threshold**2 * squared_diagonal
    if smooth:
        distance = squared_cells.to(torch.float64).sqrt() / math.sqrt(squared_diagonal)
        weights = positive * torch.exp(-lam * distance)
    else:
        weights = positive.to(torch.float64)
    return weights.to(torch.get_default_dtype())


def lovt_local_loss(
    z: Tensor,
    z_att: Tensor,
    positive_weights: Tensor | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    temperature: float | Tensor = 0.3,
) -> tuple[Tensor, Tensor]:
    """LoVT's intra-sample local contrastive loss, both directions.

    With ``s_kl = cos(z_k, z'_l) / τ`` computed within each sample only (no cross-sample or
    same-modality negatives, LoVT's config):

        ℓ^{z→z'}_k = Σ_l π_kl (−log softmax_l s_kl)     anchor z_k,  candidates z'_l
        ℓ^{z'→z}_k = Σ_l π_kl (−log softmax_l s_lk)     anchor z'_k, candidates z_l

    where ``π`` is ``positive_weights`` with invalid columns zeroed and each row renormalised to
    sum 1 (the identity when ``positive_weights`` is None: only the position itself is positive,
    LoVT's report loss). Each direction is ``(1/B) Σ_b Σ_k ŵ_bk ℓ_bk`` with ``ŵ`` the
    per-position weights masked and renormalised over the valid positions.

    Masking: invalid positions are excluded as candidates (−∞ logits) and as anchors (weight 0);
    their values never enter the result or its gradient (they are replaced by zeros before use,
    so even non-finite padding is harmless). A sample with a single valid position contributes
    exactly 0 with the identity positives; a sample with no valid position contributes 0 (LoVT's
    code would give NaN; its data pipeline skips reports without sentences).
    A valid anchor whose positive row is all zero after masking gets ``ℓ = logsumexp`` (LoVT's
    formula ``−Σ π s + logsumexp s``); it cannot happen with :func:`lovt_positive_weights`,
    whose diagonal is 1.

    :param z: [B, N, D] local embeddings (regions or sentences) of one modality
    :param z_att: [B, N, D] the attended cross-modal embeddings at the same positions
    :param positive_weights: [N, N] or [B, N, N] unnormalised positiveness (anchor row, candidate
        column), e.g. :func:`lovt_positive_weights`; None = identity
    :param mask: [B, N] bool, True = valid position; None = all valid
    :param weights: [B, N] non-negative per-position weights (LoVT: attention-pool weights); used
        detached (LoVT's ``l_weights_stop_grad``); None = uniform over the valid positions
    :param temperature: τ > 0 (LoVT: 0.3)
    :return: (loss_z2att, loss_att2z), two scalars (LoVT's ``l2att`` and ``att2l``)
    """
    check_rank("z", z, 3, "[B, N, D]")
    if z_att.shape != z.shape:
        raise ValueError(
            f"z and z_att must have the same shape [B, N, D], got {tuple(z.shape)} and {tuple(z_att.shape)}"
        )
    check_positive("temperature", temperature)
    batch, num_positions, _ = z.shape
    if mask is None:
        mask = torch.ones(batch, num_positions, dtype=torch.bool, device=z.device)
    else:
        check_bool_mask("mask", mask, (batch, num_positions))
    if positive_weights is not None and positive_weights.shape not in (
        (num_positions, num_positions),
        (batch, num_positions, num_positions),
    ):
        raise ValueError(
            f"positive_weights must be [N, N] or [B, N, N] with B={batch}, N={num_positions}, "
            f"got {tuple(positive_weights.shape)}"
        )
    if weights is not None and weights.shape != (batch, num_positions):
        raise ValueError(f"weights must have shape {(batch, num_positions)}, got {tuple(weights.shape)}")

    valid = mask[..., None]
    z = torch.where(valid, z, torch.zeros((), dtype=z.dtype, device=z.device))
    z_att = torch.where(valid, z_att, torch.zeros((), dtype=z_att.dtype, device=z_att.device))

    # A sample without any valid position would make every logsumexp −∞; give it all columns
    # (finite values, zero anchor weight) so it contributes exactly 0 without NaNs.
    candidate = mask | ~mask.any(dim=1, keepdim=True)

    if weights is None:
        anchor_weights = mask.to(z.dtype)
    else:
        no_weight = torch.zeros((), dtype=z.dtype, device=z.device)
        anchor_weights = torch.where(mask, weights.detach().to(z.dtype), no_weight)
    anchor_weights = anchor_weights / anchor_weights.sum(dim=1, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)

    scores = cosine_similarity_matrix(z, z_att) / temperature  # [B, N(anchor z), N(candidate z')]
    if positive_weights is None:
        positives = None
    else:
        positives = positive_weights.to(dtype=z.dtype, device=z.device).expand(batch, num_positions, num_positions)
        positives = positives * mask[:, None, :]
        positives = positives / positives.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)

    def direction(logits: Tensor) -> Tensor:
        masked = logits.masked_fill(~candidate[:, None, :], float("-inf"))
        if positives is None:
            positive_score = logits.diagonal(dim1=-2, dim2=-1)
        else:
            positive_score = (positives * logits).sum(dim=-1)
        per_anchor = torch.logsumexp(masked, dim=-1) - positive_score  # [B, N]
        per_anchor = torch.where(mask, per_anchor, torch.zeros((), dtype=per_anchor.dtype, device=per_anchor.device))
        return (anchor_weights * per_anchor).sum(dim=1).mean()

    return direction(scores), direction(scores.transpose(-1, -2))
