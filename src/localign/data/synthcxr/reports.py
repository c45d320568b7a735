"""Reports (Liao et al.'s radiologist style V^R): free-text reports in the MIMIC-CXR 2.0.0 format.

Every drawn finding gets at least one sentence naming it with its side, zone and severity, in one
of several paraphrases; clear regions get normal statements, absent findings get negations, subtle
findings may be hedged (CheXpert label -1), and some sentences have no image correlate at all
(comparison, technique, recommendations, notifications). Each sentence carries the CheXpert
mentions it makes, so the study labels are derived from the *text*, with the CheXpert labeler's
aggregation rules (:func:`aggregate_labels`), exactly as a labeler would read it.

Side words in a sentence are always the patient's side of the finding it describes; they never
appear in other senses (no "right atrium" in a left pacemaker sentence), so a sentence's side
words can be checked against its mask.

The text layout follows real MIMIC-CXR reports: a centred ``FINAL REPORT`` line, section headers
such as `` FINDINGS:`` with a leading space, every line indented by one space, blank lines holding
a single space, hard wraps before 80 characters and ``___`` de-identification blanks.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from localign.data.layout import CHEXPERT_LABELS
from localign.data.synthcxr.config import SynthCXRConfig
from localign.data.synthcxr.findings import Finding

SENTENCE_KINDS = ("finding", "negation", "hedge", "normal", "non_visual")
SECTIONS = ("FINDINGS", "IMPRESSION", "")  # "" = body text of a report with neither section
STYLE_NAMES = ("academic", "terse", "icu", "narrative")

AT, CM, CO, ED = "Atelectasis", "Cardiomegaly", "Consolidation", "Edema"
EC, FR, LL, LO = "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity"
NF, PE, PN, PX, SD = "No Finding", "Pleural Effusion", "Pneumonia", "Pneumothorax", "Support Devices"

Labels = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Sentence:
    """One report sentence and what it says.

    ``labels`` are its CheXpert mentions (1 positive, 0 negated, -1 uncertain); ``finding_index``
    is the study finding it describes (-1 for none); ``region`` names the anatomy a normal
    statement is about (``right_lung``, ``left_lung``, ``lungs``, ``heart``, ``mediastinum``,
    ``cardiomediastinal``; see :data:`REGION_CODES`).
    """

    text: str
    kind: str
    labels: Labels = ()
    finding_index: int = -1
    laterality: str = ""
    region: str = ""
    topic: str = "other"


#: anatomy-map codes covered by each normal-statement region (see ``anatomy.ANATOMY_CODES``)
REGION_CODES = {
    "right_lung": (2,),
    "left_lung": (3,),
    "lungs": (2, 3),
    "heart": (4,),
    "mediastinum": (5,),
    "cardiomediastinal": (4, 5),
}


@dataclass(frozen=True)
class PlacedSentence:
    """A sentence where it stands in a report: section, index in the report, text as written
    (with its list number, e.g. ``"1. Small left pleural effusion."``)."""

    section: str
    index: int
    written: str
    sentence: Sentence


@dataclass(frozen=True)
class Report:
    text: str
    style: str
    layout: str  # "full", "impression_only" or "no_sections"
    sentences: tuple[PlacedSentence, ...]

    @property
    def has_findings(self) -> bool:
        return self.layout == "full"

    @property
    def has_impression(self) -> bool:
        return self.layout in ("full", "impression_only")

    def labels(self) -> dict[str, float]:
        return aggregate_labels([p.sentence for p in self.sentences])


@dataclass(frozen=True)
class ReportContext:
    """What the radiologist knows when writing: the study's findings and how it was acquired."""

    sex: str
    frontal_views: tuple[str, ...]  # acquired frontal views ("PA"/"AP"), in order
    lateral: bool
    supine: bool
    portable: bool
    has_prior: bool
    icu: bool
    heart_failure: bool
    infection: bool
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class Style:
    """A radiologist's habits."""

    name: str
    registers: tuple[float, float, float]  # weights of terse / plain / verbose phrasings
    topic_order: tuple[str, ...]
    joiner: str  # between sentences on a line
    paragraphs: bool  # a blank line between topics
    enumerate_impression: float
    items_on_lines: bool  # enumerated impression items each on their own line
    opener: float  # probability of a technique sentence opening the findings
    comparison: float  # probability of a comparison sentence
    normal_detail: float  # probability of each optional normal statement / negation


STYLES = {
    "academic": Style("academic", (0.1, 0.4, 0.5), ("devices", "heart", "mediastinum", "lungs", "pleura", "bones"), "  ", False, 0.6, True, 0.3, 0.8, 0.85),
    "terse": Style("terse", (0.7, 0.3, 0.0), ("lungs", "pleura", "heart", "devices", "bones"), " ", False, 0.3, False, 0.0, 0.3, 0.55),
    "icu": Style("icu", (0.3, 0.6, 0.1), ("devices", "lungs", "pleura", "heart", "mediastinum", "bones"), "  ", True, 0.7, True, 0.9, 0.6, 0.65),
    "narrative": Style("narrative", (0.0, 0.5, 0.5), ("lungs", "heart", "mediastinum", "pleura", "devices", "bones"), "  ", False, 0.1, False, 0.5, 0.5, 0.75),
}

TOPIC_OF_KIND = {
    "device": "devices",
    "consolidation": "lungs",
    "atelectasis": "lungs",
    "nodule": "lungs",
    "edema": "lungs",
    "effusion": "pleura",
    "pneumothorax": "pleura",
    "cardiomegaly": "heart",
}

#: order of findings in an impression (most urgent first)
IMPRESSION_PRIORITY = ("pneumothorax", "consolidation", "edema", "effusion", "nodule", "cardiomegaly", "atelectasis", "device")
#: probability that a FINDINGS-section finding is repeated in the impression
IMPRESSION_REPEAT = {"pneumothorax": 1.0, "consolidation": 0.95, "edema": 0.9, "effusion": 0.8, "nodule": 0.9, "cardiomegaly": 0.6, "atelectasis": 0.4, "device": 0.5}

