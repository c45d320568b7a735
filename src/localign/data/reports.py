"""Free-text radiology reports: section extraction, sentence splitting, token counts.

Section extraction re-implements the header rules of the official MIMIC-CXR code
(MIT-LCP/mimic-cxr ``txt/section_parser.py``), which LoVT also uses
(``src/data/datasets/mimic_cxr/section_parser.py``):

- a header is an all-caps name at the start of a line followed by a colon and one whitespace
  character, the regex ``\\n ([A-Z ()/,-]+):\\s``;
- after a header, the search for the next one starts at the end of the header's line ("skip past
  the first newline to avoid some bad parses"), so a header line never holds two headers;
- names are lower-cased and normalised through the official synonym/typo table
  (:data:`SECTION_SYNONYMS`), then by substring (``"impressions"`` -> ``impression``), then by the
  official "describes the whole study" patterns (``"chest, pa and lateral"`` -> ``findings``);
- text before the first header is the ``preamble``; a report without any header is one
  ``full report`` section.

Two documented deviations from the official parser, neither of which changes a MIMIC-CXR 2.0.0
report whose lines are indented by one space: the leading space before a header is optional, and a
header on the very first line of the text is found too (the official regex needs a newline first).

Sentence splitting (:func:`split_sentences`) uses Stanza, as LoVT does, only when it is installed
*and* its English tokenize model is on disk (it is never downloaded); otherwise it uses the rule
splitter ``rules-v1`` defined here, which is tuned to radiology prose: decimals, abbreviations
(``Dr.``, ``a.m.``, ``e.g.``, ``vs.``, ``approx.``), enumerations ``1. ... 2. ...``, ``___``
de-identification blanks and line breaks without periods.
"""

from __future__ import annotations

import bisect
import functools
import os
import re
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------

# Lower-cased header name -> normalised section name: the table of the official MIMIC-CXR
# section parser (frequencies in MIMIC-CXR 2.0.0 are given there), re-typed here.
SECTION_SYNONYMS: dict[str, str] = {
    "preamble": "preamble",
    "impression": "impression",
    "comparison": "comparison",
    "indication": "indication",
    "findings": "findings",
    "examination": "examination",
    "technique": "technique",
    "history": "history",
    "comparisons": "comparison",
    "clinical history": "history",
    "reason for examination": "indication",
    "notification": "notification",
    "reason for exam": "indication",
    "clinical information": "history",
    "exam": "examination",
    "clinical indication": "indication",
    "conclusion": "impression",
    "chest, two views": "findings",
    "recommendation(s)": "recommendations",
    "type of examination": "examination",
    "reference exam": "comparison",
    "patient history": "history",
    "addendum": "addendum",
    "comparison exam": "comparison",
    "date": "date",
    "comment": "comment",
    "findings and impression": "impression",
    "wet read": "wet read",
    "comparison film": "comparison",
    "recommendations": "recommendations",
    "findings/impression": "impression",
    "pfi": "history",
    "recommendation": "recommendations",
    "wetread": "wet read",
    # Kept as in the official table although it looks like a slip for "indication" (1 report).
    "ndication": "impression",
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    "findings/ impression": "impression",
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "idication": "indication",
    "reference findings": "findings",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
}

# A name not in the table that *contains* one of these becomes it (checked in this order, so
# "findings and impression"-like names go to impression, as in the official code).
MAIN_SECTIONS: tuple[str, ...] = ("impression", "findings", "history", "comparison", "addendum")

# A name that describes the whole study ("PORTABLE AP VIEW OF THE CHEST") is a findings section.
_WHOLE_STUDY_PATTERN = re.compile(
    "|".join(
        [
            "chest",
            "portable",
            "pa and lateral",
            "lateral and pa",
            "ap and lateral",
            "lateral and ap",
            "frontal and",
            "two views",
            "frontal view",
            "pa view",
            "ap view",
            "one view",
            "lateral view",
            "bone window",
            "frontal upright",
            "frontal semi-upright",
            "ribs",
            "pa and lat",
        ]
    )
)

_HEADER = re.compile(r"\n ?([A-Z ()/,-]+):\s")

# Studies whose sections MIT-LCP's create_section_files.py handles with hand-written rules
# (custom_mimic_cxr_rules: custom section names and custom character ranges). LoVT excludes them
# (split_into_sections returns None), so `localign prepare` skips them with a recorded reason.
MIMIC_CUSTOM_RULE_STUDIES: frozenset[int] = frozenset(
    int(s)
    for s in """
    50913680 59363654 59279892 59768032 57936451 50058765 53356173 53202765 50808053 51966317
    50743547 56451190 59067458 59215320 55124749 54365831 59087630 58157373 56482935 58375018
    54654948 55157853 51491012
    50525523 57564132 59982525 53488209 54875119 50196495 56579911 52648681 59889364 53514462
    59505494 53182247 51410602 56412866 54986978 59003148 57150433 56760320 59562049 52674888
    55258338 59330497 52119491 58235663 50798377 54168089 53071062 56724958 54231141 53607029
    52035334
    """.split()
)


