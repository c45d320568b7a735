"""The calibration check of SynthCXR (spec property 4): how hard are the findings for an image-only
classifier?

A ResNet-18 (torchvision, random initialisation) is trained with masked binary cross-entropy on the
CheXpert labels of the frontal images of the train split and scored on the test split. Uncertain
(-1) labels are masked out of the loss and the AUROC; blank labels ("not mentioned") are negatives
by default (``blank="negative"``, as the linear probe of :mod:`localign.eval.protocols` treats
them) or masked too (``blank="ignore"``, leaving only explicit negations as negatives: far fewer
and atypical ones, so a noisier AUROC). The
function reads the raw MIMIC-CXR-JPG files (metadata, split and CheXpert CSVs, JPEGs) directly, so
it runs unchanged on a real MIMIC-CXR-JPG folder.

A calibrated SynthCXR lands well above chance and clearly below perfect on most findings
(AUROC roughly 0.75-0.95).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from PIL import Image
from sklearn.metrics import roc_auc_score
from localign.progress import tqdm

from localign.data import layout

log = logging.getLogger(__name__)

BLANK_POLICIES = ("negative", "ignore")


def mimic_jpg_root(root: str | Path) -> Path:
    """The MIMIC-CXR-JPG folder of ``root``: a SynthCXR root or a MIMIC-CXR-JPG root itself."""
    root = Path(root)
    for candidate in (root / layout.SYNTHCXR_SUBDIRS["mimic_jpg"], root):
        if (candidate / layout.MIMIC_METADATA).is_file():
            return candidate
    raise FileNotFoundError(f"no {layout.MIMIC_METADATA} under {root} or {root / layout.SYNTHCXR_SUBDIRS['mimic_jpg']}")


def frontal_label_table(jpg_root: Path) -> pd.DataFrame:
    """Frontal images (ViewPosition PA/AP) with their split and the study's CheXpert labels.

    :return: one row per image: ``dicom_id, subject_id, study_id, split, path`` + the 14 labels
    """
    meta = pd.read_csv(jpg_root / layout.MIMIC_METADATA, usecols=["dicom_id", "subject_id", "study_id", "ViewPosition"])
    split = pd.read_csv(jpg_root / layout.MIMIC_SPLIT)
    labels = pd.read_csv(jpg_root / layout.MIMIC_CHEXPERT)
    missing = [c for c in layout.CHEXPERT_LABELS if c not in labels.columns]
    if missing:
        raise ValueError(f"{jpg_root / layout.MIMIC_CHEXPERT}: missing label columns {missing}")
    n_all = len(meta)
    meta = meta[meta["ViewPosition"].isin(layout.FRONTAL_VIEWS)]
    log.info("calibration: %d of %d images are frontal (PA/AP); %d dropped as lateral or without ViewPosition", len(meta), n_all, n_all - len(meta))
    table = meta.merge(split[["dicom_id", "split"]], on="dicom_id", how="inner")
    table = table.merge(labels, on=["subject_id", "study_id"], how="inner")
    table["path"] = [
        str(jpg_root / layout.mimic_image_path(s, t, d)) for s, t, d in zip(table["subject_id"], table["study_id"], table["dicom_id"])
    ]
    return table.sort_values(["subject_id", "study_id", "dicom_id"]).reset_index(drop=True)


def load_images(paths: list[str], image_size: int, progress: bool = False) -> torch.Tensor:
    """Grayscale JPEGs resized (squashed) to ``image_size`` -> ``[N, 1, S, S]`` uint8."""
    out = torch.empty((len(paths), 1, image_size, image_size), dtype=torch.uint8)
    for i, path in enumerate(tqdm(paths, desc="loading images", disable=not progress, leave=False)):
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L").resize((image_size, image_size), Image.BILINEAR))
        out[i, 0] = torch.from_numpy(arr.copy())
    return out


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the unmasked entries.

    :param logits: [B, L]
    :param targets: [B, L] in {0, 1}
    :param mask: [B, L] 1 where the label is known (0/1), 0 where uncertain or blank
    """
    if logits.shape != targets.shape or logits.shape != mask.shape:
        raise ValueError(f"masked_bce: shapes differ: logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, mask {tuple(mask.shape)}")
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def _batches(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, batch_size: int, generator: torch.Generator | None):
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        yield x[idx], y[idx], m[idx]