HEDGE_CUES = ("possible", "cannot be excluded", "cannot exclude", "not excluded", "may reflect", "may represent", "borderline", "questionable", "likely", "concerning for", " vs. ")


# --- label aggregation -------------------------------------------------------------------------


def aggregate_labels(sentences: list[Sentence]) -> dict[str, float]:
    """Study-level CheXpert labels from sentence mentions, with the CheXpert labeler's rules.

    Per observation: positive if any mention is positive; else uncertain if any is uncertain;
    else negative if any is negated; else NaN (not mentioned). ``No Finding`` is 1 when no
    observation other than Support Devices is positive or uncertain, else NaN.

    :return: label -> 1.0 / 0.0 / -1.0 / NaN for all 14 :data:`CHEXPERT_LABELS`
    """
    mentions: dict[str, list[float]] = defaultdict(list)
    for s in sentences:
        for label, value in s.labels:
            if label not in CHEXPERT_LABELS or label == NF:
                raise ValueError(f"sentence {s.text!r} mentions {label!r}, not a CheXpert observation")
            mentions[label].append(value)
    out: dict[str, float] = {}
    for label in CHEXPERT_LABELS:
        values = mentions.get(label, [])
        out[label] = 1.0 if 1.0 in values else -1.0 if -1.0 in values else 0.0 if values else math.nan
    finding = any(out[label] in (1.0, -1.0) for label in CHEXPERT_LABELS if label not in (NF, SD))
    out[NF] = math.nan if finding else 1.0
    return out


# --- vocabulary ------------------------------------------------------------------------------------

_SEVERITY = {
    "consolidation": {1: ("patchy", "mild", "subtle", "faint"), 2: ("moderate", "focal", "confluent"), 3: ("dense", "extensive", "large")},
    "effusion": {1: ("small",), 2: ("moderate", "moderate-sized"), 3: ("large", "sizable")},
    "pneumothorax": {1: ("small", "tiny"), 2: ("moderate", "moderate-sized"), 3: ("large",)},
    "atelectasis": {1: ("mild", "minimal", "subsegmental"), 2: ("moderate",), 3: ("extensive",)},
    "cardiomegaly": {1: ("mild",), 2: ("moderate",), 3: ("severe", "marked")},
    "edema": {1: ("mild",), 2: ("moderate",), 3: ("severe",)},
}
_ADVERB = {1: ("mildly",), 2: ("moderately",), 3: ("severely", "markedly")}


def _location(f: Finding, rng: np.random.Generator) -> tuple[str, str]:
    """``(adjective, noun phrase)`` naming where a lung finding is, e.g. ("right basilar",
    "the right lung base")."""
    s, zone = f.laterality, f.zone
    if zone == "retrocardiac":
        return _choice(rng, ("retrocardiac", "left retrocardiac", "left lower lobe")), _choice(rng, ("the retrocardiac region", "the left lower lobe"))
    if s == "bilateral":
        if zone in ("lower", "base"):
            return _choice(rng, ("bibasilar", "bilateral basilar", "bilateral lower lobe")), _choice(rng, ("both lung bases", "the lung bases bilaterally", "both lower lobes"))
        if zone == "perihilar":
            return _choice(rng, ("bilateral perihilar", "perihilar")), _choice(rng, ("both perihilar regions", "the perihilar regions bilaterally"))
        return f"bilateral {zone} lung", f"both {zone} lung zones"
    if zone in ("lower", "base"):
        return _choice(rng, (f"{s} basilar", f"{s} lower lobe", f"{s} base")), _choice(rng, (f"the {s} lung base", f"the {s} lower lobe", f"the {s} base", f"the {s} lower lung zone"))
    if zone == "middle":
        lobe_adj, lobe_noun = ("right middle lobe", "the right middle lobe") if s == "right" else ("lingular", "the lingula")
        return _choice(rng, (f"{s} mid lung", lobe_adj)), _choice(rng, (f"the {s} mid lung", f"the {s} mid lung zone", lobe_noun))
    if zone == "upper":
        return _choice(rng, (f"{s} upper lobe", f"{s} upper lung")), _choice(rng, (f"the {s} upper lobe", f"the {s} upper lung zone", f"the {s} upper lung"))
    if zone == "apex":
        return f"{s} apical", _choice(rng, (f"the {s} apex", f"the {s} lung apex"))
    raise ValueError(f"no location phrase for laterality {s!r}, zone {zone!r}")


def _choice(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(template: str, values: dict[str, str]) -> str:
    """Fill ``{name}`` and capitalised ``{Name}`` placeholders; ``{a_name}`` adds an article."""
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value).replace("{" + key.capitalize() + "}", _cap(value))
        with_article = f"{_article(value)} {value}"
        out = out.replace("{a_" + key + "}", with_article).replace("{A_" + key + "}", _cap(with_article))
    if "{" in out:
        raise ValueError(f"unfilled placeholder in template {template!r} -> {out!r}")
    out = " ".join(out.split())
    return _cap(out)


# --- finding sentences -----------------------------------------------------------------------------
# Each template: (register, text, labels). Registers: t(erse), p(lain), v(erbose).

_P, _U = 1.0, -1.0

