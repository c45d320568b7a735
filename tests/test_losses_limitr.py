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


# --------------------------------------------------------------------------------------------------
# Pair scoring (S_cap, S_img): the blocked implementation against a copy of the broadcast one
# --------------------------------------------------------------------------------------------------


def _reference_pair_scores(aggregate, score_caption, score_image, keys, regions, words, word_mask, lam):
    """Copy of ``Limitr._pair_scores`` as of a53f9dd: every pair as ``[B_img, B_txt, T or R, D]`` tensors."""
    from localign.models.heads import limitr_alignment

    bi, bt = keys.shape[0], words.shape[0]
    w = words[None].expand(bi, -1, -1, -1)
    k = keys[:, None].expand(-1, bt, -1, -1)
    qmask = word_mask[None].expand(bi, -1, -1)
    a_cap = limitr_alignment(w, k, w, lam, query_mask=qmask)
    s_cap, _ = aggregate(a_cap, qmask)
    v = regions[:, None].expand(-1, bt, -1, -1)
    kv = keys[:, None].expand(-1, bt, -1, -1)
    a_img = limitr_alignment(kv, w, v, lam, key_mask=qmask)
    s_img, _ = aggregate(a_img)
    return torch.sigmoid(score_caption(s_cap)).squeeze(-1), torch.sigmoid(score_image(s_img)).squeeze(-1)


def _pair_inputs(seed: int, n_img: int, n_txt: int, num_words: int, num_regions: int, dim: int):
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(n_img, num_regions, dim, generator=gen)
    regions = torch.randn(n_img, num_regions, dim, generator=gen)
    words = torch.randn(n_txt, num_words, dim, generator=gen)
    lengths = torch.randint(1, num_words + 1, (n_txt,), generator=gen)
    lengths[0] = num_words
    word_mask = torch.arange(num_words)[None] < lengths[:, None]
    # masks with holes too (e.g. [CLS] or sub-word pieces left out), and padded words that are not zero
    word_mask[1, 0] = False
    word_mask[2 % n_txt, 1 :: 3] = False
    word_mask[3 % n_txt, 0] = True
    return keys, regions, words, word_mask


@pytest.mark.parametrize(
    ("n_img", "n_txt", "num_words", "num_regions", "dim", "block_elements"),
    [(5, 11, 9, 6, 8, 1 << 21), (5, 11, 9, 6, 8, 1), (7, 3, 13, 16, 12, 300), (4, 17, 5, 4, 16, 2000)],
)
def test_pair_scores_match_the_broadcast_reference(n_img, n_txt, num_words, num_regions, dim, block_elements) -> None:
    """Values and gradients (inputs and every parameter) within 1e-5, float32, masks of many lengths."""
    from torch import nn

    from localign.models.heads import SelfAttentionAggregator, limitr_pair_scores

    torch.manual_seed(0)
    aggregate = SelfAttentionAggregator(dim, dropout=0.0)
    heads = nn.Linear(dim, 1), nn.Linear(dim, 1)
    modules = (aggregate, *heads)
    for module in modules:  # non-zero biases, so that padded positions would show if they leaked in
        for p in module.parameters():
            p.data.normal_(0.0, 0.5)
    inputs = _pair_inputs(n_img + n_txt, n_img, n_txt, num_words, num_regions, dim)
    params = [p for m in modules for p in m.parameters()]
    weights = torch.randn(2, n_img, n_txt)

    def run(fn, **kwargs):
        leaves = [t.clone().requires_grad_() for t in inputs[:3]]
        s_cap, s_img = fn(aggregate, *heads, *leaves, inputs[3], 4.0, **kwargs)
        loss = (weights[0] * s_cap).sum() + (weights[1] * s_img.square()).sum()
        return [s_cap, s_img, *torch.autograd.grad(loss, leaves + params)]

    expected = run(_reference_pair_scores)
    got = run(limitr_pair_scores, block_elements=block_elements)
    names = ["s_cap", "s_img", "keys", "regions", "words"] + [f"param{i}" for i in range(len(params))]
    for name, e, g in zip(names, expected, got):
        assert e.shape == g.shape, name
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-5), (name, (g - e).abs().max().item())
    # padded / masked words get no gradient, as in the reference
    assert got[4][~inputs[3]].abs().max() == 0


def test_pair_scores_ignore_padded_word_values_and_match_in_eval_with_dropout() -> None:
    from torch import nn

    from localign.models.heads import SelfAttentionAggregator, limitr_pair_scores

    torch.manual_seed(1)
    aggregate = SelfAttentionAggregator(8, dropout=0.4).eval()  # eval: dropout off, as in retrieval
    heads = nn.Linear(8, 1), nn.Linear(8, 1)
    keys, regions, words, mask = _pair_inputs(3, 4, 6, 7, 5, 8)
    with torch.no_grad():
        expected = _reference_pair_scores(aggregate, *heads, keys, regions, words, mask, 4.0)
        changed = words.clone()
        changed[~mask] = 1e3
        got = limitr_pair_scores(aggregate, *heads, keys, regions, changed, mask, 4.0)
    for e, g in zip(expected, got):
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-5)
