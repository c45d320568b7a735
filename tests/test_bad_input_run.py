"""Bad input after `localign prepare`: prepared folders, image files at training time, checkpoints,
text models, and the command line of `localign pretrain` / `localign evaluate`.

Each case asserts the exact outcome: an error that names the file, field or value and says what to
do (one line and exit status 2 on the command line), or a counted skip with nothing else changed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from localign import cli
from localign.data.images import ImageReadError
from localign.data.manifest import load_prepared
from localign.data.tokenize import load_tokenizer
from localign.train import load_image_encoder, load_run, pretrain
from localign.data.transforms import AUGMENTATIONS, AugmentConfig, eval_transform, train_transform
from localign.train.checkpoint import CheckpointError
from localign.train.config import encoder_overrides
from localign.data.pretrain import PixelStats, PretrainDataset, pixel_stats, pixel_stats_path, report_tokens

from .helpers import tiny_method
from .test_bad_input import bomb_jpeg
from .test_faults import small_config
from .test_train import tiny_overrides

HUB_ID = "emilyalsentzer/Bio_ClinicalBERT"


@pytest.fixture()
def prepared_copy(tiny_prepared, tmp_path) -> Path:
    """A copy of the tiny prepared folder whose MIMIC-CXR-JPG images are a copy too (safe to damage)."""
    src = load_prepared(tiny_prepared)
    images = tmp_path / "mimic-cxr-jpg"
    shutil.copytree(src.mimic_jpg_root, images)
    out = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, out)
    info = json.loads((out / "dataset.json").read_text())
    info["inputs"]["mimic_jpg"] = str(images)
    (out / "dataset.json").write_text(json.dumps(info))
    return out


@pytest.fixture(scope="module")
def run_dir(tiny_prepared, tmp_path_factory) -> Path:
    """A finished tiny run (one epoch of 2 steps): checkpoints/last.pt, best.pt and encoder.pt."""
    out = tmp_path_factory.mktemp("runs") / "convirt"
    pretrain(small_config(tiny_prepared, out, epochs=1))
    return out


def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    return out


def dataset(prepared, split: str = "train", **kwargs) -> PretrainDataset:
    method = tiny_method("convirt")
    tokenizer = load_tokenizer("minilm")
    tokens = report_tokens(prepared, tokenizer, method.text_input.max_length)
    return PretrainDataset(prepared, split, tokens=tokens, text_config=method.text_input, image_size=32,
                           augment=AUGMENTATIONS["none"], stats=PixelStats(0.5, 0.5), **kwargs)


# ------------------------------------------------------------------------------------------------
# Prepared folders
# ------------------------------------------------------------------------------------------------


def _edit_cell(path: Path, column: str, value: str) -> None:
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[0, column] = value
    df.to_csv(path, index=False)


PREPARED_CASES = {
    "dataset.json not JSON": (lambda p: (p / "dataset.json").write_text("{not json"), r"dataset\.json is not valid JSON"),
    "dataset.json of another format": (lambda p: (p / "dataset.json").write_text('{"format": "x"}'),
                                       r"dataset\.json is not a localign prepared dataset description"),
    "format version 99": (
        lambda p: (p / "dataset.json").write_text(json.dumps({**json.loads((p / "dataset.json").read_text()), "format_version": 99})),
        r"format_version 99 is not supported .*re-run `localign prepare`"),
    "manifest.csv deleted": (lambda p: (p / "manifest.csv").unlink(), r"not a complete prepared dataset: manifest\.csv is missing"),
    "n_tokens not an integer": (lambda p: _edit_cell(p / "manifest.csv", "n_tokens", "many"),
                                r"manifest\.csv: column 'n_tokens' does not hold int values"),
    "sentences not a JSON list": (lambda p: _edit_cell(p / "manifest.csv", "sentences", "[unclosed"),
                                  r"manifest\.csv: column 'sentences' does not hold json values"),
    "images.csv not UTF-8": (lambda p: (p / "images.csv").write_bytes(b"dicom_id,path\n\xff\xfe,x\n"),
                             r"images\.csv: not a readable CSV file \(UnicodeDecodeError"),
    "labels.csv with an unclosed quote": (lambda p: (p / "labels.csv").write_text('subject_id,study_id\n1,"2\n'),
                                          r"labels\.csv: not a readable CSV file \(ParserError"),
    "skipped.csv empty": (lambda p: (p / "skipped.csv").write_text(""), r"skipped\.csv: not a readable CSV file \(EmptyDataError"),
}


@pytest.mark.parametrize("case", sorted(PREPARED_CASES))
def test_a_damaged_prepared_folder_is_an_error_naming_the_file(prepared_copy, case):
    damage, message = PREPARED_CASES[case]
    damage(prepared_copy)
    with pytest.raises(ValueError, match=message):
        load_prepared(prepared_copy)


@pytest.mark.parametrize("content", ['{"key": "256-128-0", "mean": 0.4', "", '["a list"]', '{"key": "256-128-0", "mean": "x", "std": 1}'])
def test_a_damaged_pixel_stats_cache_is_recomputed(prepared_copy, content):
    prepared = load_prepared(prepared_copy)
    cache = pixel_stats_path(prepared)
    cache.unlink(missing_ok=True)
    fresh = pixel_stats(prepared)
    cache.write_text(content)
    assert pixel_stats(prepared) == fresh
    assert json.loads(cache.read_text())["mean"] == fresh.mean  # and the cache is whole again


def test_pixel_stats_are_written_atomically(prepared_copy, monkeypatch):
    prepared = load_prepared(prepared_copy)
    cache = pixel_stats_path(prepared)
    cache.unlink(missing_ok=True)
    fresh = pixel_stats(prepared)
    cache.unlink()

    def killed_before_the_rename(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed_before_the_rename)
    with pytest.raises(KeyboardInterrupt):
        pixel_stats(prepared)
    monkeypatch.undo()
    assert not cache.exists()  # no cache rather than a partial one
    assert [p.name for p in cache.parent.glob(f".{cache.name}*")] == []
    assert pixel_stats(prepared) == fresh


# ------------------------------------------------------------------------------------------------
# Image files at training time
# ------------------------------------------------------------------------------------------------


def _train_paths(prepared_copy):
    prepared = load_prepared(prepared_copy)
    return prepared, [[prepared.image_path(p) for p in ps] for ps in prepared.split("train")["image_paths"]]


def test_missing_image_files_fail_at_start_up_with_their_list(prepared_copy):
    prepared, paths = _train_paths(prepared_copy)
    gone = [paths[3][0], paths[7][0]]
    for p in gone:
        p.unlink()
    with pytest.raises(FileNotFoundError, match=r"2 of the \d+ image files of the 'train' split .* cannot be opened: ") as err:
        dataset(prepared)
    for p in gone:
        assert f"{p} (file not found)" in str(err.value)
    assert "re-run `localign prepare`" in str(err.value)
    dataset(prepared, split="validate")  # the other split is complete


def test_a_moved_image_root_fails_at_start_up_naming_the_stale_root(prepared_copy, tmp_path):
    prepared, paths = _train_paths(prepared_copy)
    n = sum(len(p) for p in paths)
    shutil.move(prepared.mimic_jpg_root, tmp_path / "moved")
    with pytest.raises(FileNotFoundError, match=rf"{n} of the {n} image files .*; and {n - 5} more\. If the images moved, "
                                                rf"the MIMIC-CXR-JPG root recorded in .*dataset\.json \({prepared.mimic_jpg_root}\) is stale"):
        dataset(prepared)


def test_pretrain_fails_before_training_when_an_image_is_missing(prepared_copy, tmp_path):
    prepared, paths = _train_paths(prepared_copy)
    paths[0][0].unlink()
    with pytest.raises(FileNotFoundError, match=f"{paths[0][0]} \\(file not found\\)"):
        pretrain(small_config(prepared_copy, tmp_path / "r"))
    assert not (tmp_path / "r" / "metrics.csv").exists()  # failed before the first step


def test_a_decompression_bomb_at_training_time_is_an_unreadable_view(prepared_copy):
    prepared, paths = _train_paths(prepared_copy)
    multi = next(i for i, p in enumerate(paths) if len(p) >= 2)
    single = next(i for i, p in enumerate(paths) if len(p) == 1)
    ds = dataset(prepared, text_view="full")  # views in manifest order: the damaged one is tried first
    bombs = paths[multi][0], paths[single][0]
    for p in bombs:
        p.write_bytes(bomb_jpeg())
    sample = ds[multi]  # the study's other frontal view is used
    assert sample["image"].shape == (1, 32, 32)
    assert list(ds.read_errors) == [str(bombs[0])] and "DecompressionBombError" in ds.read_errors[str(bombs[0])]
    with pytest.raises(ImageReadError, match=rf"{bombs[1]}: no readable frontal image for study \d+: .*DecompressionBombError"):
        ds[single]


class LargestTensor(TorchDispatchMode):
    """Records the number of elements of the largest tensor any torch operation produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("transform", ["eval", "gloria_random_crop", "lovt_train"])
