"""The papers' published numbers, as packaged CSV files (one per paper table), and their loader.

Every file in this folder is named ``<source>_<table>.csv`` (``lovt_results_rsna.csv``,
``liao_table3.csv``) and has exactly the columns :data:`COLUMNS`:

========== ===================================================================================
column     meaning
========== ===================================================================================
source     short name of the paper (``lovt``, ``liao``, ``limitr``, ...); the file name's prefix
table      the paper's table (``table3``, ``supp_table1``, ...); the file name's suffix
dataset    the data the number was measured on (``MIMIC-CXR``, ``RSNA``, ``CheXpert``, ...)
protocol   localign's task name where one corresponds (``probe``, ``seg_linear:rsna``,
           ``classify_tuned``), else a short name of the paper's protocol; a label fraction may be
           written as a suffix ``@<percent>%`` (``probe@1%``); no suffix means all labels
method     the row of the paper's table: a registry preset name where one corresponds
           (``lovt_no_global``, ``local_mi_cpc``), else the paper's row label
metric     the metric, named as localign's tidy results name it where one corresponds
           (``macro``, ``dice``, ``i2t_R@1``, a CheXpert label, an edema threshold)
value      the number as printed (an AUC printed as 0.86 stays 0.86; a percentage stays 86.0)
ci_low,    the 95 % confidence interval the paper gives, empty when it gives none (a "±" that is
ci_high    not a 95 % CI, e.g. a standard deviation, goes into the note instead)
note       anything a reader must know to compare (free text, may be empty); rows that share
           (dataset, protocol, method, metric), e.g. a figure's examples, differ by their note
========== ===================================================================================

:func:`load_published` reads and validates them (a bad file is an error naming file, row and
column); :data:`localign.eval.tables.PAPER_NUMBERS` and the ablation values of
:data:`localign.models.registry.LOVT_ABLATIONS` are read from here, so no published number lives
in code. ``display.yaml`` says which files the result tables show, with their labels, the unit
factor to percent and the renames to the tables' names (:func:`table_display`).

This module sits at the bottom of the package (it imports nothing of localign), so the method
registry and the evaluation tables can both read it.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: the folder of the packaged CSV files
PUBLISHED_DIR = Path(__file__).resolve().parent
#: the columns of every file, in this order
COLUMNS = ("source", "table", "dataset", "protocol", "method", "metric", "value", "ci_low", "ci_high", "note")
_REQUIRED = ("source", "table", "dataset", "protocol", "method", "metric", "value")
_FRACTION = re.compile(r"^(?P<task>.+)@(?P<percent>\d+(?:\.\d+)?)%$")
_NAME = re.compile(r"^[a-z0-9]+(?:[a-z0-9_-]*[a-z0-9])?$")


class PublishedSchemaError(ValueError):
    """A published-numbers file does not follow the schema; the message names file, row and column."""


@dataclass(frozen=True)
class PublishedRow:
    """One published number (a validated row of a file)."""

    source: str
    table: str
    dataset: str
    protocol: str
    method: str
    metric: str
    value: float
    ci_low: float | None
    ci_high: float | None
    note: str


def _error(path: Path, row: int | None, column: str | None, message: str) -> PublishedSchemaError:
    where = path.name if row is None else f"{path.name}, row {row} (line {row + 1})"
    if column is not None:
        where += f", column {column!r}"
    return PublishedSchemaError(f"published numbers {where}: {message}")


def _number(path: Path, row: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _error(path, row, column, f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise _error(path, row, column, f"expected a finite number, got {text!r}")
    return value


def read_published_file(path: str | Path) -> list[PublishedRow]:
    """The validated rows of one ``<source>_<table>.csv`` file.

    :raises PublishedSchemaError: wrong header, a required field empty, a value or CI bound that is
        not a number, one CI bound without the other, a value outside its CI, a row whose
        ``source``/``table`` disagree with the file name, or two rows with the same (dataset,
        protocol, method, metric) and the same note.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise _error(path, None, None, "the file is empty (expected the header " + ",".join(COLUMNS) + ")")
        if tuple(h.strip() for h in header) != COLUMNS:
            raise _error(path, None, None, f"header {','.join(header)!r} differs from the schema {','.join(COLUMNS)!r}")
        rows: list[PublishedRow] = []
        seen: dict[tuple[str, ...], int] = {}
        for n, fields in enumerate(reader, start=1):
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(COLUMNS):
                raise _error(path, n, None, f"{len(fields)} fields, expected {len(COLUMNS)} ({','.join(COLUMNS)})")
            rec = dict(zip(COLUMNS, (f.strip() for f in fields)))
            for column in _REQUIRED:
                if not rec[column]:
                    raise _error(path, n, column, "is empty")
            for column in ("source", "table"):
                if not _NAME.match(rec[column]):
                    raise _error(path, n, column, f"{rec[column]!r} is not a short lower-case name (letters, digits, _ -)")
            if path.stem != f"{rec['source']}_{rec['table']}":
                raise _error(path, n, "source", f"the file of source {rec['source']!r}, table {rec['table']!r} must be named "
                             f"{rec['source']}_{rec['table']}.csv")
            value = _number(path, n, "value", rec["value"])
            low = _number(path, n, "ci_low", rec["ci_low"]) if rec["ci_low"] else None
            high = _number(path, n, "ci_high", rec["ci_high"]) if rec["ci_high"] else None
            if (low is None) != (high is None):
                raise _error(path, n, "ci_high" if high is None else "ci_low", "give both CI bounds or neither")
            if low is not None and not low <= value <= high:
                raise _error(path, n, "value", f"{value:g} lies outside its CI [{low:g}, {high:g}]")
            key = (rec["dataset"], rec["protocol"], rec["method"], rec["metric"], rec["note"])
            if key in seen:
                raise _error(path, n, "metric", f"duplicate of row {seen[key]} (same dataset, protocol, method, metric "
                             f"{key[:4]} and note)")
            seen[key] = n
            rows.append(PublishedRow(rec["source"], rec["table"], rec["dataset"], rec["protocol"], rec["method"], rec["metric"],
                                     value, low, high, rec["note"]))
    return rows