def _prepare(x: torch.Tensor, device: str, shift: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 ``[B, 1, S, S]`` -> normalised float ``[B, 3, S, S]``; random shifts of up to
    ``shift`` px for training (no flips: a flip makes the laterality of the labels' reports wrong)."""
    x = x.to(device=device, dtype=torch.float32) / 255.0
    if shift > 0:
        s = x.shape[-1]
        padded = torch.nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
        dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=generator).tolist()
        x = padded[..., dy : dy + s, dx : dx + s]
    return ((x - 0.5) / 0.25).expand(-1, 3, -1, -1)


def calibrate(
    root: str | Path,
    image_size: int = 128,
    epochs: int = 4,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 32,
    lr: float = 2e-3,
    num_threads: int | None = None,
    progress: bool = True,
    blank: str = "negative",
) -> pd.DataFrame:
    """Train an image-only ResNet-18 on the train split and report per-finding AUROC on the test split.

    ``num_threads`` sets torch's CPU threads (default: leave torch's setting). On two CPU cores the
    default demo dataset (about 1.8k training images) takes a few minutes per epoch at 128 px.

    :return: one row per CheXpert label with ``label, auroc, n_pos, n_neg`` (test split, certain
        labels only), ``n_train_pos, n_train_neg``; ``auroc`` is NaN where the test split lacks
        positives or negatives. ``DataFrame.attrs`` holds the settings, image counts and seconds.
    """
    if blank not in BLANK_POLICIES:
        raise ValueError(f"blank: expected one of {BLANK_POLICIES}, got {blank!r}")
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        # on a busy machine one thread per process can be faster than oversubscribed cores
        torch.set_num_threads(num_threads)
    try:
        return _calibrate(root, image_size, epochs, seed, device, batch_size, lr, progress, blank)
    finally:
        torch.set_num_threads(threads_before)


def _calibrate(root: str | Path, image_size: int, epochs: int, seed: int, device: str, batch_size: int, lr: float, progress: bool,
               blank: str) -> pd.DataFrame:
    start = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    table = frontal_label_table(mimic_jpg_root(root))
    train = table[table["split"] == "train"].reset_index(drop=True)
    test = table[table["split"] == "test"].reset_index(drop=True)
    if train.empty or test.empty:
        raise ValueError(f"calibration needs frontal images in the train and test splits; got {len(train)} train, {len(test)} test")
    values = {name: part[list(layout.CHEXPERT_LABELS)].to_numpy(dtype=np.float32) for name, part in (("train", train), ("test", test))}
    if blank == "negative":
        values = {k: np.nan_to_num(v, nan=0.0) for k, v in values.items()}
    y = {k: torch.from_numpy(np.nan_to_num(v, nan=0.0) == 1.0).float() for k, v in values.items()}
    m = {k: torch.from_numpy((v == 0.0) | (v == 1.0)).float() for k, v in values.items()}
    # learn only the labels that have both classes in the training split
    trainable = ((y["train"] * m["train"]).sum(0) > 0) & (((1 - y["train"]) * m["train"]).sum(0) > 0)
    x_train = load_images(train["path"].tolist(), image_size, progress)
    x_test = load_images(test["path"].tolist(), image_size, progress)

    model = torchvision.models.resnet18(weights=None, num_classes=len(layout.CHEXPERT_LABELS)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.2)
    train_mask = m["train"] * trainable.float()
    shift = max(1, image_size // 32)
    bar = tqdm(total=steps, desc="calibration", disable=not progress, leave=False)
    model.train()
    for _ in range(epochs):
        for xb, yb, mb in _batches(x_train, y["train"], train_mask, batch_size, generator):
            logits = model(_prepare(xb, device, shift, generator))
            loss = masked_bce(logits, yb.to(device), mb.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    scores = []
    with torch.no_grad():
        for xb, _, _ in _batches(x_test, y["test"], m["test"], 128, None):
            scores.append(torch.sigmoid(model(_prepare(xb, device))).cpu())
    score = torch.cat(scores).numpy()
    rows = []
    for j, label in enumerate(layout.CHEXPERT_LABELS):
        known = m["test"][:, j].numpy() > 0
        truth = y["test"][:, j].numpy()[known]
        n_pos, n_neg = int(truth.sum()), int(len(truth) - truth.sum())
        auroc = float(roc_auc_score(truth, score[known, j])) if (n_pos and n_neg and bool(trainable[j])) else float("nan")
        rows.append({
            "label": label,
            "auroc": auroc,
            "n_pos": n_pos,
            "n_neg": n_neg,
            "n_train_pos": int((y["train"][:, j] * m["train"][:, j]).sum()),
            "n_train_neg": int(((1 - y["train"][:, j]) * m["train"][:, j]).sum()),
        })
    result = pd.DataFrame(rows)
    result.attrs.update({
        "image_size": image_size,
        "epochs": epochs,
        "seed": seed,
        "blank": blank,
        "train_images": len(train),
        "test_images": len(test),
        "seconds": round(time.perf_counter() - start, 1),
    })
    log.info("calibration: %d train / %d test frontal images, %.0f s", len(train), len(test), result.attrs["seconds"])
    return result
