"""SynthCXR reports and hidden states without images: label aggregation, paraphrases, layout rates,
laterality words, numbers, and the drawing of single findings on the correct side."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest

from localign.data.layout import CHEXPERT_LABELS
from localign.data.synthcxr import SynthCXRConfig
from localign.data.synthcxr.anatomy import sample_acquisition, sample_anatomy
from localign.data.synthcxr.findings import Finding, sample_study_state
from localign.data.synthcxr.render import render_frontal
from localign.data.synthcxr.reports import (
    HEDGE_CUES,
    REGION_CODES,
    ReportContext,
    Sentence,
    aggregate_labels,
    finding_sentence,
    write_report,
)

CFG = SynthCXRConfig()


def _context(state, has_prior: bool = False) -> ReportContext:
    portable = state.icu
    return ReportContext("M", ("AP",) if portable else ("PA",), not portable, portable, portable, has_prior, state.icu, state.heart_failure, state.infection, state.findings)


def _reports(n: int, cfg: SynthCXRConfig = CFG, seed: int = 0):
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        state = sample_study_state(cfg, rng)
        out.append((state, write_report(_context(state, has_prior=i % 3 == 0), cfg, rng)))
    return out


def test_aggregation_follows_the_chexpert_labeler() -> None:
    def s(*labels):
        return Sentence("x", "finding", tuple(labels))

    out = aggregate_labels([s(("Edema", 0.0)), s(("Edema", -1.0)), s(("Cardiomegaly", 0.0)), s(("Cardiomegaly", 1.0)), s(("Pneumonia", -1.0)), s(("Pneumonia", 1.0))])
    assert out["Edema"] == -1.0 and out["Cardiomegaly"] == 1.0 and out["Pneumonia"] == 1.0
    assert math.isnan(out["Atelectasis"]) and math.isnan(out["No Finding"])
    # support devices alone, or negations only, leave "No Finding" positive
    assert aggregate_labels([s(("Support Devices", 1.0)), s(("Pleural Effusion", 0.0))])["No Finding"] == 1.0
    assert math.isnan(aggregate_labels([s(("Lung Lesion", -1.0))])["No Finding"])
    assert set(aggregate_labels([])) == set(CHEXPERT_LABELS)
    with pytest.raises(ValueError, match="No Finding"):
        aggregate_labels([s(("No Finding", 1.0))])


def test_every_finding_is_named_with_its_side_and_numbers() -> None:
    for state, report in _reports(300):
        named = {p.sentence.finding_index for p in report.sentences}
        assert set(range(len(state.findings))) <= named
        for placed in report.sentences:
            s = placed.sentence
            words = set(re.findall(r"\b(right|left)\b", s.text.lower()))
            if s.finding_index >= 0:
                f = state.findings[s.finding_index]
                allowed = {f.laterality} if f.laterality in ("right", "left") else {"right", "left"} if f.laterality == "bilateral" else set()
                assert words <= allowed, s.text
                if f.kind == "nodule":
                    assert re.search(rf"\b{f.size_cm:.1f}( x \d+\.\d)? cm\b", s.text), s.text
                if f.subtype == "ett":
                    assert f"{f.size_cm:.1f} cm above the carina" in s.text
            elif s.kind == "normal" and s.region in ("right_lung", "left_lung"):
                assert words == {s.region.split("_")[0]}, s.text
            elif s.kind != "negation":
                assert not words, s.text  # else only lateralised negations ("No left pleural effusion.") have a side
            assert s.kind in ("finding", "negation", "hedge", "normal", "non_visual")
            assert s.region == "" or s.region in REGION_CODES


def test_sentence_kinds_match_their_labels_and_cues() -> None:
    kinds = set()
    for _, report in _reports(300):
        for placed in report.sentences:
            s = placed.sentence
            kinds.add(s.kind)
            values = [v for _, v in s.labels]
            if s.kind == "hedge":
                assert values and set(values) == {-1.0} and any(c in s.text.lower() for c in HEDGE_CUES), s.text
            if s.kind == "negation":
                assert values and set(values) == {0.0}, s.text
            if s.kind == "non_visual":
                assert not values and s.finding_index < 0
            if s.kind == "finding":
                assert 1.0 in values
    assert kinds == {"finding", "negation", "hedge", "normal", "non_visual"}


def test_report_text_features() -> None:
    reports = [report for _, report in _reports(400)]
    texts = [report.text for report in reports]
    joined = "\n".join(texts)
    for feature in ("Dr. ___", " a.m.", " p.m.", "1. ", "2. ", " cm ", " vs. ", "ETT", "approx."):
        assert feature in joined, feature
    for text in texts:
        assert max(len(line) for line in text.split("\n")) < 80
    # enumerated impressions number their items 1, 2, ... as written in the text
    enumerated = 0
    for report in reports:
        items = [p.written for p in report.sentences if p.section == "IMPRESSION"]
        if items and items[0].startswith("1. "):
            enumerated += 1
            assert [w.split(". ", 1)[0] for w in items] == [str(i + 1) for i in range(len(items))]
            flat = " ".join(report.text.split())
            assert all(w in flat for w in items)
    assert enumerated > 20


def test_section_layout_rates_follow_the_config() -> None:
    cfg = dataclasses.replace(CFG, impression_only_rate=0.3, no_sections_rate=0.1)
    layouts = [report.layout for _, report in _reports(600, cfg, seed=5)]
    share = {k: layouts.count(k) / len(layouts) for k in ("impression_only", "no_sections")}
    assert share["impression_only"] == pytest.approx(0.3, abs=0.06)
    assert share["no_sections"] == pytest.approx(0.1, abs=0.04)
    for state, report in _reports(200, cfg, seed=5):
        sections = {p.section for p in report.sentences}
        expected = {"full": {"FINDINGS", "IMPRESSION"}, "impression_only": {"IMPRESSION"}, "no_sections": {""}}[report.layout]
        assert sections == expected
        assert (" FINDINGS: " in report.text) == report.has_findings
        assert (" IMPRESSION: " in report.text) == report.has_impression


def test_cooccurrence_knob() -> None:
    def edema_given_cardiomegaly(cfg: SynthCXRConfig) -> tuple[float, float]:
        states = [sample_study_state(cfg, np.random.default_rng([9, i])) for i in range(3000)]
        cm = np.array([any(f.kind == "cardiomegaly" for f in s.findings) for s in states])
        ed = np.array([any(f.kind == "edema" for f in s.findings) for s in states])
        return ed[cm].mean(), ed[~cm].mean()

    with_cause, without = edema_given_cardiomegaly(CFG)
    assert with_cause > 2 * without
    independent = edema_given_cardiomegaly(dataclasses.replace(CFG, cooccurrence=0.0))
    assert independent[0] == pytest.approx(independent[1], abs=0.06)


def test_hedged_findings_are_hedged_in_every_sentence() -> None:
    f = Finding("effusion", "left", "base", 1, 7, certainty=-1)
    for i in range(30):
        rng = np.random.default_rng(i)
        for section in ("FINDINGS", "IMPRESSION"):
            s = finding_sentence(f, 0, section, rng, (0.3, 0.4, 0.3))
            assert s.kind == "hedge" and dict(s.labels) == {"Pleural Effusion": -1.0} and "left" in s.text


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kind", ["consolidation", "effusion", "pneumothorax", "nodule", "atelectasis"])
def test_a_finding_is_drawn_on_its_side(kind: str, side: str) -> None:
    """Patient's right = viewer's left, whatever the view, rotation or body habitus."""
    for seed in range(3):
        rng = np.random.default_rng([kind == "nodule", seed])
        anatomy = sample_anatomy(rng)
        view = "AP" if seed == 2 else "PA"
        acq = sample_acquisition(rng, anatomy, view, supine=seed == 2, noise=2.0)
        zone = {"effusion": "base", "pneumothorax": "apex", "atelectasis": "base"}.get(kind, "lower")
        f = Finding(kind, side, zone, 2, 100 + seed, size_cm=2.0 if kind in ("nodule", "pneumothorax") else 0.0, subtype="plate" if kind == "atelectasis" else "")
        image = render_frontal(anatomy, acq, (f,), 96, 88, rng)
        mask = image.masks[0]
        assert mask.any()
        centre = np.nonzero(mask)[1].mean()
        assert (centre < 44) == (side == "right")
        # the flipped mask would sit on the other side: a flip makes the report wrong
        assert (np.nonzero(mask[:, ::-1])[1].mean() < 44) == (side == "left")
