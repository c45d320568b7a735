"""Images as an encoder sees them, and the frozen features every frozen protocol reads.

**Definition (input pipeline of every protocol).** An image file is read as 8-bit grayscale
(:func:`localign.data.images.load_image`), scaled to [0, 1], zero-padded centrally to a square and
resized to the encoder's ``input_size`` (:func:`localign.data.transforms.eval_transform`, LoVT's
evaluation geometry, recorded as ``geometry="pad_resize"`` in ``encoder.pt``), then normalised with
the mode and the mean/std **exported with the encoder** (:func:`localign.data.transforms.normalize`:
``dataset`` = the pretraining train-split statistics, ``half``, or per-image ``max`` for local MI).
No augmentation is applied except where a protocol says so (the local-MI classifier re-training).
Masks and boxes go through the same pad + resize geometry, so prediction and target share pixels.

**Definition (frozen global feature).** The frozen feature of an image is the encoder's pooled
last stage, ``ImageEncoder(images).pooled`` (the average pool of ``layer4`` for the ResNets,
Liao et al.'s 2×2-pooled 768-d vector for ``liao_resnet6``), computed in eval mode (BatchNorm uses
its running statistics; no gradient). The linear probe reads this same feature for **every**
method, whatever the method's own global head (attention pool, projection): the probe measures the
backbone, which is the part every method shares and exports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from localign.progress import tqdm

from localign.data.images import load_image
from localign.models.image import ImageEncoder
from localign.data.transforms import AugmentConfig, Preprocessing, eval_transform, train_transform

log = logging.getLogger(__name__)

#: Light augmentation of the local-MI classifier re-training ("random rotation, translation and
#: cropping", Liao et al. §4): crops of 80-100 % of the padded square, ±10°, ±5 % shifts; no flips
#: (reports name sides), no intensity changes.
LIGHT_AUGMENT = AugmentConfig(
    crop="random_resized", crop_scale=(0.8, 1.0), hflip_prob=0.0, degrees=10.0, translate=0.05, scale=(1.0, 1.0),
    brightness=(1.0, 1.0), contrast=(1.0, 1.0), blur_prob=0.0,
)
#: in-memory image stores larger than this stream from disk instead (bytes; float16 pixels)
DEFAULT_MAX_CACHE_BYTES = 2 * 1024**3


def load_unnormalized(path: str | Path, size: int) -> Tensor:
    """One image file as ``[1, S, S]`` float32 in [0, 1] after zero-padding to a square and resizing."""
    pixels = load_image(path)
    return eval_transform(torch.from_numpy(np.array(pixels, dtype=np.float32))[None] / 255.0, size)


def mask_to_input(mask: np.ndarray, size: int) -> Tensor:
    """A boolean ``[H, W]`` mask through the image geometry: pad to a square, resize (antialiased
    bilinear, as the image) and keep pixels whose covered fraction is at least one half. ``[S, S]`` bool."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask: expected [H, W], got shape {m.shape}")
    return eval_transform(torch.from_numpy(m.astype(np.float32))[None], size)[0] >= 0.5


class ImageStore:
    """Pad+resized, un-normalised images of a fixed list of files, decoded once.

    Images are held in memory as float16 ``[N, 1, S, S]`` when that takes at most
    ``max_cache_bytes`` (the demo: about 100 MB), else read from disk on every access. Either way
    :meth:`batch` returns float32 in [0, 1]; normalisation is the caller's (:class:`Preprocessing`).
    """

    def __init__(self, paths: Sequence[str | Path], size: int, *, max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
                 progress: bool = True, desc: str = "images") -> None:
        self.paths = [Path(p) for p in paths]
        self.size = int(size)
        self._cache: Tensor | None = None
        need = len(self.paths) * self.size * self.size * 2
        if self.paths and need <= max_cache_bytes:
            out = torch.empty((len(self.paths), 1, self.size, self.size), dtype=torch.float16)
            for i, p in enumerate(tqdm(self.paths, desc=f"load {desc}", disable=not progress, leave=False, unit="img")):
                out[i] = load_unnormalized(p, self.size).to(torch.float16)
            self._cache = out
        elif self.paths:
            log.info("ImageStore: %d images at %d px need %.1f GB > max_cache_bytes; streaming from disk", len(self.paths),
                     self.size, need / 1e9)

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, indices: Sequence[int] | np.ndarray) -> Tensor:
        """``[B, 1, S, S]`` float32 images in [0, 1] for the given row indices."""
        idx = [int(i) for i in indices]
        if self._cache is not None:
            return self._cache[idx].float()
        return torch.stack([load_unnormalized(self.paths[i], self.size) for i in idx]) if idx else torch.zeros(0, 1, self.size, self.size)


