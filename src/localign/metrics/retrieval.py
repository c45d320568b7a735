"""Image-report retrieval metrics: ranks, R@K, median rank and MRR over an explicit candidate pool.

:func:`retrieval_ranks`, :func:`recall_at_k`, :func:`chance_recall_at_k` (LIMITR's R@K protocol,
spec §3.6, with an explicit candidate pool and tie rule). Every docstring opens with the precise
definition of what it computes, quoted in the book.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy.special import digamma

from localign.metrics.arrays import as_numpy, require_finite

logger = logging.getLogger(__name__)

TieRule = Literal["pessimistic", "expected"]


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
    require_finite(s, "scores")
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
