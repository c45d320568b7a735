"""Image↔report retrieval with the method's own score (LIMITR's R@K protocol, spec §3.6).

**Definition.** The candidates are the studies of one split (default ``test``), in manifest order:
each study contributes one pair, its first readable frontal image (pad + resize + the encoder's
normalisation, no augmentation) and its **whole** report (every selected sentence, assembled as the
method's text tower reads it, ``text_view="full"``). The score matrix S[i, j] is the method's own
``similarity(encode_images, encode_reports)`` (cosine of global embeddings for ConVIRT/CLIP/LoVT,
the word-region scores of GLoRIA/LIMITR, the critic for local MI), computed by
:func:`localign.train.validation.evaluate_retrieval`. A query's only positive is its own pair (not
another report with the same labels). Ranks, R@1/5/10 (in percent), median/mean rank and MRR follow
:func:`~localign.metrics.recall_at_k` with pessimistic ties, in both directions, over an
**explicit candidate pool**: the whole split (``pool=None``: every query against all N candidates)
or LIMITR's chunks of P consecutive pairs (``pool=P``; the last N mod P pairs are dropped and
counted). The pool size, number of chunks and of dropped pairs are part of the result, because R@K
over 1000 candidates and over a whole test split are not comparable (chance R@1 = 100/P %).
"""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader

from localign.data.manifest import PreparedDataset
from localign.data.text import SpecialTokens
from localign.data.tokenize import load_tokenizer
from localign.data.transforms import AugmentConfig, Preprocessing
from localign.metrics import chance_recall_at_k
from localign.eval.protocols.common import ProtocolResult, TaskUnavailable
from localign.models.methods.base import PretrainModel
from localign.data.pretrain import Collate, PixelStats, PretrainDataset, report_tokens
from localign.train.validation import evaluate_retrieval

log = logging.getLogger(__name__)


def retrieval_protocol(
    model: PretrainModel,
    prep: Preprocessing,
    prepared: PreparedDataset,
    *,
    pool: int | None = None,
    split: str = "test",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[ProtocolResult]:
    """Image↔report retrieval on one split (definition in the module docstring).

    :param model: a trained method (``encode_images``, ``encode_reports``, ``similarity``).
    :param pool: candidates per query: None = the whole split, P = chunks of P pairs.
    :return: one deterministic result (fraction 1.0, seed 0): ``i2t_R@{1,5,10}``, ``t2i_R@{1,5,10}``,
        medr, meanr, mrr per direction, ``r_sum``, ``pool_size``, ``n_chunks``, ``n_pairs``,
        ``n_dropped``, ``chance_R@1`` (100 / pool size) and ``n_unreadable_images`` (views replaced by
        another frontal view of the same study).
    """
    method = model.config
    tokenizer = load_tokenizer(method.text.model)
    tokens = report_tokens(prepared, tokenizer, method.text_input.max_length, progress=progress)
    try:
        dataset = PretrainDataset(prepared, split, tokens, method.text_input, prep.input_size, AugmentConfig(normalize=prep.normalize),
                                  PixelStats(prep.mean, prep.std), text_view="full")
    except ValueError as err:
        raise TaskUnavailable(f"retrieval: {err}") from None
    if pool is not None and pool > len(dataset):
        raise TaskUnavailable(f"retrieval: pool {pool} exceeds the {len(dataset)} pairs of the {split!r} split "
                              "(use pool=None to rank against the whole split)")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=Collate(method.text_input, SpecialTokens.from_tokenizer(tokenizer)))
    metrics = evaluate_retrieval(model, loader, torch.device(device), pool)
    metrics = {k: float(v) for k, v in metrics.items()}
    metrics["chance_R@1"] = chance_recall_at_k(int(metrics["pool_size"]), ks=(1,))["i2t_R@1"]
    # a study whose first frontal image is unreadable is represented by another of its views
    metrics["n_unreadable_images"] = float(len(dataset.read_errors))
    log.info("retrieval on %d %s pairs, pool %d: i2t R@1 %.2f, t2i R@1 %.2f (chance %.2f)", len(dataset), split,
             int(metrics["pool_size"]), metrics["i2t_R@1"], metrics["t2i_R@1"], metrics["chance_R@1"])
    return [ProtocolResult(1.0, 0, metrics)]
