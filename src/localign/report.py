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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localign.paths import repo_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanEntry:
    notebook: str  # name in notebooks/ without .ipynb
    output: str  # name under the output folder without .ipynb (may contain a subfolder)
    parameters: dict[str, Any] = field(default_factory=dict)


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The literals of the cell tagged ``parameters`` (what papermill would inject over)."""
    import ast

    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            out = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    out[node.targets[0].id] = ast.literal_eval(node.value)
            return out
    raise ValueError(f"{path} has no cell tagged 'parameters'")


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
    written, timings = [], {}
    for entry in entries:
        target = out_dir / f"{entry.output}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("papermill %s -> %s %s", entry.notebook, target, json.dumps(entry.parameters))
        t0 = time.time()
        papermill.execute_notebook(
            str(notebooks_dir / f"{entry.notebook}.ipynb"), str(target), parameters=entry.parameters, kernel_name="python3",
            cwd=str(root), progress_bar=progress, execution_timeout=timeout, log_output=False,
        )
        timings[entry.output] = round(time.time() - t0, 1)
        log.info("%s done in %.0f s", entry.output, timings[entry.output])
        written.append(target)
    (out_dir / "timings.json").write_text(json.dumps(timings, indent=2))
    return written


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
