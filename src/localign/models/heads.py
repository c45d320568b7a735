"""Parametric heads shared by the methods: projections, attention pooling, alignment, critics.

Everything here holds parameters; the objectives that consume the outputs are pure functions in
:mod:`localign.losses`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from localign.losses.attention import double_softmax_attention, masked_softmax


# --------------------------------------------------------------------------------------------------
# Projection heads (LoVT f, f-bar; ConVIRT without BN)
# --------------------------------------------------------------------------------------------------


class ProjectionHead(nn.Module):
    """Linear - (BatchNorm) - ReLU - Linear, applied per vector or per position.

    For a sequence ``[B, N, D]`` the BatchNorm statistics are pooled over batch x positions (LoVT's
    1x1-conv ``SequenceMLP``), padded positions included: LoVT feeds padded sentence slots as zero
    rows and they enter the statistics. There is no normalisation on the output.
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, norm: str | None = "batch") -> None:
        super().__init__()
        if norm not in ("batch", None):
            raise ValueError(f"norm must be 'batch' or None, got {norm!r}")
        self.fc1 = nn.Linear(d_in, d_hidden, bias=norm is None)  # a bias before BN is redundant
        self.norm = nn.BatchNorm1d(d_hidden) if norm == "batch" else nn.Identity()
        self.fc2 = nn.Linear(d_hidden, d_out)
        # LoVT: Kaiming-normal (fan_out; relu for the first layer, linear for the second), zero biases.
        nn.init.kaiming_normal_(self.fc1.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.fc2.weight, mode="fan_out", nonlinearity="linear")
        nn.init.zeros_(self.fc2.bias)
        if self.fc1.bias is not None:
            nn.init.zeros_(self.fc1.bias)

    def forward(self, x: Tensor) -> Tensor:
        """:param x: ``[B, D_in]`` or ``[B, N, D_in]`` → same leading shape with ``D_out``."""
        lead = x.shape[:-1]
        h = self.fc1(x.reshape(-1, x.shape[-1]))
        h = F.relu(self.norm(h))
        return self.fc2(h).reshape(*lead, -1)


# --------------------------------------------------------------------------------------------------
# Attention pooling (LoVT "avgpool_attention")
# --------------------------------------------------------------------------------------------------


