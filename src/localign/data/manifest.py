"""The prepared-dataset folder written by ``localign prepare``, and :func:`load_prepared` to read it.

A prepared dataset is one folder of plain CSV files plus ``dataset.json``. List-valued cells are
JSON-encoded (``["a", "b"]``); everything else is a scalar. The schema of every file:

``manifest.csv``, one row per kept study (the unit of pretraining; a training step draws one of
its frontal images):
    ``subject_id`` int, ``study_id`` int, ``split`` (official: train/validate/test),
    ``dicom_ids`` list[str], ``image_paths`` list[str] (relative to the MIMIC-CXR-JPG root, same
    order as ``dicom_ids``), ``view_positions`` list[str], ``report_path`` (relative to the
    reports root), ``findings`` and ``impression`` (whole section, whitespace-cleaned, ``""`` if
    absent), ``text_sections`` list[str] (the sections the text rule selected, in order),
    ``sentences`` list[str], ``text`` (the sentences joined by spaces), ``n_sentences`` int,
    ``n_tokens`` int.

``images.csv``, one row per kept frontal image of a kept study:
    ``dicom_id``, ``subject_id``, ``study_id``, ``split``, ``view_position``, ``path`` (relative to
    the MIMIC-CXR-JPG root), ``height``, ``width`` (pixels; blank when images were not checked
    and the metadata has no ``Rows``/``Columns``).

``labels.csv``, one row per kept study that has a CheXpert row:
    ``subject_id``, ``study_id``, ``split`` and the 14 CheXpert columns as 1.0 / 0.0 / blank
    (NaN) after the uncertainty policy recorded in ``dataset.json`` (``ignore``: -1 -> blank,
    ``ones``: -1 -> 1, ``zeros``: -1 -> 0). Blank means "not usable" for that label.

``skipped.csv``, every item left out, with its reason (nothing is dropped silently):
    ``table`` (images/studies/labels/ms_cxr/edema/rsna), ``item`` (the dicom_id, study id,
    patientId or phrase), ``subject_id``, ``study_id`` (blank where not applicable), ``reason``
    (a fixed keyword such as ``view_not_selected`` or ``report_missing``), ``detail`` (free text).

``ms_cxr.csv`` (optional), one row per MS-CXR phrase = the boxes sharing (dicom_id, label_text):
    ``phrase_id`` int, ``dicom_id``, ``subject_id``, ``study_id``, ``category_name``,
    ``label_text``, ``split`` (MS-CXR's own split, ``""`` for v1.0.0), ``path`` (relative to the
    MIMIC-CXR-JPG root), ``image_width``, ``image_height``, ``boxes`` list[[x, y, w, h]] in
    original-image pixels, ``n_boxes``, ``mimic_split`` (official split of the image, ``""`` if
    not in the split file), ``in_manifest`` bool (the image is a kept image of a kept study).

``edema.csv`` (optional), one row per kept image of the edema severity table:
    ``subject_id``, ``study_id``, ``dicom_id``, ``edema_severity`` (0-3), ``split`` (official),
    ``view_position``, ``path`` (relative to the MIMIC-CXR-JPG root), ``in_manifest`` bool.

``rsna.csv`` (optional), one row per RSNA image (= patient):
    ``patientId``, ``path`` (relative to the RSNA root), ``split`` (seeded patient-level split,
    seed and fractions in ``dataset.json``), ``target`` 0/1, ``boxes`` list[[x, y, w, h]],
    ``n_boxes``, ``height``, ``width``.

``sentences.csv``, ``synth_findings.csv`` (SynthCXR only): the generator's sentence -> finding ->
mask table and finding table, copied verbatim; mask paths in them are relative to the SynthCXR
``synthcxr/`` folder recorded in ``dataset.json``.

``dataset.json``: format name and version, absolute input roots, the resolved
:class:`~localign.data.prepare.PrepareConfig`, the sentence splitter used, per-step counts, skip
totals, package versions and a timestamp. It is written last, so a folder without it is not a
(complete) prepared dataset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from localign.data import layout

FORMAT_NAME = "localign-prepared-dataset"
FORMAT_VERSION = 1
INFO_FILE = "dataset.json"

# column -> kind; kinds: int, Int64 (nullable int), float, str, bool, json (list)
MANIFEST_SCHEMA: dict[str, str] = {
    "subject_id": "int",
    "study_id": "int",
    "split": "str",
    "dicom_ids": "json",
    "image_paths": "json",
    "view_positions": "json",
    "report_path": "str",
    "findings": "str",
    "impression": "str",
    "text_sections": "json",
    "sentences": "json",
    "text": "str",
    "n_sentences": "int",
    "n_tokens": "int",
}
IMAGES_SCHEMA: dict[str, str] = {
    "dicom_id": "str",
    "subject_id": "int",
    "study_id": "int",
    "split": "str",
    "view_position": "str",
    "path": "str",
    "height": "Int64",
    "width": "Int64",
}
LABELS_SCHEMA: dict[str, str] = {
    "subject_id": "int",
    "study_id": "int",
    "split": "str",
    **{label: "float" for label in layout.CHEXPERT_LABELS},
}
SKIPPED_SCHEMA: dict[str, str] = {
    "table": "str",
    "item": "str",
    "subject_id": "Int64",
    "study_id": "Int64",
    "reason": "str",
    "detail": "str",
}
MS_CXR_SCHEMA: dict[str, str] = {
    "phrase_id": "int",
    "dicom_id": "str",
    "subject_id": "int",
    "study_id": "int",
    "category_name": "str",
    "label_text": "str",
    "split": "str",
    "path": "str",
    "image_width": "int",
    "image_height": "int",
    "boxes": "json",
    "n_boxes": "int",
    "mimic_split": "str",
    "in_manifest": "bool",
}
EDEMA_SCHEMA: dict[str, str] = {
    "subject_id": "int",
    "study_id": "int",
    "dicom_id": "str",
    "edema_severity": "int",
    "split": "str",
    "view_position": "str",
    "path": "str",
    "in_manifest": "bool",
}
RSNA_SCHEMA: dict[str, str] = {
    "patientId": "str",
    "path": "str",
    "split": "str",
    "target": "int",
    "boxes": "json",
    "n_boxes": "int",
    "height": "Int64",
    "width": "Int64",
}

# file name -> schema (None: copied verbatim, read without conversion)
TABLE_FILES: dict[str, dict[str, str] | None] = {
    "manifest": MANIFEST_SCHEMA,
    "images": IMAGES_SCHEMA,
    "labels": LABELS_SCHEMA,
    "skipped": SKIPPED_SCHEMA,
    "ms_cxr": MS_CXR_SCHEMA,
    "edema": EDEMA_SCHEMA,
    "rsna": RSNA_SCHEMA,
    "sentences": None,
    "synth_findings": None,
}
REQUIRED_TABLES = ("manifest", "images", "labels", "skipped")


def table_path(root: str | Path, name: str) -> Path:
    """``<root>/<name>.csv`` for a table name of :data:`TABLE_FILES`."""
    if name not in TABLE_FILES:
        raise ValueError(f"unknown prepared table {name!r}; known: {list(TABLE_FILES)}")
    return Path(root) / f"{name}.csv"


def write_table(df: pd.DataFrame, path: str | Path, schema: dict[str, str]) -> Path:
    """Write ``df`` with exactly the schema's columns, in schema order, JSON-encoding list columns."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"cannot write {path}: missing columns {missing}")
    out = df.loc[:, list(schema)].copy()
    for column, kind in schema.items():
        if kind == "json":
            out[column] = [json.dumps(v) for v in out[column]]
    out.to_csv(path, index=False)
    return Path(path)


