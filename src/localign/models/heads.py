"""Parametric heads shared by the methods: projections, attention pooling, alignment, critics.

Everything here holds parameters; the objectives that consume the outputs are pure functions in
:mod:`localign.losses`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from localign.losses.attention import double_softmax_attention


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


# --------------------------------------------------------------------------------------------------
# MI critic (Liao et al.)
# --------------------------------------------------------------------------------------------------


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
            h = ha[:, None, :, None, :] + hb[None, :, None, :, :]
            return self.rest(h).squeeze(-1)
        if b_mask.shape != b.shape[:2] or b_mask.dtype != torch.bool:
            raise ValueError(f"b_mask must be a bool [B', M] = {tuple(b.shape[:2])}, got {b_mask.dtype} {tuple(b_mask.shape)}")
        hb = F.linear(b[b_mask], w_b, self.first.bias)  # [S, H], the S real sentences
        real = self.rest(ha[:, :, None, :] + hb[None, None, :, :]).squeeze(-1)  # [B, N, S]
        n_b, n_m = b_mask.shape
        flat = real.new_zeros(n_b * n_m, a.shape[0], a.shape[1])
        flat = flat.index_put((b_mask.reshape(-1).nonzero().squeeze(1),), real.permute(2, 0, 1))
        return flat.reshape(n_b, n_m, a.shape[0], a.shape[1]).permute(2, 0, 3, 1)
