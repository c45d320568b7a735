"""The pretraining engine: one code path for ``localign pretrain``, notebook 03 and ``torchrun``."""

from localign.train.config import AUGMENTATIONS, AugmentConfig, TrainConfig, encoder_overrides, resolve_method
from localign.train.engine import RunResult, pretrain

__all__ = ["AUGMENTATIONS", "AugmentConfig", "RunResult", "TrainConfig", "encoder_overrides", "pretrain", "resolve_method"]
