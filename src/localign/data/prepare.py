"""``localign prepare``: raw MIMIC-CXR-JPG + reports (real or SynthCXR) -> a checked prepared dataset.

The steps follow LoVT's MIMIC-CXR preprocessing (methods spec section 2.1.3):

1. read and validate ``mimic-cxr-2.0.0-{metadata,split,chexpert}.csv.gz``;
2. images: keep frontal views (``ViewPosition`` in ``views``, default PA and AP); skip images
   without a split entry, without a view position, or whose file is missing or does not decode;
3. studies: one row per study holding all its kept frontal images; read the report, extract the
   sections, select the text (rule ``text``), split sentences; skip studies without a report,
   without findings and impression, with no sentence, or with fewer than ``min_tokens`` tokens;
4. labels: CheXpert labels of the kept studies with the uncertainty policy applied;
5. optional tables: MS-CXR phrases, edema severity, RSNA Pneumonia (with a seeded patient-level
   split, since RSNA has none), and the SynthCXR sentence -> mask tables;
6. write the folder described in :mod:`localign.data.manifest`: every table, ``skipped.csv``
   (every item left out, with its reason) and ``dataset.json`` (inputs, config, splitter,
   per-step counts, versions) last.

Every step's counts are logged as a table and saved, so they can be compared with published
numbers (MIMIC-CXR-JPG 2.0.0: 377,110 images, 227,835 studies).

Python API: :class:`PrepareConfig`, :func:`prepare_dataset`, :func:`synthcxr_config`;
read the result with :func:`localign.data.manifest.load_prepared`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import platform
import shutil
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from localign.progress import tqdm

from localign.config import config_to_dict
from localign.data import layout
from localign.data.images import IMAGE_CHECK_MODES, ImageReadError, geometry_problem, read_image_size
from localign.data.manifest import (
    EDEMA_SCHEMA,
    FORMAT_NAME,
    FORMAT_VERSION,
    INFO_FILE,
    LABELS_SCHEMA,
    MANIFEST_SCHEMA,
    MS_CXR_SCHEMA,
    RSNA_SCHEMA,
    SKIPPED_SCHEMA,
    TABLE_FILES,
    table_path,
    write_table,
)
from localign.data.reports import (
    MIMIC_CUSTOM_RULE_STUDIES,
    RULES_SPLITTER,
    SPLITTERS,
    TEXT_RULES,
    StanzaUnavailableError,
    clean_text,
    count_tokens,
    extract_sections,
    resolve_splitter,
    select_sections,
    split_sentences,
)
from localign.data.sources import (
    UNCERTAINTY_POLICIES,
    apply_uncertainty_policy,
    find_table,
    read_chexpert_labels,
    read_edema_severity,
    read_mimic_metadata,
    read_mimic_split,
    read_ms_cxr,
    read_rsna_labels,
)
from localign.paths import file_problem

log = logging.getLogger(__name__)

RSNA_IMAGE_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class PrepareConfig:
    """What to read and how to filter it; saved resolved in ``dataset.json``.

    :param mimic_jpg: MIMIC-CXR-JPG 2.0.0 root (holds ``files/`` and the three ``.csv.gz`` tables)
    :param mimic_reports: MIMIC-CXR 2.0.0 reports root (holds ``files/pXX/pXXXXXXXX/sXXXXXXXX.txt``)
    :param ms_cxr: ``MS_CXR_Local_Alignment_v1.1.0.csv``, optional
    :param edema: the edema severity CSV, optional
    :param rsna: RSNA Pneumonia folder (``stage_2_train_labels.csv``, ``stage_2_train_images/``), optional
    :param synthcxr_tables: SynthCXR ``synthcxr/`` folder with ``sentences.csv``/``findings.csv``, optional
    :param text: text rule, one of :data:`~localign.data.reports.TEXT_RULES`
    :param views: ``ViewPosition`` values to keep (LoVT: PA and AP)
    :param min_tokens: studies whose selected text has fewer tokens are dropped (LoVT: 3)
    :param splitter: ``auto`` / ``rules`` / ``stanza`` (see :func:`~localign.data.reports.resolve_splitter`)
    :param uncertainty: CheXpert -1 policy: ``ignore`` (-> blank), ``ones``, ``zeros``
    :param check_images: ``decode`` (read every pixel), ``header`` (open only), ``none`` (no file
        access; sizes from the metadata's Rows/Columns)
    :param limit: keep only the first ``limit`` studies (in metadata order) that have a frontal
        image, for quick runs; None keeps all
    :param rsna_split_seed: seed of the RSNA patient-level split
    :param rsna_split_fractions: RSNA train/validate/test fractions (LoVT: random 60/20/20)
    """

    mimic_jpg: str
    mimic_reports: str
    ms_cxr: str | None = None
    edema: str | None = None
    rsna: str | None = None
    synthcxr_tables: str | None = None
    text: str = "findings+impression"
    views: tuple[str, ...] = layout.FRONTAL_VIEWS
    min_tokens: int = 3
    splitter: str = "auto"
    uncertainty: str = "ignore"
    check_images: str = "decode"
    limit: int | None = None
    rsna_split_seed: int = 0
    rsna_split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)

    def __post_init__(self) -> None:
        choices = {
            "text": TEXT_RULES,
            "splitter": SPLITTERS,
            "uncertainty": UNCERTAINTY_POLICIES,
            "check_images": IMAGE_CHECK_MODES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"PrepareConfig.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if not self.views or any(not v or v != v.strip().upper() for v in self.views):
            raise ValueError(
                f"PrepareConfig.views must be non-empty upper-case ViewPosition values, got {self.views!r}"
            )
        if self.min_tokens < 0:
            raise ValueError(f"PrepareConfig.min_tokens must be >= 0, got {self.min_tokens}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"PrepareConfig.limit must be a positive number of studies or None, got {self.limit}")
        fractions = self.rsna_split_fractions
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(
                f"PrepareConfig.rsna_split_fractions must be 3 non-negative numbers summing to 1, got {fractions}"
            )


def synthcxr_config(root: str | Path, **overrides: Any) -> PrepareConfig:
    """A :class:`PrepareConfig` with every input taken from a SynthCXR root
    (:data:`localign.data.layout.SYNTHCXR_SUBDIRS`); optional parts that the root lacks stay None."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"SynthCXR root {root} does not exist")
    sub = {name: root / rel for name, rel in layout.SYNTHCXR_SUBDIRS.items()}
    ms_cxr = sub["ms_cxr"] / layout.MS_CXR_CSV
    edema = sub["edema"] / layout.EDEMA_CSV
    rsna = sub["rsna"]
    synth = sub["synthcxr"]
    paths: dict[str, Any] = {
        "mimic_jpg": str(sub["mimic_jpg"]),
        "mimic_reports": str(sub["mimic_reports"]),
        "ms_cxr": str(ms_cxr) if ms_cxr.is_file() else None,
        "edema": str(edema) if edema.is_file() else None,
        "rsna": str(rsna) if (rsna / layout.RSNA_LABELS).is_file() else None,
        "synthcxr_tables": str(synth) if (synth / layout.SYNTHCXR_SENTENCES).is_file() else None,
    }
    paths.update(overrides)
    return PrepareConfig(**paths)


# ------------------------------------------------------------------------------------------------
# Bookkeeping: per-step counts and skipped items
# ------------------------------------------------------------------------------------------------


class _Ledger:
    """Collects the per-step counts and every skipped item with its reason."""

    def __init__(self) -> None:
        self.counts: list[dict[str, Any]] = []
        self._skipped: list[pd.DataFrame] = []

    def count(self, table: str, step: str, kept: int, removed: int = 0, reason: str = "") -> None:
        self.counts.append({"table": table, "step": step, "kept": int(kept), "removed": int(removed), "reason": reason})
        if removed:
            log.debug("%s: %s: kept %d, removed %d (%s)", table, step, kept, removed, reason)

    def skip(
        self,
        table: str,
        items: Iterable[Any],
        reason: str,
        detail: Iterable[Any] | str = "",
        subject_id: Iterable[Any] | None = None,
        study_id: Iterable[Any] | None = None,
    ) -> None:
        items = [str(i) for i in items]
        if not items:
            return
        n = len(items)

        def column(values: Iterable[Any] | None) -> list[Any]:
            return [pd.NA] * n if values is None else list(values)

        self._skipped.append(
            pd.DataFrame(
                {
                    "table": table,
                    "item": items,
                    "subject_id": pd.array(column(subject_id), dtype="Int64"),
                    "study_id": pd.array(column(study_id), dtype="Int64"),
                    "reason": reason,
                    "detail": [detail] * n if isinstance(detail, str) else [str(d) for d in detail],
                }
            )
        )

    def step(
        self, table: str, step: str, frame: pd.DataFrame, drop: pd.Series, reason: str, **skip: Any
    ) -> pd.DataFrame:
        """Drop the rows of ``frame`` flagged by ``drop``, recording them; return the kept rows."""
        dropped = frame[drop]
        self.skip(table, reason=reason, **{k: (v(dropped) if callable(v) else v) for k, v in skip.items()})
        kept = frame[~drop]
        self.count(table, step, len(kept), len(dropped), reason)
        return kept

    @property
    def skipped(self) -> pd.DataFrame:
        if not self._skipped:
            return pd.DataFrame(
                {c: pd.Series(dtype="Int64" if k == "Int64" else object) for c, k in SKIPPED_SCHEMA.items()}
            )
        return pd.concat(self._skipped, ignore_index=True)


def format_counts(counts: list[dict[str, Any]]) -> str:
    """The per-step counts as a plain-text table, one block per table (images, studies, ...)."""
    width = max([len(c["step"]) for c in counts] + [20])
    blocks: dict[str, list[str]] = {}
    for c in counts:
        block = blocks.setdefault(c["table"], [f"{c['table']:<{width + 2}} {'kept':>9} {'removed':>9}  reason"])
        removed = f"{c['removed']:>9,}" if c["removed"] or c["reason"] else " " * 9
        block.append(f"  {c['step']:<{width}} {c['kept']:>9,} {removed}  {c['reason']}".rstrip())
    return "\n\n".join("\n".join(block) for block in blocks.values())


# ------------------------------------------------------------------------------------------------
# Image checks (threaded: decoding 377k JPEGs is the slow part)
# ------------------------------------------------------------------------------------------------


def _check_one(path: Path, mode: str) -> tuple[str, int | None, int | None, str]:
    """(status, height, width, detail) with status ok / missing / unreadable / degenerate
    (a size no radiograph has: :func:`~localign.data.images.geometry_problem`)."""
    if mode == "none":
        return "ok", None, None, ""
    try:
        size = read_image_size(path, mode)
    except ImageReadError as err:
        return ("missing" if err.missing else "unreadable"), None, None, err.reason
    assert size is not None
    problem = geometry_problem(*size)
    return ("degenerate" if problem else "ok"), size[0], size[1], problem


class _ImageChecker:
    """Checks image files once each (MIMIC images are shared by the manifest, MS-CXR and edema)."""

    def __init__(self, mode: str, workers: int, progress: bool) -> None:
        self.mode, self.workers, self.progress = mode, max(1, workers), progress
        self.results: dict[Path, tuple[str, int | None, int | None, str]] = {}

    def check(self, paths: list[Path], desc: str) -> list[tuple[str, int | None, int | None, str]]:
        if self.mode == "none":
            return [("ok", None, None, "")] * len(paths)
        todo = list(dict.fromkeys(p for p in paths if p not in self.results))
        if todo:
            with ThreadPoolExecutor(self.workers) as pool:
                found = tqdm(
                    pool.map(lambda p: _check_one(p, self.mode), todo),
                    total=len(todo),
                    desc=f"{desc} ({self.mode})",
                    unit="img",
                    disable=not self.progress,
                )
                self.results.update(zip(todo, found))
        return [self.results[p] for p in paths]


# ------------------------------------------------------------------------------------------------
# MIMIC-CXR images and studies
# ------------------------------------------------------------------------------------------------


def _relative_paths(frame: pd.DataFrame) -> list[str]:
    return [
        layout.mimic_image_path(s, t, d).as_posix()
        for s, t, d in zip(frame["subject_id"], frame["study_id"], frame["dicom_id"])
    ]


def _select_images(
    config: PrepareConfig,
    meta: pd.DataFrame,
    split: pd.DataFrame,
    jpg: Path,
    checker: _ImageChecker,
    ledger: _Ledger,
    names: dict[str, str],
) -> pd.DataFrame:
    """The usable frontal images (columns of images.csv), after every image-level filter."""
    ids = {
        "subject_id": lambda f: f["subject_id"],
        "study_id": lambda f: f["study_id"],
        "items": lambda f: f["dicom_id"],
    }
    universe = pd.concat([meta["dicom_id"], split["dicom_id"]]).drop_duplicates()
    ledger.count("images", "dicom_ids in the metadata or split file", len(universe))

    orphans = split[~split["dicom_id"].isin(meta["dicom_id"])]
    ledger.skip(
        "images",
        orphans["dicom_id"],
        "not_in_metadata",
        f"listed in {names['split']} only",
        orphans["subject_id"],
        orphans["study_id"],
    )
    ledger.count("images", "with a metadata row", len(meta), len(orphans), "not_in_metadata")

    merged = meta.merge(
        split.rename(columns={"subject_id": "split_subject_id", "study_id": "split_study_id"}),
        on="dicom_id",
        how="left",
    )
    has_split = merged["split"].notna()
    conflict = has_split & (
        (merged["split_subject_id"] != merged["subject_id"]) | (merged["split_study_id"] != merged["study_id"])
    )
    if conflict.any():
        row = merged[conflict].iloc[0]
        raise ValueError(
            f"dicom_id {row['dicom_id']!r}: {names['metadata']} says subject {row['subject_id']}, study {row['study_id']} but "
            f"{names['split']} says subject {int(row['split_subject_id'])}, study {int(row['split_study_id'])}"
        )
    study_splits = merged[has_split].groupby("study_id")["split"].nunique()
    if (study_splits > 1).any():
        study = int(study_splits.index[(study_splits > 1).to_numpy()][0])
        raise ValueError(
            f"{names['split']}: the images of study {study} are in different splits; a study must have one split"
        )
    subject_splits = merged[has_split].groupby("subject_id")["split"].nunique()
    if (subject_splits > 1).any():
        log.warning(
            "%d subjects have studies in more than one split in %s (the official split is patient-level)",
            int((subject_splits > 1).sum()),
            names["split"],
        )

    images = ledger.step("images", "with a split entry", merged, ~has_split, "no_split_entry", **ids)
    images = ledger.step(
        "images", "ViewPosition present", images, images["ViewPosition"] == "", "missing_view_position", **ids
    )
    views = ",".join(config.views)
    images = ledger.step(
        "images",
        f"ViewPosition in {views}",
        images,
        ~images["ViewPosition"].isin(config.views),
        "view_not_selected",
        detail=lambda f: "ViewPosition=" + f["ViewPosition"],
        **ids,
    )
    if config.limit is not None:
        studies = images["study_id"].drop_duplicates()
        chosen = set(studies.iloc[: config.limit])
        beyond = ~images["study_id"].isin(chosen)
        # Counted, not listed item by item: a quick run on MIMIC would list ~377k images.
        images = images[~beyond]
        ledger.count(
            "images", f"in the first {config.limit} studies (--limit)", len(images), int(beyond.sum()), "beyond_limit"
        )

    images = images.assign(path=_relative_paths(images))
    checks = checker.check([jpg / p for p in images["path"]], "checking MIMIC-CXR-JPG images")
    status = pd.Series([c[0] for c in checks], index=images.index)
    detail = pd.Series([c[3] for c in checks], index=images.index)
    height = pd.array([c[1] for c in checks], dtype="Int64")
    width = pd.array([c[2] for c in checks], dtype="Int64")
    if config.check_images == "none":
        height = images["Rows"].array if "Rows" in images else pd.array([pd.NA] * len(images), dtype="Int64")
        width = images["Columns"].array if "Columns" in images else pd.array([pd.NA] * len(images), dtype="Int64")
    images = images.assign(height=height, width=width, _detail=detail)
    if config.check_images != "none":
        images = ledger.step(
            "images",
            "image file present",
            images,
            status[images.index] == "missing",
            "image_file_missing",
            detail=lambda f: f["path"],
            **ids,
        )
        images = ledger.step(
            "images",
            f"image file readable ({config.check_images})",
            images,
            status[images.index] == "unreadable",
            "image_unreadable",
            detail=lambda f: f["path"] + ": " + f["_detail"],
            **ids,
        )
        images = ledger.step(
            "images",
            "image geometry usable",
            images,
            status[images.index] == "degenerate",
            "image_degenerate_geometry",
            detail=lambda f: f["path"] + ": " + f["_detail"],
            **ids,
        )
    return images.rename(columns={"ViewPosition": "view_position"})[
        ["dicom_id", "subject_id", "study_id", "split", "view_position", "path", "height", "width"]
    ].reset_index(drop=True)


def _process_study(text: str, config: PrepareConfig, splitter: str) -> tuple[str, dict[str, Any]]:
    """(skip reason or "", manifest fields) for one report; ``splitter`` is "rules" or "stanza"."""
    sections = extract_sections(text)
    findings, impression = sections.get("findings", ""), sections.get("impression", "")
    fields: dict[str, Any] = {"findings": clean_text(findings), "impression": clean_text(impression)}
    if not findings and not impression:
        return "no_findings_or_impression", fields
    chosen = select_sections(sections, config.text)
    if not chosen:
        return "selected_section_missing", fields
    sentences = [s for _, section in chosen for s in split_sentences(section, splitter)]
    n_tokens = sum(count_tokens(s) for s in sentences)
    fields.update(
        text_sections=[name for name, _ in chosen],
        sentences=sentences,
        text=" ".join(sentences),
        n_sentences=len(sentences),
        n_tokens=n_tokens,
    )
    if not sentences:
        return "no_sentences", fields
    if n_tokens < config.min_tokens:
        return "too_few_tokens", fields
    return "", fields


# Study-level filters, in the order they apply, with the step text of the counts table.
_STUDY_STEPS = (
    ("report_missing", "report file present"),
    ("report_unreadable", "report file readable (UTF-8)"),
    ("custom_rule_study", "not excluded by LoVT (MIT-LCP custom rules)"),
    ("no_findings_or_impression", "has a findings or impression section"),
    ("selected_section_missing", "has the section(s) of the text rule"),
    ("no_sentences", "at least one sentence"),
    ("too_few_tokens", "at least min_tokens tokens"),
)


def _build_manifest(
    config: PrepareConfig, images: pd.DataFrame, reports: Path, splitter: str, ledger: _Ledger, progress: bool
) -> pd.DataFrame:
    # One pass in Python: groupby(...).agg(list) is ~10x slower on MIMIC's 227k studies.
    grouped: dict[tuple[int, int], dict[str, Any]] = {}
    ordered = images.sort_values(["subject_id", "study_id", "dicom_id"])
    for subject, study, split, dicom, path, view in zip(
        ordered["subject_id"],
        ordered["study_id"],
        ordered["split"],
        ordered["dicom_id"],
        ordered["path"],
        ordered["view_position"],
    ):
        row = grouped.setdefault(
            (int(subject), int(study)),
            {
                "subject_id": int(subject),
                "study_id": int(study),
                "split": split,
                "dicom_ids": [],
                "image_paths": [],
                "view_positions": [],
            },
        )
        row["dicom_ids"].append(dicom)
        row["image_paths"].append(path)
        row["view_positions"].append(view)
    studies = pd.DataFrame(
        list(grouped.values()),
        columns=["subject_id", "study_id", "split", "dicom_ids", "image_paths", "view_positions"],
    )
    ledger.count("studies", "with at least one usable frontal image", len(studies))
    rows: list[dict[str, Any]] = []
    reasons: list[str] = []
    details: list[str] = []
    for study in tqdm(
        studies.itertuples(index=False), total=len(studies), desc="reading reports", unit="study", disable=not progress
    ):
        rel = layout.mimic_report_path(study.subject_id, study.study_id).as_posix()
        fields: dict[str, Any] = {}
        detail = rel
        report = reports / rel
        problem = file_problem(report)
        if problem is not None and problem[0]:
            reason = "report_missing"
        elif problem is not None:  # something is there but is no readable file (a link loop, a folder)
            reason, detail = "report_unreadable", f"{rel}: {problem[1]}"
        else:
            try:
                text = report.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError) as err:
                reason, detail = "report_unreadable", f"{rel}: {type(err).__name__}: {err}"
            else:
                if study.study_id in MIMIC_CUSTOM_RULE_STUDIES:
                    reason = "custom_rule_study"
                else:
                    reason, fields = _process_study(text, config, splitter)
                if reason == "selected_section_missing":
                    detail = f"{rel}: text rule {config.text!r}"
                elif reason == "too_few_tokens":
                    detail = f"{rel}: {fields['n_tokens']} < {config.min_tokens} tokens"
        reasons.append(reason)
        details.append(detail)
        rows.append({**study._asdict(), "report_path": rel, **fields})
    reason_of = pd.Series(reasons, dtype=object)
    kept = pd.Series(True, index=studies.index)
    for reason, step in _STUDY_STEPS:
        drop = (reason_of == reason).to_numpy()
        dropped = studies[drop]
        ledger.skip(
            "studies",
            dropped["study_id"],
            reason,
            [d for d, x in zip(details, drop) if x],
            dropped["subject_id"],
            dropped["study_id"],
        )
        kept &= ~drop
        ledger.count("studies", step, int(kept.sum()), int(drop.sum()), reason)
    manifest = pd.DataFrame([r for r, k in zip(rows, kept) if k], columns=list(MANIFEST_SCHEMA))
    return manifest.astype({"n_sentences": "int64", "n_tokens": "int64"}).reset_index(drop=True)


