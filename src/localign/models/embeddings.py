"""Typed embedding records: what ``encode_images`` / ``encode_reports`` return and ``similarity`` reads.

One record per modality, the same fields for every method family (a family fills the ones its
objective has, the others stay ``None``), in the spirit of hi-ml's ``ImageModelOutput``:

- ConVIRT, CLIP, LoVT: ``global_embedding`` on both sides;
- GLoRIA: image ``global_embedding`` and ``local`` (regions), report ``global_embedding``,
  ``words`` and ``word_mask``;
- LIMITR: as GLoRIA, plus image ``keys`` (the regions with the 2-D positional encoding);
- local MI: image ``local`` (regions), report ``local`` (per-sentence [CLS]) and ``local_mask``;
  global MI: ``global_embedding`` on both sides.

Records are frozen; :meth:`cat` joins the records of several batches (padding the variable-length
axis), :meth:`to` moves or casts them, and indexing (``emb[i:j]``) selects samples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

E = TypeVar("E", bound="_Embeddings")


@dataclass(frozen=True)
class _Embeddings:
    """Shared behaviour of :class:`ImageEmbeddings` and :class:`ReportEmbeddings`."""

    # (tensor field, its mask field): the mask has the tensor's first two dims.
    _MASKS = ()

    def __post_init__(self) -> None:
        present = self.tensors()
        if not present:
            raise ValueError(f"{type(self).__name__}: no embedding given")
        sizes = {name: t.shape[0] for name, t in present.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"{type(self).__name__}: fields disagree on the batch size: {sizes}")
        for value, mask in self._MASKS:
            v, m = present.get(value), present.get(mask)
            if m is None:
                continue
            if v is None:
                raise ValueError(f"{type(self).__name__}: {mask} given without {value}")
            if m.dtype != torch.bool or tuple(m.shape) != tuple(v.shape[:2]):
                raise ValueError(f"{type(self).__name__}: {mask} must be a bool tensor of shape {tuple(v.shape[:2])} "
                                 f"({value} is {tuple(v.shape)}), got {m.dtype} {tuple(m.shape)}")

    def tensors(self) -> dict[str, Tensor]:
        """The fields that are set, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def __len__(self) -> int:
        return next(iter(self.tensors().values())).shape[0]

    def __getitem__(self: E, index) -> E:
        """The records of some samples: ``emb[i:j]``, ``emb[mask]``, ``emb[indices]``."""
        if isinstance(index, str):
            raise TypeError(f"{type(self).__name__} is a record, not a dict: read emb.{index} "
                            f"(fields: {', '.join(f.name for f in dataclasses.fields(self))})")
        return dataclasses.replace(self, **{name: t[index] for name, t in self.tensors().items()})

    def need(self, name: str, method: str = "this similarity") -> Tensor:
        """Field ``name``, or a ``ValueError`` that says which method needed it."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"{method} needs {type(self).__name__}.{name}, which these embeddings do not have "
                             f"(they hold {sorted(self.tensors())})")
        return value

    def to(self: E, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> E:
        """Moved to ``device``; floating fields cast to ``dtype`` (masks stay bool)."""
        return dataclasses.replace(self, **{
            name: t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else None)
            for name, t in self.tensors().items()
        })

    @classmethod
    def cat(cls: type[E], chunks: list[E]) -> E:
        """The records of several batches as one, along the batch axis. Where the second axis
        differs between chunks (sentences, words per batch), shorter chunks are padded with zeros
        and their masks with False."""
        if not chunks:
            raise ValueError(f"{cls.__name__}.cat: no chunks")
        names = set(chunks[0].tensors())
        for c in chunks[1:]:
            if set(c.tensors()) != names:
                raise ValueError(f"{cls.__name__}.cat: chunks hold different fields: {sorted(names)} vs {sorted(c.tensors())}")
        return cls(**{name: cat_padded([getattr(c, name) for c in chunks]) for name in names})


@dataclass(frozen=True)
class ImageEmbeddings(_Embeddings):
    """What a method's ``encode_images`` returns.

    :ivar global_embedding: [B, D] one vector per image (projected where the method projects)
    :ivar local: [B, K, D] one vector per region of the K = h·w grid (row-major)
    :ivar local_mask: [B, K] bool, True on valid regions (``None``: all valid, as on a full grid)
    :ivar keys: [B, K, D] the regions as attention keys/queries where they differ from ``local``
        (LIMITR: with the 2-D positional encoding)
    """

    global_embedding: Tensor | None = None
    local: Tensor | None = None
    local_mask: Tensor | None = None
    keys: Tensor | None = None

    _MASKS = (("local", "local_mask"),)


@dataclass(frozen=True)
class ReportEmbeddings(_Embeddings):
    """What a method's ``encode_reports`` returns.

    :ivar global_embedding: [B, D] one vector per report
    :ivar local: [B, M, D] one vector per sentence (local MI: each sentence's [CLS]); 0 on padded slots
    :ivar local_mask: [B, M] bool, True on the report's sentences
    :ivar words: [B, T, D] one vector per word (GLoRIA/LIMITR: [CLS] in slot 0, then the words)
    :ivar word_mask: [B, T] bool, True on filled word slots
    """

    global_embedding: Tensor | None = None
    local: Tensor | None = None
    local_mask: Tensor | None = None
    words: Tensor | None = None
    word_mask: Tensor | None = None

    _MASKS = (("local", "local_mask"), ("words", "word_mask"))


def cat_padded(chunks: list[Tensor]) -> Tensor:
    """Concatenate along dim 0 tensors whose other dims may differ (sentences or words per batch),
    padding each of them at its end with zeros (``False`` for bool masks).

    :param chunks: tensors ``[B_i, L_i, ...]`` of one number of dims (``[B, M, D]``, ``[B, K, M]``).
    :return: ``[sum B_i, max L_i, ...]``.
    """
    if not chunks:
        raise ValueError("cat_padded: no tensors")
    if len({c.dim() for c in chunks}) > 1:
        raise ValueError(f"cat_padded: the tensors have different numbers of dims: {[tuple(c.shape) for c in chunks]}")
    size = [max(c.shape[d] for c in chunks) for d in range(1, chunks[0].dim())]
    padded = []
    for c in chunks:
        pad = [p for d in reversed(range(1, c.dim())) for p in (0, size[d - 1] - c.shape[d])]
        padded.append(torch.nn.functional.pad(c, pad) if any(pad) else c)
    return torch.cat(padded)
