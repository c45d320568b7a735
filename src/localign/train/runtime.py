"""The process a run executes in: seeds, device, process group, mixed precision, the run's log file."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch
import torch.distributed as dist

from localign import distributed as D
from localign.train.config import TrainConfig
from localign.train.run_folder import RunFolder


def seed_everything(seed: int) -> None:
    """Python, numpy and torch global RNGs from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(config: TrainConfig) -> torch.device:
    """``config.device`` (``auto``: this rank's GPU if there is one, else the CPU)."""
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


def init_distributed(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` describes in the environment; True if we created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: CUDA with bf16, or a CPU with AVX512-BF16/AMX
    (oneDNN's check). Elsewhere bf16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def amp_settings(config: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler)."""
    mode = config.amp
    if mode not in ("auto", "off", "bf16", "fp16", "bf16_native"):
        raise ValueError(f"amp must be auto, off, bf16, fp16 or bf16_native, got {mode!r}")
    if mode == "bf16_native":
        return (torch.bfloat16, False) if native_bf16(device) else (None, False)
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None, False
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode == "fp16" and device.type != "cuda":
        raise ValueError("fp16 mixed precision needs a CUDA device; use amp='bf16' or 'off' on CPU")
    return (torch.bfloat16, False) if mode == "bf16" else (torch.float16, True)


def log_to_run_folder(folder: RunFolder, main: bool) -> logging.Handler | None:
    """Rank 0 writes the ``localign`` log to the run's ``train.log`` too; the caller removes the handler."""
    if not main:
        return None
    handler = logging.FileHandler(folder.log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logging.getLogger("localign").addHandler(handler)
    logging.getLogger("localign").setLevel(logging.INFO)
    return handler
