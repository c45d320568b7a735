"""Every loss follows its inputs' dtype and device and agrees with a float64 CPU evaluation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from localign.losses import (
    global_mi_objective,
    gloria_global_loss,
    gloria_local_loss,
    info_nce,
    limitr_external_loss,
    limitr_global_loss,
    limitr_internal_loss,
    local_mi_objective,
    lovt_local_loss,
    lovt_positive_weights,
)


def _inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return {
        "a": randn(6, 8),
        "b": randn(6, 8),
        "z": randn(3, 9, 8),
        "z_att": randn(3, 9, 8),
        "weights": torch.rand(3, 9, generator=gen, dtype=torch.float64),
        "words": randn(4, 7, 8),
        "regions": randn(4, 9, 8),
        "scores2": randn(5, 5),
        "scores4": randn(5, 5, 4, 3),
        "s_cap": torch.rand(4, 4, generator=gen, dtype=torch.float64),
        "s_img": torch.rand(4, 4, generator=gen, dtype=torch.float64),
    }


_MASK9 = torch.arange(9)[None] < torch.tensor([9, 4, 6])[:, None]
_MASK7 = torch.arange(7)[None] < torch.tensor([7, 3, 5, 2])[:, None]
_MASK3 = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 1]], dtype=torch.bool)

LOSSES: dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]] = {
    "info_nce": lambda x: info_nce(x["a"], x["b"], 0.1, 0.75),
    "lovt_image": lambda x: sum(
        lovt_local_loss(x["z"], x["z_att"], lovt_positive_weights((3, 3)), weights=x["weights"])
    ),
    "lovt_report": lambda x: sum(
        lovt_local_loss(x["z"], x["z_att"], mask=_MASK9.to(x["z"].device), weights=x["weights"])
    ),
    "gloria_local": lambda x: gloria_local_loss(x["words"], _MASK7.to(x["words"].device), x["regions"]),
    "gloria_global": lambda x: gloria_global_loss(x["a"], x["b"]),
    "limitr_global": lambda x: limitr_global_loss(x["a"], x["b"]),
    "limitr_external": lambda x: limitr_external_loss(x["s_cap"], x["s_img"]),
    "limitr_internal": lambda x: limitr_internal_loss(
        x["words"], x["words"].roll(1, 1), _MASK7.to(x["words"]) / _MASK7.sum(1, keepdim=True).to(x["words"]),
        x["regions"], x["regions"].roll(1, 1), torch.full_like(x["regions"][..., 0], 1 / 9),
    ),
    "global_mi_cpc": lambda x: global_mi_objective(x["scores2"], "cpc"),
    "global_mi_mine": lambda x: global_mi_objective(x["scores2"], "mine"),
    "local_mi_cpc": lambda x: local_mi_objective(x["scores4"], _MASK3.to(x["scores4"].device), "cpc"),
    "local_mi_mine": lambda x: local_mi_objective(x["scores4"], _MASK3.to(x["scores4"].device), "mine"),
}


def _check(name: str, dtype: torch.dtype, device: str, rel: float) -> None:
    reference = LOSSES[name](_inputs()).item()
    inputs = {k: v.to(device=device, dtype=dtype).requires_grad_() for k, v in _inputs().items()}
    value = LOSSES[name](inputs)
    assert value.dtype == dtype and value.device.type == device and value.dim() == 0
    assert value.item() == pytest.approx(reference, rel=rel, abs=rel)
    value.backward()
    grads = [v.grad for v in inputs.values() if v.grad is not None]
    assert grads and all(torch.isfinite(g.float()).all() for g in grads)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype,rel", [(torch.float32, 1e-5), (torch.bfloat16, 0.03)])
def test_loss_follows_dtype_on_cpu(name: str, dtype: torch.dtype, rel: float) -> None:
    _check(name, dtype, "cpu", rel)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_runs_on_cuda(name: str) -> None:
    _check(name, torch.float32, "cuda", 1e-4)
