"""The CI book as its readers see it: every page opened in headless Chromium with no network.

Reuses the book that tests/test_report.py builds (the session fixture ``built_book``). Chromium is
Debian's ``chromium`` package, installed by ``make chromium`` (part of ``make test`` when run as
root); where it cannot be installed these tests are skipped with a loud reason, never passed.
Screenshots of every page land in the temporary build folder and are copied to
``_build/screenshots-ci/`` of the checkout (gitignored), so a person can look after the run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from localign.book_check import caption_pages, check_book, find_chromium, toc_pages

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def browser_reports(built_book):
    root, _, proc = built_book
    if proc.returncode != 0:
        pytest.fail("the CI book did not build (see test_book_builds_with_warnings_as_errors)")
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("!!! NO CHROMIUM: the book was NOT checked in a browser. Install Debian's chromium "
                    "(`make chromium` as root, or apt-get install chromium) to run these checks !!!")
    pages = toc_pages(root / "book")
    shots = root / "_build" / "screenshots"
    reports = check_book(root / "_build" / "html", pages, screenshots=shots, chromium=chromium, captions_for=caption_pages(pages))
    keep = Path(__file__).resolve().parents[1] / "_build" / "screenshots-ci"
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(shots, keep)
    print(f"\nscreenshots of every page: {keep}")
    return pages, {r.page: r for r in reports}


def test_every_toc_chapter_opens_and_is_linked_from_the_start_page(browser_reports):
    pages, reports = browser_reports
    assert "_generated/03_pretrain_lovt" in pages and "_generated/04_evaluate" in pages
    for page in pages:
        assert page in reports, page
        assert not [p for p in reports[page].problems if "not built" in p or "did not load" in p or "table of contents" in p], \
            (page, reports[page].problems)


def test_every_page_passes_the_reader_checks(browser_reports):
    """Offline assets, images resolve, equations rendered, clean cell outputs, downloads resolve, captions."""
    _, reports = browser_reports
    problems = {page: r.problems for page, r in reports.items() if r.problems}
    assert not problems, "\n".join(f"{page}:\n  " + "\n  ".join(p) for page, p in problems.items())


def test_equations_are_rendered_where_the_book_has_them(browser_reports):
    _, reports = browser_reports
    for page in ("methods", "evaluation", "_generated/02_objectives"):
        r = reports[page]
        assert r.n_math > 0 and r.n_rendered_math >= r.n_math, (page, r.n_math, r.n_rendered_math)


def test_results_tables_are_downloadable_and_screenshots_written(browser_reports):
    _, reports = browser_reports
    assert reports["_generated/04_evaluate"].n_downloads >= 3
    assert reports["_generated/01_data"].n_downloads >= 1
    for r in reports.values():
        assert r.screenshot is not None and r.screenshot.is_file() and r.screenshot.stat().st_size > 10_000, r.page
