"""The rule sentence splitter is linear in the length of a line and splits exactly as rules-v1 did.

``_split_piece_v1`` below is the implementation of a53f9dd (quadratic: it sliced the rest of the
line at every candidate period); the current one must give the same sentences on every input.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from localign.data import reports
from localign.data.reports import _CANDIDATE, _MAYBE_FINAL, _NEVER_FINAL, _split_piece, extract_sections, split_sentences

from . import test_reports

_PREV_CHUNK = re.compile(r"(\S*)$")
_ENUM_MARKER = re.compile(r"^\(?\d{1,2}$")


def _split_piece_v1(piece: str) -> list[str]:
    """rules-v1's piece splitter as of a53f9dd, kept as the reference."""
    sentences: list[str] = []
    start = 0
    for m in _CANDIDATE.finditer(piece):
        end = m.end()
        rest = piece[end:]
        if not rest.strip():
            break
        punct = m.group().rstrip("\"')]")
        chunk = _PREV_CHUNK.search(piece, 0, m.start()).group(1).lstrip("\"'([").lower()
        if not rest[0].isspace():
            boundary = (
                punct == "."
                and bool(re.search(r"[a-z]{2}$", chunk))
                and chunk not in _NEVER_FINAL | _MAYBE_FINAL
                and bool(re.match(r"[A-Z][a-z]", rest))
            )
        else:
            nxt = rest.lstrip()
            so_far = piece[start : m.start()].strip()
            if nxt[0].islower():
                boundary = False
            elif punct.endswith(".") and chunk in _NEVER_FINAL:
                boundary = False
            elif punct.endswith(".") and chunk in _MAYBE_FINAL:
                boundary = nxt[0].isupper()
            elif punct == "." and _ENUM_MARKER.match(so_far):
                boundary = False
            else:
                boundary = True
        if boundary:
            sentences.append(piece[start:end])
            start = end
    sentences.append(piece[start:])
    return sentences


def _existing_cases() -> list[str]:
    """Every text the splitter tests of test_reports.py use."""
    tricky = test_reports.test_split_sentences_tricky_cases.pytestmark[0].args[1]
    texts = [text for text, _ in tricky]
    for report in (test_reports.REPORT_FULL, test_reports.REPORT_ENUMERATED, test_reports.REPORT_SYNONYMS,
                   test_reports.REPORT_NO_FINDINGS, test_reports.REPORT_WRAPPED):
        texts.append(report)
        texts.extend(extract_sections(report).values())
    return texts


# Pieces that stress every rule: abbreviations, openers/closers, numbers, case, odd whitespace.
_ATOMS = ["Dr", "dr", "e.g", "i.e", "a.m", "p.m", "etc", "approx", "vs", "1", "12", "3)", "(", "\"", "'", ")", "]", "[",
          ".", ".", ".", "?", "!", " ", " ", "  ", "\t", "\u00a0", "Lungs", "clear", "The", "x", "ab", "AB", "É", "é", "___"]


def _fuzz(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(_ATOMS, size=int(rng.integers(1, 30)))) for _ in range(n)]


@pytest.mark.parametrize("text", _existing_cases())
def test_same_sentences_as_rules_v1_on_the_existing_cases(text, monkeypatch):
    new = split_sentences(text, "rules")
    monkeypatch.setattr(reports, "_split_piece", _split_piece_v1)
    assert new == split_sentences(text, "rules")


def test_same_pieces_as_rules_v1_on_random_text():
    for text in _fuzz(3000):
        assert _split_piece(text) == _split_piece_v1(text), repr(text)


class _CountingStr(str):
    """A str that counts the characters its indexing and slicing hand out."""

    handed_out = 0

    def __getitem__(self, key):
        out = str.__getitem__(self, key)
        _CountingStr.handed_out += len(out)
        return out


def _characters_read(text: str) -> int:
    _CountingStr.handed_out = 0
    _split_piece(_CountingStr(text))
    return _CountingStr.handed_out


@pytest.mark.parametrize("unit", [". ", "The lungs are clear. ", "a.b.c.", "Dr. ___ saw it at 10 a.m. vs. 9 p.m. "])
def test_work_grows_linearly_with_the_line(unit):
    # rules-v1 sliced the rest of the line at every candidate: 4x the work for 2x the text.
    small, large = unit * (4096 // len(unit)), unit * (8192 // len(unit))
    assert _characters_read(large) <= 2.2 * _characters_read(small) + 64


def test_fifty_kilobytes_of_periods_is_one_report_without_sentences():
    assert split_sentences(". " * 25_600, "rules") == []
    assert split_sentences("No effusion. " + ". " * 25_600 + "Heart normal.", "rules") == ["No effusion.", "Heart normal."]
