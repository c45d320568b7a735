"""Before/after CPU timings of the pair scoring of LIMITR and local MI (a script, not a test).

Both objectives score every image-report pair of a batch at region level. ``before`` is a copy of
the broadcast computation as of a53f9dd (``[B, B, T or R, D]`` tensors for LIMITR; the critic's MLP
through autograd on ``[B, N, S, H]`` for local MI); ``after`` is the library's blocked
implementation (``localign.models.heads.limitr_pair_scores``, ``ConcatCritic.pairwise_local``).
Each run is forward + backward w.r.t. the inputs and every parameter, ``before`` and ``after``
interleaved in one process, median of ``--repeats`` after a warm-up; "extra peak" is the peak
resident memory during a run above the resident memory before it (sampled every 2 ms).

Sizes: demo (ResNet-18 at 128 px, MiniLM): LIMITR B=32, 8x8 regions, 40-60 words padded to 60,
D=384; local MI B=32, 4x4 regions of 512 channels, 6-8 sentences padded to 8, D=384, critic
1024-512-1 and the CPC objective of Eq. 5. Paper: LIMITR B=48, 19x19 regions, up to 97 tokens (20-97),
D=768, both in checkpointed chunks of 4 images (``loss.pair_chunk = 4``: the broadcast form does not
fit in 24 GB otherwise); local MI B=32, 4x4 regions, 4-12 sentences padded to 12, D=768.

Usage: ``python benchmarks/bench_pair_scoring.py [--threads 1] [--repeats 3] [--sizes demo paper] [--out x.csv]``.
"""

from __future__ import annotations

import argparse
import ctypes
import csv
import gc
import os
import statistics
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from localign.losses import local_mi_objective
from localign.models.heads import ConcatCritic, SelfAttentionAggregator, limitr_alignment, limitr_pair_scores


def limitr_before(aggregate, score_caption, score_image, keys, regions, words, word_mask, lam):
    """Copy of ``Limitr._pair_scores`` at a53f9dd."""
    bi, bt = keys.shape[0], words.shape[0]
    w = words[None].expand(bi, -1, -1, -1)
    k = keys[:, None].expand(-1, bt, -1, -1)
    qmask = word_mask[None].expand(bi, -1, -1)
    s_cap, _ = aggregate(limitr_alignment(w, k, w, lam, query_mask=qmask), qmask)
    v = regions[:, None].expand(-1, bt, -1, -1)
    s_img, _ = aggregate(limitr_alignment(k, w, v, lam, key_mask=qmask))
    return torch.sigmoid(score_caption(s_cap)).squeeze(-1), torch.sigmoid(score_image(s_img)).squeeze(-1)


def critic_before(critic: ConcatCritic, a: Tensor, b: Tensor, b_mask: Tensor) -> Tensor:
    """Copy of ``ConcatCritic.pairwise_local`` (with a sentence mask) at a53f9dd."""
    w_a, w_b = critic._split()
    ha = F.linear(a, w_a)
    hb = F.linear(b[b_mask], w_b, critic.first.bias)
    real = critic.rest(ha[:, :, None, :] + hb[None, None, :, :]).squeeze(-1)
    n_b, n_m = b_mask.shape
    flat = real.new_zeros(n_b * n_m, a.shape[0], a.shape[1])
    flat = flat.index_put((b_mask.reshape(-1).nonzero().squeeze(1),), real.permute(2, 0, 1))
    return flat.reshape(n_b, n_m, a.shape[0], a.shape[1]).permute(2, 0, 3, 1)


_LIBC = ctypes.CDLL("libc.so.6")


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measured(step) -> tuple[float, float]:
    """(seconds, extra peak RSS in GB) of ``step()``."""
    gc.collect()
    _LIBC.malloc_trim(0)  # give freed heap back, so that the peak is this step's own
    base, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    return seconds, max(0, max(peak[0], _rss()) - base) / 1e9


def _lengths_mask(gen: torch.Generator, batch: int, length: int, low: int) -> Tensor:
    lengths = torch.randint(low, length + 1, (batch,), generator=gen)
    return torch.arange(length)[None] < lengths[:, None]


