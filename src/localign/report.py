"""``localign report``: run the notebooks of a report plan with papermill into the book.

A plan (``params/report.yaml`` for the full report, ``params/ci.yaml`` for the tiny CI build) lists
notebook executions in order; each names a notebook of ``notebooks/``, the output name under
``book/_generated/`` and its parameters. ``defaults`` are merged into every entry's parameters that
the notebook declares. Kernels run in the repository root, so relative paths (``runs/...``) mean the
same in every notebook, the CLI and the plan. Then ``jupyter-book build book`` renders the executed
notebooks (``execute_notebooks: off``)::

    localign report --plan params/report.yaml            # all entries
    localign report --plan params/report.yaml --only 03_pretrain_lovt 04_evaluate
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localign.notebook import REPORT_PAGE_ENV
from localign.paths import repo_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanEntry:
    notebook: str  # name in notebooks/ without .ipynb
    output: str  # name under the output folder without .ipynb (may contain a subfolder)
    parameters: dict[str, Any] = field(default_factory=dict)


def _parameters_source(path: Path) -> str:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell.source
    raise ValueError(f"{path} has no cell tagged 'parameters'")


def _parse_parameters(source: str) -> dict[str, tuple[Any, str]]:
    """name -> (literal value, the comment at the end of its line) of a parameters cell."""
    import ast
    import io
    import tokenize

    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = (ast.literal_eval(node.value), comments.get(node.end_lineno, ""))
    return out


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The literals of the cell tagged ``parameters`` (what papermill would inject over)."""
    return {name: value for name, (value, _) in _parse_parameters(_parameters_source(path)).items()}


def _markdown_cell_text(value: Any, breakable: bool = False) -> str:
    """A value or comment as plain Markdown table-cell text (Markdown's and MyST's special characters escaped)."""
    import re

    text = value if isinstance(value, str) else repr(value)
    text = re.sub(r"([\\`*_\[\]<>|$~{}#])", r"\\\1", text)
    # a zero-width space after each comma lets a long value ("probe,classify_frozen,...") wrap in its cell
    return text.replace(",", ",\u200b") if breakable else text


def parameters_markdown(notebook: Path, injected: dict[str, Any], plan_label: str) -> str:
    """The table of a chapter's parameters as it ran: each value, whether the plan set it, and its meaning."""
    declared = _parse_parameters(_parameters_source(notebook))
    lines = [f"**Parameters of this chapter**, as run by the report plan `{plan_label}`:", "",
             "| parameter | set by | value | meaning |", "|---|---|---|---|"]
    for name, (default, comment) in declared.items():
        value = injected.get(name, default)
        source = "**plan**" if name in injected else "default"
        meaning = comment.replace("|", "\\|")  # the author's Markdown, `code` included
        lines.append(f"| `{name}` | {source} | {_markdown_cell_text(value, breakable=True)} | {meaning} |")
    return "\n".join(lines)


