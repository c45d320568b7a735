"""SynthCXR generator: file formats, determinism, laterality, label/text consistency, CLI.

Tiny datasets (tens of studies, 64-96 px) generated in temporary folders; rare features (missing
sections, missing ViewPosition) get raised rates so that they occur.
"""

from __future__ import annotations

import dataclasses
import filecmp
import gzip
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from localign import cli
from localign.data import layout
from localign.data.synthcxr import SynthCXRConfig, ensure_demo_dataset, generate, is_complete, load_config, read_generator_json
from localign.data.synthcxr.reports import HEDGE_CUES, aggregate_labels, Sentence
from localign.data.synthcxr.writer import METADATA_COLUMNS, demo_dir

TINY = SynthCXRConfig(
    n_studies=40,
    image_size=96,
    seed=3,
    n_rsna=8,
    impression_only_rate=0.2,
    no_sections_rate=0.1,
    missing_view_rate=0.1,
    normal_fraction=0.25,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synthcxr") / "tiny", TINY, workers=1, progress=False)


def _jpg(root: Path) -> Path:
    return root / layout.SYNTHCXR_SUBDIRS["mimic_jpg"]


def _metadata(root: Path) -> pd.DataFrame:
    return pd.read_csv(_jpg(root) / layout.MIMIC_METADATA)


def _findings(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "synthcxr" / layout.SYNTHCXR_FINDINGS, keep_default_na=False)


def _sentences(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "synthcxr" / layout.SYNTHCXR_SENTENCES, keep_default_na=False)


# --------------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG files
# --------------------------------------------------------------------------------------------------


def test_metadata_columns_views_and_image_sizes(root: Path) -> None:
    meta = _metadata(root)
    assert list(meta.columns) == list(METADATA_COLUMNS)
    assert meta["dicom_id"].is_unique
    assert all(re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}", d) for d in meta["dicom_id"])
    views = meta["ViewPosition"]
    assert set(views.dropna()) <= {"PA", "AP", "LATERAL", "LL"}
    assert {"PA", "AP", "LATERAL"} <= set(views.dropna())
    assert views.isna().sum() >= 1  # a share is missing, as in real MIMIC-CXR-JPG
    assert meta.loc[views.isna(), "ViewCodeSequence_CodeMeaning"].isna().all()
    assert (meta.loc[views == "PA", "ViewCodeSequence_CodeMeaning"] == "postero-anterior").all()
    assert meta["subject_id"].between(10_000_000, 19_999_999).all()
    assert meta["study_id"].between(50_000_000, 59_999_999).all()
    assert meta["StudyDate"].astype(str).str.fullmatch(r"2[12]\d{6}").all()
    for row in meta.itertuples():
        path = _jpg(root) / layout.mimic_image_path(row.subject_id, row.study_id, row.dicom_id)
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "L"
            assert im.size == (row.Columns, row.Rows)
        assert row.Rows == TINY.image_size
    # several images per study and several studies for some patients
    assert meta.groupby("study_id").size().max() >= 2
    assert meta.groupby("subject_id")["study_id"].nunique().max() >= 2


def test_split_is_by_patient_and_covers_every_image(root: Path) -> None:
    split = pd.read_csv(_jpg(root) / layout.MIMIC_SPLIT)
    meta = _metadata(root)
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    assert set(split["split"]) == set(layout.MIMIC_SPLITS)
    assert sorted(split["dicom_id"]) == sorted(meta["dicom_id"])
    assert (split.groupby("subject_id")["split"].nunique() == 1).all()


def test_split_fractions_are_configurable() -> None:
    from localign.data.synthcxr.writer import plan_studies

    tasks = plan_studies(dataclasses.replace(TINY, n_studies=400, split_fractions=(0.5, 0.25, 0.25)))
    patients = {t.patient_index: t.split for t in tasks}
    shares = pd.Series(list(patients.values())).value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.5, abs=0.01)
    assert shares["test"] == pytest.approx(0.25, abs=0.01)


