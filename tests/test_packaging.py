"""Repository hygiene: environment.yml agrees with pyproject.toml; notebooks are committed clean."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {_name(d): d.replace(" ", "") for d in project["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    listed = {_name(d): d.replace(" ", "") for d in pip if not d.startswith("-e")}
    assert set(listed) == set(deps), f"only in pyproject: {set(deps) - set(listed)}; only in environment.yml: {set(listed) - set(deps)}"
    for name, spec in listed.items():
        if name in ("torch", "torchvision"):
            continue  # pinned in environment.yml (and the Makefile), ranges in pyproject
        assert spec == deps[name], f"{name}: environment.yml has {spec!r}, pyproject.toml {deps[name]!r}"
    editable = [d for d in pip if d.startswith("-e")]
    assert editable == ["-e .[dev,lab]"] and {"dev", "lab"} <= set(project["optional-dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    for pin in ("torch==", "torchvision=="):
        assert re.search(pin + r"[\d.]+", makefile).group(0) in [d for d in pip if d.startswith(pin)][0]


def test_jupyter_book_stays_below_2():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("jupyter-book") and "<2" in d for d in deps)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "outputs must not be committed"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert code[0] is params[0], "the parameters cell is the first code cell"
    for node in ast.parse(params[0].source).body:  # literals only: papermill overrides them
        assert isinstance(node, ast.Assign), ast.dump(node)
        ast.literal_eval(node.value)
    # papermill must see every parameter (its parser rejects e.g. '=' inside a trailing comment, and
    # then warns "Passed unknown parameter" and injects a second assignment instead)
    from papermill.translators import PythonTranslator

    assigned = [t.id for node in ast.parse(params[0].source).body for t in node.targets]
    assert [p.name for p in PythonTranslator.inspect(params[0])] == assigned


def test_cli_set_overrides_parse_yaml_values_and_reject_bad_items():
    from localign.cli import parse_set

    assert parse_set(["a.b=5", "c=[1, 2]", "d=null", "e=text"], "x=1") == {"a.b": 5, "c": [1, 2], "d": None, "e": "text"}
    for bad in ("novalue", "=5"):
        with pytest.raises(SystemExit, match="KEY=VALUE"):
            parse_set([bad], "x=1")
