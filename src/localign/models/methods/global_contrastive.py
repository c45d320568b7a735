"""ConVIRT and CLIP*: one InfoNCE between global image and report embeddings.

- ConVIRT (Zhang et al.; LoVT's implementation): average-pooled ResNet, report = max over the
  non-special tokens of one random sentence, projection heads without BN, lambda = 0.75, tau = 0.1.
- CLIP* (LoVT's modified CLIP, "single sentence, attention pooling"): attention-pooled image,
  the same report encoder, BN heads, LoVT's optimiser and cyclic cosine schedule.
"""

from __future__ import annotations

import torch
from torch import Tensor

from localign.data.text import TextBatch
from localign.distributed import gather_with_grad
from localign.losses import info_nce
from localign.models.config import GlobalLossConfig, LoVTLossConfig, MethodConfig
from localign.models.embeddings import ImageEmbeddings, ReportEmbeddings
from localign.models.heads import AttentionPool, ProjectionHead
from localign.models.image import ImageFeatures
from localign.models.methods.base import PretrainModel, PretrainOutput
from localign.models.text import TokenStates, masked_max, sentence_max_pool


class GlobalContrastive(PretrainModel):
    """Global image/report embeddings and the global InfoNCE (base of LoVT as well)."""
    family = "global_contrastive"
    loss_config = GlobalLossConfig

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        loss: GlobalLossConfig | LoVTLossConfig = config.loss
        head = config.head
        if loss.image_pool not in ("avg", "attention"):
            raise ValueError(f"image_pool must be 'avg' or 'attention', got {loss.image_pool!r}")
        if loss.report_pool not in ("token_max", "attention"):
            raise ValueError(f"report_pool must be 'token_max' or 'attention', got {loss.report_pool!r}")
        if loss.image_pool == "attention":
            self.image_pool = AttentionPool(self.image_encoder.region_channels)
            d_image = self.image_encoder.region_channels
        else:
            d_image = self.image_encoder.pooled_channels
        if loss.report_pool == "attention":
            self.report_pool = AttentionPool(self.text_dim)
        self.image_head = ProjectionHead(d_image, head.d_hidden, head.d_z, head.norm)
        self.report_head = ProjectionHead(self.text_dim, head.d_hidden, head.d_z, head.norm)

    # --- global representations ------------------------------------------------------------------
    def image_global(self, feats: ImageFeatures) -> tuple[Tensor, Tensor | None]:
        """``(y [B, C], weights [B, K] or None)``: attention pool over regions, or the backbone's pool."""
        if self.config.loss.image_pool == "attention":
            return self.image_pool(feats.regions)
        return feats.pooled, None

    def report_global(self, states: TokenStates, text: TextBatch, sentences: Tensor | None = None,
                      sentence_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``(y [B, D], weights [B, M] or None)``: attention pool over sentences, or token max."""
        if self.config.loss.report_pool == "attention":
            if sentences is None:
                sentences, sentence_mask = sentence_max_pool(states.tokens, text.sentence_ids, text.sentence_mask.shape[1])
            return self.report_pool(sentences, sentence_mask)
        # LoVT's "bioclinicalbert_sentences": max over all non-special tokens.
        return masked_max(states.tokens, text.sentence_ids >= 0), None

    # --- interface -------------------------------------------------------------------------------
    def encode_images(self, images: Tensor) -> ImageEmbeddings:
        y, _ = self.image_global(self.image_encoder(images))
        return ImageEmbeddings(global_embedding=self.image_head(y))

    def encode_reports(self, text: TextBatch) -> ReportEmbeddings:
        y, _ = self.report_global(self.token_states(text), text)
        return ReportEmbeddings(global_embedding=self.report_head(y))

    def global_loss(self, z_image: Tensor, z_report: Tensor) -> Tensor:
        loss = self.config.loss
        return info_nce(gather_with_grad(z_image), gather_with_grad(z_report), loss.temperature, weight_a2b=loss.weight_a2b)

    def forward(self, images: Tensor, text: TextBatch, study_ids: Tensor | None = None) -> PretrainOutput:
        z_image = self.encode_images(images).global_embedding
        z_report = self.encode_reports(text).global_embedding
        loss = self.global_loss(z_image, z_report)
        return PretrainOutput(loss=loss, terms={"global": loss.detach()})

    def region_embeddings(self, feats: ImageFeatures) -> Tensor:
        """``[B, K, d_z]``: the global embedding each region would give if the whole image looked like it.

        For average pooling that is the head applied to the region; for attention pooling, the head
        applied to the region's projected value (the pool's output if the region took all the weight).
        Used for grounding maps of global-only methods (a CAM-like map).
        """
        regions = feats.regions
        if self.config.loss.image_pool == "attention":
            regions = self.image_pool.project_values(regions)
        elif self.image_encoder.region_channels != self.image_encoder.pooled_channels:
            raise ValueError(
                "region grounding of an avg-pooled global method needs the region grid from the last stage "
                f"(region_layer={self.config.image.region_layer!r} has {self.image_encoder.region_channels} channels, "
                f"the pooled vector {self.image_encoder.pooled_channels})"
            )
        return self.image_head(regions)

    def region_text_similarity(self, images: Tensor, text: TextBatch) -> Tensor:
        feats = self.image_encoder(images)
        regions = torch.nn.functional.normalize(self.region_embeddings(feats), dim=-1)
        report = torch.nn.functional.normalize(self.encode_reports(text).global_embedding, dim=-1)
        sim = torch.einsum("bkd,bd->bk", regions, report)
        return sim.reshape(sim.shape[0], *feats.grid)
