"""Where localign keeps generated data (one cache folder, never inside the git tree by default),
and small file helpers: what is wrong with a path, and atomic text writes."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO, Callable


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


def file_problem(path: str | Path) -> tuple[bool, str] | None:
    """None when ``path`` is a regular file (after symbolic links), else ``(missing, reason)``.

    ``missing`` is True when nothing is there (or a symbolic link points to nothing); otherwise
    something is there that cannot be read as a file: a symbolic link loop, a folder, a device, or
    a permission problem. ``Path.is_file()`` answers False to all of these alike, which reported a
    symbolic link loop as "file not found".
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return True, f"broken symbolic link (to {os.readlink(path)}, which does not exist)"
        return True, "file not found"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return False, "symbolic link loop (the link, or a folder on its path, points back to itself)"
        return False, f"{type(err).__name__}: {err.strerror or err}"
    if stat.S_ISDIR(mode):
        return False, "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return False, "not a regular file"
    return None


def atomic_write(path: str | Path, write: Callable[[IO], None], binary: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, fsync it and rename it to ``path``:
    a reader (or a run killed mid-write) never sees a partial file at ``path``, and a journaling
    file system cannot commit the rename before the data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8", newline="") as f:  # text written as is
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a text."""
    return atomic_write(path, lambda f: f.write(text))
