"""The interface every pretraining method implements.

A method is an ``nn.Module`` with the shared encoders (:class:`~localign.models.image.ImageEncoder`,
:class:`~localign.models.text.TextEncoder`) plus its own heads, and:

- ``forward(images, text, study_ids) -> PretrainOutput``: the objective on a batch (gathering
  features across ranks under DDP where the objective compares samples);
- ``encode_images`` / ``encode_reports``: inference embeddings, typed records
  (:class:`~localign.models.embeddings.ImageEmbeddings`, :class:`~localign.models.embeddings.ReportEmbeddings`);
- ``similarity(image_emb, report_emb) -> [N_img, N_txt]``: the method's retrieval score;
- ``region_text_similarity(images, text) -> [B, h, w]``: per-region similarity of each image with
  its paired text (phrase grounding maps, CNR).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from localign.data.text import TextBatch
from localign.models.config import FAMILIES, MethodConfig
from localign.models.embeddings import ImageEmbeddings, ReportEmbeddings
from localign.models.image import ImageEncoder
from localign.models.text import TextEncoder, TokenStates


@dataclass
class PretrainOutput:
    """:ivar loss: scalar to minimise; :ivar terms: named components (detached) for logging."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class PretrainModel(nn.Module):
    """Base class: shared encoders, parameter groups, chunked pairwise scoring.

    A method class declares its family and its loss config; defining the class registers the
    family in :data:`~localign.models.config.FAMILIES`, which :class:`MethodConfig` and
    :func:`~localign.models.build_model` read. Intermediate classes (shared parts of several
    families) declare no family.

    :cvar family: the name a :class:`MethodConfig`'s ``family`` gives (``"lovt"``)
    :cvar loss_config: the dataclass of the family's ``MethodConfig.loss``
    """

    family: ClassVar[str | None] = None
    loss_config: ClassVar[type | None] = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "family" not in cls.__dict__:
            return
        if cls.loss_config is None:
            raise TypeError(f"{cls.__name__} declares family {cls.family!r} but no loss_config")
        if cls.family in FAMILIES and FAMILIES[cls.family].__qualname__ != cls.__qualname__:
            raise TypeError(f"method family {cls.family!r} is declared by both {FAMILIES[cls.family].__name__} and {cls.__name__}")
        FAMILIES[cls.family] = cls

    def __init__(self, config: MethodConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config.image)
        self.text_encoder = TextEncoder(config.text)
        if config.text_input.mode not in self.supported_text_modes:
            raise ValueError(
                f"method {config.name!r} ({type(self).__name__}) reads text mode {self.supported_text_modes}, "
                f"got text_input.mode={config.text_input.mode!r}"
            )

    supported_text_modes: tuple[str, ...] = ("joint",)

    @property
    def text_dim(self) -> int:
        return self.text_encoder.hidden_size

    # --- text helpers ----------------------------------------------------------------------------
    def token_states(self, text: TextBatch) -> TokenStates:
        if text.mode != "joint":
            raise ValueError(f"token states need joint text input, got {text.mode!r}")
        return self.text_encoder(text.input_ids, text.attention_mask)

    def sentence_cls(self, text: TextBatch, feature: str = "cls") -> Tensor:
        """Per-sentence ``[CLS]`` (or pooler) features ``[B, M, D]`` from ``sentences`` input; 0 on padded slots."""
        if text.mode != "sentences":
            raise ValueError(f"per-sentence features need text mode 'sentences', got {text.mode!r}")
        b, m, t = text.input_ids.shape
        valid = text.sentence_mask.reshape(-1)
        ids = text.input_ids.reshape(b * m, t)[valid]
        att = text.attention_mask.reshape(b * m, t)[valid]
        states = self.text_encoder(ids, att)
        feats = select_text_feature(states, feature)
        out = feats.new_zeros(b * m, feats.shape[-1])
        out[valid] = feats
        return out.reshape(b, m, -1)

    # --- interface -------------------------------------------------------------------------------
    def forward(self, images: Tensor, text: TextBatch, study_ids: Tensor | None = None) -> PretrainOutput:  # pragma: no cover
        raise NotImplementedError

    def encode_images(self, images: Tensor) -> ImageEmbeddings:  # pragma: no cover
        raise NotImplementedError

    def encode_reports(self, text: TextBatch) -> ReportEmbeddings:  # pragma: no cover
        raise NotImplementedError

    def similarity(self, image_emb: ImageEmbeddings, report_emb: ReportEmbeddings) -> Tensor:
        """Default retrieval score: cosine of the global embeddings ``[N_img, N_txt]``."""
        a = nn.functional.normalize(image_emb.need("global_embedding", type(self).__name__), dim=-1)
        b = nn.functional.normalize(report_emb.need("global_embedding", type(self).__name__), dim=-1)
        return a @ b.T

    def region_text_similarity(self, images: Tensor, text: TextBatch) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by part: ``text`` (the text tower), ``image`` (the backbone), ``heads``."""
        text = [p for p in self.text_encoder.parameters() if p.requires_grad]
        image = [p for p in self.image_encoder.parameters() if p.requires_grad]
        seen = {id(p) for p in text + image}
        heads = [p for p in self.parameters() if p.requires_grad and id(p) not in seen]
        return {"text": text, "image": image, "heads": heads}


def select_text_feature(states: TokenStates, feature: str) -> Tensor:
    """``cls`` (last-layer [CLS], the paper) or ``pooler`` (tanh(W h_CLS), the local-MI repository)."""
    if feature == "cls":
        return states.cls
    if feature == "pooler":
        if states.pooled is None:
            raise ValueError("this text model has no pooler; use text_feature='cls'")
        return states.pooled
    raise ValueError(f"unknown text feature {feature!r}; use 'cls' or 'pooler'")


def chunked_pairwise(score_block: Callable[[slice, slice], Tensor], n_a: int, n_b: int, chunk: int) -> Tensor:
    """Fill an ``[n_a, n_b]`` score matrix block by block (memory stays O(chunk²))."""
    rows = []
    for i in range(0, n_a, chunk):
        rows.append(torch.cat([score_block(slice(i, min(i + chunk, n_a)), slice(j, min(j + chunk, n_b))) for j in range(0, n_b, chunk)], dim=1))
    return torch.cat(rows, dim=0)
