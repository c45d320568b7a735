"""``localign evaluate``: the downstream protocols on run folders, as tidy CSV + JSON, and the summary tables.

Examples::

    localign evaluate --runs runs/lovt runs/convirt --out results/eval.csv
    localign evaluate --runs runs/lovt --tasks probe,retrieval --fractions 0.01,0.1,1 --seeds 0,1,2 --out results/probe.csv
    localign evaluate --runs runs/lovt --tasks seg --baselines random,imagenet --set unet.max_steps=500 --out results/seg.csv
    localign evaluate --runs runs/limitr --tasks retrieval --retrieval-pool 1000 --out results/retrieval.csv

Tasks: probe, classify_frozen, classify_tuned, edema_frozen, edema_tuned, seg_linear,
seg_unet_frozen, seg_unet_finetune, retrieval, grounding (aliases classify, edema, seg, all); see
:mod:`localign.eval.protocols.runner`.
"""

from __future__ import annotations

import argparse
import logging

from localign.cli import parse_set


def _csv(kind, text: str, what: str) -> tuple:
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return tuple(kind(t) for t in items)
    except ValueError:
        raise SystemExit(f"--{what}: expected comma-separated {kind.__name__} values, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR", help="run folders written by `localign pretrain`")
    parser.add_argument("--tasks", default="all", help="comma-separated tasks or aliases (default: all)")
    parser.add_argument("--fractions", default="0.01,0.1,1", help="label fractions of the probe and linear segmentation")
    parser.add_argument("--seeds", default="0,1,2", help="downstream seeds")
    parser.add_argument("--out", required=True, help="CSV of tidy results; a .json with config, timings and skipped tasks goes next to it")
    parser.add_argument("--data", default=None, help="prepared dataset (default: the one each run was trained on)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    parser.add_argument("--baselines", default="random,supervised,imagenet",
                        help="comma-separated baselines among random, supervised, imagenet ('' or 'none' for none)")
    parser.add_argument("--retrieval-pool", type=int, default=None, help="retrieval candidates per query (default: the whole split)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 is often fastest on a busy 2-core machine)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="EvalConfig overrides, e.g. classifier_tuned.max_steps=200 unet.epochs=5 grounding_split=all")
    parser.add_argument("--no-paper", action="store_true", help="print our results without the published numbers")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    import pandas as pd

    from localign.eval.protocols.runner import EvalConfig, evaluate_runs, resolve_tasks
    from localign.eval.tables import summary_tables

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    baselines = () if args.baselines.strip().lower() in ("", "none") else _csv(str, args.baselines, "baselines")
    try:
        config = EvalConfig(tasks=resolve_tasks(args.tasks), fractions=_csv(float, args.fractions, "fractions"),
                            seeds=_csv(int, args.seeds, "seeds"), baselines=baselines, device=args.device,
                            retrieval_pool=args.retrieval_pool, checkpoint=args.checkpoint,
                            num_threads=args.threads)
        config = config.with_overrides(**parse_set(args.set, "unet.max_steps=200"))
    except ValueError as err:
        raise SystemExit(f"localign evaluate: {err}") from None
    results = evaluate_runs(args.runs, data=args.data, out=args.out, config=config, progress=not args.quiet)
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
        for title, table in summary_tables(results, with_paper=not args.no_paper).items():
            print(f"\n== {title} (mean ± 95 % CI over seeds) ==")
            print(table.to_string(index=False))
    skipped = results.attrs.get("skipped", [])
    if skipped:
        print(f"\n{len(skipped)} task(s) skipped:")
        for s in skipped:
            print(f"  {s['run']} ({s['method']}) {s['task']}: {s['reason']}")
    print(f"\nwrote {args.out} ({len(results)} rows) and its .json")
    return 0
