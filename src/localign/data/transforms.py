"""Image preprocessing and augmentation with explicit random generators.

Every random draw comes from a ``numpy.random.Generator`` seeded per (seed, epoch, sample), never
from torch's global RNG: the augmentation of a sample does not depend on the number of data-loader
workers, on DDP, or on whether the run was resumed, and dropout's RNG stream is left untouched.

The one home of preprocessing, under training and evaluation alike: the transforms, the
augmentation configs (:class:`AugmentConfig`, :data:`AUGMENTATIONS`), and the :class:`Preprocessing`
record exported with every encoder with its inverse geometry (:class:`ImageGeometry`), which
:func:`localign.eval.grounding.map_to_original` uses to put maps back on original pixels.

Evaluation geometry (LoVT): zero-pad to a square, resize to the input size. The same geometry is
recorded with exported encoders so that grounding maps can be mapped back to original pixels. It is
computed the other way round (resize the longer side, then pad), which places the image the same
way to within a pixel but never allocates the max(H, W)² square: a 20000x10 image would need 1.5 GB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from localign.config import positive_int_pair

GeometryMode = Literal["pad_resize", "resize_center_crop", "resize"]
NORMALIZE_MODES = ("dataset", "half", "max")


@dataclass(frozen=True)
class AugmentConfig:
    """Image augmentation of the training split (validation/test: pad to square + resize only).

    The default is LoVT's/ConVIRT's scheme (spec §2.5.1) **without horizontal flips**: reports name
    sides, so a flipped image contradicts its report. ``hflip_prob > 0`` flips and, with
    ``swap_laterality``, exchanges "left" and "right" in the report to keep the pair true.
    """

    crop: str = "random_resized"  # random_resized (ConVIRT/LoVT) | random (GLoRIA/LIMITR: pad, resize 256/224, random crop) | none
    crop_scale: tuple[float, float] = (0.6, 1.0)
    hflip_prob: float = 0.0
    swap_laterality: bool = True
    degrees: float = 20.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.95, 1.05)
    brightness: tuple[float, float] = (0.6, 1.4)
    contrast: tuple[float, float] = (0.6, 1.4)
    blur_prob: float = 1.0  # LoVT always blurs (its guard is always true)
    blur_sigma: tuple[float, float] = (0.1, 3.0)
    normalize: str = "dataset"  # dataset (train-split mean/std) | half ((x - 0.5) / 0.5) | max (x / max(x), local MI)


#: Named augmentation schemes of the papers.
AUGMENTATIONS: dict[str, AugmentConfig] = {
    "convirt": AugmentConfig(),
    "gloria": AugmentConfig(crop="random", degrees=0.0, translate=0.0, scale=(1.0, 1.0), brightness=(1.0, 1.0),
                            contrast=(1.0, 1.0), blur_prob=0.0, normalize="half"),
    "liao": AugmentConfig(crop="none", degrees=20.0, translate=0.1, scale=(1.0, 1.0), brightness=(1.0, 1.0),
                          contrast=(1.0, 1.0), blur_prob=0.0, normalize="max"),
    "none": AugmentConfig(crop="none", degrees=0.0, translate=0.0, scale=(1.0, 1.0), brightness=(1.0, 1.0),
                          contrast=(1.0, 1.0), blur_prob=0.0),
}


def pad_to_square(image: Tensor) -> Tensor:
    """Zero-pad ``[C, H, W]`` centrally to ``[C, S, S]`` with S = max(H, W)."""
    _, h, w = image.shape
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    return F.pad(image, (left, s - w - left, top, s - h - top))


def resize(image: Tensor, size: int) -> Tensor:
    return TF.resize(image, [size, size], antialias=True)


def resize_longer_side(image: Tensor, size: int) -> Tensor:
    """Resize ``[C, H, W]`` keeping its aspect ratio so that max(H, W) becomes ``size``."""
    _, h, w = image.shape
    scale = size / max(h, w)
    return TF.resize(image, [max(1, round(h * scale)), max(1, round(w * scale))], antialias=True)


def pad_resize(image: Tensor, size: int) -> Tensor:
    """The ``pad_resize`` geometry: centrally zero-padded to a square and resized to ``size``,
    computed as resize-then-pad (memory of the output, not of the padded original)."""
    return pad_to_square(resize_longer_side(image, size))


#: Name of :func:`eval_transform`'s geometry, part of every cache computed through it.
EVAL_GEOMETRY = "resize_longer_then_pad"


def eval_transform(image: Tensor, size: int) -> Tensor:
    """Validation/test preprocessing: pad to square, resize to ``size`` (values stay in [0, 1])."""
    return pad_resize(image, size)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(lo if lo == hi else rng.uniform(lo, hi))


def random_resized_crop_params(h: int, w: int, scale: tuple[float, float], rng: np.random.Generator,
                               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop parameter search, with an explicit generator."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    s = min(h, w)  # fallback: central square crop
    return (h - s) // 2, (w - s) // 2, s, s


def train_transform(image: Tensor, size: int, config: AugmentConfig, rng: np.random.Generator) -> tuple[Tensor, bool]:
    """Augment one image ``[1, H, W]`` in [0, 1] to ``[1, size, size]``; returns (image, flipped)."""
    if config.crop == "random_resized":
        top, left, ch, cw = random_resized_crop_params(image.shape[1], image.shape[2], config.crop_scale, rng)
        image = TF.resized_crop(image, top, left, ch, cw, [size, size], antialias=True)
    elif config.crop == "random":
        # GLoRIA/LIMITR: longer side -> 256/224 * size, zero-pad to square, random crop of `size`.
        big = int(round(size * 256 / 224))
        image = pad_resize(image, big)
        top, left = int(rng.integers(0, big - size + 1)), int(rng.integers(0, big - size + 1))
        image = image[:, top : top + size, left : left + size]
    elif config.crop == "none":
        image = eval_transform(image, size)
    else:
        raise ValueError(f"unknown crop {config.crop!r}; use random_resized, random or none")
    flipped = bool(config.hflip_prob > 0 and rng.random() < config.hflip_prob)
    if flipped:
        image = image.flip(-1)
    if config.degrees or config.translate or config.scale != (1.0, 1.0):
        angle = _uniform(rng, (-config.degrees, config.degrees))
        max_t = config.translate * size
        tx, ty = _uniform(rng, (-max_t, max_t)), _uniform(rng, (-max_t, max_t))
        image = TF.affine(image, angle=angle, translate=[int(round(tx)), int(round(ty))], scale=_uniform(rng, config.scale), shear=[0.0, 0.0])
    if config.brightness != (1.0, 1.0):
        image = TF.adjust_brightness(image, _uniform(rng, config.brightness))
    if config.contrast != (1.0, 1.0):
        image = TF.adjust_contrast(image, _uniform(rng, config.contrast))
    if config.blur_prob > 0 and rng.random() < config.blur_prob:
        kernel = int(0.1 * size) // 2 * 2 + 1  # LoVT: int(0.1 * 224) made odd = 23
        image = TF.gaussian_blur(image, [kernel, kernel], [_uniform(rng, config.blur_sigma)] * 2)
    return image.clamp(0.0, 1.0), flipped


def normalize(image: Tensor, mode: str, mean: float = 0.5, std: float = 0.5) -> Tensor:
    """``dataset``: (x - mean) / std with the train-split statistics; ``half``: (x - 0.5) / 0.5;
    ``max``: x / max(x) (local MI)."""
    if mode == "dataset":
        return (image - mean) / std
    if mode == "half":
        return (image - 0.5) / 0.5
    if mode == "max":
        return image / image.max().clamp_min(1e-6)
    raise ValueError(f"unknown normalisation {mode!r}; use dataset, half or max")


# --------------------------------------------------------------------------------------------------
# the record exported with an encoder, and its inverse geometry
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preprocessing:
    """The input pipeline of an encoder: the one record the engine writes into ``encoder.pt``
    (:meth:`to_dict`, the only place it becomes a dict, because ``encoder.pt`` loads with
    ``weights_only=True``), and that evaluation and grounding read back (:meth:`from_dict`).

    :ivar input_size: side S of the square network input.
    :ivar normalize: ``dataset`` | ``half`` | ``max`` (see :func:`normalize`).
    :ivar mean, std: the statistics used by ``dataset`` normalisation.
    :ivar in_channels: channels the encoder expects (grayscale is replicated when 3).
    :ivar geometry: only ``pad_resize`` (LoVT's evaluation geometry) is produced by localign.
    """

    input_size: int
    normalize: str = "dataset"
    mean: float = 0.5
    std: float = 0.5
    in_channels: int = 3
    geometry: str = "pad_resize"

    def __post_init__(self) -> None:
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int) or self.input_size < 8:
            raise ValueError(f"Preprocessing.input_size: expected an integer >= 8, got {self.input_size!r}")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"Preprocessing.normalize: expected one of {NORMALIZE_MODES}, got {self.normalize!r}")
        if self.geometry != "pad_resize":
            raise ValueError(f"Preprocessing.geometry: only 'pad_resize' is supported, got {self.geometry!r}")
        if not (np.isfinite(self.std) and self.std > 0):
            raise ValueError(f"Preprocessing.std: expected a positive number, got {self.std!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "preprocessing") -> "Preprocessing":
        """From the ``preprocessing`` entry of ``encoder.pt`` (written by :meth:`to_dict`)."""
        if not data:
            raise ValueError(f"{source}: no preprocessing recorded (is encoder.pt missing from the run folder?)")
        known = {"input_size", "normalize", "mean", "std", "in_channels", "geometry"}
        if "input_size" not in data:
            raise ValueError(f"{source}: 'input_size' missing from {sorted(data)}")
        kwargs = {k: data[k] for k in known if k in data}
        kwargs["input_size"] = int(kwargs["input_size"])
        for k in ("mean", "std"):
            if k in kwargs:
                kwargs[k] = float(kwargs[k])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The plain-types form stored in ``encoder.pt``."""
        return {"input_size": self.input_size, "geometry": self.geometry, "normalize": self.normalize, "mean": float(self.mean),
                "std": float(self.std), "in_channels": self.in_channels}

    def __getitem__(self, key: str) -> Any:
        """A field by name, as ``encoder.pt``'s dict is read (``prep["input_size"]``): code written
        when :func:`~localign.train.load_image_encoder` returned that dict keeps working."""
        if key not in self.to_dict():
            raise KeyError(key)
        return getattr(self, key)

    def image_geometry(self) -> ImageGeometry:
        """The :class:`ImageGeometry` that maps network pixels back to the original."""
        return ImageGeometry("pad_resize", size=self.input_size)

    def normalize_batch(self, images: Tensor) -> Tensor:
        """Normalise ``[B, 1, S, S]`` images in [0, 1]; ``max`` divides each image by its own maximum."""
        if images.dim() != 4:
            raise ValueError(f"normalize_batch: expected [B, C, S, S], got shape {tuple(images.shape)}")
        if self.normalize == "max":
            return torch.stack([normalize(x, "max") for x in images]) if len(images) else images
        return normalize(images, self.normalize, self.mean, self.std)


@dataclass(frozen=True)
class ImageGeometry:
    """How an original H×W radiograph became the square network input (needed to invert it).

    * ``mode="pad_resize"`` (LoVT; GLoRIA/LIMITR with ``crop``): the image is zero-padded centrally
      to a square of side L = max(H, W) (:func:`square_padding`: the odd pixel goes to the bottom /
      right), resized to ``size``×``size``, and, if ``crop`` is set, centre-cropped to
      ``crop``×``crop``. LoVT evaluation: ``ImageGeometry("pad_resize", size=224)``.
      GLoRIA/LIMITR test time (longer side → 256, zero-pad, CenterCrop 224; spec §3.1):
      ``ImageGeometry("pad_resize", size=256, crop=224)``.
    * ``mode="resize_center_crop"`` (BioViL): the shorter side is resized to ``resize`` and the
      centre ``crop``×``crop`` is kept: ``ImageGeometry("resize_center_crop", resize=512, crop=480)``.
    * ``mode="resize"``: the image is resized to ``size``×``size`` without keeping the aspect ratio.

    The patch grid is assumed to tile the network input uniformly (a later uniform upsampling inside
    the encoder, e.g. GLoRIA's 224 → 299, does not change the geometry).
    """

    mode: GeometryMode
    size: int | None = None
    resize: int | None = None
    crop: int | None = None

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            v = getattr(self, name)
            if v is None or isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"ImageGeometry(mode={self.mode!r}): {name} must be a positive integer, got {v!r}")

        def unset(name: str) -> None:
            if getattr(self, name) is not None:
                raise ValueError(
                    f"ImageGeometry(mode={self.mode!r}): {name} is not used by this mode; got {getattr(self, name)!r}"
                )

        if self.mode == "pad_resize":
            positive("size")
            unset("resize")
            if self.crop is not None:
                positive("crop")
                if self.crop > self.size:
                    raise ValueError(f"ImageGeometry: crop={self.crop} exceeds size={self.size}")
        elif self.mode == "resize_center_crop":
            positive("resize")
            positive("crop")
            unset("size")
            if self.crop > self.resize:
                raise ValueError(f"ImageGeometry: crop={self.crop} exceeds resize={self.resize} (the shorter side)")
        elif self.mode == "resize":
            positive("size")
            unset("resize")
            unset("crop")
        else:
            raise ValueError(
                f"ImageGeometry: mode must be 'pad_resize', 'resize_center_crop' or 'resize', got {self.mode!r}"
            )

    def input_size(self) -> int:
        """Side of the square network input in pixels."""
        if self.mode == "resize_center_crop" or self.crop is not None:
            return int(self.crop)
        return int(self.size)

    def visible_window(self, original_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The network input's footprint in original pixel coordinates: (top, left, height, width).

        The window may extend beyond the image (negative top/left: the zero padding of
        ``pad_resize``) or cover only part of it (the centre crop); the parts of the image outside
        it were never seen by the network. Side lengths follow hi-ml's rounding
        c = ⌊crop · min(H, W) / resize⌋ and offsets are floored (spec §6.1).

        :param original_size: (H, W) of the original image.
        """
        h, w = check_image_size(original_size)
        if self.mode == "resize":
            return 0, 0, h, w
        if self.mode == "resize_center_crop":
            c = math.floor(self.crop * min(h, w) / self.resize)
            return (h - c) // 2, (w - c) // 2, c, c
        side = max(h, w)
        top_pad, _, left_pad, _ = square_padding(h, w)
        if self.crop is None:
            return -top_pad, -left_pad, side, side
        c = math.floor(self.crop * side / self.size)
        offset = (side - c) // 2
        return offset - top_pad, offset - left_pad, c, c


def square_padding(height: int, width: int) -> tuple[int, int, int, int]:
    """Central zero padding to a square of side max(H, W): (top, bottom, left, right).

    Definition: the shorter dimension is padded by d = max(H, W) − min(H, W) in total, ⌊d/2⌋ before
    (top/left) and ⌈d/2⌉ after (bottom/right). The image transforms must use this same split for
    :func:`map_to_original` to invert them exactly.
    """
    h, w = check_image_size((height, width))
    side = max(h, w)
    return (side - h) // 2, side - h - (side - h) // 2, (side - w) // 2, side - w - (side - w) // 2


def check_image_size(original_size: Any) -> tuple[int, int]:
    """``(H, W)`` as positive integers, or a ``ValueError`` naming the offending value."""
    return positive_int_pair(original_size, "original_size", "(H, W)")
