"""From a report's sentences to token sequences: text augmentation, assembly and collation.

Sentences are tokenized once, without special tokens, and cached (:mod:`localign.data.tokenize`).
At batch time they are augmented (LoVT sentence swaps, ConVIRT/CLIP single random sentence) and
assembled into the sequences a method's text tower reads (:class:`TextInputConfig`, part of every
:class:`~localign.models.config.MethodConfig`):

- ``joint``: ``[CLS] s_1 ... s_M [SEP]`` with a sentence index per token (LoVT's joint encoding;
  also the "full report" input of GLoRIA/LIMITR with ``overflow="truncate"``);
- ``sentences``: each sentence its own ``[CLS] s [SEP]`` sequence (local MI's per-sentence [CLS]).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

TokenIds = list[int]


@dataclass(frozen=True)
class TextInputConfig:
    """How a report (a list of sentences) becomes token sequences for the text tower.

    - ``joint``: one ``[CLS] s_1 ... s_M [SEP]`` sequence with a sentence index per token (LoVT,
      ConVIRT, CLIP, GLoRIA, LIMITR). ``overflow="drop_sentences"`` drops the first sentence that does
      not fit and every sentence after it (LoVT); ``"truncate"`` cuts the token sequence (LIMITR, GLoRIA).
    - ``sentences``: every sentence its own ``[CLS] s [SEP]`` sequence (local MI's per-sentence [CLS]).
    """

    mode: str = "joint"  # joint | sentences
    max_length: int = 512
    overflow: str = "drop_sentences"  # drop_sentences | truncate
    pad_to_max_length: bool = False  # LIMITR/GLoRIA pad every report to max_length (97)
    max_sentences: int | None = None  # cap on sentences per report (mode "sentences")
    sentence_sampling: str | None = None  # None | random_sentence (ConVIRT, CLIP, GLoRIA)
    sentence_shuffling: str | None = None  # None | random_swaps (LoVT)
    swap_prob: float = 0.6  # LoVT: number of swaps ~ Geometric(1 - swap_prob) (failures before success)


@dataclass(frozen=True)
class SpecialTokens:
    """The ids a BERT tokenizer uses around and between real tokens."""

    cls: int
    sep: int
    pad: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "SpecialTokens":
        missing = [n for n in ("cls_token_id", "sep_token_id", "pad_token_id") if getattr(tokenizer, n, None) is None]
        if missing:
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no {missing}: a BERT-style tokenizer is required")
        return cls(cls=tokenizer.cls_token_id, sep=tokenizer.sep_token_id, pad=tokenizer.pad_token_id)


@dataclass
class TextBatch:
    """Token sequences of a batch of reports.

    ``joint`` mode:
      :ivar input_ids: ``[B, T]`` ``[CLS] s_1 ... s_M [SEP]`` padded with ``[PAD]``
      :ivar attention_mask: ``[B, T]`` 1 for real tokens (special tokens included)
      :ivar sentence_ids: ``[B, T]`` sentence index of each token, -1 for ``[CLS]``/``[SEP]``/``[PAD]``
    ``sentences`` mode:
      :ivar input_ids: ``[B, M, T]`` one ``[CLS] s [SEP]`` sequence per sentence slot
      :ivar attention_mask: ``[B, M, T]``; all-zero rows for padded sentence slots
      :ivar sentence_ids: None
    Both modes:
      :ivar sentence_mask: ``[B, M]`` bool, True for real sentences (M = most sentences in the batch)
    """

    mode: str
    input_ids: Tensor
    attention_mask: Tensor
    sentence_mask: Tensor
    sentence_ids: Tensor | None = None

    def to(self, device: torch.device | str) -> "TextBatch":
        kwargs = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in kwargs.items():
            if isinstance(v, Tensor):
                kwargs[k] = v.to(device, non_blocking=True)
        return TextBatch(**kwargs)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


# --------------------------------------------------------------------------------------------------
# Augmentation (on sentence lists, before assembly)
# --------------------------------------------------------------------------------------------------


def random_sentence_swaps(sentences: Sequence, swap_prob: float, rng: np.random.Generator) -> list:
    """LoVT's sentence shuffling: swap pairs of sentences a random number of times.

    The number of swaps n follows ``Geometric(1 - swap_prob)`` counting failures before the first
    success, P(n) = swap_prob^n (1 - swap_prob) (mean 1.5 for 0.6), as ``torch.distributions.Geometric``
    in the official code. Each swap exchanges two indices drawn uniformly and independently (they may
    coincide: a no-op). All sentences are kept.
    """
    out = list(sentences)
    if len(out) < 2 or swap_prob <= 0:
        return out
    n_swaps = int(rng.geometric(1.0 - swap_prob)) - 1  # numpy counts trials (>= 1); LoVT counts failures
    for _ in range(n_swaps):
        i, j = rng.integers(0, len(out), size=2)
        out[i], out[j] = out[j], out[i]
    return out


def augment_sentences(sentences: Sequence, config: TextInputConfig, rng: np.random.Generator) -> list:
    """Training-time text augmentation of one report's sentences (any sentence representation)."""
    out = list(sentences)
    if not out:
        return out
    if config.sentence_sampling == "random_sentence":
        out = [out[int(rng.integers(0, len(out)))]]
    elif config.sentence_sampling is not None:
        raise ValueError(f"unknown sentence_sampling {config.sentence_sampling!r}; use None or 'random_sentence'")
    if config.sentence_shuffling == "random_swaps":
        out = random_sentence_swaps(out, config.swap_prob, rng)
    elif config.sentence_shuffling is not None:
        raise ValueError(f"unknown sentence_shuffling {config.sentence_shuffling!r}; use None or 'random_swaps'")
    return out


_LATERALITY = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}