def _build_labels(
    config: PrepareConfig, manifest: pd.DataFrame, chexpert_path: Path | None, ledger: _Ledger
) -> pd.DataFrame:
    base = manifest[["subject_id", "study_id", "split"]]
    if chexpert_path is None:
        ledger.skip(
            "labels",
            base["study_id"],
            "no_chexpert_file",
            f"{layout.MIMIC_CHEXPERT} not found",
            base["subject_id"],
            base["study_id"],
        )
        ledger.count("labels", "studies with a CheXpert row", 0, len(base), "no_chexpert_file")
        return pd.DataFrame(columns=list(LABELS_SCHEMA))
    raw = read_chexpert_labels(chexpert_path)
    ledger.count("labels", f"rows in {chexpert_path.name}", len(raw))
    merged = base.merge(
        raw.rename(columns={"subject_id": "label_subject_id"}), on="study_id", how="left", indicator=True
    )
    found = merged["_merge"] == "both"
    mismatch = found & (merged["label_subject_id"] != merged["subject_id"])
    if mismatch.any():
        row = merged[mismatch].iloc[0]
        raise ValueError(
            f"{chexpert_path}: study {row['study_id']} has subject_id {int(row['label_subject_id'])}, "
            f"but the metadata says {row['subject_id']}"
        )
    labels = ledger.step(
        "labels",
        "kept studies with a CheXpert row",
        merged,
        ~found,
        "no_chexpert_row",
        items=lambda f: f["study_id"],
        subject_id=lambda f: f["subject_id"],
        study_id=lambda f: f["study_id"],
    )
    labels = apply_uncertainty_policy(labels, config.uncertainty)
    return labels[list(LABELS_SCHEMA)].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# MS-CXR, edema, RSNA
