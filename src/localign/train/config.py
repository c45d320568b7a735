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

from localign.config import Option, config_from_dict, config_to_dict, options_to_dotted, replace
from localign.data.transforms import AUGMENTATIONS, AugmentConfig
from localign.models.config import MethodConfig
from localign.models.registry import get_method
from localign.train.recipes import RECIPES


@dataclass(frozen=True)
class TrainConfig:
    """One pretraining run. ``None`` means "the method's paper default"."""

    method: str = "lovt"
    recipe: str = "paper"  # the named recipe the run was made from (localign.train.recipes); informative
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted MethodConfig keys, e.g. {"image.arch": "resnet18"}
    data: str | None = None  # prepared dataset folder; None: the SynthCXR demo (generated and prepared on first use)
    out: str = "runs/lovt"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    max_train_studies: int | None = None  # use only the first N training studies (LoVT's subsets are prefixes)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto (bf16, else fp16, on CUDA; off on CPU) | off | bf16 | fp16 | bf16_native (bf16 where the
    # device computes it natively: CUDA with bf16, a CPU with AVX512-BF16 or AMX; off elsewhere)
    amp: str = "auto"
    deterministic: bool = False
    num_workers: int = 0
    text_cache: bool = True  # a frozen text tower (text.freeze) reads token states cached per dataset
    val_retrieval_pool: int | None = None  # None: the whole validation split; N: chunks of N pairs (LIMITR: 1000)
    checkpoint_every: int | None = None  # optimizer steps between mid-epoch checkpoints (None: at epoch ends)
    early_stopping: bool = True
    log_every: int = 10  # optimizer steps between train-metric rows
    progress: bool = True
    resume: bool = False
    # A finished run keeps best.pt (weights, optimiser and RNG: resumable by copying it over
    # last.pt) and the exported encoder; last.pt (about as large again) only while the run can resume.
    keep_last: bool = True

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(cls, _migrate_shortcuts(data))


# TrainConfig fields of run folders written before the shortcuts became dotted overrides; they
# were applied after the method overrides, so they win over them here too.
_LEGACY_SHORTCUTS = {"epochs": "optim.max_epochs", "batch_size": "optim.batch_size", "lr": "optim.lr",
                     "text_lr": "optim.text_lr", "accumulate": "optim.accumulate"}


def _migrate_shortcuts(data: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict) or not set(data) & set(_LEGACY_SHORTCUTS):
        return data
    data = dict(data)
    moved = {key: data.pop(name) for name, key in _LEGACY_SHORTCUTS.items() if name in data}
    data["overrides"] = {**(data.get("overrides") or {}), **{k: v for k, v in moved.items() if v is not None}}
    return data