_TEMPLATES: dict[str, dict[str, list[tuple[str, str, dict[str, float]]]]] = {
    "consolidation": {
        "certain": [
            ("t", "{Sev} {adj} opacity.", {LO: _P}),
            ("t", "{Sev} {adj} consolidation.", {CO: _P}),
            ("t", "{Sev} {adj} airspace disease.", {LO: _P}),
            ("p", "{Sev} opacity in {noun}.", {LO: _P}),
            ("p", "There is {a_sev} {adj} opacity.", {LO: _P}),
            ("p", "{Sev} consolidation in {noun}.", {CO: _P}),
            ("p", "{Sev} airspace opacity in {noun}.", {LO: _P}),
            ("v", "There is {a_sev} area of consolidation in {noun}.", {CO: _P}),
            ("v", "{A_sev} airspace opacity is seen in {noun}.", {LO: _P}),
            ("v", "There is {a_sev} airspace opacity in {noun}, with air bronchograms.", {LO: _P}),
        ],
        "pneumonia": [
            ("t", "{Sev} {adj} pneumonia.", {PN: _P}),
            ("p", "{Sev} opacity in {noun}, concerning for pneumonia.", {LO: _P, PN: _U}),
            ("p", "{Sev} {adj} consolidation consistent with pneumonia.", {CO: _P, PN: _P}),
            ("v", "There is {a_sev} consolidation in {noun}, most consistent with pneumonia.", {CO: _P, PN: _P}),
            ("v", "{A_sev} {adj} opacity may reflect pneumonia.", {LO: _P, PN: _U}),
        ],
        "hedge": [
            ("t", "Possible {sev} {adj} opacity.", {LO: _U}),
            ("p", "{A_sev} {adj} consolidation cannot be excluded.", {CO: _U}),
            ("v", "Questionable {sev} opacity in {noun}.", {LO: _U}),
        ],
        "hedge_pneumonia": [
            ("p", "Early pneumonia in {noun} cannot be excluded given {a_sev} opacity there.", {PN: _U, LO: _U}),
            ("t", "Possible early {adj} pneumonia, {sev}.", {PN: _U}),
        ],
        "impression": [
            ("t", "{Sev} {adj} opacity.", {LO: _P}),
            ("t", "{Sev} {adj} consolidation.", {CO: _P}),
            ("p", "{Sev} {adj} opacity, atelectasis vs. pneumonia.", {LO: _P, AT: _U, PN: _U}),
        ],
        "impression_pneumonia": [
            ("t", "{Sev} {adj} pneumonia.", {PN: _P}),
            ("p", "{Sev} {adj} opacity, concerning for pneumonia.", {LO: _P, PN: _U}),
            ("p", "{Sev} {adj} consolidation, likely pneumonia.", {CO: _P, PN: _U}),
        ],
    },
    "effusion": {
        "certain": [
            ("t", "{Sev} {side} pleural effusion.", {PE: _P}),
            ("t", "{Sev} {side} effusion.", {PE: _P}),
            ("p", "There is {a_sev} {side} pleural effusion.", {PE: _P}),
            ("p", "{Sev} {side}-sided pleural effusion.", {PE: _P}),
            ("p", "{A_sev} {side} pleural effusion is present.", {PE: _P}),
            ("v", "There is {a_sev} {side} pleural effusion with blunting of the costophrenic angle.", {PE: _P}),
            ("v", "{A_sev} {side} pleural effusion is noted at the {side} lung base.", {PE: _P}),
        ],
        "bilateral": [
            ("t", "{Sev} bilateral pleural effusions.", {PE: _P}),
            ("t", "{Sev} bilateral effusions.", {PE: _P}),
            ("p", "There are {sev} bilateral pleural effusions.", {PE: _P}),
            ("p", "{Sev} pleural effusions bilaterally.", {PE: _P}),
            ("v", "{Sev} bilateral pleural effusions are present, with blunting of both costophrenic angles.", {PE: _P}),
        ],
        "hedge": [
            ("t", "Possible {sev} {side} pleural effusion.", {PE: _U}),
            ("p", "Blunting of the {side} costophrenic angle may reflect {a_sev} pleural effusion.", {PE: _U}),
            ("v", "{A_sev} {side} pleural effusion cannot be excluded.", {PE: _U}),
        ],
        "hedge_bilateral": [
            ("t", "Possible {sev} bilateral pleural effusions.", {PE: _U}),
            ("p", "Blunting of both costophrenic angles may reflect {sev} pleural effusions.", {PE: _U}),
        ],
        "impression": [("t", "{Sev} {side} pleural effusion.", {PE: _P})],
        "impression_bilateral": [("t", "{Sev} bilateral pleural effusions.", {PE: _P})],
    },
    "pneumothorax": {
        "certain": [
            ("t", "{Sev} {side} {where_adj} pneumothorax.", {PX: _P}),
            ("p", "There is {a_sev} {side} {where_adj} pneumothorax.", {PX: _P}),
            ("p", "{Sev} {side}-sided pneumothorax {where}.", {PX: _P}),
            ("v", "{A_sev} {side} pneumothorax is seen {where}, measuring approximately {n} cm.", {PX: _P}),
            ("v", "There is {a_sev} {side} {where_adj} pneumothorax with a visible pleural line, approx. {n} cm from the chest wall.", {PX: _P}),
        ],
        "hedge": [
            ("t", "Possible {sev} {side} {where_adj} pneumothorax.", {PX: _U}),
            ("p", "{A_sev} {side} {where_adj} pneumothorax cannot be excluded.", {PX: _U}),
        ],
        "impression": [("t", "{Sev} {side} {where_adj} pneumothorax.", {PX: _P})],
    },
    "atelectasis": {
        "certain": [
            ("t", "{Sev} {adj} atelectasis.", {AT: _P}),
            ("p", "There is {sev} linear atelectasis at {noun}.", {AT: _P}),
            ("p", "{Sev} plate-like atelectasis in {noun}.", {AT: _P}),
            ("v", "There is {a_sev} area of plate-like atelectasis at {noun}.", {AT: _P}),
            ("v", "{Sev} {adj} opacity likely reflects atelectasis.", {LO: _P, AT: _U}),
        ],
        "bibasilar": [
            ("t", "{Sev} bibasilar atelectasis.", {AT: _P}),
            ("p", "There is {sev} bibasilar atelectasis.", {AT: _P}),
            ("p", "{Sev} atelectasis at both lung bases.", {AT: _P}),
            ("v", "{Sev} bibasilar opacities likely reflect atelectasis.", {LO: _P, AT: _U}),
        ],
        "retrocardiac": [
            ("t", "{Sev} retrocardiac atelectasis.", {AT: _P}),
            ("t", "{Sev} left lower lobe atelectasis.", {AT: _P}),
            ("p", "There is {sev} atelectasis in the left lower lobe.", {AT: _P}),
            ("v", "{Sev} retrocardiac opacity likely reflects atelectasis.", {LO: _P, AT: _U}),
        ],
        "hedge": [
            ("t", "Possible {sev} {adj} atelectasis.", {AT: _U}),
            ("p", "{Sev} {adj} atelectasis is not excluded.", {AT: _U}),
        ],
        "impression": [("t", "{Sev} {adj} atelectasis.", {AT: _P})],
    },
    "nodule": {
        "certain": [
            ("t", "{n} cm {adj} {word}.", {LL: _P}),
            ("p", "There is a {n} cm {word} in {noun}.", {LL: _P}),
            ("p", "A {n} cm rounded {word} projects over {noun}.", {LL: _P}),
            ("v", "A well-circumscribed {n} x {m} cm {word} is seen in {noun}.", {LL: _P}),
        ],
        "hedge": [
            ("t", "Possible {n} cm {word} in {noun}.", {LL: _U}),
            ("p", "A {word} in {noun}, measuring approximately {n} cm, cannot be excluded.", {LL: _U}),
        ],
        "impression": [("t", "{n} cm {adj} {word}.", {LL: _P})],
    },
    "cardiomegaly": {
        "certain": [
            ("t", "{Sev} cardiomegaly.", {CM: _P}),
            ("p", "The heart is {adv} enlarged.", {CM: _P}),
            ("p", "Heart size is {adv} enlarged.", {CM: _P}),
            ("p", "There is {sev} cardiomegaly.", {CM: _P}),
            ("v", "The cardiac silhouette is {adv} enlarged.", {CM: _P, EC: _P}),
            ("v", "There is {sev} enlargement of the cardiac silhouette.", {CM: _P, EC: _P}),
        ],
        "hedge": [
            ("t", "Possible {sev} cardiomegaly.", {CM: _U}),
            ("p", "Heart size is borderline, possibly {adv} enlarged.", {CM: _U}),
        ],
        "hedge_ap": [("v", "Heart size is likely exaggerated by AP technique, possibly {adv} enlarged.", {CM: _U})],
        "impression": [("t", "{Sev} cardiomegaly.", {CM: _P})],
    },
    "edema": {
        "grade1": [
            ("t", "Mild pulmonary vascular congestion.", {ED: _P}),
            ("p", "There is mild pulmonary vascular congestion.", {ED: _P}),
            ("v", "Mild engorgement of the perihilar pulmonary vasculature is consistent with vascular congestion.", {ED: _P}),
        ],
        "grade2": [
            ("t", "Moderate interstitial pulmonary edema.", {ED: _P}),
            ("p", "There is moderate pulmonary edema with perihilar haziness.", {ED: _P, LO: _P}),
            ("p", "Moderate interstitial edema with septal lines.", {ED: _P}),
            ("v", "Moderate pulmonary edema is present, with perihilar haziness and Kerley B lines.", {ED: _P, LO: _P}),
        ],
        "grade3": [
            ("t", "Severe pulmonary edema.", {ED: _P}),
            ("p", "Severe pulmonary edema with bilateral perihilar airspace opacities.", {ED: _P, LO: _P}),
            ("p", "Severe diffuse alveolar pulmonary edema.", {ED: _P}),
            ("v", "There are extensive bilateral perihilar airspace opacities consistent with severe alveolar pulmonary edema.", {ED: _P, LO: _P}),
        ],
        "hedge": [
            ("t", "Possible {sev} pulmonary vascular congestion.", {ED: _U}),
            ("p", "{Sev} pulmonary edema is not excluded.", {ED: _U}),
        ],
        "impression": [("t", "{Sev} pulmonary edema.", {ED: _P})],
        "impression_grade1": [("t", "Mild pulmonary vascular congestion.", {ED: _P})],
    },
    "ett": {
        "certain": [
            ("t", "ETT {n} cm above the carina.", {SD: _P}),
            ("p", "Endotracheal tube terminates {n} cm above the carina.", {SD: _P}),
            ("p", "The ET tube tip is {n} cm above the carina.", {SD: _P}),
            ("v", "The endotracheal tube is in standard position, with its tip approximately {n} cm above the carina.", {SD: _P}),
        ],
        "low": [("p", "Endotracheal tube terminates {n} cm above the carina; recommend withdrawal by approx. 2 cm.", {SD: _P})],
        "high": [("p", "Endotracheal tube terminates high, {n} cm above the carina.", {SD: _P})],
    },
    "enteric": {
        "certain": [
            ("t", "NG tube in the stomach.", {SD: _P}),
            ("t", "OG tube tip in the stomach.", {SD: _P}),
            ("p", "An enteric tube courses below the diaphragm with its tip in the stomach.", {SD: _P}),
            ("p", "Nasogastric tube terminates in the stomach.", {SD: _P}),
            ("v", "An enteric tube is seen coursing below the diaphragm, with the tip in the stomach.", {SD: _P}),
        ],
    },
    "central_line": {
        "certain": [
            ("t", "{Side} IJ line tip in the {tip}.", {SD: _P}),
            ("p", "{Side} internal jugular central venous catheter terminates in the {tip}.", {SD: _P}),
            ("p", "{Side} IJ central line tip is in the {tip}.", {SD: _P}),
            ("v", "A {side}-sided internal jugular central venous catheter is present, with its tip in the {tip}.", {SD: _P}),
        ],
    },
    "pacemaker": {
        "certain": [
            ("t", "{Side}-sided pacemaker, leads in standard position.", {SD: _P}),
            ("p", "{Side}-sided pacemaker device with leads terminating in the heart.", {SD: _P}),
            ("p", "A {side} chest wall pacemaker is present, with leads in expected position.", {SD: _P}),
            ("v", "A dual-lead {side}-sided pacemaker is in place, with leads in standard position.", {SD: _P}),
        ],
    },
}


