"""GLoRIA (Huang et al., ICCV 2021): word-region attention local loss plus a global loss (spec §4).

Image: ResNet-50 at 224 px upsampled to 299; regions = layer3 (19x19x1024) mapped by a 1x1 conv
(no bias) to the text width; global = layer4 average pool mapped by a Linear. Text: the sum of the
last 4 BERT layers, word pieces merged into words, the word set [CLS] + words; report global = the
mean of the token states. Training captions are one random sentence of the report.

Retrieval uses GLoRIA's inference similarity (spec §4.4): local = 5 · max over words (without
[CLS]) of cos(w_t, c_t), the attention computed with those words only, global = cosine, combined
(local + global) / 2. Grounding maps (``region_text_similarity``) are the cosine of each region
with the report vector: no attention, so no word set enters them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from localign.data.text import TextBatch
from localign.distributed import gather_with_grad, pad_to_global_max
from localign.losses import double_softmax_weights, gloria_global_loss, gloria_inference_local_scores, gloria_local_loss
from localign.models.config import GloriaLossConfig, MethodConfig
from localign.models.embeddings import ImageEmbeddings, ReportEmbeddings
from localign.models.image import ImageFeatures
from localign.models.methods.base import PretrainModel, PretrainOutput, chunked_pairwise
from localign.models.text import TokenStates, masked_mean, merge_word_pieces


class WordRegionModel(PretrainModel):
    """Shared parts of GLoRIA and LIMITR: region/global embeddings in the text space, word features."""

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        d = self.text_dim
        self.region_embed = nn.Linear(self.image_encoder.region_channels, d, bias=False)  # the 1x1 conv
        self.global_embed = nn.Linear(self.image_encoder.pooled_channels, d)

    def embed_features(self, feats: ImageFeatures) -> ImageEmbeddings:
        return ImageEmbeddings(global_embedding=self.global_embed(feats.pooled), local=self.region_embed(feats.regions))

    def encode_images(self, images: Tensor) -> ImageEmbeddings:
        return self.embed_features(self.image_encoder(images))

    def encode_reports(self, text: TextBatch) -> ReportEmbeddings:
        return self.report_features(self.token_states(text), text)

    def report_features(self, states: TokenStates, text: TextBatch) -> ReportEmbeddings:
        """Word set ([CLS] + words), its mask and the report vector from the token states."""
        word_ids = self.text_encoder.word_ids(text.input_ids, text.attention_mask)
        words, word_mask = merge_word_pieces(states.tokens, word_ids)
        # Report vector: mean of the token states over [CLS] ... [SEP] (the code divides by the padded
        # length instead; the global losses use cosines, which do not see that constant factor).
        report = masked_mean(states.tokens, text.attention_mask.bool())
        return ReportEmbeddings(global_embedding=report, words=words, word_mask=word_mask)

    def region_text_similarity(self, images: Tensor, text: TextBatch) -> Tensor:
        """Cosine between each embedded region and the phrase's report vector."""
        feats = self.image_encoder(images)
        img = self.embed_features(feats)
        rep = self.encode_reports(text)
        sim = torch.einsum("bkd,bd->bk", F.normalize(img.local, dim=-1), F.normalize(rep.global_embedding, dim=-1))
        return sim.reshape(sim.shape[0], *feats.grid)

    @staticmethod
    def gather_words(rep: ReportEmbeddings) -> tuple[Tensor, Tensor]:
        words = gather_with_grad(pad_to_global_max(rep.words, dim=1))
        mask = gather_with_grad(pad_to_global_max(rep.word_mask.float(), dim=1)).bool()
        return words, mask


class Gloria(WordRegionModel):
    family = "gloria"
    loss_config = GloriaLossConfig

    def forward(self, images: Tensor, text: TextBatch, study_ids: Tensor | None = None) -> PretrainOutput:
        cfg: GloriaLossConfig = self.config.loss
        img, rep = self.encode_images(images), self.encode_reports(text)
        words, word_mask = self.gather_words(rep)
        regions, img_g, rep_g = gather_with_grad(img.local), gather_with_grad(img.global_embedding), gather_with_grad(rep.global_embedding)
        local = gloria_local_loss(words, word_mask, regions, temp1=cfg.temp1, temp2=cfg.temp2, temp3=cfg.temp3,
                                  agg=cfg.agg, paper_scaling=cfg.paper_scaling)
        glob = gloria_global_loss(img_g, rep_g, temp3=cfg.temp3)
        loss = cfg.local_weight * local + cfg.global_weight * glob
        return PretrainOutput(loss=loss, terms={"local": local.detach(), "global": glob.detach()})

    def word_attention(self, images: Tensor, text: TextBatch) -> dict[str, Tensor | tuple[int, int]]:
        """GLoRIA's word→region attention of each image with its own report (read-only; the analyses' figures).

        ``attention`` ``[B, W, R]``: α of the training loss (GLoRIA's ``att_maps``), each word of
        the [CLS] + words set (slot 0 = [CLS]) over the regions, the double softmax with λ = temp1
        (first over the valid words per region, then over the regions); rows of invalid slots are 0.
        Also ``word_mask`` ``[B, W]``, ``word_ids`` ``[B, T]`` (token → word slot, -1 = none), ``grid``.
        """
        feats = self.image_encoder(images)
        img = self.embed_features(feats)
        rep = self.encode_reports(text)
        scores = rep.words @ img.local.transpose(1, 2)
        attention = double_softmax_weights(scores, self.config.loss.temp1, query_mask=rep.word_mask)
        return {"attention": attention, "word_mask": rep.word_mask,
                "word_ids": self.text_encoder.word_ids(text.input_ids, text.attention_mask), "grid": feats.grid}

    def similarity(self, image_emb: ImageEmbeddings, report_emb: ReportEmbeddings, chunk: int = 16) -> Tensor:
        """GLoRIA's inference similarity ``(Z_inf + G) / 2`` ``[N_img, N_txt]`` (spec §4.4).

        ``Z_inf`` attends with the caption's word tokens only: [CLS] (word slot 0) and the padded
        slots are left out of the attention's first softmax as well as the max, as GLoRIA's
        ``get_local_similarities`` slices each caption to its words before attending.
        """
        cfg: GloriaLossConfig = self.config.loss
        regions, words = image_emb.need("local", "GLoRIA's similarity"), report_emb.need("words", "GLoRIA's similarity")
        words_only = report_emb.need("word_mask", "GLoRIA's similarity").clone()
        words_only[:, 0] = False  # slot 0 is [CLS]
        # A caption with no word (only special tokens, e.g. [UNK]) matches no image: -inf, as a
        # max over an empty word set, instead of stopping a whole validation.
        has_words = words_only.any(dim=1)

        def block(i: slice, j: slice) -> Tensor:
            keep = has_words[j]
            out = regions.new_full((len(regions[i]), int(keep.numel())), float("-inf"))
            if keep.any():
                out[:, keep] = gloria_inference_local_scores(words[j][keep], words_only[j][keep], regions[i], temp1=cfg.temp1, temp2=cfg.temp2)
            return out

        local = chunked_pairwise(block, len(regions), len(words), chunk)
        glob = F.normalize(image_emb.global_embedding, dim=-1) @ F.normalize(report_emb.global_embedding, dim=-1).T
        return (local + glob) / 2
