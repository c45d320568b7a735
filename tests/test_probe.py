"""Tests for label-fraction sampling by patient and the linear probe (localign.eval.probe)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from localign.eval import auroc_per_class, fit_linear_probe, sample_label_fraction
from localign.eval.probe import DEFAULT_C_GRID


# --------------------------------------------------------------------------------------------------
# label fractions
# --------------------------------------------------------------------------------------------------
def _train_table(n_patients: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    per_patient = rng.integers(1, 6, size=n_patients)  # 1..5 images per patient
    subjects = np.repeat(10_000_000 + np.arange(n_patients), per_patient)
    df = pd.DataFrame({"subject_id": subjects, "dicom_id": [f"d{i:05d}" for i in range(len(subjects))]})
    return df.sample(frac=1.0, random_state=1)  # rows of a patient are not contiguous


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_fraction_is_whole_patients_of_the_right_size(fraction):
    df = _train_table()
    sub = sample_label_fraction(df, fraction, seed=0)
    inside = set(sub["subject_id"])
    outside = set(df.loc[~df.index.isin(sub.index), "subject_id"])
    assert inside and not inside & outside  # no patient split across in/out
    # every image of a drawn patient is in the subset
    assert len(sub) == df["subject_id"].isin(inside).sum()
    target = math.ceil(fraction * len(df))
    # at or above the target by less than one patient (at most 5 images)
    assert target <= len(sub) < target + 5
    assert list(sub.index) == [i for i in df.index if i in set(sub.index)]  # original order kept


def test_fraction_reproducible_seed_dependent_and_nested():
    df = _train_table()
    a = sample_label_fraction(df, 0.1, seed=3)
    b = sample_label_fraction(df, 0.1, seed=3)
    c = sample_label_fraction(df, 0.1, seed=4)
    assert a.index.equals(b.index)
    assert set(a["subject_id"]) != set(c["subject_id"])
    # independent of the row order of the input
    shuffled = sample_label_fraction(df.sample(frac=1.0, random_state=9), 0.1, seed=3)
    assert set(shuffled.index) == set(a.index)
    # same seed: 1 % ⊂ 10 % ⊂ 100 %
    small = sample_label_fraction(df, 0.01, seed=3)
    assert set(small.index) <= set(a.index)
    assert sample_label_fraction(df, 1.0, seed=3).index.equals(df.index)


def test_fraction_at_least_one_patient_and_validation():
    df = _train_table(n_patients=20)
    tiny = sample_label_fraction(df, 1e-6, seed=0)
    assert tiny["subject_id"].nunique() == 1
    with pytest.raises(ValueError, match="fraction"):
        sample_label_fraction(df, 0.0, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        sample_label_fraction(df, 1.5, seed=0)
    with pytest.raises(ValueError, match="patient_col"):
        sample_label_fraction(df, 0.5, seed=0, patient_col="patient")
    with pytest.raises(ValueError, match="no patient id"):
        sample_label_fraction(df.assign(subject_id=np.nan), 0.5, seed=0)


# --------------------------------------------------------------------------------------------------
# linear probe
# --------------------------------------------------------------------------------------------------
def _separable(n: int, rng: np.random.Generator, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # large offset and scale per feature: the probe has to standardise
    x = rng.normal(size=(n, w.shape[0])) * np.linspace(0.1, 10, w.shape[0]) + 50.0
    z = (x - 50.0) / np.linspace(0.1, 10, w.shape[0])
    y = (z @ w > 0).astype(float)
    return x.astype(np.float32), y


def test_probe_separable_features_reach_auroc_one():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 3))
    x_tr, y_tr = _separable(600, rng, w)
    x_va, y_va = _separable(300, rng, w)
    x_te, y_te = _separable(1000, rng, w)
    y_tr[rng.random(y_tr.shape) < 0.3] = np.nan  # unlabelled entries are ignored
    probe = fit_linear_probe(x_tr, y_tr, x_va, y_va, progress=False)
    p = probe.predict_proba(x_te)
    assert p.shape == (1000, 3) and np.all((p >= 0) & (p <= 1))
    r = auroc_per_class(y_te, p, ["a", "b", "c"])
    assert r["macro"] > 0.99, r
    # the reported validation AUROC is that of the returned probe
    val = auroc_per_class(y_va, probe.predict_proba(x_va), ["a", "b", "c"])
    assert probe.best_val_auroc == pytest.approx(val["macro"], abs=1e-9)
    assert set(probe.c_values) <= set(DEFAULT_C_GRID) and DEFAULT_C_GRID[0] == 1e-3 and DEFAULT_C_GRID[-1] == 10.0


def test_probe_on_noise_is_chance():
    rng = np.random.default_rng(1)
    x_tr, x_va, x_te = (rng.normal(size=(n, 32)).astype(np.float32) for n in (400, 200, 2000))
    y_tr, y_va, y_te = (rng.integers(0, 2, size=(n, 2)).astype(float) for n in (400, 200, 2000))
    probe = fit_linear_probe(x_tr, y_tr, x_va, y_va, progress=False)
    r = auroc_per_class(y_te, probe.predict_proba(x_te), ["a", "b"])
    assert abs(r["macro"] - 0.5) < 0.05, r


def test_probe_selects_a_larger_c_when_the_signal_is_clean():
    """Label 0 is a noiseless linear rule on all 40 features; label 1 is one weak feature plus
    noise: validation AUROC rewards weak regularisation for the first and strong for the second."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=40)

    def draw(n):
        x = rng.normal(size=(n, 40))
        clean = (x @ w > 0).astype(float)
        noisy = (0.3 * x[:, 0] + rng.normal(size=n) > 0).astype(float)
        return x, np.stack([clean, noisy], axis=1)

    (x_tr, y_tr), (x_va, y_va) = draw(150), draw(400)
    probe = fit_linear_probe(x_tr, y_tr, x_va, y_va, progress=False)
    assert probe.c_values[0] > probe.c_values[1], probe.c_values
    assert probe.c_values[0] >= 1.0 and probe.c_values[1] <= 0.1
    # the selected C is the best of the grid on validation (smallest on ties)
    for k in range(2):
        column = probe.val_auroc_grid[:, k]
        assert probe.c_values[k] == DEFAULT_C_GRID[int(np.argmax(column))] and probe.val_auroc[k] == column.max()


