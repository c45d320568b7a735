"""``pretrain(config) -> RunResult``: the one code path of the CLI, the notebooks and ``torchrun``.

A run is three steps over one :class:`RunState` record: :func:`setup` (configs, data, model,
optimisers, resume), :func:`fit` (epochs of training and validation, checkpoints, stopping) and
:func:`finalize` (the encoder export with its :class:`~localign.data.transforms.Preprocessing`
record, ``summary.json``). The files are those of :mod:`localign.train.run_folder`; the engine
draws no figure (the caller that presents the run does, e.g. ``localign pretrain``).

Under ``torchrun --nproc_per_node=N`` every rank runs this function: the contrastive batch is split
across ranks and gathered with gradients inside the objectives, only rank 0 validates (over the
whole validation split, single-process semantics) and writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

import localign
from localign import distributed as D
from localign.data.manifest import PreparedDataset, load_prepared
from localign.data.pretrain import Batch, Collate, EpochSampler, PixelStats, PretrainDataset, pixel_stats, report_tokens, resolve_data
from localign.data.text import SpecialTokens
from localign.data.tokenize import load_tokenizer
from localign.data.transforms import Preprocessing
from localign.models import build_model
from localign.models.config import MethodConfig
from localign.models.methods.base import PretrainModel
from localign.train.checkpoint import CHECKPOINT_FORMAT, RESUME_HINT, atomic_save, export_image_encoder, load_checkpoint, rng_state, set_rng_state
from localign.train.config import TrainConfig, flat_train_config, resolve_method
from localign.train.optim import OptimizerSet, build_optimizers, clip_gradients, steps_per_epoch
from localign.train.run_folder import MetricsLog, RunFolder
from localign.train.runtime import amp_settings, init_distributed, log_to_run_folder, resolve_device, seed_everything
from localign.train.validation import evaluate_feature_rank, evaluate_loss, evaluate_retrieval

log = logging.getLogger("localign.train")

# Fields of TrainConfig that may change when resuming (they steer the run, not its result).
RESUMABLE_CHANGES = {"resume", "max_steps", "overrides.optim.max_epochs", "progress", "num_workers", "log_every", "checkpoint_every", "early_stopping",
                     "text_cache", "recipe", "keep_last"}
# Validation values that describe the measurement rather than the model: not worth a log line.
_QUIET_VALUES = ("pool_size", "n_chunks", "n_pairs", "n_dropped", "feature_dim", "feature_rank_max")


@dataclass
class RunResult:
    """What :func:`pretrain` returns: the run folder and its contents, already loaded."""

    run_dir: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    history: pd.DataFrame

    def curve(self, name: str, phase: str | None = None) -> pd.DataFrame:
        """Rows of one metric (e.g. ``"loss"`` or ``"val/r_sum"``) ordered by step."""
        h = self.history[self.history["name"] == name]
        if phase is not None:
            h = h[h["phase"] == phase]
        return h.sort_values("step").reset_index(drop=True)


@dataclass
class Counters:
    """Where a run stands, stored in every checkpoint as ``state`` and restored on resume."""

    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    samples: int = 0
    train_time: float = 0.0


@dataclass
class RunState:
    """Everything :func:`setup` builds and :func:`fit` / :func:`finalize` use, in one record."""

    config: TrainConfig
    method: MethodConfig
    folder: RunFolder
    device: torch.device
    rank: int
    world: int
    main: bool
    t_start: float
    full_config: dict[str, Any]
    data_root: Path
    stats: PixelStats
    train_ds: PretrainDataset
    val_full_ds: PretrainDataset
    train_loader: DataLoader
    val_loss_loader: DataLoader
    val_full_loader: DataLoader
    sampler: EpochSampler
    batch_size: int
    per_rank: int
    steps_per_epoch: int
    monitor: str
    mode: str  # "max" or "min": the better direction of the monitored metric
    model: PretrainModel
    ddp: nn.Module  # the model, or its DistributedDataParallel wrapper
    opt: OptimizerSet
    scaler: torch.amp.GradScaler
    autocast: Callable[[], Any]
    metrics: MetricsLog | None  # rank 0 only
    counters: Counters = field(default_factory=Counters)

    def better(self, value: float) -> bool:
        best = self.counters.best
        return best is None or (value < best if self.mode == "min" else value > best)


def _check_resume_config(stored: dict, current: dict) -> None:
    # Each method override its own entry, so that the epochs (optim.max_epochs) may change.
    stored, current = flat_train_config(stored), flat_train_config(current)
    diffs = sorted(k for k in set(stored) | set(current) if k not in RESUMABLE_CHANGES and stored.get(k) != current.get(k))
    if diffs:
        detail = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in diffs)
        raise ValueError(f"cannot resume: the run folder was made with a different configuration ({detail})")


# --------------------------------------------------------------------------------------------------
# pretrain = setup, fit, finalize
# --------------------------------------------------------------------------------------------------


def pretrain(config: TrainConfig) -> RunResult:
    """Pretrain ``config.method`` on ``config.data`` into ``config.out`` (see the module docstring)."""
    t_start = time.time()
    device = resolve_device(config)
    created_group = init_distributed(device)
    try:
        method: MethodConfig = resolve_method(config)
        folder = RunFolder(Path(config.out))
        resume_path = folder.checkpoint_path("last")
        if config.resume and not resume_path.is_file():
            hint = (f"; this run finished without keeping it (keep_last off): copy {folder.checkpoint_path('best')} over it "
                    "to continue from the best epoch" if folder.checkpoint_path("best").is_file() else "")
            raise FileNotFoundError(f"--resume: no checkpoint to resume from at {resume_path}{hint}")
        if D.is_main_process():
            folder.create(resume=config.resume)
        if D.world_size() > 1:
            dist.barrier()
        handler = log_to_run_folder(folder, D.is_main_process())
        try:
            run = setup(config, method, folder, device, t_start)
            return finalize(run, fit(run))
        finally:
            if handler is not None:
                logging.getLogger("localign").removeHandler(handler)
                handler.close()
    finally:
        if created_group:
            dist.destroy_process_group()


def setup(config: TrainConfig, method: MethodConfig, folder: RunFolder, device: torch.device, t_start: float) -> RunState:
    """Configs, data, model and optimisers of a run, restored from ``last.pt`` when resuming."""
    rank, world, main = D.rank(), D.world_size(), D.is_main_process()
    optim_cfg = method.optim
    full_config = {"train": config.to_dict(), "method": method.to_dict()}
    if config.resume:
        stored = load_checkpoint(folder.checkpoint_path("last"), hint=RESUME_HINT)["config"]
        _check_resume_config(stored["train"], full_config["train"])
    if main:
        folder.write_config(full_config)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    seed_everything(config.seed)

    # --- data -------------------------------------------------------------------------------------
    data_root = resolve_data(config.data, progress=config.progress and main)
    prepared = load_prepared(data_root)
    tokenizer = load_tokenizer(method.text.model)
    special = SpecialTokens.from_tokenizer(tokenizer)
    max_len = method.text_input.max_length
    tokens = report_tokens(prepared, tokenizer, max_len, progress=config.progress and main)
    swapped = report_tokens(prepared, tokenizer, max_len, swapped=True) if config.augment.hflip_prob > 0 and config.augment.swap_laterality else None
    stats = pixel_stats(prepared) if config.augment.normalize == "dataset" else PixelStats(0.5, 0.5)
    common = dict(tokens=tokens, text_config=method.text_input, image_size=method.image.input_size, augment=config.augment, stats=stats,
                  seed=config.seed)
    train_ds = PretrainDataset(prepared, "train", text_view="train", swapped_tokens=swapped, max_studies=config.max_train_studies, **common)
    val_loss_ds = PretrainDataset(prepared, "validate", text_view="fixed", **common)
    val_full_ds = PretrainDataset(prepared, "validate", text_view="full", **common)
    batch_size = optim_cfg.batch_size
    if batch_size % world != 0:
        raise ValueError(f"batch size {batch_size} (the contrastive batch) is not divisible by the {world} ranks")
    per_rank = batch_size // world
    if len(train_ds) < batch_size:
        raise ValueError(f"the training split has {len(train_ds)} studies, fewer than one batch of {batch_size}")
    collate = Collate(method.text_input, special)
    sampler = EpochSampler(len(train_ds), seed=config.seed, rank=rank, world_size=world)
    loader_gen = torch.Generator().manual_seed(config.seed)  # keeps torch's global RNG out of the loader
    train_loader = DataLoader(train_ds, batch_size=per_rank, sampler=sampler, collate_fn=collate, num_workers=config.num_workers,
                              drop_last=True, generator=loader_gen, pin_memory=device.type == "cuda")
    val_bs = min(batch_size, len(val_loss_ds))
    # Contrastive losses depend on the batch: the last incomplete validation batch is dropped (as LIMITR).
    # Every loader has its own generator: creating an iterator would otherwise draw from torch's
    # global RNG (dropout's stream), and a validation pass would change what training sees next.
    val_loss_loader = DataLoader(val_loss_ds, batch_size=val_bs, shuffle=False, collate_fn=collate, num_workers=config.num_workers,
                                 drop_last=True, generator=torch.Generator().manual_seed(config.seed))
    val_full_loader = DataLoader(val_full_ds, batch_size=val_bs, shuffle=False, collate_fn=collate, num_workers=config.num_workers,
                                 generator=torch.Generator().manual_seed(config.seed))
    spe = steps_per_epoch(len(sampler) // per_rank, optim_cfg.accumulate)
    total_steps = spe * optim_cfg.max_epochs if config.max_steps is None else min(config.max_steps, spe * optim_cfg.max_epochs)
    monitor, mode = optim_cfg.monitor, "max" if optim_cfg.monitor.endswith(("r_sum", "R@1", "R@5", "R@10", "mrr")) else "min"

    # --- model and optimisation -------------------------------------------------------------------
    model = build_model(method).to(device)
    if method.text.freeze and config.text_cache:
        model.text_encoder.state_cache = _text_state_cache(model, prepared, tokens, swapped, method, special, main, world, config.progress)
    opt = build_optimizers(model, optim_cfg, spe, total_steps, monitor_mode=mode)
    ddp: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # Ablation presets leave some heads out of the loss (weight 0): allow unused parameters.
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    amp_dtype, use_scaler = amp_settings(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else contextlib.nullcontext

    counters, metrics_rows = Counters(), None
    if config.resume:
        resume_path = folder.checkpoint_path("last")
        ckpt = load_checkpoint(resume_path, map_location=device, hint=RESUME_HINT)
        if ckpt["config"]["method"] != method.to_dict():
            raise ValueError(f"cannot resume {resume_path}: its method config differs from this run's")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        scaler.load_state_dict(ckpt["scaler"])
        counters = dataclasses.replace(counters, **ckpt["state"])
        set_rng_state(ckpt["rng"])
        metrics_rows = ckpt.get("metrics_rows")
        log.info("resumed from %s at epoch %d, step %d", resume_path, counters.epoch, counters.step)
    metrics = None
    if main:
        metrics = MetricsLog(folder.metrics_path, truncate_after_step=counters.step if config.resume else None,
                             keep_rows=metrics_rows if config.resume else None)
        log.info("method %s (%s) on %s: %d train / %d validate studies, batch %d x accumulate %d, %d steps/epoch, %d ranks, device %s",
                 method.name, method.family, data_root, len(train_ds), len(val_full_ds), batch_size, optim_cfg.accumulate, spe, world, device)
    return RunState(config=config, method=method, folder=folder, device=device, rank=rank, world=world, main=main, t_start=t_start,
                    full_config=full_config, data_root=Path(data_root), stats=stats, train_ds=train_ds, val_full_ds=val_full_ds,
                    train_loader=train_loader, val_loss_loader=val_loss_loader, val_full_loader=val_full_loader, sampler=sampler,
                    batch_size=batch_size, per_rank=per_rank, steps_per_epoch=spe, monitor=monitor, mode=mode, model=model, ddp=ddp,
                    opt=opt, scaler=scaler, autocast=autocast, metrics=metrics, counters=counters)


def fit(run: RunState) -> str:
    """Train and validate epoch by epoch until ``max_epochs``, ``max_steps`` or early stopping;
    returns why it stopped (``max_epochs``, ``max_steps`` or ``early_stopping``)."""
    optim_cfg, c = run.method.optim, run.counters
    stop_reason = "max_epochs"
    epoch = c.epoch
    while epoch < optim_cfg.max_epochs:
        run.sampler.set_epoch(epoch, skip=c.step_in_epoch * optim_cfg.accumulate * run.per_rank)
        run.train_ds.set_epoch(epoch)
        reached = train_epoch(run, epoch)
        value = validate(run, epoch)
        improved = False
        if not reached or c.step_in_epoch >= run.steps_per_epoch:
            # Schedules and early stopping see whole epochs only: a run stopped mid-epoch by
            # max_steps and resumed later then follows exactly the uninterrupted run.
            for sched in run.opt.epoch_schedulers.values():
                sched.step(value)
            improved = run.better(value)
            if improved:
                c.best, c.best_epoch, c.bad_epochs = value, epoch, 0
            else:
                c.bad_epochs += 1
            c.epoch, c.step_in_epoch = epoch + 1, 0
        if run.main:
            # best.pt first: a run killed between the two saves resumes from the previous last.pt,
            # validates this epoch again and rewrites best.pt (the other order could leave it stale).
            if improved or not run.folder.checkpoint_path("best").is_file():
                save_checkpoint(run, "best")
            save_checkpoint(run, "last")
        if reached:
            stop_reason = "max_steps"
            break
        if run.config.early_stopping and c.bad_epochs > optim_cfg.patience:
            stop_reason = "early_stopping"
            log.info("early stopping after epoch %d: no improvement of %s for %d epochs", epoch, run.monitor, c.bad_epochs)
            break
        epoch += 1
    if run.world > 1:
        dist.barrier()
    return stop_reason


def finalize(run: RunState, stop_reason: str) -> RunResult:
    """Export the best epoch's encoder with its Preprocessing record and write ``summary.json`` (rank 0)."""
    folder, method, config, c = run.folder, run.method, run.config, run.counters
    summary: dict[str, Any] = {}
    history = folder.read_history()
    if run.main:
        best = load_checkpoint(folder.checkpoint_path("best"), map_location="cpu")
        best_model = build_model(method)
        best_model.load_state_dict(best["model"])
        preprocessing = Preprocessing(input_size=method.image.input_size, normalize=config.augment.normalize, mean=run.stats.mean,
                                      std=run.stats.std, in_channels=method.image.in_channels)
        export_image_encoder(best_model.image_encoder, folder.encoder_path, preprocessing,
                             meta={"method": method.name, "family": method.family, "epoch": best["state"]["epoch"]})
        val_rows = history[history["phase"] == "val"]
        final_vals = val_rows[val_rows["step"] == val_rows["step"].max()].groupby("name")["value"].last().to_dict() if len(val_rows) else {}
        if c.best_epoch is None:  # stopped before a whole epoch: best.pt holds the last validation
            best_vals = final_vals
        else:
            best_vals = val_rows[val_rows["epoch"] == c.best_epoch].groupby("name")["value"].last().to_dict()
        pool = config.val_retrieval_pool or len(run.val_full_ds)
        summary = {
            "method": method.name, "family": method.family, "run_dir": str(folder.root.resolve()), "data": str(run.data_root.resolve()),
            "n_train_studies": len(run.train_ds), "n_validate_studies": len(run.val_full_ds), "batch_size": run.batch_size,
            "accumulate": method.optim.accumulate, "epochs_completed": c.epoch, "steps": c.step, "stopped": stop_reason,
            "monitor": run.monitor, "best_epoch": c.best_epoch, "best": best_vals, "final": final_vals,
            "retrieval_pool": pool, "chance_R@1": 100.0 / pool,
            "train_samples_per_s": c.samples / max(c.train_time, 1e-9),
            "wall_time_s": time.time() - run.t_start, "device": str(run.device), "world_size": run.world, "seed": config.seed,
            "unreadable_images": len(run.train_ds.read_errors), "versions": {"localign": localign.__version__, "torch": torch.__version__,
                                                                            "python": platform.python_version()},
        }
        folder.write_summary(summary)
        log.info("done: %s", json.dumps({k: summary[k] for k in ("stopped", "best_epoch", "steps", "wall_time_s")}))
        if not config.keep_last:
            folder.checkpoint_path("last").unlink(missing_ok=True)
            log.info("removed %s (keep_last is off); %s and the exported encoder stay", folder.checkpoint_path("last"),
                     folder.checkpoint_path("best"))
    return RunResult(run_dir=folder.root, config=run.full_config, summary=summary, history=history)


