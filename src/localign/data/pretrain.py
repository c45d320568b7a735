"""Datasets, collation, sampling and pixel statistics over a prepared dataset (:mod:`localign.data.manifest`),
used by pretraining and by the retrieval protocol alike.

A training sample is a **study**: each access draws one of its frontal images (LoVT), augments it,
and augments the report's sentences (sentence swaps or one random sentence). Randomness comes from
a generator seeded by (seed, epoch, study index), so every sample is reproducible whatever the
number of workers or processes, and a resumed run sees exactly the samples it would have seen.

Three text views of a study (``text_view``):

- ``train``: the method's augmentation (LoVT swaps; ConVIRT/CLIP/GLoRIA one random sentence);
- ``fixed``: validation loss; no shuffling, and a random-sentence method gets a sentence fixed per
  study, so that validation losses are comparable across epochs;
- ``full``: the whole report (retrieval candidates are reports, not sentences).
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from localign.data.images import ImageReadError, load_image
from localign.data.manifest import PreparedDataset
from localign.data.text import SpecialTokens, TextBatch, TextInputConfig, augment_sentences, collate_reports, swap_laterality
from localign.data.tokenize import ReportTokens, build_report_tokens
from localign.paths import atomic_write_text, cache_dir, file_problem
from localign.data.transforms import EVAL_GEOMETRY, AugmentConfig, eval_transform, normalize, train_transform

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """:ivar images: ``[B, 1, S, S]``; :ivar text: the reports; :ivar study_ids, subject_ids, indices: ``[B]``."""

    images: Tensor
    text: TextBatch
    study_ids: Tensor
    subject_ids: Tensor
    indices: Tensor

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.images.to(device, non_blocking=True), self.text.to(device), self.study_ids.to(device),
                     self.subject_ids.to(device), self.indices.to(device))

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class PixelStats:
    mean: float
    std: float


def pixel_stats(prepared: PreparedDataset, n_images: int = 256, size: int = 128, seed: int = 0) -> PixelStats:
    """Mean/std of training images (pad + resize to ``size``, values in [0, 1]) over a seeded sample.

    LoVT normalises with the pixel statistics of the MIMIC training split. Cached in
    :func:`pixel_stats_path` (the cache folder, keyed by the prepared folder's fingerprint); a
    ``pixel_stats.json`` that older localign wrote inside a prepared folder is ignored.
    """
    cache = pixel_stats_path(prepared)
    # The transform is part of the key: statistics computed with another geometry (pad-then-resize
    # before resize-then-pad) would normalise every image differently from a fresh computation.
    key = f"{n_images}-{size}-{seed}-{EVAL_GEOMETRY}"
    if cache.is_file():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("key") == key:
                return PixelStats(float(stored["mean"]), float(stored["std"]))
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # a damaged cache is recomputed
            log.warning("ignoring the unreadable pixel-statistics cache %s (%s); recomputing it", cache, err)
    train = prepared.images[prepared.images["split"] == "train"]
    if train.empty:
        raise ValueError(f"{prepared.root}: no training images to compute pixel statistics from")
    require_image_files(prepared, "train")  # all missing files listed at once, not the first sampled one
    rows = train.sample(n=min(n_images, len(train)), random_state=seed)
    total, total_sq, count = 0.0, 0.0, 0
    for path in rows["path"]:
        x = eval_transform(torch.tensor(load_image(prepared.image_path(path)), dtype=torch.float32)[None] / 255.0, size)
        total += float(x.sum())
        total_sq += float((x**2).sum())
        count += x.numel()
    mean = total / count
    std = max((total_sq / count - mean**2) ** 0.5, 1e-6)
    try:
        # Atomic: a run killed while writing must not leave a truncated cache for the next run.
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps({"key": key, "mean": mean, "std": std}))
    except OSError:  # an unwritable cache folder costs a recomputation next time, nothing else
        pass
    return PixelStats(mean, std)


def pixel_stats_path(prepared: PreparedDataset) -> Path:
    """Where :func:`pixel_stats` caches the statistics of a prepared folder (keyed by its fingerprint)."""
    return cache_dir() / "pixel_stats" / f"{prepared.fingerprint}.json"


def tokens_cache_dir() -> Path:
    """Where :func:`report_tokens` caches token ids: one file per (tokenizer, max length, content
    hash of the studies' sentences), so the content is the key and copies of a folder share it."""
    return cache_dir() / "tokens"


def report_tokens(prepared: PreparedDataset, tokenizer, max_length: int, swapped: bool = False, progress: bool = False) -> ReportTokens:
    """Token ids of every manifest sentence (laterality-swapped if asked), cached in
    :func:`tokens_cache_dir`; the ``tokens/`` folder older localign wrote into a prepared folder is ignored."""
    manifest = prepared.manifest
    sentences = [[swap_laterality(s) for s in sents] for sents in manifest["sentences"]] if swapped else list(manifest["sentences"])
    cache: Path | None = tokens_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:  # no cache folder: tokenize every time
        cache = None
    return build_report_tokens(list(manifest["study_id"]), sentences, tokenizer, max_length, cache_dir=cache, progress=progress)


# Splits whose image files were all found, per loaded prepared dataset (checked once per run).
_CHECKED_SPLITS: weakref.WeakKeyDictionary[PreparedDataset, set[str]] = weakref.WeakKeyDictionary()


def require_image_files(prepared: PreparedDataset, split: str, paths: Sequence[Path] | None = None, shown: int = 5) -> None:
    """Fail at start-up, listing them, if image files of a split are gone (moved, deleted,
    unmounted): otherwise a run fails hours later, when a batch first draws such a study.

    :param paths: the files to check (default: every image of the split, checked once per
        ``prepared`` object)
    :raises FileNotFoundError: naming the first ``shown`` files and why each cannot be opened
    """
    whole_split = paths is None
    if whole_split:
        if split in _CHECKED_SPLITS.get(prepared, set()):
            return
        paths = [prepared.image_path(p) for ps in prepared.split(split)["image_paths"] for p in ps]
    with ThreadPoolExecutor(8) as pool:  # stat calls release the GIL: a network file system is ~8x faster
        problems = list(pool.map(file_problem, paths))
    missing = [(path, p[1]) for path, p in zip(paths, problems) if p is not None]
    if not missing:
        if whole_split:
            _CHECKED_SPLITS.setdefault(prepared, set()).add(split)
        return
    listed = "; ".join(f"{path} ({why})" for path, why in missing[:shown])
    more = f"; and {len(missing) - shown} more" if len(missing) > shown else ""
    raise FileNotFoundError(
        f"{len(missing)} of the {len(paths)} image files of the {split!r} split of {prepared.root} cannot be opened: "
        f"{listed}{more}. If the images moved, the MIMIC-CXR-JPG root recorded in {prepared.root / 'dataset.json'} "
        f"({prepared.mimic_jpg_root}) is stale; otherwise re-run `localign prepare`, which skips missing images (counted in skipped.csv)"
    )


class PretrainDataset(Dataset):
    """Study-level image-report samples of one split (see the module docstring).

    Every image file of the split is checked to exist when the dataset is made (``check_files``);
    unreadable files found later are skipped per view and counted in :attr:`read_errors`.
    """

    def __init__(
        self,
        prepared: PreparedDataset,
        split: str,
        tokens: ReportTokens,
        text_config: TextInputConfig,
        image_size: int,
        augment: AugmentConfig,
        stats: PixelStats,
        text_view: str = "train",
        seed: int = 0,
        swapped_tokens: ReportTokens | None = None,
        max_studies: int | None = None,
        check_files: bool = True,
    ) -> None:
        if text_view not in ("train", "fixed", "full"):
            raise ValueError(f"text_view must be train, fixed or full, got {text_view!r}")
        rows = prepared.split(split)
        if max_studies is not None:
            rows = rows.iloc[:max_studies]  # prefix subsets, as LoVT's 30 % pretraining set
        if rows.empty:
            raise ValueError(f"{prepared.root}: the {split!r} split has no studies")
        missing = [s for s in rows["study_id"] if s not in tokens]
        if missing:
            raise ValueError(f"{len(missing)} studies of {split!r} have no cached tokens (e.g. {missing[:3]}); the token cache is stale")
        self.prepared = prepared
        self.split = split
        self.study_ids = rows["study_id"].to_numpy()
        self.subject_ids = rows["subject_id"].to_numpy()
        self.image_paths = [[prepared.image_path(p) for p in paths] for paths in rows["image_paths"]]
        if check_files:
            require_image_files(prepared, split, None if max_studies is None else [p for ps in self.image_paths for p in ps])
        self.tokens = tokens
        self.swapped_tokens = swapped_tokens
        self.text_config = text_config
        self.image_size = image_size
        self.augment = augment
        self.stats = stats
        self.text_view = text_view
        self.train = text_view == "train"
        self.seed = seed
        self.epoch = 0
        self.read_errors: dict[str, str] = {}
        # Without random image augmentation a study's pixels are the same every epoch: keep them in
        # memory after the first read (2000 images at 128 px: ~130 MB) instead of decoding and
        # resizing them again in every step, which would cost as much as the training step itself.
        self._pixels: dict[str, Tensor] | None = {} if (not self.train or is_identity(augment)) else None
        if self.train and augment.hflip_prob > 0 and augment.swap_laterality and swapped_tokens is None:
            raise ValueError("horizontal flips with swap_laterality need the laterality-swapped token cache")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.study_ids)

    def _rng(self, index: int) -> np.random.Generator:
        epoch = self.epoch if self.train else 0
        return np.random.default_rng([self.seed, epoch, index, 0 if self.train else 1])

    def _load(self, index: int, rng: np.random.Generator, finish=None) -> Tensor:
        """One frontal view of the study in [0, 1] (``finish`` applied; memoised without augmentation)."""
        paths = self.image_paths[index]
        order = list(rng.permutation(len(paths))) if self.train else list(range(len(paths)))
        for view in order:  # one frontal view per step; another view if one is unreadable
            key = str(paths[view])
            if self._pixels is not None and key in self._pixels:
                return self._pixels[key]
            try:
                pixels = load_image(paths[view])
            except ImageReadError as err:
                if str(paths[view]) not in self.read_errors:
                    log.warning("skipping unreadable image (study %s): %s", self.study_ids[index], err)
                self.read_errors[str(paths[view])] = str(err)
                continue
            image = torch.tensor(pixels, dtype=torch.float32)[None] / 255.0
            if finish is not None:
                image = finish(image)
            if self._pixels is not None:
                self._pixels[key] = image
            return image
        raise ImageReadError(paths[0], f"no readable frontal image for study {self.study_ids[index]}: {self.read_errors.get(str(paths[0]), '')}")

    def _pixels_of(self, index: int, rng: np.random.Generator) -> tuple[Tensor, bool]:
        """The transformed image (before normalisation) and whether it was flipped."""
        if self._pixels is not None:  # deterministic transform (draws nothing from rng): memoised per image
            if self.train:
                return self._load(index, rng, lambda x: train_transform(x, self.image_size, self.augment, rng)[0]), False
            return self._load(index, rng, lambda x: eval_transform(x, self.image_size)), False
        image = self._load(index, rng)
        if self.train:
            return train_transform(image, self.image_size, self.augment, rng)
        return eval_transform(image, self.image_size), False

    def __getitem__(self, index: int) -> dict:
        rng = self._rng(index)
        image, flipped = self._pixels_of(index, rng)
        image = normalize(image, self.augment.normalize, self.stats.mean, self.stats.std)
        study = int(self.study_ids[index])
        source = self.swapped_tokens if flipped and self.augment.swap_laterality else self.tokens
        sentences = source.sentences(study)
        if self.text_view == "train":
            sentences = augment_sentences(sentences, self.text_config, rng)
        elif self.text_view == "fixed" and self.text_config.sentence_sampling is not None:
            fixed = replace(self.text_config, sentence_shuffling=None)
            sentences = augment_sentences(sentences, fixed, np.random.default_rng([self.seed, index, 2]))
        return {"image": image, "sentences": sentences, "study_id": study, "subject_id": int(self.subject_ids[index]), "index": index}


def is_identity(augment: AugmentConfig) -> bool:
    """True when the training transform draws nothing at random (the same pixels every epoch)."""
    return (augment.crop == "none" and augment.hflip_prob == 0 and not augment.degrees and not augment.translate
            and augment.scale == (1.0, 1.0) and augment.brightness == (1.0, 1.0) and augment.contrast == (1.0, 1.0)
            and augment.blur_prob == 0)


class Collate:
    """Stack images and assemble the reports for a method's text tower (picklable for workers)."""

    def __init__(self, text_config: TextInputConfig, special: SpecialTokens) -> None:
        self.text_config = text_config
        self.special = special

    def __call__(self, samples: Sequence[dict]) -> Batch:
        return Batch(
            images=torch.stack([s["image"] for s in samples]),
            text=collate_reports([s["sentences"] for s in samples], self.text_config, self.special),
            study_ids=torch.tensor([s["study_id"] for s in samples]),
            subject_ids=torch.tensor([s["subject_id"] for s in samples]),
            indices=torch.tensor([s["index"] for s in samples]),
        )


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded across ranks, optionally skipping its first indices.

    Equivalent to ``DistributedSampler(shuffle=True, drop_last=True)`` with ``seed``; ``skip``
    serves mid-epoch resumption: the epoch's first ``skip`` samples of this rank are not yielded.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        self.n, self.seed, self.rank, self.world_size, self.shuffle = n, seed, rank, world_size, shuffle
        self.epoch, self.skip = 0, 0
        self.per_rank = n // world_size

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order = order[: self.per_rank * self.world_size][self.rank :: self.world_size]
        return iter(order[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip


def resolve_data(data: str | None, progress: bool = True) -> Path:
    """The prepared dataset folder of a run: a prepared folder, a raw SynthCXR root (prepared on
    first use), or the SynthCXR demo when None (see :func:`localign.data.demo.resolve_prepared`)."""
    from localign.data.demo import resolve_prepared

    return resolve_prepared(data, progress=progress)
