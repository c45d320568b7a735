"""LIMITR's losses (Dawidowicz et al., ICCV 2023; spec §3.2–3.3), as in the official code.

* Global: ``CE(G/τ) + CE(Gᵀ/τ)`` on the cosine matrix of global embeddings (τ = 0.1).
* Local external (cross-sample): the two learned score matrices ``S^cap`` (caption direction) and
  ``S^img`` (image direction) are sigmoids in (0, 1); ``L_ext = ½[CE(10·S^cap) + CE(10·S^img)]
  + ½[CE(10·S^capᵀ) + CE(10·S^imgᵀ)]``. The score matrices come from the model (double-softmax
  attention, the shared SA aggregation and the two Linear(D→1) heads live there).
* Local internal (within-sample, MGCA-like): see :func:`limitr_internal_loss`.

The released config trains ext + global only (``local_int_loss_weight: 0``); the internal loss
is a paper ablation (spec §3.3, checklist 5).
"""

from __future__ import annotations

import torch
from torch import Tensor

from localign.losses.contrastive import (
    check_bool_mask,
    check_positive,
    check_rank,
    cosine_similarity_matrix,
    symmetric_cross_entropy,
)


def limitr_global_loss(img: Tensor, txt: Tensor, temperature: float = 0.1) -> Tensor:
    """LIMITR's (and GLoRIA's) global loss ``CE(cos/τ) + CE(cosᵀ/τ)`` with images as rows.

    :param img: [B, D] global image embeddings
    :param txt: [B, D] global report embeddings, row i paired with ``img[i]``
    :param temperature: τ > 0 (LIMITR: 0.1, the code's temp3 = 10)
    :return: [] the loss (a sum of the two directions' means)
    """
    check_rank("img", img, 2, "[B, D]")
    check_rank("txt", txt, 2, "[B, D]")
    if img.shape != txt.shape:
        raise ValueError(f"img and txt must have the same shape [B, D], got {tuple(img.shape)} and {tuple(txt.shape)}")
    check_positive("temperature", temperature)
    return symmetric_cross_entropy(cosine_similarity_matrix(img, txt) / temperature)


def limitr_external_loss(s_cap: Tensor, s_img: Tensor, scale: float = 10.0) -> Tensor:
    """LIMITR's local external loss on the two sigmoid score matrices.

        L_ext = ½[CE(scale·S_cap) + CE(scale·S_img)] + ½[CE(scale·S_capᵀ) + CE(scale·S_imgᵀ)]

    The logits are bounded in (0, scale) because the scores are sigmoids; the values are not
    checked here (the function is correct for any real scores).

    :param s_cap: [B, B] caption-direction scores, rows = images, columns = captions
    :param s_img: [B, B] image-direction scores, same layout
    :param scale: logit scale (the code's temp3 = 10)
    :return: [] the loss
    """
    check_rank("s_cap", s_cap, 2, "[B, B]")
    if s_cap.shape[0] != s_cap.shape[1] or s_img.shape != s_cap.shape:
        raise ValueError(
            f"s_cap and s_img must be square [B, B] of the same shape, "
            f"got {tuple(s_cap.shape)} and {tuple(s_img.shape)}"
        )
    check_positive("scale", scale)
    return 0.5 * (symmetric_cross_entropy(scale * s_cap) + symmetric_cross_entropy(scale * s_img))


def _weighted_bidirectional_ce(logits: Tensor, weights: Tensor, candidate: Tensor | None) -> Tensor:
    """``½[Σ_t π_t CE_row_t + Σ_t π_t CE_col_t]`` per sample, the diagonal as target.

    :param logits: [B, N, N] within-sample matrix
    :param weights: [B, N] anchor weights π
    :param candidate: [B, N] bool or None; False positions are excluded as candidates
    :return: [B]
    """
    positive = logits.diagonal(dim1=-2, dim2=-1)
    rows, cols = logits, logits.transpose(-1, -2)
    if candidate is not None:
        # A sample without any valid position keeps all columns (finite; its weights are zero).
        candidate = candidate | ~candidate.any(dim=1, keepdim=True)
        rows = rows.masked_fill(~candidate[:, None, :], float("-inf"))
        cols = cols.masked_fill(~candidate[:, None, :], float("-inf"))
    row_ce = torch.logsumexp(rows, dim=-1) - positive
    col_ce = torch.logsumexp(cols, dim=-1) - positive
    return 0.5 * ((weights * row_ce).sum(dim=1) + (weights * col_ce).sum(dim=1))


