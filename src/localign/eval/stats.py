"""Run-to-run statistics and the tidy results table shared by every evaluation.

Every evaluation writes one row per scalar result in the *tidy* schema :data:`TIDY_COLUMNS`:

========  ======================================================================================
run       pretraining run that produced the encoder (e.g. ``"lovt_100pct"``; "-" for none)
method    method name (e.g. ``"lovt"``, ``"convirt"``, ``"random_init"``)
task      downstream task (e.g. ``"mimic_retrieval"``, ``"chexpert_linear"``, ``"ms_cxr_cnr"``)
fraction  fraction of downstream training labels in (0, 1] (1.0 for tasks without training)
seed      integer seed of the downstream repetition (0 for deterministic evaluations)
metric    metric name (e.g. ``"i2t_R@1"``, ``"macro"``, ``"Atelectasis"``)
value     float; NaN allowed for an undefined metric (counted by :func:`summarize_tidy`)
========  ======================================================================================

:func:`summarize_tidy` aggregates the seeds to LoVT's mean ± 95 % CI (:func:`mean_ci95`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from localign.metrics import as_numpy

TIDY_COLUMNS = ("run", "method", "task", "fraction", "seed", "metric", "value")
TIDY_KEY = ("run", "method", "task", "fraction", "seed", "metric")
SUMMARY_KEY = ("run", "method", "task", "fraction", "metric")
Z_95 = 1.96


def mean_ci95(values: Any) -> tuple[float, float]:
    """Mean and the half-width of LoVT's normal-approximation 95 % confidence interval.

    Definition: for n repetitions x_1..x_n (e.g. 5 downstream runs with different seeds), the result
    is (x̄, 1.96 · s / √n) with s the sample standard deviation (ddof = 1), exactly as LoVT's
    ``export_multi_run_results`` (spec §2.8). The "±" in LoVT's tables is this half-width, **not**
    the standard deviation. It uses the normal quantile 1.96 rather than Student's t (2.776 for
    n = 5, which would be 1.42 × wider) so numbers stay comparable with LoVT's. With n = 1 the
    half-width is NaN (no spread can be estimated).

    :param values: [n] finite values, n ≥ 1.
    :return: (mean, half_width).
    """
    v = as_numpy(values, "values").ravel()
    if v.size == 0:
        raise ValueError("values: empty, the mean is undefined")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"values: {int((~np.isfinite(v)).sum())} non-finite value(s) in {v.tolist()}")
    mean = float(np.mean(v))
    if v.size == 1:
        return mean, float("nan")
    return mean, Z_95 * float(np.std(v, ddof=1)) / math.sqrt(v.size)


def validate_tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Check a results table against the tidy schema and return it with canonical dtypes.

    Definition of valid: exactly the columns :data:`TIDY_COLUMNS` (any order; the result is in
    schema order); run, method, task and metric non-empty strings; fraction a number in (0, 1];
    seed an integer; value a float that may be NaN but not ±inf; and no two rows with the same
    (run, method, task, fraction, seed, metric), since a repeated measurement would be ambiguous.

    :param df: the table.
    :return: a copy with str/float/int64/str/float dtypes, in schema column order.
    :raises ValueError: naming the column, the rule and the first offending row.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"validate_tidy: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in TIDY_COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in TIDY_COLUMNS]
    if missing or extra:
        raise ValueError(
            f"tidy table: missing columns {missing}, unexpected columns {extra}; schema is {list(TIDY_COLUMNS)}"
        )
    out = df.loc[:, list(TIDY_COLUMNS)].copy()
    for col in ("run", "method", "task", "metric"):
        bad = ~out[col].map(lambda v: isinstance(v, str) and v != "")
        if bad.any():
            i = out.index[bad.to_numpy()][0]
            raise ValueError(f"tidy table: column {col!r} must hold non-empty strings; row {i} has {out.at[i, col]!r}")
        out[col] = out[col].astype(str)
    fraction = pd.to_numeric(out["fraction"], errors="coerce")
    bad = fraction.isna() | (fraction <= 0) | (fraction > 1)
    if bad.any():
        i = out.index[bad.to_numpy()][0]
        raise ValueError(f"tidy table: 'fraction' must be a number in (0, 1]; row {i} has {out.at[i, 'fraction']!r}")
    out["fraction"] = fraction.astype(float)
    seed = pd.to_numeric(out["seed"], errors="coerce")
    bad = seed.isna() | (seed != np.round(seed))
    if bad.any():
        i = out.index[bad.to_numpy()][0]
        raise ValueError(f"tidy table: 'seed' must be an integer; row {i} has {out.at[i, 'seed']!r}")
    out["seed"] = seed.astype(np.int64)
    value = pd.to_numeric(out["value"], errors="coerce")
    bad = (value.isna() & out["value"].notna()) | np.isinf(value)
    if bad.any():
        i = out.index[bad.to_numpy()][0]
        raise ValueError(f"tidy table: 'value' must be a float (NaN allowed, inf not); row {i} has {out.at[i, 'value']!r}")
    out["value"] = value.astype(float)
    dup = out.duplicated(subset=list(TIDY_KEY), keep=False)
    if dup.any():
        first = out[dup].iloc[0]
        raise ValueError(
            f"tidy table: {int(dup.sum())} rows share a key; e.g. "
            + ", ".join(f"{k}={first[k]!r}" for k in TIDY_KEY)
        )
    return out


def tidy_from_metrics(
    metrics: Mapping[str, float],
    *,
    run: str,
    method: str,
    task: str,
    fraction: float,
    seed: int,
) -> pd.DataFrame:
    """Tidy rows for one evaluation: one row per entry of a metric dict (e.g. :func:`recall_at_k`).

    :param metrics: ``{metric_name: value}``; values must be numbers (ints are stored as floats).
    :return: a validated tidy DataFrame with ``len(metrics)`` rows.
    """
    rows = [
        {"run": run, "method": method, "task": task, "fraction": fraction, "seed": seed, "metric": str(k), "value": v}
        for k, v in metrics.items()
    ]
    if not rows:
        raise ValueError("tidy_from_metrics: empty metrics mapping")
    for r in rows:
        if isinstance(r["value"], bool) or not isinstance(r["value"], (int, float, np.integer, np.floating)):
            raise ValueError(f"tidy_from_metrics: metric {r['metric']!r} has non-numeric value {r['value']!r}")
    return validate_tidy(pd.DataFrame(rows, columns=list(TIDY_COLUMNS)))


def summarize_tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Aggregate a tidy table over seeds: mean ± 95 % CI per (run, method, task, fraction, metric).

    Definition: the table is validated (:func:`validate_tidy`); within each (run, method, task,
    fraction, metric) group the non-NaN values over seeds give ``mean`` and ``ci95``
    (:func:`mean_ci95`: 1.96 · s/√n, NaN for n = 1), ``std`` (ddof = 1), ``n`` (the number of
    non-NaN values) and ``n_missing`` (NaN values, e.g. an undefined AUROC, which are reported and
    not averaged). A group whose values are all NaN has NaN mean.

    :param df: a tidy table.
    :return: one row per group, columns run, method, task, fraction, metric, mean, ci95, std, n,
        n_missing, sorted by the group key.
    """
    t = validate_tidy(df)
    records = []
    for key, group in t.groupby(list(SUMMARY_KEY), sort=True, dropna=False):
        v = group["value"].to_numpy(dtype=float)
        finite = v[~np.isnan(v)]
        if finite.size:
            mean, half = mean_ci95(finite)
            std = float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")
        else:
            mean, half, std = float("nan"), float("nan"), float("nan")
        records.append(
            dict(
                zip(SUMMARY_KEY, key),
                mean=mean,
                ci95=half,
                std=std,
                n=int(finite.size),
                n_missing=int(v.size - finite.size),
            )
        )
    return pd.DataFrame.from_records(records, columns=[*SUMMARY_KEY, "mean", "ci95", "std", "n", "n_missing"])
