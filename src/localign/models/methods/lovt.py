"""LoVT (Müller et al., ECCV 2022): global InfoNCE plus local image and report losses (spec §2).

Forward pass, with the notation of the paper (y encoder outputs, z projections, bar = global):

1. Regions y^I [B, K, C] (layer4, 7x7 at 224 px) and their attention pool ȳ^I with weights w^I.
2. Sentences y^R [B, M, D] = max over each sentence's tokens of one joint BERT pass, and their
   attention pool ȳ^R with weights w^R (padded sentence slots are zero).
3. Local heads z = f(y) per region/sentence (BN over batch x positions), global heads z̄ = f̄(ȳ).
4. Alignment model: z^{R→I} (one per region) and z^{I→R} (one per sentence).
5. L = γ L_global + μ/2 (L_img^{z→z'} + L_img^{z'→z}) + ν/2 (L_rep^{z→z'} + L_rep^{z'→z}), with the
   local weights w^I, w^R detached (stop-gradient), smooth spatial positives for the image side and
   identity positives over the sentences of the same report for the report side.

Every ablation of the supplementary table is a preset of this class (see the registry): a loss
weight of 0 skips that loss entirely.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from localign.data.text import TextBatch
from localign.distributed import pad_to_global_max
from localign.losses import lovt_local_loss, lovt_positive_weights
from localign.models.config import LoVTLossConfig, MethodConfig
from localign.models.heads import LoVTAlignment, ProjectionHead
from localign.models.methods.base import PretrainOutput
from localign.models.methods.global_contrastive import GlobalContrastive
from localign.models.text import sentence_max_pool


@dataclass(frozen=True)
class LoVTFeatures:
    """Every representation of LoVT's forward pass on a batch (notation of the module docstring).

    :ivar y_image: [B, K, C] backbone regions y^I (K = h·w, row-major)
    :ivar y_report: [B, M, D] sentence features y^R (max over each sentence's tokens); 0 on padded slots
    :ivar y_image_global: [B, C'] pooled image ȳ^I (attention pool over regions, or the backbone's pool)
    :ivar y_report_global: [B, D] pooled report ȳ^R
    :ivar z_image: [B, K, d_z] projected regions z^I
    :ivar z_report: [B, M, d_z] projected sentences z^R
    :ivar z_image_global: [B, d_z] projected global image z̄^I
    :ivar z_report_global: [B, d_z] projected global report z̄^R
    :ivar report_to_image: [B, K, d_z] z^{R→I}: the report attended from each region
    :ivar image_to_report: [B, M, d_z] z^{I→R}: the image attended from each sentence
    :ivar alignment_scores: [B, K, M] the alignment model's region-sentence scores
    :ivar sentence_mask: [B, M] bool, True on the report's sentences
    :ivar grid: ``(h, w)`` of the region grid
    :ivar image_weights: [B, K] attention-pool weights w^I of the regions (``None`` for avg pooling)
    :ivar report_weights: [B, M] attention-pool weights w^R of the sentences (``None`` for token max)
    """

    y_image: Tensor
    y_report: Tensor
    y_image_global: Tensor
    y_report_global: Tensor
    z_image: Tensor
    z_report: Tensor
    z_image_global: Tensor
    z_report_global: Tensor
    report_to_image: Tensor
    image_to_report: Tensor
    alignment_scores: Tensor
    sentence_mask: Tensor
    grid: tuple[int, int]
    image_weights: Tensor | None = None
    report_weights: Tensor | None = None


class LoVT(GlobalContrastive):
    family = "lovt"
    loss_config = LoVTLossConfig

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        loss: LoVTLossConfig = config.loss
        if loss.local_weights not in ("attention", "uniform"):
            raise ValueError(f"local_weights must be 'attention' or 'uniform', got {loss.local_weights!r}")
        if loss.local_weights == "attention" and (loss.image_pool != "attention" or loss.report_pool != "attention"):
            raise ValueError("local_weights='attention' takes the attention-pool weights: it needs image_pool and report_pool 'attention'")
        head = config.head
        self.region_head = ProjectionHead(self.image_encoder.region_channels, head.d_hidden, head.d_z, head.norm)
        self.sentence_head = ProjectionHead(self.text_dim, head.d_hidden, head.d_z, head.norm)
        self.alignment = LoVTAlignment(head.d_z)
        self._positive_weights: dict[tuple, Tensor] = {}

    def positive_weights(self, grid: tuple[int, int], device: torch.device) -> Tensor:
        key = (grid, str(device))
        if key not in self._positive_weights:
            loss = self.config.loss
            self._positive_weights[key] = lovt_positive_weights(
                grid, threshold=loss.spatial_threshold, smooth=loss.spatial_smooth, lam=loss.spatial_lambda
            ).to(device)
        return self._positive_weights[key]

    def local_features(self, images: Tensor, text: TextBatch) -> LoVTFeatures:
        """All representations of a batch (used by the loss and by the analysis notebooks)."""
        feats = self.image_encoder(images)
        states = self.token_states(text)
        y_sent, sent_mask = sentence_max_pool(states.tokens, text.sentence_ids, text.sentence_mask.shape[1])
        # LoVT's attention-pool query and BN see the padded sentence slots, so the padding must not
        # depend on how the batch is split across DDP ranks: pad to the largest report of all ranks.
        y_sent = pad_to_global_max(y_sent, dim=1)
        sent_mask = pad_to_global_max(sent_mask.float(), dim=1).bool()
        y_img_g, w_img = self.image_global(feats)
        y_rep_g, w_rep = self.report_global(states, text, sentences=y_sent, sentence_mask=sent_mask)
        z_img = self.region_head(feats.regions)
        z_sent = self.sentence_head(y_sent)
        r2i, i2r, scores = self.alignment(z_img, z_sent, sent_mask)
        return LoVTFeatures(
            y_image=feats.regions, y_report=y_sent, y_image_global=y_img_g, y_report_global=y_rep_g,
            z_image=z_img, z_report=z_sent, z_image_global=self.image_head(y_img_g), z_report_global=self.report_head(y_rep_g),
            report_to_image=r2i, image_to_report=i2r, alignment_scores=scores, sentence_mask=sent_mask, grid=feats.grid,
            image_weights=w_img, report_weights=w_rep,
        )

    def forward(self, images: Tensor, text: TextBatch, study_ids: Tensor | None = None) -> PretrainOutput:
        loss_cfg: LoVTLossConfig = self.config.loss
        f = self.local_features(images, text)
        terms: dict[str, Tensor] = {}
        total = images.new_zeros(())
        if loss_cfg.global_weight > 0:
            g = self.global_loss(f.z_image_global, f.z_report_global)
            terms["global"] = g.detach()
            total = total + loss_cfg.global_weight * g
        attention_weights = loss_cfg.local_weights == "attention"
        if loss_cfg.local_image_weight > 0:
            grid = f.grid
            w = f.image_weights.detach() if attention_weights else None  # stop-gradient, as LoVT
            l_z2a, l_a2z = lovt_local_loss(
                f.z_image, f.report_to_image, positive_weights=self.positive_weights(grid, images.device),
                weights=w, temperature=loss_cfg.local_temperature,
            )
            terms["local_image_z2att"], terms["local_image_att2z"] = l_z2a.detach(), l_a2z.detach()
            total = total + loss_cfg.local_image_weight / 2 * (l_z2a + l_a2z)
        if loss_cfg.local_report_weight > 0:
            w = f.report_weights.detach() if attention_weights else None
            l_z2a, l_a2z = lovt_local_loss(
                f.z_report, f.image_to_report, positive_weights=None, mask=f.sentence_mask,
                weights=w, temperature=loss_cfg.local_temperature,
            )
            terms["local_report_z2att"], terms["local_report_att2z"] = l_z2a.detach(), l_a2z.detach()
            total = total + loss_cfg.local_report_weight / 2 * (l_z2a + l_a2z)
        return PretrainOutput(loss=total, terms=terms)

    def region_text_similarity(self, images: Tensor, text: TextBatch) -> Tensor:
        """Cosine between each projected region z^I_k and the projected sentence z^R of the phrase.

        The phrase is encoded as a one-sentence report; if the text has several sentences, their
        projections are averaged over the valid ones.
        """
        feats = self.image_encoder(images)
        states = self.token_states(text)
        y_sent, mask = sentence_max_pool(states.tokens, text.sentence_ids, text.sentence_mask.shape[1])
        z_sent = self.sentence_head(y_sent)
        w = mask.to(z_sent.dtype)[..., None]
        phrase = (z_sent * w).sum(1) / w.sum(1).clamp_min(1.0)
        regions = torch.nn.functional.normalize(self.region_head(feats.regions), dim=-1)
        sim = torch.einsum("bkd,bd->bk", regions, torch.nn.functional.normalize(phrase, dim=-1))
        return sim.reshape(sim.shape[0], *feats.grid)