def _pick_template(rng: np.random.Generator, options: list[tuple[str, str, dict[str, float]]], registers: tuple[float, float, float]) -> tuple[str, dict[str, float]]:
    weights = np.array([registers["tpv".index(reg)] for reg, _, _ in options], dtype=float) + 1e-3
    reg, text, labels = options[int(rng.choice(len(options), p=weights / weights.sum()))]
    return text, labels


def finding_sentence(f: Finding, index: int, section: str, rng: np.random.Generator, registers: tuple[float, float, float], supine_ap: bool = False) -> Sentence:
    """The sentence describing finding ``f`` (study finding number ``index``) in ``section``."""
    impression = section == "IMPRESSION"
    hedged = f.certainty == -1
    key = f.subtype if f.kind == "device" else f.kind
    table = _TEMPLATES[key]
    values: dict[str, str] = {}
    if f.kind in _SEVERITY:
        values["sev"] = _choice(rng, _SEVERITY[f.kind][f.grade])
    if f.kind == "cardiomegaly":
        values["adv"] = _choice(rng, _ADVERB[f.grade])
    if f.laterality in ("right", "left"):
        values["side"] = f.laterality
    if f.kind in ("consolidation", "atelectasis", "nodule"):
        values["adj"], values["noun"] = _location(f, rng)
    group = "certain"
    if f.kind == "consolidation":
        pneumonia = f.subtype == "pneumonia"
        if hedged:
            group = "hedge_pneumonia" if pneumonia and rng.random() < 0.6 else "hedge"
        elif impression:
            group = "impression_pneumonia" if pneumonia else "impression"
        else:
            group = "pneumonia" if pneumonia and rng.random() < 0.6 else "certain"
    elif f.kind == "effusion":
        bilateral = f.laterality == "bilateral"
        if hedged:
            group = "hedge_bilateral" if bilateral else "hedge"
        elif impression:
            group = "impression_bilateral" if bilateral else "impression"
        else:
            group = "bilateral" if bilateral else "certain"
    elif f.kind == "pneumothorax":
        values["where_adj"] = "apical" if f.zone == "apex" else "lateral"
        values["where"] = "at the apex" if f.zone == "apex" else "along the lateral chest wall"
        values["n"] = f"{f.size_cm:.1f}"
        group = "hedge" if hedged else "impression" if impression else "certain"
    elif f.kind == "atelectasis":
        if hedged:
            group = "hedge"
        elif impression:
            group = "impression"
        else:
            group = {"plate": "certain", "bibasilar": "bibasilar", "retrocardiac": "retrocardiac"}[f.subtype]
    elif f.kind == "nodule":
        values["n"] = f"{f.size_cm:.1f}"
        values["m"] = f"{max(0.5, round(f.size_cm * float(rng.uniform(0.75, 0.95)), 1)):.1f}"
        values["word"] = "mass" if f.size_cm >= 3.0 else "nodule"
        group = "hedge" if hedged else "impression" if impression else "certain"
    elif f.kind == "cardiomegaly":
        if hedged:
            group = "hedge_ap" if supine_ap and rng.random() < 0.5 else "hedge"
        else:
            group = "impression" if impression else "certain"
    elif f.kind == "edema":
        if hedged:
            group = "hedge"
        elif impression:
            group = "impression_grade1" if f.grade == 1 else "impression"
        else:
            group = f"grade{f.grade}"
    elif f.subtype == "ett":
        values["n"] = f"{f.size_cm:.1f}"
        group = "low" if f.size_cm < 3.0 else "high" if f.size_cm > 6.0 else "certain"
    elif f.subtype == "central_line":
        values["tip"] = f.zone
    template, labels = _pick_template(rng, table[group], registers)
    text = _fill(template, values)
    kind = "hedge" if all(v == _U for v in labels.values()) else "finding"
    return Sentence(text, kind, tuple(labels.items()), index, f.laterality, "", TOPIC_OF_KIND[f.kind])


