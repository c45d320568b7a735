"""localign.train.reuse.ensure_run: a finished run with the same settings is reused, anything else trained."""

from __future__ import annotations

import pandas as pd

from localign.models import get_method
from localign.train import encoder_overrides, make_train_config
from localign.train.reuse import ensure_run, run_differences

from .helpers import TINY_TEXT


def _config(data, out, **kw):
    overrides = encoder_overrides(get_method("convirt"), image_arch="resnet18", image_size=64, text_model="minilm")
    overrides.update({"text.random_init": True, "text.tiny": TINY_TEXT, "text.freeze_layers": 0, "text.last_layers": 1,
                      "head.d_z": 16, "head.d_hidden": 32})
    return make_train_config(method="convirt", overrides=overrides, data=str(data), out=str(out), max_steps=1, batch_size=8,
                             progress=False, **kw)


def test_reused_when_the_same_and_trained_again_when_a_setting_differs(tiny_prepared, tmp_path):
    out = tmp_path / "convirt"
    config = _config(tiny_prepared, out)
    assert run_differences(config) is None  # nothing there yet
    path, trained = ensure_run(config)
    assert path == out and trained
    encoder = out / "encoder.pt"
    stamp = encoder.stat().st_mtime_ns
    rows = len(pd.read_csv(out / "metrics.csv"))
    # settings that change nothing learned (progress bars, workers) do not retrain
    assert ensure_run(_config(tiny_prepared, out, num_workers=0, log_every=5)) == (out, False)
    assert encoder.stat().st_mtime_ns == stamp
    other = _config(tiny_prepared, out, seed=1)
    assert run_differences(other) == ["train.seed: 0 -> 1"]
    assert ensure_run(other) == (out, True)
    assert run_differences(other) == []
    assert len(pd.read_csv(out / "metrics.csv")) == rows  # trained afresh, not appended to the first run


def test_an_unfinished_folder_is_trained(tiny_prepared, tmp_path):
    out = tmp_path / "convirt"
    config = _config(tiny_prepared, out)
    ensure_run(config)
    (out / "summary.json").unlink()  # as a run killed before its end leaves it
    assert run_differences(config) is None
    assert ensure_run(config) == (out, True)
