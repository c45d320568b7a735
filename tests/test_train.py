"""The pretraining engine: learning on a fixed batch, run folders, resume equivalence, atomic
checkpoints, encoder export, bad parameters, and torchrun with 2 CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from localign.data.text import SpecialTokens, collate_reports
from localign.data.tokenize import tokenize_sentences
from localign.models import build_model, get_method
from localign.train import TrainConfig, load_image_encoder, load_run, make_train_config, pretrain
from localign.train.checkpoint import atomic_save, load_checkpoint

from .helpers import tiny_method


def tiny_overrides(name: str, **extra) -> dict:
    """Dotted overrides that turn the preset ``name`` into :func:`tiny_method` (for TrainConfig)."""
    base, tiny = get_method(name).to_dict(), tiny_method(name, **extra).to_dict()

    def diff(a, b, prefix=""):
        out = {}
        for k, v in a.items():
            if isinstance(v, dict):
                out.update(diff(v, b[k], f"{prefix}{k}."))
            elif v != b[k]:
                out[f"{prefix}{k}"] = v
        return out

    return diff(tiny, base)


def tiny_config(name: str, data: Path, out: Path, **train) -> TrainConfig:
    defaults = dict(batch_size=8, epochs=1, accumulate=1, progress=False, deterministic=True, log_every=1)
    defaults.update(train)
    # The shortcuts (batch_size, epochs, accumulate) are options that make_train_config turns into
    # dotted optim overrides.
    return make_train_config(method=name, overrides=tiny_overrides(name), data=str(data), out=str(out), **defaults)


# --- every method learns on a fixed batch ---------------------------------------------------------------

FIXED_REPORTS = [
    ["Small left pleural effusion."], ["Right upper lobe consolidation."], ["The heart is enlarged."],
    ["Right apical pneumothorax."], ["Lungs are clear."], ["Left basilar atelectasis."],
]


@pytest.mark.parametrize("name", ["convirt", "clip", "lovt", "gloria", "limitr", "global_mi_cpc", "global_mi_mine", "local_mi_cpc"])
def test_loss_decreases_on_a_fixed_batch(tokenizer, name):
    torch.manual_seed(0)
    if name.startswith("global_mi"):
        # A random BERT's [CLS] hardly depends on its input (rank collapse), which leaves a global
        # critic nothing to discriminate: the MI methods get the real (mostly frozen) MiniLM here.
        method = tiny_method(name, **{"text.random_init": False, "text.tiny": None, "text.freeze_embeddings": True, "text.freeze_layers": 4})
    else:
        method = tiny_method(name)
    model = build_model(method)
    special = SpecialTokens.from_tokenizer(tokenizer)
    text = collate_reports([[tokenize_sentences(r, tokenizer, 64)[0]] for r in FIXED_REPORTS], method.text_input, special)
    size = method.image.input_size
    images = torch.randn(len(FIXED_REPORTS), 1, size, size, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(10):
        out = model(images, text, torch.arange(len(FIXED_REPORTS)))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    # MI objectives start near 0 nats, so the improvement is measured in absolute terms
    assert losses[-1] < losses[0] - max(0.05 * abs(losses[0]), 0.05), f"{name}: {losses}"


# --- a whole run --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lovt_run(tiny_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lovt"
    result = pretrain(tiny_config("lovt", tiny_prepared, out, epochs=2, val_retrieval_pool=None))
    # the engine draws no figure: the caller that presents the run does, as `localign pretrain` does
    from localign.viz.training import save_training_curves

    save_training_curves(result)
    return result


def test_run_folder_contents(lovt_run):
    run = lovt_run.run_dir
    for f in ("config.yaml", "metrics.csv", "summary.json", "train.log", "encoder.pt", "checkpoints/last.pt", "checkpoints/best.pt", "figures/training_curves.png"):
        assert (run / f).is_file(), f
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    # The epochs are a dotted optim override now (no TrainConfig.epochs): the run records them there
    # and in the resolved method.
    assert cfg["method"]["name"] == "lovt" and cfg["train"]["overrides"]["optim.max_epochs"] == 2
    assert cfg["method"]["optim"]["max_epochs"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 2 and summary["stopped"] == "max_epochs"
    assert summary["steps"] == 2 * (summary["n_train_studies"] // 8)
    assert summary["retrieval_pool"] == summary["n_validate_studies"]
    metrics = pd.read_csv(run / "metrics.csv")
    assert set(metrics.columns) == {"step", "epoch", "phase", "name", "value"}
    val = metrics[metrics["phase"] == "val"]
    assert set(val["epoch"]) == {0, 1}
    for name in ("val/loss", "val/loss_shuffled", "val/i2t_R@1", "val/t2i_R@10", "val/r_sum", "val/local_image_z2att", "val/local_image_z2att_shuffled"):
        assert name in set(val["name"]), name
    train = metrics[metrics["phase"] == "train"]
    assert {"loss", "samples_per_s", "lr/heads", "grad_norm"} <= set(train["name"])


def test_checkpoint_is_weights_only_and_complete(lovt_run):
    ckpt = torch.load(lovt_run.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optim", "scaler", "rng", "state", "config"} <= set(ckpt)
    assert ckpt["state"]["epoch"] == 2 and ckpt["config"]["method"]["family"] == "lovt"


def test_encoder_export_loads_without_training_classes(lovt_run):
    encoder, pre = load_image_encoder(lovt_run.run_dir / "encoder.pt")
    assert pre["input_size"] == 64 and pre["geometry"] == "pad_resize" and pre["normalize"] == "dataset"
    run = load_run(lovt_run.run_dir)  # the full method from checkpoints/best.pt
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(encoder(x).pooled, run.model.image_encoder(x).pooled, atol=1e-6)


def test_the_encoder_export_and_the_run_carry_one_preprocessing_record(lovt_run):
    from localign.data.transforms import Preprocessing

    _, pre = load_image_encoder(lovt_run.run_dir / "encoder.pt")
    assert isinstance(pre, Preprocessing) and load_run(lovt_run.run_dir).preprocessing == pre
    assert pre.image_geometry().input_size() == 64


def test_training_writes_nothing_into_the_prepared_folder(lovt_run, tiny_prepared):
    """Token ids and pixel statistics are cached in the cache folder, keyed by the folder's identity."""
    from localign.data.manifest import load_prepared
    from localign.data.pretrain import pixel_stats_path

    assert not (Path(tiny_prepared) / "pixel_stats.json").exists() and not (Path(tiny_prepared) / "tokens").exists()
    assert pixel_stats_path(load_prepared(tiny_prepared)).is_file()


