"""GLoRIA's training losses (Huang et al., ICCV 2021; spec §4.2–4.3), as in the official code.

Local loss: for every caption ``i`` and image ``j``, each valid word ``t`` attends over image
``j``'s regions with the double softmax (:mod:`localign.losses.attention`, ``lam = temp1 = 4``),
giving a context ``c_t``; ``R_t = cos(w_t, c_t)``; the caption–image score is

    Z(j, i) = log Σ_{t valid} exp(temp2 · R_t)        (agg="sum"; "mean" is log-mean-exp)

and ``L_loc = CE(temp3·Z) + CE(temp3·Zᵀ)`` with images as rows. The paper writes
``Z = log(Σ exp(temp2·R))^{1/temp2}``, i.e. the same times ``1/temp2``; the code omits that factor
(inherited from AttnGAN's DAMSM), so the effective logit scale is 10 rather than 2. We follow the
code by default because the published numbers come from it; ``paper_scaling=True`` gives the
paper's form.

Which words: GLoRIA's training code uses the first ``cap_len = #words + 1`` columns, i.e. [CLS]
and the words, excluding [SEP] and pads; pass that set as ``word_mask``. GLoRIA's *inference*
similarity differs (:func:`gloria_inference_local_scores`; spec §4.4): words only ([CLS] out of
the attention too), max instead of sum, no ×10.
"""

from __future__ import annotations

import torch
from torch import Tensor

from localign.losses.attention import double_softmax_weights
from localign.losses.contrastive import (
    COSINE_EPS,
    check_bool_mask,
    check_positive,
    check_rank,
    cosine_similarity_matrix,
    symmetric_cross_entropy,
)

AGGREGATIONS = ("sum", "mean")