def save_checkpoint(run: RunState, name: str) -> None:
    """``checkpoints/<name>.pt``: everything :func:`setup` needs to resume (rank 0)."""
    atomic_save({"format": CHECKPOINT_FORMAT, "version": 1, "config": run.full_config, "model": run.model.state_dict(),
                 "optim": run.opt.state_dict(), "scaler": run.scaler.state_dict(), "state": dataclasses.asdict(run.counters),
                 "rng": rng_state(), "metrics_rows": run.metrics.rows if run.metrics is not None else None},
                run.folder.checkpoint_path(name))


def validate(run: RunState, epoch: int) -> float:
    """Validation loss, retrieval and feature rank on rank 0 (whole split), logged to ``metrics.csv``;
    returns the monitored value, which every rank learns."""
    val: dict[str, float] = {}
    if run.main:
        t0 = time.time()
        model, loader, device, autocast = run.model, run.val_full_loader, run.device, run.autocast
        val = {f"val/{k}": v for k, v in evaluate_loss(model, run.val_loss_loader, device, autocast).items()}
        val.update({f"val/{k}": v for k, v in evaluate_retrieval(model, loader, device, run.config.val_retrieval_pool, autocast).items()})
        val.update({f"val/{k}": v for k, v in evaluate_feature_rank(model, loader, device, autocast=autocast).items()})
        val["val/time_s"] = time.time() - t0
        run.metrics.write(run.counters.step, epoch, "val", val)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k[4:]}={v:.4g}" for k, v in val.items() if not k.endswith(_QUIET_VALUES)))
        model.train()
        if run.monitor not in val:
            raise ValueError(f"monitored metric {run.monitor!r} is not produced by validation (it gives {sorted(val)})")
    value = val.get(run.monitor, float("nan"))
    if run.world > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        value = box[0]
    return value