def read_table(path: str | Path, schema: dict[str, str] | None) -> pd.DataFrame:
    """Read a table written by :func:`write_table`, restoring dtypes and decoding list columns."""
    path = Path(path)
    try:
        if schema is None:
            return pd.read_csv(path)
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        # pandas' messages do not name the file
        raise ValueError(f"{path}: not a readable CSV file ({type(err).__name__}: {err}); re-run `localign prepare`") from err
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a localign prepared table, missing columns {missing}")
    for column, kind in schema.items():
        values = df[column]
        try:
            if kind == "int":
                df[column] = values.astype("int64")
            elif kind == "Int64":
                df[column] = pd.to_numeric(values.mask(values == "")).astype("Int64")
            elif kind == "float":
                df[column] = pd.to_numeric(values.mask(values == "")).astype("float64")
            elif kind == "bool":
                df[column] = values.map({"True": True, "False": False}).astype(bool)
            elif kind == "json":
                df[column] = pd.Series([json.loads(v) for v in values], index=df.index, dtype=object)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: column {column!r} does not hold {kind} values ({err})") from err
    return df


@dataclass(frozen=True, eq=False)
class PreparedDataset:
    """A prepared dataset folder loaded into DataFrames (see the module docstring for schemas).

    ``manifest`` has one row per study; ``images`` one row per frontal image; ``labels`` one row
    per study with CheXpert labels. ``ms_cxr``, ``edema``, ``rsna``, ``sentences`` and
    ``synth_findings`` are None when the folder has no such table. Image paths in the tables are
    relative: use :meth:`image_path` / :meth:`rsna_image_path` for absolute ones.
    """

    root: Path
    info: dict[str, Any]
    manifest: pd.DataFrame
    images: pd.DataFrame
    labels: pd.DataFrame
    skipped: pd.DataFrame
    mimic_jpg_root: Path
    ms_cxr: pd.DataFrame | None = None
    edema: pd.DataFrame | None = None
    rsna: pd.DataFrame | None = None
    sentences: pd.DataFrame | None = None
    synth_findings: pd.DataFrame | None = None
    rsna_root: Path | None = None
    synthcxr_root: Path | None = field(default=None)

    def image_path(self, relative: str | Path) -> Path:
        """Absolute path of a MIMIC-CXR-JPG image path from ``manifest``/``images``/``ms_cxr``/``edema``."""
        return self.mimic_jpg_root / relative

    def rsna_image_path(self, relative: str | Path) -> Path:
        """Absolute path of an image path from ``rsna``."""
        if self.rsna_root is None:
            raise ValueError(f"{self.root} has no RSNA table (prepare it with --rsna DIR)")
        return self.rsna_root / relative

    def synthcxr_path(self, relative: str | Path) -> Path:
        """Absolute path of a SynthCXR-only file named in ``sentences``/``synth_findings`` (masks)."""
        if self.synthcxr_root is None:
            raise ValueError(f"{self.root} is not a SynthCXR dataset: it has no sentence/mask tables")
        return self.synthcxr_root.parent / relative

    def study_image_paths(self, study_id: int) -> list[Path]:
        """Absolute paths of the kept frontal images of one study."""
        rows = self.manifest.loc[self.manifest["study_id"] == int(study_id), "image_paths"]
        if rows.empty:
            raise KeyError(f"study {study_id} is not in {self.root / 'manifest.csv'}")
        return [self.image_path(p) for p in rows.iloc[0]]

    def split(self, name: str) -> pd.DataFrame:
        """The manifest rows of one official split (``train``, ``validate`` or ``test``)."""
        if name not in layout.MIMIC_SPLITS:
            raise ValueError(f"split must be one of {layout.MIMIC_SPLITS}, got {name!r}")
        return self.manifest[self.manifest["split"] == name].reset_index(drop=True)

    @property
    def counts(self) -> pd.DataFrame:
        """The per-step counts of ``localign prepare`` (table, step, kept, removed, reason)."""
        return pd.DataFrame(self.info["counts"])

    @cached_property
    def fingerprint(self) -> str:
        """The folder's identity, the key of every cache computed from it (pixel statistics, ...):
        a hash of ``dataset.json``, of every table file and of the image root in use, so that a
        re-prepared folder, a changed table or moved images never reuse another folder's cache.
        Caches live in :func:`localign.paths.cache_dir`, never inside the prepared folder."""
        h = hashlib.sha256()
        for name in [INFO_FILE, *(f"{t}.csv" for t in TABLE_FILES)]:
            file = self.root / name
            h.update(name.encode() + b"\0")
            if file.is_file():
                h.update(file.read_bytes())
            h.update(b"\0")
        h.update(str(self.mimic_jpg_root.resolve()).encode())
        return h.hexdigest()[:20]

    @property
    def splitter(self) -> str:
        """The sentence splitter that produced ``manifest.sentences`` (e.g. ``rules-v1``)."""
        return str(self.info["splitter"])


