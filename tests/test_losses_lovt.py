"""LoVT's spatial positive weights and intra-sample local losses."""

from __future__ import annotations

import math

import pytest
import torch

from localign.losses import lovt_local_loss, lovt_positive_weights


def _loop_lovt(
    z: torch.Tensor,
    z_att: torch.Tensor,
    positives: torch.Tensor | None,
    mask: torch.Tensor | None,
    weights: torch.Tensor | None,
    tau: float,
) -> tuple[float, float]:
    """Naive reference of spec §2.4.2: loops over samples, anchors and candidates."""
    batch, n, _ = z.shape
    totals = [0.0, 0.0]
    for b in range(batch):
        valid = [True] * n if mask is None else mask[b].tolist()
        idx = [k for k in range(n) if valid[k]]
        if not idx:
            continue
        w = [1.0 if weights is None else float(weights[b, k]) for k in idx]
        w = [x / sum(w) for x in w]

        def cos(u: torch.Tensor, v: torch.Tensor) -> float:
            return float(u @ v) / (float(u.norm()) * float(v.norm()))

        for direction in (0, 1):
            total = 0.0
            for weight, k in zip(w, idx):
                if direction == 0:
                    logits = {l: cos(z[b, k], z_att[b, l]) / tau for l in idx}
                else:
                    logits = {l: cos(z_att[b, k], z[b, l]) / tau for l in idx}
                pi = {l: (1.0 if l == k else 0.0) if positives is None else float(positives[k, l]) for l in idx}
                norm = sum(pi.values())
                log_z = math.log(sum(math.exp(v) for v in logits.values()))
                total += weight * sum(pi[l] / norm * (log_z - logits[l]) for l in idx)
            totals[direction] += total
    return totals[0] / batch, totals[1] / batch


def test_positive_weights_match_spec_numbers_on_7x7() -> None:
    weights = lovt_positive_weights((7, 7))
    assert weights.shape == (49, 49)
    centre, corner = 3 * 7 + 3, 0
    assert int((weights[centre] > 0).sum()) == 49
    assert weights[centre].min().item() == pytest.approx(math.exp(-math.sqrt(18) / math.sqrt(98)), abs=1e-7)
    assert 0.60 <= weights[centre].min().item() and weights[centre].max().item() == 1.0
    assert int((weights[corner] > 0).sum()) == 22
    assert torch.equal(weights, weights.T)
    assert torch.equal(weights.diagonal(), torch.ones(49))  # exact, not cdist's 0.99976
    # row-major: region (h=1, w=2) is index 9; its distance to (0, 0) is sqrt(5)/sqrt(98)
    assert weights[9, 0].item() == pytest.approx(math.exp(-math.sqrt(5 / 98)), abs=1e-7)
    # (4, 4) from the corner: 32 > 24.5 squared cells → outside the radius; (4, 2): 20 → inside
    assert weights[0, 4 * 7 + 4].item() == 0.0 and weights[0, 4 * 7 + 2].item() > 0.0
    assert weights[centre].min().item() >= math.exp(-0.5)


