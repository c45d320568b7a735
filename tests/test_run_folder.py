"""The run folder's format lives in one module: localign.train.run_folder."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from localign.train import run_folder as rf
from localign.train.run_folder import RunFolder, check_run_dir

SRC = Path(__file__).resolve().parents[1] / "src" / "localign"
FILE_NAMES = {rf.CONFIG_FILE, rf.METRICS_FILE, rf.CHECKPOINTS_DIR, rf.ENCODER_FILE, rf.FIGURES_DIR, rf.TRAINING_CURVES_FILE,
              rf.SUMMARY_FILE, rf.LOG_FILE, "last.pt", "best.pt"}


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module's code, docstrings left out (they may name the files)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("module", ["train/engine.py", "train/runs.py", "eval/protocols/runner.py", "viz/training.py"])
def test_only_the_run_folder_module_spells_its_file_names(module):
    found = [(line, s) for line, s in _code_strings(SRC / module) if any(name in s for name in FILE_NAMES)]
    assert not found, f"{module} spells run-folder file names; ask a RunFolder instead: {found}"


def test_layout_paths(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.checkpoint_path("best") == tmp_path / "run" / "checkpoints" / "best.pt"
    assert folder.training_curves_path == tmp_path / "run" / "figures" / "training_curves.png"
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        folder.checkpoint_path("middle")


def test_writer_and_reader_round_trip(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.create()
    assert folder.checkpoints_dir.is_dir() and folder.figures_dir.is_dir()
    folder.write_config({"train": {"method": "lovt"}, "method": {"name": "lovt"}})
    assert folder.read_config()["method"] == {"name": "lovt"}
    assert folder.read_summary() == {} and list(folder.read_history().columns) == list(rf.METRICS_COLUMNS)
    folder.write_summary({"steps": 3})
    assert folder.read_summary() == {"steps": 3}
    log = rf.MetricsLog(folder.metrics_path)
    log.write(1, 0, "train", {"loss": 0.5})
    assert folder.read_history()["value"].tolist() == [0.5]


def test_checks_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_run_dir(tmp_path / "nothing")
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a run folder: no config.yaml"):
        check_run_dir(tmp_path / "run")
    RunFolder(tmp_path / "run").write_config({"train": {}, "method": {}})
    with pytest.raises(FileNotFoundError, match="has no encoder.pt"):
        check_run_dir(tmp_path / "run")
    (tmp_path / "run" / "encoder.pt").write_bytes(b"")
    assert check_run_dir(tmp_path / "run") == tmp_path / "run"
