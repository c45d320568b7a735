"""The papers' claims, each tested by one measurement here, with a verdict from its confidence interval.

Every analysis chapter that tests a claim writes its rows with :func:`write_claims` (``claims.csv``
in its output folder); the claims chapter reads them all (:func:`read_claims`) into one table. A
claim compares two things (``a`` is claimed to be higher than ``b``, e.g. LoVT's Dice above
ConVIRT's) over repetitions (downstream seeds, test phrases) or states that one value lies on one
side of a threshold (the std of representations without the global loss is near 0):

- ``difference = mean(a) - mean(b)`` with the normal-approximation 95 % CI of a difference of two
  means, ``± 1.96 sqrt(s_a²/n_a + s_b²/n_b)`` (the same 1.96 as :func:`~localign.eval.stats.mean_ci95`);
- verdict ``holds`` when the whole CI is on the claimed side of 0, ``contradicted`` when it is
  wholly on the other, ``not shown`` otherwise (including a single repetition, whose spread is
  unknown). A claim that does not hold is reported as such, never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from localign.eval.stats import Z_95

CLAIM_COLUMNS = ("chapter", "paper", "claim", "measure", "a", "b", "mean_a", "mean_b", "n_a", "n_b", "difference",
                 "ci_low", "ci_high", "verdict")
VERDICTS = ("holds", "not shown", "contradicted")
CLAIMS_FILE = "claims.csv"


def _finite(values: Iterable[float], name: str) -> np.ndarray:
    v = np.asarray(list(values), dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError(f"{name}: no finite value")
    return v


def verdict(ci_low: float, ci_high: float) -> str:
    """``holds`` (CI above 0), ``contradicted`` (below 0) or ``not shown`` (it contains 0, or is unknown)."""
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "not shown"
    if ci_low > 0:
        return "holds"
    if ci_high < 0:
        return "contradicted"
    return "not shown"


def compare_claim(chapter: str, paper: str, claim: str, measure: str, a: str, a_values: Sequence[float], b: str,
                  b_values: Sequence[float] | float, higher: str = "a") -> dict:
    """One row of the claims table: is ``a`` higher than ``b`` (``higher="a"``) or lower (``"b"``)?

    :param a_values: the repetitions of ``a`` (non-finite values are left out).
    :param b_values: the repetitions of ``b``, or one fixed number (a threshold: no spread).
    :return: a dict with the keys :data:`CLAIM_COLUMNS`; ``difference`` and its CI are oriented so
        that a positive difference supports the claim.
    """
    if higher not in ("a", "b"):
        raise ValueError(f"higher: expected 'a' or 'b', got {higher!r}")
    va = _finite(a_values, f"{claim}: {a}")
    vb = _finite([b_values] if np.isscalar(b_values) else b_values, f"{claim}: {b}")
    sign = 1.0 if higher == "a" else -1.0
    diff = sign * (va.mean() - vb.mean())
    var = (va.var(ddof=1) / va.size if va.size > 1 else math.nan) + (vb.var(ddof=1) / vb.size if vb.size > 1 else 0.0)
    half = Z_95 * math.sqrt(var) if math.isfinite(var) else math.nan
    return {"chapter": chapter, "paper": paper, "claim": claim, "measure": measure, "a": a, "b": b,
            "mean_a": float(va.mean()), "mean_b": float(vb.mean()), "n_a": int(va.size), "n_b": int(vb.size),
            "difference": float(diff), "ci_low": float(diff - half), "ci_high": float(diff + half),
            "verdict": verdict(diff - half, diff + half)}


def write_claims(rows: Sequence[dict], folder: str | Path) -> Path:
    """``folder/claims.csv`` with the columns :data:`CLAIM_COLUMNS`."""
    frame = pd.DataFrame(list(rows), columns=list(CLAIM_COLUMNS))
    bad = sorted(set(frame["verdict"]) - set(VERDICTS))
    if bad:
        raise ValueError(f"claims: unknown verdicts {bad}; expected {VERDICTS}")
    path = Path(folder) / CLAIMS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def read_claims(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Every claims file (or folder holding one) as one table; a missing file is an error naming it."""
    frames = []
    for p in paths:
        path = Path(p)
        path = path / CLAIMS_FILE if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no claims file (the chapter that writes it has not run)")
        frame = pd.read_csv(path)
        missing = sorted(set(CLAIM_COLUMNS) - set(frame.columns))
        if missing:
            raise ValueError(f"{path}: columns {missing} missing")
        frames.append(frame[list(CLAIM_COLUMNS)])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(CLAIM_COLUMNS))


def claims_display(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The claims table as a reader sees it: one row per claim, by paper, with the two means, the
    difference and its 95 % CI in one cell, the repetitions and the verdict."""
    def number(x: float) -> str:
        return "n/a" if not math.isfinite(x) else f"{x:.{digits}g}"

    rows = []
    for _, r in table.iterrows():
        ci = "" if not (math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"])) else f" [{number(r['ci_low'])}, {number(r['ci_high'])}]"
        rows.append({"paper": r["paper"], "claim": r["claim"], "measure": r["measure"],
                     "a": f"{r['a']}: {number(r['mean_a'])} (n={int(r['n_a'])})",
                     "b": f"{r['b']}: {number(r['mean_b'])} (n={int(r['n_b'])})",
                     "difference [95 % CI]": number(r["difference"]) + ci, "verdict": r["verdict"], "chapter": r["chapter"]})
    return pd.DataFrame(rows, columns=["paper", "claim", "measure", "a", "b", "difference [95 % CI]", "verdict", "chapter"])