# --- normal statements, negations, non-visual sentences -------------------------------------------------


def _normal(text: str, region: str, topic: str, labels: dict[str, float] | None = None) -> Sentence:
    return Sentence(text, "normal", tuple((labels or {}).items()), -1, "", region, topic)


def _negation(text: str, topic: str, labels: dict[str, float], laterality: str = "") -> Sentence:
    return Sentence(text, "negation", tuple(labels.items()), -1, laterality, "", topic)


def _non_visual(text: str) -> Sentence:
    return Sentence(text, "non_visual", (), -1, "", "", "other")


def normal_and_negations(ctx: ReportContext, style: Style, rng: np.random.Generator) -> list[Sentence]:
    """Normal statements for clear regions and negations of absent findings."""
    kinds = {f.kind for f in ctx.findings}
    lung_sides = {s for f in ctx.findings if f.kind in ("consolidation", "atelectasis", "nodule", "edema", "pneumothorax") for s in f.sides}
    effusion_sides = {s for f in ctx.findings if f.kind == "effusion" for s in f.sides}
    p = style.normal_detail
    out: list[Sentence] = []

    def maybe(prob: float) -> bool:
        return rng.random() < prob

    # lungs
    if not lung_sides:
        if maybe(p):
            out.append(_normal(_choice(rng, ("The lungs are clear.", "Lungs are clear.", "The lungs are well expanded and clear.")), "lungs", "lungs"))
    else:
        for side in ("right", "left"):
            if side not in lung_sides and maybe(0.6 * p):
                out.append(_normal(f"The {side} lung is clear.", f"{side}_lung", "lungs"))
    pleura_done = False
    if not kinds & {"consolidation", "effusion", "pneumothorax"} and maybe(0.5 * p):
        out.append(_negation(_choice(rng, ("No focal consolidation, pleural effusion, or pneumothorax.", "There is no focal consolidation, pleural effusion or pneumothorax.")), "pleura", {CO: 0.0, PE: 0.0, PX: 0.0}))
        pleura_done = True
    if "consolidation" not in kinds and not pleura_done and maybe(0.7 * p):
        out.append(_negation(_choice(rng, ("No focal consolidation.", "There is no focal consolidation.")), "lungs", {CO: 0.0}))
    if not pleura_done:
        if not kinds & {"effusion", "pneumothorax"}:
            if maybe(0.95 * p + 0.05):
                out.append(_negation(_choice(rng, ("No pleural effusion or pneumothorax.", "There is no pleural effusion or pneumothorax.", "No effusion or pneumothorax.")), "pleura", {PE: 0.0, PX: 0.0}))
        else:
            if "pneumothorax" not in kinds and maybe(0.85 * p):
                out.append(_negation(_choice(rng, ("No pneumothorax.", "There is no pneumothorax.")), "pleura", {PX: 0.0}))
            if "effusion" not in kinds and maybe(0.7 * p):
                out.append(_negation(_choice(rng, ("No pleural effusion.", "There is no pleural effusion.")), "pleura", {PE: 0.0}))
            elif len(effusion_sides) == 1 and maybe(0.3 * p):
                other = "left" if "right" in effusion_sides else "right"
                out.append(_negation(f"No {other} pleural effusion.", "pleura", {PE: 0.0}, laterality=other))
    opacity_free = not kinds & {"consolidation", "atelectasis"} and not any(f.kind == "edema" and f.grade >= 2 for f in ctx.findings)
    if opacity_free and maybe(0.5 * p):
        text, labels = [
            ("No focal opacity.", {LO: 0.0}),
            ("No focal airspace opacity.", {LO: 0.0}),
            ("No focal opacity to suggest pneumonia.", {LO: 0.0, PN: 0.0}),
        ][int(rng.integers(3))]
        out.append(_negation(text, "lungs", labels))
    if "consolidation" not in kinds and maybe((0.5 if ctx.infection else 0.25) * p):
        out.append(_negation(_choice(rng, ("No evidence of pneumonia.", "There is no radiographic evidence of pneumonia.")), "lungs", {PN: 0.0}))
    if not kinds & {"device"} and maybe((0.5 if ctx.portable else 0.2) * p):
        out.append(_negation(_choice(rng, ("No lines or tubes are seen.", "No support devices are present.")), "devices", {SD: 0.0}))
    if "edema" not in kinds and maybe((0.75 if ctx.heart_failure or "cardiomegaly" in kinds else 0.5) * p):
        out.append(_negation(_choice(rng, ("No pulmonary edema.", "There is no pulmonary edema.", "No evidence of pulmonary vascular congestion or edema.")), "lungs", {ED: 0.0}))
    if "nodule" not in kinds and maybe(0.45 * p):
        out.append(_negation(_choice(rng, ("No suspicious pulmonary nodules.", "No focal nodules or masses.")), "lungs", {LL: 0.0}))
    if "atelectasis" not in kinds and maybe(0.3 * p):
        out.append(_negation(_choice(rng, ("No atelectasis.", "There is no atelectasis.")), "lungs", {AT: 0.0}))
    # heart and mediastinum
    if "cardiomegaly" not in kinds:
        if maybe(0.95 * p):
            text, labels, region = [
                ("Heart size is normal.", {CM: 0.0}, "heart"),
                ("The heart is normal in size.", {CM: 0.0}, "heart"),
                ("Normal heart size.", {CM: 0.0}, "heart"),
                ("The cardiomediastinal silhouette is normal.", {EC: 0.0}, "cardiomediastinal"),
                ("The cardiac silhouette is within normal limits.", {CM: 0.0, EC: 0.0}, "heart"),
            ][int(rng.integers(5))]
            out.append(_normal(text, region, "heart", labels))
        if maybe(0.5 * p):
            out.append(_normal(_choice(rng, ("The mediastinal and hilar contours are normal.", "Mediastinal contours are unremarkable.")), "mediastinum", "mediastinum", {EC: 0.0}))
    # bones
    if maybe(0.4 * p):
        out.append(_normal(_choice(rng, ("No acute osseous abnormality.", "Osseous structures are unremarkable.", "The visualized osseous structures are intact.")), "", "bones"))
    if maybe(0.12 * p):
        out.append(_negation("No displaced rib fractures.", "bones", {FR: 0.0}))
    return out


