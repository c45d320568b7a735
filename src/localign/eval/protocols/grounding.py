"""Phrase grounding protocol: MS-CXR-format boxes (BioViL's CNR, spec §6), and SynthCXR's exact masks.

The metric pieces live in :mod:`localign.eval.grounding`; this module feeds them a trained method.

**Definition (MS-CXR phrase grounding).** Each phrase of the MS-CXR table (the boxes sharing
(dicom_id, label_text)) whose image lies in the chosen split of the pretraining data (default
``test``: images the encoder never saw; ``all`` is MS-CXR as released) is scored on its own image:
the phrase is tokenized as a one-sentence report with the method's text-input settings, the method's
``region_text_similarity(image, phrase)`` gives an [h, w] map on the region grid (cosine similarity
of each region's embedding with the phrase's), the map is smoothed with a Gaussian of σ = 1.5
region units (:func:`~localign.eval.grounding.smooth_similarity`), mapped back to the original
H × W pixels through the encoder's pad + resize geometry with bilinear interpolation
(:func:`~localign.eval.grounding.map_to_original` with ``ImageGeometry("pad_resize", size=S)``), and
scored by the CNR (:func:`~localign.eval.grounding.cnr`: |μ_A − μ_Ā| / √(σ²_A + σ²_Ā), population
variances, NaN pixels excluded) with A the **union of the phrase's boxes**. Results are aggregated
per MS-CXR category and overall (:func:`~localign.eval.grounding.aggregate_cnr`: mean over phrases,
its 95 % CI 1.96·s/√n, count; phrases with a constant map have no CNR and are counted as undefined).

**Definition (SynthCXR exact-mask grounding).** The same, for every report sentence of the
SynthCXR sentence table that describes a drawn finding on a frontal image of the split, with A the
finding's **exact pixel mask** instead of boxes, and the finding kind (consolidation, effusion, …)
as the category. Only SynthCXR knows which pixels a sentence talks about; boxes overstate the region
of thin or curved findings (pneumothorax rims, effusion menisci, tubes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from localign.progress import tqdm

from localign.data.images import load_image
from localign.data.manifest import PreparedDataset
from localign.data.text import SpecialTokens, collate_reports
from localign.data.tokenize import load_tokenizer, tokenize_sentences
from localign.data.transforms import ImageGeometry, Preprocessing, eval_transform
from localign.eval.grounding import aggregate_cnr, boxes_to_mask, cnr, map_to_original, smooth_similarity
from localign.eval.protocols.common import ProtocolResult, TaskUnavailable
from localign.eval.protocols.segmentation import load_mask, resolve_synthcxr_path
from localign.models.methods.base import PretrainModel

log = logging.getLogger(__name__)

GROUNDING_SOURCES = ("ms_cxr", "synth_masks")
GROUNDING_SPLITS = ("test", "validate", "train", "all")


def ms_cxr_phrases(prepared: PreparedDataset, split: str = "test") -> pd.DataFrame:
    """MS-CXR phrases whose image is in ``split`` of the pretraining data (``all``: every phrase).

    :return: columns ``phrase_id, category, text, path`` (absolute), ``height, width, boxes``.
    """
    if split not in GROUNDING_SPLITS:
        raise ValueError(f"split: expected one of {GROUNDING_SPLITS}, got {split!r}")
    if prepared.ms_cxr is None or prepared.ms_cxr.empty:
        raise TaskUnavailable(f"{prepared.root}: no MS-CXR table (prepare with --ms-cxr FILE)")
    t = prepared.ms_cxr if split == "all" else prepared.ms_cxr[prepared.ms_cxr["mimic_split"] == split]
    if t.empty:
        raise TaskUnavailable(f"MS-CXR: no phrase has its image in the {split!r} split "
                              f"(images per split: {prepared.ms_cxr['mimic_split'].value_counts().to_dict()})")
    return pd.DataFrame({
        "phrase_id": t["phrase_id"].to_numpy(), "category": t["category_name"].to_numpy(), "text": t["label_text"].to_numpy(),
        "path": [str(prepared.image_path(p)) for p in t["path"]], "height": t["image_height"].to_numpy(),
        "width": t["image_width"].to_numpy(), "boxes": list(t["boxes"]),
    })


def synth_sentence_masks(prepared: PreparedDataset, split: str = "test") -> pd.DataFrame:
    """SynthCXR sentences about a drawn finding, on kept frontal images of ``split``, with their mask.

    :return: columns ``phrase_id`` (row of ``sentences.csv``), ``category`` (finding kind),
        ``text``, ``path``, ``height``, ``width``, ``mask`` (absolute mask path).
    """
    if split not in GROUNDING_SPLITS:
        raise ValueError(f"split: expected one of {GROUNDING_SPLITS}, got {split!r}")
    sentences = prepared.sentences
    if sentences is None or prepared.synthcxr_root is None:
        raise TaskUnavailable(f"{prepared.root}: no SynthCXR sentence table (synth_masks grounding needs a SynthCXR dataset)")
    images = prepared.images[["dicom_id", "split", "path", "height", "width"]]
    if split != "all":
        images = images[images["split"] == split]
    s = sentences.reset_index().rename(columns={"index": "phrase_id"})
    s = s[s["mask"].notna() & (s["mask"].astype(str) != "")]
    s = s.merge(images, on="dicom_id", how="inner")
    if s.empty:
        raise TaskUnavailable(f"SynthCXR sentences: no finding sentence on a kept frontal image of the {split!r} split")
    return pd.DataFrame({
        "phrase_id": s["phrase_id"].to_numpy(), "category": s["finding"].astype(str).to_numpy(), "text": s["sentence"].astype(str).to_numpy(),
        "path": [str(prepared.image_path(p)) for p in s["path"]], "height": s["height"].to_numpy(), "width": s["width"].to_numpy(),
        "mask": [str(resolve_synthcxr_path(prepared, m)) for m in s["mask"]],
    })


def phrase_cnr(similarity_map: Any, original_size: tuple[int, int], region: np.ndarray, geometry: ImageGeometry,
               sigma: float = 1.5) -> tuple[float, np.ndarray]:
    """CNR of one region-grid similarity map against a region on the original pixels.

    Definition: :func:`~localign.eval.grounding.cnr` of
    ``map_to_original(smooth_similarity(map, sigma), original_size, geometry)`` (bilinear) against
    ``region`` — the union of the phrase's boxes (:func:`~localign.eval.grounding.boxes_to_mask`) or
    an exact mask.

    :param similarity_map: [h, w] map on the region grid.
    :param original_size: (H, W).
    :param region: [H, W] bool.
    :return: (CNR or NaN for a constant map, the [H, W] map on original pixels).
    """
    full = map_to_original(smooth_similarity(similarity_map, sigma), original_size, geometry, "bilinear")
    return cnr(full, region), full


@dataclass(frozen=True)
class PhraseMap:
    """One scored phrase: its table row, its region and its similarity map on the original pixels.

    :param row: the phrase's row of :func:`ms_cxr_phrases` / :func:`synth_sentence_masks`.
    :param region: [H, W] bool, the union of the phrase's boxes or the finding's exact mask.
    :param similarity: [H, W] float64, the smoothed map on the original pixels, NaN where the
        network did not see the image (:func:`phrase_cnr`).
    :param cnr: its CNR against ``region`` (NaN for a constant map).
    """

    row: pd.Series
    region: np.ndarray
    similarity: np.ndarray
    cnr: float


def phrase_region(row: pd.Series, source: str, height: int, width: int) -> np.ndarray:
    """[H, W] bool region of a phrase row: the union of its boxes (``ms_cxr``) or its exact mask (``synth_masks``)."""
    region = boxes_to_mask(row["boxes"], height, width) if source == "ms_cxr" else load_mask(row["mask"])
    if region.shape != (height, width):
        raise ValueError(f"{row.get('mask')}: mask shape {region.shape} differs from its image's {(height, width)}")
    return region


def iter_phrase_maps(
    model: PretrainModel,
    prep: Preprocessing,
    table: pd.DataFrame,
    source: str,
    *,
    sigma: float = 1.5,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    skipped: dict[int, str] | None = None,
    progress: bool = False,
) -> Iterator[PhraseMap]:
    """Every scorable phrase of ``table`` with its region, its map on the original pixels and its CNR.

    The phrases are read in batches of ``batch_size``: each phrase is tokenized as a one-sentence
    report with the method's text-input settings, its image goes through the evaluation transform
    and the run's normalisation, and ``model.region_text_similarity`` gives the [h, w] map that
    :func:`phrase_cnr` smooths, maps back and scores (module docstring). Phrases that are empty
    after tokenization, and regions that are empty or cover the whole image (no CNR exists), are
    not yielded; with ``skipped`` given, their phrase_id → reason is recorded there.

    :param table: rows of :func:`ms_cxr_phrases` (``source="ms_cxr"``) or
        :func:`synth_sentence_masks` (``"synth_masks"``), any subset.
    :return: iterator of :class:`PhraseMap`, in the table's order.
    """
    if source not in GROUNDING_SOURCES:
        raise ValueError(f"source: expected one of {GROUNDING_SOURCES}, got {source!r}")
    skipped = {} if skipped is None else skipped
    method = model.config
    tokenizer = load_tokenizer(method.text.model)
    special = SpecialTokens.from_tokenizer(tokenizer)
    geometry = prep.image_geometry()
    dev = torch.device(device)
    model.eval()
    starts = range(0, len(table), batch_size)
    for start in tqdm(starts, desc=f"grounding ({source})", disable=not progress, leave=False, unit="batch"):
        chunk = table.iloc[start : start + batch_size]
        ids = tokenize_sentences(list(chunk["text"]), tokenizer, method.text_input.max_length)
        keep = [i for i, t in enumerate(ids) if len(t) > 0]
        for i in set(range(len(chunk))) - set(keep):
            skipped[int(chunk.iloc[i]["phrase_id"])] = "empty phrase after tokenization"
        if not keep:
            continue
        chunk = chunk.iloc[keep]
        images, sizes = [], []
        for _, r in chunk.iterrows():
            pixels = load_image(r["path"])
            if pixels.shape != (int(r["height"]), int(r["width"])):
                raise ValueError(f"{r['path']}: image is {pixels.shape[0]}×{pixels.shape[1]} but the table says "
                                 f"{int(r['height'])}×{int(r['width'])}; boxes would not line up")
            images.append(eval_transform(torch.from_numpy(np.array(pixels, dtype=np.float32))[None] / 255.0, prep.input_size))
            sizes.append(pixels.shape)
        x = prep.normalize_batch(torch.stack(images)).to(dev)
        text = collate_reports([[ids[i]] for i in keep], method.text_input, special).to(dev)
        with torch.no_grad():
            maps = model.region_text_similarity(x, text).float().cpu().numpy()
        for (_, r), sim, (h, w) in zip(chunk.iterrows(), maps, sizes):
            region = phrase_region(r, source, h, w)
            if not region.any() or region.all():
                skipped[int(r["phrase_id"])] = "region is empty or covers the whole image"
                continue
            value, full = phrase_cnr(sim, (h, w), region, geometry, sigma)
            yield PhraseMap(r, region, full, value)


def grounding_protocol(
    model: PretrainModel,
    prep: Preprocessing,
    prepared: PreparedDataset,
    *,
    source: str = "ms_cxr",
    split: str = "test",
    sigma: float = 1.5,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[ProtocolResult]:
    """Phrase grounding CNR (definitions in the module docstring).

    :param source: ``"ms_cxr"`` (boxes) or ``"synth_masks"`` (SynthCXR exact masks).
    :return: one deterministic result (fraction 1.0, seed 0) with, per category and ``overall``,
        the mean CNR (metric ``<category>``), ``<category>/ci95``, ``<category>/count`` and
        ``<category>/n_undefined``, plus ``n_phrases`` and ``n_skipped``; ``details`` holds the
        per-phrase CNRs.
    """
    if source not in GROUNDING_SOURCES:
        raise ValueError(f"source: expected one of {GROUNDING_SOURCES}, got {source!r}")
    table = ms_cxr_phrases(prepared, split) if source == "ms_cxr" else synth_sentence_masks(prepared, split)
    skipped: dict[int, str] = {}
    rows = [{"phrase_id": int(p.row["phrase_id"]), "category": p.row["category"], "text": p.row["text"], "cnr": p.cnr,
             "region_fraction": float(p.region.mean())}
            for p in iter_phrase_maps(model, prep, table, source, sigma=sigma, batch_size=batch_size, device=device,
                                      skipped=skipped, progress=progress)]
    if skipped:
        reasons = pd.Series(list(skipped.values())).value_counts().to_dict()
        log.warning("grounding (%s): %d phrases skipped: %s", source, len(skipped), reasons)
    if not rows:
        raise TaskUnavailable(f"grounding ({source}): no phrase could be scored ({len(skipped)} skipped)")
    details = pd.DataFrame(rows)
    summary = aggregate_cnr(details, category_col="category", value_col="cnr")
    metrics: dict[str, float] = {}
    for category, row in summary.iterrows():
        metrics[str(category)] = float(row["mean"])
        metrics[f"{category}/ci95"] = float(row["ci95"])
        metrics[f"{category}/count"] = float(row["count"])
        metrics[f"{category}/n_undefined"] = float(row["n_undefined"])
    metrics["n_phrases"] = float(len(details))
    metrics["n_skipped"] = float(len(skipped))
    log.info("grounding (%s, %s): overall CNR %.3f over %d phrases", source, split, metrics["overall"], len(details))
    return [ProtocolResult(1.0, 0, metrics, details=details)]
