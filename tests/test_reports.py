"""Section extraction, sentence splitting and token counts on hand-written MIMIC-CXR-style reports."""

from __future__ import annotations

import sys
import types

import pytest

from localign.data import reports
from localign.data.reports import (
    RULES_SPLITTER,
    StanzaUnavailableError,
    clean_text,
    count_tokens,
    extract_sections,
    normalize_section_name,
    resolve_splitter,
    select_sections,
    split_sentences,
    tokenize,
)

# Hand-written in the MIMIC-CXR 2.0.0 style: a centred FINAL REPORT line, one leading space on
# every line, " \n" between sections, hard wraps near 80 characters, ___ de-identification.
REPORT_FULL = """\
                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___M with cough and fever  // ? pneumonia
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  Chest radiograph from ___.
 
 FINDINGS: 
 
 There is a new opacity in the left lower lobe measuring approx. 2.5 cm,
 concerning for pneumonia. No pleural effusion or pneumothorax is seen. The
 cardiomediastinal silhouette is normal. Dr. ___ was notified of the findings
 at 10:15 a.m. on ___ by Dr. ___.
 
 IMPRESSION: 
 
 Left lower lobe pneumonia.
"""

REPORT_ENUMERATED = """\
                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)
 
 INDICATION:  ___F intubated, evaluate ET tube position
 
 IMPRESSIONS: 
 
 1. Endotracheal tube terminates 4.2 cm above the carina.  2. Small right
 pleural effusion, slightly increased vs. prior.
 3. No pneumothorax.
"""

REPORT_SYNONYMS = """\
                                 FINAL REPORT
 CLINICAL HISTORY:  Shortness of breath.
 
 COMPARISONS:  None.
 
 FINDNGS:  Heart size is normal
 Lungs are clear
 No pleural effusion
 
 CONCLUSION:  No acute cardiopulmonary process.
"""

REPORT_NO_FINDINGS = """\
                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___ with chest pain
 
 NOTIFICATION:  The study was cancelled and no images were interpreted.
"""

# A long sentence hard-wrapped before a capitalised word (PICC), which must not split it.
REPORT_WRAPPED = """\
                                 FINAL REPORT
 FINDINGS:  Compared to the prior radiograph from ___, the new right upper extremity
 PICC line terminates in the mid SVC. There is mild pulmonary vascular
 congestion, e.g. in the perihilar regions.
 No focal consolidation
 Heart size is top normal
"""


def test_extract_sections_full_report() -> None:
    assert extract_sections(REPORT_FULL) == {
        "preamble": "FINAL REPORT",
        "examination": "CHEST (PA AND LAT)",
        "indication": "___M with cough and fever  // ? pneumonia",
        "technique": "Chest PA and lateral",
        "comparison": "Chest radiograph from ___.",
        "findings": (
            "There is a new opacity in the left lower lobe measuring approx. 2.5 cm,\n"
            "concerning for pneumonia. No pleural effusion or pneumothorax is seen. The\n"
            "cardiomediastinal silhouette is normal. Dr. ___ was notified of the findings\n"
            "at 10:15 a.m. on ___ by Dr. ___."
        ),
        "impression": "Left lower lobe pneumonia.",
    }


def test_extract_sections_synonyms_and_typos() -> None:
    assert extract_sections(REPORT_SYNONYMS) == {
        "preamble": "FINAL REPORT",
        "history": "Shortness of breath.",
        "comparison": "None.",
        "findings": "Heart size is normal\nLungs are clear\nNo pleural effusion",
        "impression": "No acute cardiopulmonary process.",
    }
    sections = extract_sections(REPORT_ENUMERATED)
    assert sections["impression"].startswith("1. Endotracheal tube")
    assert "findings" not in sections


def test_extract_sections_without_findings_or_impression() -> None:
    assert extract_sections(REPORT_NO_FINDINGS) == {
        "preamble": "FINAL REPORT",
        "examination": "CHEST (PA AND LAT)",
        "indication": "___ with chest pain",
        "notification": "The study was cancelled and no images were interpreted.",
    }


