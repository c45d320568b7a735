"""Validation measures of a method during pretraining: loss, image-report retrieval and feature rank.

The engine calls them once per epoch on the validation split (rank 0, whole split); the retrieval
protocol (:mod:`localign.eval.protocols.retrieval`) scores the test split with the same
:func:`evaluate_retrieval`, so a run's ``val/`` numbers and its test numbers are one definition.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import torch
from torch.utils.data import DataLoader

from localign import distributed as D
from localign.metrics import effective_rank, recall_at_k
from localign.models.embeddings import ImageEmbeddings, ReportEmbeddings
from localign.models.methods.base import PretrainModel


@torch.no_grad()
def evaluate_retrieval(model: PretrainModel, loader: DataLoader, device: torch.device, pool: int | None = None,
                       autocast=contextlib.nullcontext) -> dict[str, float]:
    """Image↔report R@1/5/10 (both directions), median rank, MRR and r_sum over the loader's studies.

    The candidate pool is the whole split (``pool=None``) or consecutive chunks of ``pool`` pairs
    (LIMITR's protocol); the pool size is part of the result.
    """
    model.eval()
    images, reports = [], []
    with D.no_gather():
        for batch in loader:
            batch = batch.to(device)
            with autocast():
                images.append(model.encode_images(batch.images).to(dtype=torch.float32))
                reports.append(model.encode_reports(batch.text).to(dtype=torch.float32))
        img, rep = ImageEmbeddings.cat(images), ReportEmbeddings.cat(reports)
        scores = model.similarity(img, rep).float().cpu().numpy()
    return recall_at_k(scores, ks=(1, 5, 10), chunk_size=pool)


@torch.no_grad()
def evaluate_feature_rank(model: PretrainModel, loader: DataLoader, device: torch.device, variance: float = 0.99,
                          autocast=contextlib.nullcontext) -> dict[str, float]:
    """Effective rank of the pooled backbone features (what ``encoder.pt`` exports) of the loader's images.

    Components holding ``variance`` of the variance of the standardised features
    (:func:`~localign.metrics.effective_rank`): a collapse of the exported representation shows
    here even when the projected embeddings still retrieve.
    """
    model.eval()
    feats = []
    for batch in loader:
        with autocast():
            feats.append(model.image_encoder(batch.images.to(device)).pooled.float().cpu())
    x = torch.cat(feats).numpy()
    # The rank of N centred samples is at most N - 1: the bound the rank is read against.
    return {"feature_rank": float(effective_rank(x, variance)), "feature_dim": float(x.shape[1]),
            "feature_rank_max": float(min(x.shape[0] - 1, x.shape[1]))}


@torch.no_grad()
def evaluate_loss(model: PretrainModel, loader: DataLoader, device: torch.device, autocast=contextlib.nullcontext) -> dict[str, float]:
    """Mean objective over the loader's batches (eval mode, no augmentation), weighted by batch size.

    Also the same objective on **shuffled pairs** (``loss_shuffled`` and ``<term>_shuffled``): each
    batch's images rolled by one position, so that no image meets its own report (and no study
    exclusion applies). A method that learned the pairing scores its true pairs better than the
    shuffled ones; an objective that reports the same value for both measures something else (local
    MI's Eq. 5: see :func:`localign.losses.local_mi_objective`'s ``region_selection``).
    """
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    n = 0
    with D.no_gather():
        for batch in loader:
            batch = batch.to(device)
            b = len(batch)
            with autocast():
                out = model(batch.images, batch.text, batch.study_ids)
                shuffled = model(batch.images.roll(1, dims=0), batch.text, None) if b > 1 else None
            sums["loss"] += float(out.loss) * b
            for k, v in out.terms.items():
                sums[k] += float(v) * b
            if shuffled is not None:
                sums["loss_shuffled"] += float(shuffled.loss) * b
                for k, v in shuffled.terms.items():
                    sums[f"{k}_shuffled"] += float(v) * b
            n += b
    return {k: v / max(n, 1) for k, v in sums.items()}
