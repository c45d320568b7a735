"""info_nce and the shared contrastive helpers; GLoRIA/LIMITR global and LIMITR external losses."""

from __future__ import annotations

import math

import pytest
import torch

from localign.losses import (
    cosine_logits,
    cosine_similarity_matrix,
    diagonal_cross_entropy,
    gloria_global_loss,
    info_nce,
    limitr_external_loss,
    limitr_global_loss,
    symmetric_cross_entropy,
)


def _lse(values: list[float]) -> float:
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def _loop_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, weight_a2b: float) -> float:
    """Naive reference: one anchor at a time, plain Python floats."""
    rows = a.tolist()
    cols = b.tolist()

    def cos(u: list[float], v: list[float]) -> float:
        dot = sum(x * y for x, y in zip(u, v))
        return dot / (math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v)))

    n = len(rows)
    s = [[cos(rows[i], cols[j]) / temperature for j in range(n)] for i in range(n)]
    a2b = sum(_lse(s[i]) - s[i][i] for i in range(n)) / n
    b2a = sum(_lse([s[i][j] for i in range(n)]) - s[j][j] for j in range(n)) / n
    return weight_a2b * a2b + (1 - weight_a2b) * b2a


def test_info_nce_hand_computed_2x2() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)  # cosines: 1, 1/√2 / 0, 1/√2
    r = 1 / math.sqrt(2)
    tau = 0.5
    s00, s01, s10, s11 = 1 / tau, r / tau, 0.0, r / tau
    a2b = ((math.log(math.exp(s00) + math.exp(s01)) - s00) + (math.log(math.exp(s10) + math.exp(s11)) - s11)) / 2
    b2a = ((math.log(math.exp(s00) + math.exp(s10)) - s00) + (math.log(math.exp(s01) + math.exp(s11)) - s11)) / 2
    for weight in (0.0, 0.5, 0.75, 1.0):
        got = info_nce(a, b, temperature=tau, weight_a2b=weight)
        assert got.item() == pytest.approx(weight * a2b + (1 - weight) * b2a, abs=1e-12)
    # column 1 has two equal logits, so its b→a term is exactly log 2
    assert math.log(math.exp(s01) + math.exp(s11)) - s11 == pytest.approx(math.log(2))


def test_info_nce_matches_loop_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    b = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    for weight in (0.25, 0.75):
        got = info_nce(a, b, temperature=0.1, weight_a2b=weight).item()
        assert got == pytest.approx(_loop_info_nce(a, b, 0.1, weight), abs=1e-10)


def test_info_nce_swap_and_permutation_invariance() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(9, 6, generator=gen)
    b = torch.randn(9, 6, generator=gen)
    ref = info_nce(a, b, 0.2, weight_a2b=0.75)
    assert info_nce(b, a, 0.2, weight_a2b=0.25).item() == pytest.approx(ref.item(), rel=1e-6)
    perm = torch.randperm(9, generator=gen)
    assert info_nce(a[perm], b[perm], 0.2, weight_a2b=0.75).item() == pytest.approx(ref.item(), rel=1e-6)
    # the loss depends on directions only: rescaling rows changes nothing
    assert info_nce(3.0 * a, 0.5 * b, 0.2, weight_a2b=0.75).item() == pytest.approx(ref.item(), rel=1e-5)


def test_info_nce_aligned_beats_shuffled_and_gradients_flow() -> None:
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(16, 8, generator=gen)
    b = (a + 0.1 * torch.randn(16, 8, generator=gen)).requires_grad_()
    a = a.requires_grad_()
    aligned = info_nce(a, b, 0.1, 0.75)
    shuffled = info_nce(a, b.roll(1, dims=0), 0.1, 0.75)
    assert aligned.item() < 0.1 < shuffled.item()
    aligned.backward()
    for grad in (a.grad, b.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_info_nce_dtype_follows_inputs() -> None:
    a = torch.randn(4, 3, dtype=torch.float64)
    assert info_nce(a, a.clone(), 0.1).dtype == torch.float64
    assert info_nce(a.float(), a.float(), 0.1).dtype == torch.float32


def test_info_nce_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 3\)"):
        info_nce(torch.randn(4, 3), torch.randn(5, 3), 0.1)
    with pytest.raises(ValueError, match="B, D"):
        info_nce(torch.randn(4, 3, 2), torch.randn(4, 3, 2), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.randn(4, 3), torch.randn(4, 3), 0.0)
    with pytest.raises(ValueError, match="weight_a2b"):
        info_nce(torch.randn(4, 3), torch.randn(4, 3), 0.1, weight_a2b=1.5)


