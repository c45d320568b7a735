"""LIMITR (Dawidowicz et al., ICCV 2023): cross-modal local alignment in both directions (spec §3).

Encoders as GLoRIA (layer3 regions and layer4 global embedded into the text width; words from the
sum of the last 4 BERT layers). For every image j and report i of the batch:

- caption direction: each word attends over the regions (double softmax, lambda = 4), alignment
  a_t = l2norm(w_t ⊙ ĉ_t), aggregated by the shared self-attention SA into ŝ, score
  S_cap[j, i] = sigmoid(w_cap · ŝ + b);
- image direction: each region attends over the words, a'_r = l2norm(ĥ_r ⊙ v_r), SA, S_img[j, i].

Losses: external (cross-sample CE on 10·S), internal (within-sample word/region contrast) and
global (CE on 10·cos). The paper model (default preset ``limitr``) uses all three and the 2-D
positional encoding; the released configuration (preset ``limitr_code``) uses external + global
only and no positional encoding. Lateral views (also off in the released configuration) are not
supported: the manifests keep frontal images only.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from localign.data.text import TextBatch
from localign.distributed import gather_with_grad
from localign.losses import double_softmax_attention, limitr_external_loss, limitr_global_loss, limitr_internal_loss, masked_softmax
from localign.models.config import LimitrLossConfig, MethodConfig
from localign.models.embeddings import ImageEmbeddings, ReportEmbeddings
from localign.models.image import ImageFeatures
from localign.models.heads import SelfAttentionAggregator, limitr_pair_scores, sincos_positional_encoding_2d
from localign.models.methods.base import PretrainOutput, chunked_pairwise
from localign.models.methods.gloria import WordRegionModel
from localign.models.text import TokenStates, merge_word_pieces


class Limitr(WordRegionModel):
    family = "limitr"
    loss_config = LimitrLossConfig

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        cfg: LimitrLossConfig = config.loss
        d = self.text_dim
        self.aggregate = SelfAttentionAggregator(d, dropout=cfg.sa_dropout)
        self.score_caption = nn.Linear(d, 1)
        self.score_image = nn.Linear(d, 1)
        if cfg.pair_chunk is not None and cfg.pair_chunk < 1:
            raise ValueError(f"loss.pair_chunk must be a positive number of images or None, got {cfg.pair_chunk}")

    def embed_features(self, feats: ImageFeatures) -> ImageEmbeddings:
        out = super().embed_features(feats)
        keys = out.local
        if self.config.loss.positional_encoding:
            h, w = feats.grid
            # As the code: the encoding enters the regions used as attention queries/keys and values,
            # but not the region features multiplied element-wise in the image direction.
            keys = out.local + sincos_positional_encoding_2d(h, w, out.local.shape[-1]).to(out.local)
        return dataclasses.replace(out, keys=keys)

    def pair_scores(self, img: ImageEmbeddings, rep: ReportEmbeddings) -> tuple[Tensor, Tensor]:
        """``(S_cap, S_img)``, both ``[B_img, B_txt]`` sigmoid scores for every (image, report) pair.

        The pairs are always scored in small blocks (a few images x a few reports of similar length,
        :func:`~localign.models.heads.limitr_pair_scores`), never as ``[B_img, B_txt, T or R, D]``
        temporaries; autograd keeps the blocks' activations. With ``loss.pair_chunk`` set and
        gradients enabled, the images are in addition scored in chunks under activation
        checkpointing: the same scores, with the chunks' activations recomputed in backward instead
        of kept (dropout masks are replayed, as checkpointing restores the RNG state). That trades
        about one extra forward for memory; leave it unset unless memory is short.
        """
        chunk = self.config.loss.pair_chunk
        keys, regions = img.need("keys", "LIMITR's pair scores"), img.need("local", "LIMITR's pair scores")
        words, word_mask = rep.need("words", "LIMITR's pair scores"), rep.need("word_mask", "LIMITR's pair scores")
        n = keys.shape[0]
        if chunk is None or chunk >= n or not torch.is_grad_enabled():
            return self._pair_scores(keys, regions, words, word_mask)
        parts = [
            checkpoint(self._pair_scores, keys[i : i + chunk], regions[i : i + chunk], words, word_mask,
                       use_reentrant=False)
            for i in range(0, n, chunk)
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _pair_scores(self, keys: Tensor, regions: Tensor, words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        # keys, regions: [Bi, R, D]; words: [Bt, T, D]; word_mask: [Bt, T]. Scored in small blocks without
        # [Bi, Bt, T or R, D] tensors (heads.limitr_pair_scores); the same function as the broadcast form.
        return limitr_pair_scores(self.aggregate, self.score_caption, self.score_image, keys, regions, words, word_mask,
                                  self.config.loss.lam)

    def released_word_layout(self, states: TokenStates, text: TextBatch) -> ReportEmbeddings:
        """The released code's word set for its internal loss (bug-compatible mode).

        ``words`` ``[B, T, D]`` over **all** T input positions: [CLS], the merged words, [SEP], then
        zero rows up to T (97 with the presets' fixed-length padding, as ``word_num: 97``);
        ``word_mask`` ``[B, T]`` True on the non-[PAD] slots ([CLS], words, [SEP]), which are where
        the code's uniform weights π live. (:meth:`report_features` gives [CLS] + words only,
        padded to the batch's longest caption: the set of the external loss and retrieval.)
        """
        slots = self.text_encoder.released_slot_ids(text.input_ids, text.attention_mask)
        words, filled = merge_word_pieces(states.tokens, slots, n_words=text.input_ids.shape[1])
        return ReportEmbeddings(words=words, word_mask=filled)

    def internal_terms(self, img: ImageEmbeddings, rep: ReportEmbeddings) -> dict[str, Tensor]:
        """Within-sample attention contexts and weights for the internal loss (spec §3.3).

        ``rep`` is the word set the loss runs on: :meth:`released_word_layout` in bug-compatible
        mode, the [CLS] + words set otherwise.
        """
        cfg: LimitrLossConfig = self.config.loss
        bug = cfg.bug_compatible_internal_mask
        # The released code passes its internal loss the region embeddings without the positional
        # encoding (the encoding is added inside its pair scoring only); bug-compatible mode does too.
        keys, regions = (img.local if bug else img.keys), img.local
        words, word_mask = rep.words, rep.word_mask
        b, r = regions.shape[:2]
        # ĉ_t: each word over its own image's regions (the code attends with every position, pads included).
        context_words, _ = double_softmax_attention(words, keys, lam=cfg.lam, query_mask=None if bug else word_mask)
        # ĥ_r: each region over its own report's words, pads masked in the softmax over words.
        per_word = torch.softmax(keys @ words.transpose(1, 2), dim=1)  # first softmax: over regions, per word
        if bug:
            # The released code expands the pad mask with mask.repeat(R, 1) against rows ordered (b, r):
            # row (b, r) gets the mask of caption (b * R + r) mod B.
            idx = (torch.arange(b, device=words.device)[:, None] * r + torch.arange(r, device=words.device)[None, :]) % b
            key_valid = word_mask[idx]  # [B, R, T]
        else:
            key_valid = word_mask[:, None, :]
        context_regions = masked_softmax(cfg.lam * per_word, key_valid, dim=-1) @ words  # [B, R, D]
        # The code l2-normalises these alignments over the region axis before the SA weights (spec §3.3).
        alignment = F.normalize(context_regions * regions, dim=1)
        _, region_weights = self.aggregate(alignment)
        word_weights = word_mask.to(words.dtype) / word_mask.sum(1, keepdim=True).clamp_min(1)
        return {"context_words": context_words, "word_weights": word_weights,
                "context_regions": context_regions, "region_weights": region_weights}

    def forward(self, images: Tensor, text: TextBatch, study_ids: Tensor | None = None) -> PretrainOutput:
        cfg: LimitrLossConfig = self.config.loss
        states = self.token_states(text)
        img, rep = self.encode_images(images), self.report_features(states, text)
        terms: dict[str, Tensor] = {}
        total = images.new_zeros(())
        if cfg.global_weight > 0:
            g = limitr_global_loss(gather_with_grad(img.global_embedding), gather_with_grad(rep.global_embedding), temperature=cfg.temperature)
            terms["global"] = g.detach()
            total = total + cfg.global_weight * g
        if cfg.external_weight > 0:
            words, word_mask = self.gather_words(rep)
            gathered_img = ImageEmbeddings(local=gather_with_grad(img.local), keys=gather_with_grad(img.keys))
            s_cap, s_img = self.pair_scores(gathered_img, ReportEmbeddings(words=words, word_mask=word_mask))
            ext = limitr_external_loss(s_cap, s_img, scale=1.0 / cfg.temperature)
            terms["external"] = ext.detach()
            total = total + cfg.external_weight * ext
        if cfg.internal_weight > 0:
            bug = cfg.bug_compatible_internal_mask
            own = self.released_word_layout(states, text) if bug else rep
            t = self.internal_terms(img, own)  # within-sample: no gathering
            # Bug-compatible: every position of the released layout is a candidate (pads included).
            internal = limitr_internal_loss(own.words, t["context_words"], t["word_weights"], img.local,
                                            t["context_regions"], t["region_weights"], temperature=cfg.temperature,
                                            word_mask=None if bug else own.word_mask)
            terms["internal"] = internal.detach()
            total = total + cfg.internal_weight * internal
        return PretrainOutput(loss=total, terms=terms)

    def pair_attention(self, images: Tensor, text: TextBatch) -> dict[str, Tensor | tuple[int, int]]:
        """LIMITR's attention weights for each image with its own report (read-only; the analyses' figures).

        The same quantities :meth:`pair_scores` computes for the pair (image b, report b), over the
        word set of the external loss and retrieval ([CLS] + words, slot 0 = [CLS]):

        - ``word_to_region`` ``[B, W, R]``: α, each word over the regions (caption direction; the
          double softmax, first over the valid words per region, then ×λ over the regions); rows of
          invalid slots are 0;
        - ``region_to_word`` ``[B, R, W]``: β, each region over the valid words (image direction,
          first softmax over the regions per word): the weights w_i[j] of the textual weighted
          representation m_i = Σ_j w_i[j] t_j (LIMITR supplementary Fig. 1);
        - ``word_weights`` ``[B, W]``: the SA aggregation weights q_t of the caption direction (0 on
          invalid slots); ``region_weights`` ``[B, R]``: SA weights of the image direction;
        - ``score_caption``, ``score_image`` ``[B]``: S_cap and S_img of the pair (equal to the
          diagonals of :meth:`pair_scores`);
        - ``word_mask`` ``[B, W]``, ``word_ids`` ``[B, T]`` (token → word slot, -1 = none), ``grid``.
        """
        cfg: LimitrLossConfig = self.config.loss
        feats = self.image_encoder(images)
        img = self.embed_features(feats)
        states = self.token_states(text)
        rep = self.report_features(states, text)
        keys, regions, words, mask = img.keys, img.local, rep.words, rep.word_mask
        s = words @ keys.transpose(1, 2)  # [B, W, R]
        alpha = torch.softmax(cfg.lam * masked_softmax(s, mask[:, :, None], dim=1), dim=-1) * mask[:, :, None]
        a_cap = F.normalize(words * (alpha @ keys), dim=-1, eps=1e-8)
        cap, q_words = self.aggregate(a_cap, mask)
        beta = masked_softmax(cfg.lam * torch.softmax(s.transpose(1, 2), dim=1), mask[:, None, :], dim=-1)  # [B, R, W]
        a_img = F.normalize((beta @ words) * regions, dim=-1, eps=1e-8)
        im, q_regions = self.aggregate(a_img)
        return {"word_to_region": alpha, "region_to_word": beta, "word_weights": q_words.masked_fill(~mask, 0.0),
                "region_weights": q_regions, "score_caption": torch.sigmoid(self.score_caption(cap)).squeeze(-1),
                "score_image": torch.sigmoid(self.score_image(im)).squeeze(-1), "word_mask": mask,
                "word_ids": self.text_encoder.word_ids(text.input_ids, text.attention_mask), "grid": feats.grid}

    def similarity(self, image_emb: ImageEmbeddings, report_emb: ReportEmbeddings, chunk: int = 16) -> Tensor:
        """LIMITR's retrieval score S = ½[w_ext·½(S_cap + S_img) + w_glob·G] (spec §3.3)."""
        cfg: LimitrLossConfig = self.config.loss

        def block(i: slice, j: slice) -> Tensor:
            s_cap, s_img = self.pair_scores(image_emb[i], report_emb[j])
            g = F.normalize(image_emb.global_embedding[i], dim=-1) @ F.normalize(report_emb.global_embedding[j], dim=-1).T
            return 0.5 * (cfg.external_weight * 0.5 * (s_cap + s_img) + cfg.global_weight * g)

        return chunked_pairwise(block, len(image_emb), len(report_emb), chunk)
