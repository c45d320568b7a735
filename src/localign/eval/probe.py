"""Feature-level probes: label-fraction sampling by patient and a logistic-regression head.

These are the encoder-independent pieces of the "linear probe on frozen global image features with
1 % / 10 % / 100 % labels" protocol: features are extracted once by an encoder (elsewhere), a
fraction of the training patients is drawn with :func:`sample_label_fraction`, and
:func:`fit_linear_probe` trains a multi-label logistic regression on the frozen features with
early stopping on validation macro AUROC.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from localign.progress import tqdm

from localign.eval.metrics import _binary_auroc, as_numpy

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
class LinearProbe(nn.Module):
    """Logistic-regression head on standardised frozen features: p = σ(W·(x − μ)/s + b).

    μ and s are the per-feature mean and standard deviation of the training features (a constant
    feature gets s = 1). Built and trained by :func:`fit_linear_probe`, which also fills
    ``history`` (one dict per epoch: epoch, train_loss, val_macro_auroc), ``best_epoch`` and
    ``best_val_auroc``.
    """

    def __init__(self, feature_mean: torch.Tensor, feature_std: torch.Tensor, n_classes: int) -> None:
        super().__init__()
        if feature_mean.shape != feature_std.shape or feature_mean.ndim != 1:
            raise ValueError(f"feature_mean/std: expected equal [D] shapes, got {feature_mean.shape}, {feature_std.shape}")
        self.register_buffer("feature_mean", feature_mean.float())
        self.register_buffer("feature_std", feature_std.float())
        self.linear = nn.Linear(feature_mean.shape[0], n_classes)
        # zero initialisation: the problem is convex, and it keeps the fit independent of torch's global RNG
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.history: list[dict[str, float]] = []
        self.best_epoch: int = -1
        self.best_val_auroc: float = float("nan")

    @property
    def in_dim(self) -> int:
        return int(self.feature_mean.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.linear.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: [B, D] raw features. :return: [B, C] logits."""
        return self.linear((x - self.feature_mean) / self.feature_std)

    @torch.no_grad()
    def predict_proba(self, x: Any, batch_size: int = 8192) -> np.ndarray:
        """Class probabilities σ(logits) for raw features.

        :param x: [N, D] features (numpy or torch).
        :return: [N, C] float64 probabilities.
        """
        feats = _features(x, "x", self.in_dim)
        device = self.feature_mean.device
        was_training = self.training
        self.eval()
        out = [
            torch.sigmoid(self(feats[i : i + batch_size].to(device))).double().cpu()
            for i in range(0, feats.shape[0], batch_size)
        ]
        self.train(was_training)
        if not out:
            return np.zeros((0, self.n_classes), dtype=np.float64)
        return torch.cat(out).numpy()


def _features(x: Any, name: str, dim: int | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().float()
    else:
        t = torch.from_numpy(np.ascontiguousarray(as_numpy(x, name, dtype=np.float32)))
    if t.ndim != 2:
        raise ValueError(f"{name}: expected [N, D] features, got shape {tuple(t.shape)}")
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"{name}: feature dimension {t.shape[1]} differs from the probe's D={dim}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: {int((~torch.isfinite(t)).sum())} non-finite feature value(s)")
    return t


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


def _macro_auroc(y: np.ndarray, p: np.ndarray, classes: list[int]) -> float:
    aucs = []
    for c in classes:
        m = ~np.isnan(y[:, c])
        aucs.append(_binary_auroc(y[m, c], p[m, c]))
    return float(np.mean(aucs))


def _defined_classes(y: np.ndarray) -> list[int]:
    out = []
    for c in range(y.shape[1]):
        v = y[~np.isnan(y[:, c]), c]
        if v.size and np.any(v != v[0]):
            out.append(c)
    return out


