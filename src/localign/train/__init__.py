"""The pretraining engine: one code path for ``localign pretrain``, notebook 03 and ``torchrun``."""

from localign.data.transforms import AUGMENTATIONS, AugmentConfig
from localign.train.config import TrainConfig, encoder_overrides, make_train_config, resolve_method
from localign.train.checkpoint import export_image_encoder, load_image_encoder
from localign.train.engine import RunResult, RunState, pretrain
from localign.train.run_folder import RunFolder
from localign.train.runs import LoadedRun, load_run, read_run_config

__all__ = [
    "AUGMENTATIONS", "AugmentConfig", "LoadedRun", "RunFolder", "RunResult", "RunState", "TrainConfig", "encoder_overrides", "export_image_encoder",
    "load_image_encoder", "load_run", "make_train_config", "pretrain", "read_run_config", "resolve_method",
]
