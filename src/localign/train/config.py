"""Run configuration of pretraining: which method, which data, and the few run-level settings.

A :class:`TrainConfig` names a registry method plus dotted overrides of its
:class:`~localign.models.config.MethodConfig`; :func:`resolve_method` applies them. Both the train
config and the resolved method config are saved in ``config.yaml`` of every run folder and inside
every checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from localign.config import config_from_dict, config_to_dict, replace
from localign.data.transforms import AUGMENTATIONS, AugmentConfig
from localign.models.config import MethodConfig
from localign.models.registry import get_method


@dataclass(frozen=True)
class TrainConfig:
    """One pretraining run. ``None`` means "the method's paper default"."""

    method: str = "lovt"
    recipe: str = "paper"  # the named recipe the run was made from (localign.train.recipes); informative
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted MethodConfig keys, e.g. {"image.arch": "resnet18"}
    data: str | None = None  # prepared dataset folder; None: the SynthCXR demo (generated and prepared on first use)
    out: str = "runs/lovt"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int | None = None
    batch_size: int | None = None  # the contrastive batch: split across ranks under DDP
    lr: float | None = None
    text_lr: float | None = None
    accumulate: int | None = None
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    max_train_studies: int | None = None  # use only the first N training studies (LoVT's subsets are prefixes)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16, else fp16, on CUDA; off on CPU) | off | bf16 | fp16
    deterministic: bool = False
    num_workers: int = 0
    text_cache: bool = True  # a frozen text tower (text.freeze) reads token states cached per dataset
    val_retrieval_pool: int | None = None  # None: the whole validation split; N: chunks of N pairs (LIMITR: 1000)
    checkpoint_every: int | None = None  # optimizer steps between mid-epoch checkpoints (None: at epoch ends)
    early_stopping: bool = True
    log_every: int = 10  # optimizer steps between train-metric rows
    progress: bool = True
    resume: bool = False

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(cls, data)


def resolve_method(config: TrainConfig) -> MethodConfig:
    """The registry method with the run's overrides and shortcuts (epochs, batch size, lr) applied."""
    method = get_method(config.method, **dict(config.overrides))
    optim: dict[str, Any] = {}
    if config.epochs is not None:
        optim["max_epochs"] = config.epochs
    if config.batch_size is not None:
        optim["batch_size"] = config.batch_size
    if config.lr is not None:
        optim["lr"] = config.lr
    if config.text_lr is not None:
        optim["text_lr"] = config.text_lr
    if config.accumulate is not None:
        optim["accumulate"] = config.accumulate
    if optim:
        method = dataclasses.replace(method, optim=dataclasses.replace(method.optim, **optim))
    return method


_TORCHVISION_LAST = {"resnet18": "layer4", "resnet50": "layer4"}


def encoder_overrides(
    method: str | MethodConfig,
    image_arch: str = "resnet18",
    image_size: int = 128,
    image_weights: str | None = None,
    text_model: str = "minilm",
) -> dict[str, Any]:
    """Overrides that put a method on other encoders while keeping its design.

    Used to give every method **identical encoders** (the demo runs all methods on a ResNet-18 at
    128 px and the offline MiniLM): the region layer keeps its role (LoVT/local-MI regions from the
    last stage, GLoRIA/LIMITR from the stage before), GLoRIA/LIMITR's 224→299 upsampling is kept only
    at 224 px input, and LoVT's "freeze half of BERT" becomes half of the new text tower's layers.
    """
    cfg = get_method(method) if isinstance(method, str) else method
    out: dict[str, Any] = {"image.arch": image_arch, "image.weights": image_weights, "image.input_size": image_size}
    if image_arch in _TORCHVISION_LAST:
        last = _TORCHVISION_LAST[image_arch]
        if cfg.image.region_layer not in ("layer1", "layer2", "layer3", "layer4"):  # Liao et al.'s layer5/6
            out["image.region_layer"] = last
    if cfg.image.upsample_to is not None and image_size != 224:
        out["image.upsample_to"] = None
    out["text.model"] = text_model
    if cfg.text.freeze_layers:
        # The project's loader (local files first, a clear error naming the model offline), not
        # transformers' AutoConfig directly, which retries the network and says nothing of the model.
        from localign.data.tokenize import load_text_config

        n_layers = load_text_config(text_model).num_hidden_layers
        # Keep the paper's frozen fraction (LoVT/ConVIRT: 6 of Bio_ClinicalBERT's 12 layers).
        out["text.freeze_layers"] = round(cfg.text.freeze_layers / 12 * n_layers)
    return out


def with_overrides(config: TrainConfig, **overrides: Any) -> TrainConfig:
    """``replace`` for TrainConfig that merges method overrides instead of replacing them."""
    merged = {**config.overrides, **overrides.pop("overrides", {})}
    return replace(config, overrides=merged, **overrides)


def make_train_config(
    method: str = "lovt",
    out: str = "runs/lovt",
    data: str | None = None,
    encoders: str | None = None,
    image_arch: str | None = None,
    image_size: int | None = None,
    text_model: str | None = None,
    augment: str | None = None,
    overrides: dict[str, Any] | None = None,
    recipe: str = "paper",
    **train: Any,
) -> TrainConfig:
    """The TrainConfig of the CLI flags / notebook parameters (one function, so both agree).

    :param recipe: a name of :data:`localign.train.recipes.RECIPES` (``paper`` or ``demo``): its
        encoders, augmentation, TrainConfig fields and method overrides are the defaults that every
        other argument given here (not None) overrides
    :param encoders: ``paper`` keeps the method's encoders (``image_arch``/``image_size``/``text_model``
        override single fields); ``demo`` puts every method on identical encoders via
        :func:`encoder_overrides` (ResNet-18 at 128 px and the offline MiniLM unless given)
    :param augment: a name of :data:`AUGMENTATIONS`
    :param overrides: further dotted MethodConfig overrides (applied last)
    :param train: any other TrainConfig field (epochs, batch_size, lr, seed, device, max_steps, ...);
        None means "the recipe's value" (or the TrainConfig default where the recipe sets none)
    """
    from localign.train.recipes import get_recipe

    chosen = get_recipe(recipe)
    recipe_train, recipe_overrides = chosen.for_method(method)
    encoders = chosen.encoders if encoders is None else encoders
    augment = chosen.augment if augment is None else augment
    train = {**recipe_train, **{k: v for k, v in train.items() if v is not None}}
    if encoders not in ("paper", "demo"):
        raise ValueError(f"encoders must be 'paper' or 'demo', got {encoders!r}")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose from {sorted(AUGMENTATIONS)}")
    o: dict[str, Any] = {}
    if encoders == "demo":
        o.update(encoder_overrides(method, image_arch=image_arch or "resnet18", image_size=image_size or 128, text_model=text_model or "minilm"))
    else:
        if image_arch:
            o["image.arch"] = image_arch
        if image_size:
            o["image.input_size"] = image_size
        if text_model:
            o["text.model"] = text_model
    o.update(recipe_overrides)
    o.update(overrides or {})
    return TrainConfig(method=method, overrides=o, data=data, out=out, augment=AUGMENTATIONS[augment], recipe=recipe, **train)
