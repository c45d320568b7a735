"""``localign evaluate``: the downstream protocols on run folders, as tidy CSV + JSON, and the summary tables.

Examples::

    localign evaluate --runs runs/lovt runs/convirt --out results/eval.csv
    localign evaluate --runs runs/lovt --tasks probe,retrieval --fractions 0.01,0.1,1 --seeds 0,1,2 --out results/probe.csv
    localign evaluate --runs runs/lovt --tasks seg --baselines random,imagenet --set unet.max_steps=500 --out results/seg.csv
    localign evaluate --runs runs/limitr --tasks retrieval --retrieval-pool 1000 --out results/retrieval.csv
    localign evaluate --runs runs/clip --tasks zero_shot --out results/zero_shot.csv

Tasks: probe, classify_frozen, classify_tuned, edema_frozen, edema_tuned, seg_linear,
seg_unet_frozen, seg_unet_finetune, retrieval, grounding, zero_shot (aliases classify, edema, seg,
all): the protocols of :mod:`localign.eval.protocols.registry`.
"""

from __future__ import annotations

import argparse
import logging

from localign.cli import add_options, option_values, parse_set
from localign.eval.options import EVAL_OPTIONS, make_eval_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, {k: v for k, v in EVAL_OPTIONS.items() if k != "runs"})
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR", help=EVAL_OPTIONS["runs"].help)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="EvalConfig overrides, e.g. classifier_tuned.max_steps=200 unet.epochs=5 grounding_split=all")


def main(args: argparse.Namespace) -> int:
    import pandas as pd

    from localign.eval.protocols.runner import evaluate_runs
    from localign.eval.tables import summary_tables

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    values = option_values(args, EVAL_OPTIONS)
    settings = {k: v for k, v in values.items() if EVAL_OPTIONS[k].key is not None}
    try:
        config = make_eval_config(overrides=parse_set(args.set, "unet.max_steps=200"), **settings)
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
