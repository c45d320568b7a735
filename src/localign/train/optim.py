"""Per-part optimisers and learning-rate schedules of the papers.

- LoVT/CLIP*: one AdamW (lr 1e-4, wd 1e-6) and ``cosine_per_epoch``: ``CosineAnnealingLR`` with
  T_max = optimizer steps per epoch, stepped every optimizer step. Its closed form is *not* a warm
  restart: the rate decays to 0 over one epoch and climbs back over the next (period 2 epochs).
- ConVIRT, GLoRIA, LIMITR: Adam and ``plateau`` (ReduceLROnPlateau on the monitored validation
  metric, once per epoch).
- Local MI: AdamW for BERT (lr 2e-5, wd 0.1 except biases/LayerNorm, linear warm-up over 10 % of
  the steps then linear decay) and Adam (lr 5e-4) for the image encoder and the critic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from localign.models.config import OptimConfig
from localign.models.methods.base import PretrainModel

SCHEDULES = ("none", "cosine_per_epoch", "plateau", "linear_warmup")


@dataclass
class OptimizerSet:
    """Named optimisers with their schedules. ``step_schedulers`` step per optimizer step,
    ``epoch_schedulers`` once per epoch on the monitored metric."""

    optimizers: dict[str, Optimizer]
    step_schedulers: dict[str, LRScheduler]
    epoch_schedulers: dict[str, ReduceLROnPlateau]

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def lrs(self) -> dict[str, float]:
        out = {}
        for name, opt in self.optimizers.items():
            for i, group in enumerate(opt.param_groups):
                out[f"lr/{group.get('name', f'{name}{i}')}"] = float(group["lr"])
        return out

    def state_dict(self) -> dict:
        return {
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "step_schedulers": {k: v.state_dict() for k, v in self.step_schedulers.items()},
            "epoch_schedulers": {k: v.state_dict() for k, v in self.epoch_schedulers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        for kind in ("optimizers", "step_schedulers", "epoch_schedulers"):
            mine = getattr(self, kind)
            if set(mine) != set(state[kind]):
                raise ValueError(f"checkpoint {kind} {sorted(state[kind])} do not match this run's {sorted(mine)}")
            for k, v in mine.items():
                v.load_state_dict(state[kind][k])


def _no_decay(name: str) -> bool:
    return name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name or ".norm" in name


def _make(kind: str, groups: list[dict], cfg: OptimConfig) -> Optimizer:
    if kind == "adamw":
        return torch.optim.AdamW(groups, betas=cfg.betas)
    if kind == "adam":
        return torch.optim.Adam(groups, betas=cfg.betas)
    raise ValueError(f"unknown optimizer {kind!r}; use adam or adamw")


def _schedule(kind: str, opt: Optimizer, cfg: OptimConfig, steps_per_epoch: int, total_steps: int, mode: str):
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")
    if kind == "cosine_per_epoch":
        return "step", torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps_per_epoch, 1), eta_min=0.0)
    if kind == "linear_warmup":
        warmup = max(1, int(cfg.warmup_fraction * total_steps))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        return "step", LambdaLR(opt, factor)
    if kind == "plateau":
        return "epoch", ReduceLROnPlateau(opt, mode=mode, factor=cfg.plateau_factor, patience=cfg.plateau_patience)
    return None, None


def build_optimizers(model: PretrainModel, cfg: OptimConfig, steps_per_epoch: int, total_steps: int, monitor_mode: str = "min") -> OptimizerSet:
    """Optimisers over the trainable parameters of ``model`` (unwrapped), by part.

    The text tower gets its own optimiser when ``text_optimizer`` is set (local MI), else its own
    parameter group (``text_lr``). Weight decay is not applied to biases and normalisation weights
    of the text tower (as the BERT fine-tuning convention the local-MI repository follows).
    """
    parts = model.parameter_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    text_wd = cfg.weight_decay if cfg.text_weight_decay is None else cfg.text_weight_decay
    text_lr = cfg.lr if cfg.text_lr is None else cfg.text_lr
    text_groups = [
        {"name": "text", "params": [p for p in parts["text"] if not _no_decay(names[id(p)])], "lr": text_lr, "weight_decay": text_wd},
        {"name": "text_no_decay", "params": [p for p in parts["text"] if _no_decay(names[id(p)])], "lr": text_lr, "weight_decay": 0.0},
    ]
    text_groups = [g for g in text_groups if g["params"]]
    other_groups = [
        {"name": name, "params": parts[name], "lr": cfg.lr, "weight_decay": cfg.weight_decay}
        for name in ("image", "heads") if parts[name]
    ]
    optimizers: dict[str, Optimizer] = {}
    step_s: dict[str, LRScheduler] = {}
    epoch_s: dict[str, ReduceLROnPlateau] = {}
    if cfg.text_optimizer is not None and text_groups:
        plan = [("text", cfg.text_optimizer, text_groups, cfg.text_schedule or cfg.schedule), ("main", cfg.optimizer, other_groups, cfg.schedule)]
    else:
        plan = [("main", cfg.optimizer, text_groups + other_groups, cfg.schedule)]
    for name, kind, groups, schedule in plan:
        if not groups:
            continue
        opt = _make(kind, groups, cfg)
        optimizers[name] = opt
        when, sched = _schedule(schedule, opt, cfg, steps_per_epoch, total_steps, monitor_mode)
        if when == "step":
            step_s[name] = sched
        elif when == "epoch":
            epoch_s[name] = sched
    if not optimizers:
        raise ValueError(f"method {model.config.name!r} has no trainable parameters")
    return OptimizerSet(optimizers, step_s, epoch_s)


def clip_gradients(model: nn.Module, max_norm: float | None) -> float:
    """Clip the global gradient norm (LIMITR: 0.25); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None:
        return float(torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params])))
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def steps_per_epoch(n_batches: int, accumulate: int) -> int:
    """Optimizer steps per epoch: ceil(micro-batches / accumulation), as LoVT's StepsPerEpochMixin."""
    return max(1, math.ceil(n_batches / max(1, accumulate)))
