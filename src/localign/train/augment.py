"""Image preprocessing and augmentation with explicit random generators.

Every random draw comes from a ``numpy.random.Generator`` seeded per (seed, epoch, sample), never
from torch's global RNG: the augmentation of a sample does not depend on the number of data-loader
workers, on DDP, or on whether the run was resumed, and dropout's RNG stream is left untouched.

Evaluation geometry (LoVT): zero-pad to a square, resize to the input size. The same geometry is
recorded with exported encoders so that grounding maps can be mapped back to original pixels. It is
computed the other way round (resize the longer side, then pad), which places the image the same
way to within a pixel but never allocates the max(H, W)² square: a 20000x10 image would need 1.5 GB.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from localign.train.config import AugmentConfig


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
