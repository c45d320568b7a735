"""`localign prepare` on a tiny hand-built MIMIC-CXR-JPG + reports tree in the real formats.

The fixture holds one example of every way an item can be dropped (a lateral, a missing
ViewPosition, a truncated JPEG, a missing image, an image without split entry, a split row without
metadata, a missing report, a report without findings/impression, a too-short report, a report with
no sentence, one of the studies LoVT excludes), so the per-step counts are known exactly.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from localign import cli
from localign.config import config_from_dict, config_to_dict
from localign.data import layout
from localign.data.images import ImageReadError, load_image, read_image_size
from localign.data.manifest import load_prepared
from localign.data.prepare import PrepareConfig, format_counts, prepare_dataset, rsna_split, synthcxr_config
from localign.data.sources import apply_uncertainty_policy

W, H = 64, 48  # fixture image size (width, height)


def dicom(key: str) -> str:
    """A dicom_id in MIMIC-CXR's format (five dash-separated hex groups)."""
    return f"{int(key[1:]):08x}-5c2b1a3d-7e6f8091-a2b3c4d5-e6f70819"


# key, subject_id, study_id, ViewPosition, split (None: no split row), image file, in metadata
IMAGES = [
    ("d01", 10000001, 50000001, "PA", "train", "ok", True),
    ("d02", 10000001, 50000001, "LATERAL", "train", "ok", True),
    ("d03", 10000001, 50000002, "AP", "train", "ok", True),
    ("d04", 10000001, 50000002, "AP", "train", "ok", True),
    ("d05", 10000002, 50000003, "PA", "validate", "ok", True),
    ("d06", 10000002, 50000003, "", "validate", "ok", True),
    ("d07", 10000002, 50000004, "PA", "validate", "truncated", True),
    ("d08", 10000003, 50000005, "PA", "test", "missing", True),
    ("d09", 10000003, 50000006, "PA", "test", "ok", True),
    ("d10", 10000003, 50000007, "AP", "test", "ok", True),
    ("d11", 10000003, 50000008, "PA", "test", "ok", True),
    ("d12", 10000004, 50000009, "LL", "train", "ok", True),
    ("d13", 10000004, 50000010, "PA", "train", "ok", True),
    ("d14", 10000004, 50000010, "PA", None, "ok", True),
    ("d15", 10000005, 50000011, "PA", "test", "ok", False),
    ("d16", 10000005, 50525523, "PA", "test", "ok", True),
    ("d17", 10000005, 50000012, "PA", "test", "ok", True),
    ("d18", 10000005, 50000013, "PA", "test", "ok", True),
]

HEADER = "                                 FINAL REPORT\n"
REPORTS = {
    50000001: HEADER
    + """\
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___M with cough and fever  // ? pneumonia
 
 COMPARISON:  Chest radiograph from ___.
 
 FINDINGS: 
 
 There is a new opacity in the left lower lobe measuring approx. 2.5 cm,
 concerning for pneumonia. No pleural effusion or pneumothorax is seen. The
 cardiomediastinal silhouette is normal. Dr. ___ was notified of the findings
 at 10:15 a.m. on ___ by Dr. ___.
 
 IMPRESSION: 
 
 Left lower lobe pneumonia.
""",
    50000002: HEADER
    + """\
 EXAMINATION:  CHEST (PORTABLE AP)
 
 INDICATION:  ___F intubated, evaluate ET tube position
 
 IMPRESSION: 
 
 1. Endotracheal tube terminates 4.2 cm above the carina.  2. Small right
 pleural effusion, slightly increased vs. prior.
""",
    50000003: HEADER
    + """\
 CLINICAL HISTORY:  Shortness of breath.
 
 FINDINGS:  Heart size is normal
 Lungs are clear
 
 CONCLUSION:  No acute cardiopulmonary process.
""",
    50000004: HEADER + " FINDINGS:  Lungs are clear.\n \n IMPRESSION:  Normal chest.\n",
    50000005: HEADER + " FINDINGS:  Lungs are clear.\n \n IMPRESSION:  Normal chest.\n",
    # 50000006: report missing
    50000007: HEADER + " INDICATION:  ___ with chest pain\n \n NOTIFICATION:  The study was cancelled.\n",
    50000008: HEADER + " IMPRESSION:  Clear.\n",
    50000009: HEADER + " FINDINGS:  Lateral view only.\n",
    50000010: HEADER
    + " FINDNGS:  The lungs are clear.Heart size is normal.\n \n IMPRESSON:  Normal chest radiograph.\n",
    50525523: HEADER + " FINDINGS:  Lungs are clear.\n \n IMPRESSION:  Normal chest.\n",
    50000012: HEADER
    + """\
 COMPARISON:  ___.
 
 FINDINGS:  Compared to the prior radiograph from ___, the new right upper extremity
 PICC line terminates in the mid SVC. There is mild pulmonary vascular congestion.
""",
    50000013: HEADER + " FINDINGS:  ___.\n",
}

# CheXpert rows (every study but 50000010); -1 uncertain, None blank
CHEXPERT = {
    50000001: {"Atelectasis": 1.0, "Cardiomegaly": -1.0, "Pneumonia": 1.0, "Pleural Effusion": 0.0},
    50000002: {"Pleural Effusion": -1.0, "Support Devices": 1.0},
    50000003: {"No Finding": 1.0},
    50000004: {"No Finding": 1.0},
    50000005: {"No Finding": 1.0},
    50000006: {"Edema": 1.0},
    50000007: {},
    50000008: {"No Finding": 1.0},
    50000009: {"No Finding": 1.0},
    50525523: {"No Finding": 1.0},
    50000012: {"Support Devices": 1.0, "Edema": -1.0, "Consolidation": 0.0},
    50000013: {"No Finding": 1.0},
}

