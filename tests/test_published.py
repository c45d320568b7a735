"""Published numbers as packaged CSV files: the schema of every file, and the tables read the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from localign.data import layout
from localign.metrics import EDEMA_THRESHOLD_NAMES
from localign.eval.stats import validate_tidy
from localign.published import load_published

DATA = Path(__file__).parent / "data"


def results_with_every_paper_task() -> pd.DataFrame:
    """Tidy results of every task that a table shows published numbers for (two seeds each)."""
    rows = []

    def add(task, metric, values, fraction=1.0):
        rows.extend({"run": "lovt", "method": "lovt", "task": task, "fraction": fraction, "seed": s, "metric": metric, "value": v}
                    for s, v in enumerate(values))

    for f in (0.01, 0.1, 1.0):
        add("probe", "macro", [0.6 + f / 10, 0.62 + f / 10], f)
        add("seg_linear:rsna", "dice", [0.3 + f / 10, 0.32 + f / 10], f)
    for task in ("classify_frozen", "classify_tuned"):
        for i, label in enumerate([*layout.PATHOLOGY9, "macro"]):
            add(task, label, [0.6 + i / 100, 0.64 + i / 100])
    for task in ("edema_frozen", "edema_tuned"):
        for i, name in enumerate([*EDEMA_THRESHOLD_NAMES, "mean"]):
            add(task, name, [0.7 + i / 100, 0.72 + i / 100])
    for task in ("seg_unet_frozen:rsna", "seg_unet_finetune:rsna"):
        add(task, "dice", [0.4, 0.44])
    for metric, value in {"i2t_R@1": 10.0, "i2t_R@5": 30.0, "i2t_R@10": 50.0, "t2i_R@1": 9.0, "t2i_R@5": 28.0,
                          "t2i_R@10": 47.0, "pool_size": 200.0, "chance_R@1": 0.5}.items():
        add("retrieval", metric, [value])
    return validate_tidy(pd.DataFrame(rows))


def test_every_packaged_file_follows_the_schema():
    from localign.published import COLUMNS, published_files, read_published_file

    files = published_files()
    assert len(files) >= 8
    for path in files:
        rows = read_published_file(path)
        assert rows, path.name
        assert all(f"{r.source}_{r.table}" == path.stem for r in rows)
    frame = load_published()
    assert tuple(frame.columns) == COLUMNS
    assert frame["value"].dtype == float and frame["ci_low"].dtype == float


def test_load_published_filters_and_names_unknown_sources():
    frame = load_published("liao")
    assert set(frame["table"]) == {"table2", "table3"} and set(frame["source"]) == {"liao"}
    assert len(load_published("liao", "table3")) == 83  # 9 labels x 9 columns + 2 caption averages
    with pytest.raises(KeyError, match="no published numbers for source='nobody'"):
        load_published("nobody")


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


HEADER = "source,table,dataset,protocol,method,metric,value,ci_low,ci_high,note"


@pytest.mark.parametrize(("lines", "match"), [
    (["source,table,dataset,protocol,method,metric,value,ci,note"], r"x_t1.csv: header"),
    ([HEADER, "x,t1,RSNA,probe,A,macro,,,,"], r"x_t1.csv, row 1 \(line 2\), column 'value': is empty"),
    ([HEADER, "x,t1,RSNA,probe,A,macro,80,,,", "x,t1,RSNA,probe,B,macro,eighty,,,"], r"row 2 \(line 3\), column 'value': expected a number"),
    ([HEADER, "x,t1,RSNA,probe,A,macro,80,79,,"], r"column 'ci_high': give both CI bounds or neither"),
    ([HEADER, "x,t1,RSNA,probe,A,macro,80,81,82,"], r"column 'value': 80 lies outside its CI"),
    ([HEADER, "y,t1,RSNA,probe,A,macro,80,,,"], r"column 'source': .* must be named y_t1.csv"),
    ([HEADER, "x,t1,RSNA,probe,A,macro,80,,,", "x,t1,RSNA,probe,A,macro,81,,,"], r"row 2 .*duplicate of row 1"),
    ([HEADER, "x,t1,RSNA,probe,A,macro,80,,,", 'x,t1,RSNA,probe,A,macro,81,,,"é"', "x,t1,RSNA,probe,A,macro,82,,,é"], r"row 3 .*duplicate of row 2"),
    ([HEADER, "x,t1,RSNA,probe,A,macro,80,,"], r"row 1 .*9 fields, expected 10"),
])
def test_schema_errors_name_file_row_and_column(tmp_path, lines, match):
    from localign.published import PublishedSchemaError, read_published_file

    with pytest.raises(PublishedSchemaError, match=match):
        read_published_file(_write(tmp_path, "x_t1.csv", lines))


def test_a_valid_file_reads_with_fraction_suffix_and_empty_ci(tmp_path):
    from localign.published import read_published_file, split_protocol

    rows = read_published_file(_write(tmp_path, "x_t1.csv", [HEADER, 'x,t1,RSNA,probe@10%,A,macro,80.5,79.5,81.5,"a, note"',
                                                              "x,t1,RSNA,retrieval,A,i2t_R@1,12,,,"]))
    assert (rows[0].value, rows[0].ci_low, rows[0].ci_high, rows[0].note) == (80.5, 79.5, 81.5, "a, note")
    assert rows[1].ci_low is None and rows[1].ci_high is None
    assert split_protocol(rows[0].protocol) == ("probe", 0.1) and split_protocol("retrieval") == ("retrieval", 1.0)
    assert split_protocol("seg_linear:rsna@1%") == ("seg_linear:rsna", 0.01)


def test_tables_read_the_same_numbers_as_before_the_move():
    """The tables with published rows, on fixed results, equal those the in-code numbers gave."""
    from localign.eval.tables import summary_tables

    expected = json.loads((DATA / "paper_tables_before.json").read_text())
    tables = summary_tables(results_with_every_paper_task(), with_paper=True)
    before = {t: v for t, v in expected.items()}
    assert set(before) <= set(tables)
    for title, table in before.items():
        got = json.loads(tables[title].to_json(orient="split", index=False))
        assert got == table, title


def test_registry_ablation_values_come_from_the_published_file():
    from localign.models.registry import LOVT_ABLATIONS
    from localign.published import published_rows

    rows = {r.method: r for r in published_rows("lovt", "supp_table1")}
    assert LOVT_ABLATIONS["lovt"] == ("LoVT", "17.9 ± 0.4") and LOVT_ABLATIONS["convirt"] == ("ConVIRT", "14.8 ± 1.1")
    for name, (label, value) in LOVT_ABLATIONS.items():
        r = rows[name]
        assert value == f"{r.value:.1f} ± {(r.ci_high - r.ci_low) / 2:.1f}", name


def test_the_package_data_ships_every_published_file():
    import fnmatch
    import tomllib

    from localign.published import PUBLISHED_DIR, published_files

    patterns = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["localign"]
    for path in [*published_files(), PUBLISHED_DIR / "display.yaml"]:
        rel = path.relative_to(PUBLISHED_DIR.parent).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel
