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

from localign.cli import parse_set
from localign.train.config import AUGMENTATIONS, TrainConfig, make_train_config
from localign.train.recipes import RECIPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="lovt", help="registry name (see `localign methods`)")
    parser.add_argument("--data", default=None, help="prepared dataset folder (default: the SynthCXR demo, generated on first use)")
    parser.add_argument("--out", required=True, help="run folder to write (runs/<name>)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="paper",
                        help="paper: each paper's encoders and optimisation; demo: identical small encoders that learn in minutes on a CPU "
                             "(see `localign.train.recipes`); the flags below override single values")
    parser.add_argument("--encoders", choices=("paper", "demo"), default=None,
                        help="paper: the method's own encoders; demo: ResNet-18 at --image-size and the offline MiniLM for every method "
                             "(default: the recipe's)")
    parser.add_argument("--image-arch", default=None, help="with --encoders demo: the image backbone (default resnet18)")
    parser.add_argument("--image-size", type=int, default=None, help="network input size (default: the method's, 128 with --encoders demo)")
    parser.add_argument("--text-model", default=None, help="hub id, local folder or 'minilm' (default: the method's)")
    parser.add_argument("--augment", choices=sorted(AUGMENTATIONS), default=None, help="image augmentation scheme (default: the recipe's)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="the contrastive batch (split across ranks under torchrun)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--text-lr", type=float, default=None)
    parser.add_argument("--accumulate", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--max-train-studies", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="default 0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16"))
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--val-pool", type=int, default=None, help="retrieval candidate pool (default: the whole validation split)")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="optimizer steps between mid-epoch checkpoints")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                        help="deterministic algorithms (default: the recipe's; the demo recipe is deterministic)")
    parser.add_argument("--no-early-stopping", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/last.pt")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="MethodConfig overrides, e.g. loss.local_weights=uniform")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return make_train_config(
        method=args.method, out=args.out, data=args.data, recipe=args.recipe, encoders=args.encoders, image_arch=args.image_arch,
        image_size=args.image_size, text_model=args.text_model, augment=args.augment, overrides=parse_set(args.set, "loss.temperature=0.1"),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, text_lr=args.text_lr, accumulate=args.accumulate,
        max_steps=args.max_steps, max_train_studies=args.max_train_studies, seed=args.seed, device=args.device, amp=args.amp,
        deterministic=args.deterministic, num_workers=args.workers, val_retrieval_pool=args.val_pool,
        checkpoint_every=args.checkpoint_every, early_stopping=not args.no_early_stopping, progress=not args.quiet, resume=args.resume,
    )


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

