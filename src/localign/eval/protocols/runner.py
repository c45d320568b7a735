"""``evaluate_runs``: every registered downstream protocol on run folders (and baselines), as one tidy table.

The tasks are the protocols of :mod:`localign.eval.protocols.registry` (:data:`TASKS`, in
registry order; the papers' protocols are listed in :mod:`localign.eval.protocols.builtin`, the
zero-shot classification in :mod:`localign.eval.protocols.zero_shot`). A protocol with variants
writes ``<task>:<variant>`` rows (``seg_linear:rsna``, ``grounding:ms_cxr``).

Label fractions apply to the protocols that declare ``uses_fractions`` (the probe and linear
segmentation, which the papers report at 1/10/100 %); the other trained protocols use all training
labels (fraction 1.0), the deterministic ones seed 0 only. Aliases (:data:`TASK_ALIASES`):
``classify``, ``edema``, ``seg``, ``all``. A task that cannot run on a run's data (no RSNA table,
no edema test images, a baseline without a text tower) is **skipped with its reason** — listed in
the JSON written next to the CSV and in ``DataFrame.attrs["skipped"]`` — never silently dropped;
bad input (unknown task, a folder without ``config.yaml``) is an error before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import localign
from localign.config import config_from_dict, config_to_dict, replace
from localign.data import layout
from localign.data.manifest import PreparedDataset, load_prepared
from localign.data.transforms import Preprocessing
from localign.eval.protocols import baselines as B
from localign.eval.protocols import registry as R
from localign.eval.protocols.classification import BLANK_POLICIES
from localign.eval.protocols.common import ProtocolResult, TaskUnavailable, check_positive
from localign.eval.protocols.features import DEFAULT_MAX_CACHE_BYTES, StoreCache
from localign.eval.protocols.grounding import GROUNDING_SOURCES, GROUNDING_SPLITS
from localign.eval.protocols.segmentation import SEG_TARGETS
from localign.eval.stats import TIDY_COLUMNS, validate_tidy
from localign.models.image import ImageEncoder
from localign.models.methods.base import PretrainModel
from localign.train.run_folder import check_run_dir

log = logging.getLogger(__name__)

#: every task name, in registry order (the papers' protocols, then zero-shot classification)
TASKS: tuple[str, ...] = R.task_names()
#: ``{alias: tasks}`` (``classify``, ``edema``, ``seg``, ``all``)
TASK_ALIASES: dict[str, tuple[str, ...]] = R.task_aliases()
#: the tasks that use the text tower (skipped for baselines)
TEXT_TASKS: tuple[str, ...] = tuple(p.name for p in R.protocols() if p.needs_text)
resolve_tasks = R.resolve_tasks


@dataclass(frozen=True)
class EvalSettings:
    """The settings every protocol shares (validated here); :data:`EvalConfig` adds each protocol's own config field."""

    tasks: tuple[str, ...] = TASKS
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    baselines: tuple[str, ...] = ("random", "supervised", "imagenet")
    device: str = "cpu"  # auto | cpu | cuda | cuda:N ("auto" resolves to cuda when available, stored resolved)
    checkpoint: str = "best"  # which checkpoint of each run: best | last
    batch_size: int = 64  # feature extraction and inference
    labels: tuple[str, ...] = layout.PATHOLOGY9
    blank: str = "negative"  # CheXpert blanks: negative | ignore
    seg_targets: tuple[str, ...] = SEG_TARGETS
    retrieval_pool: int | None = None  # None: the whole split; P: chunks of P pairs (LIMITR: 1000)
    retrieval_split: str = "test"
    grounding_sources: tuple[str, ...] = GROUNDING_SOURCES
    grounding_split: str = "test"
    grounding_sigma: float = 1.5
    supervised_epochs: int | None = None  # None: twice classifier_tuned's budget (Liao et al.: 100 vs 50 epochs)
    baseline_seed: int = 0
    max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES
    num_threads: int | None = None  # torch CPU threads during the evaluation (None: leave torch's setting)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", resolve_tasks(self.tasks))
        if self.device == "auto":
            object.__setattr__(self, "device", "cuda" if torch.cuda.is_available() else "cpu")
        elif torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
        if not self.fractions or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"fractions: expected numbers in (0, 1], got {self.fractions!r}")
        if len(set(self.fractions)) != len(self.fractions):
            raise ValueError(f"fractions: duplicate values in {self.fractions!r}")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: expected distinct integers, got {self.seeds!r}")
        unknown = [b for b in self.baselines if b not in B.BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(B.BASELINES)}")
        bad_targets = [t for t in self.seg_targets if t not in SEG_TARGETS]
        if bad_targets or not self.seg_targets:
            raise ValueError(f"seg_targets: {bad_targets or 'empty'}; choose from {SEG_TARGETS}")
        bad_sources = [s for s in self.grounding_sources if s not in GROUNDING_SOURCES]
        if bad_sources or not self.grounding_sources:
            raise ValueError(f"grounding_sources: {bad_sources or 'empty'}; choose from {GROUNDING_SOURCES}")
        if self.grounding_split not in GROUNDING_SPLITS:
            raise ValueError(f"grounding_split: expected one of {GROUNDING_SPLITS}, got {self.grounding_split!r}")
        if self.retrieval_split not in layout.MIMIC_SPLITS:
            raise ValueError(f"retrieval_split: expected one of {layout.MIMIC_SPLITS}, got {self.retrieval_split!r}")
        if self.retrieval_pool is not None:
            check_positive("retrieval_pool", self.retrieval_pool, integer=True)
        if self.blank not in BLANK_POLICIES:
            raise ValueError(f"blank: expected one of {BLANK_POLICIES}, got {self.blank!r}")
        if self.checkpoint not in ("best", "last"):
            raise ValueError(f"checkpoint: expected 'best' or 'last', got {self.checkpoint!r}")
        unknown_labels = [name for name in self.labels if name not in layout.CHEXPERT_LABELS]
        if unknown_labels or not self.labels:
            raise ValueError(f"labels: {unknown_labels or 'empty'} not among the CheXpert labels")
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("grounding_sigma", self.grounding_sigma, allow_zero=True)
        if self.supervised_epochs is not None:
            check_positive("supervised_epochs", self.supervised_epochs, integer=True)
        if self.num_threads is not None:
            check_positive("num_threads", self.num_threads, integer=True)

        for name, config_class, _ in R.config_fields():
            value = getattr(self, name, None)
            if not isinstance(value, config_class):
                raise ValueError(f"{name}: expected a {config_class.__name__}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvalConfig":
        return config_from_dict(cls, data)

    def with_overrides(self, **dotted: Any) -> "EvalConfig":
        """A copy with dotted-key overrides (``{"classifier.epochs": 5}``), converted like a YAML file."""
        return replace(self, **dotted)


#: Everything that determines an evaluation; saved resolved in the JSON next to the results.
#: The fields of :class:`EvalSettings` plus one per protocol ``config_field`` of the registry
#: (``probe``, ``classifier_frozen``, ``classifier_tuned``, ``segmentation``, ``unet``,
#: ``zero_shot``), each of its protocol's ``config_class`` with its default. Defaults are the demo
#: protocol (ResNet-18 at 128 px on ~2k SynthCXR studies, 2 CPU cores): short trainings whose
#: budgets live in the nested configs (``classifier_tuned.max_steps``, ``unet.max_steps``,
#: ``segmentation.epochs``, ...); raise them for real data.
EvalConfig = dataclasses.make_dataclass(
    "EvalConfig",
    [(name, config_class, field(default_factory=default)) for name, config_class, default in R.config_fields()],
    bases=(EvalSettings,),
    frozen=True,
    namespace={"__module__": __name__, "__doc__": (
        "Everything that determines an evaluation, saved resolved in the JSON next to the results: the shared "
        "settings of :class:`EvalSettings` and one config field per protocol of the registry (its ``config_field``).")},
)


@dataclass
class Subject:
    """One thing to evaluate: a pretrained run or a baseline encoder."""

    run: str
    method: str
    encoder: ImageEncoder
    prep: Preprocessing
    prepared: PreparedDataset
    model: PretrainModel | None = None  # None for baselines (no text tower)


# --------------------------------------------------------------------------------------------------
# checks and loading
# --------------------------------------------------------------------------------------------------
def _run_names(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def _data_root(loaded, data: str | Path | None) -> Path:
    if data is not None:
        return Path(data).expanduser()
    recorded = loaded.summary.get("data") or loaded.train.data
    if recorded is None:
        from localign.data.pretrain import resolve_data

        return resolve_data(None)
    return Path(recorded)


# --------------------------------------------------------------------------------------------------
# running one task
# --------------------------------------------------------------------------------------------------
def _run_task(protocol: R.Protocol, variant: str | None, s: Subject, cfg: EvalConfig, stores: StoreCache,
              progress: bool) -> list[ProtocolResult]:
    ctx = R.TaskContext(encoder=s.encoder, prep=s.prep, prepared=s.prepared, model=s.model, config=cfg, stores=stores,
                        variant=variant, device=cfg.device, progress=progress)
    return protocol.run(ctx)


def _evaluate_subject(s: Subject, cfg: EvalConfig, stores: StoreCache, progress: bool, log_book: dict[str, list]) -> list[dict]:
    rows: list[dict] = []
    for task in cfg.tasks:
        protocol = R.get_protocol(task)
        for tidy_task, variant in protocol.tidy_tasks(cfg):
            where = {"run": s.run, "method": s.method, "task": tidy_task}
            if protocol.needs_text and s.model is None:
                log_book["skipped"].append({**where, "reason": "a baseline has no text tower"})
                continue
            log.info("%s (%s): %s", s.run, s.method, tidy_task)
            t0 = time.perf_counter()
            try:
                results = _run_task(protocol, variant, s, cfg, stores, progress)
            except TaskUnavailable as err:
                log.warning("%s (%s): %s skipped: %s", s.run, s.method, tidy_task, err)
                log_book["skipped"].append({**where, "reason": str(err)})
                continue
            seconds = time.perf_counter() - t0
            log_book["timings"].append({**where, "seconds": round(seconds, 2), "repetitions": len(results)})
            for r in results:
                rows.extend({**where, "fraction": r.fraction, "seed": r.seed, "metric": k, "value": float(v)} for k, v in r.metrics.items())
                if r.details is not None:
                    log_book["details"].append((where, r.details))
    return rows


def _baseline_subjects(runs: list[Subject], cfg: EvalConfig, stores: StoreCache, progress: bool,
                       log_book: dict[str, list]) -> list[Subject]:
    """Baseline encoders, built once per distinct (encoder config, preprocessing, dataset) of the runs."""
    groups: dict[str, Subject] = {}
    for s in runs:
        key = json.dumps({"encoder": config_to_dict(s.encoder.config) | {"weights": None}, "prep": dataclasses.asdict(s.prep),
                          "data": str(s.prepared.root)}, sort_keys=True)
        groups.setdefault(key, s)
    out = []
    for template in groups.values():
        # "-": no pretraining run; several groups are told apart by the first run whose encoder each copies
        label = "-" if len(groups) == 1 else f"-encoder-of-{template.run}"
        for name in cfg.baselines:
            method = B.BASELINES[name]
            t0 = time.perf_counter()
            try:
                if name == "random":
                    encoder = B.random_init_encoder(template.encoder.config, cfg.baseline_seed)
                elif name == "imagenet":
                    encoder = B.imagenet_encoder(template.encoder.config)
                else:
                    encoder = B.supervised_encoder(template.encoder.config, template.prep, template.prepared, class_names=cfg.labels,
                                                   blank=cfg.blank, classifier=cfg.classifier_tuned, epochs=cfg.supervised_epochs,
                                                   seed=cfg.baseline_seed, stores=stores, device=cfg.device, progress=progress)
            except (B.BaselineUnavailable, TaskUnavailable) as err:
                log.warning("baseline %s skipped: %s", method, err)
                log_book["skipped"].append({"run": label, "method": method, "task": "*", "reason": str(err)})
                continue
            log_book["timings"].append({"run": label, "method": method, "task": "(build baseline)",
                                        "seconds": round(time.perf_counter() - t0, 2), "repetitions": 1})
            out.append(Subject(label, method, encoder.to(cfg.device), template.prep, template.prepared))
    return out


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------
def evaluate_runs(
    run_dirs: Sequence[str | Path],
    tasks: str | Sequence[str] | None = None,
    fractions: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    data: str | Path | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    baselines: Sequence[str] | None = None,
    config: EvalConfig | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run the downstream protocols on pretrained runs and baselines; return (and write) tidy results.

    :param run_dirs: run folders written by ``localign pretrain`` (``config.yaml``, ``encoder.pt``,
        ``checkpoints/best.pt``, ``summary.json``).
    :param tasks: task names or aliases (:data:`TASKS`, the registered protocols; default all).
    :param fractions: label fractions of the protocols that use them (probe, linear segmentation; default 0.01, 0.1, 1).
    :param seeds: downstream seeds (default 0, 1, 2).
    :param data: dataset to evaluate on, a prepared folder or a SynthCXR root (default: the one each
        run was trained on, from its ``summary.json`` / ``config.yaml``).
    :param device: torch device (default ``cpu``).
    :param out: CSV path for the tidy rows; ``<out>.json`` (resolved config, runs, timings, skipped
        tasks with reasons, versions) and ``<out stem>_details/`` (per-phrase CNRs) go next to it.
    :param baselines: any of ``random``, ``supervised``, ``imagenet`` (default all three; ``()`` none).
    :param config: an :class:`EvalConfig`; the explicit arguments above override its fields.
    :return: the validated tidy table (columns :data:`~localign.eval.stats.TIDY_COLUMNS`);
        ``attrs["skipped"]`` and ``attrs["timings"]`` hold the skipped tasks and per-task seconds.
    """
    cfg = config or EvalConfig()
    overrides = {k: v for k, v in dict(tasks=tasks, fractions=fractions, seeds=seeds, device=device, baselines=baselines).items()
                 if v is not None}
    if "tasks" in overrides:
        overrides["tasks"] = resolve_tasks(overrides["tasks"])
    for key in ("fractions", "seeds", "baselines"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    cfg = dataclasses.replace(cfg, **overrides)
    if not run_dirs:
        raise ValueError("run_dirs: no run folder given")
    paths = [check_run_dir(d) for d in run_dirs]
    names = _run_names(paths)
    if data is not None:
        from localign.data.demo import resolve_prepared

        # the same data roots as pretraining: a prepared folder or a raw SynthCXR root (prepared once)
        data = resolve_prepared(data, progress=progress)

    threads = torch.get_num_threads()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _evaluate(paths, names, data, out, cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _evaluate(paths: list[Path], names: list[str], data: str | Path | None, out: str | Path | None, cfg: EvalConfig,
              progress: bool) -> pd.DataFrame:
    from localign.train.runs import load_run

    t_start = time.perf_counter()
    stores = StoreCache(cfg.max_cache_bytes, progress)
    datasets: dict[Path, PreparedDataset] = {}
    log_book: dict[str, list] = {"skipped": [], "timings": [], "details": []}
    run_info, subjects = [], []
    for path, name in zip(paths, names):
        loaded = load_run(path, checkpoint=cfg.checkpoint, device=cfg.device)
        prep = loaded.preprocessing
        root = _data_root(loaded, data)
        if not root.is_dir():
            raise FileNotFoundError(f"run {name} was trained on the prepared dataset {root}, which does not exist here; "
                                    "pass data= (--data) to evaluate on another copy")
        if root not in datasets:
            datasets[root] = load_prepared(root)
        subjects.append(Subject(name, loaded.method.name, loaded.model.image_encoder, prep, datasets[root], loaded.model))
        run_info.append({"run": name, "method": loaded.method.name, "run_dir": str(path.resolve()), "data": str(root),
                         "preprocessing": dataclasses.asdict(prep), "image_encoder": config_to_dict(loaded.method.image)})

    rows = []
    for s in subjects:
        rows += _evaluate_subject(s, cfg, stores, progress, log_book)
    baseline_subjects = _baseline_subjects(subjects, cfg, stores, progress, log_book) if cfg.baselines else []
    for s in baseline_subjects:
        rows += _evaluate_subject(s, cfg, stores, progress, log_book)

    df = validate_tidy(pd.DataFrame(rows, columns=list(TIDY_COLUMNS)))
    df.attrs["skipped"] = list(log_book["skipped"])
    df.attrs["timings"] = list(log_book["timings"])
    if out is not None:
        _write_outputs(Path(out), df, cfg, run_info, log_book, time.perf_counter() - t_start)
    return df


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _write_outputs(out: Path, df: pd.DataFrame, cfg: EvalConfig, run_info: list[dict], log_book: dict[str, list], seconds: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    detail_files = []
    if log_book["details"]:
        folder = out.parent / f"{out.stem}_details"
        folder.mkdir(exist_ok=True)
        for where, table in log_book["details"]:
            path = folder / f"{_slug(where['run'])}__{_slug(where['method'])}__{_slug(where['task'])}.csv"
            table.to_csv(path, index=False)
            detail_files.append({**where, "path": str(path)})
    info = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": str(out),
        "n_rows": int(len(df)),
        "config": cfg.to_dict(),
        "runs": run_info,
        "timings": log_book["timings"],
        "skipped": log_book["skipped"],
        "details": detail_files,
        "wall_time_s": round(seconds, 2),
        "versions": {"localign": localign.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "device": cfg.device,
        "torch_threads": torch.get_num_threads(),
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    log.info("wrote %s (%d rows) and %s", out, len(df), out.with_suffix(".json"))
