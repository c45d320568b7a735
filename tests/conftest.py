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
