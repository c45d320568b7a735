"""``pretrain(config) -> RunResult``: the one code path of the CLI, the notebooks and ``torchrun``.

A run folder holds::

    config.yaml          the TrainConfig and the resolved MethodConfig
    metrics.csv          long format: step, epoch, phase (train/val), name, value
    checkpoints/last.pt  everything needed to resume (atomic writes)
    checkpoints/best.pt  the best epoch on the monitored metric
    encoder.pt           image backbone + preprocessing of the best epoch (no training classes needed)
    figures/             training curves (PNG)
    summary.json         best/final metrics, throughput, wall time, seeds, versions
    train.log            the readable log

Under ``torchrun --nproc_per_node=N`` every rank runs this function: the contrastive batch is split
across ranks and gathered with gradients inside the objectives, only rank 0 validates (over the
whole validation split, single-process semantics) and writes files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import logging
import math
import os
import platform
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader

import localign
from localign import distributed as D
from localign.config import config_to_dict
from localign.data.manifest import load_prepared
from localign.data.text import SpecialTokens
from localign.data.tokenize import load_tokenizer
from localign.metrics import effective_rank, recall_at_k
from localign.models import build_model
from localign.models.config import MethodConfig
from localign.models.methods.base import PretrainModel
from localign.paths import atomic_write_text
from localign.train.checkpoint import CHECKPOINT_FORMAT, RESUME_HINT, atomic_save, export_image_encoder, load_checkpoint, remove_stale_temporaries, rng_state, set_rng_state, unwrap
from localign.train.config import TrainConfig, resolve_method
from localign.train.data import Batch, Collate, EpochSampler, PixelStats, PretrainDataset, pixel_stats, report_tokens, resolve_data
from localign.train.optim import OptimizerSet, build_optimizers, clip_gradients, steps_per_epoch

log = logging.getLogger("localign.train")

# Fields of TrainConfig that may change when resuming (they steer the run, not its result).
RESUMABLE_CHANGES = {"resume", "max_steps", "epochs", "progress", "num_workers", "log_every", "checkpoint_every", "early_stopping",
                     "text_cache", "recipe"}


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


# --------------------------------------------------------------------------------------------------
# Set-up helpers
# --------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device(config: TrainConfig) -> torch.device:
    if config.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", D.local_rank())
        return torch.device("cpu")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", D.local_rank())
    return device


def _init_distributed(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` describes in the environment; True if we created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True


def _amp(config: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler)."""
    mode = config.amp
    if mode not in ("auto", "off", "bf16", "fp16"):
        raise ValueError(f"amp must be auto, off, bf16 or fp16, got {mode!r}")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None, False
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode == "fp16" and device.type != "cuda":
        raise ValueError("fp16 mixed precision needs a CUDA device; use amp='bf16' or 'off' on CPU")
    return (torch.bfloat16, False) if mode == "bf16" else (torch.float16, True)