class AttentionPool(nn.Module):
    """Multi-head attention pooling with the mean as query; returns the head-averaged weights.

    LoVT (spec §2.2.2): the query is ``mean`` over **all** slots with padded slots zero-filled, i.e.
    (M_i / M_max) x the true mean; keys and values are the local features with ``key_padding_mask``.
    The returned weights ``[B, N]`` sum to 1 over valid positions and are 0 on padding; LoVT uses
    them (detached) as local weights.
    """

    def __init__(self, d: int, num_heads: int = 8) -> None:
        super().__init__()
        if d % num_heads != 0:
            raise ValueError(f"feature size {d} is not divisible by num_heads {num_heads}")
        self.attention = nn.MultiheadAttention(d, num_heads, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:param x: ``[B, N, D]``; :param mask: ``[B, N]`` bool (True = valid) → ``([B, D], [B, N])``."""
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        x = x.masked_fill(~mask[..., None], 0.0)
        query = x.mean(dim=1, keepdim=True)  # padded slots count in N: LoVT's quirk, kept on purpose
        pooled, weights = self.attention(query, x, x, key_padding_mask=~mask, need_weights=True, average_attn_weights=True)
        return pooled[:, 0], weights[:, 0]

    def project_values(self, x: Tensor) -> Tensor:
        """``[B, N, D]``: what each position contributes to the pooled vector if it took all the weight."""
        d = x.shape[-1]
        w_v = self.attention.in_proj_weight[2 * d :]
        b_v = self.attention.in_proj_bias[2 * d :]
        return self.attention.out_proj(F.linear(x, w_v, b_v))


# --------------------------------------------------------------------------------------------------
# LoVT alignment model (spec §2.3)
# --------------------------------------------------------------------------------------------------


class LoVTAlignment(nn.Module):
    """LoVT's cross-modal alignment model, both directions, single head.

    One **shared** key projection kappa serves as query and key for both modalities (a symmetric
    bilinear similarity), and the value projection nu, output projection W_o and one BatchNorm are
    shared by both directions. Attention is within a pair only.

    - report→image (one output per region): alpha = softmax over valid sentences of S[k, m];
    - image→report (one output per sentence): beta = softmax over regions of S[k, m]^T, zeroed on
      padded sentences (whose output is then BN(b_o); those rows enter the BN statistics, as LoVT).
    """

    def __init__(self, d: int = 512) -> None:
        super().__init__()
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.norm = nn.BatchNorm1d(d)
        self.scale = 1.0 / math.sqrt(d)

    def _finish(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return self.norm(self.out(x).reshape(b * n, d)).reshape(b, n, d)

    def forward(self, z_image: Tensor, z_report: Tensor, sentence_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """
        :param z_image: ``[B, K, D]`` projected regions
        :param z_report: ``[B, M, D]`` projected sentences
        :param sentence_mask: ``[B, M]`` bool
        :return: ``(report_to_image [B, K, D], image_to_report [B, M, D], scores [B, K, M])``
        """
        if z_image.shape[0] != z_report.shape[0] or z_image.shape[-1] != z_report.shape[-1]:
            raise ValueError(f"z_image {tuple(z_image.shape)} and z_report {tuple(z_report.shape)} disagree on B or D")
        if sentence_mask.shape != z_report.shape[:2]:
            raise ValueError(f"sentence_mask {tuple(sentence_mask.shape)} does not match z_report {tuple(z_report.shape)}")
        k_img, k_rep = self.key(z_image), self.key(z_report)
        scores = torch.einsum("bkd,bmd->bkm", k_img, k_rep) * self.scale
        alpha = scores.masked_fill(~sentence_mask[:, None, :], float("-inf")).softmax(dim=-1)
        report_to_image = self._finish(alpha @ self.value(z_report))
        beta = scores.transpose(1, 2).softmax(dim=-1) * sentence_mask[..., None]
        image_to_report = self._finish(beta @ self.value(z_image))
        return report_to_image, image_to_report, scores


# --------------------------------------------------------------------------------------------------
# LIMITR components (spec §3.2, §3.4)
# --------------------------------------------------------------------------------------------------


class SelfAttentionAggregator(nn.Module):
    """LIMITR's ``SA`` aggregation of local alignment vectors into one vector per pair.

    With ā the mean of the valid alignments: u_t = tanh(W_l a_t), g = tanh(W_g ā) (each with
    dropout), q_t = softmax_t(w_c · (u_t ⊙ g)), output = l2norm(Σ_t q_t a_t). Shared by both
    alignment directions; weights init U(±sqrt(6/(fan_in+fan_out))), zero biases (as the code).
    """

    def __init__(self, d: int, dropout: float = 0.4) -> None:
        super().__init__()
        self.local = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Dropout(dropout))
        self.glob = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Dropout(dropout))
        self.common = nn.Linear(d, 1)
        for lin in (self.local[0], self.glob[0], self.common):
            bound = math.sqrt(6.0 / (lin.in_features + lin.out_features))
            nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(lin.bias)

    def forward(self, a: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:param a: ``[..., T, D]``; :param mask: ``[..., T]`` bool → ``(aggregated [..., D], weights [..., T])``."""
        if mask is None:
            mask = torch.ones(a.shape[:-1], dtype=torch.bool, device=a.device)
        w = mask.to(a.dtype)[..., None]
        mean = (a * w).sum(-2, keepdim=True) / w.sum(-2, keepdim=True).clamp_min(1.0)
        logits = self.common(self.local(a) * self.glob(mean)).squeeze(-1)
        q = logits.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return F.normalize((q[..., None] * a).sum(-2), dim=-1), q

    def aggregate(self, a: Tensor, mask: Tensor | None = None) -> Tensor:
        """:meth:`forward`'s aggregated vectors, for a flat batch ``a [P, N, D]`` (``mask [P, N]``).

        The same function (equal up to float rounding), with the reductions over N and the
        ``w_c · (u_t ⊙ g)`` logits as batched matrix products, so that no ``[P, N, D]`` temporary
        beyond the alignments and ``u`` is built (the pair-scoring path of LIMITR).
        """
        if mask is None:
            mean = a.mean(dim=-2)
        else:
            w = mask.to(a.dtype)
            mean = torch.bmm(w[:, None, :], a).squeeze(1) / w.sum(-1, keepdim=True).clamp_min(1.0)
        u = self.local(a)  # [P, N, D]
        g = self.glob(mean) * self.common.weight[0]  # [P, D]
        logits = torch.baddbmm(self.common.bias.expand(u.shape[0], u.shape[1], 1), u, g[:, :, None]).squeeze(-1)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        q = logits.softmax(dim=-1)
        return F.normalize(torch.bmm(q[:, None, :], a).squeeze(1), dim=-1)


def sincos_positional_encoding_2d(h: int, w: int, d: int) -> Tensor:
    """LIMITR's fixed 2-D sin-cos encoding ``[h*w, d]`` (row-major), base 10000.

    With omega_k = 10000^(-k / (d/4 - 1)), PE = [sin(x omega), cos(x omega), sin(y omega), cos(y omega)].
    """
    if d % 4 != 0:
        raise ValueError(f"the 2-D sin-cos encoding needs d divisible by 4, got {d}")
    quarter = d // 4
    omega = 10000.0 ** (-torch.arange(quarter, dtype=torch.float64) / max(quarter - 1, 1))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    x, y = xs.reshape(-1, 1) * omega, ys.reshape(-1, 1) * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).float()


