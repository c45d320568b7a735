"""Classification protocols: the linear probe (LIMITR/MGCA/GLoRIA) and local MI's classifier re-training.

Labels come from the prepared dataset: :func:`pathology_table` (CheXpert labels of each frontal
image, Liao et al.'s Pathology9 by default) and :func:`edema_table` (the radiologists' edema
severity grades 0-3). Three protocols use them (the re-training in two modes):

* :func:`linear_probe_protocol` — **linear probe.** Definition: the frozen global features
  (:mod:`~localign.eval.protocols.features`: the pooled last stage, eval mode, no augmentation) of
  every train, validate and test image are extracted once. For each label fraction f and seed s a
  subset of the training images is drawn **by patient** with
  :func:`~localign.eval.probe.sample_label_fraction` (nested 1 % ⊂ 10 % ⊂ 100 % for one seed;
  f = 1 uses every training image), and the standard linear probe is fitted on it
  (:func:`~localign.eval.probe.fit_linear_probe`: features standardised on the drawn training
  images, one L2-regularised scikit-learn ``LogisticRegression`` per label (lbfgs) on its labelled
  rows, C chosen per label on the full validation split's AUROC from 1e-3..10, CLIP's protocol).
  The result is the per-class AUROC on the test split and their unweighted mean ("macro";
  :func:`~localign.metrics.auroc_per_class`), plus the number of training images and patients
  the draw gave, the validation macro AUROC and the mean log10 of the selected C. LIMITR reports this on CheXpert/RSNA with a ResNet-50; here it runs on the
  dataset the encoder was pretrained on.
* :func:`classifier_protocol` with ``task="pathology9"`` — **local MI's classifier re-training,
  Pathology9.** Definition: the image encoder followed by one linear layer on its pooled last stage
  is trained on **all** training images (Liao et al. use no label fractions) for ``epochs`` epochs
  or ``max_steps`` optimizer steps, whichever ends first, with Adam (one learning rate for encoder
  and head, Liao et al.'s 5e-4), batches in a seeded order, light augmentation
  (:data:`~localign.eval.protocols.features.LIGHT_AUGMENT`: random crop of 80-100 % of the padded
  square, ±10° rotation, ±5 % translation, no flips; the draw for image i in epoch e is the same
  for every seed) and the masked binary cross-entropy (labels 1 / 0; uncertain labels are masked
  out, contributing nothing). ``mode="frozen"`` ("encoder-frozen") trains only the head, the
  encoder in eval mode without gradients (we freeze the whole backbone; Liao et al. freeze "the
  same lower-level feature extractor" of their local and global encoders); ``mode="tuned"``
  ("encoder-tuned") trains a copy of the encoder too, BatchNorm in train mode (with a frozen encoder
  the features of each augmented view are computed once; ``augmented_views=V`` reuses V views,
  epoch e seeing view e mod V, so that a head can train many epochs cheaply). After every epoch
  the macro AUROC on the validation split (no augmentation) is computed; the weights of the best
  epoch (earliest on ties) are evaluated on the test split: per-class AUROC and macro. Patients of
  either test split (CheXpert labels or edema grades) never train (Liao et al.). Demo budgets are
  in :class:`ClassifierConfig`.
* :func:`classifier_protocol` with ``task="edema"`` — **EdemaSeverity.** Definition: as above, with
  a 4-way linear head (severity 0, 1, 2, 3) trained with the softmax cross-entropy on the edema
  table's train split, the epoch selected on the mean validation ordinal AUC, and the test result
  given by :func:`~localign.metrics.edema_ordinal_aucs` on the softmax probabilities (the
  threshold-k score is P(severity ≥ k)): AUCs of "0 vs 1,2,3", "0,1 vs 2,3", "0,1,2 vs 3" and their
  mean (Liao et al., Table 2).

Label convention: CheXpert blanks ("not mentioned") are negatives, uncertain (-1) labels are masked
(:func:`pathology_table`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from localign.progress import tqdm

from localign.data import layout
from localign.data.manifest import PreparedDataset
from localign.data.sources import find_table, read_chexpert_labels
from localign.data.transforms import AugmentConfig, Preprocessing
from localign.metrics import auroc_per_class, edema_ordinal_aucs
from localign.eval.probe import DEFAULT_C_GRID, check_c_grid, fit_linear_probe
from localign.eval.protocols.common import (
    ProtocolResult,
    TaskUnavailable,
    batch_order,
    check_positive,
    fraction_subset,
    seeded,
    split_rows,
)
from localign.eval.protocols.features import LIGHT_AUGMENT, ImageStore, StoreCache, augmented_batch, extract_features
from localign.models.image import ImageEncoder

log = logging.getLogger(__name__)

BLANK_POLICIES = ("negative", "ignore")
CLASSIFIER_MODES = ("frozen", "tuned")
CLASSIFIER_TASKS = ("pathology9", "edema")
EDEMA_CLASSES = 4


# --------------------------------------------------------------------------------------------------
# label tables
# --------------------------------------------------------------------------------------------------
def pathology_table(
    prepared: PreparedDataset,
    labels: Sequence[str] = layout.PATHOLOGY9,
    blank: str = "negative",
) -> pd.DataFrame:
    """One row per kept frontal image with its study's CheXpert labels as 1 / 0 / NaN.

    Definition: the images of ``images.csv`` joined with ``labels.csv`` on ``study_id`` (images of
    studies without a CheXpert row are dropped and counted in the log). With ``blank="negative"``
    (the convention of GLoRIA, LIMITR and the CheXpert competition) a blank label, meaning the
    report does not mention the finding, is a negative (0), and an uncertain label (-1) is masked
    (NaN: no loss, not scored). Because ``labels.csv`` stores both blanks and, under the
    ``ignore`` uncertainty policy, uncertain labels as blank, the raw CheXpert file
    (``mimic-cxr-2.0.0-chexpert.csv.gz`` under the MIMIC-CXR-JPG root) is read to tell them apart;
    under the ``ones``/``zeros`` policies every remaining blank is a "not mentioned". With
    ``blank="ignore"`` blanks stay NaN (masked), as ``labels.csv`` has them.

    :param prepared: a prepared dataset.
    :param labels: label columns (default Liao et al.'s Pathology9).
    :param blank: ``"negative"`` or ``"ignore"``.
    :return: columns ``dicom_id, subject_id, study_id, split, path`` (absolute) and one float
        column per label.
    """
    if blank not in BLANK_POLICIES:
        raise ValueError(f"blank: expected one of {BLANK_POLICIES}, got {blank!r}")
    unknown = [name for name in labels if name not in layout.CHEXPERT_LABELS]
    if unknown or not labels:
        raise ValueError(f"labels: {unknown or 'empty'} not among the CheXpert labels {layout.CHEXPERT_LABELS}")
    names = list(labels)
    lab = prepared.labels
    if lab is None or lab.empty:
        raise TaskUnavailable(f"{prepared.root}: labels.csv is empty (no CheXpert labels were prepared)")
    values = lab[["study_id", *names]].copy()
    if blank == "negative":
        policy = prepared.info.get("uncertainty_policy", "ignore")
        if policy == "ignore":
            try:
                raw_path = find_table(prepared.mimic_jpg_root, layout.MIMIC_CHEXPERT)
            except FileNotFoundError as err:
                raise ValueError(
                    f"{prepared.root} was prepared with uncertainty policy 'ignore', so labels.csv stores uncertain and "
                    f"not-mentioned labels alike as blank; telling them apart needs the raw CheXpert file, which is "
                    f"missing ({err}). Restore it, re-prepare with --uncertainty zeros/ones, or use blank='ignore'."
                ) from None
            raw = read_chexpert_labels(raw_path).set_index("study_id")
            raw = raw.reindex(values["study_id"])
            for name in names:
                uncertain = (raw[name] == -1.0).to_numpy()
                col = values[name].to_numpy(dtype=float).copy()
                col[np.isnan(col) & ~uncertain] = 0.0
                col[uncertain] = np.nan
                values[name] = col
        else:
            values[names] = values[names].fillna(0.0)
    images = prepared.images[["dicom_id", "subject_id", "study_id", "split", "path"]]
    table = images.merge(values, on="study_id", how="inner")
    n_dropped = len(images) - len(table)
    if n_dropped:
        log.info("pathology_table: %d of %d images belong to studies without CheXpert labels and are not used", n_dropped, len(images))
    table["path"] = [str(prepared.image_path(p)) for p in table["path"]]
    return table.reset_index(drop=True)


def edema_table(prepared: PreparedDataset) -> pd.DataFrame:
    """The edema severity images: ``dicom_id, subject_id, study_id, split, path`` (absolute), ``edema_severity``.

    :raises TaskUnavailable: the dataset was prepared without an edema table.
    """
    if prepared.edema is None or prepared.edema.empty:
        raise TaskUnavailable(f"{prepared.root}: no edema severity table (prepare with --edema FILE)")
    table = prepared.edema[["dicom_id", "subject_id", "study_id", "split", "path", "edema_severity"]].copy()
    table["path"] = [str(prepared.image_path(p)) for p in table["path"]]
    return table.reset_index(drop=True)


def test_patients(prepared: PreparedDataset) -> set[int]:
    """Patients with an image in the test split of the CheXpert-labelled images or of the edema table."""
    subjects = set(prepared.images.loc[prepared.images["split"] == "test", "subject_id"].astype(int))
    if prepared.edema is not None:
        subjects |= set(prepared.edema.loc[prepared.edema["split"] == "test", "subject_id"].astype(int))
    return subjects


def exclude_test_patients(splits: dict[str, pd.DataFrame], subjects: set[int], what: str) -> dict[str, pd.DataFrame]:
    """Drop train/validate rows of patients in ``subjects`` (Liao et al.: "the patients that are in
    either of the two test sets are excluded from the model training"); the count is logged."""
    out = dict(splits)
    for name in ("train", "validate"):
        rows = splits[name]
        keep = ~rows["subject_id"].astype(int).isin(subjects)
        if not keep.all():
            log.info("%s: %d %s rows belong to test patients and are excluded", what, int((~keep).sum()), name)
            out[name] = rows[keep.to_numpy()].reset_index(drop=True)
            if out[name].empty:
                raise TaskUnavailable(f"{what}: no {name} rows remain after excluding test patients")
    return out


# --------------------------------------------------------------------------------------------------
# linear probe
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeConfig:
    """The standard linear probe's settings (:func:`~localign.eval.probe.fit_linear_probe`).

    ``c_grid``: candidate C (inverse L2 strength), chosen per label on the validation AUROC
    (default 1e-3..10 in half-decade steps); ``max_iter`` / ``tol``: lbfgs limits per fit;
    ``seeds``: the probe's own repetitions (each draws its own labelled subset), ``None`` for the
    evaluation's ``seeds``. The probe is cheap, and at 1 % or 10 % of a small training split the
    draw of the labelled subset dominates its variance: the report repeats it over 10 draws, where
    the trained protocols keep 3.
    """

    c_grid: tuple[float, ...] = DEFAULT_C_GRID
    max_iter: int = 500
    tol: float = 1e-4
    seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "c_grid", check_c_grid(self.c_grid))
        except ValueError as error:
            raise ValueError(f"ProbeConfig.{error}") from None
        check_positive("ProbeConfig.max_iter", self.max_iter, integer=True)
        check_positive("ProbeConfig.tol", self.tol)
        if self.seeds is not None:
            seeds = tuple(self.seeds)
            if not seeds or any(isinstance(x, bool) or not isinstance(x, int) for x in seeds) or len(set(seeds)) != len(seeds):
                raise ValueError(f"ProbeConfig.seeds: expected distinct integers or None, got {self.seeds!r}")
            object.__setattr__(self, "seeds", seeds)


def linear_probe_protocol(
    encoder: ImageEncoder,
    prep: Preprocessing,
    table: pd.DataFrame,
    class_names: Sequence[str],
    *,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
    config: ProbeConfig = ProbeConfig(),
    stores: StoreCache | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[ProtocolResult]:
    """The linear probe on frozen global features (definition in the module docstring).

    :param table: :func:`pathology_table` rows (``split``, ``path``, ``subject_id``, label columns).
    :param class_names: the label columns to probe.
    :return: one result per (fraction, seed): per-class test AUROC, ``macro``, ``n_train``
        (images), ``n_train_patients``, ``log10_c`` (mean over labels of log10 of the selected C)
        and ``val_macro`` (validation macro AUROC at the selected C).
    """
    names = list(class_names)
    stores = stores or StoreCache(progress=progress)
    splits = split_rows(table, "linear probe")
    feats = {}
    for name, rows in splits.items():
        store = stores.get(rows["path"], prep.input_size, desc=f"{name} images")
        feats[name] = extract_features(encoder, store, prep, output="pooled", batch_size=batch_size, device=device,
                                       progress=progress, desc=f"probe features ({name})")
    y = {name: rows[names].to_numpy(dtype=float) for name, rows in splits.items()}
    results = []
    for seed in seeds:
        for fraction in fractions:
            subset = fraction_subset(splits["train"].assign(_row=np.arange(len(splits["train"]))), fraction, seed, "subject_id")
            rows = subset["_row"].to_numpy(copy=True)
            probe = fit_linear_probe(feats["train"][rows], y["train"][rows], feats["validate"], y["validate"],
                                     c_grid=config.c_grid, max_iter=config.max_iter, tol=config.tol, seed=int(seed),
                                     progress=False)
            with _quiet_metrics():
                metrics = auroc_per_class(y["test"], probe.predict_proba(feats["test"]), names)
            metrics.update(n_train=float(len(rows)), n_train_patients=float(subset["subject_id"].nunique()),
                           log10_c=float(np.nanmean(np.log10(probe.c_values))) if not probe.constant.all() else math.nan,
                           val_macro=float(probe.best_val_auroc))
            results.append(ProtocolResult(float(fraction), int(seed), metrics))
            log.info("probe f=%.3g seed=%d: macro AUROC %.4f on %d train images", fraction, seed, metrics["macro"], len(rows))
    return results


# --------------------------------------------------------------------------------------------------
# classifier re-training (local MI)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassifierConfig:
    """Local MI's classifier re-training, scaled to CPU demos.

    Liao et al. re-train for 50 epochs (the supervised image-only model for 100) with Adam at 5e-4.
    Training stops after ``epochs`` epochs or ``max_steps`` optimizer steps, whichever comes first
    (``None``: no step limit); the validation split is scored after every epoch and at the stop.
    The runner's defaults (:class:`~localign.eval.protocols.runner.EvalConfig`) are demo budgets:
    encoder-frozen 20 epochs over 2 augmented views per image (the frozen features of each view
    are computed once), encoder-tuned 30 steps of 16 images. For the paper's protocol use
    ``epochs=50, max_steps=None, augmented_views=None``.
    """

    epochs: int = 3
    batch_size: int = 32
    max_steps: int | None = None
    lr: float = 5e-4
    weight_decay: float = 0.0
    augment: AugmentConfig = field(default_factory=lambda: LIGHT_AUGMENT)
    #: encoder-frozen only: distinct augmented views per image; epoch e uses view e mod V, so the
    #: frozen encoder runs V times over the training images however many epochs the head trains
    #: (None: a new view every epoch, as Liao et al.)
    augmented_views: int | None = None
    eval_batch_size: int = 128

    def __post_init__(self) -> None:
        check_positive("ClassifierConfig.lr", self.lr)
        check_positive("ClassifierConfig.weight_decay", self.weight_decay, allow_zero=True)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            check_positive(f"ClassifierConfig.{name}", getattr(self, name), integer=True)
        if self.max_steps is not None:
            check_positive("ClassifierConfig.max_steps", self.max_steps, integer=True)
        if self.augmented_views is not None:
            check_positive("ClassifierConfig.augmented_views", self.augmented_views, integer=True)


class ImageClassifier(nn.Module):
    """An image encoder and one linear layer on its pooled last stage: ``[B, 1, S, S] -> [B, n_outputs]`` logits.

    With ``frozen=True`` the encoder runs in eval mode without gradients, whatever ``train()`` says.
    """

    def __init__(self, encoder: ImageEncoder, n_outputs: int, frozen: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.pooled_channels, n_outputs)
        self.frozen = frozen
        encoder.requires_grad_(not frozen)

    def train(self, mode: bool = True) -> "ImageClassifier":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        if self.frozen:
            with torch.no_grad():
                pooled = self.encoder(images).pooled
        else:
            pooled = self.encoder(images).pooled
        return self.head(pooled)


class FrozenViews:
    """A frozen encoder's pooled features of the clean and the augmented views of images, each computed once.

    The augmentation of image i in epoch e depends only on (e, i)
    (:func:`~localign.eval.protocols.features.augmented_batch`), and a frozen encoder in eval mode is
    a fixed function, so the features an encoder-frozen classifier sees in epoch e are the same for
    every seed: computing them once is exact, not an approximation.
    """

    def __init__(self, encoder: ImageEncoder, prep: Preprocessing, augment: AugmentConfig, *, n_views: int | None = None,
                 batch_size: int = 128, device: str | torch.device = "cpu", progress: bool = True) -> None:
        self.encoder, self.prep, self.augment, self.n_views = encoder, prep, augment, n_views
        self.batch_size, self.device, self.progress = batch_size, torch.device(device), progress
        self._memo: dict[tuple[int, int | None], Tensor] = {}

    def clean(self, store: ImageStore) -> Tensor:
        """``[N, C]`` features without augmentation."""
        key = (id(store), None)
        if key not in self._memo:
            self._memo[key] = extract_features(self.encoder, store, self.prep, output="pooled", batch_size=self.batch_size,
                                               device=self.device, progress=self.progress, desc="frozen features")
        return self._memo[key]

    @torch.no_grad()
    def augmented(self, store: ImageStore, epoch: int) -> Tensor:
        """``[N, C]`` features of every image's augmented view of ``epoch`` (view ``epoch mod n_views``)."""
        epoch = int(epoch) if self.n_views is None else int(epoch) % self.n_views
        key = (id(store), epoch)
        if key not in self._memo:
            was_training = self.encoder.training
            self.encoder.eval()
            chunks = []
            starts = range(0, len(store), self.batch_size)
            for start in tqdm(starts, desc=f"frozen features (augmented, epoch {epoch})", disable=not self.progress, leave=False):
                idx = list(range(start, min(start + self.batch_size, len(store))))
                x = self.prep.normalize_batch(augmented_batch(store, idx, self.augment, epoch)).to(self.device)
                chunks.append(self.encoder(x).pooled.float().cpu())
            self.encoder.train(was_training)
            self._memo[key] = torch.cat(chunks)
        return self._memo[key]


@contextlib.contextmanager
def _quiet_metrics() -> Iterator[None]:
    """Silence the per-call "undefined AUROC" warnings of the metrics module (validation runs every
    epoch; the test evaluation reports NaN values in the results instead)."""
    logger = logging.getLogger("localign.metrics")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _loss(logits: Tensor, targets: Tensor, kind: str) -> Tensor | None:
    """Masked BCE (multi-label; None when no entry is labelled) or softmax CE (edema)."""
    if kind == "edema":
        return nn.functional.cross_entropy(logits, targets.long())
    mask = ~torch.isnan(targets)
    if not mask.any():
        return None
    bce = nn.functional.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets, nan=0.0), reduction="none")
    return (bce * mask).sum() / mask.sum()