class MetricsLog:
    """Append-only long-format ``metrics.csv`` (rank 0); :attr:`rows` counts its data rows and is
    stored in every checkpoint."""

    columns = ("step", "epoch", "phase", "name", "value")

    def __init__(self, path: Path, truncate_after_step: int | None = None, keep_rows: int | None = None) -> None:
        self.path = path
        self.rows = 0
        if keep_rows is not None and path.is_file():
            # A resumed run keeps exactly the rows its checkpoint had seen: the killed run's later rows
            # (training rows, and the validation rows of an epoch whose end-of-epoch save was cut
            # short) are written again, so none is duplicated.
            with path.open(newline="") as f:
                lines = list(itertools.islice(csv.reader(f), keep_rows + 1))
            if len(lines) < keep_rows + 1:
                log.warning("%s has %d rows, fewer than the %d its checkpoint counted", path, max(len(lines) - 1, 0), keep_rows)
            out = io.StringIO()
            csv.writer(out).writerows([list(self.columns), *lines[1:]])
            atomic_write_text(path, out.getvalue())
            self.rows = len(lines[1:])
        elif truncate_after_step is not None and path.is_file():
            # A checkpoint without a row count (older localign): truncate by step.
            df = pd.read_csv(path)
            df = df[df["step"] <= truncate_after_step]
            df.to_csv(path, index=False)
            self.rows = len(df)
        elif truncate_after_step is None and keep_rows is None and path.is_file():
            path.unlink()
        if not path.is_file():
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(self.columns)

    def write(self, step: int, epoch: int, phase: str, values: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            w = csv.writer(f)
            for name, value in values.items():
                w.writerow((step, epoch, phase, name, f"{float(value):.8g}"))
        self.rows += len(values)


def _setup_logging(run_dir: Path, main: bool) -> logging.Handler | None:
    if not main:
        return None
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logging.getLogger("localign").addHandler(handler)
    logging.getLogger("localign").setLevel(logging.INFO)
    return handler


def _check_resume_config(stored: dict, current: dict) -> None:
    diffs = sorted(k for k in set(stored) | set(current) if k not in RESUMABLE_CHANGES and stored.get(k) != current.get(k))
    if diffs:
        detail = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in diffs)
        raise ValueError(f"cannot resume: the run folder was made with a different configuration ({detail})")