def limitr_alignment(queries: Tensor, keys: Tensor, features: Tensor, lam: float, key_mask: Tensor | None = None, query_mask: Tensor | None = None) -> Tensor:
    """LIMITR's local alignment vectors a = l2norm(features ⊙ context).

    :param queries: ``[..., Q, D]`` (e.g. words), attending over
    :param keys: ``[..., K, D]`` (e.g. regions) with the double softmax of GLoRIA/LIMITR
    :param features: ``[..., Q, D]`` the query-side features multiplied element-wise with the context
    :return: ``[..., Q, D]``
    """
    context, _ = double_softmax_attention(queries, keys, lam=lam, key_mask=key_mask, query_mask=query_mask)
    return F.normalize(features * context, dim=-1, eps=1e-8)


def _normalized_product(x: Tensor, y: Tensor, eps: float) -> Tensor:
    """``F.normalize(x * y, dim=-1, eps=eps)`` (same function)."""
    prod = x * y
    return prod / torch.linalg.vector_norm(prod, dim=-1, keepdim=True).clamp_min(eps)


def _limitr_pair_block(aggregate: SelfAttentionAggregator, keys: Tensor, regions: Tensor, words: Tensor, word_mask: Tensor,
                       lam: float) -> tuple[Tensor, Tensor]:
    """SA outputs of both directions for ``c`` images x ``g`` reports: ``([c, g, D], [c, g, D])``."""
    c, r, d = keys.shape
    g, t = word_mask.shape
    # One product of dot products serves both directions: s[i, j, t, r] = words[j, t] . keys[i, r].
    s = torch.matmul(words.reshape(1, g * t, d), keys.transpose(1, 2)).view(c, g, t, r)
    # Caption direction (queries = words, keys = regions): softmax over the valid words, then over regions.
    word_valid = word_mask[None, :, :, None]
    per_key = masked_softmax(s, word_valid, dim=2)
    attn = torch.softmax(lam * per_key, dim=-1) * word_valid
    context = torch.bmm(attn.view(c, g * t, r), keys).view(c, g, t, d)
    a_cap = _normalized_product(words[None], context, 1e-8)
    s_cap = aggregate.aggregate(a_cap.view(c * g, t, d), word_mask[None].expand(c, -1, -1).reshape(c * g, t))
    # Image direction (queries = regions, keys = words), laid out [g, c, R, T] so that the context is one
    # batched product per report: softmax over the regions, then over the valid words.
    per_key = torch.softmax(s.permute(1, 0, 3, 2), dim=2)
    attn = masked_softmax(lam * per_key, word_mask[:, None, None, :], dim=-1)
    context = torch.bmm(attn.reshape(g, c * r, t), words).view(g, c, r, d)
    a_img = _normalized_product(context, regions[None], 1e-8)
    s_img = aggregate.aggregate(a_img.view(g * c, r, d)).view(g, c, d).transpose(0, 1)
    return s_cap.view(c, g, d), s_img