def load_prepared(
    path: str | Path, mimic_jpg_root: str | Path | None = None, rsna_root: str | Path | None = None
) -> PreparedDataset:
    """Load a folder written by ``localign prepare`` (:func:`localign.data.prepare.prepare_dataset`).

    :param path: the prepared folder (holding ``dataset.json``, ``manifest.csv``, ...)
    :param mimic_jpg_root: where the MIMIC-CXR-JPG images are now, if they moved since preparing
        (default: the absolute root recorded in ``dataset.json``)
    :param rsna_root: likewise for the RSNA folder
    :raises FileNotFoundError: when ``path`` does not exist
    :raises ValueError: when ``path`` is not a complete prepared dataset of a known format version
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"prepared dataset folder {root} does not exist")
    info_path = root / INFO_FILE
    hint = "create one with `localign prepare --mimic-jpg DIR --mimic-reports DIR --out DIR` (or --synthcxr ROOT)"
    if not info_path.is_file():
        raise ValueError(f"{root} is not a prepared dataset: no {INFO_FILE} (an interrupted run leaves none); {hint}")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{info_path} is not valid JSON ({err}); {hint}") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{info_path} is not a localign prepared dataset description (format != {FORMAT_NAME!r}); {hint}"
        )
    if info.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{info_path}: format_version {info.get('format_version')!r} is not supported by this localign "
            f"(expects {FORMAT_VERSION}); re-run `localign prepare`"
        )
    tables: dict[str, pd.DataFrame | None] = {}
    for name, schema in TABLE_FILES.items():
        file = table_path(root, name)
        if not file.is_file():
            if name in REQUIRED_TABLES:
                raise ValueError(f"{root} is not a complete prepared dataset: {file.name} is missing; {hint}")
            tables[name] = None
            continue
        tables[name] = read_table(file, schema)
    inputs = info.get("inputs", {})
    rsna = rsna_root if rsna_root is not None else inputs.get("rsna")
    synth = inputs.get("synthcxr_tables")
    return PreparedDataset(
        root=root,
        info=info,
        mimic_jpg_root=Path(mimic_jpg_root if mimic_jpg_root is not None else inputs["mimic_jpg"]),
        rsna_root=Path(rsna) if rsna else None,
        synthcxr_root=Path(synth) if synth else None,
        **tables,  # type: ignore[arg-type]
    )