# ------------------------------------------------------------------------------------------------

_MS_CXR_PATH = r"^files/p\d{2}/p(\d+)/s(\d+)/([^/]+)\.jpg$"


def _build_ms_cxr(
    path: Path,
    meta: pd.DataFrame,
    split: pd.DataFrame,
    images: pd.DataFrame,
    jpg: Path,
    checker: _ImageChecker,
    ledger: _Ledger,
) -> pd.DataFrame:
    boxes = read_ms_cxr(path)
    ledger.count("ms_cxr", f"boxes in {path.name}", len(boxes))
    for column in ("image_width", "image_height", "path"):
        n = boxes.groupby("dicom_id")[column].nunique()
        if (n > 1).any():
            dicom = n.index[(n > 1).to_numpy()][0]
            values = sorted(boxes.loc[boxes["dicom_id"] == dicom, column].astype(str).unique())
            raise ValueError(f"{path}: dicom_id {dicom!r} has more than one {column}: {values}")
    for column in ("category_name", "split"):
        n = boxes.groupby(["dicom_id", "label_text"])[column].nunique()
        if (n > 1).any():
            dicom, text = n.index[(n > 1).to_numpy()][0]
            raise ValueError(f"{path}: the boxes of phrase {text!r} on {dicom!r} have different {column} values")
    parsed = boxes["path"].str.extract(_MS_CXR_PATH)
    bad = parsed.isna().any(axis=1) | (parsed[2] != boxes["dicom_id"])
    if bad.any():
        row = boxes[bad].iloc[0]
        raise ValueError(
            f"{path}: line {row['line']}, column 'path': invalid value {row['path']!r} "
            f"(expected files/pXX/p<subject_id>/s<study_id>/{row['dicom_id']}.jpg)"
        )
    boxes["subject_id"] = parsed[0].astype("int64")
    boxes["study_id"] = parsed[1].astype("int64")
    known = boxes.merge(meta[["dicom_id", "subject_id", "study_id"]], on="dicom_id", suffixes=("", "_meta"))
    wrong = (known["subject_id"] != known["subject_id_meta"]) | (known["study_id"] != known["study_id_meta"])
    if wrong.any():
        row = known[wrong].iloc[0]
        raise ValueError(
            f"{path}: line {row['line']}: path {row['path']!r} disagrees with the metadata "
            f"(subject {row['subject_id_meta']}, study {row['study_id_meta']})"
        )

    # Per-box problems, reported per phrase: a phrase with a bad box is dropped whole, because a
    # partial set of boxes would be a wrong grounding target.
    box_problem = pd.Series("", index=boxes.index)
    checks = {
        "unknown_category": ~boxes["category_name"].isin(layout.MS_CXR_CATEGORIES),
        "box_nonpositive_size": (boxes["w"] <= 0) | (boxes["h"] <= 0),
        "box_outside_image": (boxes["x"] < 0)
        | (boxes["y"] < 0)
        | (boxes["x"] + boxes["w"] > boxes["image_width"])
        | (boxes["y"] + boxes["h"] > boxes["image_height"]),
    }
    for reason, flag in checks.items():
        box_problem = box_problem.mask((box_problem == "") & flag, reason)
    results = checker.check([jpg / p for p in boxes["path"]], "checking MS-CXR images")
    status = pd.Series([r[0] for r in results], index=boxes.index)
    size_known = pd.Series([r[1] is not None for r in results], index=boxes.index)
    mismatch = size_known & (
        (pd.Series([r[1] for r in results], index=boxes.index) != boxes["image_height"])
        | (pd.Series([r[2] for r in results], index=boxes.index) != boxes["image_width"])
    )
    image_problem = pd.Series("", index=boxes.index)
    image_problem = image_problem.mask(status == "missing", "image_file_missing")
    # A dicom_id the metadata does not know is not a MIMIC-CXR image, whether or not a file exists.
    image_problem = image_problem.mask(~boxes["dicom_id"].isin(meta["dicom_id"]), "not_in_metadata")
    image_problem = image_problem.mask(status == "unreadable", "image_unreadable")
    image_problem = image_problem.mask(status == "degenerate", "image_degenerate_geometry")
    image_problem = image_problem.mask((image_problem == "") & mismatch, "image_size_mismatch")
    problem = image_problem.mask(image_problem == "", box_problem)

    phrases = []
    order = [
        "not_in_metadata",
        "unknown_category",
        "image_file_missing",
        "image_unreadable",
        "image_degenerate_geometry",
        "image_size_mismatch",
        "box_nonpositive_size",
        "box_outside_image",
    ]
    dropped: dict[str, list[tuple[str, int, int, str]]] = {r: [] for r in order}
    for (dicom, text), group in boxes.groupby(["dicom_id", "label_text"], sort=False):
        first = group.iloc[0]
        problems = problem[group.index]
        if (problems != "").any():
            reason = next(r for r in order if (problems == r).any())
            lines = ", ".join(str(x) for x in group.loc[problems == reason, "line"])
            dropped[reason].append((f"{dicom} | {text}", first["subject_id"], first["study_id"], f"line(s) {lines}"))
            continue
        phrases.append(
            {
                "dicom_id": dicom,
                "subject_id": first["subject_id"],
                "study_id": first["study_id"],
                "category_name": first["category_name"],
                "label_text": text,
                "split": first["split"],
                "path": first["path"],
                "image_width": first["image_width"],
                "image_height": first["image_height"],
                "boxes": group[["x", "y", "w", "h"]].to_numpy(dtype=float).tolist(),
                "n_boxes": len(group),
            }
        )
    n_phrases = len(phrases) + sum(len(v) for v in dropped.values())
    ledger.count("ms_cxr", "phrases (boxes grouped by dicom_id, label_text)", n_phrases)
    remaining = n_phrases
    for reason in order:
        items = dropped[reason]
        ledger.skip(
            "ms_cxr", [i[0] for i in items], reason, [i[3] for i in items], [i[1] for i in items], [i[2] for i in items]
        )
        remaining -= len(items)
        ledger.count("ms_cxr", f"phrases without {reason}", remaining, len(items), reason)
    table = pd.DataFrame(
        phrases, columns=[c for c in MS_CXR_SCHEMA if c not in ("phrase_id", "mimic_split", "in_manifest")]
    )
    table.insert(0, "phrase_id", np.arange(len(table), dtype=np.int64))
    table["mimic_split"] = table["dicom_id"].map(split.set_index("dicom_id")["split"]).fillna("")
    table["in_manifest"] = table["dicom_id"].isin(images["dicom_id"])
    ledger.count("ms_cxr", "phrases whose image is in the manifest", int(table["in_manifest"].sum()))
    return table


