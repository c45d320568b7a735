"""Classification metrics: per-class and macro AUROC, and local MI's EdemaSeverity ordinal AUCs.

:func:`auroc_per_class` (unlabelled entries ignored, undefined AUROCs counted and logged),
:func:`edema_ordinal_aucs` (local MI's three EdemaSeverity AUCs, spec §1.1).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from localign.metrics.arrays import as_numpy, require_finite

logger = logging.getLogger(__name__)

EDEMA_THRESHOLD_NAMES = ("0 vs 1,2,3", "0,1 vs 2,3", "0,1,2 vs 3")


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
    require_finite(sc_l, "score (labelled rows)")
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
