"""Zero-shot classification from text prompts (GLoRIA's CheXpert 5×200 protocol, as hi-ml/BioViL and cxr-clip offer it).

**Definition.** The test set is CheXpert-5×200-style, drawn from the prepared dataset's labels:
the studies of one split (default ``test``) whose CheXpert labels are positive (1) for **exactly
one** of the classes (default Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion;
uncertain and blank labels are not positive), each represented by its first kept frontal image in
``images.csv`` order. Per class, n studies are drawn without replacement with
``numpy.random.default_rng(seed)`` (classes in the configured order, candidates sorted by
``study_id``), where n = min(``n_per_class``, the smallest class's candidate count): the set is
balanced, as large as the data allow up to ``n_per_class`` (200 in GLoRIA) per class, and one set
per downstream seed. The class prompts are kept in the repository
(:data:`PROMPTS_FILE`, ``zero_shot_prompts.yaml``: every combination of a severity, a finding
phrase and a location per class, GLoRIA's scheme in our own words), each tokenized as a
one-sentence report with the method's text-input settings. An image's score for a class uses the
method's own image-report similarity: for methods whose score is the cosine of global embeddings
(ConVIRT, CLIP, LoVT: the default :meth:`~localign.models.methods.base.PretrainModel.similarity`)
the class embedding is the mean of the L2-normalised global embeddings of its prompts,
renormalised, and the score its cosine with the image's projected global embedding (CLIP's prompt
ensembling); for methods with their own score (GLoRIA's combined global + local similarity,
LIMITR's, the local-MI critic) the score is the mean over the class's prompts of
``similarity(image, prompt)``. The predicted class is the arg-max score (no per-class
normalisation over the test images). Metrics: accuracy over the balanced set (chance = 1 / number of
classes) and the one-vs-rest AUROC of each class's score (positives: that class's images,
negatives: the other classes' images) with their unweighted mean ``macro``; seeds repeat the draw,
and the tables report mean ± 95 % CI over seeds as for the trained protocols. Images go through the
encoder's own input pipeline (:mod:`~localign.eval.protocols.features`), eval mode, no gradient.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from localign.data import layout
from localign.data.manifest import PreparedDataset
from localign.data.text import SpecialTokens, collate_reports
from localign.data.tokenize import load_tokenizer, tokenize_sentences
from localign.metrics import auroc_per_class
from localign.eval.protocols.common import ProtocolResult, TaskUnavailable, check_positive
from localign.eval.protocols.registry import FigureSpec, Protocol, TaskContext, register_protocol
from localign.models.embeddings import ImageEmbeddings, ReportEmbeddings
from localign.models.methods.base import PretrainModel

log = logging.getLogger(__name__)

#: CheXpert's five competition findings, the classes of GLoRIA's CheXpert 5×200
ZERO_SHOT_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
#: the packaged class prompts
PROMPTS_FILE = Path(__file__).with_name("zero_shot_prompts.yaml")
ENSEMBLE_MODES = ("embedding", "score")


@dataclass(frozen=True)
class ZeroShotConfig:
    """Settings of the zero-shot protocol (``EvalConfig.zero_shot``).

    :ivar classes: CheXpert labels to classify among (each needs prompts in the prompt file).
    :ivar n_per_class: most studies per class of the balanced set (GLoRIA: 200).
    :ivar split: split the set is drawn from.
    :ivar prompts: a YAML prompt file of the packaged file's shape (None: :data:`PROMPTS_FILE`).
    """

    classes: tuple[str, ...] = ZERO_SHOT_CLASSES
    n_per_class: int = 200
    split: str = "test"
    prompts: str | None = None

    def __post_init__(self) -> None:
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"zero_shot.classes: expected at least two distinct CheXpert labels, got {self.classes!r}")
        unknown = [c for c in self.classes if c not in layout.CHEXPERT_LABELS]
        if unknown:
            raise ValueError(f"zero_shot.classes: {unknown} are not CheXpert labels ({', '.join(layout.CHEXPERT_LABELS)})")
        check_positive("zero_shot.n_per_class", self.n_per_class, integer=True)
        if self.split not in layout.MIMIC_SPLITS:
            raise ValueError(f"zero_shot.split: expected one of {layout.MIMIC_SPLITS}, got {self.split!r}")


# --------------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------------
def _prompt(parts: Sequence[str]) -> str:
    text = " ".join(p.strip() for p in parts if p and p.strip())
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def load_prompts(path: str | Path | None = None) -> dict[str, list[str]]:
    """``{class: prompts}`` of a prompt file: every (severity, finding, location) combination, in file order.

    :raises ValueError: the file is not ``classes: {name: {severity, finding, location}}`` with
        lists of strings (``finding`` non-empty).
    """
    import yaml

    path = Path(path) if path is not None else PROMPTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"zero-shot prompt file {path} does not exist")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, dict) or not classes:
        raise ValueError(f"{path.name}: expected a top-level 'classes:' mapping of class name to prompt parts")
    out: dict[str, list[str]] = {}
    for name, parts in classes.items():
        if not isinstance(parts, dict) or set(parts) - {"severity", "finding", "location"}:
            raise ValueError(f"{path.name}: class {name!r}: expected the keys severity, finding, location")
        lists = [parts.get(k) or [""] for k in ("severity", "finding", "location")]
        if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in lists) or not any(s.strip() for s in lists[1]):
            raise ValueError(f"{path.name}: class {name!r}: severity/finding/location must be lists of strings, finding non-empty")
        out[str(name)] = list(dict.fromkeys(_prompt(c) for c in product(*lists)))
    return out


def class_prompts(classes: Sequence[str], path: str | Path | None = None) -> dict[str, list[str]]:
    """The prompts of each class, in the order of ``classes``; a class the file lacks is an error."""
    prompts = load_prompts(path)
    missing = [c for c in classes if c not in prompts]
    if missing:
        raise ValueError(f"zero-shot: no prompts for class(es) {missing} in {Path(path or PROMPTS_FILE).name}; "
                         f"it has prompts for {sorted(prompts)}")
    return {c: prompts[c] for c in classes}


# --------------------------------------------------------------------------------------------------
# the balanced test set
# --------------------------------------------------------------------------------------------------
def single_label_studies(prepared: PreparedDataset, classes: Sequence[str], split: str = "test") -> pd.DataFrame:
    """Studies of ``split`` positive for exactly one of ``classes``, each with its first kept frontal image.

    :return: columns ``study_id, dicom_id, path`` (absolute), ``label`` (the class name), sorted by
        ``study_id``.
    """
    unknown = [c for c in classes if c not in layout.CHEXPERT_LABELS]
    if unknown:
        raise ValueError(f"classes: {unknown} are not CheXpert labels")
    labels = prepared.labels
    if labels is None or labels.empty:
        raise TaskUnavailable(f"{prepared.root}: labels.csv is empty (no CheXpert labels were prepared)")
    lab = labels[labels["split"] == split]
    positive = (lab[list(classes)] == 1.0).to_numpy()
    one = positive.sum(axis=1) == 1
    studies = pd.DataFrame({"study_id": lab["study_id"].to_numpy()[one],
                            "label": np.asarray(classes, dtype=object)[positive[one].argmax(axis=1)]})
    images = prepared.images[prepared.images["split"] == split].drop_duplicates("study_id", keep="first")
    table = studies.merge(images[["study_id", "dicom_id", "path"]], on="study_id", how="inner")
    table["path"] = [str(prepared.image_path(p)) for p in table["path"]]
    return table.sort_values("study_id", kind="stable").reset_index(drop=True)[["study_id", "dicom_id", "path", "label"]]


def draw_balanced(candidates: pd.DataFrame, classes: Sequence[str], n_per_class: int, seed: int) -> pd.DataFrame:
    """A balanced draw of ``min(n_per_class, smallest class count)`` rows per class (column ``label``).

    Classes are drawn in the order of ``classes``, each from its rows sorted by ``study_id`` with
    ``numpy.random.default_rng(seed)``; the result is ordered by class, then ``study_id``.

    :raises TaskUnavailable: a class has no candidate.
    """
    counts = {c: int((candidates["label"] == c).sum()) for c in classes}
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise TaskUnavailable(f"zero-shot: no study is positive for exactly one class and that class is {empty} "
                              f"(single-label studies per class: {counts})")
    n = min(int(n_per_class), min(counts.values()))
    rng = np.random.default_rng(int(seed))
    parts = []
    for c in classes:
        rows = candidates[candidates["label"] == c].sort_values("study_id", kind="stable")
        pick = np.sort(rng.choice(len(rows), size=n, replace=False))
        parts.append(rows.iloc[pick])
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------------
# scores and metrics
# --------------------------------------------------------------------------------------------------
def ensemble_mode(model: PretrainModel) -> str:
    """``"embedding"`` when the method's score is the default cosine of global embeddings, else ``"score"``."""
    return "embedding" if type(model).similarity is PretrainModel.similarity else "score"


