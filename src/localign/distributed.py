"""Small helpers for torch.distributed (DDP under ``torchrun``); all are no-ops in a single process.

Contrastive objectives compare every image with every report of the batch, so under DDP each rank
gathers the features of all ranks **with gradients** (:func:`gather_with_grad`) and computes the
loss on the full batch. The gather's backward sums the gradient contributions of all ranks, and
DDP averages parameter gradients over ranks, so one DDP step equals one single-process step on the
concatenated batch (tested on CPU with gloo in ``tests/test_distributed.py``).
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch
import torch.distributed as dist
from torch import Tensor


_local = threading.local()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def no_gather():
    """Make :func:`gather_with_grad` and :func:`pad_to_global_max` no-ops inside the block.

    Validation runs on rank 0 alone over the whole validation split, with single-process semantics;
    without this, a gather there would wait forever for the other ranks.
    """
    previous = getattr(_local, "disabled", False)
    _local.disabled = True
    try:
        yield
    finally:
        _local.disabled = previous


def _gathering() -> bool:
    return is_distributed() and not getattr(_local, "disabled", False)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Only rank 0 writes files and prints progress."""
    return rank() == 0


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x [B, ...]`` of all ranks along dim 0 (rank order), differentiably.

    All ranks must pass the same shape (pad variable-length dimensions first, see :func:`pad_to_global_max`).
    """
    if not _gathering():
        return x
    from torch.distributed import _functional_collectives as fc

    # A private module (no public autograd all_gather in torch 2.x): pick the newest name it offers.
    gather = getattr(fc, "all_gather_single_autograd", None) or getattr(fc, "all_gather_tensor_autograd", None)
    if gather is not None:
        return gather(x.contiguous(), gather_dim=0, group=dist.group.WORLD)
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x.contiguous()), dim=0)


def all_reduce_max(value: int) -> int:
    """The maximum of an integer over ranks (e.g. the longest sequence before padding)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.long)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def pad_to_global_max(x: Tensor, dim: int, value: float = 0.0) -> Tensor:
    """Pad ``x`` along ``dim`` to the largest size over all ranks, so that it can be gathered."""
    if not _gathering():
        return x
    target = all_reduce_max(x.shape[dim])
    if target == x.shape[dim]:
        return x
    pad_shape = list(x.shape)
    pad_shape[dim] = target - x.shape[dim]
    return torch.cat([x, x.new_full(pad_shape, value)], dim=dim)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))
