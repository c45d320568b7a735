"""The book stays in step with the code: every preset is listed in methods.md, every object a page names exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from localign.models.registry import LOVT_ABLATIONS, METHODS

METHODS_MD = Path(__file__).resolve().parents[1] / "book" / "methods.md"


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and walk the remaining attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_preset_is_in_the_preset_table() -> None:
    text = METHODS_MD.read_text()
    table = text[text.index("## All presets") :]
    rows = set(re.findall(r"^\| `([a-z0-9_]+)` \|", table, flags=re.MULTILINE))
    assert rows == set(METHODS), f"missing {sorted(set(METHODS) - rows)}, unknown {sorted(rows - set(METHODS))}"


def test_lovt_ablation_values_match_the_registry() -> None:
    text = METHODS_MD.read_text()
    for name, (_, value) in LOVT_ABLATIONS.items():
        assert re.search(rf"^\| `{name}` \|.*\| {re.escape(value)} \|$", text, flags=re.MULTILINE), name


BOOK_PAGES = sorted((METHODS_MD.parent).glob("*.md"))
NAMED = sorted({(p.name, d) for p in BOOK_PAGES for d in re.findall(r"`(localign(?:\.\w+)+)`", p.read_text())})


@pytest.mark.parametrize(("page", "dotted"), NAMED, ids=[f"{p}:{d}" for p, d in NAMED])
def test_named_code_exists(page: str, dotted: str) -> None:
    assert _resolve(dotted) is not None
