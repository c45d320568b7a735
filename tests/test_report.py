"""The report end to end on tiny parameters: papermill runs every notebook of params/ci.yaml, then
jupyter-book builds the book with warnings as errors (unexecuted glue or broken references fail).
The built book (the session fixture ``built_book`` of conftest.py) is also what test_book_browser.py
opens in Chromium."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml

from localign.report import load_plan

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
#: generated chapters made of tables only (the claims gathered from the others, the reproduction record)
TABLE_PAGES = {"_generated/09_claims", "_generated/10_reproduction"}


def test_every_plan_entry_executed_without_errors(built_book):
    root, written, _ = built_book
    entries = load_plan(root / "params" / "ci.yaml", root / "notebooks")
    assert [p.stem for p in written] == [e.output for e in entries]
    for path in written:
        nb = nbformat.read(path, as_version=4)
        assert not nb.metadata.get("papermill", {}).get("exception"), path.name
        assert any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", [])) is False
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1, f"{path.name}: papermill did not inject the plan's parameters"


def test_book_builds_with_warnings_as_errors(built_book):
    root, _, proc = built_book
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = root / "_build" / "html"
    toc = yaml.safe_load((root / "book" / "_toc.yml").read_text())
    files = []
    for chapter in (ch for part in toc["parts"] for ch in part["chapters"]):
        if "glob" in chapter:  # one page per matching executed notebook (03_pretrain_<method>)
            matched = sorted(p.relative_to(root / "book").with_suffix("").as_posix() for p in (root / "book").glob(chapter["glob"] + ".ipynb"))
            assert matched, f"the TOC glob {chapter['glob']} matches no executed notebook"
            files += matched
        else:
            files.append(chapter["file"])
    assert "_generated/03_pretrain_lovt" in files and "_generated/04_evaluate" in files
    for f in files:
        page = html / f"{f}.html"
        assert page.is_file(), page
    for f in files:
        if f.startswith("_generated/") and f not in TABLE_PAGES:
            text = (html / f"{f}.html").read_text()
            assert "<img" in text, f"{f}: no figure rendered"


def test_pretraining_chapter_wrote_its_run_folder(built_book):
    root, _, _ = built_book
    assert (root / "runs" / "ci" / "lovt" / "summary.json").is_file()
    assert (root / "runs" / "ci" / "synthcxr" / "prepared" / "dataset.json").is_file()


def test_reproduction_page_lists_every_chapter_that_ran_before_it(built_book):
    root, written, _ = built_book
    timings = __import__("json").loads((root / "book" / "_generated" / "timings.json").read_text())
    assert list(timings) == [p.stem for p in written]
    page = (root / "_build" / "html" / "_generated" / "10_reproduction.html").read_text()
    for chapter in list(timings)[:-1]:  # the page is written while its own chapter runs
        assert chapter in page, chapter
    assert "params/ci.yaml" in page and "torch" in page
