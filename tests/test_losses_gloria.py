"""GLoRIA's local scores and local loss against a per-pair loop reference and hand values."""

from __future__ import annotations

import math

import pytest
import torch

from localign.losses import double_softmax_attention, gloria_inference_local_scores, gloria_local_loss, gloria_local_scores


def _softmax(values: list[float]) -> list[float]:
    peak = max(values)
    exps = [math.exp(v - peak) for v in values]
    return [e / sum(exps) for e in exps]


def _loop_scores(words, word_mask, regions, temp1, temp2, agg, paper_scaling) -> torch.Tensor:
    """One caption and one image at a time, as GLoRIA's loop does (captions sliced to their words)."""
    scores = torch.zeros(regions.shape[0], words.shape[0], dtype=words.dtype)
    for i in range(words.shape[0]):
        w = words[i][word_mask[i]]  # [T_i, D]
        for j in range(regions.shape[0]):
            v = regions[j]
            first = torch.softmax(w @ v.T, dim=0)  # over the words, per region
            alpha = torch.softmax(temp1 * first, dim=1)  # over the regions, per word
            c = alpha @ v
            cos = (w * c).sum(-1) / (w.norm(dim=-1) * c.norm(dim=-1)).clamp(min=1e-8)
            values = torch.exp(temp2 * cos)
            z = torch.log(values.sum() if agg == "sum" else values.mean())
            scores[j, i] = z / temp2 if paper_scaling else z
    return scores


def _ce(logits: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.logsumexp(logits[k], 0) - logits[k, k] for k in range(logits.shape[0])]).mean()


def test_local_scores_hand_computed() -> None:
    words = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [7.0, 7.0]]], dtype=torch.float64)  # third = [SEP], masked
    mask = torch.tensor([[True, True, False]])
    regions = torch.eye(2, dtype=torch.float64)[None]
    e = math.e
    first = [[e / (1 + e), 1 / (1 + e**2)], [1 / (1 + e), e**2 / (1 + e**2)]]
    alpha = [_softmax([4 * v for v in row]) for row in first]  # contexts c_t = alpha_t (regions = I)
    cos0 = alpha[0][0] / math.hypot(*alpha[0])  # w_0 = (1, 0)
    cos1 = alpha[1][1] / math.hypot(*alpha[1])  # w_1 = (0, 2)
    z_sum = math.log(math.exp(5 * cos0) + math.exp(5 * cos1))
    scores, attn = gloria_local_scores(words, mask, regions)
    assert scores.shape == (1, 1) and scores.item() == pytest.approx(z_sum, abs=1e-12)
    assert torch.allclose(attn[0, 0, :2], torch.tensor(alpha, dtype=torch.float64), atol=1e-12)
    assert attn[0, 0, 2].abs().max() == 0
    mean, _ = gloria_local_scores(words, mask, regions, agg="mean")
    assert mean.item() == pytest.approx(z_sum - math.log(2), abs=1e-12)
    paper, _ = gloria_local_scores(words, mask, regions, paper_scaling=True)
    assert paper.item() == pytest.approx(z_sum / 5, abs=1e-12)


@pytest.mark.parametrize("dim,num_regions", [(8, 5), (3, 6)])  # Gram path (R <= D) and context path
def test_local_scores_match_loop_reference(dim: int, num_regions: int) -> None:
    gen = torch.Generator().manual_seed(dim)
    words = torch.randn(3, 6, dim, generator=gen, dtype=torch.float64)
    regions = torch.randn(4, num_regions, dim, generator=gen, dtype=torch.float64)  # B_img ≠ B_txt is allowed
    lengths = torch.tensor([5, 2, 4])  # no caption uses the last position: it is trimmed internally
    mask = torch.arange(6)[None] < lengths[:, None]
    for agg, paper in (("sum", False), ("mean", False), ("sum", True)):
        got, attn = gloria_local_scores(words, mask, regions, temp1=4.0, temp2=5.0, agg=agg, paper_scaling=paper)
        expected = _loop_scores(words, mask, regions, 4.0, 5.0, agg, paper)
        assert got.shape == (4, 3) and attn.shape == (3, 4, 6, num_regions)
        assert torch.allclose(got, expected, atol=1e-10)
    for i in range(3):
        for j in range(4):
            _, reference = double_softmax_attention(words[i], regions[j], 4.0, query_mask=mask[i])
            assert torch.allclose(attn[i, j], reference, atol=1e-12)


def test_local_loss_matches_loop_and_is_permutation_invariant() -> None:
    gen = torch.Generator().manual_seed(5)
    words = torch.randn(4, 5, 6, generator=gen, dtype=torch.float64)
    regions = torch.randn(4, 7, 6, generator=gen, dtype=torch.float64)
    mask = torch.arange(5)[None] < torch.tensor([5, 3, 1, 4])[:, None]
    z = _loop_scores(words, mask, regions, 4.0, 5.0, "sum", False)
    expected = _ce(10 * z) + _ce(10 * z.T)
    loss = gloria_local_loss(words, mask, regions)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-10)
    perm = torch.tensor([2, 0, 3, 1])
    assert gloria_local_loss(words[perm], mask[perm], regions[perm]).item() == pytest.approx(loss.item(), abs=1e-10)


