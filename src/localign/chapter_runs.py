"""The runs an analysis chapter needs: trained once, reused by every chapter that asks for the same.

The chapters of a report plan share runs (the ablation chapter needs the ``lovt`` that the
pretraining chapter trained; the representation, weight-map and grounding chapters need the
ablation chapter's presets). :func:`ensure_preset_runs` asks
:func:`~localign.train.reuse.ensure_run` for ``runs_root/<preset>`` of every preset, with the
chapter's recipe, data, seed and training options, exactly as the other chapters ask for it;
:func:`ensure_and_evaluate` then evaluates them with :func:`~localign.eval.protocols.evaluate_runs`.
:func:`recipe_twins` finds presets that a recipe makes identical (its schedule replaces the one
preset that differs only by its schedule) so that a chapter can train such a pair once.

A face, not a part of :mod:`localign.eval`: it composes training and evaluation, which the
evaluation layer may not (it only reads finished runs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from localign.config import config_to_dict
from localign.eval.analyses.ablations import check_presets, relabel_twins
from localign.train import make_train_config
from localign.train.config import resolve_method
from localign.train.reuse import NOT_RESULT_SETTINGS, ensure_run


def _training_settings(preset: str, recipe: str, train: Mapping[str, Any]) -> dict[str, Any]:

    config = make_train_config(method=preset, recipe=recipe, out="-", **dict(train))
    method = {k: v for k, v in config_to_dict(resolve_method(config)).items() if k not in ("name", "description", "reference")}
    run = {k: v for k, v in config_to_dict(config).items() if k not in (*NOT_RESULT_SETTINGS, "method")}
    return json.loads(json.dumps({"method": method, "train": run}, default=str))


def recipe_twins(presets: Sequence[str], recipe: str = "demo", train: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Presets whose training ``recipe`` (with ``train``) makes identical to an earlier preset's, ``{preset: twin}``.

    A recipe's overrides can erase what distinguishes a preset: the demo recipe's schedule and
    learning rate replace ``lovt_plateau``'s ReduceLROnPlateau at 3e-5, which leaves exactly
    ``lovt``. Two presets are twins when every setting that can change a result (the resolved
    method but its name, description and reference, and the run settings but those of
    :data:`~localign.train.reuse.NOT_RESULT_SETTINGS`) is equal; the twin is the first such preset.
    """
    presets = check_presets(presets)
    seen: dict[str, str] = {}
    twins: dict[str, str] = {}
    for preset in presets:
        key = json.dumps(_training_settings(preset, recipe, train or {}), sort_keys=True)
        if key in seen:
            twins[preset] = seen[key]
        else:
            seen[key] = preset
    return twins


# --------------------------------------------------------------------------------------------------
# runs and evaluation
# --------------------------------------------------------------------------------------------------
@dataclass
class PartResult:
    """What :func:`ensure_and_evaluate` returns for one part of the chapter.

    :ivar results: the tidy rows (:data:`~localign.eval.stats.TIDY_COLUMNS`), ``attrs`` as
        :func:`~localign.eval.protocols.evaluate_runs` sets them
    :ivar runs: preset -> run folder
    :ivar training: one row per preset: ``preset``, ``run_dir``, ``trained`` (False: reused), ``seconds``
    :ivar eval_seconds: wall time of the evaluation
    :ivar out: the CSV of the tidy rows (its JSON and per-phrase details beside it), or None
    """

    results: pd.DataFrame
    runs: dict[str, Path]
    training: pd.DataFrame
    eval_seconds: float
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def train_seconds(self) -> float:
        return float(self.training["seconds"].sum()) if len(self.training) else 0.0


