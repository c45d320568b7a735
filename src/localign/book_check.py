"""``localign check-book``: open every page of the built book in headless Chromium, as a reader would.

The book is read where there may be no internet (a hospital research group's machines), so the
check runs Chromium with every host name unresolvable and asserts, page by page:

* the page loads, and every chapter of ``book/_toc.yml`` is linked from the start page;
* nothing is loaded from another host (scripts, style sheets, images, fonts);
* every ``<img>`` resolves to a local image file that opens;
* equations are rendered: MathJax output (``mjx-container``) for every math element, no raw TeX
  (``\\(``, ``\\[``, ``$$``) left in the text;
* no cell output shows a traceback, a Python warning or a machine path;
* every download link (``{download}``, e.g. the CSV of a results table) resolves;
* (with ``captions=True``) every figure of a cell output has a caption.

A screenshot of each page goes to ``--screenshots`` (default ``<html>/../screenshots``)::

    localign check-book _build/html                # after `make report` or `make report-ci`
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: Pages (fnmatch patterns) whose figures are not captioned yet, so the caption check spares them:
#: notebooks/03_pretrain.ipynb is being rewritten and its training-curve cell still needs the
#: ``mystnb.figure.caption`` metadata that the other chapters' figure cells have. Empty this when done.
CAPTIONS_PENDING: tuple[str, ...] = ()

#: Chromium's name on Debian (``apt-get install chromium``), then other common names.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:home|root|tmp|work|usr|opt|var|mnt|srv|Users|private|scratch)/|site-packages|dist-packages"
                           r"|\b[A-Za-z]:\\\\")
_WARNING = re.compile(r"\b[A-Z]\w*Warning\b|\bWARNING\b|warnings\.warn")
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|\b\w+Error: |\bException: ")
_RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{")


def find_chromium() -> str | None:
    """The Chromium executable on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def render(page: Path, chromium: str, screenshot: Path | None = None, budget_ms: int = 20000, window: str = "1280,2400",
           timeout: float = 120.0) -> str:
    """The DOM of ``page`` after its scripts ran (MathJax included), with the network unreachable."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", "--disable-extensions", "--disable-background-networking",
           '--host-resolver-rules=MAP * ~NOTFOUND', f"--virtual-time-budget={budget_ms}", f"--window-size={window}"]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        cmd.append(f"--screenshot={screenshot}")
    cmd += ["--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium failed on {page} (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def toc_pages(book_dir: Path) -> list[str]:
    """Every page of ``_toc.yml`` (docnames without suffix, globs expanded against the source folder)."""
    import yaml

    toc = yaml.safe_load((book_dir / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        for chapter in part.get("chapters", []):
            if "glob" in chapter:
                matched = sorted(p.relative_to(book_dir).with_suffix("").as_posix()
                                 for p in book_dir.glob(chapter["glob"] + ".*") if p.suffix in (".ipynb", ".md"))
                pages += matched
            else:
                pages.append(chapter["file"])
    return pages


def caption_pages(pages: list[str]) -> set[str]:
    """The pages whose figures must have captions: every executed chapter, less :data:`CAPTIONS_PENDING`."""
    return {p for p in pages if p.startswith("_generated/") and not any(fnmatch.fnmatch(p, pat) for pat in CAPTIONS_PENDING)}


@dataclass
class PageReport:
    page: str
    problems: list[str] = field(default_factory=list)
    n_images: int = 0
    n_math: int = 0
    n_rendered_math: int = 0
    n_downloads: int = 0
    screenshot: Path | None = None


def _local_target(html_file: Path, url: str) -> Path | None:
    """The file a relative URL of ``html_file`` points to (None for anchors and data: URIs)."""
    parts = urlsplit(url)
    if parts.scheme == "data" or (not parts.path and parts.fragment):
        return None
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    return (html_file.parent / unquote(parts.path)).resolve()


def _is_remote(url: str) -> bool:
    return bool(re.match(r"^(https?:)?//", url.strip()))


def check_dom(html_file: Path, dom: str, captions: bool = False) -> PageReport:
    """Every reader-facing check of one rendered page (see the module docstring)."""
    from bs4 import BeautifulSoup
    from PIL import Image

    report = PageReport(page=html_file.name)
    soup = BeautifulSoup(dom, "html.parser")
    if soup.find("main") is None and soup.find("article") is None:
        report.problems.append("the page has no <main>/<article>: it did not load")
    if soup.find("h1") is None:
        report.problems.append("the page has no title (h1)")

    # nothing from other hosts: the book must work offline
    for tag, attr in (("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src"), ("source", "src")):
        for el in soup.find_all(tag):
            url = el.get(attr)
            if tag == "link" and not set(el.get("rel") or []) & {"stylesheet", "preload", "icon", "modulepreload"}:
                continue
            if url and _is_remote(url):
                report.problems.append(f"loads <{tag}> from another host: {url}")

    # images resolve to local files that open
    for img in soup.find_all("img"):
        src = img.get("src") or ""
        report.n_images += 1
        if not src:
            report.problems.append("an <img> without src")
            continue
        if src.startswith("data:"):
            if len(src) < 64:
                report.problems.append(f"an <img> with an empty data URI: {src}")
            continue
        target = _local_target(html_file, src)
        if target is None or not target.is_file():
            report.problems.append(f"<img> does not resolve: {src}")
        elif target.suffix.lower() != ".svg":
            try:
                with Image.open(target) as im:
                    im.verify()
            except Exception as err:  # noqa: BLE001 - any decoding failure is a broken image
                report.problems.append(f"<img> {src} is not a readable image: {err}")

    # downloads (results tables as CSV) resolve
    for a in soup.find_all("a", href=True):
        if "download" in (a.get("class") or []) or a.has_attr("download"):
            report.n_downloads += 1
            target = _local_target(html_file, a["href"])
            if target is None or not target.is_file():
                report.problems.append(f"download link does not resolve: {a['href']}")

    # equations rendered by MathJax, no raw TeX left
    math = soup.select(".math")
    report.n_math = len(math)
    report.n_rendered_math = len(soup.find_all("mjx-container"))
    for el in math:
        if el.find("mjx-container") is None:
            report.problems.append(f"equation not rendered: {el.get_text()[:80]!r}")
    body = soup.find("main") or soup.find("article") or soup
    for el in body.find_all(["pre", "code", "script", "style", "mjx-container", "textarea"]):
        el.decompose()
    leftover = _RAW_TEX.search(body.get_text(" "))
    if leftover:
        text = body.get_text(" ")
        report.problems.append(f"raw TeX in the text: {text[max(0, leftover.start() - 40):leftover.end() + 40]!r}")

    # cell outputs: no traceback, warning or machine path (collapsed outputs included)
    soup = BeautifulSoup(dom, "html.parser")
    for out in soup.select("div.cell_output"):
        text = out.get_text(" ")
        classes = {c for el in out.find_all(True) for c in (el.get("class") or [])}
        if classes & {"traceback", "error"} or _TRACEBACK.search(text):
            report.problems.append(f"a cell output shows a traceback/error: {text.strip()[:160]!r}")
        m = _WARNING.search(text)
        if m:
            report.problems.append(f"a cell output shows a warning: {text[max(0, m.start() - 60):m.end() + 100].strip()!r}")
        m = _MACHINE_PATH.search(text)
        if m:
            report.problems.append(f"a cell output shows a machine path: {text[max(0, m.start() - 60):m.end() + 60].strip()!r}")
        if captions:
            for img in out.find_all("img"):
                fig = img.find_parent("figure")
                if fig is None or fig.find("figcaption") is None or not fig.find("figcaption").get_text(strip=True):
                    report.problems.append(f"a figure without caption: {img.get('src', '')[:80]}")
    return report


def check_book(html_dir: Path, pages: list[str], screenshots: Path | None = None, chromium: str | None = None,
               captions_for: set[str] | None = None) -> list[PageReport]:
    """Render every page and check it; the first page (the TOC's root) must link every other one."""
    from bs4 import BeautifulSoup

    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium on PATH (Debian: apt-get install chromium; `make chromium` does it as root)")
    reports = []
    start_dom = None
    for page in dict.fromkeys(pages):
        html_file = html_dir / f"{page}.html"
        if not html_file.is_file():
            reports.append(PageReport(page=page, problems=[f"{html_file.name} was not built"]))
            continue
        shot = None if screenshots is None else screenshots / (page.replace("/", "__") + ".png")
        dom = render(html_file, chromium, screenshot=shot)
        if page == pages[0]:
            start_dom = dom
        report = check_dom(html_file, dom, captions=page in (captions_for or set()))
        report.page, report.screenshot = page, shot
        reports.append(report)
    if start_dom is not None:  # the start page (the TOC's root) links every chapter in its navigation
        start = html_dir / f"{pages[0]}.html"
        hrefs = {_local_target(start, a["href"]) for a in BeautifulSoup(start_dom, "html.parser").find_all("a", href=True)}
        missing = [p for p in pages[1:] if (html_dir / f"{p}.html").resolve() not in hrefs]
        if missing:
            reports[0].problems.append(f"the start page's table of contents lacks {missing}")
    return reports


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("html", nargs="?", default="_build/html", help="the built book (default: _build/html)")
    parser.add_argument("--book", default="book", help="the book's source folder with _toc.yml (default: book)")
    parser.add_argument("--screenshots", default=None, help="folder for one PNG per page (default: <html>/../screenshots)")


def main(args: argparse.Namespace) -> int:
    html = Path(args.html)
    shots = Path(args.screenshots) if args.screenshots else html.parent / "screenshots"
    pages = toc_pages(Path(args.book))
    reports = check_book(html, pages, screenshots=shots, captions_for=caption_pages(pages))
    bad = 0
    for r in reports:
        status = "ok" if not r.problems else f"{len(r.problems)} problem(s)"
        print(f"{r.page:40s} {status:14s} images {r.n_images:3d}  math {r.n_rendered_math:3d}/{r.n_math:<3d} downloads {r.n_downloads}")
        for p in r.problems:
            print(f"    - {p}")
        bad += bool(r.problems)
    print(f"screenshots: {shots}")
    return 1 if bad else 0