def train_epoch(run: RunState, epoch: int) -> bool:
    """One epoch (or its remainder after a resume). Returns True if ``max_steps`` was reached."""
    model, config, c, opt, scaler = run.model, run.config, run.counters, run.opt, run.scaler
    optim_cfg = run.method.optim
    model.train()
    accumulate = optim_cfg.accumulate
    interval: dict[str, float] = defaultdict(float)
    n_interval, t_interval, micro = 0, time.time(), 0
    bar = None
    if run.main and config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(run.train_loader), desc=f"epoch {epoch}", unit="batch", leave=False)

    def optimizer_step() -> float:
        for o in opt.optimizers.values():
            scaler.unscale_(o)
        grad_norm = clip_gradients(model, optim_cfg.grad_clip)
        if not math.isfinite(grad_norm):
            log.warning("step %d: non-finite gradient norm (%s); the step is skipped", c.step, grad_norm)
        for o in opt.optimizers.values():
            scaler.step(o)
        scaler.update()
        opt.zero_grad()
        for s in opt.step_schedulers.values():
            s.step()
        c.step += 1
        c.step_in_epoch += 1
        return grad_norm

    def log_step(grad_norm: float) -> None:
        nonlocal n_interval, t_interval
        if run.main and (c.step % config.log_every == 0 or c.step_in_epoch == 1):
            elapsed = time.time() - t_interval
            row = {k: v / n_interval for k, v in interval.items()}
            row["grad_norm"] = grad_norm
            row["samples_per_s"] = n_interval * run.train_loader.batch_size * run.world / max(elapsed, 1e-9)
            row.update(opt.lrs())
            run.metrics.write(c.step, epoch, "train", row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.3f}", sps=f"{row['samples_per_s']:.1f}")
            interval.clear()
            n_interval, t_interval = 0, time.time()

    def after_step(grad_norm: float) -> bool:
        """Log, checkpoint (every ``checkpoint_every`` steps); True when ``max_steps`` is reached."""
        nonlocal t_epoch
        log_step(grad_norm)
        if run.main and config.checkpoint_every and c.step % config.checkpoint_every == 0:
            c.train_time += time.time() - t_epoch
            t_epoch = time.time()
            save_checkpoint(run, "last")
        if config.max_steps is not None and c.step >= config.max_steps:
            c.train_time += time.time() - t_epoch
            if bar is not None:
                bar.close()
            return True
        return False

    opt.zero_grad()
    t_epoch = time.time()
    n_batches = len(run.train_loader)
    for batch in run.train_loader:
        batch: Batch = batch.to(run.device)
        # Under DDP, gradients are all-reduced only on the micro-batch that ends an accumulation window.
        syncs = (micro + 1) % accumulate == 0 or micro + 1 == n_batches
        with (run.ddp.no_sync() if run.world > 1 and not syncs else contextlib.nullcontext()):
            with run.autocast():
                out = run.ddp(batch.images, batch.text, batch.study_ids)
            scaler.scale(out.loss / accumulate).backward()
        micro += 1
        interval["loss"] += out.loss.item()
        for k, v in out.terms.items():
            interval[k] += float(v)
        n_interval += 1
        c.samples += len(batch) * run.world
        if bar is not None:
            bar.update(1)
        if micro % accumulate != 0:
            continue
        if after_step(optimizer_step()):
            return True
    if micro % accumulate != 0:
        # The epoch ended inside an accumulation window: step on what was accumulated (as Lightning
        # does), so that a short epoch still trains and steps_per_epoch = ceil(batches / accumulate).
        # It is a step like any other: it logs, checkpoints and counts towards max_steps (with fewer
        # micro-batches per epoch than `accumulate`, it is the only step of every epoch).
        if after_step(optimizer_step()):
            return True
    c.train_time += time.time() - t_epoch
    if bar is not None:
        bar.close()
    return False


def _text_state_cache(model: PretrainModel, prepared: PreparedDataset, tokens, swapped, method: MethodConfig, special: SpecialTokens, main: bool, world: int,
                      progress: bool):
    """The token-state cache of a frozen text tower over every sequence of the prepared dataset.

    Rank 0 computes it (once per tower, ``last_layers`` and dataset, in the cache folder); the other
    ranks wait and load it.
    """
    from localign.data.text import tower_sequences
    from localign.models.text_cache import build_token_state_cache
    from localign.paths import cache_dir

    reports = [tokens.sentences(s) for s in prepared.manifest["study_id"]]
    if swapped is not None:
        reports += [swapped.sentences(s) for s in prepared.manifest["study_id"]]
    sequences = tower_sequences(reports, method.text_input, special)
    root = cache_dir() / "text_states"
    t0 = time.time()
    if main:
        cache = build_token_state_cache(model.text_encoder, sequences, root, progress=progress)
    if world > 1:
        dist.barrier()
    if not main:
        cache = build_token_state_cache(model.text_encoder, sequences, root)
    if main:
        log.info("frozen text tower: %d cached sequences (%.1f s)", len(cache), time.time() - t0)
    return cache
