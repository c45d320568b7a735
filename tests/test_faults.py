"""Faults during training: the step that closes an epoch, kills and resumes, corrupt checkpoints.

Every run here is tiny (64 px, a 2-layer random BERT, 16 training studies, a handful of steps) and
deterministic on CPU, so a resumed run can be compared with an uninterrupted one exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from localign.train import pretrain
from localign.train import engine

from .test_train import tiny_config


def small_config(data, out, **train):
    """16 training studies in batches of 8: two micro-batches per epoch."""
    train = {"max_train_studies": 16, "early_stopping": False, **train}
    return tiny_config("convirt", data, out, **train)


# --- item 4: the leftover accumulation step ------------------------------------------------------------


def test_max_steps_stops_runs_whose_epochs_are_shorter_than_one_accumulation_window(tiny_prepared, tmp_path):
    # 2 micro-batches per epoch with accumulate 4: the only step of every epoch is the leftover step.
    result = pretrain(small_config(tiny_prepared, tmp_path / "r", accumulate=4, epochs=10, max_steps=3))
    assert result.summary["steps"] == 3 and result.summary["stopped"] == "max_steps"
    assert result.summary["epochs_completed"] == 3
    val = result.history[result.history["phase"] == "val"]
    assert sorted(set(val["epoch"])) == [0, 1, 2]


def test_the_leftover_step_checkpoints_and_counts_towards_max_steps(tiny_prepared, tmp_path, monkeypatch):
    saves = []
    real = engine.atomic_save

    def spy(obj, path):
        saves.append((path.name, obj["state"]["step"], obj["state"]["epoch"]))
        return real(obj, path)

    monkeypatch.setattr(engine, "atomic_save", spy)
    # 2 micro-batches per epoch with accumulate 3: one (leftover) step per epoch
    result = pretrain(small_config(tiny_prepared, tmp_path / "r", accumulate=3, epochs=4, max_steps=2, checkpoint_every=1))
    assert result.summary["steps"] == 2
    # each leftover step is checkpointed (step counted, epoch not yet closed), then the epoch end
    assert [s for s in saves if s[0] == "last.pt"] == [("last.pt", 1, 0), ("last.pt", 1, 1), ("last.pt", 2, 1), ("last.pt", 2, 2)]


# --- item 8: atomic saves, metrics rows, stale temporaries ---------------------------------------------


def test_atomic_save_fsyncs_the_data_before_the_rename(tmp_path, monkeypatch):
    from localign.train import checkpoint

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    checkpoint.atomic_save({"step": 1}, tmp_path / "last.pt")
    assert events[:2] == ["fsync", "replace"]
    assert torch.load(tmp_path / "last.pt", weights_only=True) == {"step": 1}


def test_resumed_metrics_keep_exactly_the_rows_the_checkpoint_counted(tmp_path):
    path = tmp_path / "metrics.csv"
    log = engine.MetricsLog(path)
    log.write(1, 0, "train", {"loss": 1.0, "lr": 0.1})
    log.write(2, 0, "train", {"loss": 0.5})
    log.write(2, 0, "val", {"val/loss": 0.7})  # written after a checkpoint that counted 3 rows
    assert log.rows == 4
    with path.open("a") as f:
        f.write("3,0,train,loss,0.4")  # a row cut short by the kill (no newline)
    resumed = engine.MetricsLog(path, truncate_after_step=2, keep_rows=3)
    assert resumed.rows == 3
    assert pd.read_csv(path).values.tolist() == [[1, 0, "train", "loss", 1.0], [1, 0, "train", "lr", 0.1], [2, 0, "train", "loss", 0.5]]


def test_resume_removes_the_temporaries_of_a_killed_save(tiny_prepared, tmp_path):
    out = tmp_path / "r"
    pretrain(small_config(tiny_prepared, out, max_steps=1))
    stale = [out / "checkpoints" / ".last.pt.tmp4242", out / "checkpoints" / ".best.pt.tmp17"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    pretrain(small_config(tiny_prepared, out, max_steps=2, resume=True))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


# --- SIGKILL, then --resume ------------------------------------------------------------------------------

# Runs one pretraining in a fresh process and SIGKILLs it at the chosen moment: "step:N" inside the
# N-th optimizer step (after the backward pass, before the update), "save:NAME:N" half-way through
# writing the N-th save of NAME (last.pt / best.pt), through the real atomic_save.
KILLED_RUN = r'''
import contextlib, io, json, os, signal, sys
import torch
from localign.train import TrainConfig, pretrain
from localign.train import engine

config = TrainConfig.from_dict(json.loads(sys.argv[1]))
torch.set_num_threads(int(sys.argv[3]))
kind, *where = sys.argv[2].split(":")
if kind == "step":
    real_clip, calls = engine.clip_gradients, [0]

    def clip_then_die(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(where[0]):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_clip(*args, **kwargs)

    engine.clip_gradients = clip_then_die
else:
    name, nth = where[0], int(where[1])
    real_save, calls = torch.save, [0]

    def save_half_then_die(obj, f, *args, **kwargs):
        if os.path.basename(getattr(f, "name", str(f))).startswith(f".{name}.tmp"):
            calls[0] += 1
            if calls[0] == nth:
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
                with (open(f, "wb") if isinstance(f, (str, os.PathLike)) else contextlib.nullcontext(f)) as out:
                    out.write(half)
                    out.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save_half_then_die
pretrain(config)
raise SystemExit("the run was not killed")
'''

TIMING = ("samples_per_s", "val/time_s")  # wall-clock measurements differ between any two runs


def _kill_config(data, out, **train):
    # 2 steps per epoch, a mid-epoch checkpoint at every epoch's last step (the case)
    return small_config(data, out, epochs=3, checkpoint_every=2, **train)


@pytest.fixture(scope="module")
def uninterrupted(tiny_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    pretrain(_kill_config(tiny_prepared, out))
    return out


def _same_run(a, b):
    for name in ("last.pt", "best.pt"):
        x, y = (torch.load(d / "checkpoints" / name, weights_only=True) for d in (a, b))
        assert x["state"]["epoch"] == y["state"]["epoch"] and x["state"]["step"] == y["state"]["step"], name
        assert x["model"].keys() == y["model"].keys()
        for k in x["model"]:
            assert torch.equal(x["model"][k], y["model"][k]), (name, k)
    ma, mb = pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv")
    key = ["step", "epoch", "phase", "name"]
    assert ma[key].values.tolist() == mb[key].values.tolist()  # same rows, same order, none duplicated
    steady = ~ma["name"].isin(TIMING)
    assert ma.loc[steady, "value"].tolist() == mb.loc[steady, "value"].tolist()
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for s in (sa, sb):
        s["best"] = {k: v for k, v in s["best"].items() if k not in TIMING}
    assert (sa["steps"], sa["epochs_completed"], sa["best_epoch"], sa["best"]) == (sb["steps"], sb["epochs_completed"], sb["best_epoch"], sb["best"])


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["step:3", "save:last.pt:2", "save:best.pt:2"],
                         ids=["mid-epoch", "during the epoch-end last.pt", "during the epoch-end best.pt"])
def test_sigkill_then_resume_gives_the_uninterrupted_run(tiny_prepared, tmp_path, uninterrupted, moment):
    out = tmp_path / "killed"
    config = _kill_config(tiny_prepared, out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, json.dumps(config.to_dict()), moment, str(torch.get_num_threads())],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    if moment.startswith("save"):
        name = moment.split(":")[1]
        assert [p.name.startswith(f".{name}.tmp") for p in (out / "checkpoints").glob(".*")] == [True]  # the half-written file
    pretrain(_kill_config(tiny_prepared, out, resume=True))
    _same_run(uninterrupted, out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no stale temporary