def flat_train_config(data: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig dict (as saved in a checkpoint, older layouts included) with each method
    override as its own ``overrides.<dotted key>`` entry, so that a resume check can allow some
    overrides to change (``optim.max_epochs``) and not others."""
    data = dict(_migrate_shortcuts(data))
    for key, value in (data.pop("overrides", None) or {}).items():
        data[f"overrides.{key}"] = value
    return data


def resolve_method(config: TrainConfig) -> MethodConfig:
    """The registry method with the run's dotted overrides applied."""
    return get_method(config.method, **dict(config.overrides))


def apply_overrides(config: TrainConfig, dotted: dict[str, Any]) -> TrainConfig:
    """``config`` with dotted overrides: keys that start with a TrainConfig field (``seed``,
    ``augment.hflip_prob``) set it; every other key is a MethodConfig key (``optim.lr``) and joins
    ``config.overrides`` (later keys win), checked when the method is resolved."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    own = {k: v for k, v in dotted.items() if k.partition(".")[0] in names}
    method = {k: v for k, v in dotted.items() if k not in own}
    if "overrides" in own:
        raise ValueError("apply_overrides: give method overrides as dotted keys, not as 'overrides'")
    return replace(config, overrides={**config.overrides, **method}, **own)


# Flag / notebook parameter / make_train_config keyword -> dotted key. The only table of them:
# `localign pretrain`'s flags are built from it, notebook 03's parameters carry its names, and a
# named recipe's `train` values are given by these names.
TRAIN_OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("method", "method", "registry name (see `localign methods`)"),
    Option("recipe", "recipe", "paper: each paper's encoders and optimisation; demo: identical small encoders that learn in "
           "minutes on a CPU (see `localign.train.recipes`); the flags below override single values", choices=tuple(sorted(RECIPES))),
    Option("data", "data", "prepared dataset folder (default: the SynthCXR demo, generated on first use)"),
    Option("out", "out", "run folder to write (runs/<name>)", required=True),
    Option("encoders", None, "paper: the method's own encoders; demo: ResNet-18 at --image-size and the offline MiniLM for "
           "every method (default: the recipe's)", choices=("paper", "demo")),
    Option("image_arch", "image.arch", "image backbone (with --encoders demo: default resnet18)"),
    Option("image_size", "image.input_size", "network input size (default: the method's, 128 with --encoders demo)", int),
    Option("text_model", "text.model", "hub id, local folder or 'minilm' (default: the method's)"),
    Option("augment", "augment", "image augmentation scheme (default: the recipe's)", choices=tuple(sorted(AUGMENTATIONS))),
    Option("epochs", "optim.max_epochs", "maximum epochs (default: the recipe's, else the method's)", int),
    Option("batch_size", "optim.batch_size", "the contrastive batch (split across ranks under torchrun)", int),
    Option("lr", "optim.lr", "learning rate of the image encoder and heads", float),
    Option("text_lr", "optim.text_lr", "learning rate of the text tower (None: lr)", float),
    Option("accumulate", "optim.accumulate", "gradient accumulation steps", int),
    Option("max_steps", "max_steps", "stop after this many optimizer steps (smoke runs)", int),
    Option("max_train_studies", "max_train_studies", "use only the first N training studies", int),
    Option("seed", "seed", "default 0", int),
    Option("device", "device", "auto (default) | cpu | cuda | cuda:N"),
    Option("amp", "amp", "mixed precision (default auto)", choices=("auto", "off", "bf16", "fp16", "bf16_native")),
    Option("deterministic", "deterministic", "deterministic algorithms (default: the recipe's; the demo recipe is deterministic)", bool,
           both_ways=True),
    Option("workers", "num_workers", "data-loader worker processes (default 0)", int),
    Option("val_pool", "val_retrieval_pool", "retrieval candidate pool (default: the whole validation split)", int),
    Option("checkpoint_every", "checkpoint_every", "optimizer steps between mid-epoch checkpoints", int),
    Option("no_early_stopping", "early_stopping", "train all epochs", bool, negate=True),
    Option("resume", "resume", "continue from <out>/checkpoints/last.pt", bool),
    Option("keep_last", "keep_last", "keep checkpoints/last.pt once the run has finished (default: the recipe's; the demo recipe "
           "removes it and keeps best.pt, to halve a report's disk use)", bool, both_ways=True),
    Option("quiet", "progress", "no progress bars", bool, negate=True),
)}


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
    """``replace`` for TrainConfig that merges method overrides (``overrides={...}``) instead of
    replacing them; other keywords are TrainConfig fields or dotted keys (:func:`apply_overrides`)."""
    merged = {**config.overrides, **overrides.pop("overrides", {})}
    return apply_overrides(replace(config, overrides=merged), overrides)


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

    Every argument is an option of :data:`TRAIN_OPTIONS` (or a TrainConfig field by its own name,
    e.g. ``num_workers``); each becomes a dotted override, applied in this order (later wins):
    the recipe's encoders and method overrides, the recipe's options, ``overrides``, the
    explicit arguments (not None).

    :param recipe: a name of :data:`localign.train.recipes.RECIPES` (``paper`` or ``demo``): its
        encoders, augmentation, options and method overrides are the defaults that every other
        argument given here (not None) overrides
    :param encoders: ``paper`` keeps the method's encoders (``image_arch``/``image_size``/``text_model``
        override single fields); ``demo`` puts every method on identical encoders via
        :func:`encoder_overrides` (ResNet-18 at 128 px and the offline MiniLM unless given)
    :param augment: a name of :data:`AUGMENTATIONS`
    :param overrides: dotted overrides (MethodConfig keys such as ``optim.lr``, or TrainConfig fields)
    :param train: any other option (epochs, batch_size, lr, seed, device, max_steps, workers, quiet, ...)
        or TrainConfig field; None means "the recipe's value" (or the default where the recipe sets none)
    """
    from localign.train.recipes import get_recipe

    chosen = get_recipe(recipe)
    recipe_train, recipe_overrides = chosen.for_method(method)
    encoders = chosen.encoders if encoders is None else encoders
    augment = chosen.augment_for(method) if augment is None else augment
    if encoders not in ("paper", "demo"):
        raise ValueError(f"encoders must be 'paper' or 'demo', got {encoders!r}")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose from {sorted(AUGMENTATIONS)}")
    o: dict[str, Any] = {}
    if encoders == "demo":
        o.update(encoder_overrides(method, image_arch=image_arch or "resnet18", image_size=image_size or 128, text_model=text_model or "minilm"))
    else:
        o.update(options_to_dotted(TRAIN_OPTIONS, {"image_arch": image_arch or None, "image_size": image_size or None,
                                                   "text_model": text_model or None}))
    o.update(recipe_overrides)
    o.update(_train_dotted(recipe_train))
    o.update(overrides or {})
    o.update(_train_dotted({k: v for k, v in train.items() if v is not None}))
    base = TrainConfig(method=method, data=data, out=out, augment=AUGMENTATIONS[augment], recipe=recipe)
    return apply_overrides(base, o)


def _train_dotted(values: dict[str, Any]) -> dict[str, Any]:
    """Option names through :data:`TRAIN_OPTIONS`; any other name is taken as a dotted key (a
    TrainConfig field such as ``num_workers``, or ``optim.lr``)."""
    named = {k: v for k, v in values.items() if k in TRAIN_OPTIONS}
    for name in named:
        if TRAIN_OPTIONS[name].key is None or name in ("method", "recipe", "data", "out", "augment"):
            raise ValueError(f"{name!r} is an argument of make_train_config, not a setting a recipe or keyword can override here")
    return {**options_to_dotted(TRAIN_OPTIONS, named), **{k: v for k, v in values.items() if k not in named}}