def test_a_thin_image_never_allocates_its_padded_square(transform):
    image = torch.rand(1, 10, 4000)  # 40,000 pixels; padded to a square first it would be 16 million
    rng = np.random.default_rng(0)
    with LargestTensor() as mode:
        if transform == "eval":
            out = eval_transform(image, 64)
        elif transform == "gloria_random_crop":
            out, _ = train_transform(image, 64, AUGMENTATIONS["gloria"], rng)
        else:
            out, _ = train_transform(image, 64, AugmentConfig(), rng)
    assert out.shape == (1, 64, 64)
    assert mode.largest <= image.numel()


def test_resize_then_pad_centres_the_image_without_blending_it_into_the_padding():
    image = torch.ones(1, 300, 200)
    out = eval_transform(image, 60)
    columns = (out[0] > 0.5).any(dim=0).nonzero().flatten()
    assert (int(columns.min()), int(columns.max())) == (10, 49)  # 40 px of image, 10 px of padding each side
    assert bool((out[0] > 0.5).all(dim=1).sum() == 0) and bool((out[0, :, 10:50] > 0.99).all())


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


CHECKPOINT_DAMAGE = {
    "truncated": (_truncate, r"RuntimeError: PytorchStreamReader failed reading zip archive"),
    "empty": (lambda p: p.write_bytes(b""), r"\(0 bytes\) is truncated or corrupt and cannot be loaded \(EOFError\)"),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), r"UnpicklingError"),
    "text": (lambda p: p.write_text("not a checkpoint\n"), r"is truncated or corrupt and cannot be loaded"),
}