def published_files(folder: str | Path | None = None) -> list[Path]:
    """Every ``*.csv`` of the folder (default :data:`PUBLISHED_DIR`), sorted by name."""
    return sorted(Path(folder or PUBLISHED_DIR).glob("*.csv"))


@lru_cache(maxsize=None)
def _all_rows(folder: str) -> tuple[PublishedRow, ...]:
    return tuple(r for path in published_files(folder) for r in read_published_file(path))


def published_rows(source: str | None = None, table: str | None = None, folder: str | Path | None = None) -> list[PublishedRow]:
    """Validated rows of every file (or of one source / table), in file order; no pandas needed."""
    rows = [r for r in _all_rows(str(folder or PUBLISHED_DIR))
            if (source is None or r.source == source) and (table is None or r.table == table)]
    if not rows and (source is not None or table is not None):
        known = sorted({(r.source, r.table) for r in _all_rows(str(folder or PUBLISHED_DIR))})
        raise KeyError(f"no published numbers for source={source!r}, table={table!r}; files hold {known}")
    return rows


def load_published(source: str | None = None, table: str | None = None, folder: str | Path | None = None) -> "pd.DataFrame":
    """The published numbers as a DataFrame with exactly the columns :data:`COLUMNS`.

    ``value`` is float, ``ci_low``/``ci_high`` float with NaN where the paper gives no CI, ``note``
    a string ("" when empty).

    :param source: only this paper's files (``"lovt"``); :param table: only this table.
    :raises PublishedSchemaError: a file breaks the schema; :raises KeyError: nothing matches.
    """
    import pandas as pd

    rows = published_rows(source, table, folder)
    frame = pd.DataFrame([[getattr(r, c) for c in COLUMNS] for r in rows], columns=list(COLUMNS))
    for column in ("value", "ci_low", "ci_high"):
        frame[column] = frame[column].astype(float)
    return frame


def split_protocol(protocol: str) -> tuple[str, float]:
    """``"probe@10%"`` -> ``("probe", 0.1)``; a protocol without the suffix uses all labels (1.0)."""
    m = _FRACTION.match(protocol)
    if m is None:
        return protocol, 1.0
    return m["task"], float(m["percent"]) / 100.0


@dataclass(frozen=True)
class TableDisplay:
    """How the result tables show one file (an entry of ``display.yaml``)."""

    label: str
    scale: float = 1.0
    protocol: dict[str, str] | None = None
    method: dict[str, str] | None = None
    metric: dict[str, str] | None = None


@lru_cache(maxsize=None)
def table_display(folder: str | None = None) -> dict[str, TableDisplay]:
    """``{"<source>_<table>": TableDisplay}`` from ``display.yaml``, in its order (the tables' order)."""
    import yaml

    path = Path(folder or PUBLISHED_DIR) / "display.yaml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise PublishedSchemaError(f"{path.name}: expected a mapping '<source>_<table>: {{label: ...}}'")
    out = {}
    for name, spec in data.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("label"), str):
            raise PublishedSchemaError(f"{path.name}: entry {name!r} needs a 'label' string")
        unknown = set(spec) - {"label", "scale", "protocol", "method", "metric"}
        if unknown:
            raise PublishedSchemaError(f"{path.name}: entry {name!r} has unknown key(s) {sorted(unknown)}")
        for key in ("protocol", "method", "metric"):
            if spec.get(key) is not None and not isinstance(spec[key], dict):
                raise PublishedSchemaError(f"{path.name}: entry {name!r}: {key} must map names to names")
        out[str(name)] = TableDisplay(spec["label"], float(spec.get("scale", 1.0)), spec.get("protocol"), spec.get("method"),
                                      spec.get("metric"))
    return out


def format_published(row: PublishedRow, digits: int = 1) -> str:
    """``"17.9 ± 0.4"`` (the half-width of a symmetric CI), or the value alone without a CI."""
    text = f"{row.value:.{digits}f}"
    if row.ci_low is not None and row.ci_high is not None:
        text += f" ± {(row.ci_high - row.ci_low) / 2:.{digits}f}"
    return text


def published_cell(source: str, table: str, method: str, metric: str | None = None, digits: int = 1) -> str:
    """The printed cell of one method in one paper table (``"17.9 ± 0.4"``).

    :raises KeyError: no row, or several rows (then pass ``metric``), for that method.
    """
    rows = [r for r in published_rows(source, table) if r.method == method and (metric is None or r.metric == metric)]
    if len(rows) != 1:
        raise KeyError(f"{source}_{table}.csv: {len(rows)} rows for method {method!r}"
                       + ("" if metric is None else f", metric {metric!r}") + " (expected exactly one)")
    return format_published(rows[0], digits)


__all__ = [
    "COLUMNS",
    "PUBLISHED_DIR",
    "PublishedRow",
    "PublishedSchemaError",
    "TableDisplay",
    "format_published",
    "load_published",
    "published_cell",
    "published_files",
    "published_rows",
    "read_published_file",
    "split_protocol",
    "table_display",
]