#: Elements of one block's ``[images, reports, T or R, D]`` tensors in the pair scoring: small enough
#: for the allocator to reuse them (glibc serves allocations over 32 MB with fresh pages every time).
PAIR_BLOCK_ELEMENTS = 1 << 21


def limitr_pair_scores(aggregate: SelfAttentionAggregator, score_caption: nn.Linear, score_image: nn.Linear, keys: Tensor,
                       regions: Tensor, words: Tensor, word_mask: Tensor, lam: float,
                       block_elements: int = PAIR_BLOCK_ELEMENTS) -> tuple[Tensor, Tensor]:
    """LIMITR's ``(S_cap, S_img)`` ``[B_img, B_txt]`` for every (image, report) pair (spec §3.2).

    For image i and report j: caption direction a_t = l2norm(w_t ⊙ ĉ_t) (word t attending over the
    regions of i, double softmax), image direction a'_r = l2norm(ĥ_r ⊙ v_r) (region r attending over
    the valid words of j), each aggregated by the shared ``aggregate`` (SA) and scored by
    ``sigmoid(Linear(D→1))``. The same function as :func:`limitr_alignment` and
    :meth:`SelfAttentionAggregator.forward` on the broadcast ``[B_img, B_txt, T or R, D]`` tensors,
    computed without them: the words of each report are compacted (padding and masked positions
    dropped, which changes nothing since both directions treat them as a set), the reports are
    sorted by length and scored in blocks of a few images x a few reports of similar length, each
    block padded only to its own longest report. The dot products are shared by the two directions.
    Dropout (if active) draws other masks than the broadcast computation did: same distribution.

    :param keys: ``[B_img, R, D]`` regions used as attention queries/keys (positional encoding added)
    :param regions: ``[B_img, R, D]`` regions multiplied element-wise in the image direction
    :param words: ``[B_txt, T, D]``
    :param word_mask: ``[B_txt, T]`` bool, True = a word that takes part
    :param block_elements: target size of one block's ``[c, g, T or R, D]`` tensors
    """
    bi, r, d = keys.shape
    bt = words.shape[0]
    lengths = word_mask.sum(1)
    # Compact: the valid words of each report first (stable: in their order), then sort reports by length.
    positions = torch.sort((~word_mask).to(torch.uint8), dim=1, stable=True).indices
    order = torch.sort(lengths, stable=True).indices
    lengths_sorted = lengths[order].tolist()
    group = max(1, min(bt, 8))
    cap_blocks, img_blocks, columns = [], [], []
    for j0 in range(0, bt, group):
        cols = order[j0 : j0 + group]
        t = max(1, lengths_sorted[min(j0 + group, bt) - 1])
        pos = positions[cols, :t]
        w = words[cols[:, None], pos]  # [g, t, D]
        m = torch.arange(t, device=word_mask.device)[None, :] < lengths[cols, None]
        chunk = max(1, block_elements // (len(cols) * max(t, r) * d))
        caps, imgs = [], []
        for i0 in range(0, bi, chunk):
            sc, si = _limitr_pair_block(aggregate, keys[i0 : i0 + chunk], regions[i0 : i0 + chunk], w, m, lam)
            caps.append(sc)
            imgs.append(si)
        cap_blocks.append(torch.cat(caps))
        img_blocks.append(torch.cat(imgs))
        columns.append(cols)
    inverse = torch.argsort(torch.cat(columns))
    s_cap = torch.cat(cap_blocks, dim=1)[:, inverse]
    s_img = torch.cat(img_blocks, dim=1)[:, inverse]
    return torch.sigmoid(score_caption(s_cap)).squeeze(-1), torch.sigmoid(score_image(s_img)).squeeze(-1)


# --------------------------------------------------------------------------------------------------
# MI critic (Liao et al.)
# --------------------------------------------------------------------------------------------------


#: Hidden activations (floats) of one block of pairs in :class:`_PairMLP` (16 MB at float32).
CRITIC_BLOCK_ELEMENTS = 1 << 22


class _PairMLP(torch.autograd.Function):
    """``rest(relu(ha[p] + hb[q]))`` for every row p of ``ha`` and every row q of ``hb``, in blocks of rows.

    ``rest`` is ``[Linear, ReLU] * k, Linear(→1)`` given as its weights and biases. Forward and
    backward run block by block, so the ``[P, Q, H]`` activations never exist at once; only the
    outputs of the inner hidden layers are kept for backward, the first hidden layer
    ``relu(ha + hb)`` (an element-wise broadcast, no matrix product) is recomputed. Values and
    gradients are those of autograd through the same layers, up to float rounding.
    """

    @staticmethod
    def _rows(n_q: int, width: int) -> int:
        return max(1, CRITIC_BLOCK_ELEMENTS // max(1, n_q * width))

    @staticmethod
    def forward(ctx, ha: Tensor, hb: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        weights, biases = params[0::2], params[1::2]
        n_p, n_q = ha.shape[0], hb.shape[0]
        rows = _PairMLP._rows(n_q, max(w.shape[1] for w in weights))
        save = any(ctx.needs_input_grad)
        out = ha.new_empty(n_p, n_q)
        kept: list[list[Tensor]] = []
        for p0 in range(0, n_p, rows):
            h = torch.relu_(ha[p0 : p0 + rows, None, :] + hb[None, :, :]).reshape(-1, ha.shape[1])
            inner = []
            for w, b in zip(weights[:-1], biases[:-1]):
                h = torch.relu_(torch.addmm(b, h, w.t()))
                inner.append(h)
            out[p0 : p0 + rows] = torch.addmm(biases[-1], h, weights[-1].t()).view(-1, n_q)
            kept.append(inner)
        ctx.rows = rows
        ctx.n_inner = len(weights) - 1
        flat = [t for block in kept for t in block] if save else []
        ctx.save_for_backward(ha, hb, *params, *flat)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        ha, hb, *rest = ctx.saved_tensors
        n_params = 2 * (ctx.n_inner + 1)
        params, flat = rest[:n_params], rest[n_params:]
        weights, biases = params[0::2], params[1::2]
        rows, n_inner = ctx.rows, ctx.n_inner
        n_p, n_q = ha.shape[0], hb.shape[0]
        grad_ha = torch.zeros_like(ha)
        grad_hb = torch.zeros_like(hb)
        grad_w = [torch.zeros_like(w) for w in weights]
        grad_b = [torch.zeros_like(b) for b in biases]
        for k, p0 in enumerate(range(0, n_p, rows)):
            inner = flat[k * n_inner : (k + 1) * n_inner]
            h0 = torch.relu_(ha[p0 : p0 + rows, None, :] + hb[None, :, :]).reshape(-1, ha.shape[1])
            inputs = [h0, *inner]  # the input of each Linear
            g = grad_out[p0 : p0 + rows].reshape(-1, 1)
            for layer in range(n_inner, -1, -1):
                grad_w[layer].addmm_(g.t(), inputs[layer])
                grad_b[layer].add_(g.sum(0))
                g = g @ weights[layer]
                g = g.masked_fill_(inputs[layer] <= 0, 0.0)  # ReLU in front of this Linear
            g = g.view(-1, n_q, ha.shape[1])
            grad_ha[p0 : p0 + rows] = g.sum(1)
            grad_hb.add_(g.sum(0))
        grads = [t for pair in zip(grad_w, grad_b) for t in pair]
        return (grad_ha, grad_hb, *grads)


class ConcatCritic(nn.Module):
    """The MI discriminator: an MLP on the concatenation ``[z_image; z_text]`` → one score.

    Liao et al.: 1280→1024→512→1 (local) and 1536→1024→512→1 (global), ReLU between layers. The
    first layer is a Linear on the concatenation; for all-pairs scoring it is evaluated as
    W_a a + W_b b + c (the same function) so that the B x B pairs never materialise concatenations.
    """

    def __init__(self, d_a: int, d_b: int, hidden: tuple[int, ...] = (1024, 512)) -> None:
        super().__init__()
        if len(hidden) == 0:
            raise ValueError("the critic needs at least one hidden layer")
        self.d_a, self.d_b = d_a, d_b
        self.first = nn.Linear(d_a + d_b, hidden[0])
        layers: list[nn.Module] = []
        for h_in, h_out in zip(hidden[:-1], hidden[1:]):
            layers += [nn.ReLU(inplace=True), nn.Linear(h_in, h_out)]
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden[-1], 1)]
        self.rest = nn.Sequential(*layers)

    def _split(self) -> tuple[Tensor, Tensor]:
        return self.first.weight[:, : self.d_a], self.first.weight[:, self.d_a :]

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Paired scores: ``a [..., D_a]``, ``b [..., D_b]`` (broadcastable) → ``[...]``."""
        w_a, w_b = self._split()
        return self.rest(F.linear(a, w_a) + F.linear(b, w_b, self.first.bias)).squeeze(-1)

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        """All pairs of global features: ``a [B, D_a]``, ``b [B', D_b]`` → scores ``[B, B']``."""
        w_a, w_b = self._split()
        h = F.linear(a, w_a)[:, None, :] + F.linear(b, w_b, self.first.bias)[None, :, :]
        return self.rest(h).squeeze(-1)

    def _pair_mlp(self, ha: Tensor, hb: Tensor) -> Tensor:
        """``rest(ha[p] + hb[q])`` for all rows: ``ha [P, H]``, ``hb [Q, H]`` (first layer applied) → ``[P, Q]``."""
        linears = [m for m in self.rest if isinstance(m, nn.Linear)]
        if len(linears) != len(self.rest) // 2 + len(self.rest) % 2 or any(
                not isinstance(m, nn.ReLU) for m in self.rest[0::2]):
            raise RuntimeError("the critic's layers were changed; _PairMLP expects [ReLU, Linear] * k")
        params = [t for lin in linears for t in (lin.weight, lin.bias)]
        # The hand-written backward accumulates into buffers of the weights' dtype: under mixed
        # precision the blocked MLP runs in that dtype (fp32) with autocast off, like a loss.
        dtype = params[0].dtype
        with torch.autocast(device_type=ha.device.type, enabled=False):
            return _PairMLP.apply(ha.to(dtype), hb.to(dtype), *params)

    def pairwise_local(self, a: Tensor, b: Tensor, b_mask: Tensor | None = None) -> Tensor:
        """All pairs of local features: ``a [B, N, D_a]`` (regions), ``b [B', M, D_b]`` (sentences)
        → scores ``[B, B', N, M]`` with scores[i, j, n, m] = f(a_{i,n}, b_{j,m}).

        :param b_mask: ``[B', M]`` bool, True = real sentence. When given, only real sentences go
            through the MLP and padded slots score exactly 0 (the local objective ignores them).
            Reports are padded to the longest one of the batch, so this skips a large share of the
            ``B·B'·N·M`` critic evaluations that dominate local MI's step time.
        """
        w_a, w_b = self._split()
        ha = F.linear(a, w_a)  # [B, N, H]
        if b_mask is None:
            hb = F.linear(b, w_b, self.first.bias)  # [B', M, H]
            flat = self._pair_mlp(ha.reshape(-1, ha.shape[-1]), hb.reshape(-1, hb.shape[-1]))  # [B*N, B'*M]
            return flat.view(a.shape[0], a.shape[1], b.shape[0], b.shape[1]).permute(0, 2, 1, 3)
        if b_mask.shape != b.shape[:2] or b_mask.dtype != torch.bool:
            raise ValueError(f"b_mask must be a bool [B', M] = {tuple(b.shape[:2])}, got {b_mask.dtype} {tuple(b_mask.shape)}")
        hb = F.linear(b[b_mask], w_b, self.first.bias)  # [S, H], the S real sentences
        real = self._pair_mlp(ha.reshape(-1, ha.shape[-1]), hb).view(a.shape[0], a.shape[1], -1)  # [B, N, S]
        n_b, n_m = b_mask.shape
        flat = real.new_zeros(n_b * n_m, a.shape[0], a.shape[1])
        flat = flat.index_put((b_mask.reshape(-1).nonzero().squeeze(1),), real.permute(2, 0, 1))
        return flat.reshape(n_b, n_m, a.shape[0], a.shape[1]).permute(2, 0, 3, 1)