@pytest.mark.parametrize("damage", sorted(CHECKPOINT_DAMAGE))
def test_resume_from_a_corrupt_checkpoint_names_it_and_says_what_to_do(run_dir, tmp_path, tiny_prepared, damage):
    run = run_copy(run_dir, tmp_path)
    last = run / "checkpoints" / "last.pt"
    fn, message = CHECKPOINT_DAMAGE[damage]
    fn(last)
    with pytest.raises(CheckpointError, match=rf"^{last} .*{message}.*copy checkpoints/best\.pt over it to resume from the best epoch, "
                                              r"or start the run over without --resume"):
        pretrain(small_config(tiny_prepared, run, epochs=2, resume=True))


def test_evaluating_a_corrupt_checkpoint_names_it_and_the_other_one(run_dir, tmp_path):
    run = run_copy(run_dir, tmp_path)
    best = run / "checkpoints" / "best.pt"
    _truncate(best)
    with pytest.raises(CheckpointError, match=rf"^{best} .*evaluate the run's other checkpoint instead \(localign evaluate --checkpoint last\)"):
        load_run(run)
    assert load_run(run, checkpoint="last").model is not None


def test_a_foreign_torch_file_is_not_a_checkpoint(run_dir, tmp_path, tiny_prepared):
    run = run_copy(run_dir, tmp_path)
    shutil.copyfile(run / "encoder.pt", run / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match=r"last\.pt is not a localign training checkpoint"):
        pretrain(small_config(tiny_prepared, run, epochs=2, resume=True))


