"""Fixtures shared by the test suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

# Tests draw figures headless; notebooks (run by papermill) keep the inline backend so glue works.
matplotlib.use("Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the test suite never touches the network


@pytest.fixture(scope="session")
def tokenizer():
    from localign.data.tokenize import load_tokenizer

    return load_tokenizer("minilm")


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory):
    """A tiny SynthCXR dataset (80 studies at 64 px), generated and prepared once per session."""
    from localign.data.demo import synthcxr_prepared
    from localign.data.synthcxr import SynthCXRConfig

    root = tmp_path_factory.mktemp("synthcxr") / "root"
    return synthcxr_prepared(root, SynthCXRConfig(n_studies=80, image_size=64, n_rsna=16, seed=3), progress=False)


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The CI book, built once per session: a copy of the repository's book, notebooks and configs,
    executed by ``localign report`` (params/ci.yaml) and built by jupyter-book with warnings as
    errors in a temp folder. Returns (root, executed notebooks, the jupyter-book process)."""
    from localign.report import run_plan

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path_factory.mktemp("report")
    for name in ("book", "notebooks", "params"):
        shutil.copytree(repo / name, root / name, ignore=shutil.ignore_patterns("_generated", "_build"))
    shutil.copy(repo / "_config.yml", root / "_config.yml")
    written = run_plan(root / "params" / "ci.yaml", root=root, progress=False, timeout=900)
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(root / "book"), "--all", "-W", "-n", "--keep-going", "--path-output", str(root)],
                          capture_output=True, text=True, timeout=900)
    return root, written, proc
