"""Liao et al. (MICCAI 2021): image-text representation learning by mutual-information maximisation.

A critic f(z^I, z^R) (an MLP on the concatenation) is trained jointly with both encoders to
maximise a lower bound on MI (MINE/Donsker-Varadhan or CPC/InfoNCE); matched pairs are joint
samples, shuffled pairs samples of the product of marginals.

- ``level="global"``: one image vector (the 6-stage ResNet, 768-d) and one report vector
  (the report's [CLS]) — what the public repository implements.
- ``level="local"`` (the paper's Eq. 5, absent from the repository): region features of the
  5-stage ResNet (4x4x512) and per-sentence [CLS] features; for each sentence the MI estimate is
  maximised over the image's regions, then summed over sentences.

Negatives: every other sample of the (gathered) batch; pairs of two images of the same study are
excluded, as in the repository's ``create_mi_pairs`` (``exclude_same_study``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from localign.data.text import TextBatch
from localign.distributed import gather_with_grad, pad_to_global_max
from localign.losses import global_mi_objective, local_mi_objective
from localign.models.config import MethodConfig, MILossConfig
from localign.models.embeddings import ImageEmbeddings, ReportEmbeddings
from localign.models.heads import ConcatCritic
from localign.models.methods.base import PretrainModel, PretrainOutput, chunked_pairwise, select_text_feature


class MutualInformation(PretrainModel):
    family = "mi"
    loss_config = MILossConfig

    supported_text_modes = ("joint", "sentences")

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        loss: MILossConfig = config.loss
        if loss.level not in ("global", "local"):
            raise ValueError(f"MI level must be 'global' or 'local', got {loss.level!r}")
        if loss.estimator not in ("cpc", "mine", "repo_infonce"):
            raise ValueError(f"unknown MI estimator {loss.estimator!r}; use cpc, mine or repo_infonce")
        if loss.level == "local" and loss.estimator == "repo_infonce":
            raise ValueError("the repository's 'infonce' variant exists only for the global objective")
        expected_mode = "sentences" if loss.level == "local" else "joint"
        if config.text_input.mode != expected_mode:
            raise ValueError(f"{loss.level} MI reads text mode {expected_mode!r}, got {config.text_input.mode!r}")
        d_image = self.image_encoder.region_channels if loss.level == "local" else self.image_encoder.pooled_channels
        self.critic = ConcatCritic(d_image, self.text_dim, tuple(loss.critic_hidden))
        if loss.text_feature == "pooler":
            if getattr(self.text_encoder.bert, "pooler", None) is None:
                raise ValueError(f"{config.text.model!r} has no pooler; use text_feature='cls'")
            self.text_encoder.bert.pooler.requires_grad_(True)

    # --- features --------------------------------------------------------------------------------
    def encode_images(self, images: Tensor) -> ImageEmbeddings:
        feats = self.image_encoder(images)
        if self.config.loss.level == "local":
            return ImageEmbeddings(local=feats.regions)
        return ImageEmbeddings(global_embedding=feats.pooled)

    def encode_reports(self, text: TextBatch) -> ReportEmbeddings:
        feature = self.config.loss.text_feature
        if self.config.loss.level == "local":
            return ReportEmbeddings(local=self.sentence_cls(text, feature), local_mask=text.sentence_mask)
        return ReportEmbeddings(global_embedding=select_text_feature(self.token_states(text), feature))

    # --- objective -------------------------------------------------------------------------------
    def _negative_mask(self, study_ids: Tensor | None, n: int, device: torch.device) -> Tensor | None:
        if study_ids is None or not self.config.loss.exclude_same_study:
            return None
        ids = gather_with_grad(study_ids.to(device)) if study_ids.dim() == 1 else study_ids
        mask = ids[:, None] != ids[None, :]
        return mask | torch.eye(n, dtype=torch.bool, device=device)

    def forward(self, images: Tensor, text: TextBatch, study_ids: Tensor | None = None) -> PretrainOutput:
        loss: MILossConfig = self.config.loss
        z_img = self.encode_images(images)
        z_rep = self.encode_reports(text)
        if loss.level == "global":
            a, b = gather_with_grad(z_img.global_embedding), gather_with_grad(z_rep.global_embedding)
            scores = self.critic.pairwise(a, b)
            mi = global_mi_objective(scores, estimator=loss.estimator, negative_mask=self._negative_mask(study_ids, a.shape[0], a.device))
        else:
            regions = gather_with_grad(z_img.local)
            sentences = gather_with_grad(pad_to_global_max(z_rep.local, dim=1))
            mask = gather_with_grad(pad_to_global_max(z_rep.local_mask.float(), dim=1)).bool()
            scores = self.critic.pairwise_local(regions, sentences, mask)
            mi = local_mi_objective(scores, mask, estimator=loss.estimator, negative_mask=self._negative_mask(study_ids, regions.shape[0], regions.device),
                                    region_selection=loss.region_selection)
        return PretrainOutput(loss=-mi, terms={f"mi_{loss.estimator}": mi.detach()})

    # --- retrieval and grounding -----------------------------------------------------------------
    def similarity(self, image_emb: ImageEmbeddings, report_emb: ReportEmbeddings, chunk: int = 32) -> Tensor:
        """Critic scores: f(z^I_i, z^R_j) (global); mean over sentences of max over regions (local)."""
        if self.config.loss.level == "global":
            a, b = image_emb.need("global_embedding", "global MI"), report_emb.need("global_embedding", "global MI")
            return chunked_pairwise(lambda i, j: self.critic.pairwise(a[i], b[j]), len(a), len(b), chunk)
        regions = image_emb.need("local", "local MI")
        sentences, mask = report_emb.need("local", "local MI"), report_emb.need("local_mask", "local MI")

        def block(i: slice, j: slice) -> Tensor:
            s = self.critic.pairwise_local(regions[i], sentences[j], mask[j]).amax(dim=2)  # [bi, bj, M]: best region per sentence
            m = mask[j].to(s.dtype)[None]
            return (s * m).sum(-1) / m.sum(-1).clamp_min(1.0)

        return chunked_pairwise(block, len(regions), len(sentences), chunk)

    def sentence_region_scores(self, images: Tensor, text: TextBatch) -> dict[str, Tensor | tuple[int, int]]:
        """Local MI's critic scores of every sentence of each report with every region of its own image
        (read-only; Liao et al. Fig. 2: the region a sentence selects is the max over regions).

        :return: ``scores`` ``[B, M, K]`` = f(z^I_k, z^R_m) (0 on padded sentence slots),
            ``sentence_mask`` ``[B, M]``, ``grid`` (h, w) with K = h·w row-major.
        """
        if self.config.loss.level != "local":
            raise ValueError("sentence_region_scores: only the local MI model scores sentences against regions")
        feats = self.image_encoder(images)
        rep = self.encode_reports(text)
        scores = self.critic(feats.regions[:, None, :, :], rep.local[:, :, None, :])  # [B, M, K]
        mask = rep.local_mask
        return {"scores": scores * mask[..., None].to(scores.dtype), "sentence_mask": mask, "grid": feats.grid}

    def region_text_similarity(self, images: Tensor, text: TextBatch) -> Tensor:
        """Critic score of each region with the phrase (local); for the global model, the score the
        image would get if every 2x2-pool cell looked like that last-stage region."""
        feats = self.image_encoder(images)
        phrase = self.encode_reports(text)
        if self.config.loss.level == "local":
            s, m = phrase.local, phrase.local_mask.to(phrase.local.dtype)
            p = (s * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)
            scores = self.critic(feats.regions, p[:, None, :])
            return scores.reshape(scores.shape[0], *feats.grid)
        last = self.image_encoder.stage_maps(images)[self.image_encoder.last_layer]  # [B, C, h, w]
        b, c, h, w = last.shape
        cells = last.flatten(2).transpose(1, 2)  # [B, h*w, C]
        repeat = self.image_encoder.pooled_channels // c  # avg2x2_flatten tiles 4 cells; avg pool: 1
        scores = self.critic(cells.repeat(1, 1, repeat), phrase.global_embedding[:, None, :])
        return scores.reshape(b, h, w)
