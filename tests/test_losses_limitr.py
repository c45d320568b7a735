"""LIMITR's internal loss (the global and external losses are in test_losses_contrastive.py)."""

from __future__ import annotations

import math

import pytest
import torch

from localign.losses import limitr_internal_loss


def _loop_part(x: torch.Tensor, ctx: torch.Tensor, weights: torch.Tensor, valid: list[bool], tau: float) -> float:
    """½[Σ_t π_t CE_row_t + Σ_t π_t CE_col_t] for one sample, candidates restricted to ``valid``."""
    idx = [t for t in range(x.shape[0]) if valid[t]]
    m = {(a, b): float(x[a] @ ctx[b]) / tau for a in idx for b in idx}
    total = 0.0
    for t in idx:
        row = math.log(sum(math.exp(m[t, b]) for b in idx)) - m[t, t]
        col = math.log(sum(math.exp(m[a, t]) for a in idx)) - m[t, t]
        total += float(weights[t]) * (row + col)
    return total / 2


def _loop_internal(words, ctx_w, pi, regions, ctx_r, rho, tau, scale, word_mask=None) -> float:
    batch, num_words = words.shape[:2]
    total = 0.0
    for b in range(batch):
        valid = [True] * num_words if word_mask is None else word_mask[b].tolist()
        word_part = _loop_part(words[b], ctx_w[b], pi[b], valid, tau)
        region_part = _loop_part(regions[b], ctx_r[b], rho[b], [True] * regions.shape[1], tau)
        total += (word_part + region_part) / 2
    return scale * total / batch


def _inputs(seed: int, batch: int = 3, num_words: int = 6, num_regions: int = 5, dim: int = 4):
    gen = torch.Generator().manual_seed(seed)
    words = torch.randn(batch, num_words, dim, generator=gen, dtype=torch.float64)
    ctx_w = torch.randn(batch, num_words, dim, generator=gen, dtype=torch.float64)
    regions = torch.randn(batch, num_regions, dim, generator=gen, dtype=torch.float64)
    ctx_r = torch.randn(batch, num_regions, dim, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 4])[:batch]
    word_mask = torch.arange(num_words)[None] < lengths[:, None]
    pi = word_mask.double() / lengths[:, None]
    rho = torch.softmax(torch.randn(batch, num_regions, generator=gen, dtype=torch.float64), dim=1)
    return words, ctx_w, pi, regions, ctx_r, rho, word_mask


def test_internal_loss_hand_computed() -> None:
    words = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    ctx_w = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)  # M_w = [[1, 1], [0, 1]]
    pi = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    regions = torch.tensor([[[2.0, 1.0]]], dtype=torch.float64)  # one region: its CE is 0
    ctx_r = torch.tensor([[[1.0, 3.0]]], dtype=torch.float64)
    rho = torch.ones(1, 1, dtype=torch.float64)
    rows = [math.log(2), math.log(1 + math.e) - 1]
    cols = [math.log(math.e + 1) - 1, math.log(2)]
    word_part = 0.5 * (0.5 * sum(rows) + 0.5 * sum(cols))
    loss = limitr_internal_loss(words, ctx_w, pi, regions, ctx_r, rho, temperature=1.0, scale=0.1)
    assert loss.item() == pytest.approx(0.1 * (word_part + 0.0) / 2, abs=1e-12)


def test_internal_loss_matches_loop_reference() -> None:
    words, ctx_w, pi, regions, ctx_r, rho, word_mask = _inputs(0)
    code = limitr_internal_loss(words, ctx_w, pi, regions, ctx_r, rho)
    assert code.item() == pytest.approx(_loop_internal(words, ctx_w, pi, regions, ctx_r, rho, 0.1, 0.1), abs=1e-10)
    fixed = limitr_internal_loss(words, ctx_w, pi, regions, ctx_r, rho, word_mask=word_mask)
    expected = _loop_internal(words, ctx_w, pi, regions, ctx_r, rho, 0.1, 0.1, word_mask)
    assert fixed.item() == pytest.approx(expected, abs=1e-10)
    assert abs(fixed.item() - code.item()) > 1e-4  # pads as candidates do change the value
    # scale is a plain factor
    unscaled = limitr_internal_loss(words, ctx_w, pi, regions, ctx_r, rho, scale=1.0)
    assert unscaled.item() == pytest.approx(10 * code.item())


