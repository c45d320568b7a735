"""Frozen configs of a pretraining method: encoders, text input, heads, objective and optimisation.

A :class:`MethodConfig` fully describes one method (e.g. ``lovt``): it is what the registry stores
under a name, what ``pretrain`` resolves and saves as ``config.yaml`` in every run folder, and what
:func:`localign.models.build_model` turns into an ``nn.Module``. The objective part is
family-specific (one small dataclass per family) so that each preset carries only the constants
its paper defines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from localign.config import config_from_dict, config_to_dict
from localign.data.text import TextInputConfig

# --------------------------------------------------------------------------------------------------
# Encoders and inputs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageEncoderConfig:
    """A convolutional image backbone returning a region grid and a pooled global vector."""

    arch: str = "resnet50"  # resnet18 | resnet50 | liao_resnet5 | liao_resnet6
    weights: str | None = None  # None: random init; "imagenet": torchvision weights; or a path to a state_dict
    region_layer: str = "layer4"  # stage whose output map is the region grid (LoVT layer4, GLoRIA/LIMITR layer3)
    global_pool: str = "avg"  # pooling of the LAST stage: avg | max | avg2x2_flatten (Liao et al.'s 768-d vector)
    in_channels: int = 3  # 3: grayscale replicated (ImageNet-compatible); 1: one-channel stem (local MI)
    input_size: int = 224  # side of the square network input produced by the data pipeline
    upsample_to: int | None = None  # bilinear upsampling inside the encoder (GLoRIA/LIMITR: 224 -> 299)


@dataclass(frozen=True)
class TextEncoderConfig:
    """A HF BERT-family text tower (hub id, local folder, or ``"minilm"`` for the offline package)."""

    model: str = "emilyalsentzer/Bio_ClinicalBERT"
    random_init: bool = False  # architecture of `model` (or `tiny`), random weights (tests)
    tiny: tuple[tuple[str, int], ...] | None = None  # BertConfig overrides, e.g. (("hidden_size", 64), ...)
    freeze_embeddings: bool = False
    freeze_layers: int = 0  # freeze the first N transformer layers (LoVT: 6 of 12)
    # Lock the whole tower (LiT, Zhai et al. 2022): no gradients, always in eval mode (no dropout),
    # so a sequence's token states depend only on its token ids and can be cached
    # (:mod:`localign.models.text_cache`). The projection/attention heads above it still train.
    freeze: bool = False
    last_layers: int = 1  # token states = sum of the last N hidden layers (GLoRIA/LIMITR: 4)
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class HeadConfig:
    """Projection heads Linear-(BN)-ReLU-Linear (LoVT ``f``/``f̄``; ConVIRT without BN)."""

    d_z: int = 512
    d_hidden: int = 2048
    norm: str | None = "batch"  # batch | None


# --------------------------------------------------------------------------------------------------
# Objectives, one small dataclass per family
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlobalLossConfig:
    """ConVIRT / CLIP: one InfoNCE between global image and report embeddings."""

    image_pool: str = "avg"  # avg (backbone pool) | attention (attention pool over regions, CLIP*)
    report_pool: str = "token_max"  # token_max (max over non-special tokens) | attention (over sentences)
    temperature: float = 0.1
    weight_a2b: float = 0.75  # image -> report direction (ConVIRT's lambda)


@dataclass(frozen=True)
class LoVTLossConfig:
    """LoVT: global InfoNCE + local image/report losses through the alignment model (spec §2.4)."""

    image_pool: str = "attention"  # attention | avg
    report_pool: str = "attention"  # attention (over sentences) | token_max
    temperature: float = 0.1  # of the global loss
    weight_a2b: float = 0.75  # image -> report direction of the global loss
    global_weight: float = 1.0  # gamma
    local_temperature: float = 0.3
    local_image_weight: float = 0.75  # mu: each direction weighted mu/2 = 0.375 (LoVT_100.yaml)
    local_report_weight: float = 0.75  # nu
    spatial_threshold: float = 0.5  # relative distance threshold of the smooth positives
    spatial_smooth: bool = True  # exp(-lambda d) weights (False: equal weights inside the radius)
    spatial_lambda: float = 1.0
    local_weights: str = "attention"  # attention (pool weights, stop-grad) | uniform


@dataclass(frozen=True)
class MILossConfig:
    """Liao et al.: MI maximisation with a concatenation critic, global or local (Eq. 5)."""

    level: str = "local"  # global | local
    estimator: str = "cpc"  # cpc | mine | repo_infonce (global only: the official repository's variant)
    text_feature: str = "cls"  # cls (paper) | pooler (repository: tanh(W h_CLS))
    critic_hidden: tuple[int, ...] = (1024, 512)  # paper/repository: 1024 -> 512 -> 1
    exclude_same_study: bool = True  # repository: skip shuffled pairs from the same study
    region_selection: str = "estimate"  # local: estimate (Eq. 5: max over the per-region estimates) | critic (each image's best region)


@dataclass(frozen=True)
class GloriaLossConfig:
    """GLoRIA: word-region attention local loss + global loss (spec §4)."""

    temp1: float = 4.0  # attention sharpness
    temp2: float = 5.0  # word-score aggregation
    temp3: float = 10.0  # logit scale of the cross-entropies
    agg: str = "sum"  # sum | mean
    paper_scaling: bool = False  # code omits the paper's 1/temp2 (default matches the published numbers)
    local_weight: float = 1.0
    global_weight: float = 1.0


@dataclass(frozen=True)
class LimitrLossConfig:
    """LIMITR: external (cross-sample) and internal (within-sample) local losses + global (spec §3)."""

    lam: float = 4.0  # attention sharpness (temp1)
    temperature: float = 0.1  # all losses (x10 logits)
    external_weight: float = 1.0
    internal_weight: float = 1.0  # paper: on; released config: 0
    global_weight: float = 1.0
    positional_encoding: bool = True  # paper's "consistent visual structure"; released config: off
    sa_dropout: float = 0.4
    # The released internal loss (spec §3.3): its misaligned pad mask, its 97-slot token layout with
    # [SEP] kept (Limitr.released_word_layout) and regions without the positional encoding.
    bug_compatible_internal_mask: bool = False
    # Memory, not maths: score the B x B pairs in chunks of this many images with activation
    # checkpointing (recomputed in backward). None = all at once; at paper size (B=48, 19x19 regions,
    # D=768) that holds ~2.5 GB per [B, B, R, D] tensor and does not fit in 24 GB.
    pair_chunk: int | None = None


LossConfig = Union[GlobalLossConfig, LoVTLossConfig, MILossConfig, GloriaLossConfig, LimitrLossConfig]

#: Method family -> its model class (a :class:`~localign.models.methods.base.PretrainModel`), which
#: declares the family's name and loss config as class attributes (``family``, ``loss_config``).
#: The one registry of families: each class enters it when it is defined
#: (``PretrainModel.__init_subclass__``), i.e. when ``localign.models`` is imported.
FAMILIES: dict[str, type] = {}


def family_loss_config(family: str) -> type:
    """The loss config class a method family declares; ``ValueError`` for an unknown family."""
    if family not in FAMILIES:
        raise ValueError(f"unknown method family {family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[family].loss_config


# --------------------------------------------------------------------------------------------------
# Optimisation defaults of the paper
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimConfig:
    """The paper's optimisation defaults; a run may override any field."""

    optimizer: str = "adamw"  # adamw | adam
    lr: float = 1e-4
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    text_optimizer: str | None = None  # separate optimiser for the text tower (local MI: AdamW for BERT)
    text_lr: float | None = None  # None: same as lr
    text_weight_decay: float | None = None
    schedule: str = "cosine_per_epoch"  # none | cosine_per_epoch | plateau | linear_warmup
    text_schedule: str | None = None  # schedule of the text optimiser if it differs (local MI: linear_warmup)
    plateau_patience: int = 12
    plateau_factor: float = 0.5
    warmup_fraction: float = 0.1
    batch_size: int = 32
    accumulate: int = 1  # gradient accumulation (LoVT: 16; negatives still come from each micro-batch)
    grad_clip: float | None = None  # LIMITR: 0.25
    max_epochs: int = 100
    monitor: str = "val/loss"  # val/loss (LoVT) | val/r_sum (LIMITR)
    patience: int = 10


# --------------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodConfig:
    """A named, fully resolved pretraining method."""

    name: str
    family: str  # global_contrastive | lovt | mi | gloria | limitr
    description: str
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    text_input: TextInputConfig = field(default_factory=TextInputConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: Any = field(default_factory=GlobalLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    reference: str = ""  # where the defaults come from (paper / config file)

    def __post_init__(self) -> None:
        expected = family_loss_config(self.family)
        if not isinstance(self.loss, expected):
            raise ValueError(
                f"method {self.name!r} of family {self.family!r} needs a {expected.__name__}, "
                f"got {type(self.loss).__name__}"
            )

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MethodConfig":
        data = dict(data)
        try:
            loss_cls = family_loss_config(data.get("family"))
        except ValueError as err:
            raise ValueError(f"MethodConfig: {err}") from None
        # `loss` is typed by the family, which config_from_dict cannot see: parse it first.
        data["loss"] = config_from_dict(loss_cls, data.get("loss") or {})
        return config_from_dict(cls, data)