def class_scores(image_emb: ImageEmbeddings, prompt_embs: Sequence[ReportEmbeddings],
                 similarity: Callable[[Any, Any], Tensor], mode: str = "embedding") -> Tensor:
    """Scores ``[N, K]`` of N images for K classes, each class given by the embeddings of its prompts.

    :param image_emb: the images' embeddings (``encode_images``).
    :param prompt_embs: per class, the embeddings of its P_k prompts (``encode_reports``).
    :param similarity: the method's score, ``similarity(image_emb, report_emb) -> [N, M]``.
    :param mode: ``"embedding"``: the class embedding is the renormalised mean of the normalised
        prompt globals, scored once; ``"score"``: the mean over prompts of the scores.
    """
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"mode: expected one of {ENSEMBLE_MODES}, got {mode!r}")
    if not prompt_embs:
        raise ValueError("class_scores: no classes given")
    if mode == "embedding":
        centres = [nn.functional.normalize(nn.functional.normalize(e.global_embedding.float(), dim=-1).mean(0), dim=-1) for e in prompt_embs]
        return similarity(image_emb, ReportEmbeddings(global_embedding=torch.stack(centres))).float()
    return torch.stack([similarity(image_emb, e).float().mean(dim=1) for e in prompt_embs], dim=1)


def zero_shot_metrics(scores: Any, labels: Sequence[int], class_names: Sequence[str]) -> dict[str, float]:
    """Accuracy (arg-max class) and one-vs-rest AUROC per class and ``macro`` of ``[N, K]`` scores.

    :param labels: the true class index of each image (0..K-1).
    """
    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64)
    y = np.asarray(labels, dtype=int)
    names = list(class_names)
    if s.ndim != 2 or s.shape != (len(y), len(names)):
        raise ValueError(f"scores: expected shape [{len(y)}, {len(names)}], got {tuple(s.shape)}")
    if ((y < 0) | (y >= len(names))).any():
        raise ValueError(f"labels: expected class indices in 0..{len(names) - 1}")
    onehot = np.eye(len(names))[y]
    metrics = {"accuracy": float((s.argmax(axis=1) == y).mean())}
    metrics.update(auroc_per_class(onehot, s, names))
    return metrics