def test_cosine_helpers() -> None:
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    cos = cosine_similarity_matrix(a, b)
    assert torch.allclose(cos, torch.tensor([[0.6, 0.8], [0.0, 0.0]]))  # zero vector → 0, not NaN
    assert torch.allclose(cosine_logits(a, b, 0.5), cos / 0.5)
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    expected = ((math.log(math.exp(2) + 1) - 2) + math.log(2)) / 2
    assert diagonal_cross_entropy(logits).item() == pytest.approx(expected, rel=1e-6)
    # column 1 of logits: (0, 1) with positive 1 → log(1 + e) - 1
    expected_t = ((math.log(math.exp(2) + math.exp(1)) - 2) + (math.log(1 + math.e) - 1)) / 2
    assert symmetric_cross_entropy(logits).item() == pytest.approx(expected + expected_t, rel=1e-6)
    with pytest.raises(ValueError, match="square"):
        diagonal_cross_entropy(torch.zeros(2, 3))


def test_gloria_and_limitr_global_losses_match_each_other_and_a_loop() -> None:
    gen = torch.Generator().manual_seed(3)
    img = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    txt = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    # CE(10 cos) + CE(10 cosᵀ) = 2 × the symmetric (0.5) InfoNCE at τ = 0.1
    expected = 2 * _loop_info_nce(img, txt, 0.1, 0.5)
    assert gloria_global_loss(img, txt, temp3=10.0).item() == pytest.approx(expected, abs=1e-10)
    assert limitr_global_loss(img, txt, temperature=0.1).item() == pytest.approx(expected, abs=1e-10)
    with pytest.raises(ValueError, match=r"\(6, 4\).*\(5, 4\)"):
        limitr_global_loss(img, txt[:5])
    with pytest.raises(ValueError, match=r"\(6, 4\).*\(6, 3\)"):
        gloria_global_loss(img, txt[:, :3])


def test_limitr_external_loss_hand_computed() -> None:
    s_cap = torch.tensor([[0.9, 0.2], [0.4, 0.7]], dtype=torch.float64)
    s_img = torch.tensor([[0.6, 0.5], [0.1, 0.8]], dtype=torch.float64)

    def ce_rows(m: list[list[float]]) -> float:
        return sum(_lse(row) - row[i] for i, row in enumerate(m)) / len(m)

    def scaled(m: torch.Tensor) -> list[list[float]]:
        return (10 * m).tolist()

    cap0, cap1 = ce_rows(scaled(s_cap)), ce_rows(scaled(s_cap.T))
    img0, img1 = ce_rows(scaled(s_img)), ce_rows(scaled(s_img.T))
    expected = 0.5 * (cap0 + img0) + 0.5 * (cap1 + img1)
    assert limitr_external_loss(s_cap, s_img).item() == pytest.approx(expected, abs=1e-12)
    # hand value of one term: rows of 10·S_cap are (9, 2) and (4, 7)
    by_hand = (math.log(math.exp(9) + math.exp(2)) - 9 + math.log(math.exp(4) + math.exp(7)) - 7) / 2
    assert cap0 == pytest.approx(by_hand)
    # consistent batch permutation leaves it unchanged; a diagonal-dominant batch scores lower
    perm = torch.tensor([1, 0])
    permuted = limitr_external_loss(s_cap[perm][:, perm], s_img[perm][:, perm])
    assert permuted.item() == pytest.approx(expected, abs=1e-12)
    swapped = limitr_external_loss(s_cap[:, perm], s_img[:, perm])
    assert swapped.item() > expected
    with pytest.raises(ValueError, match="square"):
        limitr_external_loss(s_cap, s_img[:1])