def test_pads_are_candidates_by_default_and_irrelevant_with_word_mask() -> None:
    words, ctx_w, pi, regions, ctx_r, rho, word_mask = _inputs(1)
    pad = ~word_mask
    words2, ctx_w2 = words.clone(), ctx_w.clone()
    words2[pad] = 3.0
    ctx_w2[pad] = -2.0
    code = limitr_internal_loss(words, ctx_w, pi, regions, ctx_r, rho)
    code2 = limitr_internal_loss(words2, ctx_w2, pi, regions, ctx_r, rho)
    assert abs(code.item() - code2.item()) > 1e-4  # bug-compatible: the code's pads enter the CE denominators
    fixed = limitr_internal_loss(words, ctx_w, pi, regions, ctx_r, rho, word_mask=word_mask)
    words2[pad] = float("nan")
    words2.requires_grad_()
    fixed2 = limitr_internal_loss(words2, ctx_w2, pi, regions, ctx_r, rho, word_mask=word_mask)
    assert fixed2.item() == pytest.approx(fixed.item(), abs=1e-12)
    fixed2.backward()
    assert torch.isfinite(words2.grad).all() and words2.grad[pad].abs().max() == 0


def test_internal_loss_gradients_invariance_and_alignment() -> None:
    words, ctx_w, pi, regions, ctx_r, rho, _ = _inputs(2)
    tensors = [t.clone().requires_grad_() for t in (words, ctx_w, regions, ctx_r, rho)]
    loss = limitr_internal_loss(tensors[0], tensors[1], pi, tensors[2], tensors[3], tensors[4])
    loss.backward()
    for t in tensors:  # the region weights (SA softmax) are not detached, as in the code
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    perm = torch.tensor([2, 0, 1])
    permuted = limitr_internal_loss(words[perm], ctx_w[perm], pi[perm], regions[perm], ctx_r[perm], rho[perm])
    assert permuted.item() == pytest.approx(loss.item(), abs=1e-12)
    aligned = limitr_internal_loss(words, words, pi, regions, regions, rho)
    shuffled = limitr_internal_loss(words, words.roll(1, dims=1), pi, regions, regions.roll(1, dims=1), rho)
    assert aligned.item() < shuffled.item()


def test_internal_loss_rejects_bad_shapes() -> None:
    words, ctx_w, pi, regions, ctx_r, rho, word_mask = _inputs(3)
    with pytest.raises(ValueError, match="context_words"):
        limitr_internal_loss(words, ctx_w[:, :5], pi, regions, ctx_r, rho)
    with pytest.raises(ValueError, match="context_regions"):
        limitr_internal_loss(words, ctx_w, pi, regions, ctx_r[:, :, :3], rho)
    with pytest.raises(ValueError, match="word_weights"):
        limitr_internal_loss(words, ctx_w, pi[:, :5], regions, ctx_r, rho)
    with pytest.raises(ValueError, match="region_weights"):
        limitr_internal_loss(words, ctx_w, pi, regions, ctx_r, rho[:2])
    with pytest.raises(ValueError, match="same B and D"):
        limitr_internal_loss(words, ctx_w, pi, regions[:2], ctx_r[:2], rho[:2])
    with pytest.raises(ValueError, match="word_mask"):
        limitr_internal_loss(words, ctx_w, pi, regions, ctx_r, rho, word_mask=word_mask[:, :5])
    with pytest.raises(ValueError, match="temperature"):
        limitr_internal_loss(words, ctx_w, pi, regions, ctx_r, rho, temperature=0)
