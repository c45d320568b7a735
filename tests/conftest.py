"""Fixtures shared by the test suite."""

from __future__ import annotations

import os

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
