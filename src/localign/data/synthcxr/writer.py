"""Writing a SynthCXR dataset: study planning, per-study generation (in worker processes) and the
files of every real dataset format (see :mod:`localign.data.layout`).

Determinism: the main process plans patients, IDs, dates and splits from ``default_rng([seed, 0])``;
each study ``i`` draws everything else from ``SeedSequence([seed, 2, i])`` (hidden state, views,
pixels and report from independent child streams), each RSNA image ``j`` from
``SeedSequence([seed, 3, j])``. Results are gathered in task order, so the files do not depend on
the number of workers. CSVs are written with fixed formatting and gzip headers without a time stamp,
so the same config and seed give byte-identical files.

Completion: ``generator.json`` is written first with ``"complete": false`` and rewritten last with
``"complete": true``; an interrupted run is never mistaken for a complete one.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from threadpoolctl import threadpool_limits
from localign.progress import tqdm

from localign.config import config_from_dict, config_to_dict
from localign.data import layout
from localign.data.synthcxr.anatomy import (
    FRONTAL_VIEWS,
    Acquisition,
    Anatomy,
    image_shape,
    sample_acquisition,
    sample_anatomy,
)
from localign.data.synthcxr.config import GENERATOR_VERSION, SynthCXRConfig, config_hash
from localign.data.synthcxr.findings import Finding, StudyState, sample_study_state
from localign.data.synthcxr.render import render_frontal, render_lateral
from localign.data.synthcxr.reports import PlacedSentence, Report, ReportContext, Sentence, examination_name, write_report
from localign.paths import cache_dir

log = logging.getLogger(__name__)

METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
CHEXPERT_COLUMNS = ("subject_id", "study_id") + layout.CHEXPERT_LABELS
FINDINGS_COLUMNS = (
    "subject_id", "study_id", "dicom_id", "view", "finding_index", "finding", "subtype", "chexpert", "laterality",
    "zone", "severity", "grade", "size_cm", "certainty", "mask", "x", "y", "w", "h", "mask_pixels",
)
SENTENCES_COLUMNS = (
    "subject_id", "study_id", "dicom_id", "section", "sentence_index", "sentence", "kind", "finding_index", "finding",
    "laterality", "zone", "severity", "certainty", "labels", "region", "mask", "anatomy",
)
_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}
MS_CXR_SPLIT = {"train": "train", "validate": "val", "test": "test"}

# study i draws from SeedSequence([seed, _STUDY, i]); these tags keep the streams apart
_PLAN, _PATIENT, _STUDY, _RSNA, _EDEMA = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class StudyTask:
    """What the main process decides about a study before it is generated."""

    index: int
    subject_id: int
    study_id: int
    patient_index: int
    visit: int  # 0 for the patient's first study
    split: str
    study_date: int  # YYYYMMDD
    study_time: float  # HHMMSS.fff


@dataclass
class StudyRows:
    """Everything one study contributes to the CSV files (rows as tuples in column order)."""

    metadata: list[tuple] = field(default_factory=list)
    split: list[tuple] = field(default_factory=list)
    chexpert: list[tuple] = field(default_factory=list)
    findings: list[tuple] = field(default_factory=list)
    sentences: list[tuple] = field(default_factory=list)
    ms_cxr: list[tuple] = field(default_factory=list)
    edema_candidates: list[tuple] = field(default_factory=list)  # (subject, study, dicom, grade)
    stats: dict[str, int] = field(default_factory=dict)


def plan_studies(cfg: SynthCXRConfig) -> list[StudyTask]:
    """Patients, IDs, dates and the by-patient split of every study."""
    rng = np.random.default_rng([cfg.seed, _PLAN])
    counts: list[int] = []
    while sum(counts) < cfg.n_studies:
        counts.append(1 + int(rng.poisson(cfg.studies_per_patient - 1.0)))
    counts[-1] -= sum(counts) - cfg.n_studies
    n_patients = len(counts)
    subject_ids = 10_000_000 + rng.choice(10_000_000, size=n_patients, replace=False)
    study_ids = 50_000_000 + rng.choice(10_000_000, size=cfg.n_studies, replace=False)
    splits = assign_splits(n_patients, cfg.split_fractions, rng)
    tasks = []
    index = 0
    for p, n in enumerate(counts):
        day = np.datetime64("2110-01-01") + int(rng.integers(0, 80 * 365))
        for visit in range(n):
            date = int(str(day).replace("-", ""))
            seconds = float(rng.uniform(0, 86400))
            hh, mm, ss = int(seconds // 3600), int(seconds % 3600 // 60), seconds % 60
            time_value = round(hh * 10000 + mm * 100 + ss, 3)
            tasks.append(StudyTask(index, int(subject_ids[p]), int(study_ids[index]), p, visit, splits[p], date, time_value))
            index += 1
            day = day + int(rng.integers(1, 400))
    return tasks


def assign_splits(n_patients: int, fractions: tuple[float, float, float], rng: np.random.Generator) -> list[str]:
    """Split patients into train/validate/test; every split with a positive fraction gets at least
    one patient when there are enough patients."""
    counts = [int(round(f * n_patients)) for f in fractions]
    for i in (2, 1):
        if fractions[i] > 0 and counts[i] == 0 and n_patients >= 3:
            counts[i] = 1
    counts[0] = n_patients - counts[1] - counts[2]
    labels = np.array([s for s, c in zip(layout.MIMIC_SPLITS, counts) for _ in range(c)])
    return list(labels[rng.permutation(n_patients)])


def dicom_uid(rng: np.random.Generator) -> str:
    """A MIMIC-CXR-JPG style ``dicom_id``: five dash-separated groups of 8 hex digits."""
    return "-".join(f"{int(x):08x}" for x in rng.integers(0, 2**32, size=5, dtype=np.uint64))


@dataclass(frozen=True)
class ImagePlan:
    dicom_id: str
    view: str  # what was acquired
    view_position: str  # what the metadata says ("" when missing)
    acquisition: Acquisition
    height: int
    width: int


def sample_views(cfg: SynthCXRConfig, state: StudyState, anatomy: Anatomy, rng: np.random.Generator) -> list[ImagePlan]:
    """The images of a study: portable AP for intensive care, otherwise PA (rarely AP) with a
    lateral view for most; sometimes a second frontal image."""
    plans: list[tuple[str, bool, bool]] = []  # (view, supine, portable)
    if state.icu:
        supine = bool(rng.random() < 0.6)
        plans.append(("AP", supine, True))
        if rng.random() < 2 * cfg.p_second_frontal:
            plans.append(("AP", supine, True))
    else:
        frontal = "AP" if rng.random() < 0.08 else "PA"
        plans.append((frontal, False, False))
        if rng.random() < cfg.p_second_frontal:
            plans.append((frontal, False, False))
        if rng.random() < cfg.p_lateral:
            plans.append(("LL" if rng.random() < 0.15 else "LATERAL", False, False))
    out = []
    for view, supine, portable in plans:
        acq = sample_acquisition(rng, anatomy, view, supine, cfg.noise, portable)
        height, width = image_shape(cfg.image_size, view, rng, cfg.aspect_jitter)
        missing = rng.random() < cfg.missing_view_rate
        out.append(ImagePlan(dicom_uid(rng), view, "" if missing else view, acq, height, width))
    return out


def _labels_text(labels: tuple[tuple[str, float], ...] | list[tuple[str, float]]) -> str:
    """CheXpert mentions as ``"Lung Opacity=1;Pneumonia=-1"`` in the column order of the CheXpert file."""
    order = {name: i for i, name in enumerate(layout.CHEXPERT_LABELS)}
    return ";".join(f"{k}={int(v)}" for k, v in sorted(labels, key=lambda kv: order[kv[0]]))


def ms_cxr_category(f: Finding, labels: dict[str, float]) -> str | None:
    """The MS-CXR category of a finding phrase, from the finding and what the phrase says."""
    if f.kind == "consolidation":
        if "Pneumonia" in labels:
            return "Pneumonia"
        return "Consolidation" if labels.get("Consolidation") == 1.0 else "Lung Opacity"
    return {
        "atelectasis": "Atelectasis",
        "effusion": "Pleural Effusion",
        "pneumothorax": "Pneumothorax",
        "cardiomegaly": "Cardiomegaly",
        "edema": "Edema",
    }.get(f.kind)


def mask_boxes(mask: np.ndarray, min_fraction: float = 0.05) -> tuple[list[tuple[int, int, int, int]], int]:
    """Boxes ``(x, y, w, h)`` of the connected components of ``mask`` [H, W]; components smaller
    than ``min_fraction`` of the mask (and than 3 px) are dropped.

    :return: boxes (largest first) and the number of dropped fragments
    """
    labelled, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return [], 0
    sizes = np.bincount(labelled.ravel())[1:]
    keep_min = max(3.0, min_fraction * sizes.sum())
    boxes = []
    dropped = 0
    for i, sl in enumerate(ndimage.find_objects(labelled)):
        if sizes[i] < keep_min:
            dropped += 1
            continue
        boxes.append((int(sizes[i]), sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start))
    boxes.sort(key=lambda b: (-b[0], b[1], b[2]))
    return [b[1:] for b in boxes], dropped


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG")


def generate_study(task: StudyTask, cfg: SynthCXRConfig, out: Path) -> StudyRows:
    """Generate one study: images, masks, report and all its CSV rows."""
    with threadpool_limits(1):
        return _generate_study(task, cfg, out)


def _generate_study(task: StudyTask, cfg: SynthCXRConfig, out: Path) -> StudyRows:
    anatomy = sample_anatomy(np.random.default_rng([cfg.seed, _PATIENT, task.patient_index]))
    s_state, s_views, s_pixels, s_text = np.random.SeedSequence([cfg.seed, _STUDY, task.index]).spawn(4)
    state = sample_study_state(cfg, np.random.default_rng(s_state))
    images = sample_views(cfg, state, anatomy, np.random.default_rng(s_views))
    pixel_rng = np.random.default_rng(s_pixels)
    frontal = [im for im in images if im.view in FRONTAL_VIEWS]
    ctx = ReportContext(
        sex=anatomy.sex,
        frontal_views=tuple(im.view for im in frontal),
        lateral=any(im.view not in FRONTAL_VIEWS for im in images),
        supine=any(im.acquisition.supine for im in frontal),
        portable=any(im.acquisition.portable_marker for im in frontal),
        has_prior=task.visit > 0,
        icu=state.icu,
        heart_failure=state.heart_failure,
        infection=state.infection,
        findings=state.findings,
    )
    report = write_report(ctx, cfg, np.random.default_rng(s_text))
    report_path = out / layout.SYNTHCXR_SUBDIRS["mimic_reports"] / layout.mimic_report_path(task.subject_id, task.study_id)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report.text)

    rows = StudyRows(stats=_study_stats(state, report))
    labels = report.labels()
    rows.chexpert.append((task.subject_id, task.study_id, *[labels[name] for name in layout.CHEXPERT_LABELS]))
    exam = examination_name(ctx)
    mask_paths: dict[str, list[str]] = {}
    for im in images:
        path = out / layout.SYNTHCXR_SUBDIRS["mimic_jpg"] / layout.mimic_image_path(task.subject_id, task.study_id, im.dicom_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        if im.view in FRONTAL_VIEWS:
            pixels, mask_paths[im.dicom_id] = _frontal_image(task, cfg, out, anatomy, state, report, im, pixel_rng, rows)
        else:
            pixels = render_lateral(anatomy, im.acquisition, state.findings, im.height, pixel_rng, cfg.finding_contrast)
        Image.fromarray(pixels).save(path, format="JPEG", quality=cfg.jpeg_quality)
        orientation = ("Recumbent" if im.acquisition.supine else "Erect") if im.view_position else ""
        rows.metadata.append((
            im.dicom_id, task.subject_id, task.study_id, exam, im.view_position, im.height, im.width, task.study_date,
            task.study_time, exam, _VIEW_MEANING.get(im.view_position, ""), orientation,
        ))
        rows.split.append((im.dicom_id, task.study_id, task.subject_id, task.split))
    rows.sentences = _sentence_rows(task, state, report, mask_paths)
    rows.stats["images"] = len(images)
    rows.stats["frontal_images"] = len(frontal)
    rows.stats["missing_view_position"] = sum(1 for im in images if not im.view_position)
    return rows


def _anatomy_rel(dicom_id: str) -> str:
    return f"synthcxr/masks/{dicom_id}_anatomy.png"


def _frontal_image(
    task: StudyTask,
    cfg: SynthCXRConfig,
    out: Path,
    anatomy: Anatomy,
    state: StudyState,
    report: Report,
    im: ImagePlan,
    rng: np.random.Generator,
    rows: StudyRows,
) -> tuple[np.ndarray, list[str]]:
    """Render one frontal image, write its masks and add its findings / MS-CXR / edema rows.

    :return: the pixels [H, W] uint8 and the mask path of each finding
    """
    rendered = render_frontal(anatomy, im.acquisition, state.findings, im.height, im.width, rng, cfg.finding_contrast)
    _save_png(rendered.frame.label_map(), out / _anatomy_rel(im.dicom_id))
    image_rel = layout.mimic_image_path(task.subject_id, task.study_id, im.dicom_id).as_posix()
    finding_labels = _finding_labels(report, len(state.findings))
    phrases = _phrases(report, len(state.findings))
    paths = []
    for k, (f, mask) in enumerate(zip(state.findings, rendered.masks)):
        mask_rel = f"synthcxr/masks/{im.dicom_id}_{k}.png"
        _save_png((mask * np.uint8(255)).astype(np.uint8), out / mask_rel)
        paths.append(mask_rel)
        n_pixels = int(mask.sum())
        if n_pixels == 0:
            rows.stats["empty_masks"] = rows.stats.get("empty_masks", 0) + 1
            bbox: tuple = ("", "", "", "")
        else:
            ys, xs = np.nonzero(mask)
            bbox = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        rows.findings.append((
            task.subject_id, task.study_id, im.dicom_id, im.view, k, f.kind, f.subtype, _labels_text(finding_labels[k]),
            f.laterality, f.zone, f.severity, f.grade, f.size_cm, f.certainty, mask_rel, *bbox, n_pixels,
        ))
        # MS-CXR: frontal by the metadata, an asserted phrase, a category; one row per box
        category = ms_cxr_category(f, dict(phrases[k].sentence.labels)) if phrases[k] is not None else None
        if im.view_position in FRONTAL_VIEWS and category is not None:
            boxes, dropped = mask_boxes(mask)
            rows.stats["dropped_fragments"] = rows.stats.get("dropped_fragments", 0) + dropped
            text = phrases[k].sentence.text.rstrip(".")
            for x, y, w, h in boxes:
                rows.ms_cxr.append((im.dicom_id, category, text, image_rel, x, y, w, h, im.width, im.height, MS_CXR_SPLIT[task.split]))
    if im.view_position in FRONTAL_VIEWS:
        rows.edema_candidates.append((task.subject_id, task.study_id, im.dicom_id, state.edema_grade()))
    return rendered.pixels, paths


def _sentence_rows(task: StudyTask, state: StudyState, report: Report, mask_paths: dict[str, list[str]]) -> list[tuple]:
    """One row per (sentence, frontal image), or per sentence when the study has no frontal image."""
    dicoms = list(mask_paths) or [""]
    out = []
    for placed in report.sentences:
        s = placed.sentence
        f = state.findings[s.finding_index] if s.finding_index >= 0 else None
        for dicom_id in dicoms:
            mask = mask_paths[dicom_id][s.finding_index] if (f is not None and dicom_id) else ""
            out.append((
                task.subject_id, task.study_id, dicom_id, placed.section, placed.index, placed.written, s.kind,
                s.finding_index, f.kind if f else "", s.laterality, f.zone if f else "", f.severity if f else "",
                _sentence_certainty(s), _labels_text(s.labels), s.region, mask, _anatomy_rel(dicom_id) if dicom_id else "",
            ))
    return out


def _sentence_certainty(s: Sentence) -> int | str:
    """1 if the sentence asserts something, -1 if it only hedges, 0 if it only negates, "" if it
    makes no CheXpert mention."""
    values = [v for _, v in s.labels]
    if not values:
        return ""
    return 1 if 1.0 in values else -1 if -1.0 in values else 0


def _finding_labels(report: Report, n: int) -> list[list[tuple[str, float]]]:
    """The CheXpert mentions made about each finding, over all its sentences (aggregated)."""
    per: list[dict[str, list[float]]] = [dict() for _ in range(n)]
    for placed in report.sentences:
        k = placed.sentence.finding_index
        if k >= 0:
            for label, value in placed.sentence.labels:
                per[k].setdefault(label, []).append(value)
    return [[(lab, 1.0 if 1.0 in vals else -1.0 if -1.0 in vals else 0.0) for lab, vals in d.items()] for d in per]


def _phrases(report: Report, n: int) -> list[PlacedSentence | None]:
    """Per finding, its shortest asserted (``kind == "finding"``) sentence, or None: the MS-CXR
    phrase (MS-CXR phrases are short, e.g. "Small left pleural effusion")."""
    out: list[PlacedSentence | None] = [None] * n
    for placed in report.sentences:
        k = placed.sentence.finding_index
        if k >= 0 and placed.sentence.kind == "finding" and (out[k] is None or len(placed.sentence.text) < len(out[k].sentence.text)):
            out[k] = placed
    return out


def _study_stats(state: StudyState, report: Report) -> dict[str, int]:
    stats = {f"finding_{f.kind}": 0 for f in state.findings}
    for f in state.findings:
        stats[f"finding_{f.kind}"] += 1
    stats[f"layout_{report.layout}"] = 1
    stats[f"style_{report.style}"] = 1
    stats["normal_studies"] = int(state.normal)
    stats["sentences"] = len(report.sentences)
    for p in report.sentences:
        key = f"sentence_{p.sentence.kind}"
        stats[key] = stats.get(key, 0) + 1
    return stats


# --- RSNA-style detection set -----------------------------------------------------------------------


def generate_rsna_image(j: int, cfg: SynthCXRConfig, out: Path) -> list[tuple]:
    """One RSNA image of a new patient: pneumonia opacities as boxes (Target=1) or none (Target=0).

    :return: the rows of ``stage_2_train_labels.csv`` for this image
    """
    with threadpool_limits(1):
        s_patient, s_state, s_pixels = np.random.SeedSequence([cfg.seed, _RSNA, j]).spawn(3)
        rng = np.random.default_rng(s_state)
        anatomy = sample_anatomy(np.random.default_rng(s_patient))
        patient_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        positive = rng.random() < cfg.rsna_positive_fraction
        findings: list[Finding] = []
        if positive:
            sides = ("right", "left") if rng.random() < 0.35 else (("right",) if rng.random() < 0.55 else ("left",))
            for side in sides:
                zone = str(rng.choice(["lower", "middle", "upper"], p=[0.55, 0.3, 0.15]))
                findings.append(Finding("consolidation", side, zone, int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25])), int(rng.integers(2**31 - 1)), subtype="pneumonia"))
        else:
            state = sample_study_state(cfg, rng)
            findings = [f for f in state.findings if f.kind != "consolidation"]
        view = "AP" if rng.random() < 0.45 else "PA"
        acq = sample_acquisition(rng, anatomy, view, view == "AP" and rng.random() < 0.5, cfg.noise, portable=view == "AP")
        size = cfg.rsna_size
        rendered = render_frontal(anatomy, acq, tuple(findings), size, size, np.random.default_rng(s_pixels), cfg.finding_contrast)
        path = out / layout.SYNTHCXR_SUBDIRS["rsna"] / layout.RSNA_IMAGES / f"{patient_id}.png"
        _save_png(rendered.pixels, path)
        rows = []
        if positive:
            for f, mask in zip(findings, rendered.masks):
                ys, xs = np.nonzero(mask)
                if len(xs):
                    rows.append((patient_id, float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1), 1))
        if not rows:
            rows.append((patient_id, math.nan, math.nan, math.nan, math.nan, 0))
        return rows


# --- files ------------------------------------------------------------------------------------------


def _csv_bytes(rows: list[tuple], columns: tuple[str, ...]) -> bytes:
    frame = pd.DataFrame(rows, columns=list(columns))
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue().encode()


def write_csv(path: Path, rows: list[tuple], columns: tuple[str, ...]) -> None:
    """Write rows as CSV (gzip without time stamp when the name ends in ``.gz``), atomically."""
    data = _csv_bytes(rows, columns)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_generator_json(root: str | Path) -> dict | None:
    """The ``generator.json`` of a SynthCXR root, or None when there is none."""
    path = Path(root) / layout.SYNTHCXR_SUBDIRS["synthcxr"] / layout.SYNTHCXR_PARAMS
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def is_complete(root: str | Path, config: SynthCXRConfig | None = None) -> bool:
    """Whether ``root`` holds a completely generated dataset (of ``config``, when given)."""
    info = read_generator_json(root)
    if not info or not info.get("complete"):
        return False
    if config is not None:
        return info.get("version") == GENERATOR_VERSION and info.get("config") == config_to_dict(config)
    return True


def load_config(root: str | Path) -> SynthCXRConfig:
    """The config a SynthCXR root was generated with."""
    info = read_generator_json(root)
    if info is None:
        raise FileNotFoundError(f"{root} is not a SynthCXR dataset: no {layout.SYNTHCXR_SUBDIRS['synthcxr'] / layout.SYNTHCXR_PARAMS}")
    return config_from_dict(SynthCXRConfig, info["config"])


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if read_generator_json(out) is None:
            raise FileExistsError(f"refusing to write SynthCXR into {out}: it is not empty and holds no {layout.SYNTHCXR_PARAMS}")
        for sub in layout.SYNTHCXR_SUBDIRS.values():
            target = out / sub.parts[0]
            if target.exists():
                shutil.rmtree(target)
    out.mkdir(parents=True, exist_ok=True)


def _select_edema_rows(candidates: list[tuple], ratio: float, seed: int) -> list[tuple]:
    positives = [c for c in candidates if c[3] > 0]
    negatives = [c for c in candidates if c[3] == 0]
    n_neg = min(len(negatives), int(round(ratio * len(positives))))
    rng = np.random.default_rng([seed, _EDEMA])
    chosen = sorted(rng.choice(len(negatives), size=n_neg, replace=False).tolist()) if n_neg else []
    rows = positives + [negatives[i] for i in chosen]
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _pool(workers: int) -> ProcessPoolExecutor | None:
    """Worker processes for generation, or None for in-process generation.

    A fork server (where the platform has one) imports the generator once and forks the workers
    from it: fast to start, and safe even when the calling process runs threads (torch, BLAS).
    """
    if workers <= 1:
        return None
    methods = get_all_start_methods()
    context = get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def _run(fn, items: list, pool: ProcessPoolExecutor | None, workers: int, desc: str, progress: bool) -> list:
    """``[fn(item) for item in items]`` in order, in ``pool`` when given, with a progress bar."""
    results = []
    with tqdm(total=len(items), desc=desc, unit="it", disable=not progress, leave=False) as bar:
        if pool is None:
            for item in items:
                results.append(fn(item))
                bar.update(1)
        else:
            chunk = max(1, min(16, len(items) // (8 * workers)))
            for result in pool.map(fn, items, chunksize=chunk):
                results.append(result)
                bar.update(1)
    return results


def generate(out_dir: str | Path, config: SynthCXRConfig | None = None, workers: int | None = None, progress: bool = True) -> Path:
    """Generate a SynthCXR dataset into ``out_dir`` (see :mod:`localign.data.synthcxr`).

    ``out_dir`` must be empty, missing, or an earlier SynthCXR output (whose dataset folders are
    then replaced). Same ``config`` -> byte-identical CSVs and reports and identical pixels,
    whatever ``workers`` is.

    :return: ``out_dir``
    """
    cfg = config or SynthCXRConfig()
    out = Path(out_dir)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    _prepare_out_dir(out)
    info_path = out / layout.SYNTHCXR_SUBDIRS["synthcxr"] / layout.SYNTHCXR_PARAMS
    info_path.parent.mkdir(parents=True, exist_ok=True)
    header = {"name": "SynthCXR", "version": GENERATOR_VERSION, "seed": cfg.seed, "config_hash": config_hash(cfg), "config": config_to_dict(cfg)}
    _write_json(info_path, {**header, "complete": False})
    (out / layout.SYNTHCXR_SUBDIRS["synthcxr"] / "masks").mkdir(parents=True, exist_ok=True)
    if cfg.n_rsna:
        (out / layout.SYNTHCXR_SUBDIRS["rsna"] / layout.RSNA_IMAGES).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tasks = plan_studies(cfg)
    log.info("SynthCXR: %d studies of %d patients at %d px into %s with %d worker(s)", len(tasks), len({t.patient_index for t in tasks}), cfg.image_size, out, workers)
    pool = _pool(workers)
    try:
        studies = _run(partial(generate_study, cfg=cfg, out=out), tasks, pool, workers, "SynthCXR studies", progress)
        study_seconds = time.perf_counter() - start
        rsna = _run(partial(generate_rsna_image, cfg=cfg, out=out), list(range(cfg.n_rsna)), pool, workers, "SynthCXR RSNA", progress)
    finally:
        if pool is not None:
            pool.shutdown()

    def gather(name: str) -> list[tuple]:
        return [row for s in studies for row in getattr(s, name)]

    jpg = out / layout.SYNTHCXR_SUBDIRS["mimic_jpg"]
    by_ids = lambda r: (r[1], r[2], r[0])  # noqa: E731  (subject, study, dicom) for metadata rows
    write_csv(jpg / layout.MIMIC_METADATA, sorted(gather("metadata"), key=by_ids), METADATA_COLUMNS)
    write_csv(jpg / layout.MIMIC_SPLIT, sorted(gather("split"), key=lambda r: (r[2], r[1], r[0])), SPLIT_COLUMNS)
    write_csv(jpg / layout.MIMIC_CHEXPERT, sorted(gather("chexpert"), key=lambda r: (r[0], r[1])), CHEXPERT_COLUMNS)
    write_csv(out / layout.SYNTHCXR_SUBDIRS["ms_cxr"] / layout.MS_CXR_CSV, sorted(gather("ms_cxr"), key=lambda r: (r[3], r[2], r[1])), layout.MS_CXR_COLUMNS)
    edema = _select_edema_rows(gather("edema_candidates"), cfg.edema_negatives_per_positive, cfg.seed)
    write_csv(out / layout.SYNTHCXR_SUBDIRS["edema"] / layout.EDEMA_CSV, edema, layout.EDEMA_COLUMNS)
    rsna_rows = [row for rows in rsna for row in rows]
    if cfg.n_rsna:
        write_csv(out / layout.SYNTHCXR_SUBDIRS["rsna"] / layout.RSNA_LABELS, rsna_rows, layout.RSNA_COLUMNS)
    sx = out / layout.SYNTHCXR_SUBDIRS["synthcxr"]
    write_csv(sx / layout.SYNTHCXR_FINDINGS, sorted(gather("findings"), key=lambda r: (r[0], r[1], r[2], r[4])), FINDINGS_COLUMNS)
    write_csv(sx / layout.SYNTHCXR_SENTENCES, sorted(gather("sentences"), key=lambda r: (r[0], r[1], r[4], r[2])), SENTENCES_COLUMNS)

    seconds = time.perf_counter() - start
    stats: dict[str, int] = {}
    for s in studies:
        for key, value in s.stats.items():
            stats[key] = stats.get(key, 0) + value
    counts = {
        "patients": len({t.patient_index for t in tasks}),
        "studies": len(tasks),
        "images": stats.get("images", 0),
        "frontal_images": stats.get("frontal_images", 0),
        "missing_view_position": stats.get("missing_view_position", 0),
        "normal_studies": stats.get("normal_studies", 0),
        "splits": {s: sum(1 for t in tasks if t.split == s) for s in layout.MIMIC_SPLITS},
        "findings": {k.removeprefix("finding_"): v for k, v in sorted(stats.items()) if k.startswith("finding_")},
        "report_layouts": {k.removeprefix("layout_"): v for k, v in sorted(stats.items()) if k.startswith("layout_")},
        "report_styles": {k.removeprefix("style_"): v for k, v in sorted(stats.items()) if k.startswith("style_")},
        "sentences": {k.removeprefix("sentence_"): v for k, v in sorted(stats.items()) if k.startswith("sentence_")},
        "ms_cxr_boxes": len(gather("ms_cxr")),
        "edema_rows": len(edema),
        "rsna_images": len(rsna),
        "rsna_positive_images": sum(1 for rows in rsna if rows[0][5] == 1),
        # skipped items, with their reason
        "mask_fragments_without_box": stats.get("dropped_fragments", 0),
        "empty_masks": stats.get("empty_masks", 0),
    }
    timing = {
        "seconds": round(seconds, 2),
        "study_seconds": round(study_seconds, 2),
        "studies_per_second": round(len(tasks) / max(study_seconds, 1e-9), 1),
        "workers": workers,
        "cpu_count": os.cpu_count(),
    }
    _write_json(info_path, {**header, "complete": True, "counts": counts, "timing": timing, "conventions": CONVENTIONS})
    log.info("SynthCXR: done in %.1f s (%.1f studies/s)", seconds, timing["studies_per_second"])
    return out


CONVENTIONS = {
    "laterality": "patient's side; frontal images are displayed radiologically: the patient's right is on the viewer's left",
    "masks": "synthcxr/masks/<dicom_id>_<finding_index>.png (0/255) per finding of each frontal image; <dicom_id>_anatomy.png label map",
    "anatomy_codes": {"background": 0, "soft_tissue": 1, "right_lung": 2, "left_lung": 3, "heart": 4, "mediastinum": 5, "abdomen": 6},
    "sentences": "one row per (report sentence, frontal image); mask empty for sentences without a finding; section '' for reports with neither FINDINGS nor IMPRESSION",
    "chexpert": "derived from the FINDINGS and IMPRESSION sentences with the CheXpert labeler's aggregation rules",
    "units": "1 patient unit = 40 cm; sizes in the reports are in cm",
}


def demo_dir(config: SynthCXRConfig | None = None, root: str | Path | None = None) -> Path:
    """Where :func:`ensure_demo_dataset` keeps the dataset of ``config``."""
    cfg = config or SynthCXRConfig()
    base = Path(root) if root is not None else cache_dir() / "synthcxr"
    return base / f"synthcxr-{cfg.n_studies}x{cfg.image_size}-seed{cfg.seed}-{config_hash(cfg)}"


def ensure_demo_dataset(config: SynthCXRConfig | None = None, root: str | Path | None = None, workers: int | None = None, progress: bool = True) -> Path:
    """The default demo dataset (or that of ``config``), generated into the cache on first use.

    Generation goes to a temporary sibling folder that is renamed into place when complete, so
    concurrent callers never see a partial dataset; a second call returns at once.
    """
    cfg = config or SynthCXRConfig()
    target = demo_dir(cfg, root)
    if is_complete(target, cfg):
        return target
    if target.exists():
        log.warning("SynthCXR: %s is incomplete or stale; regenerating", target)
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    generate(tmp, cfg, workers=workers, progress=progress)
    try:
        os.rename(tmp, target)
    except OSError:
        # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_complete(target, cfg):
            raise
    return target
