"""A corpus of bad inputs to `localign prepare`: images, CSV tables, reports, MS-CXR, edema and RSNA.

Each case damages one thing in the hand-built MIMIC-CXR tree of ``test_prepare.py`` and asserts the
exact outcome: either a ``ValueError`` whose message names the file, line, column and value, or a
counted skip (one new row in ``skipped.csv`` with its reason and detail) with every other output
table exactly as in the undamaged run.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from localign.data import layout
from localign.data.images import ImageReadError, load_image, read_image_size

from .test_prepare import IMAGES, RSNA_IDS, Fixture, build_fixture, dicom, run

TABLES = ("manifest", "images", "labels", "ms_cxr", "edema", "rsna")

# --- damaged files --------------------------------------------------------------------------------


def jpeg(width: int, height: int, seed: int = 0, mode: str = "L") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, 3)
    buffer = io.BytesIO()
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode).save(buffer, "JPEG")
    return buffer.getvalue()


def bomb_jpeg() -> bytes:
    """An 8x8 JPEG whose frame header claims 30000x30000 pixels (PIL's decompression-bomb limit is
    2 * 89,478,485 pixels)."""
    data = bytearray(jpeg(8, 8))
    sof = data.index(b"\xff\xc0")  # baseline frame header: marker, length, precision, height, width
    data[sof + 5 : sof + 9] = (30000).to_bytes(2, "big") * 2
    return bytes(data)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _symlink_loop(path: Path) -> None:
    path.unlink()
    os.symlink(path.name, path)  # points at itself


def _broken_symlink(path: Path) -> None:
    path.unlink()
    os.symlink(path.parent / "gone.jpg", path)


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


IMAGE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": _truncated,
    "empty": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("this is not an image\n"),
    "bomb": lambda p: p.write_bytes(bomb_jpeg()),
    "thin": lambda p: p.write_bytes(jpeg(1000, 10)),
    "strip": lambda p: p.write_bytes(jpeg(200, 40)),
    "tiny": lambda p: p.write_bytes(jpeg(12, 12)),
    "loop": _symlink_loop,
    "broken_link": _broken_symlink,
    "folder": _folder,
    "deleted": lambda p: p.unlink(),
}

# --- runs and comparisons ---------------------------------------------------------------------------


@dataclass
class Tree:
    fake: Fixture
    tmp: Path
    base: object  # the prepared dataset of the undamaged tree

    def prepare(self, **overrides):
        out = self.tmp / f"out{len(list(self.tmp.glob('out*')))}"
        return run(self.fake, out, **overrides)


def _make_tree(tmp_path: Path, **overrides) -> Tree:
    fake = build_fixture(
        tmp_path / "mimic-cxr-jpg" / "2.0.0",
        tmp_path / "mimic-cxr-reports",
        tmp_path / "ms-cxr" / layout.MS_CXR_CSV,
        tmp_path / "edema" / layout.EDEMA_CSV,
        tmp_path / "rsna",
    )
    tree = Tree(fake, tmp_path, None)
    tree.base = tree.prepare(**overrides)
    return tree


@pytest.fixture()
def tree(tmp_path: Path) -> Tree:
    return _make_tree(tmp_path)


def _skip_difference(a, b) -> list[tuple[str, str, str, str]]:
    """(table, item, reason, detail) of the skipped rows of ``a`` that ``b`` does not have."""
    key = ["table", "item", "reason"]
    merged = a.skipped.merge(b.skipped[key], on=key, how="left", indicator=True)
    rows = merged[merged["_merge"] == "left_only"]
    return list(zip(rows["table"], rows["item"], rows["reason"], rows["detail"]))


def new_skips(base, ds) -> list[tuple[str, str, str, str]]:
    """The skipped rows that ``ds`` has and ``base`` has not (every skip of ``base`` must remain)."""
    assert _skip_difference(base, ds) == [], "a skip of the undamaged run disappeared"
    return _skip_difference(ds, base)


def assert_tables(ds, expected: dict[str, pd.DataFrame]) -> None:
    for name, table in expected.items():
        pd.testing.assert_frame_equal(getattr(ds, name).reset_index(drop=True), table.reset_index(drop=True), obj=name)


def base_tables(base) -> dict[str, pd.DataFrame]:
    return {name: getattr(base, name).copy() for name in TABLES}


def without_image(base, dicom_id: str) -> dict[str, pd.DataFrame]:
    """The undamaged tables with one frontal image (of a study that keeps another) left out."""
    t = base_tables(base)
    t["images"] = t["images"][t["images"]["dicom_id"] != dicom_id]
    m = t["manifest"]
    for i in m.index:
        ids = m.at[i, "dicom_ids"]
        if dicom_id in ids:
            k = ids.index(dicom_id)
            for column in ("dicom_ids", "image_paths", "view_positions"):
                m.at[i, column] = [v for j, v in enumerate(m.at[i, column]) if j != k]
    return t


def without_study(base, study_id: int) -> dict[str, pd.DataFrame]:
    t = base_tables(base)
    for name in ("manifest", "images", "labels"):
        t[name] = t[name][t[name]["study_id"] != study_id]
    return t


def without_patient(base, patient_id: str) -> dict[str, pd.DataFrame]:
    t = base_tables(base)
    t["rsna"] = t["rsna"][t["rsna"]["patientId"] != patient_id]
    return t


def image_file(fake: Fixture, key: str) -> Path:
    subject, study = next((s, t) for k, s, t, *_ in IMAGES if k == key)
    return fake.jpg / layout.mimic_image_path(subject, study, dicom(key))


# ------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------

# damage -> (reason, a regex the detail must match); d04 is the second frontal image of study 50000002
MIMIC_IMAGE_CASES = {
    "truncated": ("image_unreadable", r"OSError: .*(truncated|broken)"),
    "empty": ("image_unreadable", r"UnidentifiedImageError"),
    "text": ("image_unreadable", r"UnidentifiedImageError"),
    "bomb": ("image_unreadable", r"DecompressionBombError: .*900000000 pixels"),
    "thin": ("image_degenerate_geometry", r"1000x10 px: smallest side 10 < 16"),
    "strip": ("image_degenerate_geometry", r"200x40 px: aspect ratio 5 > 4"),
    "tiny": ("image_degenerate_geometry", r"12x12 px: smallest side 12 < 16"),
    "loop": ("image_unreadable", r"symbolic link loop"),
    "folder": ("image_unreadable", r"is a folder, not a file"),
    "broken_link": ("image_file_missing", r"^files/p10/p10000001/s50000002/00000004-.*\.jpg$"),
    "deleted": ("image_file_missing", r"^files/p10/p10000001/s50000002/00000004-.*\.jpg$"),
}


@pytest.mark.parametrize("damage", sorted(MIMIC_IMAGE_CASES))
def test_a_bad_mimic_image_is_a_counted_skip(tree: Tree, damage: str) -> None:
    IMAGE_DAMAGE[damage](image_file(tree.fake, "d04"))
    ds = tree.prepare()
    reason, detail = MIMIC_IMAGE_CASES[damage]
    [(table, item, got_reason, got_detail)] = new_skips(tree.base, ds)
    assert (table, item, got_reason) == ("images", dicom("d04"), reason)
    assert re.search(detail, got_detail), got_detail
    assert_tables(ds, without_image(tree.base, dicom("d04")))


@pytest.mark.parametrize("damage", ["bomb", "thin", "loop"])
def test_header_checks_catch_bombs_geometry_and_loops_too(tmp_path: Path, damage: str) -> None:
    tree = _make_tree(tmp_path, check_images="header")
    IMAGE_DAMAGE[damage](image_file(tree.fake, "d04"))
    ds = tree.prepare(check_images="header")
    [(_, item, reason, _)] = new_skips(tree.base, ds)
    assert (item, reason) == (dicom("d04"), MIMIC_IMAGE_CASES[damage][0])


def test_an_rgb_jpeg_is_kept_as_grayscale(tree: Tree) -> None:
    image_file(tree.fake, "d04").write_bytes(jpeg(64, 48, mode="RGB"))
    ds = tree.prepare()
    assert new_skips(tree.base, ds) == []
    assert_tables(ds, base_tables(tree.base))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [("bomb", "image_unreadable"), ("thin", "image_degenerate_geometry"), ("loop", "image_unreadable")],
)
def test_a_bad_rsna_image_is_a_counted_skip(tree: Tree, damage: str, reason: str) -> None:
    patient = RSNA_IDS[5]
    path = tree.fake.rsna / layout.RSNA_IMAGES / f"{patient}.png"
    if damage == "thin":
        Image.fromarray(np.zeros((10, 1000), np.uint8)).save(path)
    else:
        IMAGE_DAMAGE[damage](path)
    ds = tree.prepare()
    [(table, item, got_reason, detail)] = new_skips(tree.base, ds)
    assert (table, item, got_reason) == ("rsna", patient, reason)
    assert detail.startswith(f"{layout.RSNA_IMAGES}/{patient}.png: ")
    assert_tables(ds, without_patient(tree.base, patient))


def test_a_bad_edema_image_is_a_counted_skip(tree: Tree) -> None:
    # d09 is a frontal image of study 50000006, which has no report, and has an edema row
    image_file(tree.fake, "d09").write_bytes(jpeg(200, 40))
    ds = tree.prepare()
    added = _skip_difference(ds, tree.base)
    assert [a[:3] for a in added] == [("images", dicom("d09"), "image_degenerate_geometry"),
                                      ("edema", dicom("d09"), "image_degenerate_geometry")]
    assert added[1][3].endswith("200x40 px: aspect ratio 5 > 4")
    # the study has no usable image left, so it is no longer skipped later for its missing report
    assert [r[:3] for r in _skip_difference(tree.base, ds)] == [("studies", "50000006", "report_missing")]
    expected = base_tables(tree.base)
    expected["edema"] = expected["edema"][expected["edema"]["dicom_id"] != dicom("d09")]
    assert_tables(ds, expected)


def test_load_image_names_the_file_for_bombs_and_links(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(bomb_jpeg())
    for read in (load_image, lambda p: read_image_size(p, "header")):
        with pytest.raises(ImageReadError, match=rf"cannot read image {re.escape(str(bomb))}: DecompressionBombError"):
            read(bomb)
    loop = tmp_path / "loop.jpg"
    os.symlink(loop.name, loop)
    with pytest.raises(ImageReadError, match="symbolic link loop") as err:
        load_image(loop)
    assert not err.value.missing
    with pytest.raises(ImageReadError, match="file not found") as err:
        load_image(tmp_path / "nothing.jpg")
    assert err.value.missing


# ------------------------------------------------------------------------------------------------
# CSV tables
# ------------------------------------------------------------------------------------------------


def edit_csv(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(df).to_csv(path, index=False)


def _set(column: str, row: int, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[row, column] = value
        return df

    return edit


def _regzip(path: Path, damage: Callable[[bytes], bytes]) -> None:
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(damage(gzip.compress(raw, mtime=0)))


META, SPLIT, CHEXPERT = layout.MIMIC_METADATA, layout.MIMIC_SPLIT, layout.MIMIC_CHEXPERT

# (file, damage) -> regex of the error; line = row + 2 (the header is line 1)
CSV_CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "deflate stream damaged (zlib.error)": (
        META, lambda p: _regzip(p, lambda gz: gz[:10] + b"\x07" + gz[11:]),
        r"metadata\.csv\.gz: the compressed file is damaged or truncated \(error: .*invalid block type\); download it again",
    ),
    "gzip truncated": (
        SPLIT, lambda p: _regzip(p, lambda gz: gz[: len(gz) // 2]),
        r"split\.csv\.gz: the compressed file is damaged or truncated \(EOFError",
    ),
    "gzip checksum wrong": (
        CHEXPERT, lambda p: _regzip(p, lambda gz: gz[:-8] + bytes(8)),
        r"chexpert\.csv\.gz: the compressed file is damaged or truncated \(BadGzipFile: CRC check failed",
    ),
    "empty file": (META, lambda p: p.write_bytes(gzip.compress(b"")), r"metadata\.csv\.gz: not a readable CSV file \(EmptyDataError"),
    "not UTF-8": (
        SPLIT, lambda p: p.write_bytes(gzip.compress("dicom_id,study_id,subject_id,split\n\xe9,1,1,train\n".encode("latin-1"))),
        r"split\.csv\.gz: not a readable CSV file \(UnicodeDecodeError",
    ),
    "missing column": (
        META, lambda p: edit_csv(p, lambda df: df.drop(columns="ViewPosition")),
        r"metadata\.csv\.gz: missing required column 'ViewPosition'",
    ),
    "study_id not an integer": (
        META, lambda p: edit_csv(p, _set("study_id", 3, "5000000x")),
        r"metadata\.csv\.gz: line 5, column 'study_id': invalid value '5000000x' \(expected an integer\)",
    ),
    "duplicate dicom_id": (
        META, lambda p: edit_csv(p, _set("dicom_id", 2, dicom("d01"))),
        rf"metadata\.csv\.gz: line 4: duplicate dicom_id '{dicom('d01')}'",
    ),
    "unknown split name": (
        SPLIT, lambda p: edit_csv(p, _set("split", 0, "training")),
        r"split\.csv\.gz: line 2, column 'split': invalid value 'training' \(expected one of \['train', 'validate', 'test'\]\)",
    ),
    "split disagrees with metadata": (
        SPLIT, lambda p: edit_csv(p, _set("subject_id", 0, "10000099")),
        rf"dicom_id '{dicom('d01')}': mimic-cxr-2\.0\.0-metadata\.csv\.gz says subject 10000001, study 50000001 but "
        r"mimic-cxr-2\.0\.0-split\.csv\.gz says subject 10000099, study 50000001",
    ),
    "CheXpert value 2": (
        CHEXPERT, lambda p: edit_csv(p, _set("Edema", 1, "2")),
        r"chexpert\.csv\.gz: line 3, column 'Edema': invalid value '2' \(expected 1, 0, -1 or blank\)",
    ),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_a_bad_mimic_table_is_an_error_naming_file_line_column_value(tree: Tree, case: str) -> None:
    name, damage, message = CSV_CASES[case]
    damage(tree.fake.jpg / name)
    with pytest.raises(ValueError, match=message):
        tree.prepare()


# ------------------------------------------------------------------------------------------------
# Reports (study 50000012 of subject 10000005 has one frontal image, d17, and a CheXpert row)
# ------------------------------------------------------------------------------------------------

REPORT = layout.mimic_report_path(10000005, 50000012)

REPORT_CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "not UTF-8": (lambda p: p.write_bytes("FINDINGS:  Caf\xe9 lungs.\n".encode("latin-1")), "report_unreadable",
                  rf"^{REPORT}: UnicodeDecodeError"),
    "empty": (lambda p: p.write_text(""), "no_findings_or_impression", rf"^{REPORT}$"),
    "50 KB of periods": (lambda p: p.write_text(" FINDINGS:  " + ". " * 25_600 + "\n"), "no_sentences", rf"^{REPORT}$"),
    "a folder": (_folder, "report_unreadable", rf"^{REPORT}: is a folder, not a file$"),
    "a symlink loop": (_symlink_loop, "report_unreadable", rf"^{REPORT}: symbolic link loop"),
    "deleted": (lambda p: p.unlink(), "report_missing", rf"^{REPORT}$"),
}


@pytest.mark.parametrize("case", sorted(REPORT_CASES))
def test_a_bad_report_is_a_counted_skip(tree: Tree, case: str) -> None:
    damage, reason, detail = REPORT_CASES[case]
    damage(tree.fake.reports / REPORT)
    ds = tree.prepare()
    [(table, item, got_reason, got_detail)] = new_skips(tree.base, ds)
    assert (table, item, got_reason) == ("studies", "50000012", reason)
    assert re.search(detail, got_detail), got_detail
    assert_tables(ds, without_study(tree.base, 50000012))


# ------------------------------------------------------------------------------------------------
# MS-CXR, edema and RSNA tables
# ------------------------------------------------------------------------------------------------


def _append(row: dict[str, str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda df: pd.concat([df, pd.DataFrame([row])], ignore_index=True)


TABLE_ERRORS: dict[str, tuple[str, Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "MS-CXR x not a number": ("ms_cxr", _set("x", 2, "ten"), r"line 4, column 'x': invalid value 'ten' \(expected a number\)"),
    "MS-CXR width 0": ("ms_cxr", _set("image_width", 0, "0"), r"line 2, column 'image_width': invalid value '0' \(expected a positive integer\)"),
    "MS-CXR two widths for one image": ("ms_cxr", _set("image_width", 1, "65"), rf"dicom_id '{dicom('d01')}' has more than one image_width: \['64', '65'\]"),
    "MS-CXR path of another image": ("ms_cxr", _set("path", 5, "files/p10/p10000001/s50000002/other.jpg"),
                                     r"line 7, column 'path': invalid value 'files/p10/p10000001/s50000002/other\.jpg' \(expected files/pXX/"),
    "edema severity 4": ("edema", _set("edema_severity", 1, "4"), r"line 3, column 'edema_severity': invalid value '4' \(expected 0, 1, 2 or 3\)"),
    "edema duplicate dicom_id": ("edema", _set("dicom_id", 1, dicom("d01")), rf"line 3: duplicate dicom_id '{dicom('d01')}'"),
    "edema study disagrees with metadata": ("edema", _set("study_id", 0, "50000002"), r"has subject 10000001, study 50000002 but the metadata says subject 10000001, study 50000001"),
    "RSNA Target 2": ("rsna", _set("Target", 3, "2"), r"line 5, column 'Target': invalid value '2' \(expected 0 or 1\)"),
    "RSNA positive without a box": ("rsna", _set("x", 0, ""), r"line 2, column 'x': invalid value '' \(expected a number for a row with Target 1\)"),
    "RSNA patient both positive and negative": (
        "rsna", _append({"patientId": RSNA_IDS[0], "x": "", "y": "", "width": "", "height": "", "Target": "0"}),
        rf"patientId '{RSNA_IDS[0]}' has rows with both Target 0 and Target 1",
    ),
}


def table_file(fake: Fixture, table: str) -> Path:
    return {"ms_cxr": fake.ms_cxr, "edema": fake.edema, "rsna": fake.rsna / layout.RSNA_LABELS}[table]


@pytest.mark.parametrize("case", sorted(TABLE_ERRORS))
def test_a_bad_optional_table_is_an_error_naming_file_line_column_value(tree: Tree, case: str) -> None:
    table, edit, message = TABLE_ERRORS[case]
    path = table_file(tree.fake, table)
    edit_csv(path, edit)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        tree.prepare()


def test_an_ms_cxr_box_on_an_unknown_dicom_id_is_not_in_metadata(tree: Tree) -> None:
    unknown = "ffffffff-0000-0000-0000-000000000000"
    row = {"dicom_id": unknown, "category_name": "Pneumonia", "label_text": "Right opacity", "x": "1", "y": "1", "w": "5",
           "h": "5", "image_width": "64", "image_height": "48", "split": "test",
           "path": f"files/p10/p10000009/s50000099/{unknown}.jpg"}
    edit_csv(tree.fake.ms_cxr, _append(row))
    ds = tree.prepare()
    assert new_skips(tree.base, ds) == [("ms_cxr", f"{unknown} | Right opacity", "not_in_metadata", "line(s) 11")]
    assert_tables(ds, base_tables(tree.base))


def test_a_prepared_folder_is_the_same_after_a_failed_prepare_is_fixed(tree: Tree) -> None:
    """A bad table stops prepare before anything is written; fixing it gives the undamaged result."""
    saved = tree.fake.edema.read_bytes()
    edit_csv(tree.fake.edema, _set("edema_severity", 0, "7"))
    out = tree.tmp / "retry"
    with pytest.raises(ValueError, match="edema_severity"):
        run(tree.fake, out)
    assert not (out / "dataset.json").exists()
    tree.fake.edema.write_bytes(saved)
    shutil.rmtree(out)
    assert_tables(run(tree.fake, out), base_tables(tree.base))
