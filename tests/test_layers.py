"""The package's import graph runs one way: no module imports one from a higher layer.

Every module's imports (module level and inside functions, since a lazy import couples the layers
just the same) are read with :mod:`ast` and checked against :data:`LAYERS`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Bottom to top; a module may import its own layer and those below. The why of each row:
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # leaf utilities every layer uses: the config serializer, paths/cache, progress bars, rank helpers
    # (and the papers' published numbers, data files with a loader that imports nothing of the package)
    ("base", ("localign", "localign.config", "localign.paths", "localign.progress", "localign.distributed", "localign.published")),
    # data on disk and the pure maths over tensors/arrays: know nothing about models or training
    ("data", ("localign.data", "localign.losses", "localign.metrics")),
    # encoders, heads and methods: built from data records, scored by losses
    ("models", ("localign.models",)),
    # the engine fits models on data and writes run folders
    ("train", ("localign.train",)),
    # evaluation reads run folders (train.runs / train.run_folder / train.checkpoint only, see below)
    ("eval", ("localign.eval",)),
    # figures present what training and evaluation produced
    ("viz", ("localign.viz",)),
    # the faces: CLIs, the report runner, notebooks helpers and the book check compose everything
    ("faces", ("localign.report", "localign.reproduction", "localign.chapter_runs", "localign.notebook", "localign.book_check", "localign.cli", "*.cli")),
)

#: eval/ imports train/ only to read runs (the run folder's format, its checkpoints), and the
#: retrieval protocol scores with validation's own retrieval measure, so that test R@K and the
#: run's val/ R@K are one definition.
EVAL_MAY_READ = ("localign.train.runs", "localign.train.run_folder", "localign.train.checkpoint", "localign.train.validation")


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of a module name: the longest matching prefix; ``*.cli`` for CLI faces."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if p == "*.cli":
                if module.endswith(".cli") or ".cli." in module:
                    return i
                continue
            # the bare package name is its __init__ only, not a prefix of every module
            if (module == p or (p != "localign" and module.startswith(p + "."))) and len(p) > best_len:
                best, best_len = i, len(p)
    if best is None:
        raise KeyError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")
    return best


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported localign module) of every import in a file, relative ones resolved;
    ``from pkg import name`` counts ``pkg.name`` when that is a module, else ``pkg``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "localign"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "localign":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((node.lineno, sub if sub in known else target))
    return out


def upward_imports(src: Path) -> list[str]:
    """Every import of a module from a higher layer, and every eval -> train import that is not a read of runs."""
    files = sorted((src / "localign").rglob("*.py"))
    names = {module_name(f, src): f for f in files}
    bad: list[str] = []
    for module, path in names.items():
        here = layer_of(module)
        for line, target in imports_of(path, module, set(names)):
            there = layer_of(target)
            where = f"{path.relative_to(src)}:{line} {module} -> {target}"
            if any(b.startswith(where + " ") for b in bad):  # several names of one import line
                continue
            if there > here:
                bad.append(f"{where} ({LAYERS[here][0]} imports {LAYERS[there][0]})")
            elif LAYERS[here][0] == "eval" and LAYERS[there][0] == "train" and not target.startswith(EVAL_MAY_READ):
                bad.append(f"{where} (eval uses train beyond reading runs)")
    return bad


def test_no_module_imports_a_higher_layer():
    bad = upward_imports(SRC)
    assert not bad, "imports that run up the layers:\n" + "\n".join(bad)


def test_every_module_has_a_layer():
    for f in (SRC / "localign").rglob("*.py"):
        layer_of(module_name(f, SRC))  # raises for a module outside the table


def test_a_planted_upward_import_is_caught(tmp_path):
    """The check is not vacuous: a data module importing the engine, and an eval module using the
    engine, both fail it (an absolute and a relative import, one of them inside a function)."""
    pkg = tmp_path / "localign"
    for sub in ("data", "train", "eval", "metrics"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "engine.py").write_text("")
    (pkg / "train" / "runs.py").write_text("")
    (pkg / "metrics" / "retrieval.py").write_text("")
    (pkg / "data" / "planted.py").write_text("def f():\n    from localign.train.engine import pretrain\n")
    (pkg / "eval" / "planted.py").write_text("from ..train import engine\nfrom ..train.runs import x\nfrom localign.metrics import retrieval\n")
    bad = upward_imports(tmp_path)
    assert len(bad) == 2, bad
    assert any("localign.data.planted -> localign.train.engine (data imports train)" in b for b in bad), bad
    assert any("localign.eval.planted -> localign.train.engine (eval uses train beyond reading runs)" in b for b in bad), bad
    with pytest.raises(KeyError):
        layer_of("localign.somewhere_new")