# dicom key, category, label_text, x, y, w, h, image_width, image_height, split
MS_CXR_ROWS = [
    ("d01", "Consolidation", "Left lower lobe opacity", 10, 20, 15, 10, W, H, "test"),
    ("d01", "Consolidation", "Left lower lobe opacity", 30, 20, 10, 10, W, H, "test"),
    ("d01", "Pleural Effusion", "Small right effusion", 0, 30, 20, 18, W, H, "test"),
    ("d05", "Pneumothorax", "Apical pneumothorax", 50, 0, 20, 10, W, H, "val"),
    ("d05", "Edema", "Mild edema", 5, 5, 0, 10, W, H, "val"),
    ("d03", "Nodule", "Small nodule", 1, 1, 2, 2, W, H, "train"),
    ("d08", "Cardiomegaly", "Enlarged heart", 1, 1, 5, 5, W, H, "train"),
    ("d12", "Atelectasis", "Basal atelectasis", 1, 1, 5, 5, W, H, "train"),
    ("d13", "Cardiomegaly", "Enlarged heart", 1, 1, 5, 5, 2 * W, 2 * H, "train"),
]

# RSNA: patientId -> list of boxes (empty: Target 0); p08's box leaves the 32x32 image, p09 has no file
RSNA_SIZE = 32
RSNA = {f"p{i:02d}-0004cfab-14fd-4e49-80ba": [] for i in range(10)}
RSNA_IDS = sorted(RSNA)
RSNA[RSNA_IDS[0]] = [(2.0, 3.0, 10.0, 12.0), (15.0, 3.0, 8.0, 9.0)]
RSNA[RSNA_IDS[8]] = [(20.0, 20.0, 20.0, 5.0)]


@dataclass(frozen=True)
class Fixture:
    jpg: Path
    reports: Path
    ms_cxr: Path
    edema: Path
    rsna: Path


