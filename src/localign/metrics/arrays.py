"""Inputs of every metric: arrays from numpy, torch or nested lists, checked for finiteness.

Torch tensors are moved to the CPU and detached; invalid values raise ``ValueError`` naming the
argument and the value, so that nothing is dropped silently.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """``x`` (numpy array, torch tensor, or nested sequence) as a numpy array of ``dtype``.

    Torch tensors are detached and moved to the CPU. ``dtype=None`` keeps the input dtype (used for
    boolean masks). Float64 is the default because every metric here is an average over many
    elements, and float32 accumulation would change the last reported digit.
    """
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
                x = x.float()
            x = x.numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency, but numpy use needs none
        pass
    try:
        return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to a numeric array: {err}") from err


def require_finite(a: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))
        raise ValueError(
            f"{name}: {len(bad)} non-finite value(s) (NaN/inf), first at index {tuple(int(i) for i in bad[0])} "
            f"= {a[tuple(bad[0])]}"
        )
