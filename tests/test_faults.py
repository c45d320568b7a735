"""Faults during training: the step that closes an epoch, kills and resumes, corrupt checkpoints.

Every run here is tiny (64 px, a 2-layer random BERT, 16 training studies, a handful of steps) and
deterministic on CPU, so a resumed run can be compared with an uninterrupted one exactly.
"""

from __future__ import annotations

import json

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