def test_probe_matches_a_plain_sklearn_reference():
    """The probe is the standard protocol: StandardScaler + LogisticRegression per label, C on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(4)
    w = rng.normal(size=(24, 3))
    x_tr, x_va, x_te = (rng.normal(size=(n, 24)) * 3 + 1 for n in (300, 200, 500))
    y_tr, y_va, y_te = ((x @ w + 2 * rng.normal(size=(len(x), 3)) > 0).astype(float) for x in (x_tr, x_va, x_te))
    y_tr[rng.random(y_tr.shape) < 0.2] = np.nan  # masked (uncertain) labels
    probe = fit_linear_probe(x_tr, y_tr, x_va, y_va, progress=False)
    scaler = StandardScaler().fit(x_tr)
    z_tr, z_va, z_te = scaler.transform(x_tr), scaler.transform(x_va), scaler.transform(x_te)
    for k in range(3):
        rows = ~np.isnan(y_tr[:, k])
        models = [LogisticRegression(C=c, max_iter=1000).fit(z_tr[rows], y_tr[rows, k]) for c in DEFAULT_C_GRID]
        val = [roc_auc_score(y_va[:, k], m.decision_function(z_va)) for m in models]
        best = models[int(np.argmax(val))]
        reference = roc_auc_score(y_te[:, k], best.decision_function(z_te))
        assert roc_auc_score(y_te[:, k], probe.predict_proba(x_te)[:, k]) == pytest.approx(reference, abs=1e-3)
        assert probe.c_values[k] == best.C


def test_probe_deterministic_and_masked_rows_are_ignored():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(8, 2))
    x_tr, y_tr = _separable(300, rng, w)
    x_va, y_va = _separable(100, rng, w)
    y_tr[rng.random(y_tr.shape) < 0.5] = np.nan
    a = fit_linear_probe(x_tr, y_tr, x_va, y_va, seed=7, progress=False)
    b = fit_linear_probe(torch.from_numpy(x_tr), y_tr, x_va, y_va, seed=7, progress=False)
    np.testing.assert_array_equal(a.predict_proba(x_va), b.predict_proba(x_va))
    np.testing.assert_array_equal(a.val_auroc_grid, b.val_auroc_grid)
    # each label's fit sees only its own labelled rows: rewriting label 1 leaves label 0's unchanged
    other = y_tr.copy()
    other[:, 1] = np.where(np.isnan(other[:, 1]), 1.0, np.nan)
    c = fit_linear_probe(x_tr, other, x_va, y_va, progress=False)
    np.testing.assert_allclose(c.coef[0], a.coef[0], atol=1e-12)


def test_probe_single_valued_training_label_is_constant(caplog):
    rng = np.random.default_rng(5)
    x_tr, x_va = rng.normal(size=(50, 4)), rng.normal(size=(40, 4))
    y_tr = np.stack([(x_tr[:, 0] > 0).astype(float), np.zeros(50)], axis=1)  # label 1: negatives only
    y_va = np.stack([(x_va[:, 0] > 0).astype(float), (x_va[:, 1] > 0).astype(float)], axis=1)
    with caplog.at_level("WARNING"):
        probe = fit_linear_probe(x_tr, y_tr, x_va, y_va, progress=False)
    assert "[1]" in caplog.text and "single training label value" in caplog.text
    p = probe.predict_proba(x_va)
    assert probe.constant.tolist() == [False, True] and np.ptp(p[:, 1]) == 0 and p[0, 1] < 1e-5
    assert probe.val_auroc[1] == 0.5 and probe.best_val_auroc == pytest.approx((probe.val_auroc[0] + 0.5) / 2)


def test_probe_validation_errors():
    x = np.zeros((10, 4), dtype=np.float32)
    y = np.tile([[0.0], [1.0]], (5, 1))
    with pytest.raises(ValueError, match="labels must be 0, 1 or NaN"):
        fit_linear_probe(x, y * 2, x, y, progress=False)
    with pytest.raises(ValueError, match="feature dimension"):
        fit_linear_probe(x, y, np.zeros((10, 5)), y, progress=False)
    with pytest.raises(ValueError, match="no class has both label values"):
        fit_linear_probe(x, y, x, np.ones((10, 1)), progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        fit_linear_probe(np.full((10, 4), np.nan), y, x, y, progress=False)
    with pytest.raises(ValueError, match="c_grid"):
        fit_linear_probe(x, y, x, y, c_grid=(), progress=False)
    with pytest.raises(ValueError, match="c_grid"):
        fit_linear_probe(x, y, x, y, c_grid=(1.0, -1.0), progress=False)
    with pytest.raises(ValueError, match="max_iter"):
        fit_linear_probe(x, y, x, y, max_iter=0, progress=False)


def test_probe_config_checks_and_sorts_the_grid():
    from localign.eval.protocols import ProbeConfig

    assert ProbeConfig().c_grid == DEFAULT_C_GRID
    assert ProbeConfig(c_grid=(1.0, 0.01)).c_grid == (0.01, 1.0)
    with pytest.raises(ValueError, match="ProbeConfig.c_grid"):
        ProbeConfig(c_grid=(0.1, 0.1))
    with pytest.raises(ValueError, match="ProbeConfig.max_iter"):
        ProbeConfig(max_iter=0)