def test_chexpert_values_and_no_finding_rule(root: Path) -> None:
    labels = pd.read_csv(_jpg(root) / layout.MIMIC_CHEXPERT)
    assert list(labels.columns) == ["subject_id", "study_id", *layout.CHEXPERT_LABELS]
    assert len(labels) == TINY.n_studies and labels["study_id"].is_unique
    values = labels[list(layout.CHEXPERT_LABELS)]
    assert set(np.unique(values.to_numpy()[~np.isnan(values.to_numpy())])) <= {-1.0, 0.0, 1.0}
    assert set(values["No Finding"].dropna()) == {1.0}
    findings = values.drop(columns=["No Finding", "Support Devices"]).isin([1.0, -1.0]).any(axis=1)
    assert (findings == values["No Finding"].isna()).all()
    for name in ("Pleural Effusion", "Cardiomegaly", "Support Devices"):
        assert (values[name] == 1.0).any(), name
    assert (values == -1.0).any().any() and (values == 0.0).any().any()
    # gzip files carry no time stamp (byte-identical reruns)
    raw = (_jpg(root) / layout.MIMIC_CHEXPERT).read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\x00\x00\x00\x00"


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def test_reports_have_the_mimic_layout(root: Path) -> None:
    labels = pd.read_csv(_jpg(root) / layout.MIMIC_CHEXPERT)
    reports_root = root / layout.SYNTHCXR_SUBDIRS["mimic_reports"]
    layouts = {"full": 0, "impression_only": 0, "no_sections": 0}
    blanks = 0
    for row in labels.itertuples():
        text = (reports_root / layout.mimic_report_path(row.subject_id, row.study_id)).read_text()
        lines = text.split("\n")
        assert lines[0] == " " * 33 + "FINAL REPORT"
        assert text.endswith("\n")
        assert all(len(line) < 80 for line in lines)
        assert all(line.startswith(" ") for line in lines[1:-1])
        blanks += "___" in text
        has_findings, has_impression = " FINDINGS: " in lines, " IMPRESSION: " in lines
        if has_findings:
            assert " EXAMINATION:  CHEST" in text and " INDICATION:  " in text and " COMPARISON:  " in text
            assert has_impression and lines.index(" FINDINGS: ") < lines.index(" IMPRESSION: ")
        layouts["full" if has_findings else "impression_only" if has_impression else "no_sections"] += 1
    assert blanks > 0.5 * len(labels)  # de-identification blanks in most reports
    info = read_generator_json(root)
    assert layouts == info["counts"]["report_layouts"] | {k: 0 for k in layouts if k not in info["counts"]["report_layouts"]}
    assert layouts["impression_only"] >= 1 and layouts["no_sections"] >= 1 and layouts["full"] > layouts["impression_only"]


def test_sentences_are_in_their_reports(root: Path) -> None:
    sentences = _sentences(root).drop_duplicates(["study_id", "sentence_index"])
    meta = _metadata(root)
    subject = dict(zip(meta["study_id"], meta["subject_id"]))
    reports_root = root / layout.SYNTHCXR_SUBDIRS["mimic_reports"]
    for study_id, group in sentences.groupby("study_id"):
        text = (reports_root / layout.mimic_report_path(subject[study_id], study_id)).read_text()
        flat = " ".join(text.split())
        assert list(group["sentence_index"]) == list(range(len(group)))
        position = 0
        for section, sentence in zip(group["section"], group["sentence"]):
            found = flat.find(" ".join(sentence.split()), position)
            assert found >= 0, (study_id, sentence)
            position = found
            if section:
                assert flat.rfind(f"{section}:", 0, found) >= 0


def test_labels_agree_with_the_report_text(root: Path) -> None:
    """The CheXpert row is what the sentences say: negations -> 0, hedges -> -1, assertions -> 1."""
    sentences = _sentences(root).drop_duplicates(["study_id", "sentence_index"])
    labels = pd.read_csv(_jpg(root) / layout.MIMIC_CHEXPERT).set_index("study_id")
    for study_id, group in sentences.groupby("study_id"):
        parsed = []
        for row in group.itertuples():
            mentions = tuple((k, float(v)) for k, v in (item.split("=") for item in row.labels.split(";") if item))
            parsed.append(Sentence(row.sentence, row.kind, mentions))
            values = [v for _, v in mentions]
            lower = row.sentence.lower()
            if row.kind == "negation":
                assert values and all(v == 0.0 for v in values) and re.search(r"\bno\b", lower), row.sentence
            elif row.kind == "hedge":
                assert values and all(v == -1.0 for v in values), row.sentence
                assert any(cue in lower for cue in HEDGE_CUES), row.sentence
            elif row.kind == "finding":
                assert 1.0 in values, row.sentence
            elif row.kind == "non_visual":
                assert not values, row.sentence
        expected = aggregate_labels(parsed)
        for name in layout.CHEXPERT_LABELS:
            got = labels.loc[study_id, name]
            assert (math.isnan(got) and math.isnan(expected[name])) or got == expected[name], (study_id, name)


