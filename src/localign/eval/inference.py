"""A trained run's representations of the studies of one split, for the analysis chapters.

The analyses (representations, weight maps, grounding figures) read what a method computes on the
test studies: its typed embedding records, or a family's own internals (LoVT's attended
representations and pool weights, LIMITR's word weights). Everything here feeds a run the studies
exactly as validation does (``PretrainDataset`` with ``text_view="full"``: the whole report, the
evaluation geometry, the run's own pixel normalisation and tokenizer) and concatenates the per-batch
outputs, padding the per-report axis (sentences or words) to the longest report::

    run = load_run("runs/demo/lovt")
    batches = StudyBatches(run, split="test", n_studies=100)
    images, reports = encode_split(batches)                   # ImageEmbeddings, ReportEmbeddings
    lovt = collect(batches, lambda model, b: asdict(model.local_features(b.images, b.text)))

The study ids of the rows are ``batches.study_ids`` (split order of the prepared table).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from localign.data.manifest import PreparedDataset, load_prepared
from localign.data.pretrain import Batch, Collate, PixelStats, PretrainDataset, pixel_stats, report_tokens
from localign.data.text import SpecialTokens
from localign.data.tokenize import load_tokenizer
from localign.models.embeddings import ImageEmbeddings, ReportEmbeddings, cat_padded
from localign.train.runs import LoadedRun

__all__ = ["StudyBatches", "collect", "encode_split", "run_prepared"]


def run_prepared(run: LoadedRun, data: str | Path | None = None) -> PreparedDataset:
    """The prepared dataset of ``data`` (a prepared folder or a SynthCXR root), else the one the run was trained on."""
    from localign.data.demo import resolve_prepared

    recorded = data if data is not None else (run.summary.get("data") or run.train.data)
    return load_prepared(resolve_prepared(recorded, progress=False))


class StudyBatches:
    """The studies of one split as the run's batches (images normalised as in training, whole reports).

    :param run: a :func:`~localign.train.runs.load_run` result (model in eval mode).
    :param prepared: the dataset (default: :func:`run_prepared`).
    :param split: ``train`` | ``validate`` | ``test``.
    :param n_studies: the first ``n`` studies of the split (default all).
    :param batch_size: studies per forward pass (memory only; no result depends on it).
    :param device: where the batches go (the run's model must be there too).
    """

    def __init__(self, run: LoadedRun, prepared: PreparedDataset | None = None, split: str = "test",
                 n_studies: int | None = None, batch_size: int = 32, device: str | torch.device = "cpu") -> None:
        if n_studies is not None and (isinstance(n_studies, bool) or not isinstance(n_studies, int) or n_studies < 1):
            raise ValueError(f"n_studies: expected a positive integer or None, got {n_studies!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.run = run
        self.prepared = prepared if prepared is not None else run_prepared(run)
        self.split = split
        self.device = torch.device(device)
        method, train = run.method, run.train
        tokenizer = load_tokenizer(method.text.model)
        self.special = SpecialTokens.from_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        tokens = report_tokens(self.prepared, tokenizer, method.text_input.max_length)
        stats = pixel_stats(self.prepared) if train.augment.normalize == "dataset" else PixelStats(0.5, 0.5)
        self.dataset = PretrainDataset(self.prepared, split, tokens=tokens, text_config=method.text_input,
                                       image_size=method.image.input_size, augment=train.augment, stats=stats,
                                       text_view="full", seed=train.seed, max_studies=n_studies)
        self.batch_size = batch_size
        self.collate = Collate(method.text_input, self.special)

    @property
    def study_ids(self) -> np.ndarray:
        """[N] the study id of each row, in split order."""
        return np.asarray(self.dataset.study_ids)

    @property
    def model(self):
        return self.run.model

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[Batch]:
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate)
        for batch in loader:
            yield batch.to(self.device)


def collect(batches: StudyBatches, fn: Callable[[Any, Batch], dict[str, Any]], progress: bool = False) -> dict[str, Any]:
    """Run ``fn(model, batch) -> {name: tensor | other}`` over every batch without gradients; concatenate.

    Tensors are moved to the CPU as float32 (bool kept) and joined with
    :func:`~localign.models.embeddings.cat_padded` (zeros / False past a report's end); a value
    that is not a tensor (a grid size) must be the same in every batch and is returned once; ``None``
    stays ``None``.
    """
    from tqdm.auto import tqdm

    parts: dict[str, list] = {}
    with torch.no_grad():
        for batch in tqdm(batches, desc=f"{batches.run.name}: {batches.split}", disable=not progress, leave=False, unit="batch"):
            for name, value in fn(batches.model, batch).items():
                parts.setdefault(name, []).append(value)
    out: dict[str, Any] = {}
    for name, values in parts.items():
        if all(isinstance(v, Tensor) for v in values):
            values = [v.detach().cpu() if v.dtype == torch.bool else v.detach().float().cpu() for v in values]
            out[name] = cat_padded(values)
        elif all(v is None for v in values):
            out[name] = None
        else:
            if any(v != values[0] for v in values):
                raise ValueError(f"collect: {name!r} differs between batches: {values[0]!r} vs others")
            out[name] = values[0]
    return out


def encode_split(batches: StudyBatches, progress: bool = False) -> tuple[ImageEmbeddings, ReportEmbeddings]:
    """The method's inference embeddings (``encode_images`` / ``encode_reports``) of every study, float32 on the CPU."""
    from tqdm.auto import tqdm

    images, reports = [], []
    with torch.no_grad():
        for batch in tqdm(batches, desc=f"{batches.run.name}: {batches.split}", disable=not progress, leave=False, unit="batch"):
            images.append(batches.model.encode_images(batch.images).to("cpu", torch.float32))
            reports.append(batches.model.encode_reports(batch.text).to("cpu", torch.float32))
    return ImageEmbeddings.cat(images), ReportEmbeddings.cat(reports)
