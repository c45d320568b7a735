"""MI lower bounds (Liao et al.): hand cases, loop references, properties, Gaussian ground truth."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from localign.losses import (
    cpc_lower_bound,
    global_mi_objective,
    local_mi_objective,
    mine_lower_bound,
    repo_infonce_loss,
)


def _lse(values: list[float]) -> float:
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def test_mine_lower_bound_hand_computed() -> None:
    joint = torch.tensor([1.0, 2.0], dtype=torch.float64)
    marginal = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    # mean(joint) = 1.5; log mean exp(marginal) = log((1 + 3) / 2) = log 2
    assert mine_lower_bound(joint, marginal).item() == pytest.approx(1.5 - math.log(2), abs=1e-12)
    with pytest.raises(ValueError, match="marginal"):
        mine_lower_bound(joint, torch.zeros(0))


def test_cpc_lower_bound_hand_computed_and_capped() -> None:
    scores = torch.tensor([[2.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    expected = ((2 - math.log(math.exp(2) + 1)) + (3 - math.log(math.e + math.exp(3)))) / 2 + math.log(2)
    assert cpc_lower_bound(scores).item() == pytest.approx(expected, abs=1e-12)
    gen = torch.Generator().manual_seed(0)
    for batch in (2, 8, 32):
        random_scores = 5 * torch.randn(batch, batch, generator=gen)
        assert cpc_lower_bound(random_scores).item() <= math.log(batch) + 1e-6
        separated = random_scores + 1000 * torch.eye(batch)
        assert cpc_lower_bound(separated).item() == pytest.approx(math.log(batch), abs=1e-4)
    # equal scores everywhere: no information, estimate exactly 0
    assert cpc_lower_bound(torch.full((5, 5), 0.3)).item() == pytest.approx(0.0, abs=1e-6)


def test_cpc_negative_mask_uses_per_anchor_counts() -> None:
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = False  # images 0 and 1 come from one study
    expected = 0.0
    for i in range(4):
        row = [scores[i, j].item() for j in range(4) if mask[i, j]]
        expected += scores[i, i].item() - _lse(row) + math.log(len(row))
    assert cpc_lower_bound(scores, mask).item() == pytest.approx(expected / 4, abs=1e-12)
    # the excluded entries' values are irrelevant
    changed = scores.clone()
    changed[0, 1] = 1e4
    assert cpc_lower_bound(changed, mask).item() == pytest.approx(expected / 4, abs=1e-12)
    bad = mask.clone()
    bad[2, 2] = False
    with pytest.raises(ValueError, match="diagonal"):
        cpc_lower_bound(scores, bad)
    with pytest.raises(ValueError, match="square"):
        cpc_lower_bound(scores[:3])


def test_global_objective_estimators_and_repository_variant() -> None:
    gen = torch.Generator().manual_seed(2)
    scores = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[2, 3] = mask[3, 2] = False
    # the repository's create_mi_pairs: for gap in 1..B-1, for i: pair (i, (i+gap) mod B) unless same study
    negatives = [
        scores[i, (i + gap) % 5].item() for gap in range(1, 5) for i in range(5) if mask[i, (i + gap) % 5]
    ]
    positives = scores.diagonal().tolist()
    repo_loss = _lse(negatives) - sum(positives) / 5
    dv = sum(positives) / 5 - (_lse(negatives) - math.log(len(negatives)))
    assert repo_infonce_loss(scores, mask).item() == pytest.approx(repo_loss, abs=1e-12)
    assert global_mi_objective(scores, "mine", mask).item() == pytest.approx(dv, abs=1e-12)
    assert global_mi_objective(scores, "repo_infonce", mask).item() == pytest.approx(dv, abs=1e-12)
    assert global_mi_objective(scores, "cpc", mask).item() == pytest.approx(cpc_lower_bound(scores, mask).item())
    # the repository's "infonce" is not CPC
    assert abs(global_mi_objective(scores, "cpc").item() - global_mi_objective(scores, "repo_infonce").item()) > 1e-3
    with pytest.raises(ValueError, match="estimator"):
        global_mi_objective(scores, "nwj")
    with pytest.raises(ValueError, match="negative"):
        global_mi_objective(scores[:1, :1], "mine")


def _loop_local(
    scores: torch.Tensor, sentence_mask: torch.Tensor, estimator: str, negative_mask: torch.Tensor | None
) -> tuple[float, list[list[int]]]:
    """Naive reference of Eq. 5 with the per-sentence anchors, one (j, m, n) at a time."""
    batch, _, regions, sentences = scores.shape
    allowed = torch.ones(batch, batch, dtype=torch.bool) if negative_mask is None else negative_mask
    total = 0.0
    argmax = [[-1] * sentences for _ in range(batch)]
    for j in range(batch):
        for m in range(sentences):
            if not sentence_mask[j, m]:
                continue
            terms = []
            for n in range(regions):
                if estimator == "cpc":
                    cands = [scores[i, j, n, m].item() for i in range(batch) if allowed[i, j]]
                    terms.append(scores[j, j, n, m].item() - _lse(cands) + math.log(len(cands)))
                else:
                    marg = [scores[i, j, n, m].item() for i in range(batch) if i != j and allowed[i, j]]
                    terms.append(scores[j, j, n, m].item() - (_lse(marg) - math.log(len(marg))))
            best = max(range(regions), key=lambda n: terms[n])
            argmax[j][m] = best
            total += terms[best]
    return total / batch, argmax


@pytest.mark.parametrize("estimator", ["cpc", "mine"])
def test_local_objective_matches_loop_reference(estimator: str) -> None:
    gen = torch.Generator().manual_seed(3)
    batch, regions, sentences = 4, 5, 3
    scores = torch.randn(batch, batch, regions, sentences, generator=gen, dtype=torch.float64)
    sentence_mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    negative_mask = torch.ones(batch, batch, dtype=torch.bool)
    negative_mask[0, 3] = negative_mask[3, 0] = False
    for neg in (None, negative_mask):
        value, argmax = local_mi_objective(scores, sentence_mask, estimator, neg, return_argmax=True)
        expected, expected_argmax = _loop_local(scores, sentence_mask, estimator, neg)
        assert value.item() == pytest.approx(expected, abs=1e-12)
        assert argmax.tolist() == expected_argmax


def test_local_objective_hand_computed() -> None:
    # B = 2, one region, one sentence: CPC for report j is s_jj − log(s_0j e + s_1j e) + log 2
    scores = torch.tensor([[2.0, 0.0], [1.0, 3.0]], dtype=torch.float64)[:, :, None, None]  # [i, j, 1, 1]
    mask = torch.ones(2, 1, dtype=torch.bool)
    cpc = ((2 - math.log(math.exp(2) + math.e)) + (3 - math.log(1 + math.exp(3)))) / 2 + math.log(2)
    assert local_mi_objective(scores, mask, "cpc").item() == pytest.approx(cpc, abs=1e-12)
    mine = ((2 - 1) + (3 - 0)) / 2  # one marginal sample each: s_jj − s_ij
    assert local_mi_objective(scores, mask, "mine").item() == pytest.approx(mine, abs=1e-12)
    # a second region that is better for report 0 only is selected by the max
    two = torch.cat([scores, torch.tensor([[5.0, 0.0], [1.0, 0.0]], dtype=torch.float64)[:, :, None, None]], dim=2)
    value, argmax = local_mi_objective(two, mask, "mine", return_argmax=True)
    assert argmax.tolist() == [[1], [0]]
    assert value.item() == pytest.approx(((5 - 1) + (3 - 0)) / 2, abs=1e-12)


def test_local_objective_properties() -> None:
    gen = torch.Generator().manual_seed(4)
    batch, regions, sentences = 6, 4, 5
    scores = 3 * torch.randn(batch, batch, regions, sentences, generator=gen)
    sentence_mask = torch.rand(batch, sentences, generator=gen) > 0.4
    sentence_mask[:, 0] = True
    ref = local_mi_objective(scores, sentence_mask, "cpc")
    # every sentence term is ≤ log B
    assert ref.item() <= math.log(batch) * sentence_mask.sum(1).float().mean().item() + 1e-5
    # padded sentences: any value (NaN included) changes neither value nor gradient
    padded = (~sentence_mask)[None, :, None, :].expand(batch, batch, regions, sentences)
    changed = scores.clone()
    changed[padded] = float("nan")
    changed.requires_grad_()
    value = local_mi_objective(changed, sentence_mask, "cpc")
    assert value.item() == pytest.approx(ref.item(), abs=1e-6)
    value.backward()
    assert torch.isfinite(changed.grad).all()
    assert changed.grad[padded].abs().max() == 0
    # gradients reach both joint and marginal scores of the selected regions
    assert changed.grad.diagonal(dim1=0, dim2=1).abs().sum() > 0
    # consistent relabelling of the batch, of regions, or of sentences changes nothing
    perm = torch.randperm(batch, generator=gen)
    permuted = local_mi_objective(scores[perm][:, perm], sentence_mask[perm], "cpc")
    assert permuted.item() == pytest.approx(ref.item(), abs=1e-5)
    region_perm = torch.randperm(regions, generator=gen)
    region_permuted = local_mi_objective(scores[:, :, region_perm], sentence_mask, "cpc")
    assert region_permuted.item() == pytest.approx(ref.item(), abs=1e-6)
    # a matched batch (joint scores high) beats a shuffled one
    matched = scores + 5 * torch.eye(batch)[:, :, None, None]
    shuffled = matched.roll(1, dims=1)  # report j now sits with image j − 1's joint slot
    matched_value = local_mi_objective(matched, sentence_mask, "mine")
    assert matched_value.item() > local_mi_objective(shuffled, sentence_mask, "mine").item()


def test_local_objective_rejects_bad_input() -> None:
    scores = torch.randn(3, 3, 2, 4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"\(3, 2, 2, 4\)"):
        local_mi_objective(torch.randn(3, 2, 2, 4), mask)
    with pytest.raises(ValueError, match="sentence_mask"):
        local_mi_objective(scores, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="estimator"):
        local_mi_objective(scores, mask, "repo_infonce")
    isolated = torch.eye(3, dtype=torch.bool)
    with pytest.raises(ValueError, match="marginal"):
        local_mi_objective(scores, mask, "mine", negative_mask=isolated)
    # CPC with every other image excluded has only the positive: estimate exactly log 1 = 0
    assert local_mi_objective(scores, mask, "cpc", negative_mask=isolated).item() == pytest.approx(0.0, abs=1e-6)


# --- ground truth: correlated Gaussians --------------------------------------------------------


class _ConcatCritic(nn.Module):
    """The paper's critic design: an MLP on the concatenation [x; y], applied to all B × B pairs."""

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        pairs = torch.cat([x[:, None].expand(batch, batch, -1), y[None, :].expand(batch, batch, -1)], dim=-1)
        return self.net(pairs).squeeze(-1)