def limitr_internal_loss(
    words: Tensor,
    context_words: Tensor,
    word_weights: Tensor,
    regions: Tensor,
    context_regions: Tensor,
    region_weights: Tensor,
    temperature: float = 0.1,
    scale: float = 0.1,
    word_mask: Tensor | None = None,
) -> Tensor:
    """LIMITR's local internal loss (within each sample; spec §3.3).

    Word part: ``M_w[t, t'] = w_t · ĉ_{t'} / τ`` (dot products, no normalisation), with ``ĉ`` the
    attended image context of each token; ``ℓ_w = ½[Σ_t π_t CE_row_t(M_w) + Σ_t π_t CE_col_t(M_w)]``
    where the row CE of token t has anchor ``w_t`` and candidates ``ĉ_{t'}``, and the column CE
    has anchor ``ĉ_t`` and candidates ``w_{t'}``. Region part likewise with
    ``M_r[r, r'] = v_r · ĥ_{r'} / τ`` and weights ρ. ``L = scale · mean_b (ℓ_w + ℓ_r) / 2``
    (``scale = 0.1`` is the code's hard-coded ``/10``).

    Candidates (a documented choice): the code builds ``M_w`` over **all T token positions, pads
    included**, and only the weights are zero on pads, so pads stay in every CE denominator and
    their values change the loss. That is the default (``word_mask=None``), for bug-compatibility.
    Passing ``word_mask`` gives the fixed variant: False positions are excluded as candidates
    (−∞) and as anchors (weight 0), and their values no longer matter. The weights are used as
    given, not renormalised and not detached (the code's uniform π sums to 1 over non-[PAD]
    tokens, and its SA weights ρ are softmaxes that carry gradients); detach them in the caller
    for a stop-gradient. The code's other quirks (the misaligned pad mask of the region→word
    attention, the region-axis l2norm before the SA weights) live where ``ĥ`` and ρ are computed,
    in the model, not here.

    :param words: [B, T, D] token features w_t (LIMITR: all 97 positions)
    :param context_words: [B, T, D] ĉ_t, double-softmax context of each token over its own image
    :param word_weights: [B, T] π, zero on pads (uniform over non-[PAD] tokens in the code)
    :param regions: [B, R, D] region features v_r
    :param context_regions: [B, R, D] ĥ_r, attended word context of each region
    :param region_weights: [B, R] ρ (uniform 1/R or the SA weights)
    :param temperature: τ_l > 0 (0.1)
    :param scale: overall factor (0.1, the code's /10)
    :param word_mask: [B, T] bool or None; see "Candidates" above
    :return: [] the loss
    """
    check_rank("words", words, 3, "[B, T, D]")
    check_rank("regions", regions, 3, "[B, R, D]")
    if context_words.shape != words.shape:
        raise ValueError(f"context_words must match words {tuple(words.shape)}, got {tuple(context_words.shape)}")
    if context_regions.shape != regions.shape:
        raise ValueError(
            f"context_regions must match regions {tuple(regions.shape)}, got {tuple(context_regions.shape)}"
        )
    if regions.shape[0] != words.shape[0] or regions.shape[2] != words.shape[2]:
        raise ValueError(
            f"words [B, T, D] and regions [B, R, D] need the same B and D, "
            f"got {tuple(words.shape)} and {tuple(regions.shape)}"
        )
    if word_weights.shape != words.shape[:2]:
        raise ValueError(f"word_weights must have shape {tuple(words.shape[:2])}, got {tuple(word_weights.shape)}")
    if region_weights.shape != regions.shape[:2]:
        raise ValueError(
            f"region_weights must have shape {tuple(regions.shape[:2])}, got {tuple(region_weights.shape)}"
        )
    check_positive("temperature", temperature)
    check_positive("scale", scale)

    if word_mask is not None:
        check_bool_mask("word_mask", word_mask, tuple(words.shape[:2]))
        zero = torch.zeros((), dtype=words.dtype, device=words.device)
        valid = word_mask[..., None]
        words = torch.where(valid, words, zero)
        context_words = torch.where(valid, context_words, zero)
        no_weight = torch.zeros((), dtype=word_weights.dtype, device=word_weights.device)
        word_weights = torch.where(word_mask, word_weights, no_weight)

    word_logits = words @ context_words.transpose(-1, -2) / temperature  # [B, T, T]
    region_logits = regions @ context_regions.transpose(-1, -2) / temperature  # [B, R, R]
    word_part = _weighted_bidirectional_ce(word_logits, word_weights.to(words.dtype), word_mask)
    region_part = _weighted_bidirectional_ce(region_logits, region_weights.to(regions.dtype), None)
    return scale * ((word_part + region_part) / 2).mean()