def _build_edema(
    path: Path,
    config: PrepareConfig,
    meta: pd.DataFrame,
    split: pd.DataFrame,
    images: pd.DataFrame,
    jpg: Path,
    checker: _ImageChecker,
    ledger: _Ledger,
) -> pd.DataFrame:
    edema = read_edema_severity(path)
    ids = {
        "items": lambda f: f["dicom_id"],
        "subject_id": lambda f: f["subject_id"],
        "study_id": lambda f: f["study_id"],
    }
    ledger.count("edema", f"rows in {path.name}", len(edema))
    merged = edema.merge(
        meta[["dicom_id", "subject_id", "study_id", "ViewPosition"]].rename(
            columns={"subject_id": "meta_subject", "study_id": "meta_study"}
        ),
        on="dicom_id",
        how="left",
    )
    known = merged["meta_subject"].notna()
    wrong = known & ((merged["meta_subject"] != merged["subject_id"]) | (merged["meta_study"] != merged["study_id"]))
    if wrong.any():
        row = merged[wrong].iloc[0]
        raise ValueError(
            f"{path}: dicom_id {row['dicom_id']!r} has subject {row['subject_id']}, study {row['study_id']} but the "
            f"metadata says subject {int(row['meta_subject'])}, study {int(row['meta_study'])}"
        )
    rows = ledger.step("edema", "dicom_id in the metadata", merged, ~known, "not_in_metadata", **ids)
    rows = ledger.step(
        "edema",
        f"ViewPosition in {','.join(config.views)}",
        rows,
        ~rows["ViewPosition"].isin(config.views),
        "view_not_selected",
        detail=lambda f: "ViewPosition=" + f["ViewPosition"],
        **ids,
    )
    rows = rows.assign(split=rows["dicom_id"].map(split.set_index("dicom_id")["split"]))
    rows = ledger.step("edema", "with an entry in the split file", rows, rows["split"].isna(), "no_split_entry", **ids)
    rows = rows.assign(path=_relative_paths(rows))
    results = checker.check([jpg / p for p in rows["path"]], "checking edema images")
    status = pd.Series([r[0] for r in results], index=rows.index)
    rows = rows.assign(_detail=[r[3] for r in results])
    rows = ledger.step(
        "edema",
        "image file present",
        rows,
        status[rows.index] == "missing",
        "image_file_missing",
        detail=lambda f: f["path"],
        **ids,
    )
    rows = ledger.step(
        "edema",
        "image file readable",
        rows,
        status[rows.index] == "unreadable",
        "image_unreadable",
        detail=lambda f: f["path"],
        **ids,
    )
    rows = ledger.step(
        "edema",
        "image geometry usable",
        rows,
        status[rows.index] == "degenerate",
        "image_degenerate_geometry",
        detail=lambda f: f["path"] + ": " + f["_detail"],
        **ids,
    )
    rows = rows.rename(columns={"ViewPosition": "view_position"})
    rows["in_manifest"] = rows["dicom_id"].isin(images["dicom_id"])
    return rows[list(EDEMA_SCHEMA)].reset_index(drop=True)


