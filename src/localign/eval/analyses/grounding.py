"""Grounding chapter (08): per-phrase CNR, sign and pointing game of several runs, their summaries
per category with 95 % CIs, the example of each category, and the chapter's claims.

Every map is the one the grounding protocol scores (:mod:`localign.eval.protocols.grounding`):
``model.region_text_similarity`` of the image and the phrase (tokenized as a one-sentence report),
smoothed with σ = 1.5 region units and mapped to the original pixels through the run's
``Preprocessing.image_geometry()`` (:func:`~localign.eval.protocols.grounding.phrase_cnr`). The
region is the union of the phrase's boxes (``source="ms_cxr"``, the MS-CXR-format file) or the
finding's exact mask (``source="synth_masks"``, SynthCXR only). On that map:

- **CNR** = |μ_A − μ_Ā| / √(σ²_A + σ²_Ā) (:func:`localign.eval.grounding.cnr`): ≥ 0 by its absolute
  value, so a map that is *lower* inside the region than outside scores as well as one that is
  higher; the column ``contrast_sign`` (+1, −1, 0) records which it was.
- **pointing game** (:func:`localign.metrics.localization.pointing_game` with ``ties="expected"``):
  1 if the map's maximum over the pixels the network saw lies inside the region, else 0; when the
  maximum is attained on several pixels, the share of them inside the region (the expected hit of
  a uniformly random tie-break). Ties are the rule, not the exception: bilinear upsampling with
  ``align_corners=False`` holds the map constant over the outer half-cell, so a maximum on a border
  cell of the region grid becomes a flat strip (a square at a corner) of up to (S/2g)² pixels;
  "pessimistic" ties (a hit only if the whole strip is inside) would score almost every border
  maximum as a miss.
- **chance** = |A ∩ V| / |V| with V the pixels the network saw (non-NaN): the hit rate of a
  uniformly random point, the pointing game's chance level for that phrase.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from localign.data.manifest import PreparedDataset
from localign.eval.grounding import aggregate_cnr
from localign.eval.protocols.grounding import GROUNDING_SOURCES, PhraseMap, iter_phrase_maps, ms_cxr_phrases, synth_sentence_masks
from localign.eval.stats import Z_95
from localign.metrics.localization import pointing_game
from localign.train.runs import LoadedRun

__all__ = [
    "SCORE_COLUMNS", "phrase_table", "run_phrase_maps", "phrase_scores", "runs_phrase_scores", "phrase_maps",
    "contrast_sign", "pointing_chance", "phrase_measures", "proportion_ci95", "cnr_summary", "pointing_summary", "select_examples", "best_method",
    "grounding_claims", "published_cnr", "category_table", "pointing_table", "write_csv",
]

#: tie rule of the pointing game (module docstring: why not "pessimistic")
POINTING_TIES = "expected"
#: columns of :func:`phrase_scores`
SCORE_COLUMNS = ("run", "method", "source", "phrase_id", "category", "text", "cnr", "contrast_sign", "pointing",
                 "chance", "region_fraction")


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def _check_source(source: str) -> None:
    if source not in GROUNDING_SOURCES:
        raise ValueError(f"source: expected one of {GROUNDING_SOURCES}, got {source!r}")


def phrase_table(prepared: PreparedDataset, source: str = "ms_cxr", split: str = "test") -> pd.DataFrame:
    """The phrases of ``source`` in ``split``: :func:`ms_cxr_phrases` (boxes) or :func:`synth_sentence_masks` (masks).

    :return: one row per phrase with ``phrase_id, category, text, path, height, width`` and ``boxes``
        (ms_cxr) or ``mask`` (synth_masks).
    """
    _check_source(source)
    return ms_cxr_phrases(prepared, split) if source == "ms_cxr" else synth_sentence_masks(prepared, split)


def run_phrase_maps(run: LoadedRun, table: pd.DataFrame, source: str, *, sigma: float = 1.5, batch_size: int = 32,
                    device: str | torch.device = "cpu") -> Iterator[PhraseMap]:
    """Each scorable phrase of ``table`` with its region, map and CNR under one run: the grounding
    protocol's own loop (:func:`localign.eval.protocols.grounding.iter_phrase_maps`), so the CNRs
    are the protocol's; phrases it skips (empty after tokenization, a region that is empty or the
    whole image) are skipped here too.

    :param run: a :func:`~localign.train.runs.load_run` result with its preprocessing.
    :param table: rows of :func:`phrase_table` (any subset).
    :param device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
    :return: iterator of :class:`~localign.eval.protocols.grounding.PhraseMap` (row, region [H, W]
        bool, similarity [H, W] with NaN = unseen, cnr).
    """
    _check_source(source)
    if run.preprocessing is None:
        raise ValueError(f"run: {run.run_dir} has no encoder.pt (unfinished run): no preprocessing to map back with")
    dev = _device(device)
    model = run.model.to(dev)
    return iter_phrase_maps(model, run.preprocessing, table, source, sigma=sigma, batch_size=batch_size, device=dev)


def _map_and_region(similarity_map: Any, region: Any) -> tuple[np.ndarray, np.ndarray]:
    """The [H, W] float map and the [H, W] bool region of one phrase, checked."""
    m = np.asarray(similarity_map, dtype=float)
    a = np.asarray(region)
    if a.dtype != np.bool_:
        raise ValueError(f"region: expected a bool mask, got dtype {a.dtype}")
    if m.ndim != 2 or a.shape != m.shape:
        raise ValueError(f"region: shape {a.shape} must equal the [H, W] map's {m.shape}")
    return m, a


def contrast_sign(similarity_map: Any, region: Any) -> int:
    """+1 if the map's mean over the region exceeds its mean outside, −1 if it is below, 0 if equal.

    The sign that CNR's absolute value drops (NaN pixels excluded, as in :func:`~localign.eval.grounding.cnr`).

    :param similarity_map: [H, W], NaN = excluded.
    :param region: [H, W] bool.
    """
    m, a = _map_and_region(similarity_map, region)
    valid = ~np.isnan(m)
    inside, outside = m[a & valid], m[~a & valid]
    if inside.size == 0 or outside.size == 0:
        raise ValueError("region: no valid pixel inside or outside the region")
    d = float(inside.mean() - outside.mean())
    return int(np.sign(d))


def pointing_chance(similarity_map: Any, region: Any) -> float:
    """The pointing game's chance rate for one phrase: |A ∩ V| / |V|, V the pixels the map covers (non-NaN).

    A point drawn uniformly from the pixels the network saw lands in the region that often; it is
    what :func:`~localign.metrics.localization.pointing_game` scores on average for a map whose
    maximum is uninformative.

    :param similarity_map: [H, W], NaN = unseen.
    :param region: [H, W] bool.
    """
    m, a = _map_and_region(similarity_map, region)
    valid = ~np.isnan(m)
    if not valid.any():
        raise ValueError("similarity_map: every pixel is NaN")
    return float((a & valid).sum() / valid.sum())


def phrase_measures(similarity_map: Any, region: Any) -> dict[str, float]:
    """The per-phrase measures besides CNR of one map on the original pixels (module docstring).

    :param similarity_map: [H, W], NaN = unseen.
    :param region: [H, W] bool.
    :return: ``contrast_sign`` (:func:`contrast_sign`), ``pointing`` (the pointing game with
        :data:`POINTING_TIES` ties, in [0, 1]), ``chance`` (:func:`pointing_chance`) and
        ``region_fraction`` (the region's share of all pixels, seen or not).
    """
    region = np.asarray(region)
    return {"contrast_sign": contrast_sign(similarity_map, region),
            "pointing": pointing_game(similarity_map, region, ties=POINTING_TIES),
            "chance": pointing_chance(similarity_map, region), "region_fraction": float(region.mean())}


def _score_row(run_name: str, method: str, source: str, p: PhraseMap) -> dict:
    r = p.row
    return {"run": run_name, "method": method, "source": source, "phrase_id": int(r["phrase_id"]),
            "category": str(r["category"]), "text": str(r["text"]), "cnr": float(p.cnr),
            **phrase_measures(p.similarity, p.region)}


def phrase_scores(run: LoadedRun, prepared: PreparedDataset, source: str = "ms_cxr", split: str = "test", *,
                  sigma: float = 1.5, batch_size: int = 32, device: str | torch.device = "cpu",
                  name: str | None = None, max_phrases: int | None = None) -> pd.DataFrame:
    """One row per phrase of one run: CNR, contrast sign, pointing-game hit and chance (module docstring).

    :param name: the ``run`` column (default: the run folder's name).
    :param max_phrases: only the first ``max_phrases`` phrases of the table (None: all).
    :return: columns :data:`SCORE_COLUMNS`, ordered as the phrase table.
    """
    if max_phrases is not None and (isinstance(max_phrases, bool) or not isinstance(max_phrases, int) or max_phrases < 1):
        raise ValueError(f"max_phrases: expected a positive integer or None, got {max_phrases!r}")
    table = phrase_table(prepared, source, split)
    if max_phrases is not None:
        table = table.iloc[:max_phrases]
    rows = [_score_row(name or run.name, run.method.name, source, p)
            for p in run_phrase_maps(run, table, source, sigma=sigma, batch_size=batch_size, device=device)]
    if not rows:
        raise ValueError(f"phrase_scores: no phrase of {source!r} ({split}) could be scored for {run.run_dir}")
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def runs_phrase_scores(runs: Mapping[str, LoadedRun], prepared: PreparedDataset,
                       sources: Sequence[str] = GROUNDING_SOURCES, split: str = "test", **kwargs: Any) -> pd.DataFrame:
    """:func:`phrase_scores` of every run (name → loaded run) and source, stacked (tidy)."""
    if not runs:
        raise ValueError("runs: none")
    for s in sources:
        _check_source(s)
    frames = [phrase_scores(run, prepared, s, split, name=name, **kwargs) for name, run in runs.items() for s in sources]
    return pd.concat(frames, ignore_index=True)


def phrase_maps(run: LoadedRun, prepared: PreparedDataset, phrase_ids: Sequence[int], source: str = "ms_cxr",
                split: str = "test", *, sigma: float = 1.5, device: str | torch.device = "cpu") -> dict[int, np.ndarray]:
    """The [H, W] maps on original pixels (NaN = unseen) of the given phrases of one run (phrase_id → map)."""
    table = phrase_table(prepared, source, split)
    wanted = [int(p) for p in phrase_ids]
    missing = sorted(set(wanted) - set(table["phrase_id"].astype(int)))
    if missing:
        raise ValueError(f"phrase_ids: {missing} are not phrases of {source!r} in the {split!r} split")
    sub = table[table["phrase_id"].astype(int).isin(wanted)]
    return {int(p.row["phrase_id"]): p.similarity for p in run_phrase_maps(run, sub, source, sigma=sigma, device=device)}


# --------------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------------
def proportion_ci95(successes: float, n: int) -> tuple[float, float, float]:
    """A proportion with its Wilson score 95 % interval.

    Definition: p̂ = k/n; the interval (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n) with
    z = 1.96. Unlike the normal approximation p̂ ± z√(p̂(1−p̂)/n) it stays inside [0, 1] and is not
    empty at p̂ = 0 or 1, which is common for a pointing game over a few dozen phrases. ``k`` may
    be a sum of per-phrase scores in [0, 1] (the pointing game's expected hits under ties): a
    score in [0, 1] with mean p has a variance of at most p(1 − p), so the binomial interval is
    conservative for it. The interval always contains p̂ (round-off at p̂ = 0 or 1 included).

    :param successes: k in [0, n] (a count, or a sum of scores in [0, 1]).
    :return: (p̂, low, high).
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    if isinstance(successes, bool) or not (isinstance(successes, (int, float, np.number)) and 0 <= successes <= n):
        raise ValueError(f"successes: expected a number in [0, {n}], got {successes!r}")
    p, z2 = float(successes) / n, Z_95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return p, min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def _check_scores(scores: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in scores.columns]
    if missing:
        raise ValueError(f"scores: columns {missing} missing; columns are {list(scores.columns)}")
    if len(scores) == 0:
        raise ValueError("scores: empty")


def cnr_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean CNR with its 95 % CI per (source, run, category) and ``overall`` (:func:`aggregate_cnr`).

    :param scores: :func:`phrase_scores` rows.
    :return: tidy columns source, run, method, category, mean, ci95, ci_low, ci_high, count,
        n_undefined, negative (fraction of phrases whose map is lower inside than outside).
    """
    _check_scores(scores, ("source", "run", "method", "category", "cnr", "contrast_sign"))
    out = []
    for (source, run), g in scores.groupby(["source", "run"], sort=False):
        agg = aggregate_cnr(g, category_col="category", value_col="cnr").reset_index()
        neg = g.groupby("category")["contrast_sign"].apply(lambda s: float((s < 0).mean()))
        agg["negative"] = [float((g["contrast_sign"] < 0).mean()) if c == "overall" else float(neg[c]) for c in agg["category"]]
        agg.insert(0, "source", source)
        agg.insert(1, "run", run)
        agg.insert(2, "method", g["method"].iloc[0])
        agg["ci_low"], agg["ci_high"] = agg["mean"] - agg["ci95"], agg["mean"] + agg["ci95"]
        out.append(agg)
    cols = ["source", "run", "method", "category", "mean", "ci95", "ci_low", "ci_high", "count", "n_undefined", "negative"]
    return pd.concat(out, ignore_index=True)[cols]


def pointing_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Pointing-game accuracy with its Wilson 95 % CI (:func:`proportion_ci95`) and the chance rate,
    per (source, run, category) and ``overall``.

    :param scores: :func:`phrase_scores` rows (``pointing`` in [0, 1]: a hit, a miss or, under
        ties, the share of the tied maxima inside the region; ``chance`` per phrase).
    :return: tidy columns source, run, method, category, accuracy (mean of ``pointing``), ci_low,
        ci_high, chance (mean per-phrase chance), hits (sum of ``pointing``), count.
    """
    _check_scores(scores, ("source", "run", "method", "category", "pointing", "chance"))
    bad = ~scores["pointing"].between(0, 1)
    if bad.any():
        raise ValueError(f"scores: 'pointing' must lie in [0, 1], got {sorted(scores.loc[bad, 'pointing'].unique())[:5]}")
    rows = []
    for (source, run), g in scores.groupby(["source", "run"], sort=False):
        groups = [(c, g[g["category"] == c]) for c in sorted(g["category"].unique())] + [("overall", g)]
        for category, h in groups:
            hits, n = float(h["pointing"].sum()), len(h)
            p, low, high = proportion_ci95(hits, n)
            rows.append({"source": source, "run": run, "method": g["method"].iloc[0], "category": category, "accuracy": p,
                         "ci_low": low, "ci_high": high, "chance": float(h["chance"].mean()), "hits": hits, "count": n})
    return pd.DataFrame(rows)


def best_method(scores: pd.DataFrame, source: str = "ms_cxr") -> str:
    """The run with the highest mean CNR over all phrases of ``source`` (ties: first in name order)."""
    _check_scores(scores, ("source", "run", "cnr"))
    s = scores[scores["source"] == source]
    if s.empty:
        raise ValueError(f"source: no rows for {source!r}; sources are {sorted(scores['source'].unique())}")
    means = s.groupby("run")["cnr"].mean().sort_index()
    return str(means.idxmax())


def select_examples(scores: pd.DataFrame, by: str, source: str = "ms_cxr", rule: str = "median",
                    among: Sequence[str] | None = None) -> pd.DataFrame:
    """One phrase per category, chosen by the CNR of run ``by``.

    Definition: within each category, the phrases with a defined CNR of run ``by`` (and, with
    ``among``, a defined CNR of every run listed there, so that each can be shown) are sorted by
    (CNR, phrase_id); ``rule="median"`` takes the element at index ⌊(n − 1)/2⌋ (the lower median,
    so an actual phrase, typical of that run), ``"best"`` the highest CNR, ``"first"`` the smallest
    phrase_id. Deterministic; ties are broken by phrase_id.

    :return: one row per category (sorted) with that run's score row (phrase_id, text, cnr, ...).
    """
    if rule not in ("median", "best", "first"):
        raise ValueError(f"rule: expected 'median', 'best' or 'first', got {rule!r}")
    _check_scores(scores, ("source", "run", "phrase_id", "category", "cnr"))
    s = scores[(scores["source"] == source) & (scores["run"] == by)].dropna(subset=["cnr"])
    if among:
        src = scores[(scores["source"] == source) & scores["run"].isin(list(among))].dropna(subset=["cnr"])
        complete = src.groupby("phrase_id")["run"].nunique()
        s = s[s["phrase_id"].isin(complete[complete == len(set(among))].index)]
    if s.empty:
        raise ValueError(f"by: no scored phrase of run {by!r} for source {source!r}; runs are {sorted(scores['run'].unique())}")
    rows = []
    for _, g in s.groupby("category", sort=True):
        if rule == "first":
            g = g.sort_values("phrase_id")
            rows.append(g.iloc[0])
            continue
        g = g.sort_values(["cnr", "phrase_id"], kind="mergesort")
        rows.append(g.iloc[-1] if rule == "best" else g.iloc[(len(g) - 1) // 2])
    return pd.DataFrame(rows).reset_index(drop=True)


def category_table(summary: pd.DataFrame, source: str, value: str = "mean", digits: int = 2,
                   runs: Sequence[str] | None = None) -> pd.DataFrame:
    """A display table of one source: a row per run, a column per category (``overall`` last), cells
    ``value ± half-width`` of the 95 % CI (half of ci_high − ci_low; asymmetric intervals are
    shown as ``value [low, high]``), and a first row ``n`` with the phrase counts.

    :param summary: :func:`cnr_summary` or :func:`pointing_summary` rows.
    """
    for col in ("source", "run", "category", value, "ci_low", "ci_high", "count"):
        if col not in summary.columns:
            raise ValueError(f"summary: column {col!r} missing")
    s = summary[summary["source"] == source]
    if s.empty:
        raise ValueError(f"source: no rows for {source!r}")
    cats = sorted(c for c in s["category"].unique() if c != "overall") + ["overall"]
    runs = list(runs) if runs is not None else list(dict.fromkeys(s["run"]))

    def cell(r: pd.Series) -> str:
        v, lo, hi = float(r[value]), float(r["ci_low"]), float(r["ci_high"])
        if not math.isfinite(v):
            return "–"
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return f"{v:.{digits}f}"
        if abs((hi - v) - (v - lo)) <= 0.5 * 10**-digits:
            return f"{v:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"

    table = {run: {c: cell(r) for c, r in s[s["run"] == run].set_index("category").reindex(cats).iterrows()} for run in runs}
    counts = s.groupby("category")["count"].max().reindex(cats)
    out = pd.DataFrame.from_dict(table, orient="index")[cats]
    out.loc["n"] = [f"{int(v)}" if pd.notna(v) else "–" for v in counts]
    out = out.loc[["n"] + runs]
    out.index.name = "method"
    return out


def pointing_table(summary: pd.DataFrame, source: str, digits: int = 2, runs: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`category_table` of the pointing-game accuracy with a last row ``chance``: the mean
    per-phrase chance rate of each category (the phrases every run scored: the first run's).

    :param summary: :func:`pointing_summary` rows.
    """
    table = category_table(summary, source, value="accuracy", digits=digits, runs=runs)
    s = summary[summary["source"] == source]
    first = list(runs)[0] if runs is not None else s["run"].iloc[0]
    chance = s[s["run"] == first].set_index("category")["chance"].reindex(table.columns)
    table.loc["chance"] = [f"{v:.{digits + 1}f}" if pd.notna(v) else "–" for v in chance]
    return table


# --------------------------------------------------------------------------------------------------
# claims and papers' numbers
# --------------------------------------------------------------------------------------------------
#: local run → the paper whose method it is, for the claim "local methods ground phrases better than global ones"
LOCAL_RUNS = {"gloria": "GLoRIA", "lovt": "LoVT", "limitr": "LIMITR", "local_mi_cpc": "Liao et al."}
#: the global-only runs each local run is compared with (their maps: a CAM-like region map, see the notebook)
GLOBAL_RUNS = ("convirt", "clip")
#: (local run, global run, paper), every local run against every global one
LOCAL_VS_GLOBAL = tuple((local, glob, paper) for local, paper in LOCAL_RUNS.items() for glob in GLOBAL_RUNS)
SOURCE_LABELS = {"ms_cxr": "MS-CXR-format boxes", "synth_masks": "SynthCXR exact masks"}


def grounding_claims(scores: pd.DataFrame, chapter: str = "08_grounding") -> list[dict]:
    """The chapter's claims as :func:`~localign.eval.claims.compare_claim` rows, over per-phrase values.

    - local vs global: the mean CNR of each local run of :data:`LOCAL_RUNS` above that of each
      global run of :data:`GLOBAL_RUNS` (ConVIRT, CLIP), per source;
    - LIMITR above GLoRIA (LIMITR's paper), per source;
    - pointing game above chance: each run's per-phrase hits (in [0, 1]) against the per-phrase chance rates.

    Runs missing from ``scores`` are left out. The two samples of a comparison are the same phrases;
    ``compare_claim`` treats them as independent, which makes its CI wider (more conservative) than a
    paired one.
    """
    from localign.eval.claims import compare_claim

    _check_scores(scores, ("source", "run", "cnr", "pointing", "chance"))
    runs = set(scores["run"])
    rows = []
    for source in [s for s in GROUNDING_SOURCES if s in set(scores["source"])]:
        s = scores[scores["source"] == source]
        label = SOURCE_LABELS[source]

        def cnrs(run: str) -> np.ndarray:
            return s.loc[s["run"] == run, "cnr"].to_numpy(float)

        for local, glob, paper in LOCAL_VS_GLOBAL:
            if local in runs and glob in runs:
                rows.append(compare_claim(chapter, paper, "local methods ground phrases better than global ones",
                                          f"mean phrase CNR, {label}", local, cnrs(local), glob, cnrs(glob)))
        if {"limitr", "gloria"} <= runs:
            rows.append(compare_claim(chapter, "LIMITR", "LIMITR grounds phrases better than GLoRIA",
                                      f"mean phrase CNR, {label}", "limitr", cnrs("limitr"), "gloria", cnrs("gloria")))
        for run in sorted(runs):
            r = s[s["run"] == run]
            if len(r):
                rows.append(compare_claim(chapter, "pointing game", "the map's maximum falls inside the region more often than chance",
                                          f"pointing-game hit rate, {label}", run, r["pointing"].to_numpy(float),
                                          "chance", r["chance"].to_numpy(float)))
    return rows


def published_cnr() -> pd.DataFrame:
    """The papers' packaged grounding CNRs (MS-CXR): LIMITR supplementary Fig. 2, 15 single examples.

    :return: columns example (1-based, the figure's text order), method, dataset, cnr, phrase (the
        phrase next to it in the extracted text, or "(not recoverable)"), note.
    """
    from localign.published import load_published

    pub = load_published("limitr", "supp_fig2")
    pub = pub[(pub["protocol"] == "grounding") & (pub["metric"] == "CNR")].reset_index(drop=True)
    import re

    def phrase(note: str) -> str:
        found = re.findall(r"'([^']+)'", note) if "as adjacent" in note else []
        return found[0] if found else "(not recoverable)"

    return pd.DataFrame({"example": np.arange(1, len(pub) + 1), "method": pub["method"], "dataset": pub["dataset"],
                         "cnr": pub["value"].astype(float), "phrase": [phrase(n) for n in pub["note"]],
                         "note": pub["note"]})


def write_csv(frame: pd.DataFrame, out: str | Path, name: str) -> Path:
    """``out/name.csv`` (folders created), returned."""
    path = Path(out) / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