def swap_laterality(text: str) -> str:
    """Exchange the words left and right, so that a report stays true for a horizontally flipped image."""
    return _LATERALITY.sub(lambda m: _SWAP[m.group(0)], text)


# --------------------------------------------------------------------------------------------------
# Assembly of one report
# --------------------------------------------------------------------------------------------------


def assemble_joint(
    sentences: Sequence[TokenIds], special: SpecialTokens, max_length: int, overflow: str = "drop_sentences"
) -> tuple[TokenIds, list[int]]:
    """One ``[CLS] s_1 ... s_M [SEP]`` sequence and the sentence index of every token.

    :param sentences: token ids of each sentence, without special tokens
    :param max_length: total length including ``[CLS]`` and ``[SEP]``
    :param overflow: ``drop_sentences`` (LoVT: the first sentence that does not fit and all after it
        are dropped; a first sentence longer than the budget is truncated) or ``truncate`` (cut the
        concatenated tokens at the budget; a partially kept sentence keeps its index)
    :return: ``(input_ids, sentence_ids)`` with sentence_ids -1 on ``[CLS]``/``[SEP]``
    """
    if max_length < 3:
        raise ValueError(f"max_length must be >= 3 to hold [CLS] x [SEP], got {max_length}")
    budget = max_length - 2
    ids: TokenIds = []
    sent_ids: list[int] = []
    if overflow == "drop_sentences":
        for m, sent in enumerate(sentences):
            if len(ids) + len(sent) > budget:
                if m == 0:  # a single overlong first sentence is truncated rather than lost
                    ids.extend(sent[:budget])
                    sent_ids.extend([0] * min(len(sent), budget))
                break
            ids.extend(sent)
            sent_ids.extend([m] * len(sent))
    elif overflow == "truncate":
        for m, sent in enumerate(sentences):
            take = sent[: budget - len(ids)]
            ids.extend(take)
            sent_ids.extend([m] * len(take))
            if len(ids) >= budget:
                break
    else:
        raise ValueError(f"unknown overflow {overflow!r}; use 'drop_sentences' or 'truncate'")
    return [special.cls, *ids, special.sep], [-1, *sent_ids, -1]