def test_extract_sections_empty_title_header_repeats_and_no_header() -> None:
    # An empty "title" header that looks like findings is removed, as in the official parser.
    text = " FINAL REPORT\n CHEST, PA AND LATERAL:\n \n INDICATION:  Cough.\n \n IMPRESSION:  No pneumonia.\n"
    assert extract_sections(text) == {"preamble": "FINAL REPORT", "indication": "Cough.", "impression": "No pneumonia."}
    # The last non-empty section of a name wins (LoVT / create_section_files.py).
    text = " FINDINGS AND IMPRESSION:  Old text.\n IMPRESSION:  New text.\n FINDINGS:  Lungs clear.\n FINDINGS:\n"
    assert extract_sections(text) == {"impression": "New text.", "findings": "Lungs clear."}
    # No header at all: one "full report" section.
    assert extract_sections("Lungs are clear.\nNo effusion.") == {"full report": "Lungs are clear.\nNo effusion."}
    # A header line holds one header: the search resumes on the next line (official behaviour).
    assert extract_sections(" FINDINGS:  Tube in place. ET TUBE: 3 cm above carina.\n IMPRESSION:  Ok.\n") == {
        "findings": "Tube in place. ET TUBE: 3 cm above carina.",
        "impression": "Ok.",
    }
    # The official pattern needs all-caps names: "Findings:" inside prose is not a header.
    assert extract_sections(" IMPRESSION:  Normal.\n Findings: none.\n") == {"impression": "Normal.\nFindings: none."}


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("CONCLUSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("FINDINGS/IMPRESSION", "impression"),
        ("IMPRESSIONS", "impression"),
        ("IMPRESSON", "impression"),
        ("PROVISIONAL FINDINGS IMPRESSION (PFI)", "impression"),
        ("FINDING", "findings"),
        ("FINDNGS", "findings"),
        ("CHEST, PA AND LATERAL", "findings"),
        ("PORTABLE AP VIEW OF THE CHEST", "findings"),
        ("COMPARISONS", "comparison"),
        ("COMPARISION", "comparison"),
        ("CLINICAL HISTORY", "history"),
        ("REASON FOR EXAM", "indication"),
        ("RECOMMENDATION(S)", "recommendations"),
        ("WETREAD", "wet read"),
        ("  ADDENDUM ", "addendum"),
        ("NOTE TO CLINICIAN", "note to clinician"),
    ],
)
def test_normalize_section_name(header: str, name: str) -> None:
    assert normalize_section_name(header) == name


def test_extract_sections_rejects_non_text() -> None:
    with pytest.raises(ValueError, match="expects a str, got bytes"):
        extract_sections(b"FINDINGS: x")  # type: ignore[arg-type]


def test_split_full_report_sections() -> None:
    sections = extract_sections(REPORT_FULL)
    assert split_sentences(sections["findings"], "rules") == [
        "There is a new opacity in the left lower lobe measuring approx. 2.5 cm, concerning for pneumonia.",
        "No pleural effusion or pneumothorax is seen.",
        "The cardiomediastinal silhouette is normal.",
        "Dr. ___ was notified of the findings at 10:15 a.m. on ___ by Dr. ___.",
    ]
    assert split_sentences(sections["impression"], "rules") == ["Left lower lobe pneumonia."]


def test_split_enumerated_impression_keeps_numbers_with_items() -> None:
    assert split_sentences(extract_sections(REPORT_ENUMERATED)["impression"], "rules") == [
        "1. Endotracheal tube terminates 4.2 cm above the carina.",
        "2. Small right pleural effusion, slightly increased vs. prior.",
        "3. No pneumothorax.",
    ]


