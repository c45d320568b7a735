"""The recipe comparison behind the demo recipe: one pretraining run per variant, validation
retrieval and the frozen probe, written to ``results/recipe_variants.csv``.

Each variant names every setting it changes on top of the ``demo`` recipe's optimiser (AdamW,
5 % warm-up, linear decay, weight decay 1e-4, batch 32, deterministic), so the rows keep their
meaning when the recipe itself moves on:

    .venv/bin/python benchmarks/recipe_variants.py                 # every variant (~1 h on 2 idle cores)
    .venv/bin/python benchmarks/recipe_variants.py --only convirt_full_crop_e8
    .venv/bin/python benchmarks/recipe_variants.py --render        # the table of benchmarks/README.md

Retrieval is the validation split's (190 reports, chance R@10 5.3 %) at the epoch the run selects
(lowest validation loss) and at the last epoch; the probe is the frozen linear probe's macro AUROC
(%) at 1 % and 10 % of the labels, mean ± 95 % CI over 3 seeds, as ``demo_runs.py`` reports it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "benchmarks" / "results" / "recipe_variants.csv"
START, END = "<!-- recipe-variants:start -->", "<!-- recipe-variants:end -->"

RANDOM_SENTENCE = {"text_input.sentence_sampling": "random_sentence"}
FULL_REPORT = {"text_input.sentence_sampling": None}

#: name -> (method, augmentation, TrainConfig fields, method overrides, what it tests)
VARIANTS: dict[str, tuple[str, str, dict, dict, str]] = {
    "convirt_fp32_e5": ("convirt", "none", {"amp": "off", "epochs": 5}, RANDOM_SENTENCE, "the previous demo recipe (float32, one random sentence)"),
    "clip_bf16_e5": ("clip", "none", {"amp": "bf16", "epochs": 5}, RANDOM_SENTENCE, "bf16 autocast instead of float32"),
    "convirt_bf16_e8": ("convirt", "none", {"amp": "bf16", "epochs": 8}, RANDOM_SENTENCE, "more epochs with one random sentence"),
    "convirt_full_e5": ("convirt", "none", {"amp": "bf16", "epochs": 5}, FULL_REPORT, "whole reports instead of one random sentence"),
    "clip_full_e5": ("clip", "none", {"amp": "bf16", "epochs": 5}, FULL_REPORT, "whole reports (CLIP)"),
    "gloria_full_e5": ("gloria", "none", {"amp": "bf16", "epochs": 5}, FULL_REPORT, "whole reports (GLoRIA)"),
    "convirt_full_wd05_e5": ("convirt", "none", {"amp": "bf16", "epochs": 5}, {**FULL_REPORT, "optim.weight_decay": 0.05},
                             "whole reports, weight decay 0.05 against over-fitting"),
    "convirt_full_crop_e5": ("convirt", "gloria", {"amp": "bf16", "epochs": 5}, FULL_REPORT, "whole reports, GLoRIA's random crop"),
    "convirt_full_crop_e8": ("convirt", "gloria", {"amp": "bf16", "epochs": 8}, FULL_REPORT, "whole reports, random crop, 8 epochs"),
    "lovt_crop_lr1e-3_e5": ("lovt", "gloria", {"amp": "bf16", "epochs": 5, "lr": 1e-3}, {}, "LoVT with the random crop at its demo rate"),
    "lovt_crop_lr3e-4_e6": ("lovt", "gloria", {"amp": "bf16", "epochs": 6, "lr": 3e-4}, {}, "LoVT with the random crop at the global methods' rate"),
    # Longer runs of the demo recipe (its retrieval was still rising at the last epoch)
    "convirt_crop_e12": ("convirt", "gloria", {"amp": "bf16", "epochs": 12}, FULL_REPORT, "the demo recipe, 12 epochs instead of 8"),
    "clip_crop_e12": ("clip", "gloria", {"amp": "bf16", "epochs": 12}, FULL_REPORT, "the demo recipe (CLIP), 12 epochs instead of 8"),
    "lovt_crop_e10": ("lovt", "gloria", {"amp": "bf16", "epochs": 10}, {}, "the demo recipe (LoVT), 10 epochs instead of 6"),
    # Local MI (batch 16, as the demo recipe): Eq. 5 selects each sentence's region by the per-region
    # estimates, with the joint sample; each image's own best region instead keeps the estimate a bound.
    "local_mi_eq5_e2": ("local_mi_cpc", "none", {"amp": "bf16", "epochs": 2, "batch_size": 16}, {"loss.region_selection": "estimate"},
                        "local MI as the paper writes Eq. 5 (the demo run)"),
    "local_mi_critic_e2": ("local_mi_cpc", "none", {"amp": "bf16", "epochs": 2, "batch_size": 16}, {"loss.region_selection": "critic"},
                           "local MI, each image scored by its own best region"),
    "local_mi_critic_lr1e-3_e2": ("local_mi_cpc", "none", {"amp": "bf16", "epochs": 2, "batch_size": 16, "lr": 1e-3},
                                  {"loss.region_selection": "critic"}, "the same at a learning rate of 1e-3"),
}


def run(name: str, runs: Path) -> dict:
    from localign.eval.protocols import evaluate_runs
    from localign.train import make_train_config, pretrain

    method, augment, train, overrides, what = VARIANTS[name]
    out = runs / name
    t0 = time.time()
    result = pretrain(make_train_config(method=method, recipe="demo", out=str(out), augment=augment, overrides=overrides,
                                        progress=False, **train))
    wall = time.time() - t0
    s = result.summary
    metrics = pd.read_csv(out / "metrics.csv")
    last = metrics[(metrics["phase"] == "val") & (metrics["epoch"] == metrics["epoch"].max())].set_index("name")["value"]
    row = {"variant": name, "method": method, "what": what, "wall_min": wall / 60, "steps": s["steps"],
           "best_epoch": s["best_epoch"], "i2t_R@10": s["best"]["val/i2t_R@10"], "t2i_R@10": s["best"]["val/t2i_R@10"],
           "last_i2t_R@10": last["val/i2t_R@10"], "last_t2i_R@10": last["val/t2i_R@10"],
           "feature_rank": s["best"].get("val/feature_rank"),
           # the objective on the selected epoch's validation pairs and on shuffled ones (images rolled by one)
           "val_loss": s["best"].get("val/loss"), "val_loss_shuffled": s["best"].get("val/loss_shuffled")}
    probe = evaluate_runs([out], tasks="probe", fractions=(0.01, 0.1), seeds=(0, 1, 2), baselines=(), progress=False)
    for frac, vals in probe[probe["metric"] == "macro"].groupby("fraction")["value"]:
        row[f"probe{frac:g}"] = 100 * vals.mean()
        row[f"probe{frac:g}_ci"] = 100 * 1.96 * vals.std(ddof=1) / len(vals) ** 0.5
    return row


def render(df: pd.DataFrame) -> str:
    lines = ["| variant | what it tests | wall (min) | steps | R@10 i2t / t2i, selected epoch (last) | validation loss: true / shuffled pairs | probe 1 % | probe 10 % |",
             "|---|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        shuffled = r.get("val_loss_shuffled")
        losses = "n/a" if shuffled is None or pd.isna(shuffled) else f"{r['val_loss']:.3g} / {shuffled:.3g}"
        lines.append(f"| `{r['variant']}` | {r['what']} | {r['wall_min']:.1f} | {r['steps']} | {r['i2t_R@10']:.1f} / {r['t2i_R@10']:.1f} "
                     f"({r['last_i2t_R@10']:.1f} / {r['last_t2i_R@10']:.1f}) | {losses} | {r['probe0.01']:.1f} ± {r['probe0.01_ci']:.1f} | "
                     f"{r['probe0.1']:.1f} ± {r['probe0.1_ci']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS))
    parser.add_argument("--runs", default="runs/recipe-variants")
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args()
    if not args.render:
        old = pd.read_csv(CSV) if CSV.is_file() else pd.DataFrame(columns=["variant"])
        for name in args.only:
            row = run(name, Path(args.runs))
            print(json.dumps(row), flush=True)
            old = pd.concat([old[old["variant"] != name], pd.DataFrame([row])], ignore_index=True)
            old.to_csv(CSV, index=False)
    df = pd.read_csv(CSV)
    df = df.set_index("variant").loc[[v for v in VARIANTS if v in set(df["variant"])]].reset_index()
    block = render(df)
    path = ROOT / "benchmarks" / "README.md"
    text = path.read_text()
    if START in text:
        head, rest = text.split(START, 1)
        path.write_text(f"{head}{START}\n{block}\n{END}{rest.split(END, 1)[1]}")
    print(block)


if __name__ == "__main__":
    main()