def finish_page(page: Path, notebook: Path, injected: dict[str, Any], plan_label: str) -> list[int]:
    """Turn an executed notebook into a book page; returns the cells whose stderr output got collapsed.

    * The ``parameters`` cell and papermill's ``injected-parameters`` cell are removed from the page
      (tag ``remove-cell``) and replaced by one table of the values the chapter ran with.
    * A code cell that printed to stderr (log lines a chapter did not route to its log file with
      :func:`localign.notebook.setup`) has its output collapsed (tag ``hide-output``).
    """
    import nbformat

    nb = nbformat.read(page, as_version=4)
    last = None
    collapsed = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.setdefault("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            if "remove-cell" not in tags:
                tags.append("remove-cell")
            last = i
        elif any(o.get("output_type") == "stream" and o.get("name") == "stderr" for o in cell.get("outputs", [])):
            if "hide-output" not in tags and "remove-output" not in tags:
                tags.append("hide-output")
            collapsed.append(i)
    if last is not None:
        table = nbformat.v4.new_markdown_cell(parameters_markdown(notebook, injected, plan_label))
        table.metadata["tags"] = ["localign-parameters"]
        nb.cells.insert(last + 1, table)
    nbformat.write(nb, page)
    return collapsed


def load_plan(path: str | Path, notebooks_dir: Path) -> list[PlanEntry]:
    """Read and check a plan: unknown notebooks or parameters are errors, not silent no-ops."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report plan not found: {path}")
    plan = yaml.safe_load(path.read_text()) or {}
    defaults = plan.get("defaults", {}) or {}
    entries = []
    for i, raw in enumerate(plan.get("notebooks", [])):
        name = raw.get("notebook")
        nb_path = notebooks_dir / f"{name}.ipynb"
        if not nb_path.is_file():
            raise ValueError(f"{path}: entry {i} names notebook {name!r}, but {nb_path} does not exist")
        declared = notebook_parameters(nb_path)
        params = {k: v for k, v in defaults.items() if k in declared}
        unknown = sorted(set(raw.get("parameters", {}) or {}) - set(declared))
        if unknown:
            raise ValueError(f"{path}: entry {i} ({name}) sets {unknown}, which {name}.ipynb does not declare; it declares {sorted(declared)}")
        params.update(raw.get("parameters", {}) or {})
        entries.append(PlanEntry(notebook=name, output=raw.get("output", name), parameters=params))
    outputs = [e.output for e in entries]
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"{path}: two entries write the same output ({sorted(o for o in outputs if outputs.count(o) > 1)})")
    return entries


def run_plan(plan: str | Path, out_dir: str | Path | None = None, only: list[str] | None = None, root: str | Path | None = None,
             timeout: int | None = None, progress: bool = True) -> list[Path]:
    """Execute the plan's notebooks in order; returns the executed notebook paths."""
    import papermill

    root = Path(root) if root is not None else (repo_root() or Path.cwd())
    notebooks_dir = root / "notebooks"
    out_dir = Path(out_dir) if out_dir is not None else root / "book" / "_generated"
    entries = load_plan(plan, notebooks_dir)
    if only:
        missing = sorted(set(only) - {e.output for e in entries} - {e.notebook for e in entries})
        if missing:
            raise ValueError(f"--only {missing}: not in the plan (outputs: {[e.output for e in entries]})")
        entries = [e for e in entries if e.output in only or e.notebook in only]
    plan_path = Path(plan).resolve()
    plan_label = plan_path.relative_to(root.resolve()).as_posix() if plan_path.is_relative_to(root.resolve()) else plan_path.name
    written = []
    for entry in entries:
        target = out_dir / f"{entry.output}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target.parent / f"{target.stem}_files", ignore_errors=True)  # the page's downloads, rewritten
        log.info("papermill %s -> %s %s", entry.notebook, target, json.dumps(entry.parameters))
        t0 = time.time()
        previous = os.environ.get(REPORT_PAGE_ENV)
        os.environ[REPORT_PAGE_ENV] = str(target.resolve())  # the kernel inherits it: localign.notebook reads it
        try:
            papermill.execute_notebook(
                str(notebooks_dir / f"{entry.notebook}.ipynb"), str(target), parameters=entry.parameters, kernel_name="python3",
                cwd=str(root), progress_bar=progress, execution_timeout=timeout, log_output=False,
            )
        finally:
            if previous is None:
                os.environ.pop(REPORT_PAGE_ENV, None)
            else:
                os.environ[REPORT_PAGE_ENV] = previous
        collapsed = finish_page(target, notebooks_dir / f"{entry.notebook}.ipynb", entry.parameters, plan_label)
        if collapsed:
            log.warning("%s: cells %s printed to stderr; their output is collapsed in the book "
                        "(route logs to a file with localign.notebook.setup)", entry.output, collapsed)
        seconds = round(time.time() - t0, 1)
        record_timing(out_dir, entry, seconds, plan_label)
        log.info("%s done in %.0f s", entry.output, seconds)
        written.append(target)
    return written


TIMINGS_FILE = "timings.json"


def record_timing(out_dir: Path, entry: PlanEntry, seconds: float, plan_label: str) -> Path:
    """Add one chapter's wall time to ``<out_dir>/timings.json`` (written after every chapter, so an
    ``--only`` rerun keeps the others' times and a later chapter, the reproduction page, reads them)."""
    from datetime import datetime, timezone

    path = out_dir / TIMINGS_FILE
    try:
        timings = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON: starting it afresh", path)
        timings = {}
    # the old flat {output: seconds} form is dropped; a rerun chapter moves to the end (the file lists the order they ran)
    timings = {k: v for k, v in timings.items() if isinstance(v, dict) and k != entry.output}
    timings[entry.output] = {"notebook": entry.notebook, "seconds": seconds, "plan": plan_label,
                             "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             # the machine's load when the chapter ended: wall times mean little on a busy machine
                             "load_1min": round(os.getloadavg()[0], 2)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(timings, indent=2))
    tmp.replace(path)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", default="params/report.yaml", help="report plan (YAML)")
    parser.add_argument("--out", default=None, help="output folder (default: book/_generated)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these outputs/notebooks of the plan")
    parser.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    parser.add_argument("--quiet", action="store_true")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    written = run_plan(args.plan, out_dir=args.out, only=args.only, timeout=args.timeout, progress=not args.quiet)
    print(f"executed {len(written)} notebooks into {written[0].parent if written else args.out}")
    return 0
