"""Readers for the raw dataset tables, in their documented formats, with validation.

Each reader takes one file (``.csv`` or ``.csv.gz``; compression is inferred from the name),
checks that the required columns exist and that every value is well-formed, and returns a
DataFrame with clean dtypes. Malformed input raises ``ValueError`` naming the file, the line
(1-based, the header is line 1), the column and the value; nothing is coerced silently.

Formats (see :mod:`localign.data.layout`): MIMIC-CXR-JPG 2.0.0 ``metadata``/``split``/``chexpert``
tables, MS-CXR 1.1.0 (1.0.0 without ``split`` is accepted), the MIMIC-CXR pulmonary edema severity
table and the RSNA Pneumonia ``stage_2_train_labels.csv``.
"""

from __future__ import annotations

import gzip
import lzma
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from localign.data import layout

UNCERTAINTY_POLICIES = ("ignore", "ones", "zeros")
CHEXPERT_VALUES = (1.0, 0.0, -1.0)


def find_table(root: str | Path, name: str) -> Path:
    """``root/name``, or the same file uncompressed (``.csv`` for ``.csv.gz``) if only that exists."""
    root = Path(root)
    candidates = [root / name]
    if name.endswith(".gz"):
        candidates.append(root / name[: -len(".gz")])
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{' or '.join(str(c) for c in candidates)} not found")