def rsna_split(patient_ids: Iterable[str], seed: int, fractions: tuple[float, float, float]) -> dict[str, str]:
    """A seeded patient-level train/validate/test split (RSNA Pneumonia has no official one).

    The sorted patient ids are permuted with ``numpy.random.default_rng(seed)``; the validate and
    test sizes are ``round(fraction * n)`` and train takes the rest (26,684 RSNA images at
    60/20/20 give LoVT's 16,010 / 5,337 / 5,337).
    """
    patients = sorted(set(patient_ids))
    n = len(patients)
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(fractions[1] * n), round(fractions[2] * n)
    n_train = n - n_val - n_test
    names = ["train"] * n_train + ["validate"] * n_val + ["test"] * n_test
    return {patients[i]: names[rank] for rank, i in enumerate(order)}


def _build_rsna(root: Path, config: PrepareConfig, checker: _ImageChecker, ledger: _Ledger) -> pd.DataFrame:
    labels_path = root / layout.RSNA_LABELS
    image_dir = root / layout.RSNA_IMAGES
    if not image_dir.is_dir():
        raise FileNotFoundError(f"RSNA image folder {image_dir} not found")
    rows = read_rsna_labels(labels_path)
    ledger.count("rsna", f"rows in {layout.RSNA_LABELS}", len(rows))
    files: dict[str, str] = {}
    for entry in sorted(image_dir.iterdir()):
        if entry.suffix.lower() in RSNA_IMAGE_SUFFIXES:
            files.setdefault(entry.stem, entry.name)
    assignment = rsna_split(rows["patientId"], config.rsna_split_seed, config.rsna_split_fractions)
    patients = []
    for pid, group in rows.groupby("patientId", sort=False):
        target = int(group["Target"].iloc[0])
        box_list = group[["x", "y", "width", "height"]].to_numpy(dtype=float).tolist() if target == 1 else []
        name = files.get(pid)
        patients.append(
            {
                "patientId": pid,
                "path": f"{layout.RSNA_IMAGES}/{name}" if name else "",
                "split": assignment[pid],
                "target": target,
                "boxes": box_list,
                "n_boxes": len(box_list),
                "lines": ", ".join(str(x) for x in group["line"]),
            }
        )
    table = pd.DataFrame(patients, columns=["patientId", "path", "split", "target", "boxes", "n_boxes", "lines"])
    ledger.count("rsna", "patients (= images)", len(table))
    table = ledger.step(
        "rsna",
        "image file present",
        table,
        table["path"] == "",
        "image_file_missing",
        items=lambda f: f["patientId"],
        detail=lambda f: f"{layout.RSNA_IMAGES}/" + f["patientId"] + ".{dcm,png,jpg}",
    )
    if config.check_images != "none" and table["path"].str.lower().str.endswith(".dcm").any():
        from localign.data.images import _require_pydicom  # noqa: PLC0415

        _require_pydicom()  # fail before any work with the pip hint, not once per file
    results = checker.check([root / p for p in table["path"]], "checking RSNA images")
    status = pd.Series([r[0] for r in results], index=table.index)
    table = table.assign(
        height=pd.array([r[1] for r in results], dtype="Int64"),
        width=pd.array([r[2] for r in results], dtype="Int64"),
        _detail=[r[3] for r in results],
    )
    table = ledger.step(
        "rsna",
        "image file readable",
        table,
        status[table.index] == "unreadable",
        "image_unreadable",
        items=lambda f: f["patientId"],
        detail=lambda f: f["path"] + ": " + f["_detail"],
    )
    table = ledger.step(
        "rsna",
        "image geometry usable",
        table,
        status[table.index] == "degenerate",
        "image_degenerate_geometry",
        items=lambda f: f["patientId"],
        detail=lambda f: f["path"] + ": " + f["_detail"],
    )

    def bad_box(row: pd.Series) -> str:
        for x, y, w, h in row["boxes"]:
            if w <= 0 or h <= 0:
                return "box_nonpositive_size"
            if (
                x < 0
                or y < 0
                or (pd.notna(row["width"]) and x + w > row["width"])
                or (pd.notna(row["height"]) and y + h > row["height"])
            ):
                return "box_outside_image"
        return ""

    problem = table.apply(bad_box, axis=1) if len(table) else pd.Series(dtype=object)
    for reason in ("box_nonpositive_size", "box_outside_image"):
        table = ledger.step(
            "rsna",
            f"patients without {reason}",
            table,
            problem[table.index] == reason,
            reason,
            items=lambda f: f["patientId"],
            detail=lambda f: "line(s) " + f["lines"],
        )
    for name in ("train", "validate", "test"):
        ledger.count("rsna", f"{name} split (seed {config.rsna_split_seed})", int((table["split"] == name).sum()))
    return table[list(RSNA_SCHEMA)].reset_index(drop=True)


