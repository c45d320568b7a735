"""Text encoder: any HF BERT, with the token, sentence, word and report features the methods need.

:class:`TextEncoder` runs the transformer and returns token states; the pooling functions below turn
them into what each paper uses:

- LoVT: sentence = element-wise **max over the sentence's tokens** in one joint pass
  (:func:`sentence_max_pool`), report = attention pool over sentences (a method head);
- ConVIRT/CLIP: report = max over all non-special tokens (:func:`masked_max`);
- GLoRIA/LIMITR: token states = **sum of the last 4 layers**, words = word pieces merged by summing
  ``##`` continuations into the preceding piece, the word set is ``[CLS]`` + words (``[SEP]`` and
  pads excluded) (:func:`merge_word_pieces`), report = mean of the token states (:func:`masked_mean`);
- local MI: per-sentence ``[CLS]`` (each sentence encoded on its own) and report ``[CLS]``
  (or the BERT pooler, as the repository).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from localign.data.tokenize import from_pretrained, load_tokenizer
from localign.models.config import TextEncoderConfig

log = logging.getLogger(__name__)


@dataclass
class TokenStates:
    """Outputs of :class:`TextEncoder`.

    :ivar tokens: ``[B, T, D]`` token states (sum of the last ``last_layers`` layers)
    :ivar cls: ``[B, D]`` last-layer state of ``[CLS]``
    :ivar pooled: ``[B, D]`` BERT pooler output tanh(W h_CLS + b), or None if the model has no pooler
    """

    tokens: Tensor
    cls: Tensor
    pooled: Tensor | None


def load_bert(config: TextEncoderConfig) -> nn.Module:
    """The transformer of ``config.model`` (pretrained, or randomly initialised from its config)."""
    from transformers import AutoConfig, AutoModel, BertConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per weight load clutters notebooks and logs
    if config.random_init:
        if config.tiny is not None:
            base = BertConfig(**dict(config.tiny), vocab_size=load_tokenizer(config.model).vocab_size)
        else:
            base = from_pretrained(AutoConfig, config.model)
        return AutoModel.from_config(base)
    return from_pretrained(AutoModel, config.model)


class TextEncoder(nn.Module):
    """A BERT-family encoder with optional freezing of the embeddings and the first N layers."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = load_bert(config)
        self.hidden_size = int(self.bert.config.hidden_size)
        n_layers = int(self.bert.config.num_hidden_layers)
        if not 1 <= config.last_layers <= n_layers:
            raise ValueError(f"last_layers must be in [1, {n_layers}], got {config.last_layers}")
        if config.freeze_layers > n_layers:
            raise ValueError(f"cannot freeze {config.freeze_layers} layers of a {n_layers}-layer model")
        if config.freeze:
            self.bert.requires_grad_(False)
            self.bert.eval()
        if config.freeze_embeddings:
            self.bert.embeddings.requires_grad_(False)
        for layer in self.bert.encoder.layer[: config.freeze_layers]:
            layer.requires_grad_(False)
        if getattr(self.bert, "pooler", None) is not None:
            # Only the local-MI repository variant reads the pooler; frozen otherwise so that every
            # trainable parameter receives a gradient (DDP requires it, AdamW would decay it for nothing).
            self.bert.pooler.requires_grad_(False)
        if config.gradient_checkpointing:
            self.bert.gradient_checkpointing_enable()
        tokenizer = load_tokenizer(config.model)
        vocab = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
        # Word-piece merging (GLoRIA/LIMITR) needs to know which ids continue the previous word.
        self.register_buffer("is_continuation", torch.tensor([t.startswith("##") for t in vocab]), persistent=False)
        self.special_ids = sorted(set(tokenizer.all_special_ids))

    #: A :class:`~localign.models.text_cache.TokenStateCache` of a frozen tower (set by the engine;
    #: a plain attribute, not a submodule: it is data, never saved in checkpoints).
    state_cache = None

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.config.freeze:  # a locked tower never drops out: its states stay a function of the ids
            self.bert.eval()
        return self

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> TokenStates:
        """:param input_ids: ``[B, T]``; :param attention_mask: ``[B, T]`` (1 = real token).

        A frozen tower (``freeze=True``) runs without autograd and reads its :attr:`state_cache`
        when one is attached; sequences missing from the cache are computed on the fly.
        """
        if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
            raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} must both be [B, T]")
        if self.config.freeze:
            with torch.no_grad():
                if self.state_cache is not None:
                    return self.state_cache.lookup(input_ids, attention_mask, self.run_tower)
                states = self.run_tower(input_ids, attention_mask)
                # Padded positions 0, as the cache serves them (no method reads them).
                return TokenStates(states.tokens * attention_mask[..., None].to(states.tokens.dtype), states.cls, states.pooled)
        return self.run_tower(input_ids, attention_mask)

    def run_tower(self, input_ids: Tensor, attention_mask: Tensor) -> TokenStates:
        """The transformer itself on ``[B, T]`` ids (no cache)."""
        need_all = self.config.last_layers > 1
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=need_all, return_dict=True)
        last = out.last_hidden_state
        tokens = torch.stack(out.hidden_states[-self.config.last_layers :]).sum(0) if need_all else last
        pooled = getattr(out, "pooler_output", None)
        return TokenStates(tokens=tokens, cls=last[:, 0], pooled=pooled)

    def special_mask(self, input_ids: Tensor) -> Tensor:
        """``[B, T]`` True where the token is a special token ([CLS], [SEP], [PAD], ...)."""
        special = torch.tensor(self.special_ids, device=input_ids.device)
        return torch.isin(input_ids, special)

    def word_ids(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``[B, T]`` word index of each token for word-piece merging (GLoRIA/LIMITR).

        ``[CLS]`` is word 0, the words are 1..W (a ``##`` piece joins the preceding word), and
        ``[SEP]``/``[PAD]`` get -1: the word set is [CLS] + words, as in the official code.
        """
        special = self.special_mask(input_ids) | (attention_mask == 0)
        continuation = self.is_continuation[input_ids.clamp(0, self.is_continuation.numel() - 1)]
        starts = (~special & ~continuation).long()
        ids = starts.cumsum(dim=1)  # word k starts where the k-th non-continuation token sits
        ids = torch.where(special, torch.full_like(ids, -1), ids)
        ids[:, 0] = torch.where(attention_mask[:, 0] > 0, 0, -1)  # [CLS] is word 0
        return ids

    def released_slot_ids(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``[B, T]`` slot of each token in the GLoRIA/LIMITR released code's merged token layout.

        That code (``aggregate_tokens``) walks the tokens up to ``[SEP]``: every piece that does not
        start with ``##`` opens a slot, a ``##`` piece is summed into the open one, ``[SEP]`` gets its
        own slot, and zero rows pad the result back to the input length. So slot 0 is ``[CLS]``, then
        the words, then ``[SEP]``; pads get -1. Unlike :meth:`word_ids`, ``[SEP]`` (and any other
        special token such as ``[UNK]``) keeps a slot: LIMITR's internal loss runs on this layout.
        """
        valid = attention_mask > 0
        continuation = self.is_continuation[input_ids.clamp(0, self.is_continuation.numel() - 1)]
        starts = (valid & ~continuation).long()
        slots = starts.cumsum(dim=1) - 1  # a ## piece stays in the slot its word opened
        return torch.where(valid, slots.clamp_min(0), torch.full_like(slots, -1))


# --------------------------------------------------------------------------------------------------
# Pooling functions (pure)
# --------------------------------------------------------------------------------------------------


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Element-wise max over valid positions.

    :param x: ``[B, T, D]``; :param mask: ``[B, T]`` bool
    :return: ``[B, D]``; rows with no valid position are 0
    """
    if x.shape[:2] != mask.shape:
        raise ValueError(f"x {tuple(x.shape)} and mask {tuple(mask.shape)} disagree on [B, T]")
    filled = x.masked_fill(~mask[..., None], float("-inf"))
    out = filled.amax(dim=1)
    return torch.where(mask.any(dim=1, keepdim=True), out, torch.zeros_like(out))


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid positions. :param x: ``[B, T, D]``; :param mask: ``[B, T]`` bool → ``[B, D]``."""
    if x.shape[:2] != mask.shape:
        raise ValueError(f"x {tuple(x.shape)} and mask {tuple(mask.shape)} disagree on [B, T]")
    w = mask.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def sentence_max_pool(tokens: Tensor, sentence_ids: Tensor, n_sentences: int | None = None) -> tuple[Tensor, Tensor]:
    """LoVT's sentence representation: element-wise max over each sentence's tokens.

    :param tokens: ``[B, T, D]`` token states of the joint ``[CLS] s_1 ... s_M [SEP]`` pass
    :param sentence_ids: ``[B, T]`` sentence index per token, -1 for special/pad tokens
    :param n_sentences: M (default: the largest index + 1)
    :return: ``(sentences [B, M, D], mask [B, M])``; padded sentence slots are exactly 0 (as LoVT)
    """
    if tokens.shape[:2] != sentence_ids.shape:
        raise ValueError(f"tokens {tuple(tokens.shape)} and sentence_ids {tuple(sentence_ids.shape)} disagree on [B, T]")
    b, t, d = tokens.shape
    m = int(sentence_ids.max().item()) + 1 if n_sentences is None else n_sentences
    m = max(m, 1)
    valid = sentence_ids >= 0
    index = torch.where(valid, sentence_ids, torch.full_like(sentence_ids, m))  # invalid tokens -> dump slot m
    out = torch.full((b, m + 1, d), float("-inf"), dtype=tokens.dtype, device=tokens.device)
    out = out.scatter_reduce(1, index[..., None].expand(-1, -1, d), tokens, reduce="amax", include_self=True)
    out = out[:, :m]
    counts = torch.zeros((b, m + 1), dtype=torch.long, device=tokens.device).scatter_add(1, index, torch.ones_like(index))[:, :m]
    mask = counts > 0
    return torch.where(mask[..., None], out, torch.zeros_like(out)), mask


def merge_word_pieces(tokens: Tensor, word_ids: Tensor, n_words: int | None = None) -> tuple[Tensor, Tensor]:
    """GLoRIA/LIMITR word features: the states of a word's pieces summed.

    :param tokens: ``[B, T, D]``
    :param word_ids: ``[B, T]`` from :meth:`TextEncoder.word_ids` (-1 = not part of a word)
    :return: ``(words [B, W, D], mask [B, W])`` with W = n_words or the largest index + 1
    """
    if tokens.shape[:2] != word_ids.shape:
        raise ValueError(f"tokens {tuple(tokens.shape)} and word_ids {tuple(word_ids.shape)} disagree on [B, T]")
    b, t, d = tokens.shape
    w = int(word_ids.max().item()) + 1 if n_words is None else n_words
    w = max(w, 1)
    valid = (word_ids >= 0) & (word_ids < w)
    index = torch.where(valid, word_ids, torch.full_like(word_ids, w))
    out = torch.zeros((b, w + 1, d), dtype=tokens.dtype, device=tokens.device)
    out = out.scatter_add(1, index[..., None].expand(-1, -1, d), tokens)[:, :w]
    counts = torch.zeros((b, w + 1), dtype=torch.long, device=tokens.device).scatter_add(1, index, torch.ones_like(index))[:, :w]
    return out, counts > 0