def gloria_local_scores(
    words: Tensor,
    word_mask: Tensor,
    regions: Tensor,
    temp1: float = 4.0,
    temp2: float = 5.0,
    agg: str = "sum",
    paper_scaling: bool = False,
) -> tuple[Tensor, Tensor]:
    """GLoRIA's local caption–image scores for all (image, caption) pairs at once.

    Vectorised over all pairs: the word–region dot products ``[B_txt, B_img, T, R]`` are the
    largest tensor (about 320 MB at the paper's B=48, T=97, R=361 in float32). The contexts
    ``c_t`` are never materialised per pair: ``w_t·c_t = Σ_r α_tr (w_t·v_r)`` reuses the dot
    products, and ``‖c_t‖² = α_t G α_tᵀ`` uses the region Gram matrix ``G = V Vᵀ`` when R <= D
    (cheaper than forming ``[B_txt, B_img, T, D]`` contexts, which is done otherwise). The
    cosine is GLoRIA's ``w·c / max(‖w‖‖c‖, 1e-8)``. Trailing positions that are padding in every
    caption are dropped before the pairwise tensors are built (GLoRIA's captions are single
    sentences padded to 97 tokens), and ``attn`` is zero-padded back to T.

    :param words: [B_txt, T, D] word features of the captions ([CLS] + words + [SEP] + pads)
    :param word_mask: [B_txt, T] bool, True for the words that take part ([CLS] and the words
        in GLoRIA's training code; [SEP] and pads False); every caption needs at least one
    :param regions: [B_img, R, D] region features (GLoRIA: 19×19 = 361 regions of dim 768)
    :param temp1: λ of the double-softmax attention (4)
    :param temp2: γ₂, the word-score sharpness (5)
    :param agg: "sum" (log-sum-exp, GLoRIA's default) or "mean" (log-mean-exp) over the words
    :param paper_scaling: multiply Z by 1/temp2 (the paper's formula) instead of the code's form
    :return: (Z [B_img, B_txt] with Z[j, i] = score of image j and caption i,
        attn [B_txt, B_img, T, R] the word→region attention of caption i over image j; rows of
        masked words are zero. GLoRIA's ``att_maps`` are ``attn[i, i, :cap_len]``)
    """
    check_rank("words", words, 3, "[B_txt, T, D]")
    check_rank("regions", regions, 3, "[B_img, R, D]")
    if words.shape[-1] != regions.shape[-1]:
        raise ValueError(
            f"words [B_txt, T, D] and regions [B_img, R, D] need the same D, "
            f"got {tuple(words.shape)} and {tuple(regions.shape)}"
        )
    check_bool_mask("word_mask", word_mask, tuple(words.shape[:2]))
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS}, got {agg!r}")
    check_positive("temp1", temp1)
    check_positive("temp2", temp2)
    num_words = word_mask.sum(dim=1)
    if not bool((num_words > 0).all()):
        empty = (num_words == 0).nonzero().flatten().tolist()
        raise ValueError(f"every caption needs at least one word in word_mask; none for captions {empty}")

    # Captions are padded to a fixed length (97) but GLoRIA's are single sentences: drop the
    # trailing positions that no caption uses before building the [B_txt, B_img, T, R] tensors.
    full_length = words.shape[1]
    used_length = int(word_mask.any(dim=0).nonzero().max()) + 1
    words, word_mask = words[:, :used_length], word_mask[:, :used_length]
    # Padded words are zeroed so that their values cannot reach the result or its gradient.
    words = torch.where(word_mask[..., None], words, torch.zeros((), dtype=words.dtype, device=words.device))
    dots = torch.einsum("itd,jrd->ijtr", words, regions)  # [B_txt, B_img, T, R]
    attn = double_softmax_weights(dots, temp1, query_mask=word_mask[:, None, :])

    word_dot_context = (attn * dots).sum(dim=-1)  # [B_txt, B_img, T]
    num_regions, dim = regions.shape[1], regions.shape[2]
    if num_regions <= dim:
        gram = regions @ regions.transpose(-1, -2)  # [B_img, R, R]
        context_sq = (torch.einsum("ijtr,jrq->ijtq", attn, gram) * attn).sum(dim=-1)
    else:
        context = torch.einsum("ijtr,jrd->ijtd", attn, regions)
        context_sq = context.pow(2).sum(dim=-1)
    word_sq = words.pow(2).sum(dim=-1)[:, None, :]  # [B_txt, 1, T]
    # max(|w||c|, eps) written as sqrt(max(|w|²|c|², eps²)): no sqrt at 0, so masked rows
    # (context 0) have finite, zero gradients.
    floor = max(COSINE_EPS**2, torch.finfo(dots.dtype).tiny)
    cosine = word_dot_context / (word_sq * context_sq).clamp_min(floor).sqrt()

    logits = (temp2 * cosine).masked_fill(~word_mask[:, None, :], float("-inf"))
    scores = torch.logsumexp(logits, dim=-1)  # [B_txt, B_img]
    if agg == "mean":
        scores = scores - num_words.to(scores.dtype).log()[:, None]
    if paper_scaling:
        scores = scores / temp2
    if used_length < full_length:
        attn = torch.nn.functional.pad(attn, (0, 0, 0, full_length - used_length))
    return scores.transpose(0, 1), attn


