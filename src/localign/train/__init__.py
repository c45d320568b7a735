"""The pretraining engine: one code path for ``localign pretrain``, notebook 03 and ``torchrun``."""

from localign.train.config import AUGMENTATIONS, AugmentConfig, TrainConfig, encoder_overrides, make_train_config, resolve_method
from localign.train.checkpoint import export_image_encoder, load_image_encoder
from localign.train.engine import RunResult, pretrain
from localign.train.runs import LoadedRun, load_run, read_run_config

__all__ = [
    "AUGMENTATIONS", "AugmentConfig", "LoadedRun", "RunResult", "TrainConfig", "encoder_overrides", "export_image_encoder",
    "load_image_encoder", "load_run", "make_train_config", "pretrain", "read_run_config", "resolve_method",
]