def spurious_hedge(ctx: ReportContext, rng: np.random.Generator) -> Sentence | None:
    """A hedge about something that is not drawn (uncertain label, no image correlate)."""
    kinds = {f.kind for f in ctx.findings}
    options = []
    if "consolidation" not in kinds:
        options += [("Early pneumonia cannot be excluded.", {PN: _U}, "lungs"), ("Cannot exclude early pneumonia in the appropriate clinical setting.", {PN: _U}, "lungs")]
    if "effusion" not in kinds:
        options += [("A trace pleural effusion cannot be excluded.", {PE: _U}, "pleura")]
    if "edema" not in kinds:
        options += [("Possible mild pulmonary vascular congestion.", {ED: _U}, "lungs")]
    if not options:
        return None
    text, labels, topic = options[int(rng.integers(len(options)))]
    return Sentence(text, "hedge", tuple(labels.items()), -1, "", "", topic)


def _time(rng: np.random.Generator) -> str:
    hour, minute = int(rng.integers(1, 13)), int(rng.integers(0, 60))
    return f"{hour}:{minute:02d} {_choice(rng, ('a.m.', 'p.m.'))}"


def notification(rng: np.random.Generator) -> Sentence:
    t = _time(rng)
    return _non_visual(
        _choice(
            rng,
            (
                f"Dr. ___ was notified of the findings by telephone at {t} on ___.",
                f"These findings were discussed with Dr. ___ at {t}, ___ minutes after discovery.",
                f"Findings were communicated by Dr. ___ to Dr. ___ via telephone at {t}",
            ),
        )
    )