def _synthcxr_sentence_match(sentences: pd.DataFrame, manifest: pd.DataFrame) -> dict[str, Any] | None:
    """How many SynthCXR sentence-table rows equal a manifest sentence of their study.

    Sentence -> mask supervision needs the generator's sentences and the splitter's sentences to
    agree; this is measured here (when the table has ``study_id`` and a ``sentence``/``text``
    column) so that a mismatch is visible in ``dataset.json`` rather than silently losing masks.
    """
    column = next((c for c in ("sentence", "text") if c in sentences.columns), None)
    if column is None or "study_id" not in sentences.columns:
        return None
    by_study = {int(s): set(sents) for s, sents in zip(manifest["study_id"], manifest["sentences"])}
    rows = sentences[pd.to_numeric(sentences["study_id"], errors="coerce").isin(list(by_study))]
    matched = sum(clean_text(str(t)) in by_study[int(s)] for s, t in zip(rows["study_id"], rows[column]))
    return {"column": column, "rows_of_kept_studies": int(len(rows)), "matching_a_manifest_sentence": int(matched)}


# ------------------------------------------------------------------------------------------------
# The whole pipeline
# ------------------------------------------------------------------------------------------------


def _versions(splitter: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("localign", "numpy", "pandas", "pillow", "pydicom"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    if splitter.startswith("stanza"):
        versions["stanza"] = splitter.removeprefix("stanza-")
    return versions


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(
                f"output folder {out} is not empty; pass --overwrite (overwrite=True) to replace a prepared dataset there"
            )
        # Remove only the files this command writes, the info file first so that an interrupted
        # run never looks complete.
        for name in [INFO_FILE] + [f"{t}.csv" for t in TABLE_FILES]:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _require_dir(path: Path, what: str, inside: str | None = None) -> Path:
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {path} does not exist")
    if inside is not None and not (path / inside).is_dir():
        raise FileNotFoundError(
            f"{what} folder {path} has no {inside}/ subfolder (expected {path}/{inside}/pXX/pXXXXXXXX/...)"
        )
    return path


def _require_file(path: str, what: str) -> Path:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"{what} file {resolved} does not exist")
    return resolved


def prepare_dataset(
    config: PrepareConfig, out_dir: str | Path, *, overwrite: bool = False, workers: int = 4, progress: bool = True
) -> Path:
    """Run every step and write the prepared dataset folder (schemas in :mod:`localign.data.manifest`).

    :param config: inputs and filtering rules
    :param out_dir: output folder; must be empty or absent unless ``overwrite``
    :param workers: threads used to check image files (does not change the result)
    :param progress: show tqdm progress bars
    :return: ``out_dir``
    :raises ValueError: for malformed inputs, naming the file, line, column and value
    :raises FileNotFoundError: for missing input folders or files
    """
    out = Path(out_dir).expanduser()
    splitter = resolve_splitter(config.splitter)  # fail before any work if stanza was asked for but is missing
    jpg = _require_dir(Path(config.mimic_jpg), "MIMIC-CXR-JPG")
    reports = _require_dir(Path(config.mimic_reports), "MIMIC-CXR reports", inside="files")
    inputs = {
        "mimic_jpg": str(jpg),
        "mimic_reports": str(reports),
        "ms_cxr": str(_require_file(config.ms_cxr, "MS-CXR")) if config.ms_cxr else None,
        "edema": str(_require_file(config.edema, "edema severity")) if config.edema else None,
        "rsna": str(_require_dir(Path(config.rsna), "RSNA")) if config.rsna else None,
        "synthcxr_tables": str(_require_dir(Path(config.synthcxr_tables), "SynthCXR tables"))
        if config.synthcxr_tables
        else None,
    }
    metadata_path = find_table(jpg, layout.MIMIC_METADATA)
    split_path = find_table(jpg, layout.MIMIC_SPLIT)
    try:
        chexpert_path: Path | None = find_table(jpg, layout.MIMIC_CHEXPERT)
    except FileNotFoundError:
        chexpert_path = None
        log.warning("%s not found in %s: labels.csv will be empty", layout.MIMIC_CHEXPERT, jpg)
    _prepare_out_dir(out, overwrite)
    log.info(
        "preparing %s -> %s (text %s, views %s, splitter %s, image check %s)",
        jpg,
        out,
        config.text,
        ",".join(config.views),
        splitter,
        config.check_images,
    )

    ledger = _Ledger()
    checker = _ImageChecker(config.check_images, workers, progress)
    names = {"metadata": metadata_path.name, "split": split_path.name}
    meta = read_mimic_metadata(metadata_path)
    split = read_mimic_split(split_path)
    images = _select_images(config, meta, split, jpg, checker, ledger, names)
    # Resolve "auto" once, not per report (and the same backend for every study).
    backend = "rules" if splitter == RULES_SPLITTER else "stanza"
    manifest = _build_manifest(config, images, reports, backend, ledger, progress)
    images = images[images["study_id"].isin(manifest["study_id"])].reset_index(drop=True)
    ledger.count("images", "frontal images of the kept studies", len(images))
    for name in layout.MIMIC_SPLITS:
        ledger.count("studies", f"{name} split", int((manifest["split"] == name).sum()))
    labels = _build_labels(config, manifest, chexpert_path, ledger)

    tables: dict[str, pd.DataFrame] = {"manifest": manifest, "images": images, "labels": labels}
    if inputs["ms_cxr"]:
        tables["ms_cxr"] = _build_ms_cxr(Path(inputs["ms_cxr"]), meta, split, images, jpg, checker, ledger)
    if inputs["edema"]:
        tables["edema"] = _build_edema(Path(inputs["edema"]), config, meta, split, images, jpg, checker, ledger)
    if inputs["rsna"]:
        tables["rsna"] = _build_rsna(Path(inputs["rsna"]), config, checker, ledger)

    info_extra: dict[str, Any] = {}
    for name, schema in TABLE_FILES.items():
        if name in tables:
            write_table(tables[name], table_path(out, name), schema)  # type: ignore[arg-type]
    if inputs["synthcxr_tables"]:
        synth = Path(inputs["synthcxr_tables"])
        shutil.copyfile(synth / layout.SYNTHCXR_SENTENCES, table_path(out, "sentences"))
        if (synth / layout.SYNTHCXR_FINDINGS).is_file():
            shutil.copyfile(synth / layout.SYNTHCXR_FINDINGS, table_path(out, "synth_findings"))
        match = _synthcxr_sentence_match(pd.read_csv(synth / layout.SYNTHCXR_SENTENCES), manifest)
        if match is not None:
            info_extra["synthcxr_sentence_match"] = match
            if match["matching_a_manifest_sentence"] < match["rows_of_kept_studies"]:
                log.warning(
                    "only %d of %d SynthCXR sentence-table rows of kept studies equal a manifest sentence (splitter %s)",
                    match["matching_a_manifest_sentence"],
                    match["rows_of_kept_studies"],
                    splitter,
                )
        for params in (synth / layout.SYNTHCXR_PARAMS, synth.parent / layout.SYNTHCXR_PARAMS):
            if params.is_file():
                info_extra["synthcxr_generator"] = json.loads(params.read_text())
                break
    skipped = ledger.skipped
    write_table(skipped, table_path(out, "skipped"), SKIPPED_SCHEMA)

    info = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "config": config_to_dict(config),
        "splitter": splitter,
        "uncertainty_policy": config.uncertainty,
        "rsna_split": {"seed": config.rsna_split_seed, "fractions": list(config.rsna_split_fractions)}
        if inputs["rsna"]
        else None,
        "rows": {name: int(len(df)) for name, df in tables.items()} | {"skipped": int(len(skipped))},
        "counts": ledger.counts,
        "skipped_by_reason": {
            table: group["reason"].value_counts().sort_index().to_dict() for table, group in skipped.groupby("table")
        },
        "versions": _versions(splitter),
        **info_extra,
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    log.info("per-step counts:\n%s", format_counts(ledger.counts))
    log.info("wrote %s: %d studies, %d images, %d skipped items", out, len(manifest), len(images), len(skipped))
    return out


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``localign prepare``."""
    src = parser.add_argument_group("inputs (real data: --mimic-jpg and --mimic-reports; or --synthcxr ROOT)")
    src.add_argument(
        "--mimic-jpg", metavar="DIR", help="MIMIC-CXR-JPG 2.0.0 root (files/ and mimic-cxr-2.0.0-*.csv.gz)"
    )
    src.add_argument(
        "--mimic-reports", metavar="DIR", help="MIMIC-CXR 2.0.0 reports root (files/pXX/pXXXXXXXX/sXXXXXXXX.txt)"
    )
    src.add_argument("--ms-cxr", metavar="CSV", help=f"MS-CXR phrase grounding table ({layout.MS_CXR_CSV})")
    src.add_argument("--edema", metavar="CSV", help="MIMIC-CXR pulmonary edema severity table")
    src.add_argument(
        "--rsna", metavar="DIR", help=f"RSNA Pneumonia folder ({layout.RSNA_LABELS}, {layout.RSNA_IMAGES}/)"
    )
    src.add_argument(
        "--synthcxr", metavar="ROOT", help="a SynthCXR root: fills every input above from its standard layout"
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder for the prepared dataset")
    parser.add_argument(
        "--text",
        choices=TEXT_RULES,
        default="findings+impression",
        help="which report sections form the text (default: %(default)s, as LoVT)",
    )
    parser.add_argument(
        "--views",
        default=",".join(layout.FRONTAL_VIEWS),
        help="comma-separated ViewPosition values to keep (default: %(default)s)",
    )
    parser.add_argument(
        "--min-tokens", type=int, default=3, help="drop studies whose text has fewer tokens (default: %(default)s)"
    )
    parser.add_argument(
        "--splitter",
        choices=SPLITTERS,
        default="auto",
        help="sentence splitter (default: %(default)s = stanza if its model is installed, else rules)",
    )
    parser.add_argument(
        "--uncertainty",
        choices=UNCERTAINTY_POLICIES,
        default="ignore",
        help="CheXpert -1 labels: ignore (blank), ones or zeros (default: %(default)s)",
    )
    parser.add_argument(
        "--check-images",
        choices=IMAGE_CHECK_MODES,
        default="decode",
        help="decode every image, read headers only, or skip the check (default: %(default)s)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="keep only the first N studies (quick runs)"
    )
    parser.add_argument(
        "--rsna-split-seed",
        type=int,
        default=0,
        help="seed of the RSNA patient-level 60/20/20 split (default: %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=4, help="threads for checking images (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace a prepared dataset in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    """Build the :class:`PrepareConfig` of a parsed ``localign prepare`` command line."""
    options: dict[str, Any] = {
        "text": args.text,
        "views": tuple(v.strip().upper() for v in args.views.split(",") if v.strip()),
        "min_tokens": args.min_tokens,
        "splitter": args.splitter,
        "uncertainty": args.uncertainty,
        "check_images": args.check_images,
        "limit": args.limit,
        "rsna_split_seed": args.rsna_split_seed,
    }
    explicit = {"ms_cxr": args.ms_cxr, "edema": args.edema, "rsna": args.rsna}
    if args.synthcxr:
        if args.mimic_jpg or args.mimic_reports:
            raise ValueError("use either --synthcxr ROOT or --mimic-jpg/--mimic-reports, not both")
        return synthcxr_config(args.synthcxr, **options, **{k: v for k, v in explicit.items() if v})
    if not args.mimic_jpg or not args.mimic_reports:
        raise ValueError("--mimic-jpg and --mimic-reports are required (or --synthcxr ROOT)")
    return PrepareConfig(mimic_jpg=args.mimic_jpg, mimic_reports=args.mimic_reports, **explicit, **options)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``localign prepare``; returns 0 on success, 2 on bad input."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = config_from_args(args)
        out = prepare_dataset(
            config, args.out, overwrite=args.overwrite, workers=args.workers, progress=not args.no_progress
        )
    except (ValueError, FileNotFoundError, ImportError, StanzaUnavailableError) as err:
        print(f"localign prepare: error: {err}", file=sys.stderr)
        return 2
    info = json.loads((out / INFO_FILE).read_text())
    # The per-step counts table was logged by prepare_dataset (and is saved in dataset.json).
    print(
        f"prepared dataset: {out} ({info['rows']['manifest']} studies, splitter {info['splitter']}); "
        "load it with localign.data.manifest.load_prepared"
    )
    return 0
