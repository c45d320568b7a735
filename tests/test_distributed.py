"""DDP equivalence on CPU (gloo, 2 processes): a step on a split batch equals the single-process step.

Each rank encodes half of the batch; the objectives gather features with gradients and compute the
loss on the whole batch; DDP averages parameter gradients. The loss and every parameter gradient
must equal those of one process on the full batch. BatchNorm statistics are per process in DDP,
so the models run in eval mode here (BN uses running statistics, dropout is off) — the gradients
still flow through everything.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from localign.data.text import SpecialTokens, collate_reports
from localign.data.tokenize import load_tokenizer, tokenize_sentences
from localign.models import build_model

from .helpers import tiny_method

pytestmark = pytest.mark.ddp

REPORTS = [
    ["Heart size is normal.", "Small left pleural effusion."], ["Right lower lobe consolidation."],
    ["Lungs are clear.", "No pneumothorax."], ["Moderate cardiomegaly.", "Mild edema.", "Tube in place."],
    ["Left apical pneumothorax."], ["Bibasilar atelectasis.", "No effusion."],
    ["Normal study."], ["Enlarged heart.", "Bilateral effusions."],
]


def _inputs(name: str):
    method = tiny_method(name)
    tok = load_tokenizer("minilm")
    ids = [tokenize_sentences(r, tok, method.text_input.max_length) for r in REPORTS]
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(len(REPORTS), 1, method.image.input_size, method.image.input_size, generator=gen)
    return method, ids, images, SpecialTokens.from_tokenizer(tok)


def _step(model, method, ids, images, special, study_ids):
    text = collate_reports(ids, method.text_input, special)
    out = model(images, text, study_ids)
    out.loss.backward()
    return out.loss.detach()


METHODS = ["convirt", "lovt", "gloria", "global_mi_cpc", "local_mi_cpc", "limitr_code"]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name in METHODS:  # one process group for all methods: spawning costs more than the steps
            method, ids, images, special = _inputs(name)
            torch.manual_seed(0)
            model = build_model(method).eval()
            ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
            per = len(REPORTS) // world
            sl = slice(rank * per, (rank + 1) * per)
            loss = _step(ddp, method, ids[sl], images[sl], special, torch.arange(len(REPORTS))[sl])
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            torch.save({"loss": loss, "grads": grads}, os.path.join(out_dir, f"{name}-rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, str(out / "init"), str(out)), nprocs=2, join=True)
    return out


@pytest.mark.parametrize("name", METHODS)
def test_ddp_step_equals_single_process_full_batch(ddp_results, name):
    method, ids, images, special = _inputs(name)
    torch.manual_seed(0)
    single = build_model(method).eval()
    loss_single = _step(single, method, ids, images, special, torch.arange(len(REPORTS)))
    grads_single = {n: p.grad for n, p in single.named_parameters() if p.grad is not None}
    r0, r1 = (torch.load(ddp_results / f"{name}-rank{r}.pt", weights_only=True) for r in (0, 1))

    if name == "lovt":
        # LoVT's local losses are means over each rank's own samples: DDP averages them to the full-batch mean.
        assert torch.allclose((r0["loss"] + r1["loss"]) / 2, loss_single, atol=1e-5)
    else:
        # Objectives that compare samples see the gathered batch: each rank's loss IS the full-batch loss.
        assert torch.allclose(r0["loss"], loss_single, atol=1e-5)
        assert torch.allclose(r1["loss"], loss_single, atol=1e-5)
    assert set(r0["grads"]) == set(grads_single)
    for n, g in grads_single.items():
        # relative to each gradient's scale; the absolute term covers gradients that are zero in exact
        # arithmetic (e.g. a bias in front of a softmax) and come out as ~1e-10 noise
        err = (r0["grads"][n] - g).abs().max().item()
        assert err <= 1e-3 * g.abs().max().item() + 1e-7, f"{n}: gradient mismatch {err:.2e} (scale {g.abs().max().item():.2e})"
    for n in grads_single:  # DDP leaves identical gradients on every rank
        assert torch.equal(r0["grads"][n], r1["grads"][n])