def read_table(path: str | Path, required: Sequence[str]) -> pd.DataFrame:
    """Read a CSV (optionally gzip-compressed) with every value as a string ('' for blanks).

    :raises FileNotFoundError: when the file does not exist
    :raises ValueError: naming the file and column when a required column is missing
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (zlib.error, gzip.BadGzipFile, lzma.LZMAError, EOFError) as err:
        # A damaged or truncated .csv.gz (zlib.error is no OSError and would escape unnamed).
        raise ValueError(
            f"{path}: the compressed file is damaged or truncated ({type(err).__name__}: {err}); "
            "download it again (and compare its checksum with the published SHA256SUMS)"
        ) from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"{path}: not a readable CSV file ({type(err).__name__}: {err})") from err
    df.columns = [str(c).strip() for c in df.columns]
    for column in required:
        if column not in df.columns:
            raise ValueError(f"{path}: missing required column {column!r} (columns found: {list(df.columns)})")
    for column in df.columns:
        df[column] = df[column].str.strip()
    return df


def _line(index: int) -> int:
    """CSV line of the row with index label ``index`` of a table from :func:`read_table`."""
    return int(index) + 2


def _first(mask: pd.Series) -> tuple[int, int]:
    """(position, index label) of the first True in a boolean Series."""
    position = int(np.flatnonzero(mask.to_numpy())[0])
    return position, int(mask.index[position])


def bad_value(path: str | Path, index: int, column: str, value: object, expected: str) -> ValueError:
    """The error for one malformed cell."""
    return ValueError(f"{path}: line {_line(index)}, column {column!r}: invalid value {value!r} (expected {expected})")


def int_column(df: pd.DataFrame, column: str, path: str | Path) -> pd.Series:
    """A column of integers (``"123"`` or ``"123.0"``) as int64; anything else is an error."""
    numbers = pd.to_numeric(df[column], errors="coerce")
    bad = numbers.isna() | (numbers != np.floor(numbers))
    if bad.any():
        i, label = _first(bad)
        raise bad_value(path, label, column, df[column].iloc[i], "an integer")
    return numbers.astype("int64")


def float_column(df: pd.DataFrame, column: str, path: str | Path, allow_blank: bool = False) -> pd.Series:
    """A column of finite numbers as float64; blanks become NaN only when ``allow_blank``."""
    raw = df[column]
    numbers = pd.to_numeric(raw, errors="coerce")
    blank = raw == ""
    bad = (numbers.isna() & ~(blank & allow_blank)) | np.isinf(numbers.fillna(0.0))
    if bad.any():
        i, label = _first(bad)
        raise bad_value(path, label, column, raw.iloc[i], "a number" + (" or blank" if allow_blank else ""))
    return numbers.astype("float64")


def _nonempty(df: pd.DataFrame, column: str, path: str | Path) -> None:
    empty = df[column] == ""
    if empty.any():
        raise bad_value(path, _first(empty)[1], column, "", "a non-empty value")


def _unique(df: pd.DataFrame, column: str, path: str | Path) -> None:
    dup = df[column].duplicated()
    if dup.any():
        i, label = _first(dup)
        raise ValueError(f"{path}: line {_line(label)}: duplicate {column} {df[column].iloc[i]!r}")


# ------------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG 2.0.0
# ------------------------------------------------------------------------------------------------


def read_mimic_metadata(path: str | Path) -> pd.DataFrame:
    """``mimic-cxr-2.0.0-metadata.csv.gz``: one row per image.

    :return: columns ``dicom_id`` (str), ``subject_id``, ``study_id`` (int64), ``ViewPosition``
        (str, ``""`` where missing: 15,757 images in 2.0.0), and ``Rows``/``Columns`` (Int64)
        when the file has them
    """
    df = read_table(path, ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    _nonempty(df, "dicom_id", path)
    _unique(df, "dicom_id", path)
    out = pd.DataFrame(
        {
            "dicom_id": df["dicom_id"],
            "subject_id": int_column(df, "subject_id", path),
            "study_id": int_column(df, "study_id", path),
            "ViewPosition": df["ViewPosition"].str.upper(),
        }
    )
    for column in ("Rows", "Columns"):
        if column in df.columns:
            blank = df[column] == ""
            values = pd.Series(pd.NA, index=df.index, dtype="Int64")
            if (~blank).any():
                values[~blank] = int_column(df[~blank], column, path).astype("Int64")
            out[column] = values
    return out


def read_mimic_split(path: str | Path) -> pd.DataFrame:
    """``mimic-cxr-2.0.0-split.csv.gz``: the official patient-level split, one row per image.

    :return: ``dicom_id`` (str), ``study_id``, ``subject_id`` (int64), ``split`` in
        ``train``/``validate``/``test``
    """
    df = read_table(path, ("dicom_id", "study_id", "subject_id", "split"))
    _nonempty(df, "dicom_id", path)
    _unique(df, "dicom_id", path)
    bad = ~df["split"].isin(layout.MIMIC_SPLITS)
    if bad.any():
        i, label = _first(bad)
        raise bad_value(path, label, "split", df["split"].iloc[i], f"one of {list(layout.MIMIC_SPLITS)}")
    return pd.DataFrame(
        {
            "dicom_id": df["dicom_id"],
            "study_id": int_column(df, "study_id", path),
            "subject_id": int_column(df, "subject_id", path),
            "split": df["split"],
        }
    )


def read_chexpert_labels(path: str | Path) -> pd.DataFrame:
    """``mimic-cxr-2.0.0-chexpert.csv.gz`` (or any CheXpert-format table): one row per study.

    :return: ``subject_id``, ``study_id`` (int64) and the 14 :data:`~localign.data.layout.CHEXPERT_LABELS`
        as float64 with values 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or NaN (blank: not
        mentioned)
    """
    df = read_table(path, ("subject_id", "study_id", *layout.CHEXPERT_LABELS))
    out = pd.DataFrame({"subject_id": int_column(df, "subject_id", path), "study_id": int_column(df, "study_id", path)})
    _unique(out, "study_id", path)
    for name in layout.CHEXPERT_LABELS:
        raw = df[name]
        values = pd.to_numeric(raw, errors="coerce")
        bad = (raw != "") & ~values.isin(CHEXPERT_VALUES)
        if bad.any():
            i, label = _first(bad)
            raise bad_value(path, label, name, raw.iloc[i], "1, 0, -1 or blank")
        out[name] = values.where(raw != "").astype("float64")
    return out


def apply_uncertainty_policy(labels: pd.DataFrame, policy: str) -> pd.DataFrame:
    """Resolve uncertain (-1) CheXpert labels; blanks stay NaN under every policy.

    :param labels: a table with the 14 CheXpert columns (1.0 / 0.0 / -1.0 / NaN)
    :param policy: ``"ignore"`` (-1 -> NaN, i.e. masked out of losses and metrics), ``"ones"``
        (U-Ones: -1 -> 1) or ``"zeros"`` (U-Zeros: -1 -> 0)
    :return: a copy with only 1.0, 0.0 and NaN in the label columns
    """
    if policy not in UNCERTAINTY_POLICIES:
        raise ValueError(f"uncertainty policy must be one of {UNCERTAINTY_POLICIES}, got {policy!r}")
    replacement = {"ignore": np.nan, "ones": 1.0, "zeros": 0.0}[policy]
    out = labels.copy()
    for label in layout.CHEXPERT_LABELS:
        out[label] = out[label].mask(out[label] == -1.0, replacement)
    return out


# ------------------------------------------------------------------------------------------------
# MS-CXR, edema severity, RSNA
# ------------------------------------------------------------------------------------------------


def read_ms_cxr(path: str | Path) -> pd.DataFrame:
    """``MS_CXR_Local_Alignment_v1.1.0.csv``: one row per bounding box.

    Boxes are ``(x, y, w, h)`` in original-image pixels, top-left corner first. The ``split``
    column (new in 1.1.0) may be absent (1.0.0), in which case it is filled with ``""``.
    Geometry (boxes inside the image, positive sizes) is checked by the caller, which counts the
    offending boxes instead of failing.

    :return: the MS-CXR columns with ``x, y, w, h`` as float64, ``image_width``/``image_height`` as
        int64, and ``line`` (the CSV line of each box)
    """
    required = tuple(c for c in layout.MS_CXR_COLUMNS if c != "split")
    df = read_table(path, required)
    for column in ("dicom_id", "category_name", "label_text", "path"):
        _nonempty(df, column, path)
    out = pd.DataFrame({c: df[c] for c in ("dicom_id", "category_name", "label_text", "path")})
    for column in ("x", "y", "w", "h"):
        out[column] = float_column(df, column, path)
    for column in ("image_width", "image_height"):
        out[column] = int_column(df, column, path)
        if (out[column] <= 0).any():
            i, label = _first(out[column] <= 0)
            raise bad_value(path, label, column, df[column].iloc[i], "a positive integer")
    out["split"] = df["split"] if "split" in df.columns else ""
    out["line"] = np.arange(len(df)) + 2
    return out


def read_edema_severity(path: str | Path) -> pd.DataFrame:
    """The MIMIC-CXR pulmonary edema severity table: one row per image.

    :return: ``subject_id``, ``study_id`` (int64), ``dicom_id`` (str), ``edema_severity`` (int64,
        0 none, 1 vascular congestion, 2 interstitial edema, 3 alveolar edema)
    """
    df = read_table(path, layout.EDEMA_COLUMNS)
    _nonempty(df, "dicom_id", path)
    _unique(df, "dicom_id", path)
    severity = int_column(df, "edema_severity", path)
    bad = ~severity.isin([0, 1, 2, 3])
    if bad.any():
        i, label = _first(bad)
        raise bad_value(path, label, "edema_severity", df["edema_severity"].iloc[i], "0, 1, 2 or 3")
    return pd.DataFrame(
        {
            "subject_id": int_column(df, "subject_id", path),
            "study_id": int_column(df, "study_id", path),
            "dicom_id": df["dicom_id"],
            "edema_severity": severity,
        }
    )


def read_rsna_labels(path: str | Path) -> pd.DataFrame:
    """``stage_2_train_labels.csv``: one row per box, or one row with blank box for a negative.

    :return: ``patientId`` (str), ``x, y, width, height`` (float64, NaN for negatives),
        ``Target`` (int64, 0/1) and ``line``
    :raises ValueError: for a Target other than 0/1, a positive row without a complete box, a
        negative row with a box, or a patient with both positive and negative rows
    """
    df = read_table(path, layout.RSNA_COLUMNS)
    _nonempty(df, "patientId", path)
    target = int_column(df, "Target", path)
    if (~target.isin([0, 1])).any():
        i, label = _first(~target.isin([0, 1]))
        raise bad_value(path, label, "Target", df["Target"].iloc[i], "0 or 1")
    out = pd.DataFrame({"patientId": df["patientId"]})
    for column in ("x", "y", "width", "height"):
        out[column] = float_column(df, column, path, allow_blank=True)
        missing = out[column].isna() & (target == 1)
        if missing.any():
            i, label = _first(missing)
            raise bad_value(path, label, column, df[column].iloc[i], "a number for a row with Target 1")
        present = out[column].notna() & (target == 0)
        if present.any():
            i, label = _first(present)
            raise bad_value(path, label, column, df[column].iloc[i], "blank for a row with Target 0")
    out["Target"] = target
    mixed = out.groupby("patientId", sort=False)["Target"].nunique() > 1
    if mixed.any():
        pid = mixed.index[mixed.to_numpy()][0]
        raise ValueError(f"{path}: patientId {pid!r} has rows with both Target 0 and Target 1")
    out["line"] = np.arange(len(df)) + 2
    return out
