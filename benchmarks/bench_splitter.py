"""CPU time of the rule sentence splitter (rules-v1) on long single reports (a script, not a test).

The splitter is linear in the length of a line; up to commit a53f9dd it was quadratic (50 KB of
``". "`` took 15-19 s, 200 KB of ordinary prose 19 s), the same sentences either way. Inputs, each cut to the size:

* ``prose``: radiology sentences with abbreviations, decimals and times, on one line;
* ``prose_lines``: the same with one sentence per line;
* ``periods``: ``". "`` repeated (one candidate boundary every two characters, no sentence);
* ``no_spaces``: ``"a.b.c."`` repeated (one word with a period every other character).

Target: 1 MB of text in under 1 s. Usage: ``python benchmarks/bench_splitter.py [--sizes 50,200,1024] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from localign.data.reports import split_sentences

PROSE = (
    "There is a new opacity in the left lower lobe measuring approx. 2.5 cm, concerning for pneumonia. "
    "No pleural effusion or pneumothorax is seen. Dr. ___ was notified at 10:15 a.m. on ___ by Dr. ___. "
    "1. Endotracheal tube terminates 4.2 cm above the carina. 2. Small right pleural effusion vs. atelectasis. "
)
INPUTS = {
    "prose": PROSE,
    "prose_lines": PROSE.replace(". ", ".\n"),
    "periods": ". ",
    "no_spaces": "a.b.c.",
}


def make(unit: str, n_bytes: int) -> str:
    return (unit * (n_bytes // len(unit) + 1))[:n_bytes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200,1024", help="comma-separated sizes in KB")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'input':<12} {'KB':>6} {'median s':>9} {'MB/s':>7} {'sentences':>10}")
    for name, unit in INPUTS.items():
        for kb in (int(s) for s in args.sizes.split(",")):
            text = make(unit, kb * 1024)
            times, n = [], 0
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                n = len(split_sentences(text, "rules"))
                times.append(time.perf_counter() - t0)
            median = statistics.median(times)
            print(f"{name:<12} {kb:>6} {median:>9.3f} {kb / 1024 / median:>7.2f} {n:>10}")


if __name__ == "__main__":
    main()
