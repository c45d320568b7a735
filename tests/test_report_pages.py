"""What ``localign report`` does to an executed notebook before the book renders it, and the
``localign.notebook`` helpers the chapters call (no kernel: seconds)."""

from __future__ import annotations

import logging
import warnings

import nbformat
import pandas as pd
import pytest

from localign import notebook
from localign.book_check import _MACHINE_PATH, _RAW_TEX, _WARNING, caption_pages
from localign.report import finish_page, notebook_parameters, parameters_markdown

PARAMS = '''method = "lovt"          # any name of `localign methods`
epochs = 1               # demo | paper
tasks = "a,b"
overrides = {}            # dotted fields, e.g. {"unet.max_steps": 200}
'''


def _notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(PARAMS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), params, nbformat.v4.new_code_cell("x = 1")]
    src = tmp_path / "src.ipynb"
    nbformat.write(nb, src)
    return nb, src


def test_parameters_keep_their_comments_and_table_marks_the_plans_values(tmp_path):
    _, src = _notebook(tmp_path)
    assert notebook_parameters(src) == {"method": "lovt", "epochs": 1, "tasks": "a,b", "overrides": {}}
    md = parameters_markdown(src, {"epochs": 3, "overrides": {"a|b": 1}}, "params/ci.yaml")
    lines = md.splitlines()
    assert "`params/ci.yaml`" in lines[0]
    assert "| `method` | default | lovt | any name of `localign methods` |" in lines
    assert "| `epochs` | **plan** | 3 | demo \\| paper |" in lines
    assert any(line.startswith("| `overrides` | **plan** | \\{'a\\|b': 1\\} |") for line in lines)
    assert "| `tasks` | default | a,\u200bb |" in md


def test_finish_page_hides_both_parameter_cells_adds_one_table_and_collapses_stderr(tmp_path):
    nb, src = _notebook(tmp_path)
    injected = nbformat.v4.new_code_cell("# Parameters\nepochs = 3\n")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(2, injected)
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", name="stderr", text="12:00 INFO epoch 0\n")]
    page = tmp_path / "page.ipynb"
    nbformat.write(nb, page)
    assert finish_page(page, src, {"epochs": 3}, "params/ci.yaml") == [3]
    out = nbformat.read(page, as_version=4)
    assert "remove-cell" in out.cells[1].metadata["tags"] and "remove-cell" in out.cells[2].metadata["tags"]
    assert out.cells[3].cell_type == "markdown" and out.cells[3].source.startswith("**Parameters of this chapter**")
    assert "hide-output" in out.cells[4].metadata["tags"]
    assert sum(c.source.startswith("**Parameters") for c in out.cells) == 1


def test_notebook_helpers_outside_and_inside_the_report(tmp_path, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(getattr(obj, "data", obj)))
    monkeypatch.delenv(notebook.REPORT_PAGE_ENV, raising=False)
    assert notebook.show_progress() and not notebook.in_report()
    frame = pd.DataFrame({"AUROC": [0.71234, float("nan")]}, index=pd.Index(["a", "b"], name="run"))
    notebook.table(frame, "probe")  # outside the report: shown, no file, no link
    assert len(shown) == 1 and "0.71234" in shown[0].to_html() and "nan" not in shown[0].to_html()

    page = tmp_path / "book" / "_generated" / "04_evaluate.ipynb"
    page.parent.mkdir(parents=True)
    monkeypatch.setenv(notebook.REPORT_PAGE_ENV, str(page))
    assert not notebook.show_progress()
    notebook.table(frame, "Linear probe", title="Linear probe", digits=3)
    csv = page.parent / "04_evaluate_files" / "linear_probe.csv"
    assert pd.read_csv(csv).columns.tolist() == ["run", "AUROC"] and pd.read_csv(csv)["AUROC"][0] == 0.712
    assert shown[1] == "**Linear probe**" and "0.712<" in shown[2].to_html()
    assert shown[3] == "{download}`Download as CSV <04_evaluate_files/linear_probe.csv>`"


def test_setup_in_the_report_keeps_logs_and_warnings_out_of_the_cell(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(notebook.REPORT_PAGE_ENV, str(tmp_path / "page.ipynb"))
    logger = logging.getLogger("localign.test_report_pages")
    try:
        log_file = notebook.setup(log_file=tmp_path / "run" / "nb.log")
        logger.info("an info line for the file")
        warnings.warn("a warning for the file", UserWarning)
    finally:
        logging.captureWarnings(False)
        for name in ("localign", "py.warnings"):
            lg = logging.getLogger(name)
            for h in [h for h in lg.handlers if h.get_name() == "localign-notebook"]:
                lg.removeHandler(h)
                h.close()
            lg.propagate = True
    err = capsys.readouterr().err
    assert "info line" not in err and "a warning for the file" not in err
    text = log_file.read_text()
    assert "an info line for the file" in text and "a warning for the file" in text


def test_display_path_never_shows_the_machine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert notebook.display_path(tmp_path / "runs") == "runs"
    assert notebook.display_path("/nowhere/else/x.csv") == "x.csv"


@pytest.mark.parametrize("text, pattern, hit", [
    ("/home/reader/venv/lib/python3.11/site-packages/tqdm/auto.py:21", _MACHINE_PATH, True),
    ("prepared dataset: runs/ci/synthcxr/prepared", _MACHINE_PATH, False),
    ("~/.cache/localign/prepared", _MACHINE_PATH, False),
    ("TqdmWarning: IProgress not found", _WARNING, True),
    ("UserWarning: x", _WARNING, True),
    ("the warning band", _WARNING, False),
    (r"\[ \mathrm{CE}(S) \]", _RAW_TEX, True),
    ("a $5 fee", _RAW_TEX, False),
])
def test_browser_check_patterns(text, pattern, hit):
    assert bool(pattern.search(text)) is hit


def test_caption_check_covers_every_executed_chapter():
    pages = ["intro", "methods", "_generated/01_data", "_generated/03_pretrain_lovt", "_generated/04_evaluate"]
    assert caption_pages(pages) == {"_generated/01_data", "_generated/03_pretrain_lovt", "_generated/04_evaluate"}
