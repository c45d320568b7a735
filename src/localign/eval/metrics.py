"""Evaluation metrics as pure functions over numpy arrays or torch tensors.

Every function's docstring opens with the precise definition of what it computes; these paragraphs
are the definitions quoted in the book, so a number produced here can be reproduced by hand.

* Retrieval: :func:`retrieval_ranks`, :func:`recall_at_k`, :func:`chance_recall_at_k`
  (LIMITR's R@K protocol, spec §3.6, with an explicit candidate pool and tie rule).
* Classification: :func:`auroc_per_class` (per-class and macro AUROC with unlabelled entries
  ignored), :func:`edema_ordinal_aucs` (local MI's three EdemaSeverity AUCs, spec §1.1).
* Segmentation: :func:`dice_dataset` (LoVT's pooled Dice, spec §2.8), :func:`dice_per_image`,
  :func:`mean_dice_per_image`.
* Detection: :func:`box_iou`, :func:`box_map` (LoVT's RSNA mAP over IoU 0.4:0.05:0.75, spec §2.8).

Inputs may be numpy arrays, torch tensors (moved to the CPU and detached) or nested lists. Nothing
is dropped silently: invalid values raise ``ValueError`` naming the argument and the value, and
documented exclusions (unlabelled entries, undefined AUROCs) are counted or logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy.special import digamma

logger = logging.getLogger(__name__)

TieRule = Literal["pessimistic", "expected"]
EDEMA_THRESHOLD_NAMES = ("0 vs 1,2,3", "0,1 vs 2,3", "0,1,2 vs 3")


# --------------------------------------------------------------------------------------------------
# input conversion
# --------------------------------------------------------------------------------------------------
def as_numpy(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """``x`` (numpy array, torch tensor, or nested sequence) as a numpy array of ``dtype``.

    Torch tensors are detached and moved to the CPU. ``dtype=None`` keeps the input dtype (used for
    boolean masks). Float64 is the default because every metric here is an average over many
    elements, and float32 accumulation would change the last reported digit.
    """
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
                x = x.float()
            x = x.numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency, but numpy use needs none
        pass
    try:
        return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to a numeric array: {err}") from err


def _require_finite(a: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))
        raise ValueError(
            f"{name}: {len(bad)} non-finite value(s) (NaN/inf), first at index {tuple(int(i) for i in bad[0])} "
            f"= {a[tuple(bad[0])]}"
        )


# --------------------------------------------------------------------------------------------------
# retrieval
# --------------------------------------------------------------------------------------------------
def _higher_and_tied(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row i: #candidates j != i with S[i, j] > S[i, i], and # with S[i, j] == S[i, i]."""
    n = scores.shape[0]
    match = np.diagonal(scores)[:, None]
    higher = np.empty(n, dtype=np.int64)
    tied = np.empty(n, dtype=np.int64)
    # row blocks keep the boolean temporaries small for split-sized (several thousand) pools
    block = 1024
    for start in range(0, n, block):
        rows = scores[start : start + block]
        m = match[start : start + block]
        higher[start : start + block] = (rows > m).sum(axis=1)
        tied[start : start + block] = (rows == m).sum(axis=1) - 1  # minus the match itself
    return higher, tied


def _check_scores(scores: Any) -> np.ndarray:
    s = as_numpy(scores, "scores")
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(
            f"scores: expected a square [N_img, N_txt] matrix with N_img == N_txt (the diagonal is the "
            f"matching pair), got shape {tuple(s.shape)}"
        )
    if s.shape[0] == 0:
        raise ValueError("scores: empty matrix (N = 0)")
    _require_finite(s, "scores")
    return s


def _check_ties(ties: str) -> None:
    if ties not in ("pessimistic", "expected"):
        raise ValueError(f"ties: expected 'pessimistic' or 'expected', got {ties!r}")


