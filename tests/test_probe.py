"""Tests for label-fraction sampling by patient and the linear probe (localign.eval.probe)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from localign.eval import auroc_per_class, fit_linear_probe, sample_label_fraction


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
    probe = fit_linear_probe(x_tr, y_tr, x_va, y_va, lr=1e-2, epochs=60, batch_size=64, seed=0, progress=False)
    p = probe.predict_proba(x_te)
    assert p.shape == (1000, 3) and np.all((p >= 0) & (p <= 1))
    r = auroc_per_class(y_te, p, ["a", "b", "c"])
    assert r["macro"] > 0.99, r
    # the returned weights are those of the best validation epoch
    best = max(h["val_macro_auroc"] for h in probe.history)
    assert probe.best_val_auroc == best
    assert auroc_per_class(y_va, probe.predict_proba(x_va), ["a", "b", "c"])["macro"] == pytest.approx(best, abs=1e-6)


def test_probe_on_noise_is_chance():
    rng = np.random.default_rng(1)
    x_tr, x_va, x_te = (rng.normal(size=(n, 32)).astype(np.float32) for n in (400, 200, 2000))
    y_tr, y_va, y_te = (rng.integers(0, 2, size=(n, 2)).astype(float) for n in (400, 200, 2000))
    probe = fit_linear_probe(x_tr, y_tr, x_va, y_va, lr=1e-2, epochs=30, batch_size=64, seed=0, progress=False)
    r = auroc_per_class(y_te, probe.predict_proba(x_te), ["a", "b"])
    assert abs(r["macro"] - 0.5) < 0.05, r


def test_probe_deterministic_given_seed_and_early_stops():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(8, 2))
    x_tr, y_tr = _separable(300, rng, w)
    x_va, y_va = _separable(100, rng, w)
    y_tr[rng.random(y_tr.shape) < 0.5] = np.nan
    kwargs = dict(lr=1e-2, epochs=40, batch_size=32, patience=3, progress=False)
    a = fit_linear_probe(x_tr, y_tr, x_va, y_va, seed=7, **kwargs)
    b = fit_linear_probe(torch.from_numpy(x_tr), y_tr, x_va, y_va, seed=7, **kwargs)
    np.testing.assert_array_equal(a.predict_proba(x_va), b.predict_proba(x_va))
    assert a.history == b.history
    c = fit_linear_probe(x_tr, y_tr, x_va, y_va, seed=8, **kwargs)
    assert not np.array_equal(a.predict_proba(x_va), c.predict_proba(x_va))
    # early stopping: training ends `patience` epochs after the best one (or at the epoch limit)
    assert len(a.history) == min(a.best_epoch + 1 + 3, 40)


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