def test_positive_weights_variants() -> None:
    hard = lovt_positive_weights((7, 7), smooth=False)
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(hard > 0, lovt_positive_weights((7, 7)) > 0)
    assert torch.equal(lovt_positive_weights((3, 4), threshold=0.0), torch.eye(12))
    # a 1 × 3 grid: relative distances 0, 1/√10 = 0.32, 2/√10 = 0.63
    row = lovt_positive_weights((1, 3), lam=2.0)[0]
    assert torch.allclose(row, torch.tensor([1.0, math.exp(-2 / math.sqrt(10)), 0.0]))
    row = lovt_positive_weights((1, 3), threshold=0.7, lam=2.0)[0]
    assert torch.allclose(row, torch.tensor([1.0, math.exp(-2 / math.sqrt(10)), math.exp(-4 / math.sqrt(10))]))
    # a non-square grid uses sqrt(H² + W²) = √29 for (2, 5): (0,2) is at 0.37 (in), (0,3) at 0.56 (out)
    rect = lovt_positive_weights((2, 5))
    assert rect[0, 2].item() == pytest.approx(math.exp(-2 / math.sqrt(29)), abs=1e-7)
    assert rect[0, 3].item() == 0.0 and rect[0, 5 + 1].item() == pytest.approx(math.exp(-math.sqrt(2 / 29)), abs=1e-7)
    for bad in [(0, 3), (2,), (2.0, 3)]:
        with pytest.raises(ValueError, match="grid"):
            lovt_positive_weights(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        lovt_positive_weights((3, 3), threshold=-0.1)


def test_local_loss_hand_computed_identity() -> None:
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    z_att = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    r = 1 / math.sqrt(2)  # s = [[1, r], [0, r]] with τ = 1
    z2att = ((math.log(math.e + math.exp(r)) - 1) + (math.log(1 + math.exp(r)) - r)) / 2
    att2z = ((math.log(math.e + 1) - 1) + math.log(2)) / 2
    got = lovt_local_loss(z, z_att, temperature=1.0)
    assert got[0].item() == pytest.approx(z2att, abs=1e-12)
    assert got[1].item() == pytest.approx(att2z, abs=1e-12)
    # per-position weights (3:1) instead of uniform
    got_w = lovt_local_loss(z, z_att, weights=torch.tensor([[3.0, 1.0]], dtype=torch.float64), temperature=1.0)
    assert got_w[1].item() == pytest.approx(0.75 * (math.log(math.e + 1) - 1) + 0.25 * math.log(2), abs=1e-12)


def test_local_loss_hand_computed_soft_positives() -> None:
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    z_att = z.clone()  # s = identity / τ with τ = 0.5 → logits (2, 0) / (0, 2)
    pi = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    # row 0: π = (2/3, 1/3); -log softmax = (log(e²+1) − 2, log(e²+1))
    lse = math.log(math.exp(2) + 1)
    per_anchor = 2 / 3 * (lse - 2) + 1 / 3 * lse
    got = lovt_local_loss(z, z_att, positive_weights=pi, temperature=0.5)
    assert got[0].item() == pytest.approx(per_anchor, abs=1e-12)
    assert got[1].item() == pytest.approx(per_anchor, abs=1e-12)


def test_local_loss_matches_loop_reference_with_masks_weights_and_grid() -> None:
    gen = torch.Generator().manual_seed(0)
    batch, grid, dim = 3, (3, 3), 4
    n = grid[0] * grid[1]
    z = torch.randn(batch, n, dim, generator=gen, dtype=torch.float64)
    z_att = torch.randn(batch, n, dim, generator=gen, dtype=torch.float64)
    positives = lovt_positive_weights(grid).double()
    mask = torch.rand(batch, n, generator=gen) > 0.3
    mask[:, 0] = True
    weights = torch.rand(batch, n, generator=gen, dtype=torch.float64)
    for kwargs in (
        {},
        {"positive_weights": positives},
        {"positive_weights": positives, "mask": mask},
        {"positive_weights": positives, "mask": mask, "weights": weights},
        {"mask": mask, "weights": weights},
    ):
        got = lovt_local_loss(z, z_att, temperature=0.3, **kwargs)
        expected = _loop_lovt(
            z, z_att, kwargs.get("positive_weights"), kwargs.get("mask"), kwargs.get("weights"), 0.3
        )
        assert got[0].item() == pytest.approx(expected[0], abs=1e-10), kwargs.keys()
        assert got[1].item() == pytest.approx(expected[1], abs=1e-10), kwargs.keys()


def test_single_sentence_contributes_exactly_zero() -> None:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 4, 8, generator=gen)
    z_att = torch.randn(2, 4, 8, generator=gen)
    mask = torch.tensor([[True, False, False, False], [True, True, True, False]])
    one = lovt_local_loss(z[:1], z_att[:1], mask=mask[:1])
    assert one[0].item() == 0.0 and one[1].item() == 0.0
    # in a batch, the single-sentence sample adds 0 and the mean divides by B = 2
    both = lovt_local_loss(z, z_att, mask=mask)
    second = lovt_local_loss(z[1:], z_att[1:], mask=mask[1:])
    assert both[0].item() == pytest.approx(second[0].item() / 2, rel=1e-6)
    assert both[1].item() == pytest.approx(second[1].item() / 2, rel=1e-6)
    # a sample without any valid sentence contributes 0 and no NaN
    empty = torch.zeros(1, 4, dtype=torch.bool)
    none = lovt_local_loss(z[:1], z_att[:1], mask=empty)
    assert none[0].item() == 0.0 and none[1].item() == 0.0


