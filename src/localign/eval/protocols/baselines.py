"""Reference encoders evaluated by the same image protocols as the pretrained ones.

Each baseline is an :class:`~localign.models.image.ImageEncoder` with **the same configuration as
a run's encoder** (architecture, input channels, input size) and the run's exported input pipeline
(:class:`~localign.eval.protocols.features.Preprocessing`), so that only the weights differ:

* ``random`` (method ``random_init``) — **random initialisation.** Definition: the encoder's
  default initialisation (torchvision's ResNet init, or Liao et al.'s kaiming init) drawn with
  ``torch.manual_seed(seed)`` (seed 0 unless given). LoVT's "Random" row.
* ``supervised`` (method ``supervised_image_only``) — **local MI's image-only model.** Definition:
  the randomly initialised encoder plus a linear head trained end-to-end on the training images'
  Pathology9 labels with the classifier re-training recipe
  (:func:`~localign.eval.protocols.classification.train_classifier`, ``mode="tuned"``, Liao et al.'s
  masked BCE and light augmentation, epoch selected on validation macro AUROC) with **twice** the
  tuned re-training budget (epochs and step limit; Liao et al.: 100 vs 50 epochs). The head is
  discarded; the trained encoder is then evaluated by every image protocol like a pretrained one
  (its ``classify_tuned`` result is the paper's "image-only" row).
* ``imagenet`` (method ``imagenet_init``) — **torchvision's ImageNet weights** (IMAGENET1K_V1, the
  one-channel stem summing the RGB filters) for the ResNets. Loading needs the weights file in the
  torch hub cache (or a network); when it is missing, or the architecture has no ImageNet weights
  (Liao et al.'s ResNets), the baseline is **skipped with the reason** (:class:`BaselineUnavailable`),
  never crashing the evaluation.

Baselines have no text tower, so retrieval and grounding do not apply to them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import torch

from localign.data import layout
from localign.data.manifest import PreparedDataset
from localign.data.transforms import Preprocessing
from localign.eval.protocols.classification import (
    ClassifierConfig,
    exclude_test_patients,
    pathology_table,
    test_patients,
    train_classifier,
)
from localign.eval.protocols.common import TaskUnavailable, seeded, split_rows
from localign.eval.protocols.features import StoreCache
from localign.models.config import ImageEncoderConfig
from localign.models.image import ImageEncoder

log = logging.getLogger(__name__)

#: baseline name -> the ``method`` written in the results
BASELINES = {"random": "random_init", "supervised": "supervised_image_only", "imagenet": "imagenet_init"}


class BaselineUnavailable(RuntimeError):
    """A baseline cannot be built here (e.g. ImageNet weights not cached offline); the message says why."""


def random_init_encoder(config: ImageEncoderConfig, seed: int = 0) -> ImageEncoder:
    """The encoder of ``config`` with its default random initialisation, drawn with ``seed``."""
    with seeded(seed):
        encoder = ImageEncoder(dataclasses.replace(config, weights=None))
    return encoder.eval()


def imagenet_encoder(config: ImageEncoderConfig) -> ImageEncoder:
    """The encoder of ``config`` with torchvision's ImageNet weights.

    :raises BaselineUnavailable: the weights are neither cached nor downloadable, or ``config.arch``
        has no ImageNet weights.
    """
    try:
        with seeded(0):  # layers the weights do not cover (none for the ResNets) stay reproducible
            encoder = ImageEncoder(dataclasses.replace(config, weights="imagenet"))
    except RuntimeError as err:
        raise BaselineUnavailable(f"ImageNet weights unavailable: {err}") from None
    except ValueError as err:
        raise BaselineUnavailable(f"no ImageNet weights for this encoder: {err}") from None
    return encoder.eval()


def supervised_encoder(
    config: ImageEncoderConfig,
    prep: Preprocessing,
    prepared: PreparedDataset,
    *,
    class_names: Sequence[str] = layout.PATHOLOGY9,
    blank: str = "negative",
    classifier: ClassifierConfig = ClassifierConfig(),
    epochs: int | None = None,
    seed: int = 0,
    stores: StoreCache | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> ImageEncoder:
    """Local MI's supervised image-only encoder (definition in the module docstring).

    :param epochs: supervised epochs (default: twice ``classifier.epochs``, Liao et al.'s 100 vs 50);
        a step limit of ``classifier`` is doubled too.
    """
    stores = stores or StoreCache(progress=progress)
    names = list(class_names)
    table = pathology_table(prepared, names, blank)
    try:
        splits = exclude_test_patients(split_rows(table, "supervised baseline"), test_patients(prepared), "supervised baseline")
    except TaskUnavailable as err:
        raise BaselineUnavailable(str(err)) from None
    data = {name: (stores.get(rows["path"], prep.input_size, desc=f"Pathology9 {name}"), rows[names].to_numpy(dtype=float))
            for name, rows in splits.items()}
    cfg = dataclasses.replace(classifier, epochs=epochs if epochs is not None else 2 * classifier.epochs,
                              max_steps=None if classifier.max_steps is None else 2 * classifier.max_steps)
    model, info = train_classifier(random_init_encoder(config, seed), prep, data["train"], data["validate"], kind="multilabel",
                                   mode="tuned", class_names=names, config=cfg, seed=seed, device=device, progress=progress,
                                   desc="supervised image-only")
    log.info("supervised image-only encoder: %d steps, best epoch %d (validation macro AUROC %.4f)", int(info["steps"]),
             int(info["best_epoch"]), info["val_score"])
    return model.encoder.cpu().eval()