def test_split_line_breaks_and_hard_wraps() -> None:
    assert split_sentences(extract_sections(REPORT_SYNONYMS)["findings"], "rules") == [
        "Heart size is normal",
        "Lungs are clear",
        "No pleural effusion",
    ]
    assert split_sentences(extract_sections(REPORT_WRAPPED)["findings"], "rules") == [
        "Compared to the prior radiograph from ___, the new right upper extremity PICC line terminates in the mid SVC.",
        "There is mild pulmonary vascular congestion, e.g. in the perihilar regions.",
        "No focal consolidation",
        "Heart size is top normal",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Nodule measures 1.5 cm. Stable since ___.", ["Nodule measures 1.5 cm.", "Stable since ___."]),
        ("Discussed with Dr. Smith. Follow-up advised.", ["Discussed with Dr. Smith.", "Follow-up advised."]),
        (
            "Dr. ___ was paged at 10:15 a.m. on ___. Discussed at 3 p.m. The patient improved.",
            ["Dr. ___ was paged at 10:15 a.m. on ___.", "Discussed at 3 p.m.", "The patient improved."],
        ),
        (
            "Devices, e.g. the ET tube, are unchanged. Opacity, i.e. Atelectasis, persists.",
            ["Devices, e.g. the ET tube, are unchanged.", "Opacity, i.e. Atelectasis, persists."],
        ),
        (
            "Atelectasis vs. Pneumonia at the left base. No effusion.",
            ["Atelectasis vs. Pneumonia at the left base.", "No effusion."],
        ),
        ("Effusion of approx. 200 mL. Heart normal.", ["Effusion of approx. 200 mL.", "Heart normal."]),
        ("1. No acute process. 2. Small effusion.", ["1. No acute process.", "2. Small effusion."]),
        ("1.\nNo acute process.\n2.\nSmall effusion.", ["1. No acute process.", "2. Small effusion."]),
        ("1. Clear lungs 2. No effusion 3. Normal heart", ["1. Clear lungs", "2. No effusion", "3. Normal heart"]),
        ("1) Clear lungs. 2) No effusion.", ["1) Clear lungs.", "2) No effusion."]),
        (
            "Compared to the study from ___. There is no change.",
            ["Compared to the study from ___.", "There is no change."],
        ),
        (
            "Findings phoned to ___.\n___ acknowledged receipt.",
            ["Findings phoned to ___.", "___ acknowledged receipt."],
        ),
        ("Heart size normal\nLungs clear\nNo effusion", ["Heart size normal", "Lungs clear", "No effusion"]),
        ("The\nPICC line is in place.", ["The PICC line is in place."]),
        ("Right lung is clear,\nLeft lung is clear.", ["Right lung is clear, Left lung is clear."]),
        ("Pneumonia? Clinical correlation recommended.", ["Pneumonia?", "Clinical correlation recommended."]),
        ("No pneumothorax.Heart size normal.", ["No pneumothorax.", "Heart size normal."]),
        ("No effusion. . .", ["No effusion."]),
        ("Lungs clear.\n.\n___.", ["Lungs clear."]),
        ("No effusion. 2.", ["No effusion."]),
        ("  The   lungs\n are   clear.  ", ["The lungs are clear."]),
        ("Lungs clear.\n\nHeart normal", ["Lungs clear.", "Heart normal"]),
        ("", []),
        (" \n ", []),
    ],
)
def test_split_sentences_tricky_cases(text: str, expected: list[str]) -> None:
    assert split_sentences(text, "rules") == expected


def test_split_sentences_validates_arguments() -> None:
    with pytest.raises(ValueError, match="splitter must be one of"):
        split_sentences("Lungs clear.", "spacy")
    with pytest.raises(ValueError, match="expects a str"):
        split_sentences(None, "rules")  # type: ignore[arg-type]


def test_tokens() -> None:
    assert tokenize("Dr. ___ at 10:15 a.m. saw 1.5 cm lesion, e.g. left-sided.") == [
        "Dr.", "___", "at", "10:15", "a.m.", "saw", "1.5", "cm", "lesion", ",", "e.g.", "left-sided", ".",
    ]  # fmt: skip
    assert count_tokens("Clear.") == 2
    assert count_tokens("") == 0


def test_clean_text() -> None:
    assert clean_text("  a\n\n b\t c  ") == "a b c"


