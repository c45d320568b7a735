"""The run folder's format: every file name, the writer, the reader and the checks.

The counterpart of :mod:`localign.data.manifest` (which owns the prepared folder) for what
:func:`localign.train.pretrain` writes and evaluation reads. A run folder holds::

    config.yaml                  the TrainConfig and the resolved MethodConfig
    metrics.csv                  long format: step, epoch, phase (train/val), name, value
    checkpoints/last.pt          everything needed to resume (atomic writes; removed when a finished
                                 run has keep_last off, as the demo recipe does)
    checkpoints/best.pt          the best epoch on the monitored metric
    encoder.pt                   image backbone + Preprocessing record of the best epoch (no training classes needed)
    figures/training_curves.png  the training curves, drawn by the caller that presents the run
                                 (``localign pretrain``, notebook 03; :func:`localign.viz.training.save_training_curves`)
    summary.json                 best/final metrics, throughput, wall time, seeds, versions
    train.log                    the readable log

Only this module spells these names; everything else asks a :class:`RunFolder` for its paths.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from localign.paths import atomic_write_text
from localign.train.checkpoint import remove_stale_temporaries

log = logging.getLogger("localign.train")

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_NAMES = ("last", "best")
ENCODER_FILE = "encoder.pt"
FIGURES_DIR = "figures"
TRAINING_CURVES_FILE = "training_curves.png"
SUMMARY_FILE = "summary.json"
LOG_FILE = "train.log"
#: columns of ``metrics.csv``
METRICS_COLUMNS = ("step", "epoch", "phase", "name", "value")


@dataclass(frozen=True)
class RunFolder:
    """Paths, writer and reader of one run folder (see the module docstring for its layout)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())

    # --- layout -----------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    def checkpoint_path(self, name: str = "last") -> Path:
        """``checkpoints/<name>.pt`` for ``name`` in ``last`` / ``best``."""
        if name not in CHECKPOINT_NAMES:
            raise ValueError(f"checkpoint must be one of {CHECKPOINT_NAMES}, got {name!r}")
        return self.checkpoints_dir / f"{name}.pt"

    @property
    def encoder_path(self) -> Path:
        return self.root / ENCODER_FILE

    @property
    def figures_dir(self) -> Path:
        return self.root / FIGURES_DIR

    @property
    def training_curves_path(self) -> Path:
        return self.figures_dir / TRAINING_CURVES_FILE

    @property
    def summary_path(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def log_path(self) -> Path:
        return self.root / LOG_FILE

    # --- writer -----------------------------------------------------------------------------------
    def create(self, resume: bool = False) -> None:
        """Make the folders; when resuming, delete what a run killed while saving left half-written."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        self.figures_dir.mkdir(exist_ok=True)
        if resume:
            for tmp in remove_stale_temporaries(self.checkpoints_dir) + remove_stale_temporaries(self.root):
                log.info("removed %s, a file a killed run did not finish writing", tmp)

    def write_config(self, config: dict[str, Any]) -> None:
        """``{"train": TrainConfig dict, "method": MethodConfig dict}`` as ``config.yaml``."""
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.summary_path.write_text(json.dumps(summary, indent=2, default=str))

    # --- reader -----------------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The ``{"train": ..., "method": ...}`` dict of ``config.yaml``."""
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.root} is not a run folder: no {CONFIG_FILE} (pretrain writes one)")
        return yaml.safe_load(self.config_path.read_text())

    def read_summary(self) -> dict[str, Any]:
        """``summary.json``, or ``{}`` for a run that has not finished."""
        return json.loads(self.summary_path.read_text()) if self.summary_path.is_file() else {}

    def read_history(self) -> pd.DataFrame:
        """``metrics.csv`` (empty, with its columns, before the first row)."""
        return pd.read_csv(self.metrics_path) if self.metrics_path.is_file() else pd.DataFrame(columns=list(METRICS_COLUMNS))

    # --- checks -----------------------------------------------------------------------------------
    def check(self) -> "RunFolder":
        """A finished run folder as ``pretrain`` writes it; raises naming what is missing."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"run folder {self.root} does not exist")
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.root} is not a run folder: no {CONFIG_FILE} (written by `localign pretrain`)")
        if not self.encoder_path.is_file():
            raise FileNotFoundError(f"run folder {self.root} has no {ENCODER_FILE} (the run did not finish; its preprocessing is unknown)")
        return self


def check_run_dir(run_dir: str | Path) -> Path:
    """A run folder as written by ``pretrain``; raises naming what is missing (:meth:`RunFolder.check`)."""
    return RunFolder(Path(run_dir)).check().root


class MetricsLog:
    """Append-only long-format ``metrics.csv`` (rank 0); :attr:`rows` counts its data rows and is
    stored in every checkpoint."""

    columns = METRICS_COLUMNS

    def __init__(self, path: Path, truncate_after_step: int | None = None, keep_rows: int | None = None) -> None:
        self.path = path
        self.rows = 0
        if keep_rows is not None and path.is_file():
            # A resumed run keeps exactly the rows its checkpoint had seen: the killed run's later rows
            # (training rows, and the validation rows of an epoch whose end-of-epoch save was cut
            # short) are written again, so none is duplicated.
            with path.open(newline="") as f:
                lines = list(itertools.islice(csv.reader(f), keep_rows + 1))
            if len(lines) < keep_rows + 1:
                log.warning("%s has %d rows, fewer than the %d its checkpoint counted", path, max(len(lines) - 1, 0), keep_rows)
            out = io.StringIO()
            csv.writer(out).writerows([list(self.columns), *lines[1:]])
            atomic_write_text(path, out.getvalue())
            self.rows = len(lines[1:])
        elif truncate_after_step is not None and path.is_file():
            # A checkpoint without a row count (older localign): truncate by step.
            df = pd.read_csv(path)
            df = df[df["step"] <= truncate_after_step]
            df.to_csv(path, index=False)
            self.rows = len(df)
        elif truncate_after_step is None and keep_rows is None and path.is_file():
            path.unlink()
        if not path.is_file():
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(self.columns)

    def write(self, step: int, epoch: int, phase: str, values: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            w = csv.writer(f)
            for name, value in values.items():
                w.writerow((step, epoch, phase, name, f"{float(value):.8g}"))
        self.rows += len(values)
