"""What the report's notebooks show their reader, and what they keep out of the book.

The notebooks of ``notebooks/`` run in two places: in JupyterLab, where a person wants progress bars
and log lines, and under ``localign report`` (papermill), whose executed copies become the chapters
of the book, where neither belongs. :func:`setup` is the first call of every chapter::

    from localign import notebook
    notebook.setup(log_file=f"{out}/notebook.log")   # logs to the run folder, cwd = repository root
    ...
    result = pretrain(config, progress=notebook.show_progress())
    notebook.table(results_table, "probe_auroc", title="Linear probe: macro AUROC (%)")

``localign report`` tells the kernel which book page it is writing through the environment
(:data:`REPORT_PAGE_ENV`); everything here reads that, so a notebook needs no parameter for it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

#: Set by ``localign report`` for the kernel it starts: the executed notebook (the book page) it writes.
REPORT_PAGE_ENV = "LOCALIGN_REPORT_PAGE"

_HANDLER_NAME = "localign-notebook"


def report_page() -> Path | None:
    """The executed notebook this kernel is writing for the book, or None outside ``localign report``."""
    page = os.environ.get(REPORT_PAGE_ENV)
    return Path(page) if page else None


def in_report() -> bool:
    """True while ``localign report`` executes this notebook for the book."""
    return report_page() is not None


def show_progress() -> bool:
    """Progress bars in JupyterLab and scripts, never in the book (pass as ``progress=``)."""
    return not in_report()


def setup(log_file: str | Path | None = None, chdir: bool = True) -> Path:
    """Set a chapter up the same way in JupyterLab and in the report; returns the log file.

    * ``chdir``: a kernel started in the checkout's ``notebooks/`` (JupyterLab starts kernels in the
      notebook's folder) moves to the repository root, so relative paths such as ``runs/demo/lovt``
      mean what they mean in the report plan, the CLI and the other chapters.
    * Logging: the ``localign`` loggers write INFO and above to ``log_file`` (default
      ``runs/logs/<notebook>.log``), not to the cell outputs. In JupyterLab warnings also go to
      the cell (stderr); in the report nothing does, and Python warnings are logged to the same
      file instead of being printed into the book.
    """
    cwd = Path.cwd()
    if chdir and not in_report() and cwd.name == "notebooks" and any((cwd.parent / f).is_file() for f in ("pyproject.toml", "_config.yml")):
        os.chdir(cwd.parent)  # JupyterLab starts the kernel in notebooks/; the report runs in the root already
    if log_file is None:
        page = report_page()
        log_file = Path("runs") / "logs" / f"{page.stem if page else 'notebook'}.log"
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)

    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    file_handler.set_name(_HANDLER_NAME)
    handlers: list[logging.Handler] = [file_handler]
    if not in_report():
        console = logging.StreamHandler()
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        console.set_name(_HANDLER_NAME)
        handlers.append(console)
    names = ["localign", "py.warnings"] if in_report() else ["localign"]
    for name in names:
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:  # a re-run cell replaces, not adds
            logger.removeHandler(h)
            h.close()
        for h in handlers:
            logger.addHandler(h)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # the root logger (papermill's, a basicConfig) never prints them into the cell
    if in_report():
        logging.captureWarnings(True)
        warnings.simplefilter("default")
    return log_file


def display_path(path: str | Path) -> str:
    """A path as a reader may see it: relative to the working directory, else with ``~`` for home."""
    p = Path(path).expanduser()
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        pass
    try:
        return "~/" + p.resolve().relative_to(Path.home().resolve()).as_posix()
    except ValueError:
        return p.name


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_").lower()
    if not slug:
        raise ValueError(f"cannot make a file name of {name!r}")
    return slug


def _download_dir() -> Path | None:
    page = report_page()
    return None if page is None else page.parent / f"{page.stem}_files"


def download(path: str | Path, label: str | None = None) -> None:
    """Offer an existing file for download from the book page (shows nothing outside the report)."""
    from IPython.display import Markdown, display

    target_dir = _download_dir()
    if target_dir is None:
        return
    path = Path(path)
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target_dir / path.name)
    rel = f"{target_dir.name}/{path.name}"
    display(Markdown(f"{{download}}`{label or 'Download ' + path.name} <{rel}>`"))


def table(frame: Any, name: str, title: str | None = None, digits: int | None = None) -> None:
    """Show a results table (under a bold title) and, in the book, a link to download it as CSV.

    ``name`` is the CSV's file name without ``.csv``. The CSV holds the table as shown: an index
    that carries information becomes columns, and two-level column headers are joined by a space.
    """
    import pandas as pd
    from IPython.display import Markdown, display

    frame = pd.DataFrame(frame)
    if digits is not None:
        frame = frame.round(digits)
    if not (isinstance(frame.index, pd.RangeIndex) and frame.index.name is None):
        frame = frame.reset_index()
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = [" ".join(str(level) for level in col if str(level)) for col in frame.columns]
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if value != value else (f"{value:.{digits}f}" if digits is not None else f"{value:g}")
        return str(value)

    if title:
        display(Markdown(f"**{title}**"))
    display(frame.style.hide(axis="index").format(cell))
    target_dir = _download_dir()
    if target_dir is not None:
        target_dir.mkdir(parents=True, exist_ok=True)
        csv = target_dir / f"{_slug(name)}.csv"
        frame.to_csv(csv, index=False)
        display(Markdown(f"{{download}}`Download as CSV <{target_dir.name}/{csv.name}>`"))


def figure(fig: Any, name: str, caption: str, label: str | None = None) -> None:
    """Show a matplotlib figure with its caption, from any cell (e.g. a loop over the registry's figures).

    In the book the figure is saved as ``<page>_files/<name>.png`` and shown through a MyST
    ``figure`` directive (so it is numbered, captioned and, with ``label``, referable as
    ``{numref}`label```); outside the report it is displayed inline with the caption below it.
    """
    from IPython.display import Markdown, display

    target_dir = _download_dir()
    if target_dir is None:
        display(fig)
        display(Markdown(f"*{caption}*"))
        return
    target_dir.mkdir(parents=True, exist_ok=True)
    png = target_dir / f"{_slug(name)}.png"
    fig.savefig(png, dpi=120, bbox_inches="tight")
    options = f":name: {label}\n" if label else ""
    display(Markdown(f":::{{figure}} {target_dir.name}/{png.name}\n{options}\n{caption}\n:::\n"))