def test_a_corrupt_encoder_export_names_the_file(run_dir, tmp_path):
    run = run_copy(run_dir, tmp_path)
    _truncate(run / "encoder.pt")
    with pytest.raises(CheckpointError, match=rf"^{run / 'encoder.pt'} .*re-export it"):
        load_image_encoder(run / "encoder.pt")


# ------------------------------------------------------------------------------------------------
# Text models
# ------------------------------------------------------------------------------------------------


def test_a_hub_text_model_with_demo_encoders_offline_names_the_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=rf"could not load '{HUB_ID}'.*huggingface-cli download {HUB_ID}.*'minilm'"):
        encoder_overrides("lovt", text_model=HUB_ID)


def test_a_hub_text_model_fails_at_once_when_the_hub_does_not_answer(monkeypatch):
    """Without HF_HUB_OFFLINE: one request to the Hub, no retry loop (transformers retries 5 times per file)."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    for load in (load_tokenizer, lambda name: encoder_overrides("lovt", text_model=name)):
        with pytest.raises(OSError, match=rf"could not load '{HUB_ID}'.*The Hugging Face Hub did not answer: "):
            load(HUB_ID)


# ------------------------------------------------------------------------------------------------
# The command line
# ------------------------------------------------------------------------------------------------


def _tiny_set(method: str = "convirt") -> list[str]:
    return ["--set", *[f"{k}={json.dumps(v)}" for k, v in tiny_overrides(method).items()]]


def cli_error(capsys, *argv: str) -> str:
    """Run ``localign *argv``, which must fail with status 2 and one line on stderr; return the line."""
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.strip()


def test_cli_pretrain_missing_data_root(capsys, tmp_path):
    line = cli_error(capsys, "pretrain", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r"), "--quiet")
    assert line == f"localign pretrain: error: data root {tmp_path / 'nothing'} does not exist"


def test_cli_pretrain_unknown_method(capsys, tmp_path, tiny_prepared):
    line = cli_error(capsys, "pretrain", "--method", "lvot", "--data", str(tiny_prepared), "--out", str(tmp_path / "r"))
    assert line.startswith("localign pretrain: error: unknown method 'lvot'")


def test_cli_pretrain_unknown_override(capsys, tmp_path, tiny_prepared):
    line = cli_error(capsys, "pretrain", "--data", str(tiny_prepared), "--out", str(tmp_path / "r"), "--set", "optim.lr_typo=1")
    assert line.startswith("localign pretrain: error: OptimConfig: unknown field 'lr_typo'")


def test_cli_pretrain_batch_larger_than_the_split(capsys, tmp_path, tiny_prepared):
    line = cli_error(capsys, "pretrain", "--method", "convirt", "--data", str(tiny_prepared), "--out", str(tmp_path / "r"),
                     "--batch-size", "4096", "--quiet", *_tiny_set())
    assert line.endswith("fewer than one batch of 4096")


def test_cli_pretrain_resume_without_checkpoint(capsys, tmp_path, tiny_prepared):
    line = cli_error(capsys, "pretrain", "--data", str(tiny_prepared), "--out", str(tmp_path / "r"), "--resume")
    assert line == f"localign pretrain: error: --resume: no checkpoint to resume from at {tmp_path / 'r' / 'checkpoints' / 'last.pt'}"


def test_cli_pretrain_hub_text_model_offline(capsys, tmp_path, tiny_prepared, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = cli_error(capsys, "pretrain", "--method", "lovt", "--encoders", "demo", "--text-model", HUB_ID,
                     "--data", str(tiny_prepared), "--out", str(tmp_path / "r"))
    assert line.startswith(f"localign pretrain: error: could not load '{HUB_ID}'") and "'minilm'" in line


def test_cli_pretrain_resume_from_a_corrupt_checkpoint(capsys, run_dir, tmp_path, tiny_prepared):
    run = run_copy(run_dir, tmp_path)
    _truncate(run / "checkpoints" / "last.pt")
    line = cli_error(capsys, "pretrain", "--method", "convirt", "--data", str(tiny_prepared), "--out", str(run), "--resume",
                     "--batch-size", "8", "--accumulate", "1", "--epochs", "2", "--max-train-studies", "16", "--deterministic",
                     "--no-early-stopping", "--quiet", *_tiny_set())
    assert line.startswith(f"localign pretrain: error: {run / 'checkpoints' / 'last.pt'} (") and "copy checkpoints/best.pt" in line


def test_cli_evaluate_missing_run_folder(capsys, tmp_path):
    line = cli_error(capsys, "evaluate", "--runs", str(tmp_path / "nothing"), "--tasks", "retrieval", "--out", str(tmp_path / "e.csv"))
    assert line.startswith("localign evaluate: error: ") and str(tmp_path / "nothing") in line


def test_cli_evaluate_corrupt_checkpoint(capsys, run_dir, tmp_path):
    run = run_copy(run_dir, tmp_path)
    (run / "checkpoints" / "best.pt").write_bytes(b"")
    line = cli_error(capsys, "evaluate", "--runs", str(run), "--tasks", "retrieval", "--baselines", "none", "--out", str(tmp_path / "e.csv"),
                     "--quiet")
    assert line.startswith(f"localign evaluate: error: {run / 'checkpoints' / 'best.pt'} (0 bytes) is truncated or corrupt")
    assert "--checkpoint last" in line


def test_cli_unexpected_errors_keep_their_traceback(monkeypatch, tmp_path, tiny_prepared):
    def broken(config):
        raise ValueError("a bug outside localign's own checks")

    monkeypatch.setattr("localign.train.engine.pretrain", broken)
    with pytest.raises(ValueError, match="a bug outside"):
        cli.main(["pretrain", "--data", str(tiny_prepared), "--out", str(tmp_path / "r")])
    monkeypatch.undo()
    monkeypatch.setenv("LOCALIGN_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError, match="data root"):
        cli.main(["pretrain", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")])


def test_a_pixel_stats_cache_left_in_a_prepared_folder_by_older_localign_is_ignored(prepared_copy):
    """Caches live in the cache folder now: a prepared folder from before still works, and the
    statistics an older version wrote into it (whatever their key) are neither read nor rewritten."""
    prepared = load_prepared(prepared_copy)
    pixel_stats_path(prepared).unlink(missing_ok=True)
    fresh = pixel_stats(prepared)
    pixel_stats_path(prepared).unlink()
    old = prepared_copy / "pixel_stats.json"
    old.write_text(json.dumps({"key": "256-128-0-resize_longer_then_pad", "mean": 0.123, "std": 0.456}))
    assert pixel_stats(prepared) == fresh
    assert json.loads(old.read_text())["mean"] == 0.123


def test_copies_of_a_prepared_folder_with_other_images_have_other_fingerprints(prepared_copy, tiny_prepared):
    assert load_prepared(prepared_copy).fingerprint != load_prepared(tiny_prepared).fingerprint
    assert load_prepared(prepared_copy).fingerprint == load_prepared(prepared_copy).fingerprint


def test_pixel_stats_of_another_eval_geometry_are_recomputed(prepared_copy):
    """Statistics cached by an older transform (pad, then resize) are not reused: a fresh machine
    would compute other values, and every image would be normalised differently."""
    prepared = load_prepared(prepared_copy)
    cache = pixel_stats_path(prepared)
    cache.unlink(missing_ok=True)
    fresh = pixel_stats(prepared)
    cache.write_text(json.dumps({"key": "256-128-0", "mean": 0.123, "std": 0.456}))  # the key before the geometry was in it
    assert pixel_stats(prepared) == fresh