def test_padded_values_change_nothing() -> None:
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(3, 5, 6, generator=gen)
    z_att = torch.randn(3, 5, 6, generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    weights = torch.rand(3, 5, generator=gen)
    positives = lovt_positive_weights((1, 5))
    ref = lovt_local_loss(z, z_att, positives, mask=mask, weights=weights)

    pad = ~mask
    z2, z_att2, weights2 = z.clone(), z_att.clone(), weights.clone()
    z2[pad] = torch.randn(int(pad.sum()), 6, generator=gen) * 100
    z_att2[pad] = float("nan")
    weights2[pad] = float("inf")
    z2.requires_grad_()
    z_att2.requires_grad_()
    got = lovt_local_loss(z2, z_att2, positives, mask=mask, weights=weights2)
    assert torch.allclose(torch.stack(got), torch.stack(ref), atol=1e-6)
    sum(got).backward()
    assert torch.isfinite(z2.grad).all() and torch.isfinite(z_att2.grad).all()
    assert z2.grad[pad].abs().max() == 0 and z_att2.grad[pad].abs().max() == 0
    assert z2.grad[mask].abs().sum() > 0 and z_att2.grad[mask].abs().sum() > 0


def test_weights_are_detached_and_renormalised() -> None:
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, 4, 5, generator=gen, requires_grad=True)
    z_att = torch.randn(2, 4, 5, generator=gen, requires_grad=True)
    weights = torch.rand(2, 4, generator=gen).requires_grad_()
    loss = sum(lovt_local_loss(z, z_att, weights=weights))
    loss.backward()
    assert weights.grad is None
    scaled = lovt_local_loss(z, z_att, weights=7.0 * weights.detach())
    same = lovt_local_loss(z, z_att, weights=weights.detach())
    assert torch.allclose(torch.stack(scaled), torch.stack(same))


def test_invariances_and_alignment_ordering() -> None:
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(4, 6, 8, generator=gen)
    z_att = z + 0.05 * torch.randn(4, 6, 8, generator=gen)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    ref = torch.stack(lovt_local_loss(z, z_att, mask=mask))
    batch_perm = torch.randperm(4, generator=gen)
    assert torch.allclose(torch.stack(lovt_local_loss(z[batch_perm], z_att[batch_perm], mask=mask[batch_perm])), ref)
    # with identity positives, relabelling the positions consistently changes nothing
    pos_perm = torch.randperm(6, generator=gen)
    permuted = lovt_local_loss(z[:, pos_perm], z_att[:, pos_perm], mask=mask[:, pos_perm])
    assert torch.allclose(torch.stack(permuted), ref, atol=1e-6)
    # swapping the roles of z and z_att swaps the two directions
    swapped = lovt_local_loss(z_att, z, mask=mask)
    assert torch.allclose(torch.stack(swapped), ref.flip(0), atol=1e-6)
    shuffled = torch.stack(lovt_local_loss(z, z_att.roll(1, dims=1), mask=torch.ones(4, 6, dtype=torch.bool)))
    aligned = torch.stack(lovt_local_loss(z, z_att, mask=torch.ones(4, 6, dtype=torch.bool)))
    assert (aligned < shuffled).all()


def test_local_loss_float64_and_rejects_bad_shapes() -> None:
    z = torch.randn(2, 4, 3, dtype=torch.float64)
    assert lovt_local_loss(z, z.clone())[0].dtype == torch.float64
    with pytest.raises(ValueError, match=r"\(2, 4, 3\).*\(2, 5, 3\)"):
        lovt_local_loss(z, torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="positive_weights"):
        lovt_local_loss(z, z, positive_weights=torch.eye(5))
    with pytest.raises(ValueError, match="mask"):
        lovt_local_loss(z, z, mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        lovt_local_loss(z, z, mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="weights"):
        lovt_local_loss(z, z, weights=torch.ones(2, 3))
    with pytest.raises(ValueError, match="temperature"):
        lovt_local_loss(z, z, temperature=-0.3)