def test_learning_happens_on_synthcxr(lovt_run):
    h = lovt_run.history
    train = h[(h["phase"] == "train") & (h["name"] == "loss")]
    assert len(train) >= 4 and all(torch.isfinite(torch.tensor(train["value"].to_numpy())))


# --- resume ---------------------------------------------------------------------------------------


def _state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tiny_prepared, tmp_path):
    kwargs = dict(epochs=2, checkpoint_every=2)
    full = tmp_path / "full"
    pretrain(tiny_config("convirt", tiny_prepared, full, **kwargs))
    killed = tmp_path / "killed"
    # "killed" after 3 optimizer steps of the first epoch (mid-epoch), then resumed
    pretrain(tiny_config("convirt", tiny_prepared, killed, max_steps=3, **kwargs))
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["state"]["step"] == 3
    pretrain(tiny_config("convirt", tiny_prepared, killed, resume=True, **kwargs))
    a, b = _state(full), _state(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = pd.read_csv(killed / "metrics.csv")
    assert steps[steps["phase"] == "train"]["step"].is_monotonic_increasing


def test_resume_refuses_a_different_configuration(tiny_prepared, tmp_path):
    pretrain(tiny_config("convirt", tiny_prepared, tmp_path / "r", max_steps=1))
    with pytest.raises(ValueError, match="different configuration.*lr"):
        pretrain(tiny_config("convirt", tiny_prepared, tmp_path / "r", max_steps=2, lr=0.5, resume=True))
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        pretrain(tiny_config("convirt", tiny_prepared, tmp_path / "none", resume=True))


def test_keep_last_off_removes_last_pt_of_a_finished_run(tiny_prepared, tmp_path):
    pretrain(tiny_config("convirt", tiny_prepared, tmp_path / "kept", max_steps=1))
    assert (tmp_path / "kept" / "checkpoints" / "last.pt").is_file()  # the default keeps it
    done = tmp_path / "done"
    pretrain(tiny_config("convirt", tiny_prepared, done, keep_last=False))
    assert sorted(p.name for p in (done / "checkpoints").iterdir()) == ["best.pt"]
    best = load_checkpoint(done / "checkpoints" / "best.pt")
    assert best["optim"] and best["config"]["train"]["keep_last"] is False  # still a resumable checkpoint
    assert load_image_encoder(done / "encoder.pt") is not None
    with pytest.raises(FileNotFoundError, match="keep_last off.*best"):
        pretrain(tiny_config("convirt", tiny_prepared, done, keep_last=False, resume=True))
    # the demo recipe keeps only best.pt; the paper recipe and plain configs keep both
    assert make_train_config(method="convirt", recipe="demo").keep_last is False
    assert make_train_config(method="convirt", recipe="paper").keep_last is True


# --- atomic checkpoints ------------------------------------------------------------------------------


def test_atomic_save_keeps_the_previous_checkpoint_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save({"step": "partial"}, f)  # something lands on disk, then the process "dies"
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"step": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


# --- bad parameters --------------------------------------------------------------------------------


def test_bad_parameters_give_clear_errors(tiny_prepared, tmp_path):
    with pytest.raises(ValueError, match="unknown method 'lvot'"):
        pretrain(TrainConfig(method="lvot", data=str(tiny_prepared), out=str(tmp_path / "a")))
    with pytest.raises(FileNotFoundError, match="data root .*missing.* does not exist"):
        pretrain(tiny_config("convirt", tmp_path / "missing", tmp_path / "b"))
    with pytest.raises(ValueError, match="neither a prepared dataset"):
        pretrain(tiny_config("convirt", tmp_path, tmp_path / "c"))
    with pytest.raises(ValueError, match="fewer than one batch of 4096"):
        pretrain(tiny_config("convirt", tiny_prepared, tmp_path / "d", batch_size=4096))
    with pytest.raises(ValueError, match="CUDA is not available"):
        if not torch.cuda.is_available():
            pretrain(tiny_config("convirt", tiny_prepared, tmp_path / "e", device="cuda"))
        else:
            raise ValueError("CUDA is not available (skipped: a GPU is present)")


def test_cli_runs_the_same_code_path(tiny_prepared, tmp_path):
    from localign.cli import main

    over = [f"{k}={json.dumps(v)}" for k, v in tiny_overrides("clip").items()]
    rc = main(["pretrain", "--method", "clip", "--data", str(tiny_prepared), "--out", str(tmp_path / "cli"), "--max-steps", "1",
               "--batch-size", "8", "--accumulate", "1", "--quiet", "--set", *over])
    assert rc == 0
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["method"] == "clip" and summary["steps"] == 1 and summary["stopped"] == "max_steps"


# --- torchrun --------------------------------------------------------------------------------------


@pytest.mark.ddp
def test_torchrun_two_cpu_processes(tiny_prepared, tmp_path):
    """The same entry point under torchrun: the batch is split over 2 gloo ranks, only rank 0 writes."""
    over = [f"{k}={json.dumps(v)}" for k, v in tiny_overrides("convirt").items()]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "localign.cli", "pretrain",
           "--method", "convirt", "--data", str(tiny_prepared), "--out", str(out), "--max-steps", "2", "--batch-size", "8",
           "--accumulate", "1", "--device", "cpu", "--quiet", "--set", *over]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2 and summary["batch_size"] == 8
    assert proc.stdout.count("run folder:") == 1  # rank 1 prints and writes nothing
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_validation_loss_on_shuffled_pairs_rolls_the_images_by_one():
    from torch import nn

    from localign.data.pretrain import Batch
    from localign.data.text import TextBatch
    from localign.models.methods.base import PretrainOutput
    from localign.train.validation import evaluate_loss

    class PairScore(nn.Module):
        """loss = -mean_k image_k * report_k: lowest for the true pairing of this planted batch."""

        def forward(self, images, text, study_ids=None):
            score = (images.flatten(1)[:, 0] * text.input_ids[:, 0].float()).mean()
            return PretrainOutput(loss=-score, terms={"score": score.detach()})

    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    text = TextBatch("joint", values.long()[:, None], torch.ones(4, 1, dtype=torch.long), torch.ones(4, 1, dtype=torch.bool))
    batch = Batch(values[:, None, None, None].expand(4, 1, 2, 2).clone(), text, torch.arange(4), torch.arange(4), torch.arange(4))
    out = evaluate_loss(PairScore(), [batch], torch.device("cpu"))
    assert out["loss"] == pytest.approx(-(1 + 4 + 9 + 16) / 4)
    assert out["loss_shuffled"] == pytest.approx(-(4 * 1 + 1 * 2 + 2 * 3 + 3 * 4) / 4)  # image k-1 meets report k
    assert out["score_shuffled"] == pytest.approx(-out["loss_shuffled"])
