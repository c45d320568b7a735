"""Figures of a pretraining run: loss, retrieval recall and learning rate against optimizer steps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from localign.train.run_folder import RunFolder

if TYPE_CHECKING:
    from localign.train.engine import RunResult


def plot_training_curves(history: pd.DataFrame, title: str = "", chance_r1: float | None = None) -> Figure:
    """Four panels from a run's ``metrics.csv`` (long format: step, epoch, phase, name, value).

    1: training loss per logged step and validation loss per epoch, next to the validation loss on
    shuffled pairs (a method that learned the pairing stays below it). 2: validation R@1/5/10
    (image→report solid, report→image dashed), with the chance levels of R@1 and R@10 if given.
    3: the effective rank of the exported backbone features per epoch (principal components holding
    99 % of the variance of the standardised pooled validation features), below its bound
    min(validation images - 1, feature dimension):
    a representation collapsing shows as a falling rank. 4: the learning rate of every group.
    """
    fig, axes = plt.subplots(1, 4, figsize=(19, 3.8))
    train = history[history["phase"] == "train"]
    val = history[history["phase"] == "val"]
    ax = axes[0]
    t = train[train["name"] == "loss"]
    ax.plot(t["step"], t["value"], label="train", lw=1)
    v = val[val["name"] == "val/loss"]
    ax.plot(v["step"], v["value"], "o-", label="validation")
    v = val[val["name"] == "val/loss_shuffled"]
    if len(v):  # the control: the same objective with every validation pair broken
        ax.plot(v["step"], v["value"], "x:", color="grey", label="validation, shuffled pairs")
    ax.set(xlabel="optimizer step", ylabel="loss", title="objective")
    ax.legend()
    ax = axes[1]
    for k, color in zip((1, 5, 10), ("C0", "C1", "C2")):
        for direction, style in (("i2t", "-"), ("t2i", "--")):
            r = val[val["name"] == f"val/{direction}_R@{k}"]
            if len(r):
                ax.plot(r["step"], r["value"], style, color=color, marker="o", ms=3, label=f"{direction} R@{k}")
    if chance_r1 is not None:
        ax.axhline(chance_r1, color="grey", lw=1, ls=":", label="chance R@1")
        ax.axhline(10 * chance_r1, color="C2", lw=1, ls=":", label="chance R@10")
    ax.set(xlabel="optimizer step", ylabel="recall (%)", title="validation retrieval")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[2]
    r = val[val["name"] == "val/feature_rank"]
    if len(r):
        ax.plot(r["step"], r["value"], "o-", color="C4")
        bound = val[val["name"] == "val/feature_rank_max"]["value"]
        if len(bound):
            ax.axhline(float(bound.max()), color="grey", lw=1, ls=":", label="largest possible")
            ax.set_ylim(0, float(bound.max()) * 1.05)
            ax.legend(fontsize=7)
        else:  # a run from before the bound was logged
            ax.set_ylim(0, None)
    ax.set(xlabel="optimizer step", ylabel="components for 99 % variance", title="effective rank of the backbone features")
    ax = axes[3]
    for name in sorted(n for n in train["name"].unique() if n.startswith("lr/")):
        r = train[train["name"] == name]
        ax.plot(r["step"], r["value"], label=name[3:])
    ax.set(xlabel="optimizer step", ylabel="learning rate", title="schedule")
    if len(ax.lines):
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # returned, not shown: a notebook displays it once as the cell's value
    return fig



def save_training_curves(result: "RunResult", dpi: int = 120) -> Figure:
    """:func:`plot_training_curves` of a finished run, saved as its ``figures/training_curves.png``.

    The engine draws nothing; whoever presents a run (``localign pretrain``, notebook 03) calls this.
    """
    summary = result.summary
    fig = plot_training_curves(result.history, title=f"{summary['method']} on {Path(summary['data']).name}",
                               chance_r1=summary.get("chance_R@1"))
    path = RunFolder(result.run_dir).training_curves_path
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig

def describe_method(method) -> pd.DataFrame:
    """The resolved :class:`~localign.models.config.MethodConfig` as a two-column table (dotted keys)."""
    from localign.config import config_to_dict

    rows = []

    def walk(d: dict, prefix: str = "") -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                rows.append((f"{prefix}{k}", v if not isinstance(v, list) else str(v)))

    walk(config_to_dict(method))
    return pd.DataFrame(rows, columns=["setting", "value"]).set_index("setting")


def run_summary_table(summary: dict) -> pd.DataFrame:
    """Best-epoch validation metrics and run facts from ``summary.json`` as one readable table."""
    best = summary.get("best", {})
    rows = [
        ("method", summary["method"]),
        ("train / validate studies", f"{summary['n_train_studies']} / {summary['n_validate_studies']}"),
        ("epochs / optimizer steps", f"{summary['epochs_completed']} / {summary['steps']} ({summary['stopped']})"),
        ("best epoch (monitor)", f"{summary['best_epoch']} ({summary['monitor']})"),
        ("validation loss", f"{best.get('val/loss', float('nan')):.4f}"),
        ("image→report R@1 / R@5 / R@10 (%)", " / ".join(f"{best.get(f'val/i2t_R@{k}', float('nan')):.1f}" for k in (1, 5, 10))),
        ("report→image R@1 / R@5 / R@10 (%)", " / ".join(f"{best.get(f'val/t2i_R@{k}', float('nan')):.1f}" for k in (1, 5, 10))),
        ("effective rank of the backbone features", f"{best.get('val/feature_rank', float('nan')):.0f} (at most "
                                                    f"{best.get('val/feature_rank_max', best.get('val/feature_dim', float('nan'))):.0f})"),
        ("chance R@1 (%) / candidate pool", f"{summary['chance_R@1']:.2f} / {summary['retrieval_pool']} reports"),
        ("training throughput (samples/s)", f"{summary['train_samples_per_s']:.1f}"),
        ("wall time (s)", f"{summary['wall_time_s']:.0f}"),
        ("device × processes", f"{summary['device']} × {summary['world_size']}"),
    ]
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")