def fit_linear_probe(
    train_x: Any,
    train_y: Any,
    val_x: Any,
    val_y: Any,
    *,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    epochs: int = 100,
    batch_size: int = 256,
    patience: int = 10,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> LinearProbe:
    """Train a multi-label logistic-regression probe on frozen features with early stopping.

    Definition: features are standardised with the training mean and standard deviation; one linear
    layer (zero-initialised) gives C logits, trained with AdamW (``lr``, decoupled
    ``weight_decay``) on mini-batches of ``batch_size`` rows in an order drawn from a
    ``torch.Generator`` seeded with ``seed``, minimising the masked binary cross-entropy: the mean
    of BCE-with-logits over the (row, class) entries whose label is 0 or 1 (NaN = unlabelled
    contributes nothing; a batch with no labelled entry takes no step). After every epoch the macro
    AUROC on the validation set (the mean over classes whose validation labels contain both values;
    the others are named in a warning once) is computed; training stops after ``patience`` epochs
    without a strict improvement or after ``epochs`` epochs, and the returned probe holds the
    weights of the best epoch (the earliest on ties). Deterministic given the seed and inputs on one
    device.

    :param train_x: [N, D] frozen training features.
    :param train_y: [N, C] labels in {0, 1, NaN} ([N] is read as C = 1).
    :param val_x: [M, D] validation features.
    :param val_y: [M, C] validation labels in {0, 1, NaN}.
    :param lr: AdamW learning rate.
    :param weight_decay: AdamW decoupled weight decay.
    :param epochs: maximum number of epochs.
    :param batch_size: rows per step.
    :param patience: epochs without improvement before stopping.
    :param seed: seed of the batch order.
    :param device: torch device for training.
    :param progress: show a tqdm bar over epochs.
    :return: the fitted :class:`LinearProbe` (on ``device``, in eval mode).
    """
    x_tr = _features(train_x, "train_x")
    x_va = _features(val_x, "val_x", x_tr.shape[1])
    y_tr = _labels(train_y, "train_y", x_tr.shape[0])
    y_va = _labels(val_y, "val_y", x_va.shape[0])
    if y_va.shape[1] != y_tr.shape[1]:
        raise ValueError(f"val_y: {y_va.shape[1]} classes, train_y has {y_tr.shape[1]}")
    for name, value, ok in (
        ("lr", lr, isinstance(lr, (int, float)) and lr > 0),
        ("weight_decay", weight_decay, isinstance(weight_decay, (int, float)) and weight_decay >= 0),
        ("epochs", epochs, isinstance(epochs, int) and epochs >= 1),
        ("batch_size", batch_size, isinstance(batch_size, int) and batch_size >= 1),
        ("patience", patience, isinstance(patience, int) and patience >= 1),
        ("seed", seed, isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)),
    ):
        if not ok:
            raise ValueError(f"{name}: invalid value {value!r}")
    n_classes = y_tr.shape[1]
    val_classes = _defined_classes(y_va)
    if not val_classes:
        raise ValueError(
            "val_y: no class has both label values in the validation set; early stopping on AUROC is impossible"
        )
    if len(val_classes) < n_classes:
        logger.warning(
            "fit_linear_probe: validation AUROC undefined for class indices %s (single label value); "
            "early stopping uses the other %d classes",
            sorted(set(range(n_classes)) - set(val_classes)),
            len(val_classes),
        )
    unlabelled_train = [c for c in range(n_classes) if np.all(np.isnan(y_tr[:, c]))]
    if unlabelled_train:
        logger.warning(
            "fit_linear_probe: class indices %s have no training labels; their head stays at p = 0.5", unlabelled_train
        )

    mean = x_tr.double().mean(dim=0)
    std = x_tr.double().std(dim=0, unbiased=False)
    n_constant = int((std == 0).sum())
    if n_constant:
        logger.info("fit_linear_probe: %d constant feature(s) in train_x (std 0), left unscaled", n_constant)
    std = torch.where(std == 0, torch.ones_like(std), std)

    dev = torch.device(device)
    probe = LinearProbe(mean, std, n_classes).to(dev)
    optimiser = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    targets = torch.from_numpy(np.nan_to_num(y_tr, nan=0.0)).float()
    label_mask = torch.from_numpy(~np.isnan(y_tr)).float()
    generator = torch.Generator().manual_seed(int(seed))
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")

    best_state: dict[str, torch.Tensor] | None = None
    best_auroc, best_epoch, since_best = -math.inf, -1, 0
    skipped_batches = 0
    bar = tqdm(range(epochs), desc="linear probe", disable=not progress, leave=False)
    for epoch in bar:
        probe.train()
        order = torch.randperm(x_tr.shape[0], generator=generator)
        total, n_entries = 0.0, 0.0
        for start in range(0, x_tr.shape[0], batch_size):
            idx = order[start : start + batch_size]
            m = label_mask[idx].to(dev)
            n_lab = float(m.sum())
            if n_lab == 0:
                skipped_batches += 1
                continue
            logits = probe(x_tr[idx].to(dev))
            loss = (loss_fn(logits, targets[idx].to(dev)) * m).sum() / n_lab
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * n_lab
            n_entries += n_lab
        val_auroc = _macro_auroc(y_va, probe.predict_proba(x_va), val_classes)
        probe.history.append(
            {"epoch": epoch, "train_loss": total / n_entries if n_entries else float("nan"), "val_macro_auroc": val_auroc}
        )
        bar.set_postfix(val_auroc=f"{val_auroc:.4f}")
        if val_auroc > best_auroc:
            best_auroc, best_epoch, since_best = val_auroc, epoch, 0
            best_state = copy.deepcopy(probe.state_dict())
        else:
            since_best += 1
            if since_best >= patience:
                logger.info("fit_linear_probe: early stop after epoch %d (best epoch %d)", epoch, best_epoch)
                break
    bar.close()
    if skipped_batches:
        logger.info("fit_linear_probe: %d batches had no labelled entry and took no step", skipped_batches)
    assert best_state is not None  # at least one epoch ran
    probe.load_state_dict(best_state)
    probe.best_epoch = best_epoch
    probe.best_val_auroc = best_auroc
    probe.eval()
    logger.info("fit_linear_probe: best val macro AUROC %.4f at epoch %d", best_auroc, best_epoch)
    return probe