def normalize_section_name(name: str) -> str:
    """Map a raw header name (``"IMPRESSIONS"``, ``"FINDNGS"``) to its normalised lower-case name.

    Same order as the official parser: synonym/typo table, then substring match against
    :data:`MAIN_SECTIONS`, then the whole-study patterns (-> ``findings``); anything else is the
    lower-cased, stripped name itself.
    """
    key = name.lower().strip()
    if key in SECTION_SYNONYMS:
        return SECTION_SYNONYMS[key]
    for main in MAIN_SECTIONS:
        if main in key:
            return main
    if _WHOLE_STUDY_PATTERN.search(key):
        return "findings"
    return key


def _tidy(raw: str) -> str:
    """Strip every line, collapse runs of blank lines into one, trim blank lines at both ends."""
    lines = [line.strip() for line in raw.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def section_spans(text: str) -> list[tuple[str, str]]:
    """All sections of a report in order, as ``(normalised name, raw text)`` pairs.

    Unlike :func:`extract_sections` this keeps repeated and empty sections, so it shows exactly
    what the header rules found.
    """
    # A leading newline lets a header on the first line match the same pattern as the others.
    padded = "\n" + text
    match = _HEADER.search(padded)
    if match is None:
        return [("full report", text)]
    spans: list[tuple[str, str]] = [("preamble", padded[1 : match.start(1)])]
    while match is not None:
        name = normalize_section_name(match.group(1))
        start = match.end()
        # Resume the search at the end of the header's line, as the official parser does.
        newline = padded.find("\n", start)
        resume = start if newline == -1 else newline
        match = _HEADER.search(padded, resume)
        end = len(padded) if match is None else match.start()
        spans.append((name, padded[start:end]))
    return spans


def extract_sections(text: str) -> dict[str, str]:
    """Sections of a MIMIC-CXR-style report, keyed by normalised lower-case name.

    >>> extract_sections("FINAL REPORT\\n FINDINGS: Lungs clear.\\n \\n CONCLUSION: Normal.\\n")
    {'preamble': 'FINAL REPORT', 'findings': 'Lungs clear.', 'impression': 'Normal.'}

    Values keep the report's line structure (each line stripped, runs of blank lines collapsed)
    because :func:`split_sentences` uses line breaks; :func:`clean_text` gives one line. Empty
    sections are removed. When a name occurs more than once (two FINDINGS headers, or
    "FINDINGS AND IMPRESSION" and "IMPRESSION"), the last non-empty one is kept, as in LoVT's
    ``split_into_sections`` and MIT-LCP's ``create_section_files.py``.

    :param text: the full report text, e.g. the content of ``files/p10/p10000032/s50414267.txt``
    :return: ``{name: text}`` in order of first appearance, e.g. keys ``preamble``,
        ``examination``, ``indication``, ``comparison``, ``findings``, ``impression``
    """
    if not isinstance(text, str):
        raise ValueError(f"extract_sections expects a str, got {type(text).__name__}")
    sections: dict[str, str] = {}
    for name, raw in section_spans(text):
        tidy = _tidy(raw)
        if tidy:
            sections[name] = tidy
    return sections


TEXT_RULES = ("findings+impression", "impression", "findings", "findings_or_impression", "longest")


def select_sections(sections: dict[str, str], rule: str = "findings+impression") -> list[tuple[str, str]]:
    """The sections that make up the training text of a report, in order.

    :param sections: output of :func:`extract_sections`
    :param rule: ``"findings+impression"`` (LoVT: findings then impression, whichever exist),
        ``"impression"``, ``"findings"``, ``"findings_or_impression"`` (findings if present, else
        impression; cxr-clip's rule), ``"longest"`` (the one with more tokens; findings on a tie)
    :return: ``[(name, text), ...]``; empty when the rule finds nothing
    """
    if rule not in TEXT_RULES:
        raise ValueError(f"text rule must be one of {TEXT_RULES}, got {rule!r}")
    present = [(name, sections[name]) for name in ("findings", "impression") if sections.get(name)]
    if rule == "findings+impression" or not present:
        return present
    if rule in ("impression", "findings"):
        return [(n, t) for n, t in present if n == rule]
    if rule == "findings_or_impression":
        return present[:1]
    return [max(present, key=lambda nt: (count_tokens(nt[1]), nt[0] == "findings"))]


# ------------------------------------------------------------------------------------------------
# Text cleaning and tokens
# ------------------------------------------------------------------------------------------------

_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """LoVT's ``clean_text(replace_newlines=True)``: newlines become spaces, runs of whitespace
    collapse to one space, and the ends are stripped."""
    return _WHITESPACE.sub(" ", text).strip()


_TOKEN = re.compile(
    r"""
    _{3,}                                            # de-identification blank
  | \b(?:[ap]\.m|e\.g|i\.e)\.                        # dotted abbreviations
  | \b(?:dr|mr|mrs|ms|vs|approx|etc|cf|incl)\.       # abbreviations ending with a period
  | \d+(?:[.,:/]\d+)*                                # numbers: 1.5, 10:15, 3/4
  | [A-Za-z]+(?:['’-][A-Za-z]+)*                     # words, hyphenated words, contractions
  | [^\sA-Za-z0-9_]                                  # any other symbol is its own token
    """,
    re.VERBOSE | re.IGNORECASE,
)


def tokenize(text: str) -> list[str]:
    """Word-level tokens close to Stanza's English tokenizer: words, numbers (``1.5`` is one
    token), abbreviations with their period, ``___`` blanks, and each punctuation mark."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """Number of :func:`tokenize` tokens; LoVT's ``min_section_tokens`` filter counts these."""
    return len(tokenize(text))


# ------------------------------------------------------------------------------------------------
# Sentence splitting: rules-v1
# ------------------------------------------------------------------------------------------------

RULES_SPLITTER = "rules-v1"

# Abbreviations that never end a sentence (the next word belongs to the same sentence).
_NEVER_FINAL = frozenset({"dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "cf", "incl"})
# Abbreviations that end a sentence when a capitalised word follows ("... at 10:15 a.m. The ...").
_MAYBE_FINAL = frozenset({"a.m", "p.m", "etc"})
# A line ending in one of these words is cut mid-sentence, whatever the next line starts with.
_CONTINUING_WORDS = frozenset(
    """the a an of in on at to by for from with without and or but nor is are was were be been
    than as into within over under this that these those which not both either its their his her
    dr mr mrs ms""".split()
)
# A wrapped line is never shorter than this; below it, a line break is taken as deliberate.
_MIN_WRAP_WIDTH = 60
# The first line of a section usually shares its line with the header (" IMPRESSION:  ..."), so it
# is this much longer in the report than in the section text.
_HEADER_WIDTH = len(" IMPRESSION:  ")

_ENUM_LINE = re.compile(r"^\(?\d{1,2}[.)](\s|$)")
_BARE_ENUM = re.compile(r"^\(?\d{1,2}[.)]?$")
_CANDIDATE = re.compile(r"[.?!]+[\"')\]]*")
_HAS_ALNUM = re.compile(r"[A-Za-z0-9]")
_SPACE = re.compile(r"\s")
_NON_SPACE = re.compile(r"\S")
_LEADING_OPENERS = re.compile(r"[\"'(\[]*")
_TWO_LETTERS_END = re.compile(r"[a-z]{2}$")
_CAPITALISED_WORD = re.compile(r"[A-Z][a-z]")
# What precedes an item number's period, whitespace included ("1" of "1.", "(2" of "(2.").
_ENUM_SO_FAR = re.compile(r"\s*\(?\d{1,2}\s*")
_ABBREVIATIONS = _NEVER_FINAL | _MAYBE_FINAL
_LONGEST_ABBREVIATION = max(map(len, _ABBREVIATIONS))


def _is_line_boundary(prev: str, nxt: str, width: int, prev_is_first: bool = False) -> bool:
    """Whether a line break between two non-empty (stripped) lines ends a statement.

    A break after sentence-final punctuation is left to the in-line rules (``Dr.\\n___`` is not a
    boundary). Without punctuation, the break ends a statement when the next line starts a new
    enumeration item, or starts with a capital and its first word would have fitted on the
    previous line (so the writer broke the line on purpose rather than hard-wrapping at ~80
    characters; ``width`` is the longest line seen, and greedy wrapping never leaves room for the
    next word). A line ending in a comma, a hyphen or a word like "the" never ends a statement.
    """
    if _ENUM_LINE.match(nxt):
        return True
    if prev[-1] in ".?!":
        return False
    if prev[-1] in ",;:-/(&" or prev.split()[-1].lower() in _CONTINUING_WORDS:
        return False
    first = nxt.split()[0]
    if not first[0].isupper():
        return False
    prev_width = len(prev) + (_HEADER_WIDTH if prev_is_first else 0)
    return prev_width + 1 + len(first) <= width


def _line_blocks(text: str) -> list[str]:
    """Group the lines of a section into blocks that contain whole sentences (joined by spaces)."""
    lines = [line.strip() for line in text.splitlines()]
    width = max([_MIN_WRAP_WIDTH, *map(len, lines)])
    blocks: list[list[str]] = [[]]
    n_seen = 0
    for line in lines:
        if not line:
            if blocks[-1]:
                blocks.append([])
            continue
        if blocks[-1] and _is_line_boundary(blocks[-1][-1], line, width, prev_is_first=n_seen == 1):
            blocks.append([])
        blocks[-1].append(line)
        n_seen += 1
    return [" ".join(b) for b in blocks if b]


def _enumeration_pieces(block: str) -> list[str]:
    """Cut a block that starts with item ``1.`` before items ``2.``, ``3.``, ... even where the
    previous item has no final period (``1. Clear lungs 2. No effusion``)."""
    if not re.match(r"^\(?1[.)]\s", block):
        return [block]
    pieces, start, k = [], 0, 2
    while True:
        m = re.compile(rf"\s(\(?{k}[.)])\s+(?=[A-Z])").search(block, start)
        if m is None:
            break
        pieces.append(block[start : m.start()])
        start, k = m.start(1), k + 1
    pieces.append(block[start:])
    return pieces


def _split_piece(piece: str) -> list[str]:
    """Split one line-free piece of text at sentence boundaries.

    Linear in the length of the piece: every look at the text around a candidate period is
    bounded (the word before it, the first character after it), never a slice to either end of
    the piece, which made 50 KB of ``". "`` take 15 s.
    """
    sentences: list[str] = []
    start = 0
    # Whitespace positions, to find the word ("chunk") that ends at a candidate.
    spaces = [m.start() for m in _SPACE.finditer(piece)]
    last_text = len(piece.rstrip())  # only whitespace from here on
    for m in _CANDIDATE.finditer(piece):
        end = m.end()
        if end >= last_text:
            break
        at = m.start()
        if at == 0 or piece[at - 1].isspace():
            chunk = ""
        else:
            i = bisect.bisect_left(spaces, at)
            word_start = spaces[i - 1] + 1 if i else 0
            chunk_start = _LEADING_OPENERS.match(piece, word_start, at).end()
            # The chunk counts only through its last two letters and whether it is an
            # abbreviation (6 characters at most): a longer one is kept as a marked tail.
            if at - chunk_start <= _LONGEST_ABBREVIATION:
                chunk = piece[chunk_start:at].lower()
            else:
                chunk = "#" + piece[at - 2 : at].lower()
        punct = m.group().rstrip("\"')]")
        if not piece[end].isspace():
            # No space after the period: only "effusion.The heart" (a typing slip) is a boundary.
            boundary = (
                punct == "."
                and bool(_TWO_LETTERS_END.search(chunk))
                and chunk not in _ABBREVIATIONS
                and bool(_CAPITALISED_WORD.match(piece, end))
            )
        else:
            nxt = piece[end + 1]
            if nxt.isspace():
                nxt = _NON_SPACE.search(piece, end).group()
            if nxt.islower():
                boundary = False
            elif punct.endswith(".") and chunk in _NEVER_FINAL:
                boundary = False
            elif punct.endswith(".") and chunk in _MAYBE_FINAL:
                boundary = nxt.isupper()
            elif punct == "." and _ENUM_SO_FAR.fullmatch(piece, start, at):
                boundary = False  # "1." opening an enumeration item stays with its item
            else:
                boundary = True
        if boundary:
            sentences.append(piece[start:end])
            start = end
    sentences.append(piece[start:])
    return sentences


def _split_rules(text: str) -> list[str]:
    out: list[str] = []
    for block in _line_blocks(text):
        for piece in _enumeration_pieces(block):
            out.extend(_split_piece(piece))
    return out


def _finish(sentences: list[str]) -> list[str]:
    """Clean whitespace and drop fragments with no letter or digit (``"."``, ``"___."``) and bare
    enumeration numbers (``"2."``)."""
    cleaned = (clean_text(s) for s in sentences)
    return [s for s in cleaned if _HAS_ALNUM.search(s) and not _BARE_ENUM.match(s)]


# ------------------------------------------------------------------------------------------------
# Stanza (optional, local models only)
# ------------------------------------------------------------------------------------------------

SPLITTERS = ("auto", "rules", "stanza")


class StanzaUnavailableError(RuntimeError):
    """``splitter="stanza"`` was asked for but Stanza or its English model is not installed."""


def _stanza_model_dir() -> tuple[Any, Path] | None:
    """The imported stanza module and the folder holding its English tokenize model, or None.

    Looks in ``$STANZA_RESOURCES_DIR``, else Stanza's default folder; never touches the network.
    """
    try:
        import stanza  # noqa: PLC0415  (optional dependency)
    except ImportError:
        return None
    folder = os.environ.get("STANZA_RESOURCES_DIR")
    if not folder:
        try:
            from stanza.resources.common import DEFAULT_MODEL_DIR  # noqa: PLC0415
        except ImportError:
            return None
        folder = DEFAULT_MODEL_DIR
    root = Path(folder).expanduser()
    if (root / "resources.json").is_file() and any((root / "en" / "tokenize").glob("*.pt")):
        return stanza, root
    return None


def resolve_splitter(splitter: str = "auto") -> str:
    """The splitter that :func:`split_sentences` will use, with its version.

    :param splitter: ``"auto"`` (Stanza if usable offline, else rules), ``"rules"`` or ``"stanza"``
    :return: ``"rules-v1"`` or ``"stanza-<version>"``
    :raises StanzaUnavailableError: for ``"stanza"`` when Stanza or its English model is missing
    """
    if splitter not in SPLITTERS:
        raise ValueError(f"splitter must be one of {SPLITTERS}, got {splitter!r}")
    if splitter == "rules":
        return RULES_SPLITTER
    found = _stanza_model_dir()
    if found is not None:
        return f"stanza-{found[0].__version__}"
    if splitter == "auto":
        return RULES_SPLITTER
    raise StanzaUnavailableError(
        "splitter='stanza' needs the stanza package and its English tokenize model on disk, and "
        "localign never downloads models. Install with `pip install 'localign[stanza]'`, run "
        "`python -c \"import stanza; stanza.download('en', processors='tokenize')\"` on a machine "
        "with network access, and point STANZA_RESOURCES_DIR at the resulting folder "
        "(it must contain resources.json and en/tokenize/*.pt). Or use splitter='rules'."
    )


@functools.lru_cache(maxsize=2)
def _stanza_pipeline(model_dir: str) -> Any:
    import stanza  # noqa: PLC0415

    return stanza.Pipeline(
        "en", dir=model_dir, processors="tokenize", use_gpu=False, download_method=None, logging_level="WARN"
    )


def _split_stanza(text: str) -> list[str]:
    found = _stanza_model_dir()
    if found is None:
        resolve_splitter("stanza")  # raises the explanatory error
    doc = _stanza_pipeline(str(found[1]))(text)
    return [s.text for s in doc.sentences]


def split_sentences(text: str, splitter: str = "auto") -> list[str]:
    """Split a report section into sentences.

    >>> split_sentences("1. Lungs clear. 2. Nodule measures 1.5 cm, e.g. on the\\nlateral view")
    ['1. Lungs clear.', '2. Nodule measures 1.5 cm, e.g. on the lateral view']

    The rule splitter (``rules-v1``) works in three passes:

    1. lines: a blank line always ends a sentence; a line break ends one when the next line
       starts an enumeration item (``2.``, ``3)``), or when the previous line has no final
       punctuation, does not end in a comma or a word like "the", and the next line's capitalised
       first word would have fitted on it (a deliberate break, not a hard wrap at ~80 characters);
    2. enumerations: a block that starts with ``1.`` is cut before ``2.``, ``3.``, ... even when
       an item has no final period;
    3. punctuation: ``.``, ``?``, ``!`` end a sentence when the next word does not start in lower
       case, except after ``Dr.``, ``vs.``, ``e.g.``, ``i.e.``, ``approx.`` (never final),
       ``a.m.``/``p.m.``/``etc.`` followed by a non-capital, and an item number (``1.``).
       Decimals have no space after the point and never split; ``___.`` is an ordinary word.

    :param text: section text; line breaks are informative (see :func:`extract_sections`)
    :param splitter: ``"auto"``, ``"rules"`` or ``"stanza"`` (see :func:`resolve_splitter`)
    :return: sentences with whitespace cleaned (newlines -> spaces, runs collapsed, stripped);
        fragments without a letter or digit and bare enumeration numbers are dropped
    """
    if not isinstance(text, str):
        raise ValueError(f"split_sentences expects a str, got {type(text).__name__}")
    used = resolve_splitter(splitter)
    if not text.strip():
        return []
    raw = _split_rules(text) if used == RULES_SPLITTER else _split_stanza(text)
    return _finish(raw)