@torch.no_grad()
def _encode_prompts(model: PretrainModel, prompts: Sequence[str], device: torch.device) -> ReportEmbeddings:
    method = model.config
    tokenizer = load_tokenizer(method.text.model)
    ids = tokenize_sentences(list(prompts), tokenizer, method.text_input.max_length)
    empty = [p for p, t in zip(prompts, ids) if not t]
    if empty:
        raise ValueError(f"zero-shot: prompt(s) {empty} are empty after tokenization")
    text = collate_reports([[t] for t in ids], method.text_input, SpecialTokens.from_tokenizer(tokenizer)).to(device)
    return model.encode_reports(text)


@torch.no_grad()
def _image_scores(model: PretrainModel, images: Any, prep, prompt_embs: Sequence[Any], mode: str, batch_size: int,
                  device: torch.device) -> np.ndarray:
    """``[N, K]`` class scores of every image of a store, batch by batch."""
    out = []
    for start in range(0, len(images), batch_size):
        x = prep.normalize_batch(images.batch(range(start, min(start + batch_size, len(images))))).to(device)
        out.append(class_scores(model.encode_images(x), prompt_embs, model.similarity, mode).cpu())
    return torch.cat(out).numpy()


def zero_shot_protocol(
    model: PretrainModel,
    prep,
    prepared: PreparedDataset,
    *,
    config: ZeroShotConfig | None = None,
    seeds: Sequence[int] = (0,),
    stores=None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[ProtocolResult]:
    """Zero-shot classification of a balanced single-label test set (definition in the module docstring).

    :return: one result per seed (fraction 1.0): ``accuracy``, one AUROC per class, ``macro``,
        ``chance_accuracy`` (1 / K), ``n_per_class``, ``n_images``, ``n_prompts``; ``details``
        holds each image's class, predicted class and scores.
    """
    from localign.eval.protocols.features import StoreCache

    cfg = config or ZeroShotConfig()
    classes = list(cfg.classes)
    prompts = class_prompts(classes, cfg.prompts)
    candidates = single_label_studies(prepared, classes, cfg.split)
    draws = {int(s): draw_balanced(candidates, classes, cfg.n_per_class, s) for s in seeds}
    union = sorted(set().union(*(set(d["path"]) for d in draws.values())))
    position = {p: i for i, p in enumerate(union)}
    stores = stores or StoreCache(progress=progress)
    images = stores.get(union, prep.input_size, desc="zero-shot images")
    dev = torch.device(device)
    model.eval()
    prompt_embs = [_encode_prompts(model, prompts[c], dev) for c in classes]
    mode = ensemble_mode(model)
    scores = _image_scores(model, images, prep, prompt_embs, mode, batch_size, dev)
    results = []
    for seed, drawn in draws.items():
        rows = np.array([position[p] for p in drawn["path"]])
        y = np.array([classes.index(c) for c in drawn["label"]])
        metrics = zero_shot_metrics(scores[rows], y, classes)
        metrics.update({"chance_accuracy": 1.0 / len(classes), "n_per_class": float(len(drawn) // len(classes)),
                        "n_images": float(len(drawn)), "n_prompts": float(sum(len(prompts[c]) for c in classes))})
        details = drawn[["study_id", "dicom_id", "label"]].assign(
            predicted=[classes[i] for i in scores[rows].argmax(axis=1)], **{f"score:{c}": scores[rows, k] for k, c in enumerate(classes)})
        results.append(ProtocolResult(1.0, seed, metrics, details=details if seed == min(draws) else None))
        log.info("zero-shot (%s ensembling), seed %d: %d per class, accuracy %.3f (chance %.3f), macro AUROC %.3f",
                 mode, seed, len(drawn) // len(classes), metrics["accuracy"], 1.0 / len(classes), metrics["macro"])
    return results


# --------------------------------------------------------------------------------------------------
# table, registration
# --------------------------------------------------------------------------------------------------
def zero_shot_table(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> pd.DataFrame:
    """Accuracy and macro AUROC (%) with the per-class AUROCs and the set size, runs side by side.

    Published rows are those of :mod:`localign.published` with protocol ``zero_shot`` (none are
    packaged yet: the seed papers report zero-shot numbers on CheXpert 5×200 only in figures or not
    at all, so no number is copied without its table).
    """
    from localign.eval import tables as T

    s = T.summarize_task(results, "zero_shot")
    if s.empty:
        return pd.DataFrame()
    classes = [m for m in dict.fromkeys(s["metric"]) if m in layout.CHEXPERT_LABELS]
    columns = ["accuracy", "macro", *classes]
    ours = T.pivot_cells(s[s["metric"].isin(columns)], "metric", 100.0, 1, data_label, column_order=columns)
    size = s[s["metric"] == "n_per_class"].set_index(["run", "method"])["mean"]
    ours["n_per_class"] = [f"{int(size.get((r, m), 0))}" for r, m in zip(ours["run"], ours["method"])]
    paper = T.paper_cells("zero_shot", columns, "metric", 1, columns) if with_paper else None
    return T.stack_tables(ours, paper, with_paper)


def zero_shot_tables(results: pd.DataFrame, data_label: str = "SynthCXR", with_paper: bool = True) -> dict[str, pd.DataFrame]:
    return {"Zero-shot classification: accuracy and AUROC (%)": zero_shot_table(results, data_label, with_paper)}


def run_zero_shot(ctx: TaskContext) -> list[ProtocolResult]:
    cfg = ctx.config
    return zero_shot_protocol(ctx.model, ctx.prep, ctx.prepared, config=cfg.zero_shot, seeds=cfg.seeds, stores=ctx.stores,
                              batch_size=cfg.batch_size, device=ctx.device, progress=ctx.progress)


ZERO_SHOT_FIGURE = FigureSpec(
    "zero_shot", "fig-eval-zero-shot",
    "Zero-shot classification of the balanced single-label test set from text prompts alone: accuracy and macro AUROC "
    "per pretrained run (mean ± 95 % CI over the seeds' draws); the dotted lines are chance (1 / number of classes for "
    "accuracy, 50 % AUROC). Bars above chance mean the text tower's class prompts land near the images of their class.",
    "localign.viz.evaluation:zero_shot_figure")

register_protocol(Protocol(
    "zero_shot", run_zero_shot, "zero-shot classification from class prompts, balanced single-label test set, × seeds",
    config_field="zero_shot", config_class=ZeroShotConfig, needs_text=True, table=zero_shot_tables, figures=(ZERO_SHOT_FIGURE,)))
