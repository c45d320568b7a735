"""Double-softmax (GLoRIA/LIMITR code) and single-softmax (papers) word↔region attention."""

from __future__ import annotations

import math

import pytest
import torch

from localign.losses import double_softmax_attention, masked_softmax, single_softmax_attention


def _softmax(values: list[float]) -> list[float]:
    peak = max(values)
    exps = [math.exp(v - peak) for v in values]
    return [e / sum(exps) for e in exps]


def _loop_double_softmax(
    query: torch.Tensor, keys: torch.Tensor, lam: float, query_valid: list[bool], key_valid: list[bool]
) -> list[list[float]]:
    """AttnGAN's two-step normalisation, one key column and then one query row at a time."""
    q_idx = [a for a in range(query.shape[0]) if query_valid[a]]
    k_idx = [b for b in range(keys.shape[0]) if key_valid[b]]
    scores = [[float(query[a] @ keys[b]) for b in range(keys.shape[0])] for a in range(query.shape[0])]
    per_key = {}
    for b in range(keys.shape[0]):
        column = _softmax([scores[a][b] for a in q_idx])
        for a, value in zip(q_idx, column):
            per_key[a, b] = value
    attn = [[0.0] * keys.shape[0] for _ in range(query.shape[0])]
    for a in q_idx:
        row = _softmax([lam * per_key[a, b] for b in k_idx])
        for b, value in zip(k_idx, row):
            attn[a][b] = value
    return attn


def test_double_softmax_hand_computed() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    keys = torch.eye(2, dtype=torch.float64)  # scores = [[1, 0], [0, 2]]
    e = math.e
    first = [[e / (1 + e), 1 / (1 + e**2)], [1 / (1 + e), e**2 / (1 + e**2)]]  # softmax over queries per key
    expected = [_softmax([4 * v for v in row]) for row in first]
    context, attn = double_softmax_attention(query, keys, lam=4.0)
    assert torch.allclose(attn, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(context, attn @ keys)  # keys = I, so the contexts are the attention rows
    # the first softmax matters: a single softmax of 4·(raw scores) would give different weights
    assert not torch.allclose(attn, torch.softmax(4 * query @ keys.T, dim=-1), atol=1e-3)


def test_double_softmax_matches_loop_with_masks_and_batches() -> None:
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64)
    keys = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64)
    query_mask = torch.rand(3, 5, generator=gen) > 0.3
    key_mask = torch.rand(3, 6, generator=gen) > 0.3
    query_mask[:, 0] = key_mask[:, 0] = True
    context, attn = double_softmax_attention(query, keys, lam=4.0, key_mask=key_mask, query_mask=query_mask)
    for b in range(3):
        loop = _loop_double_softmax(query[b], keys[b], 4.0, query_mask[b].tolist(), key_mask[b].tolist())
        expected = torch.tensor(loop, dtype=torch.float64)
        assert torch.allclose(attn[b], expected, atol=1e-12)
        assert torch.allclose(context[b], expected @ keys[b], atol=1e-12)
    # valid rows sum to one over the valid keys; masked query rows and masked key columns are zero
    assert torch.allclose(attn.sum(-1)[query_mask], torch.ones(int(query_mask.sum()), dtype=torch.float64))
    assert attn[~query_mask].abs().max() == 0 and context[~query_mask].abs().max() == 0
    assert attn.transpose(1, 2)[~key_mask].abs().max() == 0


def test_masked_values_do_not_matter() -> None:
    gen = torch.Generator().manual_seed(1)
    query = torch.randn(2, 4, 3, generator=gen)
    keys = torch.randn(2, 5, 3, generator=gen)
    query_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    key_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]], dtype=torch.bool)
    ref_context, ref_attn = double_softmax_attention(query, keys, 4.0, key_mask, query_mask)
    query2, keys2 = query.clone(), keys.clone()
    query2[~query_mask] = 50 * torch.randn(int((~query_mask).sum()), 3, generator=gen)
    keys2[~key_mask] = 50 * torch.randn(int((~key_mask).sum()), 3, generator=gen)
    context, attn = double_softmax_attention(query2, keys2, 4.0, key_mask, query_mask)
    assert torch.allclose(attn, ref_attn, atol=1e-6) and torch.allclose(context, ref_context, atol=1e-5)


def test_broadcasting_and_gradients() -> None:
    gen = torch.Generator().manual_seed(2)
    words = torch.randn(3, 1, 4, 6, generator=gen, requires_grad=True)  # 3 captions
    regions = torch.randn(1, 2, 5, 6, generator=gen, requires_grad=True)  # 2 images
    context, attn = double_softmax_attention(words, regions)
    assert context.shape == (3, 2, 4, 6) and attn.shape == (3, 2, 4, 5)
    _, single = double_softmax_attention(words[1, 0], regions[0, 1])
    assert torch.allclose(attn[1, 1], single, atol=1e-6)
    context.sum().backward()
    assert torch.isfinite(words.grad).all() and words.grad.abs().sum() > 0
    assert torch.isfinite(regions.grad).all() and regions.grad.abs().sum() > 0


def test_single_softmax_is_softmax_of_scaled_cosine() -> None:
    query = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    keys = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]], dtype=torch.float64)  # cos = 0.6, 0.8, −0.6
    context, attn = single_softmax_attention(query, keys, lam=2.0)
    expected = _softmax([1.2, 1.6, -1.2])
    assert torch.allclose(attn[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(context[0], torch.tensor(expected, dtype=torch.float64) @ keys)
    _, masked = single_softmax_attention(query, keys, lam=2.0, key_mask=torch.tensor([True, False, True]))
    kept = _softmax([1.2, -1.2])
    assert torch.allclose(masked[0], torch.tensor([kept[0], 0.0, kept[1]], dtype=torch.float64))


def test_masked_softmax_without_valid_entries_is_zero_not_nan() -> None:
    logits = torch.randn(2, 3, requires_grad=True)
    valid = torch.tensor([[True, False, True], [False, False, False]])
    probs = masked_softmax(logits, valid, dim=-1)
    assert torch.equal(probs[1], torch.zeros(3)) and probs[0, 1] == 0
    assert probs[0].sum().item() == pytest.approx(1.0)
    (probs * torch.randn(2, 3)).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_attention_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 2\)"):
        double_softmax_attention(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="key_mask"):
        double_softmax_attention(torch.randn(4, 3), torch.randn(5, 3), key_mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        single_softmax_attention(torch.randn(4, 3), torch.randn(5, 3), query_mask=torch.ones(4))
    with pytest.raises(ValueError, match="broadcast"):
        double_softmax_attention(torch.randn(2, 4, 3), torch.randn(3, 5, 3))
