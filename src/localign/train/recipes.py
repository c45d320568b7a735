"""Named training recipes: how a method is trained, as opposed to what the method is.

A method preset (:mod:`localign.models.registry`) holds a paper's model and objective; a recipe
holds the run-level choices around it -- encoders, augmentation, learning rate and schedule,
epochs -- that a paper's compute budget dictates. Two recipes exist:

- ``paper``: each method's own encoders and the papers' optimisation (the preset defaults, the
  LoVT/ConVIRT augmentation). For ImageNet-initialised encoders and GPU days.
- ``demo``: every method on identical small encoders (a ResNet-18 at 128 px from scratch and the
  offline MiniLM), learning in minutes on 2 CPU cores. ``book/pretraining.md`` states how and why it
  differs from each paper.

``make_train_config(method, recipe="demo")``, ``localign pretrain --recipe demo`` and notebook 03
all read :data:`RECIPES`; explicit arguments override a recipe's values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from localign.models.registry import get_method


@dataclass(frozen=True)
class Recipe:
    """Run-level defaults applied on top of a method preset.

    :ivar encoders: ``paper`` (the method's own) or ``demo`` (identical small encoders)
    :ivar augment: a name of :data:`~localign.train.config.AUGMENTATIONS`
    :ivar train: settings by their option names of :data:`~localign.train.config.TRAIN_OPTIONS`
        (``lr``, ``epochs``, ``deterministic``, ...), as a user would give them on the command line
    :ivar overrides: dotted :class:`~localign.models.config.MethodConfig` overrides for every method
    :ivar by_family: per method family, further ``train`` fields and ``overrides``, and its own
        ``augment`` (``{"limitr": {"train": {...}, "overrides": {...}, "augment": "none"}}``)
    """

    name: str
    description: str
    encoders: str = "paper"
    augment: str = "convirt"
    train: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    by_family: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def for_method(self, method: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(options by name, dotted method overrides)`` of this recipe for one registry method."""
        family = get_method(method).family
        extra = self.by_family.get(family, {})
        return {**self.train, **extra.get("train", {})}, {**self.overrides, **extra.get("overrides", {})}

    def augment_for(self, method: str) -> str:
        """The augmentation name this recipe trains ``method`` with."""
        return self.by_family.get(get_method(method).family, {}).get("augment", self.augment)


RECIPES: dict[str, Recipe] = {
    "paper": Recipe(
        name="paper",
        description="each paper's encoders, augmentation and optimisation (the method presets' defaults)",
    ),
    "demo": Recipe(
        name="demo",
        description=(
            "identical small encoders for every method (ResNet-18 at 128 px from scratch, the offline MiniLM locked "
            "with cached token states), whole reports, GLoRIA's random crop for ConVIRT, CLIP, GLoRIA and LoVT, AdamW with a 5 % "
            "linear warm-up and a linear decay to 0, batch 32 (local MI 16), bf16 autocast where the processor computes "
            "bf16 natively, deterministic; epochs per family fit a chapter into minutes on 2 CPU cores"
        ),
        encoders="demo",
        # Measured (benchmarks/README.md, recipe variants): without augmentation ConVIRT over-fits
        # the demo training split within 3 epochs (validation loss rises again); GLoRIA's random
        # crop keeps it (and LoVT) learning for longer and lifts the probe.
        augment="gloria",
        train={"lr": 3e-4, "batch_size": 32, "accumulate": 1, "epochs": 8, "deterministic": True, "amp": "bf16_native",
               "keep_last": False},
        overrides={
            "text.freeze": True,
            # A locked tower reads each report's (or sentence's) cached states; shuffled sentence
            # orders are new sequences that would have to run through the tower every step.
            "text_input.sentence_shuffling": None,
            # One random sentence per step (ConVIRT, CLIP, GLoRIA) is a text augmentation for runs
            # of hundreds of epochs; in a few, most drawn sentences are negations shared by many
            # reports ("No pneumothorax."), and the validation loss of ConVIRT stayed at chance.
            "text_input.sentence_sampling": None,
            "optim.optimizer": "adamw",
            "optim.schedule": "linear_warmup",
            "optim.warmup_fraction": 0.05,
            "optim.weight_decay": 1e-4,
        },
        # Measured on 2 cores (benchmarks/README.md): a ConVIRT/CLIP/GLoRIA step costs about the
        # image encoder, LoVT's a little more; LIMITR's and local MI's pair scoring several times
        # that, so they get fewer epochs, and with so few the crop slows them more than it helps.
        # LoVT with the crop learns best at the global methods' 3e-4 over 6 epochs: at 1e-3 its
        # loss jumped, and without the crop, runs at 1e-3 longer than 3 epochs collapsed the
        # exported features (their effective rank fell, and the probe with it).
        # Local MI trains on smaller batches, as its paper does (8), which divides its quadratic
        # critic cost by four.
        by_family={
            "lovt": {"train": {"epochs": 6}},
            "limitr": {"train": {"epochs": 2}, "augment": "none"},
            "mi": {"train": {"batch_size": 16, "epochs": 2}, "augment": "none"},
        },
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}") from None


def recipe_differences(method: str, recipe: str = "demo", against: str = "paper") -> "pd.DataFrame":
    """Every setting in which ``recipe`` trains ``method`` differently from ``against``.

    Both are resolved the way a run resolves them (:func:`~localign.train.config.make_train_config`
    and :func:`~localign.train.config.resolve_method`), so the table is what the runs do, not a
    description of it. Columns: ``setting`` (dotted), ``against``'s value, ``recipe``'s value.
    """
    import pandas as pd

    from localign.config import config_to_dict
    from localign.train.config import make_train_config, resolve_method

    def flat(cfg) -> dict[str, Any]:
        out: dict[str, Any] = {}

        def walk(d: dict, prefix: str) -> None:
            for k, v in d.items():
                if isinstance(v, dict) and k != "overrides":
                    walk(v, f"{prefix}{k}.")
                elif k != "overrides":
                    out[f"{prefix}{k}"] = v if not isinstance(v, (list, tuple)) else str(tuple(v))

        train = config_to_dict(cfg)
        walk({k: v for k, v in train.items() if k in ("augment", "deterministic", "recipe")}, "")
        walk(config_to_dict(resolve_method(cfg)), "")
        return out

    a = flat(make_train_config(method=method, recipe=against))
    b = flat(make_train_config(method=method, recipe=recipe))
    rows = [(k, a.get(k), b.get(k)) for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k) and k not in ("recipe",)]
    return pd.DataFrame(rows, columns=["setting", against, recipe]).set_index("setting")
