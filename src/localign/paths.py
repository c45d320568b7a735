"""Where localign keeps generated data: one cache folder, never inside the git tree by default."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder for generated datasets and tokenization caches.

    ``$LOCALIGN_CACHE`` if set, else ``$XDG_CACHE_HOME/localign``, else ``~/.cache/localign``.
    """
    if os.environ.get("LOCALIGN_CACHE"):
        return Path(os.environ["LOCALIGN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "localign"


def repo_root() -> Path | None:
    """The repository root when running from a source checkout (``src/`` layout), else None."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "localign").is_dir():
            return parent
    return None