def retrieval_ranks(scores: Any, ties: TieRule = "pessimistic") -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of the matching item for every query, in both retrieval directions.

    Definition: for a square score matrix S (rows = images, columns = texts, S[i, i] the matching
    pair, higher = more similar), the image→text rank of image i is ρ_i = g_i + t_i under the
    ``"pessimistic"`` tie rule and ρ_i = g_i + t_i / 2 under the ``"expected"`` rule, where
    g_i = #{j ≠ i : S[i, j] > S[i, i]} counts candidates scored strictly higher than the match and
    t_i = #{j ≠ i : S[i, j] = S[i, i]} counts candidates tied with it. The pessimistic rule places
    the match after every tied candidate (ties count against the model, so a constant score matrix
    gets the worst rank N − 1, never a perfect one); the expected rule is the mean position under a
    uniformly random tie-break. Without ties both equal LIMITR's position of i in argsort(−S[i]).
    Text→image ranks are the same on Sᵀ.

    :param scores: [N, N] finite scores; the diagonal holds the matching pairs.
    :param ties: ``"pessimistic"`` (default) or ``"expected"``.
    :return: (i2t_ranks [N], t2i_ranks [N]); integer-valued floats under ``"pessimistic"``.
    """
    _check_ties(ties)
    s = _check_scores(scores)
    out = []
    for matrix in (s, s.T):
        g, t = _higher_and_tied(np.ascontiguousarray(matrix))
        out.append((g + t).astype(np.float64) if ties == "pessimistic" else g + t / 2.0)
    return out[0], out[1]


def _harmonic(n: np.ndarray) -> np.ndarray:
    """H_n = Σ_{k=1..n} 1/k for integer arrays n ≥ 0 (H_0 = 0)."""
    return digamma(np.asarray(n, dtype=np.float64) + 1.0) + np.euler_gamma


def _direction_metrics(matrix: np.ndarray, ks: tuple[int, ...], ties: TieRule) -> dict[str, float]:
    g, t = _higher_and_tied(np.ascontiguousarray(matrix))
    out: dict[str, float] = {}
    if ties == "pessimistic":
        rank = (g + t).astype(np.float64)
        for k in ks:
            out[f"R@{k}"] = 100.0 * float(np.mean(rank < k))
        out["mrr"] = float(np.mean(1.0 / (rank + 1.0)))
    else:
        # the match sits uniformly at one of the t + 1 positions g, ..., g + t
        rank = g + t / 2.0
        for k in ks:
            out[f"R@{k}"] = 100.0 * float(np.mean(np.clip(k - g, 0, t + 1) / (t + 1.0)))
        out["mrr"] = float(np.mean((_harmonic(g + t + 1) - _harmonic(g)) / (t + 1.0)))
    out["medr"] = float(math.floor(float(np.median(rank)))) + 1.0
    out["meanr"] = float(np.mean(rank)) + 1.0
    return out


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks_t = tuple(ks)
    if not ks_t or any(not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1 for k in ks_t):
        raise ValueError(f"ks: expected a non-empty sequence of positive integers, got {ks!r}")
    if len(set(ks_t)) != len(ks_t):
        raise ValueError(f"ks: duplicate values in {ks!r}")
    return tuple(int(k) for k in ks_t)


def recall_at_k(
    scores: Any,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
    ties: TieRule = "pessimistic",
) -> dict[str, float]:
    """Image→text and text→image retrieval metrics (R@K, median/mean rank, MRR) over a stated pool.

    Definition: with ρ the 0-based rank of the matching item among the candidates of the pool
    (:func:`retrieval_ranks`; ties pessimistic by default, i.e. every tied candidate is ranked above
    the match), R@K = 100 · mean(ρ < K) in percent, medr = ⌊median ρ⌋ + 1, meanr = mean ρ + 1 and
    MRR = mean 1/(ρ + 1), for image→text (rows of S) and text→image (columns); r_sum is the sum of
    R@K over all K and both directions (LIMITR, spec §3.6). The candidate pool is explicit:
    ``chunk_size=None`` ranks each query against the whole split (pool = N); ``chunk_size=P`` is
    LIMITR's protocol, which splits the N pairs in their given order into ⌊N/P⌋ consecutive chunks of
    exactly P pairs, ranks each query only against the P candidates of its own chunk (the P×P
    diagonal block of S), and reports the unweighted mean over chunks of every metric (medr
    included, so it need not be an integer). The remainder rule is LIMITR's: the last N mod P pairs,
    which would form a smaller and therefore easier pool, are dropped (like LIMITR's dropped last
    incomplete validation batch), logged, and counted in ``n_dropped``; N < P is an error. Under
    ``ties="expected"`` every metric is the exact expectation over a uniformly random tie-break
    (medr and meanr use the expected rank g + t/2), so a constant score matrix scores exactly
    chance (:func:`chance_recall_at_k`), while the pessimistic rule gives it the worst rank.

    :param scores: [N_img, N_txt] finite scores with N_img == N_txt; S[i, i] is the matching pair.
        The pair order must be the evaluation order (chunks are consecutive rows/columns).
    :param ks: the K values (positive integers). K ≥ pool size gives R@K = 100 (logged).
    :param chunk_size: pool size P, or None for the whole split.
    :param ties: ``"pessimistic"`` (default) or ``"expected"``.
    :return: keys ``i2t_R@{K}``, ``t2i_R@{K}``, ``i2t_medr``, ``t2i_medr``, ``i2t_meanr``,
        ``t2i_meanr``, ``i2t_mrr``, ``t2i_mrr``, ``r_sum``, ``pool_size`` (P or N), ``n_chunks``,
        ``n_pairs`` (pairs evaluated) and ``n_dropped`` (remainder pairs not evaluated).
    """
    ks_t = _check_ks(ks)
    _check_ties(ties)
    s = _check_scores(scores)
    n = s.shape[0]
    if chunk_size is None:
        pool = n
    else:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive integer or None, got {chunk_size!r}")
        pool = int(chunk_size)
        if n < pool:
            raise ValueError(
                f"chunk_size={pool} is larger than the number of pairs N={n}: no complete chunk exists "
                f"(use chunk_size=None to rank against the whole split)"
            )
    n_chunks = n // pool
    n_dropped = n - n_chunks * pool
    if n_dropped:
        logger.info(
            "recall_at_k: %d chunks of %d pairs; dropping the last %d pairs (incomplete chunk)",
            n_chunks,
            pool,
            n_dropped,
        )
    if max(ks_t) >= pool:
        logger.warning("recall_at_k: K=%d >= pool size %d, so R@%d is trivially 100", max(ks_t), pool, max(ks_t))

    per_chunk: list[dict[str, float]] = []
    for c in range(n_chunks):
        block = s[c * pool : (c + 1) * pool, c * pool : (c + 1) * pool]
        row: dict[str, float] = {}
        for prefix, matrix in (("i2t", block), ("t2i", block.T)):
            for key, value in _direction_metrics(matrix, ks_t, ties).items():
                row[f"{prefix}_{key}"] = value
        per_chunk.append(row)

    result = {key: float(np.mean([r[key] for r in per_chunk])) for key in per_chunk[0]}
    result["r_sum"] = float(sum(result[f"{p}_R@{k}"] for p in ("i2t", "t2i") for k in ks_t))
    result["pool_size"] = pool
    result["n_chunks"] = n_chunks
    result["n_pairs"] = n_chunks * pool
    result["n_dropped"] = n_dropped
    return result


def chance_recall_at_k(pool_size: int, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """The retrieval metrics of a random ranking: the chance reference for :func:`recall_at_k`.

    Definition: if the match's 0-based rank ρ is uniform on {0, …, P − 1} for a pool of P
    candidates, then R@K = 100 · min(K, P)/P, MRR = H_P / P (H_P the P-th harmonic number),
    meanr = (P + 1)/2 and medr = ⌊(P − 1)/2⌋ + 1 (the floor of the median rank plus one), identical
    in both directions; r_sum adds R@K over all K and both directions. These are the exact values that
    :func:`recall_at_k` returns with ``ties="expected"`` on a constant score matrix, and the
    expectation for i.i.d. continuous random scores.

    :param pool_size: P, the number of candidates per query.
    :param ks: the K values.
    :return: the keys of :func:`recall_at_k` except the chunk bookkeeping (``pool_size`` is kept).
    """
    ks_t = _check_ks(ks)
    if isinstance(pool_size, bool) or not isinstance(pool_size, (int, np.integer)) or pool_size < 1:
        raise ValueError(f"pool_size: expected a positive integer, got {pool_size!r}")
    p = int(pool_size)
    out: dict[str, float] = {}
    for prefix in ("i2t", "t2i"):
        for k in ks_t:
            out[f"{prefix}_R@{k}"] = 100.0 * min(k, p) / p
        out[f"{prefix}_mrr"] = float(_harmonic(np.array(p)) / p)
        out[f"{prefix}_medr"] = float(math.floor((p - 1) / 2)) + 1.0
        out[f"{prefix}_meanr"] = (p + 1) / 2.0
    out["r_sum"] = float(sum(out[f"{pre}_R@{k}"] for pre in ("i2t", "t2i") for k in ks_t))
    out["pool_size"] = p
    return out


# --------------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------------
def _binary_auroc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def auroc_per_class(
    y_true: Any,
    y_score: Any,
    class_names: Sequence[str],
) -> dict[str, float]:
    """Per-class AUROC with unlabelled entries ignored, and their macro average.

    Definition: for class c, the AUROC is scikit-learn's ``roc_auc_score`` (the probability that a
    random positive is scored above a random negative, ties counting one half) computed over the
    images whose label for c is 0 or 1; entries labelled NaN (unlabelled, e.g. CheXpert blanks, or
    uncertain labels the caller mapped to NaN) are excluded for that class only. A class whose
    remaining labels contain a single value has no defined AUROC: it is NaN, a warning names it, and
    it is excluded from ``macro``, the unweighted mean over the classes with a defined AUROC (NaN if
    none). Values are fractions in [0, 1], not percent.

    :param y_true: [N, C] labels in {0, 1, NaN}. Other values (e.g. CheXpert's −1 "uncertain")
        raise: map them first.
    :param y_score: [N, C] scores, any monotone scale (probabilities or logits); finite wherever the
        label is not NaN.
    :param class_names: C names, the keys of the result ("macro" is reserved).
    :return: ``{name: auroc, ..., "macro": mean}``.
    """
    y = as_numpy(y_true, "y_true")
    s = as_numpy(y_score, "y_score")
    names = list(class_names)
    if y.ndim != 2:
        raise ValueError(f"y_true: expected shape [N, C], got {tuple(y.shape)}")
    if s.shape != y.shape:
        raise ValueError(f"y_score: shape {tuple(s.shape)} differs from y_true shape {tuple(y.shape)}")
    if len(names) != y.shape[1]:
        raise ValueError(f"class_names: {len(names)} names for C={y.shape[1]} columns")
    if len(set(names)) != len(names) or "macro" in names:
        raise ValueError(f"class_names: names must be unique and not 'macro', got {names}")
    labelled = ~np.isnan(y)
    bad = labelled & (y != 0) & (y != 1)
    if bad.any():
        i, c = np.argwhere(bad)[0]
        raise ValueError(
            f"y_true: labels must be 0, 1 or NaN (unlabelled); found {y[i, c]} for class {names[c]!r} at row {i} "
            f"({int(bad.sum())} such entries; map uncertain labels before calling)"
        )
    if not np.all(np.isfinite(s[labelled])):
        raise ValueError("y_score: non-finite score for a labelled entry")
    result: dict[str, float] = {}
    for c, name in enumerate(names):
        m = labelled[:, c]
        yc = y[m, c]
        if yc.size == 0 or np.all(yc == yc[0]):
            logger.warning(
                "auroc_per_class: class %r has %d labelled entries with a single label value; AUROC is "
                "undefined (NaN) and excluded from the macro average",
                name,
                yc.size,
            )
            result[name] = float("nan")
            continue
        result[name] = _binary_auroc(yc, s[m, c])
    defined = [v for v in result.values() if not math.isnan(v)]
    result["macro"] = float(np.mean(defined)) if defined else float("nan")
    return result


def edema_ordinal_aucs(severity: Any, score: Any) -> dict[str, float]:
    """Local MI's three ordinal AUCs for pulmonary edema severity (EdemaSeverity, spec §1.1).

    Definition: severity s ∈ {0, 1, 2, 3} (none, vascular congestion, interstitial, alveolar) is
    binarised at each threshold k ∈ {1, 2, 3} as y_k = [s ≥ k], giving the three tasks
    "0 vs 1,2,3", "0,1 vs 2,3" and "0,1,2 vs 3"; each AUC is the binary AUROC of y_k against a
    severity score. A 1-D ``score`` is a single monotone severity score (e.g. the expected severity
    Σ_j j·p_j, or a regression output) used for all three thresholds. A [N, 4] ``score`` is read as
    class probabilities p_0..p_3 and converted per threshold to the cumulative probability
    P(s ≥ k) = Σ_{j ≥ k} p_j, the natural score for the binary task at k. Images with NaN severity
    are excluded (counted in ``n_unlabelled``). A threshold whose binarised labels have a single
    value gives NaN with a warning; ``mean`` is the unweighted mean of the defined AUCs (the
    "average AUC" of the paper's table). Values are fractions in [0, 1].

    :param severity: [N] in {0, 1, 2, 3} or NaN (unlabelled).
    :param score: [N] severity score, or [N, 4] class probabilities (non-negative, rows summing to
        1 within 1e-3; apply softmax to logits first).
    :return: ``{"0 vs 1,2,3": auc, "0,1 vs 2,3": auc, "0,1,2 vs 3": auc, "mean": m, "n": labelled
        count, "n_unlabelled": count}``.
    """
    sev = as_numpy(severity, "severity")
    sc = as_numpy(score, "score")
    if sev.ndim != 1:
        raise ValueError(f"severity: expected shape [N], got {tuple(sev.shape)}")
    if sc.ndim == 1:
        if sc.shape[0] != sev.shape[0]:
            raise ValueError(f"score: length {sc.shape[0]} differs from severity length {sev.shape[0]}")
    elif sc.ndim == 2:
        if sc.shape != (sev.shape[0], 4):
            raise ValueError(f"score: expected [N] or [N, 4] with N={sev.shape[0]}, got {tuple(sc.shape)}")
    else:
        raise ValueError(f"score: expected [N] or [N, 4], got {tuple(sc.shape)}")
    labelled = ~np.isnan(sev)
    bad = labelled & ~np.isin(sev, (0, 1, 2, 3))
    if bad.any():
        raise ValueError(
            f"severity: values must be 0, 1, 2, 3 or NaN; found {np.unique(sev[bad]).tolist()} "
            f"({int(bad.sum())} entries)"
        )
    sev_l = sev[labelled]
    sc_l = sc[labelled]
    _require_finite(sc_l, "score (labelled rows)")
    if sc.ndim == 2:
        if np.any(sc_l < 0) or not np.allclose(sc_l.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError(
                "score: a [N, 4] score must hold class probabilities (non-negative, rows summing to 1); "
                f"row sums range {sc_l.sum(axis=1).min():.4g}..{sc_l.sum(axis=1).max():.4g}, "
                f"min entry {sc_l.min():.4g} (apply softmax to logits first)"
            )
    result: dict[str, float] = {}
    for k, name in zip((1, 2, 3), EDEMA_THRESHOLD_NAMES):
        yk = (sev_l >= k).astype(np.float64)
        sk = sc_l if sc.ndim == 1 else sc_l[:, k:].sum(axis=1)
        if yk.size == 0 or np.all(yk == yk[0]):
            logger.warning("edema_ordinal_aucs: task %r has a single label value among %d images; NaN", name, yk.size)
            result[name] = float("nan")
        else:
            result[name] = _binary_auroc(yk, sk)
    defined = [result[n] for n in EDEMA_THRESHOLD_NAMES if not math.isnan(result[n])]
    result["mean"] = float(np.mean(defined)) if defined else float("nan")
    result["n"] = int(labelled.sum())
    result["n_unlabelled"] = int((~labelled).sum())
    return result


# --------------------------------------------------------------------------------------------------
# segmentation
# --------------------------------------------------------------------------------------------------
def _binarise_masks(pred: Any, target: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean [N, H*W] prediction and target from [N, H, W] or [N, 1, H, W] inputs."""
    p = as_numpy(pred, "pred", dtype=None)
    t = as_numpy(target, "target", dtype=None)
    for name, a in (("pred", p), ("target", t)):
        if a.ndim == 4 and a.shape[1] != 1:
            raise ValueError(
                f"{name}: shape {tuple(a.shape)} has {a.shape[1]} channels; expected [N, H, W] or [N, 1, H, W] "
                "(call once per class for multi-class masks)"
            )
        if a.ndim not in (3, 4):
            raise ValueError(f"{name}: expected [N, H, W] or [N, 1, H, W], got shape {tuple(a.shape)}")
    p = p.reshape(p.shape[0], -1) if p.ndim == 3 else p[:, 0].reshape(p.shape[0], -1)
    t = t.reshape(t.shape[0], -1) if t.ndim == 3 else t[:, 0].reshape(t.shape[0], -1)
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in shape after removing the channel axis: {p.shape} vs {t.shape}")
    if p.dtype != np.bool_:
        p = p.astype(np.float64)
        _require_finite(p, "pred")
        if p.min(initial=0.0) < 0.0 or p.max(initial=0.0) > 1.0:
            raise ValueError(
                f"pred: probabilities must lie in [0, 1], got range {p.min():.4g}..{p.max():.4g} "
                "(apply a sigmoid to logits first)"
            )
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold: expected a value in [0, 1], got {threshold}")
        p = p >= threshold
    if t.dtype != np.bool_:
        t = t.astype(np.float64)
        if not np.all((t == 0) | (t == 1)):
            raise ValueError(f"target: expected a boolean or 0/1 mask, found values {np.unique(t)[:5].tolist()}")
        t = t == 1
    return p, t


def dice_dataset(pred: Any, target: Any, threshold: float = 0.5) -> float:
    """LoVT's dataset-level Dice: one Dice over all test pixels pooled (micro F1).

    Definition: after binarising the prediction (a probability counts as positive when
    ``p ≥ threshold``; boolean masks are used as they are), TP, FP and FN are summed over every pixel
    of every image, and Dice = 2·TP / (2·TP + FP + FN). This is torchmetrics ``F1(average='micro')`` at
    threshold 0.5, which LoVT reports for all segmentation tasks (spec §2.8). Large objects therefore
    weigh more than small ones, and images without any foreground add only false positives. If no
    pixel of any image is positive in either prediction or target, the score is 1.0 (perfect
    agreement; the same convention as :func:`dice_per_image`).

    :param pred: [N, H, W] or [N, 1, H, W] probabilities in [0, 1] or booleans.
    :param target: same shape, boolean or 0/1.
    :param threshold: probability threshold (ignored for boolean ``pred``).
    :return: Dice in [0, 1].
    """
    p, t = _binarise_masks(pred, target, threshold)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom


def dice_per_image(pred: Any, target: Any, threshold: float = 0.5) -> np.ndarray:
    """Dice of every image separately.

    Definition: for image n, after binarising as in :func:`dice_dataset`,
    Dice_n = 2·TP_n / (2·TP_n + FP_n + FN_n) over its pixels; when prediction and target are both
    empty (the denominator is 0) Dice_n = 1.0, because an empty prediction for an image without a
    finding is correct (the convention of e.g. MONAI's ``ignore_empty=False`` and of the SIIM
    challenge). An empty prediction for a non-empty target scores 0, as does any prediction for an
    empty target.

    :param pred: [N, H, W] or [N, 1, H, W] probabilities in [0, 1] or booleans.
    :param target: same shape, boolean or 0/1.
    :param threshold: probability threshold (ignored for boolean ``pred``).
    :return: [N] Dice values in [0, 1].
    """
    p, t = _binarise_masks(pred, target, threshold)
    tp = np.count_nonzero(p & t, axis=1)
    fp = np.count_nonzero(p & ~t, axis=1)
    fn = np.count_nonzero(~p & t, axis=1)
    denom = 2 * tp + fp + fn
    out = np.ones(p.shape[0], dtype=np.float64)
    nonempty = denom > 0
    out[nonempty] = 2.0 * tp[nonempty] / denom[nonempty]
    return out


def mean_dice_per_image(pred: Any, target: Any, threshold: float = 0.5) -> float:
    """Mean over images of :func:`dice_per_image` (every image weighs equally; empty/empty = 1.0).

    :param pred: [N, H, W] or [N, 1, H, W] probabilities in [0, 1] or booleans.
    :param target: same shape, boolean or 0/1.
    :return: the mean Dice in [0, 1].
    """
    return float(np.mean(dice_per_image(pred, target, threshold)))


# --------------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------------
# LoVT's RSNA thresholds (BBoxMeanAPMetric) and bes-dev's 101 recall points, as literally written
# there: np.arange(0, 1.01, 0.01) carries float round-off (e.g. 0.07 is 0.07000000000000001), and
# keeping the same array keeps the same "recall >= t" decisions.
RSNA_IOU_THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
RECALL_POINTS_101 = np.arange(0.0, 1.01, 0.01)


def _boxes_xywh(boxes: Any, name: str) -> np.ndarray:
    b = as_numpy(boxes, name)
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name}: expected [B, 4] boxes (x, y, w, h), got shape {tuple(b.shape)}")
    _require_finite(b, name)
    if np.any(b[:, 2:] < 0):
        raise ValueError(f"{name}: negative box width or height in {b[np.any(b[:, 2:] < 0, axis=1)][0].tolist()}")
    return b


def box_iou(boxes_a: Any, boxes_b: Any, plus_one: bool = True) -> np.ndarray:
    """IoU of every box in ``boxes_a`` with every box in ``boxes_b`` ([x, y, w, h] boxes).

    Definition: with corners x1 = x, x2 = x + w (and likewise y), IoU = |A ∩ B| / (|A| + |B| − |A ∩ B|).
    With ``plus_one=True`` (the PASCAL-VOC pixel convention of the ``mean_average_precision``
    package that LoVT uses) side lengths are x2 − x1 + 1, i.e. a box covers w + 1 pixels and
    intersections max(0, min(x2) − max(x1) + 1); with ``plus_one=False`` they are continuous
    lengths w and max(0, min(x2) − max(x1)).

    :param boxes_a: [A, 4]. :param boxes_b: [B, 4]. :return: [A, B].
    """
    a = _boxes_xywh(boxes_a, "boxes_a")
    b = _boxes_xywh(boxes_b, "boxes_b")
    one = 1.0 if plus_one else 0.0
    ax1, ay1, ax2, ay2 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1) + one, 0.0)
    ih = np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1) + one, 0.0)
    inter = iw * ih
    area_a = (a[:, 2:3] + one) * (a[:, 3:4] + one)
    area_b = (b[:, 2] + one) * (b[:, 3] + one)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def box_map(
    pred_boxes: Sequence[Any],
    pred_scores: Sequence[Any],
    gt_boxes: Sequence[Any],
    iou_thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
    plus_one: bool = True,
) -> dict[str, float]:
    """Single-class box mAP averaged over IoU thresholds: LoVT's RSNA pneumonia metric (spec §2.8).

    Definition (``mean_average_precision.MeanAveragePrecision2d`` with ``mpolicy="soft"`` and 101
    recall points, as LoVT's ``BBoxMeanAPMetric``): all predictions of all images are sorted by
    descending score (a stable sort, so ties keep image order then prediction order). Each
    prediction, in turn, visits the ground-truth boxes of its own image in order of decreasing IoU
    (:func:`box_iou`): the first box with IoU > t (strictly) that no earlier prediction has matched
    makes it a true positive and is marked matched; a box with IoU > t that is already matched is
    skipped ("soft", COCO-like, whereas "greedy" would stop there); reaching a box with IoU ≤ t, or
    an image without ground truth, makes it a false positive. Cumulative precision TP/(TP + FP)
    and recall TP/G (G = number of ground-truth boxes) give AP_t = (1/101) Σ_{r ∈ {0, 0.01, …, 1}}
    max{precision_i : recall_i ≥ r} (0 where no recall reaches r). The result ``mAP`` is the mean of
    AP_t over ``iou_thresholds`` (0.4, 0.45, …, 0.75), reported as a fraction in [0, 1] (LoVT's
    tables show percent).

    :param pred_boxes: per image, [P_i, 4] predicted boxes (x, y, w, h) (empty allowed).
    :param pred_scores: per image, [P_i] confidences.
    :param gt_boxes: per image, [G_i, 4] ground-truth boxes (x, y, w, h) (empty for negatives).
    :param iou_thresholds: the IoU thresholds t.
    :param plus_one: the +1 pixel convention of :func:`box_iou` (True as in LoVT).
    :return: ``{"mAP": ..., "AP@0.4": ..., ...}`` (one AP per threshold, keyed by ``f"AP@{t:g}"``),
        plus ``n_images``, ``n_gt``, ``n_pred``.
    :raises ValueError: mismatched lengths, or no ground-truth box at all (AP undefined).
    """
    if not (len(pred_boxes) == len(pred_scores) == len(gt_boxes)):
        raise ValueError(
            f"box_map: {len(pred_boxes)} pred_boxes, {len(pred_scores)} pred_scores and {len(gt_boxes)} gt_boxes "
            "entries; expected one per image"
        )
    thresholds = tuple(float(t) for t in iou_thresholds)
    if not thresholds or any(not 0.0 <= t < 1.0 for t in thresholds):
        raise ValueError(f"iou_thresholds: expected values in [0, 1), got {iou_thresholds!r}")
    # one row per prediction: image index, score, IoUs with the image's ground truth
    records: list[tuple[int, float, np.ndarray]] = []
    n_gt = 0
    for i, (pb, ps, gb) in enumerate(zip(pred_boxes, pred_scores, gt_boxes)):
        p = _boxes_xywh(pb, f"pred_boxes[{i}]")
        s = as_numpy(ps, f"pred_scores[{i}]").reshape(-1)
        g = _boxes_xywh(gb, f"gt_boxes[{i}]")
        if s.shape[0] != p.shape[0]:
            raise ValueError(f"pred_scores[{i}]: {s.shape[0]} scores for {p.shape[0]} boxes")
        _require_finite(s, f"pred_scores[{i}]")
        n_gt += g.shape[0]
        ious = box_iou(p, g, plus_one) if g.shape[0] else np.zeros((p.shape[0], 0))
        records.extend((i, float(s[j]), ious[j]) for j in range(p.shape[0]))
    if n_gt == 0:
        raise ValueError("box_map: no ground-truth box in any image; average precision is undefined")
    order = np.argsort(-np.array([r[1] for r in records]), kind="stable")

    aps: dict[str, float] = {}
    for t in thresholds:
        matched: dict[int, set[int]] = {}
        tp = np.zeros(len(order))
        for rank, k in enumerate(order):
            img, _, ious = records[k]
            taken = matched.setdefault(img, set())
            for g in np.argsort(-ious, kind="stable"):
                if ious[g] <= t:
                    break
                if g not in taken:
                    taken.add(int(g))
                    tp[rank] = 1.0
                    break
        cum_tp = np.cumsum(tp)
        cum_fp = np.cumsum(1.0 - tp)
        recall = cum_tp / n_gt
        precision = cum_tp / np.maximum(cum_tp + cum_fp, np.finfo(np.float64).eps)
        ap = 0.0
        for r in RECALL_POINTS_101:
            reached = recall >= r
            ap += float(precision[reached].max()) if reached.any() else 0.0
        aps[f"AP@{t:g}"] = ap / RECALL_POINTS_101.size
    return {
        "mAP": float(np.mean(list(aps.values()))),
        **aps,
        "n_images": len(gt_boxes),
        "n_gt": n_gt,
        "n_pred": len(records),
    }


# --------------------------------------------------------------------------------------------------
# Representation diagnostics
# --------------------------------------------------------------------------------------------------


def effective_rank(features: Any, variance: float = 0.99) -> int:
    """Principal components that hold ``variance`` of the variance of standardised features.

    The dimensional-collapse diagnostic of contrastive learning (Jing et al., ICLR 2022): each
    feature is standardised over the samples (constant features, e.g. dead ReLU channels, count as
    0), then the smallest number of principal components whose eigenvalues sum to at least
    ``variance`` of the total is returned. A random ResNet's pooled features give hundreds; a
    collapsed representation, a handful.

    :param features: ``[N, D]``
    :return: an integer in ``[0, min(N - 1, D)]`` (0 when every feature is constant)
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    if x.shape[0] < 2:
        raise ValueError(f"effective rank needs at least 2 samples, got {x.shape[0]}")
    x = x - x.mean(axis=0)
    std = x.std(axis=0)
    live = std > 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0)))
    if not live.any():
        return 0
    z = x[:, live] / std[live]
    eig = np.linalg.svd(z, compute_uv=False) ** 2
    total = eig.sum()
    cum = np.cumsum(eig) / total
    return int(np.searchsorted(cum, variance - 1e-12) + 1)