# --------------------------------------------------------------------------------------------------
# SynthCXR ground truth: findings, masks, sentences
# --------------------------------------------------------------------------------------------------


def test_findings_masks_are_nonempty_and_match_their_boxes(root: Path) -> None:
    findings = _findings(root)
    meta = _metadata(root).set_index("dicom_id")
    assert len(findings) > 0
    assert set(findings["finding"]) >= {"consolidation", "effusion", "cardiomegaly", "device"}
    for row in findings.itertuples():
        mask = np.asarray(Image.open(root / row.mask))
        assert mask.shape == (meta.loc[row.dicom_id, "Rows"], meta.loc[row.dicom_id, "Columns"])
        assert set(np.unique(mask)) <= {0, 255}
        ys, xs = np.nonzero(mask)
        assert len(xs) == row.mask_pixels > 0
        assert (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (row.x, row.y, row.w, row.h)
        assert row.view in layout.FRONTAL_VIEWS  # masks only for frontal images
    info = read_generator_json(root)
    assert info["counts"]["empty_masks"] == 0


def test_laterality_follows_the_radiological_convention(root: Path) -> None:
    """A "right" finding lies on the viewer's left of a frontal image, and its sentence says "right"."""
    findings = _findings(root)
    sided = findings[findings["laterality"].isin(["right", "left"])]
    assert len(sided) >= 5
    for row in sided.itertuples():
        mask = np.asarray(Image.open(root / row.mask)) > 0
        centre = np.nonzero(mask)[1].mean()
        if row.laterality == "right":
            assert centre < mask.shape[1] / 2, (row.dicom_id, row.finding)
        else:
            assert centre > mask.shape[1] / 2, (row.dicom_id, row.finding)
    sentences = _sentences(root)
    for row in sentences[sentences["kind"].isin(["finding", "hedge"]) & (sentences["finding"] != "")].itertuples():
        words = set(re.findall(r"\b(right|left)\b", row.sentence.lower()))
        assert words <= ({row.laterality} if row.laterality in ("right", "left") else {"right", "left"} if row.laterality == "bilateral" else set()), row.sentence


def test_anatomy_map_puts_the_right_lung_on_the_viewer_left(root: Path) -> None:
    findings = _findings(root)
    sentences = _sentences(root)
    anatomy_path = sentences.loc[sentences["anatomy"] != "", "anatomy"].iloc[0]
    labels = np.asarray(Image.open(root / anatomy_path))
    right, left = np.nonzero(labels == 2)[1].mean(), np.nonzero(labels == 3)[1].mean()
    assert right < labels.shape[1] / 2 < left
    assert len(findings)  # (the fixture has findings)


def test_sentence_table_masks(root: Path) -> None:
    sentences = _sentences(root)
    findings = _findings(root)
    assert set(sentences["kind"]) == {"finding", "negation", "hedge", "normal", "non_visual"}
    masks = {(r.dicom_id, int(r.finding_index)): r.mask for r in findings.itertuples()}
    frontal = set(findings["dicom_id"]) | set(sentences.loc[sentences["dicom_id"] != "", "dicom_id"])
    meta = _metadata(root).set_index("dicom_id")
    for row in sentences.itertuples():
        if row.dicom_id:
            assert row.dicom_id in frontal and meta.loc[row.dicom_id, "study_id"] == row.study_id
        if row.finding != "" and row.dicom_id:
            assert row.mask == masks[(row.dicom_id, int(row.finding_index))]
            assert (root / row.mask).is_file()
        else:
            assert row.mask == ""
        if row.kind == "non_visual":
            assert row.finding == "" and row.mask == "" and row.region == ""
    # every drawn finding is named by at least one sentence
    named = set(zip(sentences["study_id"], sentences["finding_index"]))
    assert {(r.study_id, r.finding_index) for r in findings.itertuples()} <= named


# --------------------------------------------------------------------------------------------------
# MS-CXR, edema severity, RSNA
# --------------------------------------------------------------------------------------------------


def test_ms_cxr_boxes(root: Path) -> None:
    ms = pd.read_csv(root / layout.SYNTHCXR_SUBDIRS["ms_cxr"] / layout.MS_CXR_CSV)
    assert tuple(ms.columns) == layout.MS_CXR_COLUMNS
    assert len(ms) > 0 and set(ms["category_name"]) <= set(layout.MS_CXR_CATEGORIES)
    assert set(ms["split"]) <= {"train", "val", "test"}
    meta = _metadata(root).set_index("dicom_id")
    split = pd.read_csv(_jpg(root) / layout.MIMIC_SPLIT).set_index("dicom_id")["split"]
    for row in ms.itertuples():
        assert meta.loc[row.dicom_id, "ViewPosition"] in layout.FRONTAL_VIEWS
        assert (_jpg(root) / row.path).is_file() and row.path.startswith("files/p1")
        assert (row.image_width, row.image_height) == (meta.loc[row.dicom_id, "Columns"], meta.loc[row.dicom_id, "Rows"])
        assert row.x >= 0 and row.y >= 0 and row.w > 0 and row.h > 0
        assert row.x + row.w <= row.image_width and row.y + row.h <= row.image_height
        assert {"validate": "val"}.get(split[row.dicom_id], split[row.dicom_id]) == row.split
        assert not row.label_text.endswith(".") and not re.match(r"\d+\. ", row.label_text)
    assert (ms.groupby(["dicom_id", "label_text"])["category_name"].nunique() == 1).all()
    # bilateral findings give several boxes for one phrase
    assert ms.groupby(["dicom_id", "label_text"]).size().max() >= 2


def test_edema_severity_rows(root: Path) -> None:
    edema = pd.read_csv(root / layout.SYNTHCXR_SUBDIRS["edema"] / layout.EDEMA_CSV)
    assert tuple(edema.columns) == layout.EDEMA_COLUMNS
    assert set(edema["edema_severity"]) <= {0, 1, 2, 3} and (edema["edema_severity"] > 0).any() and (edema["edema_severity"] == 0).any()
    meta = _metadata(root).set_index("dicom_id")
    assert meta.loc[edema["dicom_id"], "ViewPosition"].isin(layout.FRONTAL_VIEWS).all()
    findings = _findings(root)
    with_edema = findings[findings["finding"] == "edema"]
    graded = {d: g for d, g in zip(with_edema["dicom_id"], with_edema["grade"]) if meta.loc[d, "ViewPosition"] in layout.FRONTAL_VIEWS}
    positives = edema[edema["edema_severity"] > 0]
    assert dict(zip(positives["dicom_id"], positives["edema_severity"])) == graded


def test_rsna_labels_like_the_real_file(root: Path) -> None:
    rsna_dir = root / layout.SYNTHCXR_SUBDIRS["rsna"]
    raw = (rsna_dir / layout.RSNA_LABELS).read_text().splitlines()
    assert raw[0] == ",".join(layout.RSNA_COLUMNS)
    labels = pd.read_csv(rsna_dir / layout.RSNA_LABELS)
    assert labels["patientId"].nunique() == TINY.n_rsna
    negative = labels[labels["Target"] == 0]
    assert negative[["x", "y", "width", "height"]].isna().all().all()
    assert negative["patientId"].is_unique and len(negative) >= 1
    positive = labels[labels["Target"] == 1]
    assert len(positive) >= 1 and not set(positive["patientId"]) & set(negative["patientId"])
    assert all(line.endswith(",0") and ",,,," in line for line in raw[1:] if line.endswith(",0"))
    size = TINY.rsna_size
    assert ((positive["x"] >= 0) & (positive["x"] + positive["width"] <= size) & (positive["y"] + positive["height"] <= size)).all()
    for pid in labels["patientId"].unique():
        with Image.open(rsna_dir / layout.RSNA_IMAGES / f"{pid}.png") as im:
            assert im.size == (size, size) and im.mode == "L"
    assert not set(labels["patientId"]) & set(_metadata(root)["subject_id"].astype(str))


# --------------------------------------------------------------------------------------------------
# Determinism, workers, completion marker, demo cache, CLI
# --------------------------------------------------------------------------------------------------

SMALL = SynthCXRConfig(n_studies=12, image_size=64, seed=11, n_rsna=3)


def _compare_trees(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.name == layout.SYNTHCXR_PARAMS:
            continue  # holds the timing
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("small") / "a", SMALL, workers=1, progress=False)


def test_same_seed_gives_identical_files(small_run: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "b", SMALL, workers=1, progress=False)
    _compare_trees(small_run, again)
    info_a, info_b = read_generator_json(small_run), read_generator_json(again)
    assert info_a["counts"] == info_b["counts"] and info_a["config"] == info_b["config"]


def test_worker_count_does_not_change_the_files(small_run: Path, tmp_path: Path) -> None:
    parallel = generate(tmp_path / "c", SMALL, workers=2, progress=False)
    _compare_trees(small_run, parallel)
    assert read_generator_json(parallel)["timing"]["workers"] == 2


def test_another_seed_gives_another_dataset(small_run: Path, tmp_path: Path) -> None:
    other = generate(tmp_path / "d", dataclasses.replace(SMALL, seed=12), workers=1, progress=False)
    a = gzip.decompress((_jpg(small_run) / layout.MIMIC_METADATA).read_bytes())
    b = gzip.decompress((_jpg(other) / layout.MIMIC_METADATA).read_bytes())
    assert a != b
    assert set(_metadata(small_run)["dicom_id"]).isdisjoint(_metadata(other)["dicom_id"])


def test_completion_marker_and_rerun_into_the_same_folder(small_run: Path, tmp_path: Path) -> None:
    assert is_complete(small_run, SMALL) and not is_complete(small_run, dataclasses.replace(SMALL, seed=1))
    assert load_config(small_run) == SMALL
    out = tmp_path / "rerun"
    generate(out, dataclasses.replace(SMALL, n_studies=20), workers=1, progress=False)
    info_path = out / "synthcxr" / layout.SYNTHCXR_PARAMS
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "complete": False}))  # as an interrupted run leaves it
    assert not is_complete(out)
    generate(out, SMALL, workers=1, progress=False)  # an earlier SynthCXR output is replaced whole
    _compare_trees(small_run, out)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a dataset")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(foreign, SMALL, workers=1, progress=False)


