"""What the weight-maps chapter computes: LoVT's mean region weights, LIMITR's word weights, local
MI's selected regions and GLoRIA/LIMITR word attention, against SynthCXR's sentence masks.

Every function returns arrays or tidy data frames for :mod:`localign.viz.weight_maps`; the
measures themselves are :mod:`localign.metrics.localization`'s.

**Sentences and masks.** A study's report is the manifest's sentence list (``manifest.sentences``,
the order of the token cache ``report_tokens(...).sentences(study)``). SynthCXR's sentence table
(``sentences.csv``) has one row per (image, sentence) with, for a finding it drew, the finding's
pixel mask; :func:`align_sentence_rows` finds, for the image a run evaluates (the study's first
view, as :class:`~localign.eval.inference.StudyBatches`), the table row of every manifest sentence
(same section order and index, and the same text: a mismatch raises). The model's sentence slots
skip the sentences with no token (:func:`token_sentence_index`): local MI's per-sentence [CLS]
slot m and the joint input's sentence id m are the m-th sentence with tokens. Masks are brought
to the model input by the evaluation geometry (pad to square, resize: :func:`input_mask`).
Sentences without a mask (negations, normal findings, sentences about nothing drawn) have no image
correlate and are not scored.

**Inside a mask.** A region cell is inside a sentence's mask by
:func:`~localign.metrics.localization.region_inside_mask` (overlap ≥ 0.5, or the best cell), on
the mask at model input size.

**From one picture to the test split.** Each paper's figure shows one example (or one average);
the chapter also asks its question of every test item, which gives the claims their repetitions:
an image's LoVT weights on and off its findings (:func:`region_weights_at_findings`), a finding
sentence's LIMITR region attending to the sentence's words (:func:`limitr_region_word_table`), a
report's LIMITR aggregation weights on finding and other sentences (:func:`limitr_aggregation_table`),
a sentence's local-MI region inside its mask (:func:`selection_table`), a finding word's GLoRIA or
LIMITR attention inside and outside its mask (:func:`finding_word_table`). Both sides of each
comparison are measured on the same item, so the claims are paired (:func:`paired_claim`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from localign.metrics.localization import mean_image, mean_region_weight_map, region_hits, region_inside_mask, select_regions_max

__all__ = [
    "FINDING_WORDS", "StudyMasks", "align_sentence_rows", "token_sentence_index", "input_mask", "study_masks",
    "analysis_device", "per_study", "lovt_weight_map", "weight_map_frame", "mi_sentence_scores", "selection_table",
    "attention_inside_outside", "slot_strings", "slot_sentences", "word_attention_records",
    "finding_word_table", "word_shading", "best_region", "pick_example", "attention_examples", "finding_union",
    "region_weights_at_findings", "finding_cell_frequency", "relative_weights", "limitr_region_word_table",
    "limitr_aggregation_table", "paired_claim", "weight_map_summary", "hit_rate_by_category", "attention_summary",
]

#: Finding words of SynthCXR's finding sentences whose attention maps the chapter reads.
FINDING_WORDS = ("effusion", "effusions", "opacity", "opacities", "cardiomegaly", "consolidation", "atelectasis",
                 "pneumothorax", "nodule", "mass", "edema", "congestion", "pneumonia")


# --------------------------------------------------------------------------------------------------
# sentences → SynthCXR sentence rows → masks on the model input
# --------------------------------------------------------------------------------------------------
def align_sentence_rows(sentences: Sequence[str], rows: pd.DataFrame, sections: Sequence[str] = ("findings", "impression")) -> np.ndarray:
    """The sentence-table row of every manifest sentence of one image.

    Definition: ``rows`` (the image's rows of ``sentences.csv``) ordered by section (in the order
    of ``sections``, the manifest's ``text_sections``) and ``sentence_index``; the m-th of them
    must have the text of ``sentences[m]``.

    :param sentences: the M manifest sentences of the study.
    :param rows: columns ``section``, ``sentence_index``, ``sentence``; its index = the row id
        (``phrase_id`` of :func:`~localign.eval.protocols.grounding.synth_sentence_masks`).
    :param sections: section order (case-insensitive).
    :return: [M] int64 row ids.
    :raises ValueError: a different number of sentences, or a text that differs.
    """
    for col in ("section", "sentence_index", "sentence"):
        if col not in rows.columns:
            raise ValueError(f"rows: missing column {col!r}")
    order = {str(s).lower(): i for i, s in enumerate(sections)}
    rank = rows["section"].astype(str).str.lower().map(order)
    if rank.isna().any():
        raise ValueError(f"rows: section {rows['section'][rank.isna()].iloc[0]!r} not in sections {tuple(sections)}")
    ordered = rows.assign(_rank=rank.to_numpy()).sort_values(["_rank", "sentence_index"], kind="stable")
    if len(ordered) != len(sentences):
        raise ValueError(f"rows: {len(ordered)} table sentences for {len(sentences)} manifest sentences")
    for m, (text, row_text) in enumerate(zip(sentences, ordered["sentence"].astype(str))):
        if str(text).strip() != row_text.strip():
            raise ValueError(f"rows: sentence {m} differs: manifest {text!r} vs table {row_text!r}")
    return ordered.index.to_numpy(dtype=np.int64)


def token_sentence_index(token_sentences: Sequence[Sequence[int]], max_sentences: int | None = None) -> np.ndarray:
    """Manifest index of each sentence slot of the model's text input.

    Definition: the sentences with at least one token, in order, the first ``max_sentences`` of
    them (local MI's ``sentences`` mode; None = all, the joint mode's renumbered sentence ids).

    :param token_sentences: the M token-id lists of one report (``ReportTokens.sentences``).
    :return: [M'] int64 indices into the M sentences.
    """
    if max_sentences is not None and (isinstance(max_sentences, bool) or not isinstance(max_sentences, int) or max_sentences < 1):
        raise ValueError(f"max_sentences: expected a positive integer or None, got {max_sentences!r}")
    kept = [m for m, s in enumerate(token_sentences) if len(s) > 0]
    return np.asarray(kept[:max_sentences] if max_sentences else kept, dtype=np.int64)


def input_mask(mask: Any, size: int) -> np.ndarray:
    """A pixel mask [H, W] on the model input [S, S]: the evaluation geometry (pad to square
    centrally, resize; :func:`~localign.data.transforms.pad_resize`), then > 0.5."""
    from localign.data.transforms import pad_resize

    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask: expected [H, W], got shape {tuple(m.shape)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size: expected a positive integer, got {size!r}")
    x = torch.from_numpy(m.astype(np.float32))[None]
    return pad_resize(x, int(size))[0].numpy() > 0.5


@dataclass
class StudyMasks:
    """The manifest sentences of one study with their SynthCXR rows and masks on the model input.

    :ivar study_id: the study.
    :ivar sentences: the M manifest sentences.
    :ivar rows: [M] sentence-table row ids (``phrase_id``).
    :ivar categories: [M] finding kind, "" where the sentence has no mask.
    :ivar masks: [M, S, S] bool; all False where the sentence has no mask.
    """

    study_id: int
    sentences: list[str]
    rows: np.ndarray
    categories: list[str]
    masks: np.ndarray

    @property
    def has_mask(self) -> np.ndarray:
        """[M] bool."""
        return self.masks.reshape(len(self.sentences), -1).any(-1)


def study_masks(prepared, study_ids: Iterable[int], size: int, split: str = "test") -> list[StudyMasks]:
    """:class:`StudyMasks` of each study (its first view, as the runs evaluate it).

    :param prepared: a SynthCXR :class:`~localign.data.manifest.PreparedDataset`.
    :param size: model input size S.
    """
    from localign.eval.protocols.grounding import synth_sentence_masks
    from localign.eval.protocols.segmentation import load_mask

    table = synth_sentence_masks(prepared, split).set_index("phrase_id")
    sentences = prepared.sentences
    by_image = {k: v for k, v in sentences.groupby("dicom_id")}
    manifest = prepared.manifest.set_index("study_id")
    out = []
    for sid in study_ids:
        study = manifest.loc[int(sid)]
        rows = align_sentence_rows(list(study["sentences"]), by_image[study["dicom_ids"][0]], list(study["text_sections"]))
        masks = np.zeros((len(rows), size, size), bool)
        cats = []
        for m, r in enumerate(rows):
            if r in table.index:
                masks[m] = input_mask(load_mask(table.loc[r, "mask"]), size)
                cats.append(str(table.loc[r, "category"]))
            else:
                cats.append("")
        out.append(StudyMasks(int(sid), [str(s) for s in study["sentences"]], rows, cats, masks))
    return out


def analysis_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: {device!r} is not a torch device ({err})") from err


def per_study(batches, fn: Callable[[Any, Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """``fn(model, batch)`` over the batches without gradients, split into one dict per study
    (tensors to float32 / bool numpy on the CPU; other values repeated), with ``study_id`` and
    ``image`` ([S, S] model input) added."""
    out = []
    with torch.no_grad():
        for batch in batches:
            values = fn(batches.model, batch)
            for b, sid in enumerate(batch.study_ids.tolist()):
                rec = {"study_id": int(sid), "image": batch.images[b, 0].float().cpu().numpy()}
                for k, v in values.items():
                    if isinstance(v, torch.Tensor):
                        v = v[b].detach().cpu()
                        rec[k] = v.numpy() if v.dtype == torch.bool else v.float().numpy() if v.is_floating_point() else v.numpy()
                    else:
                        rec[k] = v
                out.append(rec)
    return out


# --------------------------------------------------------------------------------------------------
# LoVT Fig. 5
# --------------------------------------------------------------------------------------------------
def lovt_weight_map(batches) -> dict[str, Any]:
    """LoVT's region weights w^I over a split, averaged (LoVT Fig. 5).

    :return: ``mean_image`` [S, S] (normalised model input), ``weight_map`` [h, w]
        (:func:`~localign.metrics.localization.mean_region_weight_map`), ``weights`` [N, K],
        ``grid``, ``source`` (``"attention"``: the attention pool's softmax weights; ``"uniform"``:
        the model pools by averaging, every region weighs 1/K) and ``local_weights`` (what the
        local losses use: ``"attention"`` = these weights, ``"uniform"`` = 1/K).
    """
    weights, images, grid = [], [], None
    with torch.no_grad():
        for batch in batches:
            f = batches.model.local_features(batch.images, batch.text)
            k = f.grid[0] * f.grid[1]
            w = f.image_weights if f.image_weights is not None else torch.full((batch.images.shape[0], k), 1.0 / k)
            weights.append(w.float().cpu())
            images.append(batch.images[:, 0].float().cpu())
            grid = f.grid
    w = torch.cat(weights).numpy()
    loss = batches.run.method.loss
    return {"mean_image": mean_image(torch.cat(images).numpy()), "weight_map": mean_region_weight_map(w, grid), "weights": w,
            "grid": grid, "source": "attention" if loss.image_pool == "attention" else "uniform",
            "local_weights": loss.local_weights}


def weight_map_frame(weight_map: Any) -> pd.DataFrame:
    """Tidy [h, w] map: columns ``row``, ``col``, ``weight``, ``relative`` (weight · K: 1 = uniform)."""
    m = np.asarray(weight_map, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"weight_map: expected [h, w], got shape {tuple(m.shape)}")
    r, c = np.indices(m.shape)
    return pd.DataFrame({"row": r.ravel(), "col": c.ravel(), "weight": m.ravel(), "relative": m.ravel() * m.size})


# --------------------------------------------------------------------------------------------------
# local MI: the region each sentence selects (Liao Fig. 2)
# --------------------------------------------------------------------------------------------------
def mi_sentence_scores(batches) -> list[dict[str, Any]]:
    """Per study: local MI's critic ``scores`` [M, K], ``sentence_mask`` [M], ``grid``, ``image``,
    ``slots`` [M'] (manifest index of each real sentence slot, :func:`token_sentence_index`)."""
    records = per_study(batches, lambda model, b: model.sentence_region_scores(b.images, b.text))
    cap = batches.run.method.text_input.max_sentences
    tokens = batches.dataset.tokens
    for rec in records:
        rec["slots"] = token_sentence_index(tokens.sentences(rec["study_id"]), cap)
        if len(rec["slots"]) != int(rec["sentence_mask"].sum()):
            raise ValueError(f"study {rec['study_id']}: {int(rec['sentence_mask'].sum())} sentence slots but "
                             f"{len(rec['slots'])} sentences with tokens")
    return records


def selection_table(scores: Any, slots: Sequence[Sequence[int]], masks: Sequence[Any], grid: tuple[int, int],
                    study_ids: Sequence[int] | None = None, categories: Sequence[Sequence[str]] | None = None,
                    threshold: float = 0.5) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The region each sentence selects by the max over regions, and whether it is inside the sentence's mask.

    Definition: for study i and its sentence slot m (manifest sentence ``slots[i][m]``), the
    selected region is :func:`~localign.metrics.localization.select_regions_max` of
    ``scores[i][m]``; a sentence with a non-empty mask is scored, a hit when the region lies
    inside the mask, with the chance rate #inside cells / K
    (:func:`~localign.metrics.localization.region_hits`).

    :param scores: per study [M'_i, K] (a list, or an [N, M', K] array with padded slots beyond ``len(slots[i])``).
    :param slots: per study [M'_i] manifest sentence indices.
    :param masks: per study [M_i, S, S] bool masks of the manifest sentences.
    :param grid: (h, w), K = h·w.
    :return: (one row per sentence slot: ``study_id``, ``slot``, ``sentence``, ``category``,
        ``selected``, ``scored``, ``hit``, ``chance``; the summary of
        :func:`~localign.metrics.localization.region_hits` without its arrays).
    """
    if len(scores) != len(slots) or len(masks) != len(slots):
        raise ValueError(f"scores, slots, masks: {len(scores)}, {len(slots)}, {len(masks)} studies; expected the same")
    h, w = grid
    rows = []
    for i, (s, sl, m) in enumerate(zip(scores, slots, masks)):
        sl = np.asarray(sl, dtype=np.int64)
        s = np.asarray(s, dtype=float)[: len(sl)]
        m = np.asarray(m).astype(bool)
        if s.ndim != 2 or s.shape[1] != h * w:
            raise ValueError(f"scores[{i}]: expected [M, {h * w}], got shape {tuple(s.shape)}")
        if len(sl) and (sl.min() < 0 or sl.max() >= len(m)):
            raise ValueError(f"slots[{i}]: sentence index outside the study's {len(m)} sentences")
        if len(sl) == 0:
            continue
        selected = select_regions_max(s)
        sm = m[sl]
        hits = region_hits(selected[None], sm[None], grid, threshold=threshold)
        for j, (k, sentence) in enumerate(zip(selected, sl)):
            scored = bool(hits["scored"][0, j])
            chance = float(region_inside_mask(sm[j], grid, threshold).mean()) if scored else float("nan")
            rows.append({"study_id": int(study_ids[i]) if study_ids is not None else i, "slot": j, "sentence": int(sentence),
                         "category": categories[i][sentence] if categories is not None else "", "selected": int(k),
                         "scored": scored, "hit": bool(hits["hits"][0, j]), "chance": chance})
    frame = pd.DataFrame(rows, columns=["study_id", "slot", "sentence", "category", "selected", "scored", "hit", "chance"])
    scored = frame[frame["scored"]]
    summary = {"rate": float(scored["hit"].mean()) if len(scored) else float("nan"),
               "chance": float(scored["chance"].mean()) if len(scored) else float("nan"),
               "n_scored": int(len(scored)), "n_hits": int(scored["hit"].sum())}
    return frame, summary


# --------------------------------------------------------------------------------------------------
# word attention (GLoRIA, LIMITR)
# --------------------------------------------------------------------------------------------------
def attention_inside_outside(attention: Any, mask: Any, grid: tuple[int, int], threshold: float = 0.5) -> dict[str, float]:
    """How much of one word's attention over the regions lies inside its finding's mask.

    Definition: with I the cells inside the mask (:func:`~localign.metrics.localization.region_inside_mask`)
    and a the [h, w] attention (non-negative), ``inside`` = mean of a over I, ``outside`` = mean
    over the other cells (NaN if none), ``mass`` = Σ_I a / Σ a, ``mass_chance`` = |I| / K (the mass
    of uniform attention) and ``peak_inside`` = 1.0 if the cell of maximal attention is in I
    (every tied cell), else 0.0.

    :param attention: [h, w] or [K].
    :param mask: [S, S] bool, non-empty.
    """
    h, w = grid
    a = np.asarray(attention, dtype=float).reshape(-1)
    if a.size != h * w:
        raise ValueError(f"attention: expected {h}×{w} = {h * w} values, got {a.size}")
    if np.any(~np.isfinite(a)) or np.any(a < 0) or a.sum() <= 0:
        raise ValueError("attention: expected finite non-negative weights with a positive sum")
    inside = region_inside_mask(mask, grid, threshold).reshape(-1)
    peak = a == a.max()
    return {"inside": float(a[inside].mean()), "outside": float(a[~inside].mean()) if (~inside).any() else float("nan"),
            "mass": float(a[inside].sum() / a.sum()), "mass_chance": float(inside.mean()),
            "peak_inside": float(bool(np.all(inside[peak])))}


def slot_strings(input_ids: Sequence[int], word_ids: Sequence[int], tokenizer) -> list[str]:
    """The text of every word slot 0 … W−1 (word pieces joined, ``##`` dropped; slot 0 = ``[CLS]``).

    :param input_ids: [T] token ids; :param word_ids: [T] slot of each token (−1 = none), as
        ``TextEncoder.word_ids``.
    """
    ids = np.asarray(word_ids, dtype=np.int64)
    tokens = tokenizer.convert_ids_to_tokens([int(t) for t in input_ids])
    if len(tokens) != len(ids):
        raise ValueError(f"input_ids and word_ids: {len(tokens)} and {len(ids)} tokens")
    n = int(ids.max()) + 1 if (ids >= 0).any() else 0
    parts: list[list[str]] = [[] for _ in range(n)]
    for tok, w in zip(tokens, ids):
        if w >= 0:
            parts[w].append(tok[2:] if tok.startswith("##") else tok)
    return ["".join(p) for p in parts]


def slot_sentences(word_ids: Sequence[int], sentence_ids: Sequence[int], sentence_index: Sequence[int] | None = None) -> np.ndarray:
    """Sentence of every word slot: the joint input's sentence id of the slot's first token, mapped
    through ``sentence_index`` (:func:`token_sentence_index`) to the manifest sentence; −1 for
    slots outside any sentence ([CLS])."""
    ids = np.asarray(word_ids, dtype=np.int64)
    sent = np.asarray(sentence_ids, dtype=np.int64)
    if ids.shape != sent.shape:
        raise ValueError(f"word_ids and sentence_ids: shapes {ids.shape} and {sent.shape} differ")
    n = int(ids.max()) + 1 if (ids >= 0).any() else 0
    out = np.full(n, -1, dtype=np.int64)
    for t in range(len(ids) - 1, -1, -1):  # backwards: the first token wins
        if ids[t] >= 0:
            out[ids[t]] = sent[t]
    if sentence_index is not None:
        index = np.asarray(sentence_index, dtype=np.int64)
        if out.max(initial=-1) >= len(index):
            raise ValueError(f"sentence_ids: sentence {int(out.max())} beyond the {len(index)} sentences with tokens")
        out = np.where(out >= 0, index[np.maximum(out, 0)], -1)
    return out


def word_attention_records(batches, kind: str) -> list[dict[str, Any]]:
    """Per study, the word→region attention of a GLoRIA (``kind="gloria"``: ``word_attention``) or
    LIMITR (``"limitr"``: ``pair_attention``) run, with ``words`` (slot strings), ``word_sentence``
    ([W] manifest sentence of each slot, −1 = [CLS]) and ``image``."""
    if kind == "gloria":
        fn = lambda model, b: {**model.word_attention(b.images, b.text), "input_ids": b.text.input_ids, "sentence_ids": b.text.sentence_ids}  # noqa: E731
    elif kind == "limitr":
        fn = lambda model, b: {**model.pair_attention(b.images, b.text), "input_ids": b.text.input_ids, "sentence_ids": b.text.sentence_ids}  # noqa: E731
    else:
        raise ValueError(f"kind: expected 'gloria' or 'limitr', got {kind!r}")
    records = per_study(batches, fn)
    tokens = batches.dataset.tokens
    for rec in records:
        n = int(rec["word_mask"].sum())
        rec["words"] = slot_strings(rec["input_ids"], rec["word_ids"], batches.tokenizer)[:n]
        index = token_sentence_index(tokens.sentences(rec["study_id"]))
        rec["word_sentence"] = slot_sentences(rec["word_ids"], rec["sentence_ids"], index)[:n]
    return records


def finding_word_table(records: Sequence[dict[str, Any]], masks: dict[int, "StudyMasks"], grid: tuple[int, int],
                       key: str = "attention", words: Sequence[str] = FINDING_WORDS, threshold: float = 0.5) -> pd.DataFrame:
    """Every finding word in a sentence with a mask: its attention inside vs outside that mask.

    :param records: :func:`word_attention_records` (``key`` = ``attention`` for GLoRIA,
        ``word_to_region`` for LIMITR, [W, K]).
    :param masks: study id → :class:`StudyMasks`.
    :return: one row per word occurrence: ``study_id``, ``slot``, ``word``, ``sentence``,
        ``category`` and the columns of :func:`attention_inside_outside`.
    """
    wanted = {w.lower() for w in words}
    rows = []
    for rec in records:
        sm = masks[rec["study_id"]]
        for slot, (word, sentence) in enumerate(zip(rec["words"], rec["word_sentence"])):
            if word.lower() not in wanted or sentence < 0 or not sm.masks[sentence].any():
                continue
            rows.append({"study_id": rec["study_id"], "slot": slot, "word": word.lower(), "sentence": int(sentence),
                         "category": sm.categories[sentence],
                         **attention_inside_outside(rec[key][slot], sm.masks[sentence], grid, threshold)})
    return pd.DataFrame(rows, columns=["study_id", "slot", "word", "sentence", "category", "inside", "outside", "mass",
                                       "mass_chance", "peak_inside"])


def word_shading(words: Sequence[str], weights: Any, skip_first: bool = True) -> pd.DataFrame:
    """Word-slot weights of one report, normalised to a maximum of 1, for shading.

    Definition: the model's words are its word slots (word pieces already merged; punctuation is a
    word of its own, as the model sees it), so :func:`~localign.metrics.localization.word_weights`
    runs with one token per word and ``norm="max"``; [CLS] (slot 0) is left out with ``skip_first``.

    :param words: [W] slot strings; :param weights: [W] non-negative.
    :return: columns ``word``, ``weight`` in [0, 1] (W − 1 rows with ``skip_first``).
    """
    from localign.metrics.localization import word_weights

    w = np.asarray(weights, dtype=float)
    if w.shape != (len(words),):
        raise ValueError(f"weights: expected [{len(words)}], got shape {tuple(w.shape)}")
    start = 1 if skip_first else 0
    return pd.DataFrame({"word": list(words)[start:], "weight": word_weights(w[start:], None, norm="max")})


def best_region(mask: Any, grid: tuple[int, int]) -> int:
    """The region cell (row-major index) with the largest overlap with a mask (the lowest index on ties)."""
    from localign.metrics.localization import region_overlap

    overlap = region_overlap(mask, grid)
    if overlap.max() <= 0:
        raise ValueError("mask: empty")
    return int(np.argmax(overlap.reshape(-1)))


def pick_example(masks: Sequence[StudyMasks], categories: Sequence[str] = ("effusion", "cardiomegaly", "consolidation"),
                 min_sentences: int = 3) -> tuple[int, int]:
    """A deterministic example: the first study (in the given order) with at least
    ``min_sentences`` sentences and a masked sentence of the first category of ``categories`` that
    any study has (then the next category, ...; at last any masked sentence).

    :return: (study id, manifest sentence index).
    """
    for category in [*categories, None]:
        for sm in masks:
            if len(sm.sentences) < min_sentences:
                continue
            for m, (c, has) in enumerate(zip(sm.categories, sm.has_mask)):
                if has and (category is None or c == category):
                    return sm.study_id, m
    raise ValueError("masks: no study has a sentence with a mask")


def attention_examples(tables: dict[str, pd.DataFrame], records: dict[str, Sequence[dict[str, Any]]], keys: dict[str, str],
                       words: Sequence[str]) -> list[dict[str, Any]]:
    """For each word, the first occurrence that every method's table has, with each method's map.

    :param tables: method → :func:`finding_word_table`; :param records: method →
        :func:`word_attention_records` (same studies, same word slots); :param keys: method → the
        attention key of its records.
    :return: per found word: ``word``, ``study_id``, ``slot``, ``sentence``, ``maps`` (method → [h, w]
        on that method's own grid, the records' ``grid``), ``image`` [S, S]. Words found in no
        common occurrence are left out.
    """
    methods = list(tables)
    if not methods or set(methods) != set(records) or set(methods) != set(keys):
        raise ValueError("tables, records, keys: expected the same methods")
    index = {m: {r["study_id"]: r for r in records[m]} for m in methods}
    out = []
    for word in words:
        common = None
        for m in methods:
            t = tables[m]
            occ = set(map(tuple, t.loc[t["word"] == word.lower(), ["study_id", "slot"]].to_numpy().tolist()))
            common = occ if common is None else common & occ
        if not common:
            continue
        first = tables[methods[0]]
        row = first[[(s, k) in common for s, k in zip(first["study_id"], first["slot"])]].iloc[0]
        sid, slot = int(row["study_id"]), int(row["slot"])
        out.append({"word": word.lower(), "study_id": sid, "slot": slot, "sentence": int(row["sentence"]),
                    "maps": {m: np.asarray(index[m][sid][keys[m]][slot]).reshape(index[m][sid]["grid"]) for m in methods},
                    "image": index[methods[0]][sid]["image"]})
    return out


# --------------------------------------------------------------------------------------------------
# the same questions over the whole test split (the claims' repetitions)
# --------------------------------------------------------------------------------------------------
def finding_union(study: StudyMasks) -> np.ndarray:
    """[S, S] bool: every pixel of any finding mask of the study's sentences (all False without one)."""
    return study.masks.any(0)


def region_weights_at_findings(weights: Any, study_ids: Sequence[int], masks: dict[int, StudyMasks], grid: tuple[int, int],
                               threshold: float = 0.5) -> pd.DataFrame:
    """Do an image's region weights go to its findings? (LoVT's reading of its Fig. 5, per image.)

    Definition: for every study with at least one finding mask, :func:`attention_inside_outside`
    of its region weights against the union of its finding masks (:func:`finding_union`).

    :param weights: [N, K] region weights (rows in the order of ``study_ids``).
    :param masks: study id → :class:`StudyMasks` on the model input.
    :return: one row per study with a finding: ``study_id``, ``n_findings`` (sentences with a mask)
        and the columns of :func:`attention_inside_outside`.
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2 or len(w) != len(study_ids):
        raise ValueError(f"weights: expected [{len(study_ids)}, K] (one row per study), got shape {tuple(w.shape)}")
    rows = []
    for sid, row in zip(study_ids, w):
        sm = masks[int(sid)]
        if sm.has_mask.any():
            rows.append({"study_id": int(sid), "n_findings": int(sm.has_mask.sum()),
                         **attention_inside_outside(row, finding_union(sm), grid, threshold)})
    return pd.DataFrame(rows, columns=["study_id", "n_findings", "inside", "outside", "mass", "mass_chance", "peak_inside"])


def finding_cell_frequency(masks: Sequence[StudyMasks], grid: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """Where the findings are: [h, w] share of the studies whose finding masks cover the cell
    (:func:`~localign.metrics.localization.region_inside_mask` of :func:`finding_union`; a study
    without a finding covers no cell). The map to hold LoVT's mean weight map against."""
    if not masks:
        raise ValueError("masks: no study")
    h, w = grid
    count = np.zeros((h, w))
    for sm in masks:
        if sm.has_mask.any():
            count += region_inside_mask(finding_union(sm), grid, threshold)
    return count / len(masks)


def relative_weights(weights: Any) -> np.ndarray:
    """Weights over a report's words relative to a uniform weighting: w_j / mean(w) (1 = the uniform
    share), so that reports of different lengths can be pooled. [W] non-negative with a positive sum."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or w.size == 0 or np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights: expected [W] finite non-negative weights with a positive sum")
    return w / w.mean()


def _words_without_cls(rec: dict[str, Any]) -> np.ndarray:
    return np.asarray(rec["word_sentence"], dtype=np.int64)[1:]


def limitr_region_word_table(records: Sequence[dict[str, Any]], masks: dict[int, StudyMasks], grid: tuple[int, int]) -> pd.DataFrame:
    """LIMITR supp. Fig. 1 over the test split: does the region of a finding attend to the words of
    the sentence that describes it?

    Definition: for every sentence s with a mask, the region k = :func:`best_region` of the mask;
    its attention over the report's words β_k (``region_to_word``, the weights of the textual
    weighted representation m_k), [CLS] left out, made :func:`relative_weights`; ``sentence`` =
    their mean over the words of s, ``other`` = over the other words (NaN if none).

    :param records: :func:`word_attention_records` of a LIMITR run.
    :return: one row per finding sentence: ``study_id``, ``sentence``, ``category``, ``region``,
        ``n_words`` (of the sentence), ``sentence_words``, ``other_words``.
    """
    rows = []
    for rec in records:
        sm = masks[rec["study_id"]]
        n = len(rec["words"])
        word_sentence = _words_without_cls(rec)
        for s in np.flatnonzero(sm.has_mask):
            ins = word_sentence == s
            if not ins.any():  # a sentence cut off by the text length limit
                continue
            k = best_region(sm.masks[s], grid)
            r = relative_weights(np.asarray(rec["region_to_word"][k][1:n]))
            rows.append({"study_id": rec["study_id"], "sentence": int(s), "category": sm.categories[s], "region": k,
                         "n_words": int(ins.sum()), "sentence_words": float(r[ins].mean()),
                         "other_words": float(r[~ins].mean()) if (~ins).any() else float("nan")})
    return pd.DataFrame(rows, columns=["study_id", "sentence", "category", "region", "n_words", "sentence_words", "other_words"])


def limitr_aggregation_table(records: Sequence[dict[str, Any]], masks: dict[int, StudyMasks]) -> pd.DataFrame:
    """LIMITR supp. Fig. 3 over the test split: do the aggregation weights q_t favour the sentences
    that describe a finding over the normal statements and negations?

    Definition: per report, the SA weights of the caption direction (``word_weights``, this image
    with its own report), [CLS] left out, made :func:`relative_weights`; ``finding`` = their mean
    over the words of sentences with a mask, ``other`` = over the words of the other sentences.
    Reports with words of only one kind are left out.

    :return: one row per report: ``study_id``, ``n_finding_words``, ``n_other_words``, ``finding``, ``other``.
    """
    rows = []
    for rec in records:
        sm = masks[rec["study_id"]]
        n = len(rec["words"])
        word_sentence = _words_without_cls(rec)
        in_finding = np.array([s >= 0 and bool(sm.has_mask[s]) for s in word_sentence], dtype=bool)
        if not in_finding.any() or in_finding.all():
            continue
        r = relative_weights(np.asarray(rec["word_weights"][1:n]))
        rows.append({"study_id": rec["study_id"], "n_finding_words": int(in_finding.sum()), "n_other_words": int((~in_finding).sum()),
                     "finding": float(r[in_finding].mean()), "other": float(r[~in_finding].mean())})
    return pd.DataFrame(rows, columns=["study_id", "n_finding_words", "n_other_words", "finding", "other"])


def paired_claim(chapter: str, paper: str, claim: str, measure: str, a: str, a_values: Sequence[float], b: str,
                 b_values: Sequence[float]) -> dict:
    """A claim row (:func:`~localign.eval.claims.compare_claim`) for paired repetitions: ``a`` and
    ``b`` measured on the same items (a word's attention inside and outside its mask).

    Definition: the pairs with both values finite; ``difference`` = mean(a − b) with the 95 % CI of
    that mean (compare_claim of the differences against 0); ``mean_a``, ``mean_b`` the means of the
    pairs' two sides and ``n_a`` = ``n_b`` = the number of pairs. A paired CI is the right one here:
    the two sides of one item are correlated (attention that sums to 1 moves out of the mask when it
    moves in), which the two-sample CI would ignore. Without any pair the row says so: NaN values,
    ``n_a`` = 0 and ``not shown``.
    """
    from localign.eval.claims import compare_claim

    va, vb = np.asarray(a_values, dtype=float).ravel(), np.asarray(b_values, dtype=float).ravel()
    if va.shape != vb.shape:
        raise ValueError(f"{claim}: {va.size} values of {a} for {vb.size} of {b}; paired values come in pairs")
    keep = np.isfinite(va) & np.isfinite(vb)
    if not keep.any():  # nothing measured (e.g. no finding word in the analysed studies): reported, not dropped
        row = compare_claim(chapter, paper, claim, measure, a, [0.0], b, 0.0)
        row.update({key: float("nan") for key in ("mean_a", "mean_b", "difference", "ci_low", "ci_high")})
        row.update({"n_a": 0, "n_b": 0, "verdict": "not shown"})
        return row
    row = compare_claim(chapter, paper, claim, measure, a, va[keep] - vb[keep], b, 0.0)
    row.update({"mean_a": float(va[keep].mean()), "mean_b": float(vb[keep].mean()), "n_b": int(keep.sum())})
    return row


# --------------------------------------------------------------------------------------------------
# summaries for the chapter's tables
# --------------------------------------------------------------------------------------------------
def weight_map_summary(weight_map: Any, finding_frequency: Any) -> dict[str, float]:
    """The mean region-weight map in three numbers: ``max_relative`` and ``min_relative`` (weight·K,
    1 = the uniform share) and ``correlation``, Pearson's r over the cells between the weights and
    :func:`finding_cell_frequency` (NaN when either map is constant, e.g. uniform weights)."""
    w = np.asarray(weight_map, dtype=float)
    f = np.asarray(finding_frequency, dtype=float)
    if w.ndim != 2 or w.shape != f.shape:
        raise ValueError(f"weight_map and finding_frequency: expected two [h, w] maps of one grid, got {w.shape} and {f.shape}")
    flat_w, flat_f = w.ravel(), f.ravel()
    constant = np.ptp(flat_w) == 0 or np.ptp(flat_f) == 0
    return {"max_relative": float(w.max() * w.size), "min_relative": float(w.min() * w.size),
            "correlation": float("nan") if constant else float(np.corrcoef(flat_w, flat_f)[0, 1])}


def hit_rate_by_category(selection: pd.DataFrame) -> pd.DataFrame:
    """:func:`selection_table`'s scored sentences per finding kind and over all (last row ``all``):
    ``sentences``, ``hit_rate``, ``chance``."""
    scored = selection[selection["scored"]]
    table = scored.groupby("category").agg(sentences=("hit", "size"), hit_rate=("hit", "mean"), chance=("chance", "mean"))
    table.loc["all"] = [len(scored), scored["hit"].mean() if len(scored) else np.nan, scored["chance"].mean() if len(scored) else np.nan]
    table["sentences"] = table["sentences"].astype(int)
    return table


def attention_summary(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Method → :func:`finding_word_table`, summarised per (method, word) and over all words of a
    method (word ``all``): ``n``, mean ``inside`` and ``outside`` per cell, ``mass`` inside with its
    uniform value ``mass_chance``, and ``pointing`` (share of maps whose maximum is inside)."""
    aggs = dict(n=("inside", "size"), inside=("inside", "mean"), outside=("outside", "mean"), mass=("mass", "mean"),
                mass_chance=("mass_chance", "mean"), pointing=("peak_inside", "mean"))
    parts = []
    for method, t in tables.items():
        if t.empty:
            continue
        per_word = t.groupby("word").agg(**aggs)
        per_word.loc["all"] = [len(t), *(t[c].mean() for c in ("inside", "outside", "mass", "mass_chance", "peak_inside"))]
        per_word["n"] = per_word["n"].astype(int)
        parts.append(per_word.assign(method=method).reset_index().set_index(["method", "word"]))
    columns = ["n", "inside", "outside", "mass", "mass_chance", "pointing"]
    return pd.concat(parts) if parts else pd.DataFrame(columns=columns, index=pd.MultiIndex.from_tuples([], names=["method", "word"]))
