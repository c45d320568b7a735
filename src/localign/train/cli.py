"""``localign pretrain``: the command-line face of :func:`localign.train.pretrain`.

Examples::

    localign pretrain --method lovt --out runs/lovt                       # SynthCXR demo, paper encoders
    localign pretrain --method lovt --recipe demo --out runs/lovt-demo        # learns in minutes on a CPU
    localign pretrain --method limitr --data prepared/mimic --set optim.batch_size=48 --out runs/limitr
    torchrun --nproc_per_node=4 -m localign.cli pretrain --method lovt --data ... --out runs/lovt-ddp
    localign pretrain --method lovt --out runs/lovt --resume              # continue a killed run
"""

from __future__ import annotations

import argparse
import logging

from localign.cli import add_options, option_values, parse_set
from localign.train.config import TRAIN_OPTIONS, TrainConfig, make_train_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, TRAIN_OPTIONS)
    # The table's defaults are None ("the recipe's"); the two a command needs are set here.
    parser.set_defaults(method="lovt", recipe="paper")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="dotted overrides of the MethodConfig (loss.local_weights=uniform) or the TrainConfig (augment.hflip_prob=0.5)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return make_train_config(**option_values(args, TRAIN_OPTIONS), overrides=parse_set(args.set, "loss.temperature=0.1"))


def main(args: argparse.Namespace) -> int:
    from localign.train.engine import pretrain

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = pretrain(config_from_args(args))
    if result.summary:  # only rank 0 writes (and returns) a summary; the process group is gone by now
        _save_training_curves(result)
        s = result.summary
        print(f"run folder: {result.run_dir}")
        print(f"stopped: {s['stopped']} after {s['steps']} steps; best epoch {s['best_epoch']} on {s['monitor']}")
        for key in ("val/loss", "val/i2t_R@1", "val/t2i_R@1", "val/r_sum"):
            if key in s["best"]:
                print(f"  {key} = {s['best'][key]:.4g}")
        print(f"  chance R@1 = {s['chance_R@1']:.3g} (pool {s['retrieval_pool']})")
    return 0


def _save_training_curves(result) -> None:
    """The run's figures/training_curves.png, drawn here (the engine draws nothing); a figure that
    cannot be drawn never loses a finished run."""
    import matplotlib.pyplot as plt

    from localign.viz.training import save_training_curves

    try:
        plt.close(save_training_curves(result))
    except Exception as err:  # noqa: BLE001  (see the docstring)
        logging.getLogger("localign.train").warning("could not draw the training curves: %s", err)