def technique_sentence(ctx: ReportContext, rng: np.random.Generator) -> Sentence:
    if ctx.portable:
        pos = "supine" if ctx.supine else "upright"
        return _non_visual(_choice(rng, (f"Single portable {pos} AP view of the chest.", f"Portable {pos} AP radiograph of the chest provided.", "AP portable view of the chest.")))
    frontal = ctx.frontal_views[0]
    if ctx.lateral:
        return _non_visual(_choice(rng, (f"{frontal} and lateral views of the chest provided.", "Frontal and lateral views of the chest were obtained.")))
    return _non_visual(_choice(rng, (f"Single {frontal} view of the chest.", "Single frontal view of the chest provided.")))


def comparison_sentence(ctx: ReportContext, rng: np.random.Generator) -> Sentence:
    if ctx.has_prior:
        return _non_visual(
            _choice(
                rng,
                (
                    "Comparison is made to the prior study from ___.",
                    "Compared to the prior radiograph of ___, there has been no significant interval change.",
                    "Since the prior study, the overall appearance is similar.",
                ),
            )
        )
    return _non_visual(_choice(rng, ("No prior studies are available for comparison.", "There are no prior chest radiographs available for comparison.")))


# --- report assembly ------------------------------------------------------------------------------


def _wrap(text: str, width: int = 78) -> list[str]:
    """Hard-wrap like MIMIC-CXR: every line starts with one space and stays under 80 characters."""
    wrapper = textwrap.TextWrapper(width=width, break_long_words=False, break_on_hyphens=False)
    return [" " + line for line in wrapper.wrap(text)] or [" "]


def _indication(ctx: ReportContext, rng: np.random.Generator) -> str:
    if ctx.icu:
        reasons, questions = ("intubated patient", "respiratory failure", "s/p line placement", "hypoxia"), ("eval ETT placement", "?ptx", "interval change")
    elif ctx.heart_failure:
        reasons, questions = ("shortness of breath", "CHF exacerbation", "dyspnea on exertion", "leg swelling"), ("eval for volume overload", "?CHF", "?effusion")
    elif ctx.infection:
        reasons, questions = ("fever and cough", "productive cough", "fever, elevated WBC", "hypoxia and fever"), ("?pneumonia", "eval for pneumonia", "eval for infiltrate")
    else:
        reasons, questions = ("chest pain", "cough", "preoperative evaluation", "fall", "weakness"), ("eval for acute process", "?acute cardiopulmonary process", "r/o pneumonia")
    reason, question = _choice(rng, reasons), _choice(rng, questions)
    person = "woman" if ctx.sex == "F" else "man"
    form = int(rng.integers(4))
    if form == 0:
        return f"___ year old {person} with {reason}  // {question}"
    if form == 1:
        return f"History: ___{ctx.sex} with {reason}"
    if form == 2:
        return f"___{ctx.sex} with {reason}  // {question}"
    return _cap(f"{reason}.")


def examination_name(ctx: ReportContext) -> str:
    """The EXAMINATION line, also used as the procedure description in the metadata."""
    if ctx.portable:
        return "CHEST (PORTABLE AP)"
    if ctx.frontal_views and ctx.frontal_views[0] == "AP":
        return "CHEST (AP AND LAT)" if ctx.lateral else "CHEST (SINGLE VIEW)"
    return "CHEST (PA AND LAT)" if ctx.lateral else "CHEST (SINGLE VIEW)"


def _technique(ctx: ReportContext, rng: np.random.Generator) -> str:
    if ctx.portable:
        return _choice(rng, ("Portable AP chest radiograph", "Portable semi-upright AP view of the chest" if not ctx.supine else "Supine portable AP view of the chest"))
    frontal = ctx.frontal_views[0] if ctx.frontal_views else "PA"
    return f"Chest {frontal} and lateral" if ctx.lateral else "Single frontal view of the chest"


def _comparison_header(ctx: ReportContext, rng: np.random.Generator) -> str:
    if ctx.has_prior:
        return _choice(rng, ("___", "Chest radiograph ___", "Prior study from ___", "___ chest radiograph"))
    return _choice(rng, ("None.", "None", "___"))


def write_report(ctx: ReportContext, cfg: SynthCXRConfig, rng: np.random.Generator) -> Report:
    """Write the report of one study.

    :return: the report text (MIMIC-CXR format) and its sentences with section and position
    """
    weights = np.asarray(cfg.style_weights, dtype=float)
    style = STYLES[STYLE_NAMES[int(rng.choice(4, p=weights / weights.sum()))]]
    r = rng.random()
    layout = "no_sections" if r < cfg.no_sections_rate else "impression_only" if r < cfg.no_sections_rate + cfg.impression_only_rate else "full"
    paragraphs = _findings_paragraphs(ctx, cfg, style, rng)
    items = _impression_items(ctx, style, must_cover=layout != "full", rng=rng)
    enumerate_items = len(items) >= 2 and rng.random() < style.enumerate_impression
    return _layout_report(ctx, style, layout, paragraphs, items, enumerate_items, rng)


def _findings_paragraphs(ctx: ReportContext, cfg: SynthCXRConfig, style: Style, rng: np.random.Generator) -> list[list[Sentence]]:
    """The FINDINGS text: an optional opening (technique, comparison), then topic groups in the
    style's order, each with its finding sentences, normal statements and negations."""
    supine_ap = ctx.portable and ctx.supine
    groups: dict[str, list[Sentence]] = defaultdict(list)
    for i in rng.permutation(len(ctx.findings)) if ctx.findings else []:
        f = ctx.findings[int(i)]
        groups[TOPIC_OF_KIND[f.kind]].append(finding_sentence(f, int(i), "FINDINGS", rng, style.registers, supine_ap))
    for s in normal_and_negations(ctx, style, rng):
        groups[s.topic].append(s)
    if rng.random() < cfg.spurious_hedge_rate:
        hedge = spurious_hedge(ctx, rng)
        if hedge is not None:
            groups[hedge.topic].append(hedge)
    paragraphs: list[list[Sentence]] = []
    opening: list[Sentence] = []
    if rng.random() < style.opener:
        opening.append(technique_sentence(ctx, rng))
    if rng.random() < style.comparison * (1.0 if ctx.has_prior else 0.3):
        opening.append(comparison_sentence(ctx, rng))
    if opening:
        paragraphs.append(opening)
    current: list[Sentence] = []
    for topic in style.topic_order + tuple(t for t in sorted(groups) if t not in style.topic_order):
        if not groups.get(topic):
            continue
        if style.paragraphs and current:
            paragraphs.append(current)
            current = []
        current.extend(groups[topic])
    if current:
        paragraphs.append(current)
    if not paragraphs:
        paragraphs.append([technique_sentence(ctx, rng)])
    return paragraphs


