"""CPU timings of every loss in :mod:`localign.losses` at the papers' sizes (a script, not a test).

Each case builds random inputs of the published sizes, then times the forward pass and the
forward + backward pass (gradients w.r.t. every floating input) and reports the median over
``--repeats`` runs after one warm-up run. Sizes:

* GLoRIA / LIMITR: B=48, 19×19 = 361 regions, 97 tokens, D=768 (LIMITR's external loss takes the
  two [B, B] sigmoid score matrices; its internal loss takes the attended contexts). GLoRIA is
  timed with caption lengths drawn up to the full 97 tokens (worst case) and with single-sentence
  captions of at most 24 tokens padded to 97 (what GLoRIA trains on).
* LoVT: B=32, 7×7 = 49 regions, 12 sentences, D=512; info_nce on [32, 512].
* Local MI: B=32, N=16 regions (4×4), M=8 sentences, a critic-score tensor [B, B, N, M].

Usage: ``python benchmarks/bench_losses.py [--repeats 3] [--threads N] [--only gloria] [--out losses.csv]``.
Timings on a shared machine are approximate.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from localign.losses import (
    double_softmax_attention,
    global_mi_objective,
    gloria_global_loss,
    gloria_local_loss,
    info_nce,
    limitr_external_loss,
    limitr_global_loss,
    limitr_internal_loss,
    local_mi_objective,
    lovt_local_loss,
    lovt_positive_weights,
)

log = logging.getLogger("bench_losses")


@dataclass(frozen=True)
class Case:
    name: str
    sizes: str
    make_inputs: Callable[[torch.Generator], dict[str, Tensor]]
    loss: Callable[[dict[str, Tensor]], Tensor]


def _lengths_mask(gen: torch.Generator, batch: int, length: int, low: int) -> Tensor:
    lengths = torch.randint(low, length + 1, (batch,), generator=gen)
    return torch.arange(length)[None] < lengths[:, None]


def _cases() -> list[Case]:
    b_g, t_g, r_g, d_g = 48, 97, 361, 768
    b_l, n_l, m_l, d_l = 32, 49, 12, 512
    b_mi, n_mi, m_mi = 32, 16, 8
    lovt_grid = lovt_positive_weights((7, 7))

    def randn(gen: torch.Generator, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen)

    return [
        Case(
            "info_nce (LoVT global, 0.75)",
            f"[{b_l}, {d_l}]",
            lambda g: {"a": randn(g, b_l, d_l), "b": randn(g, b_l, d_l)},
            lambda x: info_nce(x["a"], x["b"], 0.1, weight_a2b=0.75),
        ),
        Case(
            "lovt_local_loss (image, 7×7 soft positives)",
            f"[{b_l}, {n_l}, {d_l}]",
            lambda g: {
                "z": randn(g, b_l, n_l, d_l),
                "z_att": randn(g, b_l, n_l, d_l),
                "w": torch.rand(b_l, n_l, generator=g),
            },
            lambda x: sum(lovt_local_loss(x["z"], x["z_att"], lovt_grid, weights=x["w"], temperature=0.3)),
        ),
        Case(
            "lovt_local_loss (report, sentences)",
            f"[{b_l}, {m_l}, {d_l}]",
            lambda g: {
                "z": randn(g, b_l, m_l, d_l),
                "z_att": randn(g, b_l, m_l, d_l),
                "w": torch.rand(b_l, m_l, generator=g),
                "mask": _lengths_mask(g, b_l, m_l, 1),
            },
            lambda x: sum(lovt_local_loss(x["z"], x["z_att"], mask=x["mask"], weights=x["w"], temperature=0.3)),
        ),
        Case(
            "gloria_local_loss",
            f"words [{b_g}, {t_g}, {d_g}], regions [{b_g}, {r_g}, {d_g}]",
            lambda g: {
                "words": randn(g, b_g, t_g, d_g),
                "regions": randn(g, b_g, r_g, d_g),
                "mask": _lengths_mask(g, b_g, t_g, 5),
            },
            lambda x: gloria_local_loss(x["words"], x["mask"], x["regions"]),
        ),
        Case(
            "gloria_local_loss (1-sentence captions, <= 24 tok)",
            f"words [{b_g}, {t_g}, {d_g}], regions [{b_g}, {r_g}, {d_g}]",
            lambda g: {
                "words": randn(g, b_g, t_g, d_g),
                "regions": randn(g, b_g, r_g, d_g),
                "mask": _lengths_mask(g, b_g, 24, 5),
            },
            lambda x: gloria_local_loss(x["words"], torch.nn.functional.pad(x["mask"], (0, t_g - 24)), x["regions"]),
        ),
        Case(
            "gloria_global_loss",
            f"[{b_g}, {d_g}]",
            lambda g: {"img": randn(g, b_g, d_g), "txt": randn(g, b_g, d_g)},
            lambda x: gloria_global_loss(x["img"], x["txt"]),
        ),
        Case(
            "limitr_global_loss",
            f"[{b_g}, {d_g}]",
            lambda g: {"img": randn(g, b_g, d_g), "txt": randn(g, b_g, d_g)},
            lambda x: limitr_global_loss(x["img"], x["txt"]),
        ),
        Case(
            "limitr_external_loss",
            f"S_cap, S_img [{b_g}, {b_g}]",
            lambda g: {"cap": randn(g, b_g, b_g), "img": randn(g, b_g, b_g)},
            lambda x: limitr_external_loss(torch.sigmoid(x["cap"]), torch.sigmoid(x["img"])),
        ),
        Case(
            "limitr_internal_loss (contexts given)",
            f"words [{b_g}, {t_g}, {d_g}], regions [{b_g}, {r_g}, {d_g}]",
            lambda g: {
                "words": randn(g, b_g, t_g, d_g),
                "ctx_w": randn(g, b_g, t_g, d_g),
                "regions": randn(g, b_g, r_g, d_g),
                "ctx_r": randn(g, b_g, r_g, d_g),
                "rho": torch.softmax(randn(g, b_g, r_g), dim=1),
            },
            lambda x: limitr_internal_loss(
                x["words"], x["ctx_w"], torch.full((b_g, t_g), 1.0 / t_g), x["regions"], x["ctx_r"], x["rho"]
            ),
        ),
        Case(
            "double_softmax_attention (words over own regions)",
            f"[{b_g}, {t_g}, {d_g}] × [{b_g}, {r_g}, {d_g}]",
            lambda g: {"words": randn(g, b_g, t_g, d_g), "regions": randn(g, b_g, r_g, d_g)},
            lambda x: double_softmax_attention(x["words"], x["regions"])[0].square().mean(),
        ),
        Case(
            "global_mi_objective (cpc)",
            f"[{b_mi}, {b_mi}]",
            lambda g: {"scores": randn(g, b_mi, b_mi)},
            lambda x: global_mi_objective(x["scores"], "cpc"),
        ),
        Case(
            "local_mi_objective (cpc)",
            f"[{b_mi}, {b_mi}, {n_mi}, {m_mi}]",
            lambda g: {"scores": randn(g, b_mi, b_mi, n_mi, m_mi), "mask": _lengths_mask(g, b_mi, m_mi, 1)},
            lambda x: local_mi_objective(x["scores"], x["mask"], "cpc"),
        ),
        Case(
            "local_mi_objective (mine)",
            f"[{b_mi}, {b_mi}, {n_mi}, {m_mi}]",
            lambda g: {"scores": randn(g, b_mi, b_mi, n_mi, m_mi), "mask": _lengths_mask(g, b_mi, m_mi, 1)},
            lambda x: local_mi_objective(x["scores"], x["mask"], "mine"),
        ),
    ]


def _time(case: Case, repeats: int, backward: bool) -> float:
    """Median wall time in milliseconds over ``repeats`` runs after one warm-up run."""
    inputs = case.make_inputs(torch.Generator().manual_seed(0))
    times = []
    for run in range(repeats + 1):
        leaves = {
            k: v.detach().requires_grad_(backward and v.is_floating_point()) for k, v in inputs.items()
        }
        start = time.perf_counter()
        if backward:
            case.loss(leaves).backward()
        else:
            with torch.no_grad():
                case.loss(leaves)
        if run > 0:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this text")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as CSV to this path")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    cases = [c for c in _cases() if args.only is None or args.only in c.name]
    if not cases:
        parser.error(f"no case name contains {args.only!r}")
    rows = []
    for case in cases:
        log.info("timing %s ...", case.name)
        forward = _time(case, args.repeats, backward=False)
        both = _time(case, args.repeats, backward=True)
        rows.append({"loss": case.name, "sizes": case.sizes, "forward_ms": forward, "forward_backward_ms": both})

    header = f"{'loss':<52} {'sizes':<46} {'fwd ms':>10} {'fwd+bwd ms':>12}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, float32, median of {args.repeats}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['loss']:<52} {row['sizes']:<46} {row['forward_ms']:>10.2f} {row['forward_backward_ms']:>12.2f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