def _renumber(sentence_ids: list[int]) -> list[int]:
    """Map sentence indices to 0..M'-1 in order of appearance, dropping empty sentences' gaps."""
    mapping: dict[int, int] = {}
    out = []
    for s in sentence_ids:
        if s < 0:
            out.append(-1)
            continue
        if s not in mapping:
            mapping[s] = len(mapping)
        out.append(mapping[s])
    return out


# --------------------------------------------------------------------------------------------------
# Collation
# --------------------------------------------------------------------------------------------------


def collate_reports(
    reports: Sequence[Sequence[TokenIds]], config: TextInputConfig, special: SpecialTokens
) -> TextBatch:
    """Assemble and pad a batch of (already augmented) reports.

    :param reports: per report, the token ids of each sentence (no special tokens)
    :return: a :class:`TextBatch` in ``config.mode``
    """
    if len(reports) == 0:
        raise ValueError("cannot collate an empty batch of reports")
    if config.mode == "joint":
        seqs, sids = [], []
        for sentences in reports:
            ids, s = assemble_joint(sentences, special, config.max_length, config.overflow)
            seqs.append(ids)
            sids.append(_renumber(s))
        length = config.max_length if config.pad_to_max_length else max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), length), special.pad, dtype=torch.long)
        attention = torch.zeros((len(seqs), length), dtype=torch.long)
        sentence_ids = torch.full((len(seqs), length), -1, dtype=torch.long)
        n_sent = []
        for b, (ids, s) in enumerate(zip(seqs, sids)):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            attention[b, : len(ids)] = 1
            sentence_ids[b, : len(s)] = torch.tensor(s)
            n_sent.append(max(s) + 1 if any(x >= 0 for x in s) else 0)
        m_max = max(max(n_sent), 1)
        sentence_mask = torch.arange(m_max)[None, :] < torch.tensor(n_sent)[:, None]
        return TextBatch("joint", input_ids, attention, sentence_mask, sentence_ids)
    if config.mode == "sentences":
        cap = config.max_sentences
        per_report = [[s for s in sentences if len(s) > 0][: cap if cap else None] for sentences in reports]
        n_sent = [len(r) for r in per_report]
        m_max = max(max(n_sent), 1)
        budget = config.max_length - 2
        lengths = [min(len(s), budget) + 2 for r in per_report for s in r]
        length = config.max_length if config.pad_to_max_length else max(lengths, default=2)
        input_ids = torch.full((len(reports), m_max, length), special.pad, dtype=torch.long)
        attention = torch.zeros((len(reports), m_max, length), dtype=torch.long)
        for b, sentences in enumerate(per_report):
            for m, sent in enumerate(sentences):
                ids = [special.cls, *sent[:budget], special.sep]
                input_ids[b, m, : len(ids)] = torch.tensor(ids)
                attention[b, m, : len(ids)] = 1
        sentence_mask = torch.arange(m_max)[None, :] < torch.tensor(n_sent)[:, None]
        return TextBatch("sentences", input_ids, attention, sentence_mask, None)
    raise ValueError(f"unknown text input mode {config.mode!r}; use 'joint' or 'sentences'")


def tower_sequences(sentence_lists: Sequence[Sequence[TokenIds]], config: TextInputConfig, special: SpecialTokens) -> list[TokenIds]:
    """Every unpadded sequence the text tower can read for these reports without augmentation.

    Per report: the whole report as one ``joint`` sequence (retrieval, validation, LoVT without
    shuffling) and each sentence as ``[CLS] s [SEP]`` (one random sentence in ``joint`` mode, and
    every sentence in ``sentences`` mode): what :mod:`localign.models.text_cache` precomputes.
    """
    budget = config.max_length - 2
    out: list[TokenIds] = []
    for sentences in sentence_lists:
        out.append(assemble_joint(sentences, special, config.max_length, config.overflow)[0])
        for sent in sentences:
            out.append([special.cls, *list(sent)[:budget], special.sep])
    return out