def _impression_items(ctx: ReportContext, style: Style, must_cover: bool, rng: np.random.Generator) -> list[Sentence]:
    """The IMPRESSION: the important findings, most urgent first (every finding when there is no
    FINDINGS section to name them), a normal statement when nothing acute is drawn, and
    recommendations / notifications."""
    supine_ap = ctx.portable and ctx.supine
    findings = list(enumerate(ctx.findings))
    chosen = [(k, f) for k, f in findings if must_cover or rng.random() < IMPRESSION_REPEAT[f.kind]]
    if findings and not chosen:
        chosen = [min(findings, key=lambda kf: IMPRESSION_PRIORITY.index(kf[1].kind))]
    chosen.sort(key=lambda kf: (IMPRESSION_PRIORITY.index(kf[1].kind), kf[0]))
    items = [finding_sentence(f, k, "IMPRESSION", rng, style.registers, supine_ap) for k, f in chosen]
    # devices and small nodules are not "acute": such studies still read "no acute process"
    acute = [f for f in ctx.findings if f.kind not in ("device", "nodule") or f.grade >= 2]
    has_nodule = any(f.kind == "nodule" for f in ctx.findings)
    if not acute and not has_nodule:
        options = ("No acute cardiopulmonary process.", "No acute intrathoracic abnormality.", "No acute cardiopulmonary abnormality.")
        items.append(_normal(_choice(rng, options + (() if findings else ("Normal chest radiograph.",))), "", "other"))
        if ctx.infection and rng.random() < 0.4:
            items.append(_negation("No evidence of pneumonia.", "lungs", {PN: 0.0}))
    elif ctx.icu and not any(f.kind == "pneumothorax" for f in ctx.findings) and rng.random() < 0.3:
        items.append(_negation("No pneumothorax.", "pleura", {PX: 0.0}))
    if has_nodule and rng.random() < 0.7:
        items.append(_non_visual(_choice(rng, ("Recommend chest CT for further evaluation.", "Recommend nonemergent chest CT for further characterization."))))
    if any(f.kind == "consolidation" and f.subtype == "pneumonia" for f in ctx.findings) and rng.random() < 0.3:
        items.append(_non_visual("Follow-up radiographs after treatment are recommended to document resolution."))
    if any(f.kind == "pneumothorax" or (f.kind == "consolidation" and f.grade >= 2) for f in ctx.findings) and rng.random() < 0.5:
        items.append(notification(rng))
    if rng.random() < 0.12:
        items.append(_non_visual(_choice(rng, ("Clinical correlation is recommended.", "Please correlate with the clinical history of ___.", "Correlation with prior imaging from ___ is recommended if available."))))
    return items


def _layout_report(
    ctx: ReportContext,
    style: Style,
    layout: str,
    paragraphs: list[list[Sentence]],
    items: list[Sentence],
    enumerate_items: bool,
    rng: np.random.Generator,
) -> Report:
    """The report text with its headers, and the sentences as written in it."""
    placed: list[PlacedSentence] = []
    lines = [" " * 33 + "FINAL REPORT"]
    if layout == "no_sections":
        # an older free-text layout: the loaders must drop it (no FINDINGS, no IMPRESSION)
        lines += [f" {examination_name(ctx).replace('CHEST', 'CHEST RADIOGRAPH', 1)} ___", " "]
        lines += _wrap(f"COMPARISON:  {_comparison_header(ctx, rng)}") + [" "]
        lines += _wrap(f"CLINICAL HISTORY:  {_indication(ctx, rng)}") + [" "]
        # the findings paragraphs already name every finding; keep the impression's non-visual notes
        body = [s for paragraph in paragraphs for s in paragraph] + [s for s in items if s.kind == "non_visual"]
        lines += _wrap(style.joiner.join(s.text for s in body))
        placed += [PlacedSentence("", i, s.text, s) for i, s in enumerate(body)]
        return Report("\n".join(lines) + "\n", style.name, layout, tuple(placed))
    lines += [f" EXAMINATION:  {examination_name(ctx)}", " "]
    lines += _wrap(f"INDICATION:  {_indication(ctx, rng)}") + [" "]
    if rng.random() < 0.85:
        lines += _wrap(f"TECHNIQUE:  {_technique(ctx, rng)}") + [" "]
    lines += _wrap(f"COMPARISON:  {_comparison_header(ctx, rng)}") + [" "]
    if layout == "full":
        lines += [" FINDINGS: ", " "]
        for paragraph in paragraphs:
            lines += _wrap(style.joiner.join(s.text for s in paragraph)) + [" "]
            for s in paragraph:
                placed.append(PlacedSentence("FINDINGS", len(placed), s.text, s))
    lines += [" IMPRESSION: ", " "]
    written = [f"{i + 1}. {s.text}" if enumerate_items else s.text for i, s in enumerate(items)]
    if enumerate_items and style.items_on_lines:
        for w in written:
            lines += _wrap(w)
    else:
        lines += _wrap(style.joiner.join(written))
    for w, s in zip(written, items):
        placed.append(PlacedSentence("IMPRESSION", len(placed), w, s))
    return Report("\n".join(lines) + "\n", style.name, layout, tuple(placed))