def test_ensure_demo_dataset_generates_once(tmp_path: Path) -> None:
    path = ensure_demo_dataset(SMALL, root=tmp_path, workers=1, progress=False)
    assert path == demo_dir(SMALL, tmp_path) and is_complete(path, SMALL)
    assert path.name.startswith("synthcxr-12x64-seed11-")
    marker = path / "synthcxr" / layout.SYNTHCXR_PARAMS
    before = marker.stat().st_mtime_ns
    assert ensure_demo_dataset(SMALL, root=tmp_path, workers=1, progress=False) == path
    assert marker.stat().st_mtime_ns == before
    assert not list(tmp_path.glob("*.tmp-*"))


def test_cli_generates_and_reports_speed_and_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["synthcxr", "--out", str(out), "--n-studies", "5", "--image-size", "64", "--seed", "2", "--n-rsna", "2", "--workers", "1", "--quiet"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "studies/s" in printed and " MB" in printed
    config = load_config(out)
    assert (config.n_studies, config.image_size, config.seed, config.n_rsna) == (5, 64, 2, 2)
    with pytest.raises(SystemExit):
        cli.main(["synthcxr", "--n-studies", "5"])  # neither --out nor --demo


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_studies", 0), ("image_size", 8), ("split_fractions", (0.5, 0.5, 0.5)), ("normal_fraction", 1.5), ("n_rsna", -1)],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SynthCXRConfig(**{field: value})


def test_calibration_smoke(root: Path) -> None:
    from localign.data.synthcxr.calibration import calibrate

    import torch

    threads = torch.get_num_threads()
    result = calibrate(root, image_size=32, epochs=1, batch_size=16, num_threads=1, progress=False)
    assert torch.get_num_threads() == threads  # global torch state is restored
    assert list(result["label"]) == list(layout.CHEXPERT_LABELS)
    assert {"auroc", "n_pos", "n_neg", "n_train_pos", "n_train_neg"} <= set(result.columns)
    scored = result["auroc"].dropna()
    assert len(scored) >= 1 and scored.between(0.0, 1.0).all()
    assert result.attrs["train_images"] > result.attrs["test_images"] > 0
    # blanks are negatives by default: "No Finding" (1 or blank, never 0 or -1) covers every test image
    n_test = result.attrs["test_images"]
    no_finding = result.set_index("label").loc["No Finding"]
    assert no_finding["n_pos"] + no_finding["n_neg"] == n_test
    assert (result["n_pos"] + result["n_neg"] <= n_test).all()
    ignored = calibrate(root, image_size=32, epochs=1, batch_size=16, num_threads=1, progress=False, blank="ignore")
    assert (ignored["n_pos"] == result["n_pos"]).all() and (ignored["n_neg"] <= result["n_neg"]).all()
    assert np.isnan(ignored.set_index("label").loc["No Finding", "auroc"])  # no explicit negatives in MIMIC format
    with pytest.raises(ValueError, match="blank"):
        calibrate(root, blank="zeros")