def gloria_inference_local_scores(
    words: Tensor,
    word_mask: Tensor,
    regions: Tensor,
    temp1: float = 4.0,
    temp2: float = 5.0,
) -> Tensor:
    """GLoRIA's inference (retrieval / zero-shot) local score for every (image, caption) pair.

    As ``get_local_similarities`` in GLoRIA's code: caption i is sliced to its word tokens
    (columns 1..n, i.e. **without [CLS]**, [SEP] and pads) *before* attending, so only those words
    enter the double softmax's first normalisation (over the words); then
    ``Z_inf(j, i) = log max_t exp(temp2 · cos(w_t, c_t)) = temp2 · max_t cos(w_t, c_t)`` (max, not
    the training loss's sum, and no ×temp3). The mask therefore matters twice: it removes the
    excluded positions from the first softmax and from the max.

    :param words: [B_txt, T, D] word features of the captions
    :param word_mask: [B_txt, T] bool, True for the caption's words (GLoRIA: [CLS] False); every
        caption needs at least one
    :param regions: [B_img, R, D] region features
    :param temp1: λ of the double-softmax attention (4)
    :param temp2: word-score sharpness γ₂ (5)
    :return: [B_img, B_txt] with entry [j, i] the score of image j and caption i
    """
    check_rank("words", words, 3, "[B_txt, T, D]")
    check_rank("regions", regions, 3, "[B_img, R, D]")
    if words.shape[-1] != regions.shape[-1]:
        raise ValueError(
            f"words [B_txt, T, D] and regions [B_img, R, D] need the same D, "
            f"got {tuple(words.shape)} and {tuple(regions.shape)}"
        )
    check_bool_mask("word_mask", word_mask, tuple(words.shape[:2]))
    check_positive("temp1", temp1)
    check_positive("temp2", temp2)
    num_words = word_mask.sum(dim=1)
    if not bool((num_words > 0).all()):
        empty = (num_words == 0).nonzero().flatten().tolist()
        raise ValueError(f"every caption needs at least one word in word_mask; none for captions {empty}")
    used_length = int(word_mask.any(dim=0).nonzero().max()) + 1  # drop all-padding trailing columns
    words, word_mask = words[:, :used_length], word_mask[:, :used_length]
    words = torch.where(word_mask[..., None], words, torch.zeros((), dtype=words.dtype, device=words.device))
    dots = torch.einsum("itd,jrd->ijtr", words, regions)  # [B_txt, B_img, T, R]
    attn = double_softmax_weights(dots, temp1, query_mask=word_mask[:, None, :])
    context = torch.einsum("ijtr,jrd->ijtd", attn, regions)  # [B_txt, B_img, T, D]
    # GLoRIA's cosine: w·c / max(|w||c|, 1e-8)
    norms = words.norm(dim=-1)[:, None, :] * context.norm(dim=-1)
    cosine = (words[:, None] * context).sum(-1) / norms.clamp_min(COSINE_EPS)
    scores = (temp2 * cosine).masked_fill(~word_mask[:, None, :], float("-inf")).amax(dim=-1)  # [B_txt, B_img]
    return scores.transpose(0, 1)


def gloria_local_loss(
    words: Tensor,
    word_mask: Tensor,
    regions: Tensor,
    temp1: float = 4.0,
    temp2: float = 5.0,
    temp3: float = 10.0,
    agg: str = "sum",
    paper_scaling: bool = False,
) -> Tensor:
    """GLoRIA's local loss ``CE(temp3·Z) + CE(temp3·Zᵀ)`` (rows = images; a sum of two means).

    :param words: [B, T, D] caption word features, row i paired with ``regions[i]``
    :param word_mask: [B, T] bool, True for [CLS] + words
    :param regions: [B, R, D] image region features
    :param temp1: attention λ (4)
    :param temp2: word-score sharpness γ₂ (5)
    :param temp3: logit scale γ₃ (10)
    :param agg: "sum" or "mean" (see :func:`gloria_local_scores`)
    :param paper_scaling: use the paper's 1/temp2 factor (default: the code's form)
    :return: [] the loss
    """
    if words.dim() == 3 and regions.dim() == 3 and words.shape[0] != regions.shape[0]:
        raise ValueError(
            f"words and regions must hold the same number of pairs, got {tuple(words.shape)} and {tuple(regions.shape)}"
        )
    check_positive("temp3", temp3)
    scores, _ = gloria_local_scores(words, word_mask, regions, temp1, temp2, agg, paper_scaling)
    return symmetric_cross_entropy(temp3 * scores)


def gloria_global_loss(img: Tensor, txt: Tensor, temp3: float = 10.0) -> Tensor:
    """GLoRIA's global loss ``CE(temp3·cos) + CE(temp3·cosᵀ)`` with images as rows.

    :param img: [B, D] global image features
    :param txt: [B, D] global text features, row i paired with ``img[i]``
    :param temp3: logit scale (10, i.e. temperature 0.1)
    :return: [] the loss
    """
    check_rank("img", img, 2, "[B, D]")
    check_rank("txt", txt, 2, "[B, D]")
    if img.shape != txt.shape:
        raise ValueError(f"img and txt must have the same shape [B, D], got {tuple(img.shape)} and {tuple(txt.shape)}")
    check_positive("temp3", temp3)
    return symmetric_cross_entropy(temp3 * cosine_similarity_matrix(img, txt))