def _probabilities(logits: Tensor, kind: str) -> np.ndarray:
    logits = logits.float()
    return (torch.softmax(logits, dim=1) if kind == "edema" else torch.sigmoid(logits)).cpu().double().numpy()


@torch.no_grad()
def predict_scores(model: ImageClassifier, store: ImageStore, prep: Preprocessing, kind: str, *, batch_size: int = 128,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Class probabilities of every image of a store (eval mode, no augmentation): sigmoid for
    multi-label heads ``[N, C]``, softmax for the edema head ``[N, 4]``."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(store), batch_size):
        x = prep.normalize_batch(store.batch(range(start, min(start + batch_size, len(store))))).to(device)
        out.append(_probabilities(model(x), kind))
    model.train(was_training)
    return np.concatenate(out)


def _score(kind: str, targets: np.ndarray, scores: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    with _quiet_metrics():
        if kind == "edema":
            return edema_ordinal_aucs(targets, scores)
        return auroc_per_class(targets, scores, list(class_names))


def train_classifier(
    encoder: ImageEncoder,
    prep: Preprocessing,
    train: tuple[ImageStore, np.ndarray],
    validate: tuple[ImageStore, np.ndarray],
    *,
    kind: str,
    mode: str,
    class_names: Sequence[str],
    config: ClassifierConfig = ClassifierConfig(),
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "classifier",
    views: FrozenViews | None = None,
) -> tuple[ImageClassifier, dict[str, float]]:
    """Train a linear head on ``encoder`` (frozen) or a **copy** of ``encoder`` with its head (tuned).

    Definition in the module docstring. Batches follow :func:`~localign.eval.protocols.common.batch_order`
    (seed, epoch); the head is initialised under ``torch.manual_seed(seed)``; augmentation draws
    depend on (epoch, image) only. In frozen mode the head trains on :class:`FrozenViews` features
    (pass one ``views`` object to share them across seeds).

    :param train: (store, targets) with targets ``[N, C]`` in {0, 1, NaN} (``kind="multilabel"``) or
        ``[N]`` in {0, 1, 2, 3} (``kind="edema"``).
    :param validate: the same for the validation split (selects the epoch).
    :param mode: ``"frozen"`` or ``"tuned"``.
    :return: (an :class:`ImageClassifier` with the best epoch's weights, in eval mode, whose encoder
        is a copy; ``{"best_epoch", "val_score", "steps"}``).
    """
    if kind not in ("multilabel", "edema"):
        raise ValueError(f"kind: expected 'multilabel' or 'edema', got {kind!r}")
    if mode not in CLASSIFIER_MODES:
        raise ValueError(f"mode: expected one of {CLASSIFIER_MODES}, got {mode!r}")
    train_store, y_train = train
    val_store, y_val = validate
    if len(train_store) != len(y_train) or len(val_store) != len(y_val):
        raise ValueError(f"train_classifier: {len(train_store)}/{len(y_train)} train and {len(val_store)}/{len(y_val)} "
                         "validation images/targets")
    frozen = mode == "frozen"
    n_out = EDEMA_CLASSES if kind == "edema" else len(class_names)
    dev = torch.device(device)
    with seeded(seed):
        model = ImageClassifier(copy.deepcopy(encoder), n_out, frozen=frozen).to(dev)
    if frozen:
        views = views or FrozenViews(encoder, prep, config.augment, n_views=config.augmented_views, batch_size=config.eval_batch_size,
                                     device=dev, progress=progress)
        val_features = views.clean(val_store)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    targets = torch.from_numpy(np.asarray(y_train, dtype=np.float32))
    best_state, best_score, best_epoch, step = None, math.nan, -1, 0
    bar = tqdm(range(config.epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        train_features = views.augmented(train_store, epoch) if frozen else None
        total, n_steps = 0.0, 0
        for idx in batch_order(len(train_store), config.batch_size, seed, epoch):
            if config.max_steps is not None and step >= config.max_steps:
                break
            idx_t = torch.as_tensor(idx)
            if frozen:
                logits = model.head(train_features[idx_t].to(dev))
            else:
                logits = model(prep.normalize_batch(augmented_batch(train_store, idx, config.augment, epoch)).to(dev))
            loss = _loss(logits, targets[idx_t].to(dev), kind)
            step += 1
            if loss is None:
                continue
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
            n_steps += 1
        model.eval()
        if frozen:
            with torch.no_grad():
                scores = _probabilities(model.head(val_features.to(dev)), kind)
        else:
            scores = predict_scores(model, val_store, prep, kind, batch_size=config.eval_batch_size, device=dev)
        val = _score(kind, y_val, scores, class_names)["mean" if kind == "edema" else "macro"]
        bar.set_postfix(loss=f"{total / max(n_steps, 1):.4f}", val=f"{val:.4f}")
        # NaN (undefined on a tiny validation split) never counts as an improvement; the first
        # epoch is kept as a fallback so that a model is always returned
        if best_state is None or (not math.isnan(val) and (math.isnan(best_score) or val > best_score)):
            best_state = copy.deepcopy(model.state_dict())
            best_score, best_epoch = val, epoch
        if config.max_steps is not None and step >= config.max_steps:
            break
    bar.close()
    if math.isnan(best_score):
        log.warning("%s: the validation score is undefined in every epoch; keeping epoch 0", desc)
    model.load_state_dict(best_state)
    model.eval()
    return model, {"best_epoch": float(best_epoch), "val_score": float(best_score), "steps": float(step)}


def classifier_protocol(
    encoder: ImageEncoder,
    prep: Preprocessing,
    prepared: PreparedDataset,
    *,
    task: str,
    mode: str,
    seeds: Sequence[int] = (0, 1, 2),
    class_names: Sequence[str] = layout.PATHOLOGY9,
    blank: str = "negative",
    config: ClassifierConfig = ClassifierConfig(),
    stores: StoreCache | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[ProtocolResult]:
    """Local MI's classifier re-training on Pathology9 or EdemaSeverity (definitions in the module docstring).

    :param task: ``"pathology9"`` (multi-label, :func:`pathology_table`) or ``"edema"`` (4 classes,
        :func:`edema_table`).
    :param mode: ``"frozen"`` (encoder-frozen) or ``"tuned"`` (encoder-tuned).
    :return: one result per seed (fraction 1.0): Pathology9 → per-class test AUROC and ``macro``;
        edema → the three ordinal AUCs and ``mean``; both with ``n_train``, ``n_test``,
        ``best_epoch``, ``val_score`` and ``steps``.
    """
    if task not in CLASSIFIER_TASKS:
        raise ValueError(f"task: expected one of {CLASSIFIER_TASKS}, got {task!r}")
    if mode not in CLASSIFIER_MODES:
        raise ValueError(f"mode: expected one of {CLASSIFIER_MODES}, got {mode!r}")
    stores = stores or StoreCache(progress=progress)
    if task == "edema":
        table, kind, names, what = edema_table(prepared), "edema", [], "EdemaSeverity"
    else:
        names = list(class_names)
        table, kind, what = pathology_table(prepared, names, blank), "multilabel", "Pathology9"
    splits = exclude_test_patients(split_rows(table, what), test_patients(prepared), what)

    def targets(rows: pd.DataFrame) -> np.ndarray:
        return rows["edema_severity"].to_numpy(dtype=float) if kind == "edema" else rows[names].to_numpy(dtype=float)

    data = {name: (stores.get(rows["path"], prep.input_size, desc=f"{what} {name}"), targets(rows)) for name, rows in splits.items()}
    views = FrozenViews(encoder, prep, config.augment, n_views=config.augmented_views, batch_size=config.eval_batch_size,
                        device=device, progress=progress) if mode == "frozen" else None
    results = []
    for seed in seeds:
        model, info = train_classifier(encoder, prep, data["train"], data["validate"], kind=kind, mode=mode, class_names=names,
                                       config=config, seed=int(seed), device=device, progress=progress,
                                       desc=f"{what} {mode} seed {seed}", views=views)
        test_store, y_test = data["test"]
        if views is not None:
            with torch.no_grad():
                scores = _probabilities(model.head(views.clean(test_store).to(device)), kind)
        else:
            scores = predict_scores(model, test_store, prep, kind, batch_size=config.eval_batch_size, device=device)
        metrics = _score(kind, y_test, scores, names)
        metrics.pop("n_unlabelled", None)
        metrics.pop("n", None)
        metrics.update(n_train=float(len(data["train"][1])), n_test=float(len(y_test)), **info)
        results.append(ProtocolResult(1.0, int(seed), metrics))
        log.info("%s %s seed %d: %s", what, mode, seed,
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k in ("macro", "mean")))
    return results