def _jpeg_bytes(seed: int, size: tuple[int, int] = (W, H)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((size[1], size[0])) * 255).astype(np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def build_fixture(jpg: Path, reports: Path, ms_cxr: Path, edema: Path, rsna: Path) -> Fixture:
    """Write the fake MIMIC-CXR-JPG, reports, MS-CXR, edema and RSNA data at the given places."""
    meta, split = [], []
    for i, (key, subject, study, view, split_name, kind, in_meta) in enumerate(IMAGES):
        if in_meta:
            meta.append(
                {
                    "dicom_id": dicom(key),
                    "subject_id": subject,
                    "study_id": study,
                    "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
                    "ViewPosition": view,
                    "Rows": H,
                    "Columns": W,
                    "StudyDate": 21800506,
                }
            )
        if split_name is not None:
            split.append({"dicom_id": dicom(key), "study_id": study, "subject_id": subject, "split": split_name})
        path = jpg / layout.mimic_image_path(subject, study, dicom(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "ok":
            path.write_bytes(_jpeg_bytes(i))
        elif kind == "truncated":
            data = _jpeg_bytes(i)
            path.write_bytes(data[: int(len(data) * 0.7)])
    pd.DataFrame(meta).to_csv(jpg / layout.MIMIC_METADATA, index=False)
    pd.DataFrame(split).to_csv(jpg / layout.MIMIC_SPLIT, index=False)
    subjects = {study: subject for _, subject, study, *_ in IMAGES}
    chexpert = pd.DataFrame(
        [
            {"subject_id": subjects[s], "study_id": s, **{c: labels.get(c) for c in layout.CHEXPERT_LABELS}}
            for s, labels in CHEXPERT.items()
        ]
    )
    chexpert.to_csv(jpg / layout.MIMIC_CHEXPERT, index=False)

    for study, text in REPORTS.items():
        path = reports / layout.mimic_report_path(subjects[study], study)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    by_key = {key: (subject, study) for key, subject, study, *_ in IMAGES}
    ms_rows = []
    for key, category, text, x, y, w, h, iw, ih, split_name in MS_CXR_ROWS:
        subject, study = by_key[key]
        ms_rows.append(
            {
                "dicom_id": dicom(key),
                "category_name": category,
                "label_text": text,
                "path": layout.mimic_image_path(subject, study, dicom(key)).as_posix(),
                "x": x,
                "y": y,
                "w": w,
                "h": h,
                "image_width": iw,
                "image_height": ih,
                "split": split_name,
            }  # fmt: skip
        )
    ms_cxr.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(ms_rows).to_csv(ms_cxr, index=False)

    edema.parent.mkdir(parents=True, exist_ok=True)
    edema_rows = [("d01", 2), ("d03", 0), ("d02", 1), ("d14", 1), ("d08", 2), ("d09", 1)]
    table = [
        {"subject_id": by_key[k][0], "study_id": by_key[k][1], "dicom_id": dicom(k), "edema_severity": s}
        for k, s in edema_rows
    ]
    table.insert(3, {"subject_id": 10000009, "study_id": 50000099, "dicom_id": "ffffffff-unknown", "edema_severity": 3})
    pd.DataFrame(table).to_csv(edema, index=False)

    (rsna / layout.RSNA_IMAGES).mkdir(parents=True, exist_ok=True)
    rsna_rows = []
    for i, pid in enumerate(RSNA_IDS):
        boxes = RSNA[pid]
        for box in boxes or [None]:
            x, y, w, h = box if box else (None, None, None, None)
            rsna_rows.append({"patientId": pid, "x": x, "y": y, "width": w, "height": h, "Target": int(bool(boxes))})
        if i != 9:
            Image.fromarray(np.full((RSNA_SIZE, RSNA_SIZE), 10 * i, np.uint8)).save(
                rsna / layout.RSNA_IMAGES / f"{pid}.png"
            )
    pd.DataFrame(rsna_rows).to_csv(rsna / layout.RSNA_LABELS, index=False)
    return Fixture(jpg, reports, ms_cxr, edema, rsna)


@pytest.fixture()
def fake(tmp_path: Path) -> Fixture:
    return build_fixture(
        tmp_path / "mimic-cxr-jpg" / "2.0.0",
        tmp_path / "mimic-cxr-reports",
        tmp_path / "ms-cxr" / layout.MS_CXR_CSV,
        tmp_path / "edema" / layout.EDEMA_CSV,
        tmp_path / "rsna",
    )


def config_for(fake: Fixture, **overrides: object) -> PrepareConfig:
    base: dict[str, object] = {
        "mimic_jpg": str(fake.jpg),
        "mimic_reports": str(fake.reports),
        "ms_cxr": str(fake.ms_cxr),
        "edema": str(fake.edema),
        "rsna": str(fake.rsna),
        "splitter": "rules",
    }
    base.update(overrides)
    return PrepareConfig(**base)  # type: ignore[arg-type]


def run(fake: Fixture, out: Path, **overrides: object):  # noqa: ANN201
    prepare_dataset(config_for(fake, **overrides), out, progress=False, workers=2)
    return load_prepared(out)


def steps(ds, table: str) -> list[tuple[int, int, str]]:  # noqa: ANN001
    return [(c["kept"], c["removed"], c["reason"]) for c in ds.info["counts"] if c["table"] == table]


# ------------------------------------------------------------------------------------------------


def test_counts_at_every_step(fake: Fixture, tmp_path: Path) -> None:
    ds = run(fake, tmp_path / "out")
    assert steps(ds, "images") == [
        (18, 0, ""),
        (17, 1, "not_in_metadata"),
        (16, 1, "no_split_entry"),
        (15, 1, "missing_view_position"),
        (13, 2, "view_not_selected"),
        (12, 1, "image_file_missing"),
        (11, 1, "image_unreadable"),
        (11, 0, "image_degenerate_geometry"),
        (6, 0, ""),  # frontal images of the kept studies
    ]
    assert steps(ds, "studies") == [
        (10, 0, ""),
        (9, 1, "report_missing"),
        (9, 0, "report_unreadable"),
        (8, 1, "custom_rule_study"),
        (7, 1, "no_findings_or_impression"),
        (7, 0, "selected_section_missing"),
        (6, 1, "no_sentences"),
        (5, 1, "too_few_tokens"),
        (3, 0, ""),  # train
        (1, 0, ""),  # validate
        (1, 0, ""),  # test
    ]
    assert steps(ds, "labels") == [(12, 0, ""), (4, 1, "no_chexpert_row")]
    assert ds.info["rows"] == {
        "manifest": 5,
        "images": 6,
        "labels": 4,
        "ms_cxr": 3,
        "edema": 3,
        "rsna": 8,
        "skipped": 24,
    }
    assert ds.splitter == "rules-v1"
    table = format_counts(ds.info["counts"])
    assert "view_not_selected" in table and "ViewPosition in PA,AP" in table


def test_skipped_lists_every_item_with_its_reason(fake: Fixture, tmp_path: Path) -> None:
    ds = run(fake, tmp_path / "out")
    skipped = ds.skipped
    images = skipped[skipped["table"] == "images"]
    assert dict(zip(images["item"], images["reason"])) == {
        dicom("d15"): "not_in_metadata",
        dicom("d14"): "no_split_entry",
        dicom("d06"): "missing_view_position",
        dicom("d02"): "view_not_selected",
        dicom("d12"): "view_not_selected",
        dicom("d08"): "image_file_missing",
        dicom("d07"): "image_unreadable",
    }
    assert images.set_index("item").loc[dicom("d12"), "detail"] == "ViewPosition=LL"
    assert "truncated" in images.set_index("item").loc[dicom("d07"), "detail"]
    studies = skipped[skipped["table"] == "studies"]
    assert dict(zip(studies["study_id"], studies["reason"])) == {
        50000006: "report_missing",
        50525523: "custom_rule_study",
        50000007: "no_findings_or_impression",
        50000013: "no_sentences",
        50000008: "too_few_tokens",
    }
    assert studies.set_index("study_id").loc[50000008, "detail"] == "files/p10/p10000003/s50000008.txt: 2 < 3 tokens"
    assert studies["subject_id"].tolist() == [10000003, 10000005, 10000003, 10000005, 10000003]
    assert ds.info["skipped_by_reason"]["images"]["view_not_selected"] == 2


def test_manifest_contents_and_official_splits(fake: Fixture, tmp_path: Path) -> None:
    ds = run(fake, tmp_path / "out")
    m = ds.manifest.set_index("study_id")
    assert m.index.tolist() == [50000001, 50000002, 50000003, 50000010, 50000012]
    assert m["split"].to_dict() == {
        50000001: "train",
        50000002: "train",
        50000003: "validate",
        50000010: "train",
        50000012: "test",
    }
    s1 = m.loc[50000001]
    assert s1["subject_id"] == 10000001
    assert s1["dicom_ids"] == [dicom("d01")]  # the lateral d02 is not there
    assert s1["image_paths"] == [f"files/p10/p10000001/s50000001/{dicom('d01')}.jpg"]
    assert s1["view_positions"] == ["PA"]
    assert s1["report_path"] == "files/p10/p10000001/s50000001.txt"
    assert s1["text_sections"] == ["findings", "impression"]
    assert s1["sentences"] == [
        "There is a new opacity in the left lower lobe measuring approx. 2.5 cm, concerning for pneumonia.",
        "No pleural effusion or pneumothorax is seen.",
        "The cardiomediastinal silhouette is normal.",
        "Dr. ___ was notified of the findings at 10:15 a.m. on ___ by Dr. ___.",
        "Left lower lobe pneumonia.",
    ]
    assert s1["text"] == " ".join(s1["sentences"])
    assert s1["n_sentences"] == 5
    assert s1["n_tokens"] == 19 + 8 + 6 + 16 + 5  # counted by hand
    assert s1["impression"] == "Left lower lobe pneumonia."
    assert s1["findings"].startswith("There is a new opacity") and "\n" not in s1["findings"]
    s2 = m.loc[50000002]
    assert s2["dicom_ids"] == [dicom("d03"), dicom("d04")] and s2["view_positions"] == ["AP", "AP"]
    assert s2["findings"] == "" and s2["text_sections"] == ["impression"]
    assert s2["sentences"] == [
        "1. Endotracheal tube terminates 4.2 cm above the carina.",
        "2. Small right pleural effusion, slightly increased vs. prior.",
    ]
    assert m.loc[50000003, "sentences"] == [
        "Heart size is normal",
        "Lungs are clear",
        "No acute cardiopulmonary process.",
    ]
    assert m.loc[50000010, "sentences"] == ["The lungs are clear.", "Heart size is normal.", "Normal chest radiograph."]
    assert m.loc[50000012, "sentences"] == [
        "Compared to the prior radiograph from ___, the new right upper extremity PICC line terminates in the mid SVC.",
        "There is mild pulmonary vascular congestion.",
    ]
    assert m.loc[50000003, "dicom_ids"] == [dicom("d05")]  # d06 without ViewPosition skipped
    # images.csv: the kept images, with sizes from decoding, split carried over
    images = ds.images.set_index("dicom_id")
    assert images.index.tolist() == [dicom(k) for k in ("d01", "d03", "d04", "d05", "d13", "d17")]
    assert (images["height"] == H).all() and (images["width"] == W).all()
    assert images.loc[dicom("d05"), "split"] == "validate"
    assert ds.study_image_paths(50000002) == [fake.jpg / p for p in s2["image_paths"]]
    assert all(p.is_file() for p in ds.study_image_paths(50000002))
    assert ds.split("validate")["study_id"].tolist() == [50000003]
    # the manifest file itself holds JSON lists
    raw = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert json.loads(raw.loc[0, "dicom_ids"]) == [dicom("d01")]


@pytest.mark.parametrize(
    ("policy", "cardiomegaly", "effusion_s2", "edema_s12"),
    [("ignore", np.nan, np.nan, np.nan), ("ones", 1.0, 1.0, 1.0), ("zeros", 0.0, 0.0, 0.0)],
)
def test_uncertainty_policies(
    fake: Fixture, tmp_path: Path, policy: str, cardiomegaly: float, effusion_s2: float, edema_s12: float
) -> None:
    ds = run(fake, tmp_path / "out", uncertainty=policy, ms_cxr=None, edema=None, rsna=None)
    labels = ds.labels.set_index("study_id")
    assert labels.index.tolist() == [50000001, 50000002, 50000003, 50000012]
    np.testing.assert_equal(labels.loc[50000001, "Cardiomegaly"], cardiomegaly)
    np.testing.assert_equal(labels.loc[50000002, "Pleural Effusion"], effusion_s2)
    np.testing.assert_equal(labels.loc[50000012, "Edema"], edema_s12)
    # positives, negatives and blanks are untouched by every policy
    assert labels.loc[50000001, "Atelectasis"] == 1.0 and labels.loc[50000001, "Pleural Effusion"] == 0.0
    assert np.isnan(labels.loc[50000001, "Edema"]) and np.isnan(labels.loc[50000003, "Fracture"])
    assert labels.loc[50000012, "split"] == "test"
    assert ds.info["uncertainty_policy"] == policy
    assert set(
        np.unique(
            labels[list(layout.CHEXPERT_LABELS)].to_numpy()[~np.isnan(labels[list(layout.CHEXPERT_LABELS)].to_numpy())]
        )
    ) <= {0.0, 1.0}


def test_ms_cxr_phrases(fake: Fixture, tmp_path: Path) -> None:
    ds = run(fake, tmp_path / "out")
    ms = ds.ms_cxr
    assert ms["label_text"].tolist() == ["Left lower lobe opacity", "Small right effusion", "Basal atelectasis"]
    assert ms["phrase_id"].tolist() == [0, 1, 2]
    first = ms.iloc[0]
    assert first["boxes"] == [[10.0, 20.0, 15.0, 10.0], [30.0, 20.0, 10.0, 10.0]] and first["n_boxes"] == 2
    assert (first["dicom_id"], first["subject_id"], first["study_id"]) == (dicom("d01"), 10000001, 50000001)
    assert (first["category_name"], first["split"], first["mimic_split"]) == ("Consolidation", "test", "train")
    assert (first["image_width"], first["image_height"]) == (W, H)
    assert ds.image_path(first["path"]).is_file()
    assert ms["in_manifest"].tolist() == [True, True, False]  # d12 is a lateral view
    skipped = ds.skipped[ds.skipped["table"] == "ms_cxr"]
    assert dict(zip(skipped["item"], skipped["reason"])) == {
        f"{dicom('d03')} | Small nodule": "unknown_category",
        f"{dicom('d08')} | Enlarged heart": "image_file_missing",
        f"{dicom('d13')} | Enlarged heart": "image_size_mismatch",
        f"{dicom('d05')} | Mild edema": "box_nonpositive_size",
        f"{dicom('d05')} | Apical pneumothorax": "box_outside_image",
    }
    assert skipped.set_index("reason").loc["box_outside_image", "detail"] == "line(s) 5"
    assert steps(ds, "ms_cxr") == [
        (9, 0, ""),
        (8, 0, ""),
        (8, 0, "not_in_metadata"),
        (7, 1, "unknown_category"),
        (6, 1, "image_file_missing"),
        (6, 0, "image_unreadable"),
        (6, 0, "image_degenerate_geometry"),
        (5, 1, "image_size_mismatch"),
        (4, 1, "box_nonpositive_size"),
        (3, 1, "box_outside_image"),
        (2, 0, ""),
    ]


def test_edema_and_rsna_tables(fake: Fixture, tmp_path: Path) -> None:
    ds = run(fake, tmp_path / "out")
    edema = ds.edema.set_index("dicom_id")
    assert edema.index.tolist() == [dicom("d01"), dicom("d03"), dicom("d09")]
    assert edema["edema_severity"].tolist() == [2, 0, 1]
    assert edema["split"].tolist() == ["train", "train", "test"]
    assert edema["in_manifest"].tolist() == [True, True, False]
    assert edema.loc[dicom("d03"), "path"] == f"files/p10/p10000001/s50000002/{dicom('d03')}.jpg"
    skipped = ds.skipped[ds.skipped["table"] == "edema"]
    assert dict(zip(skipped["item"], skipped["reason"])) == {
        "ffffffff-unknown": "not_in_metadata",
        dicom("d02"): "view_not_selected",
        dicom("d14"): "no_split_entry",
        dicom("d08"): "image_file_missing",
    }

    rsna = ds.rsna.set_index("patientId")
    assert rsna.index.tolist() == RSNA_IDS[:8]
    assert rsna.loc[RSNA_IDS[0], "boxes"] == [[2.0, 3.0, 10.0, 12.0], [15.0, 3.0, 8.0, 9.0]]
    assert rsna.loc[RSNA_IDS[0], "target"] == 1 and rsna.loc[RSNA_IDS[1], "target"] == 0
    assert rsna.loc[RSNA_IDS[1], "boxes"] == [] and rsna["n_boxes"].tolist() == [2] + [0] * 7
    assert (rsna["height"] == RSNA_SIZE).all()
    assert ds.rsna_image_path(rsna.loc[RSNA_IDS[3], "path"]) == fake.rsna / layout.RSNA_IMAGES / f"{RSNA_IDS[3]}.png"
    expected_split = rsna_split(RSNA_IDS, seed=0, fractions=(0.6, 0.2, 0.2))
    assert rsna["split"].to_dict() == {p: expected_split[p] for p in RSNA_IDS[:8]}
    skipped = ds.skipped[ds.skipped["table"] == "rsna"]
    assert dict(zip(skipped["item"], skipped["reason"])) == {
        RSNA_IDS[9]: "image_file_missing",
        RSNA_IDS[8]: "box_outside_image",
    }
    assert ds.info["rsna_split"] == {"seed": 0, "fractions": [0.6, 0.2, 0.2]}


def test_rsna_split_is_seeded_patient_level_and_matches_lovt_sizes() -> None:
    ids = [f"patient-{i:05d}" for i in range(26684)]
    split = rsna_split(ids, seed=0, fractions=(0.6, 0.2, 0.2))
    sizes = pd.Series(split).value_counts().to_dict()
    assert sizes == {"train": 16010, "validate": 5337, "test": 5337}
    assert split == rsna_split(list(reversed(ids)) + ids[:10], seed=0, fractions=(0.6, 0.2, 0.2))
    assert split != rsna_split(ids, seed=1, fractions=(0.6, 0.2, 0.2))


@pytest.mark.parametrize(
    ("rule", "kept", "without_section"),
    [
        ("findings+impression", [50000001, 50000002, 50000003, 50000010, 50000012], []),
        # 50000012 and 50000013 have findings only; 50000002 and 50000008 impression only
        ("impression", [50000001, 50000002, 50000003, 50000010], [50000012, 50000013]),
        ("findings", [50000001, 50000003, 50000010, 50000012], [50000002, 50000008]),
        ("findings_or_impression", [50000001, 50000002, 50000003, 50000010, 50000012], []),
        ("longest", [50000001, 50000002, 50000003, 50000010, 50000012], []),
    ],
)
def test_text_rules(fake: Fixture, tmp_path: Path, rule: str, kept: list[int], without_section: list[int]) -> None:
    ds = run(fake, tmp_path / "out", text=rule, ms_cxr=None, edema=None, rsna=None)
    assert ds.manifest["study_id"].tolist() == kept
    missing = ds.skipped[ds.skipped["reason"] == "selected_section_missing"]
    assert missing["study_id"].tolist() == without_section
    s1 = ds.manifest.set_index("study_id").loc[50000001]
    expected_sections = {
        "findings+impression": ["findings", "impression"],
        "impression": ["impression"],
        "findings": ["findings"],
        "findings_or_impression": ["findings"],
        "longest": ["findings"],
    }[rule]
    assert s1["text_sections"] == expected_sections
    assert ds.info["config"]["text"] == rule


def test_image_check_modes_and_limit(fake: Fixture, tmp_path: Path) -> None:
    header = run(fake, tmp_path / "header", check_images="header", ms_cxr=None, edema=None, rsna=None)
    # A truncated JPEG passes a header check, so study 50000004 is kept.
    assert 50000004 in header.manifest["study_id"].tolist()
    assert [r for *_, r in steps(header, "images")].count("image_unreadable") == 1
    none = run(fake, tmp_path / "none", check_images="none", ms_cxr=None, edema=None, rsna=None)
    # No file access: the missing image (study 50000005) is kept, sizes come from Rows/Columns.
    assert {50000004, 50000005} <= set(none.manifest["study_id"])
    assert "image_file_missing" not in [r for *_, r in steps(none, "images")]
    assert (none.images["height"] == H).all()
    limited = run(fake, tmp_path / "limit", limit=2, ms_cxr=None, edema=None, rsna=None)
    assert limited.manifest["study_id"].tolist() == [50000001, 50000002]
    assert (3, 10, "beyond_limit") in steps(limited, "images")
    assert limited.info["config"]["limit"] == 2


def test_views_option(fake: Fixture, tmp_path: Path) -> None:
    ds = run(fake, tmp_path / "out", views=("PA",), ms_cxr=None, edema=None, rsna=None)
    assert 50000002 not in ds.manifest["study_id"].tolist()  # AP only
    assert set(ds.images["view_position"]) == {"PA"}


def test_plain_csv_files_are_accepted(fake: Fixture, tmp_path: Path) -> None:
    for name in (layout.MIMIC_METADATA, layout.MIMIC_SPLIT, layout.MIMIC_CHEXPERT):
        gz = fake.jpg / name
        pd.read_csv(gz).to_csv(fake.jpg / name.removesuffix(".gz"), index=False)
        gz.unlink()
    ds = run(fake, tmp_path / "out", ms_cxr=None, edema=None, rsna=None)
    assert len(ds.manifest) == 5


# ------------------------------------------------------------------------------------------------
# Errors name the file, line, column and value
# ------------------------------------------------------------------------------------------------


def test_missing_column_is_named(fake: Fixture, tmp_path: Path) -> None:
    meta = pd.read_csv(fake.jpg / layout.MIMIC_METADATA).drop(columns=["ViewPosition"])
    meta.to_csv(fake.jpg / layout.MIMIC_METADATA, index=False)
    with pytest.raises(
        ValueError, match=r"mimic-cxr-2\.0\.0-metadata\.csv\.gz: missing required column 'ViewPosition'"
    ):
        prepare_dataset(config_for(fake), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_bad_label_value_is_named(fake: Fixture, tmp_path: Path) -> None:
    labels = pd.read_csv(fake.jpg / layout.MIMIC_CHEXPERT, dtype=str, keep_default_na=False)
    labels.loc[2, "Edema"] = "2.0"
    labels.to_csv(fake.jpg / layout.MIMIC_CHEXPERT, index=False)
    with pytest.raises(
        ValueError,
        match=r"chexpert\.csv\.gz: line 4, column 'Edema': invalid value '2\.0' \(expected 1, 0, -1 or blank\)",
    ):
        prepare_dataset(config_for(fake), tmp_path / "out", progress=False)


def test_bad_split_and_ids_are_named(fake: Fixture, tmp_path: Path) -> None:
    split = pd.read_csv(fake.jpg / layout.MIMIC_SPLIT)
    split.loc[0, "split"] = "training"
    split.to_csv(fake.jpg / layout.MIMIC_SPLIT, index=False)
    with pytest.raises(ValueError, match=r"split\.csv\.gz: line 2, column 'split': invalid value 'training'"):
        prepare_dataset(config_for(fake), tmp_path / "out", progress=False)
    meta = pd.read_csv(fake.jpg / layout.MIMIC_METADATA, dtype=str)
    meta.loc[4, "study_id"] = "s50000003"
    meta.to_csv(fake.jpg / layout.MIMIC_METADATA, index=False)
    with pytest.raises(
        ValueError,
        match=r"metadata\.csv\.gz: line 6, column 'study_id': invalid value 's50000003' \(expected an integer\)",
    ):
        prepare_dataset(config_for(fake), tmp_path / "out", progress=False)


def test_bad_optional_tables_are_named(fake: Fixture, tmp_path: Path) -> None:
    edema = pd.read_csv(fake.edema)
    edema.loc[1, "edema_severity"] = 5
    edema.to_csv(fake.edema, index=False)
    with pytest.raises(
        ValueError, match=r"line 3, column 'edema_severity': invalid value '5' \(expected 0, 1, 2 or 3\)"
    ):
        prepare_dataset(config_for(fake, ms_cxr=None, rsna=None), tmp_path / "a", progress=False)
    ms = pd.read_csv(fake.ms_cxr).drop(columns=["label_text"])
    ms.to_csv(fake.ms_cxr, index=False)
    with pytest.raises(ValueError, match=r"MS_CXR_Local_Alignment_v1\.1\.0\.csv: missing required column 'label_text'"):
        prepare_dataset(config_for(fake, edema=None, rsna=None), tmp_path / "b", progress=False)
    labels = pd.read_csv(fake.rsna / layout.RSNA_LABELS)
    labels.loc[0, "Target"] = 2
    labels.to_csv(fake.rsna / layout.RSNA_LABELS, index=False)
    with pytest.raises(
        ValueError, match=r"stage_2_train_labels\.csv: line 2, column 'Target': invalid value '2' \(expected 0 or 1\)"
    ):
        prepare_dataset(config_for(fake, edema=None, ms_cxr=None), tmp_path / "c", progress=False)


def test_ms_cxr_path_must_match_dicom(fake: Fixture, tmp_path: Path) -> None:
    ms = pd.read_csv(fake.ms_cxr)
    ms.loc[3:4, "path"] = "files/p10/p10000002/s50000003/wrong.jpg"
    ms.to_csv(fake.ms_cxr, index=False)
    with pytest.raises(
        ValueError, match=r"line 5, column 'path': invalid value 'files/p10/p10000002/s50000003/wrong\.jpg'"
    ):
        prepare_dataset(config_for(fake, edema=None, rsna=None), tmp_path / "out", progress=False)


def test_dicom_rsna_images_need_pydicom(fake: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)
    (fake.rsna / layout.RSNA_IMAGES / f"{RSNA_IDS[9]}.dcm").write_bytes(b"DICM")
    with pytest.raises(ImportError, match="pip install pydicom"):
        prepare_dataset(config_for(fake, ms_cxr=None, edema=None), tmp_path / "out", progress=False)
    # without image checks the .dcm path is recorded as is (reading it later needs pydicom)
    ds = run(fake, tmp_path / "none", check_images="none", ms_cxr=None, edema=None)
    assert ds.rsna.set_index("patientId").loc[RSNA_IDS[9], "path"] == f"{layout.RSNA_IMAGES}/{RSNA_IDS[9]}.dcm"
    with pytest.raises(ImportError, match="pip install pydicom"):
        load_image(fake.rsna / layout.RSNA_IMAGES / f"{RSNA_IDS[9]}.dcm")


def test_output_folder_rules_and_load_errors(fake: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(fake, out, ms_cxr=None, edema=None, rsna=None)
    with pytest.raises(ValueError, match="not empty; pass --overwrite"):
        prepare_dataset(config_for(fake), out, progress=False)
    prepare_dataset(
        config_for(fake, ms_cxr=None, edema=None, rsna=None, text="impression"), out, overwrite=True, progress=False
    )
    assert load_prepared(out).info["config"]["text"] == "impression"
    moved = load_prepared(out, mimic_jpg_root=tmp_path / "moved")
    assert moved.image_path("files/x.jpg") == tmp_path / "moved" / "files/x.jpg"
    with pytest.raises(ValueError, match="has no RSNA table"):
        moved.rsna_image_path("a.png")
    info = json.loads((out / "dataset.json").read_text())
    (out / "dataset.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        load_prepared(out)
    (out / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="is not a prepared dataset: no dataset.json"):
        load_prepared(fake.jpg)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prepared(tmp_path / "nowhere")
    (out / "labels.csv").unlink()
    with pytest.raises(ValueError, match="labels.csv is missing"):
        load_prepared(out)
    with pytest.raises(FileNotFoundError, match="has no files/ subfolder"):
        prepare_dataset(config_for(fake, mimic_reports=str(fake.jpg.parent)), tmp_path / "x", progress=False)


def test_config_validation_and_round_trip(fake: Fixture) -> None:
    with pytest.raises(ValueError, match="PrepareConfig.text must be one of"):
        config_for(fake, text="everything")
    with pytest.raises(ValueError, match="PrepareConfig.uncertainty must be one of"):
        config_for(fake, uncertainty="u-ones")
    with pytest.raises(ValueError, match="rsna_split_fractions"):
        config_for(fake, rsna_split_fractions=(0.5, 0.2, 0.2))
    config = config_for(fake, views=("PA",), limit=3)
    assert config_from_dict(PrepareConfig, config_to_dict(config)) == config


# ------------------------------------------------------------------------------------------------
# CLI and SynthCXR layout
# ------------------------------------------------------------------------------------------------


def test_cli_prepare(
    fake: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    argv = ["prepare", "--mimic-jpg", str(fake.jpg), "--mimic-reports", str(fake.reports), "--ms-cxr", str(fake.ms_cxr)]
    argv += ["--out", str(out), "--uncertainty", "zeros", "--splitter", "rules", "--no-progress", "--workers", "1"]
    with caplog.at_level(logging.INFO, logger="localign.data.prepare"):
        assert cli.main(argv) == 0
    assert "prepared dataset:" in capsys.readouterr().out
    logged = caplog.text
    assert "  at least min_tokens tokens" in logged and "too_few_tokens" in logged
    ds = load_prepared(out)
    assert len(ds.manifest) == 5 and len(ds.ms_cxr) == 3 and ds.edema is None and ds.rsna is None
    assert ds.info["inputs"]["mimic_jpg"] == str(fake.jpg.resolve())
    assert ds.info["config"]["uncertainty"] == "zeros"
    assert cli.main(argv) == 2  # the folder is not empty now
    assert "pass --overwrite" in capsys.readouterr().err
    assert cli.main(["prepare", "--out", str(tmp_path / "y")]) == 2
    assert "--mimic-jpg and --mimic-reports are required" in capsys.readouterr().err


def test_cli_prepare_synthcxr_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "synthcxr-demo"
    sub = {name: root / rel for name, rel in layout.SYNTHCXR_SUBDIRS.items()}
    build_fixture(
        sub["mimic_jpg"],
        sub["mimic_reports"],
        sub["ms_cxr"] / layout.MS_CXR_CSV,
        sub["edema"] / layout.EDEMA_CSV,
        sub["rsna"],
    )
    sub["synthcxr"].mkdir(parents=True)
    pd.DataFrame(
        {
            "study_id": [50000001, 50000001, 50000001, 50000008],
            "sentence": [
                "Left lower lobe pneumonia.",
                "No pleural effusion or pneumothorax is seen.",
                "Not a sentence of it.",
                "Clear.",
            ],
            "mask": ["masks/a.png", "", "", ""],
        }
    ).to_csv(sub["synthcxr"] / layout.SYNTHCXR_SENTENCES, index=False)
    pd.DataFrame({"finding_id": [0], "kind": ["consolidation"]}).to_csv(
        sub["synthcxr"] / layout.SYNTHCXR_FINDINGS, index=False
    )
    (sub["synthcxr"] / layout.SYNTHCXR_PARAMS).write_text(json.dumps({"seed": 7}))
    assert cli.main(["prepare", "--synthcxr", str(root), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    ds = load_prepared(tmp_path / "out")
    assert ds.info["rows"] == {
        "manifest": 5,
        "images": 6,
        "labels": 4,
        "ms_cxr": 3,
        "edema": 3,
        "rsna": 8,
        "skipped": 24,
    }
    assert ds.sentences is not None and ds.sentences["sentence"].iloc[0] == "Left lower lobe pneumonia."
    assert ds.synth_findings is not None and ds.synth_findings["kind"].tolist() == ["consolidation"]
    assert ds.info["synthcxr_sentence_match"] == {
        "column": "sentence",
        "rows_of_kept_studies": 3,
        "matching_a_manifest_sentence": 2,
    }
    assert ds.info["synthcxr_generator"] == {"seed": 7}
    assert ds.synthcxr_root == sub["synthcxr"].resolve()
    config = synthcxr_config(root, text="impression")
    assert config.mimic_jpg == str(sub["mimic_jpg"]) and config.text == "impression"
    capsys.readouterr()
    assert cli.main(["prepare", "--synthcxr", str(root), "--mimic-jpg", "x", "--out", str(tmp_path / "z")]) == 2
    assert "not both" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Image reading
# ------------------------------------------------------------------------------------------------


def test_load_image_modes_and_errors(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png"), gray)
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red -> luminance 76
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = load_image(tmp_path / "rgb.png")
    assert out.dtype == np.uint8 and out.shape == (3, 4) and (out == 76).all()
    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000 + 500).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    scaled = load_image(tmp_path / "deep.png")
    assert scaled.dtype == np.uint8 and scaled[0, 0] == 0 and scaled[-1, -1] == 255
    assert (np.diff(scaled.ravel().astype(int)) > 0).all()
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match=r"cannot read image .*bad\.jpg"):
        load_image(tmp_path / "bad.jpg")
    with pytest.raises(ImageReadError, match=r"missing\.jpg: file not found"):
        load_image(tmp_path / "missing.jpg")
    data = _jpeg_bytes(0)
    (tmp_path / "cut.jpg").write_bytes(data[: int(len(data) * 0.7)])
    assert read_image_size(tmp_path / "cut.jpg", "header") == (H, W)
    with pytest.raises(ImageReadError, match="truncated"):
        read_image_size(tmp_path / "cut.jpg", "decode")
    assert read_image_size(tmp_path / "missing.jpg", "none") is None
    with pytest.raises(ValueError, match="image check mode must be one of"):
        read_image_size(tmp_path / "gray.png", "full")


def test_uncertainty_policy_function() -> None:
    labels = pd.DataFrame({c: [1.0, 0.0, -1.0, np.nan] for c in layout.CHEXPERT_LABELS})
    np.testing.assert_array_equal(apply_uncertainty_policy(labels, "ones")["Edema"], [1.0, 0.0, 1.0, np.nan])
    np.testing.assert_array_equal(apply_uncertainty_policy(labels, "zeros")["Edema"], [1.0, 0.0, 0.0, np.nan])
    np.testing.assert_array_equal(apply_uncertainty_policy(labels, "ignore")["Edema"], [1.0, 0.0, np.nan, np.nan])
    assert (labels["Edema"] == [1.0, 0.0, -1.0, np.nan]).sum() == 3  # input unchanged
    with pytest.raises(ValueError, match="uncertainty policy must be one of"):
        apply_uncertainty_policy(labels, "u-ones")
