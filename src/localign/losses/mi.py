"""Mutual-information lower bounds of Liao et al. (MICCAI 2021; spec §1, checklist 8 and 12).

Every function here returns an **MI estimate in nats, to be maximised** (the training code
negates it). The inputs are critic outputs ``f(z^I, z^R)``; the critic (an MLP on the
concatenation ``[z^I; z^R]``) lives in :mod:`localign.models`.

Score matrices are laid out ``[images, reports]``: ``scores[i, j] = f(image i, report j)``, so the
diagonal holds the joint (matched) samples and the off-diagonal entries are samples from the
product of the marginals. An optional ``negative_mask`` of the same layout marks which pairs may
serve as negatives/candidates: ``False`` excludes a pair, e.g. an image and a report from the same
study (the official repository skips those pairs, spec §1.2). The diagonal must stay ``True``.

Estimators:

* **MINE** (Donsker–Varadhan, the paper's Eq. 3): ``mean(joint) − log mean(exp(marginal))``.
* **CPC** (InfoNCE, Eq. 4): per anchor ``f_ii − log Σ_j exp f_ij``, plus ``log n`` (n = number of
  candidates, B without a mask) so that the value reads as an MI estimate; it can never exceed
  ``log n``.
* ``repo_infonce``: what the official repository calls "infonce" (:func:`repo_infonce_loss`), which
  is *not* CPC (see there).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from localign.losses.contrastive import check_bool_mask, check_rank

GLOBAL_ESTIMATORS = ("cpc", "mine", "repo_infonce")
LOCAL_ESTIMATORS = ("cpc", "mine")
#: how the local objective picks a sentence's region (see :func:`local_mi_objective`)
REGION_SELECTIONS = ("estimate", "critic")


def mine_lower_bound(scores_joint: Tensor, scores_marginal: Tensor) -> Tensor:
    """Donsker–Varadhan lower bound: ``mean(joint) − (logsumexp(marginal) − log n_marginal)``.

    :param scores_joint: critic outputs on joint samples, any shape (all entries are samples)
    :param scores_marginal: critic outputs on product-of-marginal samples, any shape
    :return: [] the MI estimate in nats
    """
    if scores_joint.numel() == 0 or scores_marginal.numel() == 0:
        raise ValueError(
            f"need at least one joint and one marginal score, got shapes "
            f"{tuple(scores_joint.shape)} and {tuple(scores_marginal.shape)}"
        )
    log_mean_exp = torch.logsumexp(scores_marginal.reshape(-1), dim=0) - math.log(scores_marginal.numel())
    return scores_joint.mean() - log_mean_exp


def _check_square_scores(scores: Tensor) -> int:
    check_rank("scores", scores, 2, "[B, B]")
    if scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be square [B, B] (images × reports), got shape {tuple(scores.shape)}")
    return scores.shape[0]


def _candidate_mask(negative_mask: Tensor | None, batch: int, device: torch.device) -> Tensor:
    """``[B, B]`` bool: which (image, report) pairs are valid candidates; the diagonal is required."""
    if negative_mask is None:
        return torch.ones(batch, batch, dtype=torch.bool, device=device)
    check_bool_mask("negative_mask", negative_mask, (batch, batch))
    if not bool(negative_mask.diagonal().all()):
        missing = (~negative_mask.diagonal()).nonzero().flatten().tolist()
        raise ValueError(f"negative_mask must be True on the diagonal (the positives); False at {missing}")
    return negative_mask


def cpc_lower_bound(scores: Tensor, negative_mask: Tensor | None = None) -> Tensor:
    """CPC/InfoNCE lower bound with images as anchors and reports as candidates.

        Î = mean_i [ s_ii − log Σ_{j valid} exp s_ij + log n_i ]

    with ``n_i`` the number of valid candidates of anchor ``i`` (``B`` without a mask). Each term
    is at most ``log n_i``, so the estimate is at most ``log B``: CPC saturates when the true MI
    exceeds ``log B``.

    :param scores: [B, B] critic matrix, rows = anchors (images), columns = candidates (reports),
        diagonal = positives
    :param negative_mask: [B, B] bool, False excludes a candidate (e.g. two images of one study);
        the diagonal must be True
    :return: [] the MI estimate in nats
    """
    batch = _check_square_scores(scores)
    candidates = _candidate_mask(negative_mask, batch, scores.device)
    logits = scores.masked_fill(~candidates, float("-inf"))
    log_counts = candidates.sum(dim=1).to(scores.dtype).log()
    return (scores.diagonal() - torch.logsumexp(logits, dim=1) + log_counts).mean()


def _off_diagonal_negatives(negative_mask: Tensor | None, batch: int, device: torch.device) -> Tensor:
    candidates = _candidate_mask(negative_mask, batch, device)
    negatives = candidates & ~torch.eye(batch, dtype=torch.bool, device=device)
    if not bool(negatives.any()):
        raise ValueError(f"no negative (off-diagonal, unmasked) pair among the B={batch} samples")
    return negatives


def repo_infonce_loss(scores: Tensor, negative_mask: Tensor | None = None) -> Tensor:
    """The official repository's ``infonce_bound_loss``: ``logsumexp(negatives) − mean(positives)``.

    Negatives are all off-diagonal pairs left by ``negative_mask`` (the repository's
    ``create_mi_pairs`` skips same-study pairs), pooled into one logsumexp. This is the
    Donsker–Varadhan loss plus the constant ``log|N|``: there is no per-anchor normalisation and
    the positive is not in the denominator, so it is **not** the CPC estimator of the paper's
    Eq. 4. Its gradients equal DV's whenever ``|N|`` is fixed. Returned as a loss (to minimise),
    so that it can be compared with the repository's logged values.

    :param scores: [B, B] critic matrix (images × reports)
    :param negative_mask: [B, B] bool, False excludes a pair from the negatives; diagonal True
    :return: [] the loss value
    """
    batch = _check_square_scores(scores)
    negatives = _off_diagonal_negatives(negative_mask, batch, scores.device)
    return torch.logsumexp(scores[negatives], dim=0) - scores.diagonal().mean()


def global_mi_objective(scores: Tensor, estimator: str = "cpc", negative_mask: Tensor | None = None) -> Tensor:
    """Global MI estimate between image and report vectors from a ``[B, B]`` critic matrix.

    * ``"cpc"``: :func:`cpc_lower_bound` (the paper's CPC; at most ``log B``).
    * ``"mine"``: Donsker–Varadhan with the diagonal as joint samples and the valid off-diagonal
      entries as marginal samples (the paper's MINE, and the repository's ``dv_bound_loss``
      negated).
    * ``"repo_infonce"``: the repository's "infonce" choice read as an estimate,
      ``log|N| − repo_infonce_loss``. This is identical to ``"mine"`` by construction: the
      repository's "infonce" is DV shifted by the constant ``log|N|`` (spec §1.2), so training
      with it is training with DV. It is offered under its own name so that a run configured
      after the repository resolves to what the repository computes, not to CPC.

    :param scores: [B, B] critic matrix, ``scores[i, j] = f(image i, report j)``, diagonal joint
    :param estimator: "cpc", "mine" or "repo_infonce"
    :param negative_mask: [B, B] bool, False excludes a pair as negative/candidate; diagonal True
    :return: [] the MI estimate in nats (to maximise)
    """
    if estimator == "cpc":
        return cpc_lower_bound(scores, negative_mask)
    if estimator not in GLOBAL_ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {GLOBAL_ESTIMATORS}")
    batch = _check_square_scores(scores)
    negatives = _off_diagonal_negatives(negative_mask, batch, scores.device)
    if estimator == "mine":
        return mine_lower_bound(scores.diagonal(), scores[negatives])
    num_negatives = negatives.sum().to(scores.dtype)
    return num_negatives.log() - repo_infonce_loss(scores, negative_mask)


def local_mi_objective(
    scores: Tensor,
    sentence_mask: Tensor,
    estimator: str = "cpc",
    negative_mask: Tensor | None = None,
    return_argmax: bool = False,
    region_selection: str = "estimate",
) -> Tensor | tuple[Tensor, Tensor]:
    """The paper's local objective (Eq. 5): per sentence, the best-matching image region.

    ``scores[i, j, n, m] = f(region n of image i, sentence m of report j)``; ``i == j`` are the
    joint samples. For report ``j``, sentence ``m`` and region ``n`` the MI term takes the sentence
    as anchor and region ``n`` of the images ``i`` as candidates (the other images' region ``n``
    are the marginal samples):

    * CPC:  ``s_jjnm − log Σ_{i valid} exp s_ijnm + log n_j``  (``n_j = B`` without a mask);
    * MINE: ``s_jjnm − (log Σ_{i≠j valid} exp s_ijnm − log(n_j − 1))``  (DV per anchor).

    Then ``max_n`` (one-way: every sentence describes some region, not every region is described),
    a sum over the valid sentences ``m`` and a **mean over the reports** ``j``. The paper sums over
    pairs; averaging over the batch keeps the scale independent of B (the optimum is the same).
    Padded sentences contribute nothing: their scores are replaced by zeros before use, so their
    values (even non-finite ones) change neither the value nor the gradient.

    :param scores: [B, B, N, M] critic scores (images × reports × regions × sentences)
    :param sentence_mask: [B, M] bool, True = real sentence of report j
    :param estimator: "cpc" or "mine"
    :param negative_mask: [B, B] bool over (image i, report j), False excludes image i as a
        candidate/marginal sample for report j (same study); the diagonal must be True
    :param return_argmax: also return the selected region per sentence
    :param region_selection: ``"estimate"`` (Eq. 5 as written: the max over regions of the
        per-region estimates) or ``"critic"``: every image, joint or marginal, is scored by its own
        best region, ``g(i, j, m) = max_n scores[i, j, n, m]``, and the estimator runs on ``g``.
        ``"estimate"`` selects with the joint sample: the max of N noisy per-region estimates is
        biased upwards, towards ``log B`` per sentence for a sharp critic that knows nothing (on
        shuffled pairs as on true ones). ``g`` is a critic of (image, sentence) like any other, so
        ``"critic"`` keeps the estimate a bound: it is at most 0 in expectation on shuffled pairs.
    :return: [] the MI estimate in nats (to maximise); with ``return_argmax`` also
        [B, M] int64 region index per (report, sentence), −1 for padded sentences (``"critic"``:
        the joint image's best region)
    """
    check_rank("scores", scores, 4, "[B, B, N, M]")
    batch, batch_reports, _, num_sentences = scores.shape
    if batch != batch_reports:
        raise ValueError(f"scores must be [B, B, N, M] with as many images as reports, got {tuple(scores.shape)}")
    check_bool_mask("sentence_mask", sentence_mask, (batch, num_sentences))
    if estimator not in LOCAL_ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {LOCAL_ESTIMATORS}")
    if region_selection not in REGION_SELECTIONS:
        raise ValueError(f"unknown region_selection {region_selection!r}; expected one of {REGION_SELECTIONS}")
    candidates = _candidate_mask(negative_mask, batch, scores.device)

    real = sentence_mask[None, :, None, :]
    scores = torch.where(real, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    if region_selection == "critic":
        pooled, region = scores.max(dim=2, keepdim=True)  # [B(i), B(j), 1, M]: each image's own best region
        estimate = local_mi_objective(pooled, sentence_mask, estimator, negative_mask)
        if return_argmax:
            best_region = region.squeeze(2).diagonal(dim1=0, dim2=1).transpose(0, 1)  # [B(j), M]
            return estimate, best_region.masked_fill(~sentence_mask, -1)
        return estimate
    joint = scores.diagonal(dim1=0, dim2=1).permute(2, 0, 1)  # [B(j), N, M]

    if estimator == "cpc":
        samples = candidates
        log_normaliser = samples.sum(dim=0).to(scores.dtype).log()
    else:
        samples = candidates & ~torch.eye(batch, dtype=torch.bool, device=scores.device)
        counts = samples.sum(dim=0)
        if not bool((counts > 0).all()):
            empty = (counts == 0).nonzero().flatten().tolist()
            raise ValueError(f"MINE needs at least one marginal image per report; none for reports {empty}")
        log_normaliser = counts.to(scores.dtype).log()
    masked = scores.masked_fill(~samples[:, :, None, None], float("-inf"))
    log_partition = torch.logsumexp(masked, dim=0)  # [B(j), N, M]
    per_region = joint - log_partition + log_normaliser[:, None, None]

    best, best_region = per_region.max(dim=1)  # [B(j), M]
    best = torch.where(sentence_mask, best, torch.zeros((), dtype=best.dtype, device=best.device))
    estimate = best.sum(dim=1).mean()
    if return_argmax:
        return estimate, best_region.masked_fill(~sentence_mask, -1)
    return estimate
