"""File names and folder layout of the real datasets, shared by the SynthCXR writer and the loaders.

The loaders are written against the documented *real* formats (PhysioNet MIMIC-CXR-JPG 2.0.0,
MIMIC-CXR 2.0.0 reports, MS-CXR 1.1.0, the RSNA Pneumonia challenge, CheXpert-style labels).
SynthCXR writes exactly these names, so every loader code path runs on synthetic data in the tests.

Real layouts (after download/unzip)::

    <mimic-cxr-jpg root>/                      e.g. physionet.org/files/mimic-cxr-jpg/2.0.0
        files/p10/p10000032/s50414267/<dicom_id>.jpg
        mimic-cxr-2.0.0-metadata.csv.gz        dicom_id, subject_id, study_id, ViewPosition, Rows, Columns, ...
        mimic-cxr-2.0.0-split.csv.gz           dicom_id, study_id, subject_id, split (train/validate/test)
        mimic-cxr-2.0.0-chexpert.csv.gz        subject_id, study_id + 14 CheXpert columns (1.0/0.0/-1.0/blank)
    <mimic-cxr reports root>/                  mimic-cxr-reports.zip unzipped
        files/p10/p10000032/s50414267.txt
    MS_CXR_Local_Alignment_v1.1.0.csv          dicom_id, category_name, label_text, path, x, y, w, h,
                                               image_width, image_height, split
    stage_2_train_labels.csv                   patientId, x, y, width, height, Target
    stage_2_train_images/<patientId>.dcm       (SynthCXR writes .png; both are read)

A SynthCXR root holds all of them in one folder (see :data:`SYNTHCXR_SUBDIRS`).
"""

from __future__ import annotations

from pathlib import Path

# --- MIMIC-CXR-JPG 2.0.0 -------------------------------------------------------------------------
MIMIC_METADATA = "mimic-cxr-2.0.0-metadata.csv.gz"
MIMIC_SPLIT = "mimic-cxr-2.0.0-split.csv.gz"
MIMIC_CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv.gz"
MIMIC_SPLITS = ("train", "validate", "test")
FRONTAL_VIEWS = ("PA", "AP")

# The 14 CheXpert observations, in the column order of mimic-cxr-2.0.0-chexpert.csv.gz.
CHEXPERT_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
# Liao et al.'s Pathology9: the labels with >= ~100 test images on MIMIC-CXR.
PATHOLOGY9 = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Lung Opacity",
    "Pleural Effusion",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

# --- MS-CXR 1.1.0 ----------------------------------------------------------------------------------
MS_CXR_CSV = "MS_CXR_Local_Alignment_v1.1.0.csv"
MS_CXR_COLUMNS = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height", "split")
MS_CXR_CATEGORIES = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Lung Opacity",
    "Pleural Effusion",
    "Pneumonia",
    "Pneumothorax",
)

# --- Pulmonary edema severity (Liao et al.'s EdemaSeverity) ---------------------------------------
EDEMA_CSV = "mimic_cxr_edema_severity.csv"
EDEMA_COLUMNS = ("subject_id", "study_id", "dicom_id", "edema_severity")

# --- RSNA Pneumonia Detection Challenge -----------------------------------------------------------
RSNA_LABELS = "stage_2_train_labels.csv"
RSNA_IMAGES = "stage_2_train_images"
RSNA_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")

# --- SynthCXR root ---------------------------------------------------------------------------------
SYNTHCXR_SUBDIRS = {
    "mimic_jpg": Path("mimic-cxr-jpg") / "2.0.0",
    "mimic_reports": Path("mimic-cxr-reports"),
    "ms_cxr": Path("ms-cxr"),
    "edema": Path("edema-severity"),
    "rsna": Path("rsna"),
    # only SynthCXR can have these: per-finding masks and the sentence -> finding -> mask table
    "synthcxr": Path("synthcxr"),
}
SYNTHCXR_SENTENCES = "sentences.csv"
SYNTHCXR_FINDINGS = "findings.csv"
SYNTHCXR_PARAMS = "generator.json"


def mimic_study_dir(subject_id: int, study_id: int) -> Path:
    """``files/pXX/pXXXXXXXX/sXXXXXXXX`` (relative), as in MIMIC-CXR-JPG."""
    p = f"p{int(subject_id):08d}"
    return Path("files") / p[:3] / p / f"s{int(study_id):08d}"


def mimic_image_path(subject_id: int, study_id: int, dicom_id: str) -> Path:
    """Relative image path inside a MIMIC-CXR-JPG root."""
    return mimic_study_dir(subject_id, study_id) / f"{dicom_id}.jpg"


def mimic_report_path(subject_id: int, study_id: int) -> Path:
    """Relative report path inside a MIMIC-CXR reports root: ``files/pXX/pXXXXXXXX/sXXXXXXXX.txt``."""
    d = mimic_study_dir(subject_id, study_id)
    return d.parent / f"{d.name}.txt"
