"""Reading run folders back: the trained model, its configs and its summary.

Downstream code (evaluation, figures) starts from a run folder written by :func:`localign.train.pretrain`.
:func:`load_run` rebuilds the full method (for retrieval, grounding maps, representation analyses);
:func:`localign.train.checkpoint.load_image_encoder` loads only the exported image backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from localign.data.transforms import Preprocessing
from localign.models import build_model
from localign.models.config import MethodConfig
from localign.models.methods.base import PretrainModel
from localign.train.checkpoint import load_checkpoint, read_preprocessing, read_torch_file
from localign.train.config import TrainConfig
from localign.train.run_folder import RunFolder


@dataclass
class LoadedRun:
    """A trained method in eval mode with everything needed to feed it data."""

    run_dir: Path
    model: PretrainModel
    method: MethodConfig
    train: TrainConfig
    summary: dict[str, Any]
    #: the record exported with the encoder (None when ``encoder.pt`` is missing: an unfinished run)
    preprocessing: Preprocessing | None

    @property
    def name(self) -> str:
        return self.run_dir.name


def read_run_config(run_dir: str | Path) -> tuple[TrainConfig, MethodConfig]:
    """The TrainConfig and resolved MethodConfig saved in ``config.yaml``."""
    data = RunFolder(Path(run_dir)).read_config()
    return TrainConfig.from_dict(data["train"]), MethodConfig.from_dict(data["method"])


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the method of a run folder from ``checkpoints/<checkpoint>.pt`` (``best`` or ``last``)."""
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    train, method = read_run_config(run_dir)
    other = "last" if checkpoint == "best" else "best"
    ckpt = load_checkpoint(folder.checkpoint_path(checkpoint), map_location="cpu",
                           hint=f"evaluate the run's other checkpoint instead (localign evaluate --checkpoint {other}), or train the run again")
    model = build_model(method)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    summary = folder.read_summary()
    preprocessing = None
    encoder_path = folder.encoder_path
    if encoder_path.is_file():
        hint = f"re-export it with localign.train.export_image_encoder, or delete it to evaluate {run_dir} without it"
        preprocessing = read_preprocessing(read_torch_file(encoder_path, "cpu", hint), encoder_path)
    return LoadedRun(run_dir=run_dir, model=model, method=method, train=train, summary=summary, preprocessing=preprocessing)
