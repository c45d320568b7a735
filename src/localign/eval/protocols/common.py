"""What every protocol shares: its result record, the "cannot run here" signal, seeding and data splits.

A protocol returns a list of :class:`ProtocolResult`, one per (label fraction, seed) repetition,
each holding a flat ``{metric: value}`` dict; :mod:`localign.eval.protocols.runner` turns them into
tidy rows (:mod:`localign.eval.stats`). A protocol that cannot run on the data or model it was
given (no RSNA table, no test split, a baseline without a text tower) raises
:class:`TaskUnavailable` with the reason, which the runner records instead of crashing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from localign.eval.probe import sample_label_fraction

log = logging.getLogger(__name__)

#: the three splits every protocol uses: fit on ``train``, select the epoch on ``validate``,
#: report on ``test`` (MIMIC-CXR's official split names; RSNA/MS-CXR tables use the same names)
SPLITS = ("train", "validate", "test")


class TaskUnavailable(RuntimeError):
    """A protocol cannot run on this data or model; the message says why (recorded, not fatal)."""


@dataclass(frozen=True)
class ProtocolResult:
    """One repetition of a protocol: its label fraction, seed and scalar metrics.

    :ivar fraction: fraction of the training labels used, in (0, 1] (1.0 for protocols without
        training or without label fractions).
    :ivar seed: seed of the repetition (0 for deterministic protocols).
    :ivar metrics: ``{metric: value}``; NaN marks an undefined metric (e.g. an AUROC on a class
        with one label value), never a missing one.
    :ivar details: optional per-item table (e.g. per-phrase CNRs) written next to the results.
    """

    fraction: float
    seed: int
    metrics: dict[str, float]
    details: pd.DataFrame | None = field(default=None, compare=False)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG seeded by ``seed`` and restore the outer state afterwards.

    Layer initialisation (``nn.Linear``, ``nn.Conv2d``) draws from the global RNG; forking it keeps
    a protocol's result a function of its own seed, whatever ran before it.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def split_rows(table: pd.DataFrame, what: str, splits: Sequence[str] = SPLITS) -> dict[str, pd.DataFrame]:
    """The rows of each split of a protocol table (column ``split``), each with a fresh 0..n-1 index.

    :raises TaskUnavailable: a split has no rows (e.g. a small dataset without edema test images).
    """
    if "split" not in table.columns:
        raise ValueError(f"{what}: table has no 'split' column (columns: {list(table.columns)})")
    out = {}
    for name in splits:
        rows = table[table["split"] == name].reset_index(drop=True)
        if rows.empty:
            counts = table["split"].value_counts().to_dict()
            raise TaskUnavailable(f"{what}: the {name!r} split has no rows (rows per split: {counts})")
        out[name] = rows
    return out


def fraction_subset(train: pd.DataFrame, fraction: float, seed: int, patient_col: str) -> pd.DataFrame:
    """The training rows of one label fraction: :func:`~localign.eval.probe.sample_label_fraction`
    (a seeded draw of whole patients, nested across fractions for one seed), re-indexed 0..n-1."""
    if fraction == 1.0:
        return train.reset_index(drop=True)
    return sample_label_fraction(train, fraction, seed, patient_col=patient_col).reset_index(drop=True)


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Index batches of one training epoch: a permutation drawn from ``default_rng([seed, epoch])``."""
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def check_positive(name: str, value: float | int, integer: bool = False, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` naming a config field whose value is not a positive (or non-negative) number."""
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not ok_type or (value < 0 if allow_zero else value <= 0):
        kind = "integer" if integer else "number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a {kind} {bound}, got {value!r}")