def limitr_case(batch: int, grid: int, words: int, low: int, dim: int, chunk: int | None):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    aggregate = SelfAttentionAggregator(dim, dropout=0.0)
    heads = nn.Linear(dim, 1), nn.Linear(dim, 1)
    params = [p for m in (aggregate, *heads) for p in m.parameters()]
    r = grid * grid
    inputs = [0.1 * torch.randn(batch, n, dim, generator=gen) for n in (r, r, words)]
    mask = _lengths_mask(gen, batch, words, low)

    def make(fn):
        def score(keys, regions, w):
            return fn(aggregate, *heads, keys, regions, w, mask, 4.0)

        def step() -> None:
            leaves = [t.clone().requires_grad_() for t in inputs]
            if chunk is None:
                s_cap, s_img = score(*leaves)
            else:
                parts = [checkpoint(score, leaves[0][i : i + chunk], leaves[1][i : i + chunk], leaves[2], use_reentrant=False)
                         for i in range(0, batch, chunk)]
                s_cap, s_img = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            loss = s_cap.sum() + s_img.square().sum()
            torch.autograd.grad(loss, leaves + params)

        return step

    return make(limitr_before), make(limitr_pair_scores)


def local_mi_case(batch: int, regions: int, sentences: int, low: int, d_image: int, d_text: int):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    critic = ConcatCritic(d_image, d_text, (1024, 512))
    params = list(critic.parameters())
    a, b = torch.randn(batch, regions, d_image, generator=gen), torch.randn(batch, sentences, d_text, generator=gen)
    mask = _lengths_mask(gen, batch, sentences, low)

    def make(fn):
        def step() -> None:
            leaves = [a.clone().requires_grad_(), b.clone().requires_grad_()]
            mi = local_mi_objective(fn(critic, *leaves, mask), mask, "cpc")
            torch.autograd.grad(-mi, leaves + params)

        return step

    return make(critic_before), make(lambda c, x, y, m: c.pairwise_local(x, y, m))


CASES = {
    "demo": [
        ("LIMITR S_cap+S_img, B=32, 8x8, 40-60 words, D=384", lambda: limitr_case(32, 8, 60, 40, 384, None)),
        ("local MI critic+Eq.5, B=32, 4x4x512, 6-8 sent., D=384", lambda: local_mi_case(32, 16, 8, 6, 512, 384)),
    ],
    "paper": [
        ("LIMITR, B=48, 19x19, 20-97 tok, D=768, pair_chunk=4", lambda: limitr_case(48, 19, 97, 20, 768, 4)),
        ("local MI critic+Eq.5, B=32, 4x4x512, 4-12 sent., D=768", lambda: local_mi_case(32, 16, 12, 4, 512, 768)),
    ],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["demo", "paper"], choices=sorted(CASES))
    parser.add_argument("--paper-repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        repeats = args.repeats if size == "demo" else args.paper_repeats
        for name, build in CASES[size]:
            before, after = build()
            if size == "demo":
                before(), after()  # warm-up (the paper sizes take minutes per run: none)
            runs = {"before": [], "after": []}
            for _ in range(repeats):
                runs["before"].append(_measured(before))
                runs["after"].append(_measured(after))
            row = {"size": size, "case": name, "load_1min": os.getloadavg()[0]}
            for impl, values in runs.items():
                row[f"{impl}_s"] = statistics.median(v[0] for v in values)
                row[f"{impl}_extra_peak_gb"] = max(v[1] for v in values)
            row["speedup"] = row["before_s"] / row["after_s"]
            rows.append(row)
            print(f"{size:5} {name:58} before {row['before_s']:7.2f} s ({row['before_extra_peak_gb']:.2f} GB)  "
                  f"after {row['after_s']:7.2f} s ({row['after_extra_peak_gb']:.2f} GB)  x{row['speedup']:.2f}  "
                  f"load {row['load_1min']:.1f}", flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, fwd+bwd")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