def concat_embeddings(chunks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate per-batch embedding dicts along dim 0, zero-padding dim 1 where lengths differ
    (words and sentences vary per batch; their masks pad with False)."""
    out = {}
    for key in chunks[0]:
        parts = [c[key] for c in chunks]
        if parts[0].dim() >= 2 and len({p.shape[1] for p in parts}) > 1:
            n = max(p.shape[1] for p in parts)
            parts = [torch.cat([p, p.new_zeros((p.shape[0], n - p.shape[1], *p.shape[2:]))], dim=1) for p in parts]
        out[key] = torch.cat(parts, dim=0)
    return out


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_retrieval(model: PretrainModel, loader: DataLoader, device: torch.device, pool: int | None = None,
                       autocast=contextlib.nullcontext) -> dict[str, float]:
    """Image↔report R@1/5/10 (both directions), median rank, MRR and r_sum over the loader's studies.

    The candidate pool is the whole split (``pool=None``) or consecutive chunks of ``pool`` pairs
    (LIMITR's protocol); the pool size is part of the result.
    """
    model.eval()
    images, reports = [], []
    with D.no_gather():
        for batch in loader:
            batch = batch.to(device)
            with autocast():
                images.append({k: v.float() for k, v in model.encode_images(batch.images).items()})
                reports.append({k: (v.float() if v.is_floating_point() else v) for k, v in model.encode_reports(batch.text).items()})
        img, rep = concat_embeddings(images), concat_embeddings(reports)
        scores = model.similarity(img, rep).float().cpu().numpy()
    return recall_at_k(scores, ks=(1, 5, 10), chunk_size=pool)


@torch.no_grad()
def evaluate_feature_rank(model: PretrainModel, loader: DataLoader, device: torch.device, variance: float = 0.99,
                          autocast=contextlib.nullcontext) -> dict[str, float]:
    """Effective rank of the pooled backbone features (what ``encoder.pt`` exports) of the loader's images.

    Components holding ``variance`` of the variance of the standardised features
    (:func:`~localign.metrics.effective_rank`): a collapse of the exported representation shows
    here even when the projected embeddings still retrieve.
    """
    model.eval()
    feats = []
    for batch in loader:
        with autocast():
            feats.append(model.image_encoder(batch.images.to(device)).pooled.float().cpu())
    x = torch.cat(feats).numpy()
    # The rank of N centred samples is at most N - 1: the bound the rank is read against.
    return {"feature_rank": float(effective_rank(x, variance)), "feature_dim": float(x.shape[1]),
            "feature_rank_max": float(min(x.shape[0] - 1, x.shape[1]))}


@torch.no_grad()
def evaluate_loss(model: PretrainModel, loader: DataLoader, device: torch.device, autocast=contextlib.nullcontext) -> dict[str, float]:
    """Mean objective over the loader's batches (eval mode, no augmentation), weighted by batch size."""
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    n = 0
    with D.no_gather():
        for batch in loader:
            batch = batch.to(device)
            with autocast():
                out = model(batch.images, batch.text, batch.study_ids)
            b = len(batch)
            sums["loss"] += float(out.loss) * b
            for k, v in out.terms.items():
                sums[k] += float(v) * b
            n += b
    return {k: v / max(n, 1) for k, v in sums.items()}


# --------------------------------------------------------------------------------------------------
# pretrain
# --------------------------------------------------------------------------------------------------


def pretrain(config: TrainConfig) -> RunResult:
    """Pretrain ``config.method`` on ``config.data`` into ``config.out`` (see the module docstring)."""
    t_start = time.time()
    device = _device(config)
    created_group = _init_distributed(device)
    rank, world, main = D.rank(), D.world_size(), D.is_main_process()
    try:
        return _pretrain(config, device, rank, world, main, t_start)
    finally:
        if created_group:
            dist.destroy_process_group()


def _pretrain(config: TrainConfig, device: torch.device, rank: int, world: int, main: bool, t_start: float) -> RunResult:
    method: MethodConfig = resolve_method(config)
    optim_cfg = method.optim
    run_dir = Path(config.out)
    ckpt_dir = run_dir / "checkpoints"
    resume_path = ckpt_dir / "last.pt"
    if config.resume and not resume_path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint to resume from at {resume_path}")
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "figures").mkdir(exist_ok=True)
        if config.resume:
            for tmp in remove_stale_temporaries(ckpt_dir) + remove_stale_temporaries(run_dir):  # left by a run killed while saving
                log.info("removed %s, a file a killed run did not finish writing", tmp)
    if world > 1:
        dist.barrier()
    handler = _setup_logging(run_dir, main)
    try:
        full_config = {"train": config.to_dict(), "method": method.to_dict()}
        if config.resume:
            stored = load_checkpoint(resume_path, hint=RESUME_HINT)["config"]
            _check_resume_config(stored["train"], full_config["train"])
        if main:
            (run_dir / "config.yaml").write_text(yaml.safe_dump(full_config, sort_keys=False))
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        seed_everything(config.seed)

        # --- data ---------------------------------------------------------------------------------
        data_root = resolve_data(config.data, progress=config.progress and main)
        prepared = load_prepared(data_root)
        tokenizer = load_tokenizer(method.text.model)
        special = SpecialTokens.from_tokenizer(tokenizer)
        max_len = method.text_input.max_length
        tokens = report_tokens(prepared, tokenizer, max_len, progress=config.progress and main)
        swapped = report_tokens(prepared, tokenizer, max_len, swapped=True) if config.augment.hflip_prob > 0 and config.augment.swap_laterality else None
        stats = pixel_stats(prepared) if config.augment.normalize == "dataset" else PixelStats(0.5, 0.5)
        size = method.image.input_size
        common = dict(tokens=tokens, text_config=method.text_input, image_size=size, augment=config.augment, stats=stats, seed=config.seed)
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
        n_micro = len(sampler) // per_rank
        spe = steps_per_epoch(n_micro, optim_cfg.accumulate)
        total_steps = spe * optim_cfg.max_epochs if config.max_steps is None else min(config.max_steps, spe * optim_cfg.max_epochs)
        monitor, mode = optim_cfg.monitor, "max" if optim_cfg.monitor.endswith(("r_sum", "R@1", "R@5", "R@10", "mrr")) else "min"

        # --- model and optimisation ---------------------------------------------------------------
        model = build_model(method).to(device)
        if method.text.freeze and config.text_cache:
            model.text_encoder.state_cache = _text_state_cache(model, prepared, tokens, swapped, method, special, main, world, config.progress)
        opt = build_optimizers(model, optim_cfg, spe, total_steps, monitor_mode=mode)
        ddp = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Ablation presets leave some heads out of the loss (weight 0): allow unused parameters.
            ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
        amp_dtype, use_scaler = _amp(config, device)
        scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else contextlib.nullcontext

        state = {"epoch": 0, "step": 0, "step_in_epoch": 0, "best": None, "best_epoch": None, "bad_epochs": 0, "samples": 0, "train_time": 0.0}
        if config.resume:
            ckpt = load_checkpoint(resume_path, map_location=device, hint=RESUME_HINT)
            if ckpt["config"]["method"] != method.to_dict():
                raise ValueError(f"cannot resume {resume_path}: its method config differs from this run's")
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optim"])
            scaler.load_state_dict(ckpt["scaler"])
            state.update(ckpt["state"])
            set_rng_state(ckpt["rng"])
            log.info("resumed from %s at epoch %d, step %d", resume_path, state["epoch"], state["step"])
        metrics = MetricsLog(run_dir / "metrics.csv", truncate_after_step=state["step"] if config.resume else None,
                             keep_rows=ckpt.get("metrics_rows") if config.resume else None) if main else None
        if main:
            log.info("method %s (%s) on %s: %d train / %d validate studies, batch %d x accumulate %d, %d steps/epoch, %d ranks, device %s",
                     method.name, method.family, data_root, len(train_ds), len(val_full_ds), batch_size, optim_cfg.accumulate, spe, world, device)

        def save(path: Path) -> None:
            atomic_save({"format": CHECKPOINT_FORMAT, "version": 1, "config": full_config, "model": model.state_dict(),
                         "optim": opt.state_dict(), "scaler": scaler.state_dict(), "state": dict(state), "rng": rng_state(),
                         "metrics_rows": metrics.rows if metrics is not None else None}, path)

        # --- loop ---------------------------------------------------------------------------------
        stop_reason = "max_epochs"
        epoch = state["epoch"]
        while epoch < optim_cfg.max_epochs:
            skip = state["step_in_epoch"] * optim_cfg.accumulate * per_rank
            sampler.set_epoch(epoch, skip=skip)
            train_ds.set_epoch(epoch)
            reached = _train_epoch(ddp, model, train_loader, opt, scaler, autocast, optim_cfg, config, state, metrics, device, epoch, world, main,
                                   save if main else None, ckpt_dir)
            # Validation (rank 0, whole split), then everyone learns the monitored value.
            val: dict[str, float] = {}
            if main:
                t0 = time.time()
                val = {f"val/{k}": v for k, v in evaluate_loss(model, val_loss_loader, device, autocast).items()}
                val.update({f"val/{k}": v for k, v in evaluate_retrieval(model, val_full_loader, device, config.val_retrieval_pool, autocast).items()})
                val.update({f"val/{k}": v for k, v in evaluate_feature_rank(model, val_full_loader, device, autocast=autocast).items()})
                val["val/time_s"] = time.time() - t0
                metrics.write(state["step"], epoch, "val", val)
                log.info("epoch %d: %s", epoch, ", ".join(f"{k[4:]}={v:.4g}" for k, v in val.items() if not k.endswith(("pool_size", "n_chunks", "n_pairs", "n_dropped", "feature_dim", "feature_rank_max"))))
                model.train()
            if main and monitor not in val:
                raise ValueError(f"monitored metric {monitor!r} is not produced by validation (it gives {sorted(val)})")
            value = val.get(monitor, float("nan"))
            if world > 1:
                box = [value]
                dist.broadcast_object_list(box, src=0)
                value = box[0]
            finished_epoch = not reached or state["step_in_epoch"] >= spe
            improved = False
            if finished_epoch:
                # Schedules and early stopping see whole epochs only: a run stopped mid-epoch by
                # max_steps and resumed later then follows exactly the uninterrupted run.
                for sched in opt.epoch_schedulers.values():
                    sched.step(value)
                improved = state["best"] is None or (value < state["best"] if mode == "min" else value > state["best"])
                if improved:
                    state.update(best=value, best_epoch=epoch, bad_epochs=0)
                else:
                    state["bad_epochs"] += 1
                state["epoch"] = epoch + 1
                state["step_in_epoch"] = 0
            if main:
                # best.pt first: a run killed between the two saves resumes from the previous last.pt,
                # validates this epoch again and rewrites best.pt (the other order could leave it stale).
                if improved or not (ckpt_dir / "best.pt").is_file():
                    save(ckpt_dir / "best.pt")
                save(ckpt_dir / "last.pt")
            if reached:
                stop_reason = "max_steps"
                break
            if config.early_stopping and state["bad_epochs"] > optim_cfg.patience:
                stop_reason = "early_stopping"
                log.info("early stopping after epoch %d: no improvement of %s for %d epochs", epoch, monitor, state["bad_epochs"])
                break
            epoch += 1
        if world > 1:
            dist.barrier()

        # --- outputs ------------------------------------------------------------------------------
        summary: dict[str, Any] = {}
        history = pd.read_csv(run_dir / "metrics.csv") if (run_dir / "metrics.csv").is_file() else pd.DataFrame(columns=MetricsLog.columns)
        if main:
            best = load_checkpoint(ckpt_dir / "best.pt", map_location="cpu")
            best_model = build_model(method)
            best_model.load_state_dict(best["model"])
            preprocessing = {"input_size": size, "geometry": "pad_resize", "normalize": config.augment.normalize,
                             "mean": stats.mean, "std": stats.std, "in_channels": method.image.in_channels}
            export_image_encoder(best_model.image_encoder, run_dir / "encoder.pt", preprocessing,
                                 meta={"method": method.name, "family": method.family, "epoch": best["state"]["epoch"]})
            val_rows = history[history["phase"] == "val"]
            final_vals = val_rows[val_rows["step"] == val_rows["step"].max()].groupby("name")["value"].last().to_dict() if len(val_rows) else {}
            if state["best_epoch"] is None:  # stopped before a whole epoch: best.pt holds the last validation
                best_vals = final_vals
            else:
                best_vals = val_rows[val_rows["epoch"] == state["best_epoch"]].groupby("name")["value"].last().to_dict()
            summary = {
                "method": method.name, "family": method.family, "run_dir": str(run_dir.resolve()), "data": str(Path(data_root).resolve()),
                "n_train_studies": len(train_ds), "n_validate_studies": len(val_full_ds), "batch_size": batch_size,
                "accumulate": optim_cfg.accumulate, "epochs_completed": state["epoch"], "steps": state["step"], "stopped": stop_reason,
                "monitor": monitor, "best_epoch": state["best_epoch"], "best": best_vals, "final": final_vals,
                "retrieval_pool": config.val_retrieval_pool or len(val_full_ds),
                "chance_R@1": 100.0 / (config.val_retrieval_pool or len(val_full_ds)),
                "train_samples_per_s": state["samples"] / max(state["train_time"], 1e-9),
                "wall_time_s": time.time() - t_start, "device": str(device), "world_size": world, "seed": config.seed,
                "unreadable_images": len(train_ds.read_errors), "versions": {"localign": localign.__version__, "torch": torch.__version__,
                                                                            "python": platform.python_version()},
            }
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            try:
                from localign.viz.training import plot_training_curves

                fig = plot_training_curves(history, title=f"{method.name} on {Path(data_root).name}", chance_r1=summary["chance_R@1"])
                fig.savefig(run_dir / "figures" / "training_curves.png", dpi=120, bbox_inches="tight")
                import matplotlib.pyplot as plt

                plt.close(fig)
            except Exception as err:  # a figure must never lose a finished run
                log.warning("could not draw the training curves: %s", err)
            log.info("done: %s", json.dumps({k: summary[k] for k in ("stopped", "best_epoch", "steps", "wall_time_s")}))
        return RunResult(run_dir=run_dir, config=full_config, summary=summary, history=history)
    finally:
        if handler is not None:
            logging.getLogger("localign").removeHandler(handler)
            handler.close()


def _text_state_cache(model: PretrainModel, prepared, tokens, swapped, method: MethodConfig, special: SpecialTokens, main: bool, world: int,
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


def _train_epoch(ddp: nn.Module, model: PretrainModel, loader: DataLoader, opt: OptimizerSet, scaler, autocast, optim_cfg, config: TrainConfig,
                 state: dict, metrics: MetricsLog | None, device: torch.device, epoch: int, world: int, main: bool, save, ckpt_dir: Path) -> bool:
    """One epoch (or its remainder after a resume). Returns True if ``max_steps`` was reached."""
    model.train()
    accumulate = optim_cfg.accumulate
    interval: dict[str, float] = defaultdict(float)
    n_interval, t_interval, micro = 0, time.time(), 0
    bar = None
    if main and config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(loader), desc=f"epoch {epoch}", unit="batch", leave=False)

    def optimizer_step() -> float:
        for o in opt.optimizers.values():
            scaler.unscale_(o)
        grad_norm = clip_gradients(model, optim_cfg.grad_clip)
        if not math.isfinite(grad_norm):
            log.warning("step %d: non-finite gradient norm (%s); the step is skipped", state["step"], grad_norm)
        for o in opt.optimizers.values():
            scaler.step(o)
        scaler.update()
        opt.zero_grad()
        for s in opt.step_schedulers.values():
            s.step()
        state["step"] += 1
        state["step_in_epoch"] += 1
        return grad_norm

    def log_step(grad_norm: float) -> None:
        nonlocal n_interval, t_interval
        if main and (state["step"] % config.log_every == 0 or state["step_in_epoch"] == 1):
            elapsed = time.time() - t_interval
            row = {k: v / n_interval for k, v in interval.items()}
            row["grad_norm"] = grad_norm
            row["samples_per_s"] = n_interval * loader.batch_size * world / max(elapsed, 1e-9)
            row.update(opt.lrs())
            metrics.write(state["step"], epoch, "train", row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.3f}", sps=f"{row['samples_per_s']:.1f}")
            interval.clear()
            n_interval, t_interval = 0, time.time()

    def after_step(grad_norm: float) -> bool:
        """Log, checkpoint (every ``checkpoint_every`` steps); True when ``max_steps`` is reached."""
        nonlocal t_epoch
        log_step(grad_norm)
        if save is not None and config.checkpoint_every and state["step"] % config.checkpoint_every == 0:
            state["train_time"] += time.time() - t_epoch
            t_epoch = time.time()
            save(ckpt_dir / "last.pt")
        if config.max_steps is not None and state["step"] >= config.max_steps:
            state["train_time"] += time.time() - t_epoch
            if bar is not None:
                bar.close()
            return True
        return False

    opt.zero_grad()
    t_epoch = time.time()
    n_batches = len(loader)
    for batch in loader:
        batch: Batch = batch.to(device)
        # Under DDP, gradients are all-reduced only on the micro-batch that ends an accumulation window.
        syncs = (micro + 1) % accumulate == 0 or micro + 1 == n_batches
        with (ddp.no_sync() if world > 1 and not syncs else contextlib.nullcontext()):
            with autocast():
                out = ddp(batch.images, batch.text, batch.study_ids)
            scaler.scale(out.loss / accumulate).backward()
        micro += 1
        interval["loss"] += out.loss.item()
        for k, v in out.terms.items():
            interval[k] += float(v)
        n_interval += 1
        state["samples"] += len(batch) * world
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
    state["train_time"] += time.time() - t_epoch
    if bar is not None:
        bar.close()
    return False