def _gaussian_pairs(n: int, dim: int, rho: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, dim, generator=gen)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, dim, generator=gen)
    return x, y


@pytest.fixture
def one_thread():
    """Hundreds of tiny optimiser steps: on a shared 2-core machine a second intra-op thread only
    spins (measured 25 s with one thread vs 315 s with two under load), so use one and restore."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _train_and_estimate(dim: int, rho: float, estimator: str, batch: int, eval_batch: int, steps: int = 250) -> float:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    critic = _ConcatCritic(dim)
    optimiser = torch.optim.Adam(critic.parameters(), lr=2e-3)
    for _ in range(steps):
        loss = -global_mi_objective(critic(*_gaussian_pairs(batch, dim, rho, gen)), estimator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():  # held-out samples
        values = [global_mi_objective(critic(*_gaussian_pairs(eval_batch, dim, rho, gen)), estimator) for _ in range(5)]
    return torch.stack(values).mean().item()


@pytest.mark.parametrize("rho", [0.5, 0.8])
@pytest.mark.parametrize("estimator", ["cpc", "mine"])
@pytest.mark.usefixtures("one_thread")
def test_bounds_approach_true_mi_of_correlated_gaussians(rho: float, estimator: str) -> None:
    dim = 5
    true_mi = -dim / 2 * math.log(1 - rho**2)  # 0.72 and 2.55 nats
    estimate = _train_and_estimate(dim, rho, estimator, batch=64, eval_batch=256)
    assert estimate < true_mi + 0.1  # a lower bound, up to held-out estimation noise
    assert estimate > 0.8 * true_mi


@pytest.mark.usefixtures("one_thread")
def test_cpc_saturates_at_log_batch_while_mine_does_not() -> None:
    dim, rho, batch = 5, 0.99, 32
    true_mi = -dim / 2 * math.log(1 - rho**2)  # 9.79 nats ≫ log 32 = 3.47
    cpc = _train_and_estimate(dim, rho, "cpc", batch=batch, eval_batch=batch)
    assert math.log(batch) - 0.25 < cpc <= math.log(batch)
    mine = _train_and_estimate(dim, rho, "mine", batch=batch, eval_batch=256)
    assert mine > math.log(batch) + 2.0


# --------------------------------------------------------------------------------------------------
# Local critic on all pairs: the blocked MLP against a copy of the broadcast one
# --------------------------------------------------------------------------------------------------


def _reference_pairwise_local(critic, a, b, b_mask=None):
    """Copy of ``ConcatCritic.pairwise_local`` as of a53f9dd (autograd through ``critic.rest``)."""
    w_a, w_b = critic._split()
    ha = torch.nn.functional.linear(a, w_a)
    if b_mask is None:
        hb = torch.nn.functional.linear(b, w_b, critic.first.bias)
        return critic.rest(ha[:, None, :, None, :] + hb[None, :, None, :, :]).squeeze(-1)
    hb = torch.nn.functional.linear(b[b_mask], w_b, critic.first.bias)
    real = critic.rest(ha[:, :, None, :] + hb[None, None, :, :]).squeeze(-1)
    n_b, n_m = b_mask.shape
    flat = real.new_zeros(n_b * n_m, a.shape[0], a.shape[1])
    flat = flat.index_put((b_mask.reshape(-1).nonzero().squeeze(1),), real.permute(2, 0, 1))
    return flat.reshape(n_b, n_m, a.shape[0], a.shape[1]).permute(2, 0, 3, 1)


@pytest.mark.parametrize("hidden", [(24, 16), (20,), (16, 12, 8)])
@pytest.mark.parametrize("block_elements", [1 << 22, 1, 700])
@pytest.mark.parametrize("masked", [True, False])
def test_local_critic_and_objective_match_the_broadcast_reference(monkeypatch, hidden, block_elements, masked) -> None:
    """Local MI (critic on every pair + Eq. 5): values and all gradients within 1e-5, float32."""
    from localign.models import heads
    from localign.models.heads import ConcatCritic

    monkeypatch.setattr(heads, "CRITIC_BLOCK_ELEMENTS", block_elements)
    torch.manual_seed(0)
    critic = ConcatCritic(6, 5, hidden=hidden)
    gen = torch.Generator().manual_seed(1)
    regions = torch.randn(7, 4, 6, generator=gen)
    sentences = torch.randn(7, 5, 5, generator=gen)
    mask = torch.arange(5)[None] < torch.tensor([5, 1, 3, 2, 5, 4, 1])[:, None]
    mask[3, 0] = False  # a hole
    negatives = torch.ones(7, 7, dtype=torch.bool)
    negatives[0, 2] = negatives[2, 0] = False
    params = list(critic.parameters())

    def run(fn):
        a, b = regions.clone().requires_grad_(), sentences.clone().requires_grad_()
        scores = fn(critic, a, b, mask if masked else None)
        mi = local_mi_objective(scores, mask, "cpc", negatives) + 0.3 * local_mi_objective(scores, mask, "mine")
        return [scores, mi, *torch.autograd.grad(mi + scores.square().mean(), [a, b, *params])]

    expected = run(_reference_pairwise_local)
    got = run(lambda c, a, b, m: c.pairwise_local(a, b, m))
    for i, (e, g) in enumerate(zip(expected, got)):
        assert e.shape == g.shape, i
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-5), (i, (g - e).abs().max().item())


def test_local_critic_without_gradients_and_in_float64() -> None:
    from localign.models.heads import ConcatCritic

    critic = ConcatCritic(3, 4, hidden=(8, 6)).double()
    a, b = torch.randn(3, 2, 3, dtype=torch.float64), torch.randn(4, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        got = critic.pairwise_local(a, b)
        expected = _reference_pairwise_local(critic, a, b)
    assert got.dtype == torch.float64 and torch.allclose(got, expected, atol=1e-12)
    a.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: critic.pairwise_local(x, b).sum(), (a,))


def test_region_selection_critic_is_a_bound_where_eq5_is_biased_upwards():
    """A sharp critic that knows nothing: Eq. 5's max over per-region estimates reports MI on
    shuffled pairs; pooling each image's best region first (selection "critic") does not."""
    import math

    from localign.losses import local_mi_objective

    gen = torch.Generator().manual_seed(0)
    b, n, m = 16, 16, 4
    mask = torch.ones(b, m, dtype=torch.bool)
    biased, pooled = [], []
    for _ in range(20):
        scores = 3.0 * torch.randn(b, b, n, m, generator=gen)  # independent of the pairing
        biased.append(float(local_mi_objective(scores, mask, "cpc")) / m)
        pooled.append(float(local_mi_objective(scores, mask, "cpc", region_selection="critic")) / m)
    assert sum(biased) / 20 > 0.6 * math.log(b)  # 1.8 of log 16 = 2.8 nats per sentence, from nothing
    assert sum(pooled) / 20 < 0.0  # a bound: below the true 0
    # a critic that does know the pairing: both selections find it, and "critic" is exactly CPC of the pooled scores
    scores = torch.randn(b, b, n, m, generator=gen)
    scores[torch.arange(b), torch.arange(b), 3] += 10.0
    est, region = local_mi_objective(scores, mask, "cpc", region_selection="critic", return_argmax=True)
    assert (region == 3).all()
    g = scores.amax(dim=2)  # [B, B, M]
    by_hand = sum((g[j, j] - torch.logsumexp(g[:, j], dim=0) + math.log(b)).sum() for j in range(b)) / b
    torch.testing.assert_close(est, by_hand)
    with pytest.raises(ValueError, match="region_selection"):
        local_mi_objective(scores, mask, "cpc", region_selection="best")
