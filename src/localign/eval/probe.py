"""Feature-level probes: label-fraction sampling by patient and the standard linear probe.

These are the encoder-independent pieces of the "linear probe on frozen global image features with
1 % / 10 % / 100 % labels" protocol: features are extracted once by an encoder (elsewhere), a
fraction of the training patients is drawn with :func:`sample_label_fraction`, and
:func:`fit_linear_probe` fits one L2-regularised logistic regression per label (scikit-learn,
lbfgs) on the standardised frozen features, with the inverse regularisation strength C chosen per
label on the validation split from a grid 1e-3..10 (after CLIP's linear-probe protocol, which selects one C per model).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from localign.progress import tqdm

from localign.metrics import as_numpy

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# label fractions
# --------------------------------------------------------------------------------------------------
def sample_label_fraction(
    df: pd.DataFrame,
    fraction: float,
    seed: int,
    patient_col: str = "subject_id",
) -> pd.DataFrame:
    """A random subset of the training rows holding about ``fraction`` of them, drawn by patient.

    Definition: the distinct patient ids of ``df[patient_col]`` are sorted and shuffled with
    ``numpy.random.default_rng(seed).permutation``; patients are then taken in that order until
    their rows first reach ⌈fraction · N⌉ of the N rows (at least one patient). Every image of a
    drawn patient is in the subset and no image of any other patient is, so the subset is never
    split within a patient and its size exceeds the target by less than the last patient's row
    count. The result depends only on (the set of patient ids, their row counts, fraction, seed),
    not on the row order of ``df``. Because every fraction takes a prefix of the same permutation,
    subsets drawn with the same seed are nested (1 % ⊂ 10 % ⊂ 100 %); different seeds give
    independent draws. ``fraction = 1`` returns all rows.

    :param df: the training split, one row per image, with a ``patient_col`` column.
    :param fraction: in (0, 1].
    :param seed: integer seed.
    :param patient_col: patient id column (MIMIC-CXR ``subject_id``).
    :return: the selected rows of ``df``, in their original order and with their original index.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df: expected a pandas DataFrame, got {type(df).__name__}")
    if patient_col not in df.columns:
        raise ValueError(f"patient_col: column {patient_col!r} not in df (columns: {list(df.columns)})")
    if len(df) == 0:
        raise ValueError("df: no rows to sample from")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a number in (0, 1], got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed: expected an integer, got {seed!r}")
    patients = df[patient_col]
    if patients.isna().any():
        raise ValueError(f"{patient_col}: {int(patients.isna().sum())} rows have no patient id")
    counts = patients.value_counts(sort=False)
    ids = np.array(sorted(counts.index.tolist()), dtype=object)
    order = ids[np.random.default_rng(int(seed)).permutation(len(ids))]
    target = math.ceil(fraction * len(df) - 1e-9)  # the epsilon keeps 0.1 · 1000 from becoming 101
    cumulative = np.cumsum(counts.loc[order].to_numpy())
    n_patients = int(np.searchsorted(cumulative, target, side="left")) + 1
    chosen = set(order[:n_patients].tolist())
    subset = df.loc[patients.isin(chosen).to_numpy()]
    logger.info(
        "sample_label_fraction: fraction %.4g, seed %d -> %d of %d patients, %d of %d rows (target %d)",
        fraction,
        seed,
        n_patients,
        len(ids),
        len(subset),
        len(df),
        target,
    )
    return subset


# --------------------------------------------------------------------------------------------------
# linear probe
# --------------------------------------------------------------------------------------------------
#: C (inverse L2 strength) candidates: 1e-3 ... 10 in half-decade steps (9 values).
DEFAULT_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-3, 1, 9))


