"""The settings of ``localign evaluate`` and notebook 04 by name, and the dotted EvalConfig key of each.

:data:`EVAL_OPTIONS` is the one table: the command's flags are built from it, and
:func:`make_eval_config` turns values given by these names into dotted overrides that
:func:`localign.config.replace` applies to :class:`~localign.eval.protocols.runner.EvalConfig`.
Options with key ``None`` (``runs``, ``out``, ``data``, ...) are arguments of
:func:`~localign.eval.protocols.runner.evaluate_runs` or of the printed tables, not of the config.
"""

from __future__ import annotations

from typing import Any

from localign.config import Option, options_to_dotted, replace


def _csv(kind):
    def parse(text: str) -> tuple:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if kind is str and text.strip().lower() == "none":
            return ()
        return tuple(kind(t) for t in items)

    parse.__name__ = f"comma-separated {kind.__name__}s"  # argparse names the type in its error
    return parse


EVAL_OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("runs", None, "run folders written by `localign pretrain`", required=True),
    Option("tasks", "tasks", "comma-separated tasks or aliases (default: all)", default="all"),
    Option("fractions", "fractions", "label fractions of the probe and linear segmentation", _csv(float), default="0.01,0.1,1"),
    Option("seeds", "seeds", "downstream seeds", _csv(int), default="0,1,2"),
    Option("out", None, "CSV of tidy results; a .json with config, timings and skipped tasks goes next to it", required=True),
    Option("data", None, "prepared dataset (default: the one each run was trained on)"),
    Option("device", "device", "auto (CUDA when available) | cpu | cuda | cuda:N", default="auto"),
    Option("baselines", "baselines", "comma-separated baselines among random, supervised, imagenet ('' or 'none' for none)",
           _csv(str), default="random,supervised,imagenet"),
    Option("retrieval_pool", "retrieval_pool", "retrieval candidates per query (default: the whole split)", int),
    Option("checkpoint", "checkpoint", "which checkpoint of each run", choices=("best", "last"), default="best"),
    Option("threads", "num_threads", "torch CPU threads (default: torch's; 1 is often fastest on a busy 2-core machine)", int),
    Option("no_paper", None, "print our results without the published numbers", bool, negate=True),
    Option("quiet", None, "no progress bars", bool, negate=True),
)}


def make_eval_config(overrides: dict[str, Any] | None = None, **options: Any) -> "EvalConfig":
    """The EvalConfig of options given by their :data:`EVAL_OPTIONS` names (``None``: the config's
    default), then the dotted ``overrides`` (``{"unet.max_steps": 200}``)."""
    from localign.eval.protocols.runner import EvalConfig

    for name, value in options.items():
        if name in EVAL_OPTIONS and isinstance(value, str) and EVAL_OPTIONS[name].type not in (str, int, float, bool):
            options[name] = EVAL_OPTIONS[name].type(value)  # a comma-separated string, as on the command line
        if name in EVAL_OPTIONS and EVAL_OPTIONS[name].key is None:
            raise ValueError(f"{name!r} is an argument of evaluate_runs, not an EvalConfig setting")
    return replace(EvalConfig(), **{**options_to_dotted(EVAL_OPTIONS, options), **(overrides or {})})