def ensure_preset_runs(presets: Sequence[str], runs_root: str | Path, recipe: str = "demo", data_root: str | Path | None = None,
                       seed: int = 0, device: str = "auto", train: Mapping[str, Any] | None = None,
                       progress: bool = False) -> tuple[dict[str, Path], pd.DataFrame]:
    """``runs_root/<preset>`` for every preset, trained unless the same finished run is there.

    Each run is ``make_train_config(method=preset, recipe=recipe, out=f"{runs_root}/{preset}",
    data=data_root, seed=seed, device=device, **train)`` through :func:`~localign.train.reuse.ensure_run`,
    exactly as the other chapters ask for it, so a run another chapter trained with the same
    settings is reused.

    :return: ``({preset: run folder}, training table)``; the table has one row per preset with
        ``preset``, ``run_dir``, ``trained`` and ``seconds`` (of the ``ensure_run`` call).
    """

    presets = check_presets(presets)
    train = dict(train or {})
    reserved = sorted(set(train) & {"method", "recipe", "out", "data", "seed", "device"})
    if reserved:
        raise ValueError(f"train: {reserved} are set by the chapter's own parameters, not in the train dict")
    runs, rows = {}, []
    for preset in presets:
        t0 = time.perf_counter()
        config = make_train_config(method=preset, recipe=recipe, out=str(Path(runs_root) / preset), data=None if data_root is None else str(data_root),
                                   seed=seed, device=device, progress=progress, **train)
        path, trained = ensure_run(config)
        runs[preset] = Path(path)
        rows.append({"preset": preset, "run_dir": str(path), "trained": bool(trained), "seconds": time.perf_counter() - t0})
    return runs, pd.DataFrame(rows, columns=["preset", "run_dir", "trained", "seconds"])


def ensure_and_evaluate(presets: Sequence[str], runs_root: str | Path, tasks: Sequence[str], *, recipe: str = "demo",
                        data_root: str | Path | None = None, seed: int = 0, device: str = "auto",
                        train: Mapping[str, Any] | None = None, fractions: Sequence[float] = (1.0,),
                        seeds: Sequence[int] = (0, 1, 2), baselines: Sequence[str] = (), config=None,
                        out: str | Path | None = None, share_twins: bool = False, progress: bool = False) -> PartResult:
    """Ensure the runs of ``presets`` (:func:`ensure_preset_runs`) and evaluate them on ``tasks``.

    :param config: an :class:`~localign.eval.protocols.EvalConfig` (with its overrides applied);
        ``tasks``, ``fractions``, ``seeds``, ``baselines`` and ``device`` given here override it.
    :param out: CSV of the tidy rows (``evaluate_runs`` writes its JSON and details beside it).
    :param share_twins: train and evaluate a preset that :func:`recipe_twins` finds identical to an
        earlier one only once; its rows are the twin's, relabelled (:func:`relabel_twins`), and its
        training row names the twin (``twin`` column; ``run_dir`` the twin's folder).
    """
    from localign.eval.protocols import evaluate_runs

    presets = check_presets(presets)
    twins = recipe_twins(presets, recipe, train) if share_twins else {}
    runs, training = ensure_preset_runs([p for p in presets if p not in twins], runs_root, recipe=recipe, data_root=data_root,
                                        seed=seed, device=device, train=train, progress=progress)
    t0 = time.perf_counter()
    results = evaluate_runs(list(runs.values()), tasks=list(tasks), fractions=list(fractions), seeds=list(seeds),
                            baselines=list(baselines), data=data_root, device=device, config=config, out=out,
                            progress=progress)
    if twins:
        results = relabel_twins(results, twins)
        if out is not None:  # the relabelled rows; the JSON and details beside it are those of the runs evaluated
            results.to_csv(out, index=False)
    seconds = time.perf_counter() - t0
    training = training.assign(twin="")
    extra = pd.DataFrame([{"preset": p, "run_dir": str(runs[t]), "trained": False, "seconds": 0.0, "twin": t} for p, t in twins.items()],
                         columns=list(training.columns))
    training = pd.concat([training, extra], ignore_index=True) if len(extra) else training
    order = {p: i for i, p in enumerate(presets)}
    training = training.sort_values("preset", key=lambda c: c.map(order)).reset_index(drop=True)
    runs.update({p: runs[t] for p, t in twins.items()})
    return PartResult(results, {p: runs[p] for p in presets}, training, seconds, None if out is None else Path(out), {"twins": twins})


def part_timings(parts: Mapping[str, PartResult]) -> pd.DataFrame:
    """One row per part: ``part``, ``runs`` (count), ``trained`` (count), ``train_min``, ``eval_min``, ``total_min``."""
    rows = []
    for name, p in parts.items():
        train_min, eval_min = p.train_seconds / 60, p.eval_seconds / 60
        rows.append({"part": name, "runs": len(p.training), "trained": int(p.training["trained"].sum()) if len(p.training) else 0,
                     "train_min": round(train_min, 2), "eval_min": round(eval_min, 2), "total_min": round(train_min + eval_min, 2)})
    return pd.DataFrame(rows, columns=["part", "runs", "trained", "train_min", "eval_min", "total_min"])
