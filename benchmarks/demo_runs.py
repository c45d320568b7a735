"""Pretrain every method of the report with the demo recipe, probe its encoder, and write the table.

What the README's "What to expect" section and ``benchmarks/README.md`` quote: for each method, the
wall time of its pretraining run (data preparation and the text-tower cache included when they are
built), its steps, the best validation retrieval (R@10 both ways, median ranks, against chance) and
the effective rank of the exported features, and the frozen linear probe (macro AUROC at 1 % and
10 % of the labels, mean and 95 % CI over 10 draws of the labelled subset) next to the randomly initialised encoder.

    .venv/bin/python benchmarks/demo_runs.py --out benchmarks/results/demo_runs.csv   # ~1 h on 2 cores
    .venv/bin/python benchmarks/demo_runs.py --reprobe                                 # probe the runs again, no training
    .venv/bin/python benchmarks/demo_runs.py --render                                  # tables only

``--render`` rewrites the blocks between ``<!-- demo-runs:start -->`` and ``<!-- demo-runs:end -->``
in README.md and benchmarks/README.md from the CSV; ``tests/test_recipes.py`` checks that those
blocks are exactly what the CSV renders, so the quoted numbers are the measured ones.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "benchmarks" / "results" / "demo_runs.csv"
METHODS = ("convirt", "clip", "gloria", "lovt", "limitr", "local_mi_cpc")
#: the probe's repetitions, as in the report (params/report.yaml: probe.seeds): at 1 % and 10 % of
#: 1545 training studies the draw of the labelled subset dominates the probe's variance
PROBE_SEEDS = tuple(range(10))
START, END = "<!-- demo-runs:start -->", "<!-- demo-runs:end -->"


def probe_means(table: pd.DataFrame, key: str) -> dict:
    """``probe<fraction>_<key>`` mean and ``..._ci`` (1.96 s / sqrt(n)) of the macro AUROC rows."""
    row = {}
    for frac, vals in table[table["metric"] == "macro"].groupby("fraction")["value"]:
        row[f"probe{frac:g}_{key}"] = vals.mean()
        row[f"probe{frac:g}_{key}_ci"] = 1.96 * vals.std(ddof=1) / len(vals) ** 0.5 if len(vals) > 1 else float("nan")
    return row


def run_method(method: str, runs: Path, seeds: tuple[int, ...], random_rows: dict | None) -> tuple[dict, dict]:
    from localign.train import make_train_config, pretrain

    out = runs / method
    t0 = time.time()
    result = pretrain(make_train_config(method=method, recipe="demo", out=str(out), progress=False))
    wall = time.time() - t0
    s, best = result.summary, result.summary["best"]
    row = {"method": method, "wall_min": wall / 60, "steps": s["steps"], "epochs": s["epochs_completed"],
           "pool": s["retrieval_pool"], "chance_R@10": min(100.0, 10 * s["chance_R@1"]),
           "i2t_R@10": best["val/i2t_R@10"], "t2i_R@10": best["val/t2i_R@10"],
           "i2t_medr": best["val/i2t_medr"], "t2i_medr": best["val/t2i_medr"],
           "feature_rank": best.get("val/feature_rank"), "feature_dim": best.get("val/feature_dim")}
    probe_row, random_rows = probe_run(out, method, seeds, random_rows)
    return {**row, **probe_row}, random_rows


def probe_run(out: Path, method: str, seeds: tuple[int, ...], random_rows: dict | None) -> tuple[dict, dict]:
    """The probe columns of one run (and of the random-init encoder, probed once: it depends only on
    the encoder architecture and the data)."""
    from localign.eval.protocols import evaluate_runs

    probe = evaluate_runs([out], tasks="probe", fractions=(0.01, 0.1), seeds=seeds, baselines=() if random_rows else ("random",),
                          progress=False)
    if not random_rows:
        random_rows = probe_means(probe[probe["method"].str.startswith("random")], "random")
    return {**probe_means(probe[probe["method"] == method], "run"), **random_rows, "probe_seeds": len(seeds)}, random_rows


def render(df: pd.DataFrame) -> str:
    """The markdown table the README quotes (numbers rounded as shown)."""
    lines = ["| method | wall (min) | steps | i2t / t2i R@10 (%) | × chance (weaker) | median rank i2t / t2i | effective rank | probe 1 % | probe 10 % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        x = min(r["i2t_R@10"], r["t2i_R@10"]) / r["chance_R@10"]
        probe = [f"{100 * r[f'probe{f}_run']:.1f} ± {100 * r[f'probe{f}_run_ci']:.1f} (random {100 * r[f'probe{f}_random']:.1f} ± {100 * r[f'probe{f}_random_ci']:.1f})"
                 for f in ("0.01", "0.1")]
        lines.append(f"| {r['method']} | {r['wall_min']:.1f} | {r['steps']} | {r['i2t_R@10']:.1f} / {r['t2i_R@10']:.1f} | {x:.1f} | "
                     f"{r['i2t_medr']:.0f} / {r['t2i_medr']:.0f} | {r['feature_rank']:.0f} (≤ {min(r['pool'] - 1, r['feature_dim']):.0f}) | {probe[0]} | {probe[1]} |")
    first = df.iloc[0]
    lines.append("")
    lines.append(f"Validation pool {first['pool']:.0f} reports (chance R@10 {first['chance_R@10']:.1f} %); probe: macro AUROC (%) of the "
                 f"frozen linear probe on the SynthCXR test split, mean ± 95 % CI over {first.get('probe_seeds', 3):.0f} draws of the "
                 f"labelled subset; measured with "
                 f"`benchmarks/demo_runs.py` ({df.attrs.get('machine', 'see benchmarks/results/demo_runs.json')}).")
    return "\n".join(lines)


def splice(text: str, block: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"no {START} ... {END} block to fill")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def load() -> pd.DataFrame:
    df = pd.read_csv(CSV)
    meta = CSV.with_suffix(".json")
    if meta.is_file():
        df.attrs["machine"] = json.loads(meta.read_text()).get("machine", "")
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--runs", default="runs/demo-bench")
    parser.add_argument("--out", default=str(CSV))
    parser.add_argument("--render", action="store_true", help="only rewrite the README tables from the CSV")
    parser.add_argument("--reprobe", action="store_true",
                        help="probe the runs already in --runs again (PROBE_SEEDS) and update the CSV's probe columns; no training")
    parser.add_argument("--load", default="", help="machine load during the run, for the record")
    args = parser.parse_args()
    if args.reprobe:
        df, random_rows = pd.read_csv(args.out), None
        for i, method in enumerate(df["method"]):
            probe_row, random_rows = probe_run(Path(args.runs) / method, method, PROBE_SEEDS, random_rows)
            for key, value in probe_row.items():
                df.loc[i, key] = value
            print(method, json.dumps(probe_row), flush=True)
        df.to_csv(args.out, index=False)
    elif not args.render:
        import os

        rows, random_rows = [], None
        for method in args.methods:
            row, random_rows = run_method(method, Path(args.runs), PROBE_SEEDS, random_rows)
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
            pd.DataFrame(rows).to_csv(args.out, index=False)
        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {__import__('torch').get_num_threads()}"
        Path(args.out).with_suffix(".json").write_text(json.dumps({"machine": machine + (f", {args.load}" if args.load else ""),
                                                                   "python": platform.python_version()}, indent=2))
    block = render(load())
    for path in (ROOT / "README.md", ROOT / "benchmarks" / "README.md"):
        path.write_text(splice(path.read_text(), block))
    print(block)


if __name__ == "__main__":
    main()