class LinearProbe:
    """One logistic regression per label on standardised frozen features.

    ``p_k(x) = σ(w_k · (x − μ)/s + b_k)``; μ and s are the per-feature mean and (population)
    standard deviation of the training features (a constant feature gets s = 1). Built by
    :func:`fit_linear_probe`, which fills:

    :ivar coef: [K, D] weights on the standardised features
    :ivar intercept: [K]
    :ivar c_values: [K] the selected C of each label (NaN for a constant label, see below)
    :ivar constant: [K] bool, True where the training labels had a single value (or none): that
        label's probability is the training positive rate (0.5 without labels), whatever x
    :ivar val_auroc: [K] validation AUROC at the selected C (NaN where undefined)
    :ivar val_auroc_grid: [len(c_grid), K] validation AUROC of every candidate C (NaN where undefined)
    :ivar c_grid: the candidate values, ascending
    :ivar best_val_auroc: macro validation AUROC (mean of ``val_auroc`` over the labels where it is defined)
    """

    def __init__(self, feature_mean: np.ndarray, feature_std: np.ndarray, n_classes: int, c_grid: Sequence[float]) -> None:
        feature_mean, feature_std = np.asarray(feature_mean, np.float64), np.asarray(feature_std, np.float64)
        if feature_mean.shape != feature_std.shape or feature_mean.ndim != 1:
            raise ValueError(f"feature_mean/std: expected equal [D] shapes, got {feature_mean.shape}, {feature_std.shape}")
        self.feature_mean, self.feature_std = feature_mean, feature_std
        self.c_grid = tuple(float(c) for c in c_grid)
        d = feature_mean.shape[0]
        self.coef = np.zeros((n_classes, d))
        self.intercept = np.zeros(n_classes)
        self.c_values = np.full(n_classes, np.nan)
        self.constant = np.zeros(n_classes, dtype=bool)
        self.val_auroc = np.full(n_classes, np.nan)
        self.val_auroc_grid = np.full((len(self.c_grid), n_classes), np.nan)
        self.best_val_auroc: float = float("nan")

    @property
    def in_dim(self) -> int:
        return int(self.feature_mean.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.coef.shape[0])

    def standardise(self, x: Any, name: str = "x") -> np.ndarray:
        """:param x: [N, D] raw features (numpy or torch). :return: [N, D] float64 ``(x − μ)/s``."""
        return (_features(x, name, self.in_dim) - self.feature_mean) / self.feature_std

    def decision_function(self, x: Any) -> np.ndarray:
        """:param x: [N, D] raw features. :return: [N, K] float64 logits."""
        return self.standardise(x) @ self.coef.T + self.intercept

    def predict_proba(self, x: Any) -> np.ndarray:
        """Per-label probabilities σ(logits) for raw features.

        :param x: [N, D] features (numpy or torch).
        :return: [N, K] float64 probabilities.
        """
        z = self.decision_function(x)
        # σ written with exp of a non-positive argument only (no overflow for large |z|)
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _features(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        a = x.detach().cpu().double().numpy()
    else:
        a = np.asarray(as_numpy(x, name, dtype=np.float64), dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected [N, D] features, got shape {tuple(a.shape)}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name}: feature dimension {a.shape[1]} differs from the probe's D={dim}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: {int((~np.isfinite(a)).sum())} non-finite feature value(s)")
    return a


def _labels(y: Any, name: str, n: int) -> np.ndarray:
    a = as_numpy(y, name)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n:
        raise ValueError(f"{name}: expected [N, C] labels with N={n}, got shape {tuple(a.shape)}")
    labelled = ~np.isnan(a)
    if np.any(labelled & (a != 0) & (a != 1)):
        raise ValueError(f"{name}: labels must be 0, 1 or NaN (unlabelled); found {np.unique(a[labelled]).tolist()}")
    return a


def _defined_classes(y: np.ndarray) -> list[int]:
    out = []
    for c in range(y.shape[1]):
        v = y[~np.isnan(y[:, c]), c]
        if v.size and np.any(v != v[0]):
            out.append(c)
    return out


def check_c_grid(c_grid: Sequence[float]) -> tuple[float, ...]:
    values = tuple(c_grid)
    if not values or any(isinstance(c, bool) or not isinstance(c, (int, float, np.floating)) or not math.isfinite(c) or c <= 0
                         for c in values):
        raise ValueError(f"c_grid: expected positive finite numbers, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"c_grid: duplicate values in {values!r}")
    return tuple(sorted(float(c) for c in values))


def fit_linear_probe(
    train_x: Any,
    train_y: Any,
    val_x: Any,
    val_y: Any,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    max_iter: int = 500,
    tol: float = 1e-4,
    seed: int = 0,
    progress: bool = True,
) -> LinearProbe:
    """The standard linear probe: an L2 logistic regression per label, C chosen on validation.

    Definition: the features are standardised with the per-feature mean and population standard
    deviation of ``train_x`` (constant features left unscaled). For each label k independently, on
    the training rows whose label k is 0 or 1 (NaN = unlabelled or uncertain: left out of that
    label's fit), scikit-learn's ``LogisticRegression`` (L2 penalty ``½‖w‖² + C·Σ log-loss``,
    unpenalised intercept, lbfgs, ``max_iter``, ``tol``) is fitted for every C of ``c_grid``
    (ascending, each fit warm-started from the previous C's solution; the problem is strictly convex
    so the start changes the result only within ``tol``), and the C with the highest validation
    AUROC of label k (rows with a 0/1 label k) is kept, the smallest C on ties. Labels whose
    validation AUROC is undefined (one label value) take the C with the highest mean validation
    AUROC over the other labels (named in a warning). A label with a single training value (or
    none) gets a constant probability, its training positive rate (0.5 without labels), also named
    in a warning. The probe is fitted on the training rows only (the validation split only selects
    C), so a label fraction limits every label the probe sees. Deterministic: the same inputs give
    the same probe (lbfgs has no randomness; ``seed`` is passed as ``random_state`` for solvers
    that would use it).

    :param train_x: [N, D] frozen training features.
    :param train_y: [N, K] labels in {0, 1, NaN} ([N] is read as K = 1).
    :param val_x: [M, D] validation features.
    :param val_y: [M, K] validation labels in {0, 1, NaN}.
    :param c_grid: candidate C values (inverse regularisation strength), default 1e-3..10 in
        half-decade steps (:data:`DEFAULT_C_GRID`).
    :param max_iter: lbfgs iteration limit per fit.
    :param tol: lbfgs tolerance.
    :param seed: ``random_state`` of the solver (no effect with lbfgs).
    :param progress: show a tqdm bar over labels.
    :return: the fitted :class:`LinearProbe`.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    x_tr = _features(train_x, "train_x")
    x_va = _features(val_x, "val_x", x_tr.shape[1])
    y_tr = _labels(train_y, "train_y", x_tr.shape[0])
    y_va = _labels(val_y, "val_y", x_va.shape[0])
    if y_va.shape[1] != y_tr.shape[1]:
        raise ValueError(f"val_y: {y_va.shape[1]} classes, train_y has {y_tr.shape[1]}")
    grid = check_c_grid(c_grid)
    for name, value, ok in (
        ("max_iter", max_iter, isinstance(max_iter, int) and not isinstance(max_iter, bool) and max_iter >= 1),
        ("tol", tol, isinstance(tol, (int, float)) and not isinstance(tol, bool) and tol > 0),
        ("seed", seed, isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)),
    ):
        if not ok:
            raise ValueError(f"{name}: invalid value {value!r}")
    n_classes = y_tr.shape[1]
    val_classes = _defined_classes(y_va)
    if not val_classes:
        raise ValueError("val_y: no class has both label values in the validation set; C cannot be selected on AUROC")
    undefined_val = sorted(set(range(n_classes)) - set(val_classes))
    if undefined_val:
        logger.warning(
            "fit_linear_probe: validation AUROC undefined for class indices %s (single label value); "
            "they take the C that is best on average over the other %d classes",
            undefined_val,
            len(val_classes),
        )
    train_classes = _defined_classes(y_tr)
    constant = sorted(set(range(n_classes)) - set(train_classes))
    if constant:
        logger.warning(
            "fit_linear_probe: class indices %s have a single training label value (or none); "
            "their probability is the training positive rate",
            constant,
        )

    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    n_constant = int((std == 0).sum())
    if n_constant:
        logger.info("fit_linear_probe: %d constant feature(s) in train_x (std 0), left unscaled", n_constant)
    std = np.where(std == 0, 1.0, std)
    probe = LinearProbe(mean, std, n_classes, grid)
    z_tr, z_va = (x_tr - mean) / std, (x_va - mean) / std

    fits: dict[int, list[tuple[np.ndarray, float]]] = {}
    not_converged = 0
    for k in tqdm(range(n_classes), desc="linear probe", disable=not progress, leave=False):
        labelled = ~np.isnan(y_tr[:, k])
        if k in constant:
            probe.constant[k] = True
            rate = float(y_tr[labelled, k].mean()) if labelled.any() else 0.5
            rate = min(max(rate, 1e-6), 1 - 1e-6)  # finite logits; a constant's AUROC is 0.5 either way
            probe.intercept[k] = math.log(rate / (1 - rate))
            continue
        model = LogisticRegression(solver="lbfgs", max_iter=max_iter, tol=tol, warm_start=True, random_state=int(seed))
        val_rows = ~np.isnan(y_va[:, k])
        fits[k] = []
        for g, c in enumerate(grid):
            model.set_params(C=c)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(z_tr[labelled], y_tr[labelled, k].astype(int))
            not_converged += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
            fits[k].append((model.coef_[0].copy(), float(model.intercept_[0])))
            if k in val_classes:
                score = z_va[val_rows] @ model.coef_[0] + model.intercept_[0]
                probe.val_auroc_grid[g, k] = float(roc_auc_score(y_va[val_rows, k], score))
    if not_converged:
        logger.info("fit_linear_probe: %d of %d fits stopped at max_iter=%d before tol", not_converged,
                    len(grid) * len(fits), max_iter)

    fitted_val = [k for k in val_classes if k in fits]
    # the fallback for labels without a validation AUROC: the C best on average over the others
    fallback = int(np.argmax(np.nanmean(probe.val_auroc_grid[:, fitted_val], axis=1))) if fitted_val else 0
    for k, path in fits.items():
        # np.argmax returns the first maximum: the smallest C on ties
        g = int(np.argmax(probe.val_auroc_grid[:, k])) if k in val_classes else fallback
        probe.coef[k], probe.intercept[k] = path[g]
        probe.c_values[k] = grid[g]
        probe.val_auroc[k] = probe.val_auroc_grid[g, k]
    if constant:
        # a constant score has AUROC 0.5 wherever both labels occur
        probe.val_auroc[[k for k in constant if k in val_classes]] = 0.5
    probe.best_val_auroc = float(np.mean(probe.val_auroc[val_classes]))
    logger.info("fit_linear_probe: val macro AUROC %.4f, C per class %s", probe.best_val_auroc, probe.c_values.tolist())
    return probe
