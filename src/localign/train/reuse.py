"""Train a run unless its folder already holds the same finished run.

The chapters of a report plan share runs: the ablation chapter needs ``lovt`` that the pretraining
chapter trained, the representation and grounding chapters need the ablation chapter's presets.
Each of them asks :func:`ensure_run` for the run it needs; a folder whose ``config.yaml`` resolves to
the same training (every setting that can change a result) and that finished is reused, anything
else is trained (again), in place, as ``localign pretrain`` would::

    path, trained = ensure_run(make_train_config(method="lovt_no_global", recipe="demo", out="runs/demo/lovt_no_global"))
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from localign.config import config_to_dict
from localign.train.config import TrainConfig, resolve_method
from localign.train.run_folder import RunFolder

log = logging.getLogger(__name__)

#: TrainConfig fields that change how a run is watched or where it is written, not what it learns
NOT_RESULT_SETTINGS = ("out", "progress", "resume", "num_workers", "log_every", "checkpoint_every", "device", "keep_last")


def _comparable(train: dict[str, Any], method: dict[str, Any]) -> dict[str, Any]:
    train = {k: v for k, v in train.items() if k not in NOT_RESULT_SETTINGS}
    # the YAML of config.yaml turns tuples into lists: compare the JSON forms
    return json.loads(json.dumps({"train": train, "method": method}, default=str))


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def run_differences(config: TrainConfig) -> list[str] | None:
    """What differs between ``config`` and the finished run in ``config.out`` (``[]``: the same run);
    ``None`` when there is no finished run there (no ``config.yaml``, ``encoder.pt`` or ``summary.json``)."""
    folder = RunFolder(Path(config.out))
    if not (folder.config_path.is_file() and folder.encoder_path.is_file() and folder.summary_path.is_file()):
        return None
    stored = folder.read_config()
    wanted = _comparable(config_to_dict(config), config_to_dict(resolve_method(config)))
    return _differences(_comparable(stored.get("train", {}), stored.get("method", {})), wanted)


def ensure_run(config: TrainConfig) -> tuple[Path, bool]:
    """The run folder ``config.out``, trained first unless it holds this finished run already.

    :return: ``(run folder, trained)``: ``trained`` is False when the folder was reused.
    """
    from localign.train.engine import pretrain

    differences = run_differences(config)
    if differences == []:
        log.info("%s: reusing the finished run (same settings)", config.out)
        return Path(config.out), False
    if differences:
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        log.warning("%s holds a run with other settings (%s): training it again", config.out, shown)
    pretrain(config)
    return Path(config.out), True
