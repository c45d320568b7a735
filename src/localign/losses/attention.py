"""Parameter-free word↔region attention used by GLoRIA and LIMITR (spec §3.2, §4.2, checklist 1).

The official code of both methods inherits AttnGAN/DAMSM's ``attention_fn``, a **double softmax**
over dot products: first a softmax over the *query* axis (for each key), then ×λ and a softmax
over the *key* axis. Their papers write a single ``softmax(λ·cos)`` over the keys; that form is
:func:`single_softmax_attention`. To match the published numbers use the double softmax.

Masks: a False key gets −∞ in the (second) softmax over keys. A False query is left out of the
first softmax over queries (GLoRIA slices each caption to its words before attending, so padded
words never enter that normalisation), and its own output row is zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

from localign.losses.contrastive import COSINE_EPS, cosine_similarity_matrix


def _check_query_keys(query: Tensor, keys: Tensor) -> None:
    if query.dim() < 2 or keys.dim() < 2 or query.shape[-1] != keys.shape[-1]:
        raise ValueError(
            f"expected query [..., Q, D] and keys [..., K, D] with the same D, "
            f"got {tuple(query.shape)} and {tuple(keys.shape)}"
        )
    try:
        torch.broadcast_shapes(query.shape[:-2], keys.shape[:-2])
    except RuntimeError as error:
        raise ValueError(
            f"leading dimensions of query {tuple(query.shape)} and keys {tuple(keys.shape)} do not broadcast"
        ) from error


def _check_mask(name: str, mask: Tensor | None, length: int, axis: str) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    if mask.dim() < 1 or mask.shape[-1] != length:
        raise ValueError(f"{name} must be [..., {axis}] with {axis}={length}, got shape {tuple(mask.shape)}")


def masked_softmax(logits: Tensor, valid: Tensor | None, dim: int) -> Tensor:
    """Softmax over ``dim`` with ``valid == False`` entries excluded (probability exactly 0).

    A slice without any valid entry gets all-zero probabilities instead of NaN.

    :param logits: any shape
    :param valid: bool, broadcastable to ``logits``; None = all valid
    :param dim: the axis to normalise over
    :return: same shape as ``logits``
    """
    if valid is None:
        return torch.softmax(logits, dim=dim)
    # The mask stays in its (small) broadcast shape; only masked_fill and softmax touch the full
    # tensor. Slices without a valid entry are computed unmasked (finite) and then zeroed.
    any_valid = valid.any(dim=dim, keepdim=True)
    usable = valid | ~any_valid
    probabilities = torch.softmax(logits.masked_fill(~usable, float("-inf")), dim=dim)
    if bool(any_valid.all()):
        return probabilities
    return probabilities * (valid & any_valid)


def double_softmax_weights(
    scores: Tensor, lam: float, query_mask: Tensor | None = None, key_mask: Tensor | None = None
) -> Tensor:
    """AttnGAN/GLoRIA/LIMITR attention weights from precomputed scores.

    ``s̄ = softmax over queries (per key)``, then ``α = softmax over keys of lam·s̄``.

    :param scores: [..., Q, K] raw query·key dot products
    :param lam: sharpness λ of the second softmax (GLoRIA/LIMITR temp1 = 4)
    :param query_mask: bool broadcastable to [..., Q]; False queries are left out of the first
        softmax and get an all-zero row
    :param key_mask: bool broadcastable to [..., K]; False keys get zero weight
    :return: [..., Q, K] α, rows sum to 1 over the valid keys (0 for masked queries)
    """
    query_valid = None if query_mask is None else query_mask[..., :, None]
    key_valid = None if key_mask is None else key_mask[..., None, :]
    per_key = masked_softmax(scores, query_valid, dim=-2)
    # The first softmax is computed per key over the queries; a masked key's column is computed
    # like any other and then discarded here, so the key mask does not interact with it.
    attn = masked_softmax(lam * per_key, key_valid, dim=-1)
    if query_valid is not None:
        attn = attn * query_valid
    return attn


def double_softmax_attention(
    query: Tensor,
    keys: Tensor,
    lam: float = 4.0,
    key_mask: Tensor | None = None,
    query_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """GLoRIA/LIMITR (AttnGAN-style) double-softmax attention; keys are also the values.

    ``s = q·k`` (dot product, not cosine); ``s̄ = softmax`` over the **query** axis for each key;
    ``α = softmax`` over the **key** axis of ``lam·s̄`` (masked keys → −∞); ``context = α @ keys``.

    How masks enter: the first softmax normalises each key's column over the queries, so a
    masked key never influences another key's column; its column is simply dropped by the
    second softmax. A masked query is excluded from the first softmax (as if the query sequence
    had been sliced to its valid part, which is what GLoRIA and LIMITR do with ``cap_len``) and its
    row of ``attn`` and ``context`` is zero. LIMITR's internal loss attends with all token
    positions, pads included: pass no ``query_mask`` there.

    :param query: [..., Q, D] e.g. words
    :param keys: [..., K, D] e.g. image regions (leading dims broadcast with ``query``'s)
    :param lam: λ (temp1 = 4 in GLoRIA and LIMITR)
    :param key_mask: bool [..., K], True = valid key; None = all valid
    :param query_mask: bool [..., Q], True = valid query; None = all valid
    :return: (context [..., Q, D], attn [..., Q, K])
    """
    _check_query_keys(query, keys)
    _check_mask("key_mask", key_mask, keys.shape[-2], "K")
    _check_mask("query_mask", query_mask, query.shape[-2], "Q")
    scores = query @ keys.transpose(-1, -2)
    attn = double_softmax_weights(scores, lam, query_mask=query_mask, key_mask=key_mask)
    return attn @ keys, attn


def single_softmax_attention(
    query: Tensor,
    keys: Tensor,
    lam: float = 4.0,
    key_mask: Tensor | None = None,
    query_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The papers' form of the word↔region attention: ``α = softmax_keys(lam · cos(q, k))``.

    GLoRIA's and LIMITR's papers describe this; their code uses :func:`double_softmax_attention`.

    :param query: [..., Q, D]
    :param keys: [..., K, D] (also the values)
    :param lam: λ, the inverse temperature of the softmax
    :param key_mask: bool [..., K], True = valid key; masked keys get weight 0
    :param query_mask: bool [..., Q]; masked queries get a zero row
    :return: (context [..., Q, D], attn [..., Q, K])
    """
    _check_query_keys(query, keys)
    _check_mask("key_mask", key_mask, keys.shape[-2], "K")
    _check_mask("query_mask", query_mask, query.shape[-2], "Q")
    similarity = cosine_similarity_matrix(query, keys, eps=COSINE_EPS)
    attn = masked_softmax(lam * similarity, None if key_mask is None else key_mask[..., None, :], dim=-1)
    if query_mask is not None:
        attn = attn * query_mask[..., :, None]
    return attn @ keys, attn
