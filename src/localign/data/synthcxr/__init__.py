"""SynthCXR: synthetic chest radiographs with paired reports, in the real dataset formats.

SynthCXR implements the generative model conjectured by Liao et al. (MICCAI 2021, Section 3): each
image region has a hidden disease state H_n (:mod:`.findings`); the pixels come from H_n and an
acquisition nuisance V^I - body habitus, positioning, PA vs. portable AP, exposure, noise
(:mod:`.anatomy`, :mod:`.render`); each report sentence picks a region and describes its state in
a radiologist's style V^R (:mod:`.reports`). Unlike any real dataset it knows, for every sentence,
which pixels the sentence talks about. :mod:`.writer` writes everything in the formats of
MIMIC-CXR-JPG 2.0.0, MIMIC-CXR 2.0.0 reports, MS-CXR 1.1.0, the MIMIC-CXR edema-severity labels and
the RSNA pneumonia challenge (:mod:`localign.data.layout`), plus SynthCXR-only ground truth:
per-finding masks and a sentence -> finding -> mask table.

Laterality convention (important for augmentation)
--------------------------------------------------
Frontal (PA/AP) images are displayed in the radiological convention, as if facing the patient:
the patient's RIGHT side appears on the viewer's LEFT (small column indices) and the heart bulges
to the viewer's right. A finding reported as "right" has its mask on the left half of the image,
and an "L" marker is burned in on the patient's left (viewer's right). A horizontal flip therefore
makes the report WRONG: flip-based augmentation must also swap "left" and "right" in the text, or
not be used.

Files written under a root (see :func:`generate`)::

    mimic-cxr-jpg/2.0.0/files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg   8-bit grayscale
    mimic-cxr-jpg/2.0.0/mimic-cxr-2.0.0-{metadata,split,chexpert}.csv.gz
    mimic-cxr-reports/files/pXX/pXXXXXXXX/sXXXXXXXX.txt
    ms-cxr/MS_CXR_Local_Alignment_v1.1.0.csv
    edema-severity/mimic_cxr_edema_severity.csv
    rsna/stage_2_train_labels.csv, rsna/stage_2_train_images/<patientId>.png
    synthcxr/masks/<dicom_id>_<k>.png          mask of finding k of the study (frontal images)
    synthcxr/masks/<dicom_id>_anatomy.png      anatomy label map (0 background, 1 soft tissue,
                                               2 right lung, 3 left lung, 4 heart,
                                               5 mediastinum, 6 abdomen)
    synthcxr/findings.csv                      one row per (frontal image, finding)
    synthcxr/sentences.csv                     one row per (report sentence, frontal image)
    synthcxr/generator.json                    resolved config, version, counts, timing;
                                               "complete": true is written last

``sentences.csv`` lists the FINDINGS and IMPRESSION sentences (section "" for the body of the
few reports with neither) as written, list numbers included ("1. Small left pleural effusion.");
``mask`` is the finding mask of that image, empty for sentences without a finding (normal
statements name their anatomy ``region`` instead; negations and non-visual sentences have
neither). The CheXpert labels are derived from these sentences with the CheXpert labeler's rules.

Units: one patient unit is 40 cm (a detector width); nodule sizes, tube positions and pneumothorax
rims stated in the reports in cm agree with the drawing.
"""

from localign.data.synthcxr.config import GENERATOR_VERSION, BackgroundRates, SynthCXRConfig, config_hash
from localign.data.synthcxr.writer import demo_dir, ensure_demo_dataset, generate, is_complete, load_config, read_generator_json

__all__ = [
    "GENERATOR_VERSION",
    "BackgroundRates",
    "SynthCXRConfig",
    "config_hash",
    "demo_dir",
    "ensure_demo_dataset",
    "generate",
    "is_complete",
    "load_config",
    "read_generator_json",
]