class StoreCache:
    """Image stores shared by the protocols of one evaluation (keyed by file list and size), so that
    several tasks, seeds and runs with the same input size decode every image once."""

    def __init__(self, max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES, progress: bool = True) -> None:
        self.max_cache_bytes = max_cache_bytes
        self.progress = progress
        self._stores: dict[tuple[tuple[str, ...], int], ImageStore] = {}
        self._other: dict[Hashable, Any] = {}

    def get(self, paths: Sequence[str | Path], size: int, desc: str = "images") -> ImageStore:
        key = (tuple(str(p) for p in paths), int(size))
        if key not in self._stores:
            self._stores[key] = ImageStore(paths, size, max_cache_bytes=self.max_cache_bytes, progress=self.progress, desc=desc)
        return self._stores[key]

    def cached(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """``build()`` once per key (e.g. segmentation targets shared by the linear and U-Net protocols)."""
        if key not in self._other:
            self._other[key] = build()
        return self._other[key]


def augmented_batch(store: ImageStore, indices: Sequence[int], augment: AugmentConfig, epoch: int) -> Tensor:
    """Training images with :func:`~localign.data.transforms.train_transform` applied to the padded,
    resized square. Image i of epoch e draws from ``default_rng([epoch, i])``: reproducible,
    independent of the batch composition, and the same for every downstream seed (so a frozen
    encoder's features of each augmented view can be computed once and shared by all seeds).
    ``[B, 1, S, S]`` in [0, 1], un-normalised."""
    images = store.batch(indices)
    out = [train_transform(img, store.size, augment, np.random.default_rng([int(epoch), int(i)]))[0]
           for img, i in zip(images, indices)]
    return torch.stack(out) if out else images


@torch.no_grad()
def extract_features(
    encoder: ImageEncoder,
    store: ImageStore,
    prep: Preprocessing,
    *,
    output: str = "pooled",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    desc: str = "features",
) -> Tensor:
    """Frozen encoder outputs of every image of a store, in eval mode without gradients.

    :param output: ``"pooled"`` → ``[N, C]`` frozen global features (the pooled last stage, see the
        module docstring); ``"last_map"`` → ``[N, C, h, w]``, the last stage's map (the input of
        the linear segmentation head).
    :param dtype: storage dtype of the result (float16 halves the memory of large maps).
    :return: the features on the CPU.
    """
    if output not in ("pooled", "last_map"):
        raise ValueError(f"output: expected 'pooled' or 'last_map', got {output!r}")
    was_training = encoder.training
    encoder.eval()
    dev = torch.device(device)
    chunks = []
    starts = range(0, len(store), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False, unit="batch"):
        x = prep.normalize_batch(store.batch(range(start, min(start + batch_size, len(store))))).to(dev)
        if output == "pooled":
            y = encoder(x).pooled
        else:
            y = encoder.stage_maps(x)[encoder.last_layer]
        chunks.append(y.to("cpu", dtype))
    encoder.train(was_training)
    if not chunks:
        raise ValueError("extract_features: the image store is empty")
    return torch.cat(chunks)