def test_select_sections_rules() -> None:
    both = {"preamble": "x", "findings": "Lungs are clear and heart is normal.", "impression": "Normal."}
    only_impression = {"impression": "Normal."}
    assert select_sections(both) == [("findings", both["findings"]), ("impression", "Normal.")]
    assert select_sections(both, "impression") == [("impression", "Normal.")]
    assert select_sections(both, "findings") == [("findings", both["findings"])]
    assert select_sections(both, "findings_or_impression") == [("findings", both["findings"])]
    assert select_sections(only_impression, "findings_or_impression") == [("impression", "Normal.")]
    assert select_sections(only_impression, "findings") == []
    assert select_sections(both, "longest") == [("findings", both["findings"])]
    assert select_sections({"findings": "Clear.", "impression": "No acute process."}, "longest") == [
        ("impression", "No acute process.")
    ]
    assert select_sections({"findings": "Clear.", "impression": "Normal."}, "longest") == [("findings", "Clear.")]
    assert select_sections({"indication": "Cough."}) == []
    with pytest.raises(ValueError, match="text rule must be one of"):
        select_sections(both, "all")


def test_resolve_splitter_without_stanza(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "stanza", None)  # makes `import stanza` fail
    assert resolve_splitter("rules") == RULES_SPLITTER == "rules-v1"
    assert resolve_splitter("auto") == "rules-v1"
    with pytest.raises(StanzaUnavailableError, match="STANZA_RESOURCES_DIR"):
        resolve_splitter("stanza")
    with pytest.raises(StanzaUnavailableError, match="never downloads"):
        split_sentences("Lungs clear.", "stanza")


def test_stanza_used_only_with_a_local_model(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    """A stand-in stanza module: 'auto' picks it once the English tokenize model is on disk."""
    calls: list[dict] = []

    class FakePipeline:
        def __init__(self, lang: str, **kwargs: object) -> None:
            calls.append({"lang": lang, **kwargs})

        def __call__(self, text: str) -> types.SimpleNamespace:
            parts = [p for p in text.split("|")]
            return types.SimpleNamespace(sentences=[types.SimpleNamespace(text=p) for p in parts])

    fake = types.ModuleType("stanza")
    fake.__version__ = "1.99.0"  # type: ignore[attr-defined]
    fake.Pipeline = FakePipeline  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stanza", fake)
    monkeypatch.setenv("STANZA_RESOURCES_DIR", str(tmp_path))
    assert resolve_splitter("auto") == "rules-v1"  # installed, but no model on disk
    with pytest.raises(StanzaUnavailableError):
        resolve_splitter("stanza")
    (tmp_path / "resources.json").write_text("{}")
    (tmp_path / "en" / "tokenize").mkdir(parents=True)
    (tmp_path / "en" / "tokenize" / "combined.pt").write_bytes(b"")
    assert resolve_splitter("auto") == resolve_splitter("stanza") == "stanza-1.99.0"
    assert split_sentences("Lungs  clear.|  .|Heart\nnormal.", "auto") == ["Lungs clear.", "Heart normal."]
    assert split_sentences("Lungs clear. Heart normal.", "rules") == ["Lungs clear.", "Heart normal."]
    assert calls == [
        {
            "lang": "en",
            "dir": str(tmp_path),
            "processors": "tokenize",
            "use_gpu": False,
            "download_method": None,
            "logging_level": "WARN",
        }
    ]
    reports._stanza_pipeline.cache_clear()


def test_custom_rule_studies_table() -> None:
    # 23 custom section names + 31 custom index ranges in MIT-LCP's section_parser.py
    assert len(reports.MIMIC_CUSTOM_RULE_STUDIES) == 54
    assert 50525523 in reports.MIMIC_CUSTOM_RULE_STUDIES


def test_first_line_of_a_section_is_shorter_than_it_looks() -> None:
    # In the report the first line also holds " FINDINGS:  ", so "PICC" did not fit on it: a wrap.
    section = extract_sections(
        " FINDINGS:  The old right-sided catheter has been removed and replaced by a left-sided\n"
        " PICC line, which terminates in the low SVC. Lungs are clear. Heart size normal.\n"
    )["findings"]
    assert len(section.splitlines()[0]) + len(" PICC") <= len(section.splitlines()[1])  # fits, without the header
    assert split_sentences(section, "rules") == [
        "The old right-sided catheter has been removed and replaced by a left-sided PICC line, which terminates in the low SVC.",
        "Lungs are clear.",
        "Heart size normal.",
    ]
    # A short first line followed by a capitalised line is still a deliberate break.
    assert split_sentences("Heart size normal\nLungs are clear", "rules") == ["Heart size normal", "Lungs are clear"]
