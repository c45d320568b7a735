"""The default data of every notebook, test and benchmark: SynthCXR, generated and prepared on first use.

``demo_prepared()`` returns a prepared dataset folder (what ``localign prepare`` writes) for the
default SynthCXR demo dataset, creating both the raw SynthCXR files and the prepared folder in the
cache (:func:`localign.paths.cache_dir`, never in git) the first time. ``resolve_prepared(path)``
accepts a prepared folder, a raw SynthCXR root (prepared next to it on first use) or None (the demo).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from localign.data.manifest import INFO_FILE
from localign.data.synthcxr import SynthCXRConfig, ensure_demo_dataset, generate
from localign.paths import cache_dir

log = logging.getLogger(__name__)


def _is_prepared(path: Path) -> bool:
    return (path / INFO_FILE).is_file()


def _is_synthcxr_root(path: Path) -> bool:
    """A completely generated SynthCXR root (an interrupted generation does not count)."""
    from localign.data.synthcxr.writer import is_complete

    return is_complete(path)


def prepare_synthcxr(root: str | Path, out: str | Path, progress: bool = True, **overrides) -> Path:
    """Prepare a raw SynthCXR root into ``out`` (atomically: a half-written folder is never left)."""
    from localign.data.prepare import prepare_dataset, synthcxr_config

    out = Path(out)
    if _is_prepared(out):
        return out
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    prepare_dataset(synthcxr_config(root, **overrides), tmp, progress=progress)
    if out.exists():  # an incomplete earlier attempt (no dataset.json)
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def demo_prepared(config: SynthCXRConfig | None = None, progress: bool = True) -> Path:
    """The prepared folder of the SynthCXR demo dataset (generated and prepared on first use)."""
    root = ensure_demo_dataset(config)
    out = cache_dir() / "prepared" / root.name
    if not _is_prepared(out):
        log.info("preparing the SynthCXR demo dataset %s -> %s", root, out)
        out.parent.mkdir(parents=True, exist_ok=True)
        prepare_synthcxr(root, out, progress=progress)
    return out


def synthcxr_prepared(root: str | Path, config: SynthCXRConfig, progress: bool = True) -> Path:
    """Generate SynthCXR with ``config`` into ``root`` (unless already there) and prepare it into
    ``root/prepared``; returns the prepared folder. Used by notebook 01 for non-default datasets."""
    root = Path(root)
    if not _is_synthcxr_root(root):
        generate(root, config, progress=progress)
    return prepare_synthcxr(root, root / "prepared", progress=progress)


def resolve_prepared(data_root: str | Path | None, progress: bool = True) -> Path:
    """A prepared dataset folder for ``data_root``: itself, a raw SynthCXR root's ``prepared/``
    (prepared on first use), or the demo when None. Anything else is a clear error."""
    if data_root is None:
        return demo_prepared(progress=progress)
    path = Path(data_root).expanduser()
    if _is_prepared(path):
        return path
    if _is_synthcxr_root(path):
        return prepare_synthcxr(path, path / "prepared", progress=progress)
    if not path.exists():
        raise FileNotFoundError(f"data root {path} does not exist")
    raise ValueError(
        f"{path} is neither a prepared dataset (no {INFO_FILE}) nor a SynthCXR root. For MIMIC-CXR run "
        "`localign prepare --mimic-jpg DIR --mimic-reports DIR --out PREPARED` and pass PREPARED."
    )