def test_local_loss_prefers_aligned_pairs_and_gradients_flow() -> None:
    gen = torch.Generator().manual_seed(6)
    regions = torch.randn(6, 9, 16, generator=gen)
    # each caption's words echo a few regions of its own image
    words = regions[:, :4] + 0.1 * torch.randn(6, 4, 16, generator=gen)
    mask = torch.ones(6, 4, dtype=torch.bool)
    words.requires_grad_()
    regions.requires_grad_()
    aligned = gloria_local_loss(words, mask, regions)
    shuffled = gloria_local_loss(words, mask, regions.roll(1, dims=0))
    assert aligned.item() < shuffled.item()
    aligned.backward()
    for grad in (words.grad, regions.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_padded_words_change_nothing() -> None:
    gen = torch.Generator().manual_seed(7)
    words = torch.randn(3, 6, 5, generator=gen)
    regions = torch.randn(3, 4, 5, generator=gen)
    mask = torch.arange(6)[None] < torch.tensor([2, 6, 3])[:, None]
    ref = gloria_local_loss(words, mask, regions)
    changed = words.clone()
    changed[~mask] = float("nan")
    changed.requires_grad_()
    loss = gloria_local_loss(changed, mask, regions)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6)
    loss.backward()
    assert torch.isfinite(changed.grad).all() and changed.grad[~mask].abs().max() == 0


def test_gloria_rejects_bad_input() -> None:
    words, regions = torch.randn(2, 4, 3), torch.randn(2, 5, 3)
    mask = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"\(2, 4, 3\).*\(2, 5, 2\)"):
        gloria_local_scores(words, mask, torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match="word_mask"):
        gloria_local_scores(words, torch.ones(2, 5, dtype=torch.bool), regions)
    with pytest.raises(ValueError, match="agg"):
        gloria_local_scores(words, mask, regions, agg="max")
    empty = mask.clone()
    empty[1] = False
    with pytest.raises(ValueError, match=r"captions \[1\]"):
        gloria_local_scores(words, empty, regions)
    with pytest.raises(ValueError, match="same number of pairs"):
        gloria_local_loss(words, mask, torch.randn(3, 5, 3))


# --- inference (retrieval / zero-shot) score ---------------------------------------------------------


def test_inference_scores_hand_computed_words_only() -> None:
    """[CLS] (slot 0) and pads neither enter the attention's softmax over words nor the max."""
    cls_, w0, w1, pad = [3.0, 3.0], [1.0, 0.0], [0.0, 2.0], [7.0, 7.0]
    words = torch.tensor([[cls_, w0, w1, pad]], dtype=torch.float64)
    mask = torch.tensor([[False, True, True, False]])
    regions = torch.eye(2, dtype=torch.float64)[None]
    e = math.e
    first = [[e / (1 + e), 1 / (1 + e**2)], [1 / (1 + e), e**2 / (1 + e**2)]]  # softmax over the 2 words
    alpha = [_softmax([4 * v for v in row]) for row in first]
    cos0 = alpha[0][0] / math.hypot(*alpha[0])
    cos1 = alpha[1][1] / math.hypot(*alpha[1])
    got = gloria_inference_local_scores(words, mask, regions)
    assert got.shape == (1, 1) and got.item() == pytest.approx(5 * max(cos0, cos1), abs=1e-12)
    # with [CLS] among the queries (the defect) the value is different
    with_cls = gloria_inference_local_scores(words, torch.tensor([[True, True, True, False]]), regions)
    assert abs(with_cls.item() - got.item()) > 1e-3


def _loop_inference(words, word_mask, regions, temp1=4.0, temp2=5.0) -> torch.Tensor:
    """GLoRIA's get_local_similarities: caption i sliced to its words, then attend, 5·max cos."""
    scores = torch.zeros(regions.shape[0], words.shape[0], dtype=words.dtype)
    for i in range(words.shape[0]):
        w = words[i][word_mask[i]]
        for j in range(regions.shape[0]):
            v = regions[j]
            alpha = torch.softmax(temp1 * torch.softmax(w @ v.T, dim=0), dim=1)
            c = alpha @ v
            cos = (w * c).sum(-1) / (w.norm(dim=-1) * c.norm(dim=-1)).clamp(min=1e-8)
            scores[j, i] = temp2 * cos.max()
    return scores


def test_inference_scores_padded_captions_of_different_lengths() -> None:
    gen = torch.Generator().manual_seed(11)
    words = torch.randn(3, 7, 5, generator=gen, dtype=torch.float64)
    regions = torch.randn(4, 6, 5, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 3])  # words at slots 1..n; slot 0 = [CLS]; the rest padding
    mask = (torch.arange(7)[None] >= 1) & (torch.arange(7)[None] <= lengths[:, None])
    got = gloria_inference_local_scores(words, mask, regions)
    assert got.shape == (4, 3)
    assert torch.allclose(got, _loop_inference(words, mask, regions), atol=1e-12)
    # a caption's score does not depend on the values in its excluded slots or on the other captions
    garbage = words.clone()
    garbage[~mask] = float("nan")
    assert torch.allclose(gloria_inference_local_scores(garbage, mask, regions), got, atol=1e-12)
    alone = gloria_inference_local_scores(words[1:2, :3], mask[1:2, :3], regions)
    assert torch.allclose(alone[:, 0], got[:, 1], atol=1e-12)


def test_inference_scores_reject_bad_input() -> None:
    words, regions = torch.randn(2, 4, 3), torch.randn(2, 5, 3)
    mask = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="same D"):
        gloria_inference_local_scores(words, mask, torch.randn(2, 5, 2))
    empty = mask.clone()
    empty[0] = False
    with pytest.raises(ValueError, match=r"captions \[0\]"):
        gloria_inference_local_scores(words, empty, regions)
