"""Segmentation protocols of LoVT: linear segmentation on the frozen last stage, and a U-Net.

Targets (binary masks, one per image):

* ``rsna`` — **RSNA pneumonia opacities** (``rsna.csv``): the union of an image's ground-truth boxes
  (:func:`~localign.eval.grounding.boxes_to_mask`; negatives get an empty mask), exactly how LoVT
  turns the RSNA detection task into its "RSNA linear segmentation" task.
* ``synth_opacity`` — **SynthCXR lung opacity** (``synth_findings.csv``, SynthCXR only): the union
  of the exact masks of every *opacity-type* finding of the image, i.e. the findings that CheXpert's
  "Lung Opacity" label subsumes: consolidation (pneumonia), atelectasis, edema and nodules
  (:data:`OPACITY_FINDINGS`); effusion, pneumothorax, cardiomegaly and devices are not opacities
  of the lung parenchyma and are left out. Images without such a finding get an empty mask.

Masks are built on the original pixels and then go through the image's pad + resize geometry
(:func:`~localign.eval.protocols.features.mask_to_input`), so predictions and targets are compared at
the network input resolution S × S (LoVT compares at 224 × 224).

**Definition (linear segmentation, LoVT).** The frozen encoder's last-stage map (``layer4``,
[C, h, w], eval mode, extracted once) is mapped to one logit per cell by a 1×1 convolution,
upsampled bilinearly (align_corners=False) to S × S and passed through a sigmoid. The convolution is
trained with Adam (weight decay 1e-6) on the soft Dice loss (:func:`soft_dice_loss`, binary, pooled
over the batch as ``segmentation_models_pytorch.DiceLoss(mode="binary")``) with the learning rate
halved after ``plateau_patience`` epochs without a better validation Dice and early stopping after
``patience`` such epochs; the test result is the dataset-level Dice
(:func:`~localign.metrics.dice_dataset`: all test pixels pooled, threshold 0.5) of the epoch
with the best validation Dice, with the mean per-image Dice (:func:`~localign.metrics.dice_per_image`,
empty/empty = 1) alongside. Label fractions draw training images by patient, as for the probe
(LoVT uses fixed prefix subsets). LoVT tunes the learning rate per model on a grid
{3e-2, 1e-2, 3e-3, 1e-3}; here it is one fixed parameter.

**Definition (U-Net, LoVT's ResUNet).** The decoder reads the encoder's feature pyramid
(:func:`feature_pyramid`: the deepest map at every resolution, from the last stage up to the input
image — for a ResNet: layer4, layer3, layer2, layer1, the stem before max-pooling, and the input, as
LoVT's conv5 … conv1 + input): a bridge of two 3×3 conv-BN-ReLU blocks on the last stage, then one
up-block per finer level (2×2 transposed convolution, concatenation with the skip map, two 3×3
conv-BN-ReLU blocks; widths halve at every level, C_last/2, C_last/4, …, never below
``min_width``: 1024 … 64 for a ResNet-50 as LoVT), and a 1×1 convolution to one logit at input
resolution. Loss, optimiser, schedule, early stopping and metrics are those of the linear
protocol, with training bounded by ``epochs`` and ``max_steps`` (:class:`UNetConfig`). ``frozen``:
the encoder never trains (eval mode, no gradients). ``finetune``: the encoder
is frozen for the first ``warmup_steps`` steps, in which the decoder trains at ``warmup_lr``
(LoVT: 1e-3); afterwards everything trains, the decoder at ``lr`` and the encoder at
``encoder_lr`` (LoVT uses one tuned rate for both; a smaller encoder rate keeps short CPU runs
stable), BatchNorm in train mode.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from localign.progress import tqdm

from localign.data.manifest import PreparedDataset
from localign.data.transforms import Preprocessing
from localign.eval.grounding import boxes_to_mask
from localign.metrics import dice_dataset, dice_per_image
from localign.eval.protocols.common import ProtocolResult, TaskUnavailable, batch_order, check_positive, fraction_subset, seeded, split_rows
from localign.eval.protocols.features import ImageStore, StoreCache, extract_features, mask_to_input
from localign.models.image import ImageEncoder

log = logging.getLogger(__name__)

SEG_TARGETS = ("rsna", "synth_opacity")
UNET_MODES = ("frozen", "finetune")
#: SynthCXR finding kinds that CheXpert's "Lung Opacity" subsumes (the ``synth_opacity`` target)
OPACITY_FINDINGS = ("consolidation", "atelectasis", "edema", "nodule")


# --------------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------------
def resolve_synthcxr_path(prepared: PreparedDataset, relative: str) -> Path:
    """Absolute path of a mask path from ``sentences.csv`` / ``synth_findings.csv``.

    The generator writes them relative to the SynthCXR root (``synthcxr/masks/...``), the parent of
    the ``synthcxr/`` folder that ``dataset.json`` records; a path relative to that folder itself is
    accepted as well.
    """
    if prepared.synthcxr_root is None:
        raise TaskUnavailable(f"{prepared.root}: not a SynthCXR dataset (no synthcxr folder recorded in dataset.json)")
    for base in (prepared.synthcxr_root.parent, prepared.synthcxr_root):
        path = base / relative
        if path.is_file():
            return path
    raise FileNotFoundError(f"SynthCXR mask {relative!r} not found under {prepared.synthcxr_root.parent} or {prepared.synthcxr_root}")


def load_mask(path: str | Path) -> np.ndarray:
    """A 0/255 mask PNG as ``[H, W]`` bool (any non-zero pixel is foreground)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 0


def segmentation_table(prepared: PreparedDataset, target: str) -> pd.DataFrame:
    """One row per image of a segmentation target (definitions in the module docstring).

    :return: columns ``item`` (dicom_id / patientId), ``patient``, ``split``, ``path`` (absolute),
        ``height``, ``width`` and ``boxes`` (``rsna``: list of [x, y, w, h]) or ``masks``
        (``synth_opacity``: list of absolute mask paths).
    :raises TaskUnavailable: the dataset has no table for this target.
    """
    if target == "rsna":
        if prepared.rsna is None or prepared.rsna.empty:
            raise TaskUnavailable(f"{prepared.root}: no RSNA table (prepare with --rsna DIR)")
        r = prepared.rsna
        return pd.DataFrame({
            "item": r["patientId"].astype(str), "patient": r["patientId"].astype(str), "split": r["split"],
            "path": [str(prepared.rsna_image_path(p)) for p in r["path"]],
            "height": r["height"], "width": r["width"], "boxes": r["boxes"],
        })
    if target == "synth_opacity":
        findings = prepared.synth_findings
        if findings is None or prepared.synthcxr_root is None:
            raise TaskUnavailable(f"{prepared.root}: no SynthCXR finding table (synth_opacity needs a SynthCXR dataset)")
        images = prepared.images
        opaque = findings[findings["finding"].isin(OPACITY_FINDINGS) & findings["mask"].notna()]
        by_image = opaque.groupby("dicom_id")["mask"].apply(list).to_dict()
        return pd.DataFrame({
            "item": images["dicom_id"], "patient": images["subject_id"], "split": images["split"],
            "path": [str(prepared.image_path(p)) for p in images["path"]],
            "height": images["height"], "width": images["width"],
            "masks": [[str(resolve_synthcxr_path(prepared, m)) for m in by_image.get(d, [])] for d in images["dicom_id"]],
        })
    raise ValueError(f"target: expected one of {SEG_TARGETS}, got {target!r}")


def target_mask(row: pd.Series, size: tuple[int, int]) -> np.ndarray:
    """The ``[H, W]`` bool target of one :func:`segmentation_table` row on the original pixels."""
    h, w = size
    if "boxes" in row.index:
        boxes = row["boxes"]
        return boxes_to_mask(boxes, h, w) if len(boxes) else np.zeros((h, w), dtype=bool)
    mask = np.zeros((h, w), dtype=bool)
    for path in row["masks"]:
        m = load_mask(path)
        if m.shape != (h, w):
            raise ValueError(f"mask {path}: shape {m.shape} differs from its image's {(h, w)}")
        mask |= m
    return mask


def target_masks(rows: pd.DataFrame, store: ImageStore, progress: bool = True, desc: str = "masks") -> Tensor:
    """``[N, S, S]`` bool targets of the rows, through the image geometry. The original size is the
    table's ``height``/``width``, or read from the image when blank."""
    out = torch.zeros((len(rows), store.size, store.size), dtype=torch.bool)
    for i, (_, row) in enumerate(tqdm(rows.iterrows(), total=len(rows), desc=desc, disable=not progress, leave=False)):
        h, w = row["height"], row["width"]
        if pd.isna(h) or pd.isna(w):
            with Image.open(row["path"]) as im:
                w, h = im.size
        out[i] = mask_to_input(target_mask(row, (int(h), int(w))), store.size)
    return out


# --------------------------------------------------------------------------------------------------
# loss and heads
# --------------------------------------------------------------------------------------------------
def soft_dice_loss(probs: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Binary soft Dice loss pooled over the batch (``segmentation_models_pytorch.DiceLoss(mode="binary")``).

    Definition: with p the probabilities and t the 0/1 targets of all pixels of all images of the
    batch, loss = 1 − 2·Σ p·t / max(Σ p + Σ t, eps); a batch whose targets are all empty gives 0
    (smp zeroes the loss when the target has no foreground), so empty images still teach the model
    through the batches they share with positives.

    :param probs: [B, 1, S, S] or [B, S, S] in [0, 1].
    :param target: same shape, 0/1 (bool or float).
    :return: scalar loss.
    """
    if probs.shape != target.shape:
        raise ValueError(f"soft_dice_loss: probs {tuple(probs.shape)} and target {tuple(target.shape)} differ")
    t = target.float()
    if t.sum() == 0:
        return probs.sum() * 0.0
    inter = (probs * t).sum()
    return 1.0 - 2.0 * inter / (probs.sum() + t.sum()).clamp_min(eps)


class LinearSegmentationHead(nn.Module):
    """LoVT's linear segmentation: a 1×1 conv on ``[B, C, h, w]`` maps, bilinearly upsampled to ``[B, 1, S, S]`` logits."""

    def __init__(self, in_channels: int, out_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=1)
        self.out_size = int(out_size)

    def forward(self, maps: Tensor) -> Tensor:
        return F.interpolate(self.conv(maps), size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)


def feature_pyramid(encoder: ImageEncoder, images: Tensor) -> "OrderedDict[str, Tensor]":
    """The deepest feature map at every resolution, coarsest first (the U-Net's bottom and skips).

    The network input (after :meth:`ImageEncoder.prepare_input`) counts as the first map; the stem
    is run layer by layer, so a ResNet's stem contributes its map before max-pooling; every later
    stage contributes its output. Of several maps with the same spatial size the last one computed
    is kept. For a torchvision ResNet at S px this is layer4 (S/32), layer3 (S/16), layer2 (S/8),
    layer1 (S/4), ``stem.2`` (the ReLU after conv1, S/2) and ``input`` (S).

    :param images: [B, C, S, S] normalised images.
    :return: ordered ``{name: [B, C_i, h_i, w_i]}`` from the last stage to the input.
    """
    x = encoder.prepare_input(images)
    produced: list[tuple[str, Tensor]] = [("input", x)]
    for name, stage in encoder.stages.items():
        if name == "stem" and isinstance(stage, nn.Sequential):
            for i, layer in enumerate(stage):
                x = layer(x)
                produced.append((f"stem.{i}", x))
        else:
            x = stage(x)
            produced.append((name, x))
    by_size: dict[tuple[int, int], tuple[str, Tensor]] = {}
    for name, m in produced:
        by_size[tuple(m.shape[-2:])] = (name, m)  # later maps overwrite earlier ones of the same size
    ordered = sorted(by_size.values(), key=lambda nm: nm[1].shape[-2] * nm[1].shape[-1])
    return OrderedDict(ordered)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """2×2 transposed convolution, concatenation with the skip, two 3×3 conv-BN-ReLU blocks."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)
        self.convs = nn.Sequential(_conv_block(c_out + c_skip, c_out), _conv_block(c_out, c_out))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:
            # odd sizes (e.g. GLoRIA's 299 px input): match the skip's grid
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class UNetDecoder(nn.Module):
    """LoVT's ResUNet decoder over a :func:`feature_pyramid` (definition in the module docstring)."""

    def __init__(self, pyramid_channels: Sequence[int], out_size: int, min_width: int = 16) -> None:
        super().__init__()
        if len(pyramid_channels) < 2:
            raise ValueError(f"UNetDecoder: need at least two pyramid levels, got channels {list(pyramid_channels)}")
        bottom = int(pyramid_channels[0])
        self.bridge = nn.Sequential(_conv_block(bottom, bottom), _conv_block(bottom, bottom))
        blocks, c_in = [], bottom
        for level, c_skip in enumerate(pyramid_channels[1:], start=1):
            c_out = max(bottom // 2**level, min_width)
            blocks.append(UpBlock(c_in, int(c_skip), c_out))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(c_in, 1, kernel_size=1)
        self.out_size = int(out_size)

    def forward(self, pyramid: Sequence[Tensor]) -> Tensor:
        """:param pyramid: maps coarsest first (:func:`feature_pyramid` values). :return: [B, 1, S, S] logits."""
        x = self.bridge(pyramid[0])
        for block, skip in zip(self.blocks, pyramid[1:]):
            x = block(x, skip)
        x = self.head(x)
        if x.shape[-1] != self.out_size or x.shape[-2] != self.out_size:
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return x


class UNet(nn.Module):
    """An :class:`ImageEncoder` with a :class:`UNetDecoder`: ``[B, 1, S, S] -> [B, 1, S, S]`` logits."""

    def __init__(self, encoder: ImageEncoder, input_size: int, min_width: int = 16) -> None:
        super().__init__()
        self.encoder = encoder
        was_training = encoder.training
        encoder.eval()
        device = next(encoder.parameters()).device
        with torch.no_grad():
            probe = feature_pyramid(encoder, torch.zeros(1, encoder.config.in_channels, input_size, input_size, device=device))
        encoder.train(was_training)
        self.skip_names = list(probe)
        self.decoder = UNetDecoder([m.shape[1] for m in probe.values()], input_size, min_width)
        self.encoder_frozen = False

    def freeze_encoder(self, frozen: bool) -> None:
        """Freeze (eval mode, no gradients) or release the encoder."""
        self.encoder_frozen = frozen
        self.encoder.requires_grad_(not frozen)
        self.encoder.train(self.training and not frozen)

    def train(self, mode: bool = True) -> "UNet":
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        if self.encoder_frozen:
            with torch.no_grad():
                pyramid = feature_pyramid(self.encoder, images)
        else:
            pyramid = feature_pyramid(self.encoder, images)
        return self.decoder(list(pyramid.values()))


# --------------------------------------------------------------------------------------------------
# training loops
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentationConfig:
    """Linear segmentation (LoVT: Adam, wd 1e-6, batch 64, ReduceLROnPlateau ×0.5 after 3 epochs,
    early stopping after 10; the learning rate is one value of LoVT's grid). Cached features make an
    epoch cost a fraction of a second at demo scale, so ``epochs=30`` is cheap."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 1e-6
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    patience: int = 10
    threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "plateau_patience", "patience"):
            check_positive(f"SegmentationConfig.{name}", getattr(self, name), integer=True)
        check_positive("SegmentationConfig.lr", self.lr)
        check_positive("SegmentationConfig.weight_decay", self.weight_decay, allow_zero=True)
        if not 0 < self.plateau_factor < 1 or not 0 < self.threshold < 1:
            raise ValueError(f"SegmentationConfig: plateau_factor and threshold must lie in (0, 1), got "
                             f"{self.plateau_factor!r}, {self.threshold!r}")


@dataclass(frozen=True)
class UNetConfig:
    """U-Net frozen / finetune (LoVT: batch 8-64, warm-up 20-100 steps at 1e-3, early stopping after
    10-20 epochs). Training stops after ``epochs`` epochs or ``max_steps`` optimizer steps, whichever
    comes first (validation after every epoch and at the stop). The defaults are a CPU demo budget:
    60 steps of 8 images with a 20-step warm-up, about half a minute per repetition for a ResNet-18
    at 128 px; for LoVT's protocol use ``max_steps=None`` and tens of epochs."""

    epochs: int = 3
    batch_size: int = 8
    max_steps: int | None = 60
    lr: float = 1e-3
    encoder_lr: float = 1e-4
    warmup_lr: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 1e-6
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    patience: int = 10
    threshold: float = 0.5
    min_width: int = 16
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "plateau_patience", "patience", "min_width", "eval_batch_size"):
            check_positive(f"UNetConfig.{name}", getattr(self, name), integer=True)
        check_positive("UNetConfig.warmup_steps", self.warmup_steps, integer=True, allow_zero=True)
        if self.max_steps is not None:
            check_positive("UNetConfig.max_steps", self.max_steps, integer=True)
        for name in ("lr", "encoder_lr", "warmup_lr"):
            check_positive(f"UNetConfig.{name}", getattr(self, name))
        check_positive("UNetConfig.weight_decay", self.weight_decay, allow_zero=True)
        if not 0 < self.plateau_factor < 1 or not 0 < self.threshold < 1:
            raise ValueError(f"UNetConfig: plateau_factor and threshold must lie in (0, 1), got "
                             f"{self.plateau_factor!r}, {self.threshold!r}")


def _seg_metrics(probs: Tensor, masks: Tensor, threshold: float) -> dict[str, float]:
    return {"dice": dice_dataset(probs, masks, threshold), "dice_per_image": float(np.mean(dice_per_image(probs, masks, threshold)))}


class _Selector:
    """Best-validation-Dice bookkeeping shared by both loops: plateau schedule, early stopping, best weights."""

    def __init__(self, model: nn.Module, patience: int) -> None:
        self.model, self.patience = model, patience
        self.best, self.best_epoch, self.since = -math.inf, -1, 0
        self.state = copy.deepcopy(model.state_dict())

    def update(self, epoch: int, value: float) -> bool:
        """Record one epoch; returns True when training should stop."""
        if value > self.best:
            self.best, self.best_epoch, self.since = value, epoch, 0
            self.state = copy.deepcopy(self.model.state_dict())
            return False
        self.since += 1
        return self.since >= self.patience

    def restore(self) -> None:
        self.model.load_state_dict(self.state)


def train_linear_segmentation(
    train: tuple[Tensor, Tensor],
    validate: tuple[Tensor, Tensor],
    input_size: int,
    *,
    config: SegmentationConfig = SegmentationConfig(),
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[LinearSegmentationHead, dict[str, float]]:
    """Fit the 1×1 conv on cached last-stage maps (definition in the module docstring).

    :param train: (maps [N, C, h, w], masks [N, S, S] bool).
    :param validate: the same for the validation split.
    :return: (the head with the best validation Dice, in eval mode; ``{"best_epoch", "val_dice"}``).
    """
    maps, masks = train
    if maps.shape[0] != masks.shape[0]:
        raise ValueError(f"train: {maps.shape[0]} maps but {masks.shape[0]} masks")
    dev = torch.device(device)
    with seeded(seed):
        head = LinearSegmentationHead(maps.shape[1], input_size).to(dev)
    optimiser = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="max", factor=config.plateau_factor,
                                                         patience=config.plateau_patience)
    selector = _Selector(head, config.patience)
    bar = tqdm(range(config.epochs), desc="linear segmentation", disable=not progress, leave=False)
    for epoch in bar:
        head.train()
        for idx in batch_order(maps.shape[0], config.batch_size, seed, epoch):
            idx_t = torch.as_tensor(idx)
            probs = torch.sigmoid(head(maps[idx_t].to(dev).float()))
            loss = soft_dice_loss(probs[:, 0], masks[idx_t].to(dev))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        val = _seg_metrics(_predict_linear(head, validate[0], dev), validate[1], config.threshold)["dice"]
        plateau.step(val)
        bar.set_postfix(val_dice=f"{val:.4f}")
        if selector.update(epoch, val):
            break
    bar.close()
    selector.restore()
    head.eval()
    return head, {"best_epoch": float(selector.best_epoch), "val_dice": float(selector.best)}


@torch.no_grad()
def _predict_linear(head: LinearSegmentationHead, maps: Tensor, device: torch.device, batch_size: int = 256) -> Tensor:
    was_training = head.training
    head.eval()
    out = [torch.sigmoid(head(maps[i : i + batch_size].to(device).float()))[:, 0].cpu() for i in range(0, maps.shape[0], batch_size)]
    head.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def predict_unet(model: UNet, store: ImageStore, prep: Preprocessing, *, batch_size: int = 64,
                 device: str | torch.device = "cpu") -> Tensor:
    """``[N, S, S]`` foreground probabilities of every image of a store (eval mode)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(store), batch_size):
        x = prep.normalize_batch(store.batch(range(start, min(start + batch_size, len(store))))).to(device)
        out.append(torch.sigmoid(model(x))[:, 0].cpu())
    model.train(was_training)
    return torch.cat(out)


def train_unet(
    encoder: ImageEncoder,
    prep: Preprocessing,
    train: tuple[ImageStore, Tensor],
    validate: tuple[ImageStore, Tensor],
    *,
    mode: str,
    config: UNetConfig = UNetConfig(),
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[UNet, dict[str, float]]:
    """Train a U-Net on a **copy** of ``encoder`` (definition in the module docstring).

    :param train: (image store, masks [N, S, S] bool).
    :param mode: ``"frozen"`` or ``"finetune"``.
    :return: (the model with the best validation Dice, in eval mode; ``{"best_epoch", "val_dice"}``).
    """
    if mode not in UNET_MODES:
        raise ValueError(f"mode: expected one of {UNET_MODES}, got {mode!r}")
    store, masks = train
    dev = torch.device(device)
    with seeded(seed):
        model = UNet(copy.deepcopy(encoder), prep.input_size, config.min_width).to(dev)
    model.freeze_encoder(True)
    warmup = mode == "finetune" and config.warmup_steps > 0
    groups = [{"params": list(model.decoder.parameters()), "lr": config.warmup_lr if warmup else config.lr}]
    if mode == "finetune":
        groups.append({"params": list(model.encoder.parameters()), "lr": config.encoder_lr})
    optimiser = torch.optim.Adam(groups, weight_decay=config.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="max", factor=config.plateau_factor,
                                                         patience=config.plateau_patience)
    if mode == "finetune" and not warmup:
        model.freeze_encoder(False)
    selector = _Selector(model, config.patience)
    step = 0
    bar = tqdm(range(config.epochs), desc=f"U-Net {mode}", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        for idx in batch_order(len(store), config.batch_size, seed, epoch):
            if config.max_steps is not None and step >= config.max_steps:
                break
            if warmup and step == config.warmup_steps:
                model.freeze_encoder(False)
                model.train()
                optimiser.param_groups[0]["lr"] = config.lr
                warmup = False
            x = prep.normalize_batch(store.batch(idx)).to(dev)
            loss = soft_dice_loss(torch.sigmoid(model(x))[:, 0], masks[torch.as_tensor(idx)].to(dev))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
        val = _seg_metrics(predict_unet(model, validate[0], prep, batch_size=config.eval_batch_size, device=dev),
                           validate[1], config.threshold)["dice"]
        if not warmup:  # the schedule starts with the full model (LoVT: the warm-up has its own rate)
            plateau.step(val)
        bar.set_postfix(val_dice=f"{val:.4f}")
        if selector.update(epoch, val) or (config.max_steps is not None and step >= config.max_steps):
            break
    bar.close()
    if warmup:
        log.warning("U-Net finetune: training ended after %d steps, inside the %d-step warm-up; the encoder never trained",
                    step, config.warmup_steps)
    selector.restore()
    model.freeze_encoder(True)
    model.eval()
    return model, {"best_epoch": float(selector.best_epoch), "val_dice": float(selector.best), "steps": float(step)}


# --------------------------------------------------------------------------------------------------
# protocols
# --------------------------------------------------------------------------------------------------
def _segmentation_data(prepared: PreparedDataset, target: str, prep: Preprocessing, stores: StoreCache,
                       progress: bool) -> dict[str, tuple[pd.DataFrame, ImageStore, Tensor]]:
    splits = split_rows(segmentation_table(prepared, target), f"segmentation target {target!r}")
    out = {}
    for name, rows in splits.items():
        store = stores.get(rows["path"], prep.input_size, desc=f"{target} {name}")
        masks = stores.cached(("masks", str(prepared.root), target, name, prep.input_size),
                              lambda: target_masks(rows, store, progress, desc=f"{target} {name} masks"))  # noqa: B023 (called at once)
        out[name] = (rows, store, masks)
    if not bool(out["train"][2].any()):
        raise TaskUnavailable(f"segmentation target {target!r}: no training image has a foreground pixel")
    return out


def linear_segmentation_protocol(
    encoder: ImageEncoder,
    prep: Preprocessing,
    prepared: PreparedDataset,
    *,
    target: str,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
    config: SegmentationConfig = SegmentationConfig(),
    stores: StoreCache | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[ProtocolResult]:
    """LoVT's linear segmentation (definition in the module docstring).

    :return: one result per (fraction, seed): ``dice`` (dataset-level), ``dice_per_image`` (mean),
        ``n_train``, ``n_train_patients``, ``best_epoch``, ``val_dice``.
    """
    stores = stores or StoreCache(progress=progress)
    data = _segmentation_data(prepared, target, prep, stores, progress)
    maps = {name: extract_features(encoder, store, prep, output="last_map", batch_size=batch_size, device=device,
                                   dtype=torch.float16, progress=progress, desc=f"last-stage maps ({name})")
            for name, (_, store, _) in data.items()}
    train_rows, _, train_masks = data["train"]
    results = []
    for seed in seeds:
        for fraction in fractions:
            subset = fraction_subset(train_rows.assign(_row=np.arange(len(train_rows))), fraction, seed, "patient")
            rows = torch.from_numpy(subset["_row"].to_numpy(copy=True))
            if not bool(train_masks[rows].any()):
                log.warning("linear segmentation %s f=%.3g seed %d: the drawn training images have no foreground", target, fraction, seed)
            head, info = train_linear_segmentation((maps["train"][rows], train_masks[rows]), (maps["validate"], data["validate"][2]),
                                                   prep.input_size, config=config, seed=int(seed), device=device, progress=progress)
            metrics = _seg_metrics(_predict_linear(head, maps["test"], torch.device(device)), data["test"][2], config.threshold)
            metrics.update(n_train=float(len(rows)), n_train_patients=float(subset["patient"].nunique()), **info)
            results.append(ProtocolResult(float(fraction), int(seed), metrics))
            log.info("linear segmentation %s f=%.3g seed %d: test Dice %.4f", target, fraction, seed, metrics["dice"])
    return results


def unet_protocol(
    encoder: ImageEncoder,
    prep: Preprocessing,
    prepared: PreparedDataset,
    *,
    target: str,
    mode: str,
    seeds: Sequence[int] = (0, 1, 2),
    config: UNetConfig = UNetConfig(),
    stores: StoreCache | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[ProtocolResult]:
    """LoVT's U-Net frozen / finetune on all training images (definition in the module docstring).

    :return: one result per seed (fraction 1.0): ``dice``, ``dice_per_image``, ``n_train``,
        ``best_epoch``, ``val_dice``, ``steps``.
    """
    stores = stores or StoreCache(progress=progress)
    data = _segmentation_data(prepared, target, prep, stores, progress)
    results = []
    for seed in seeds:
        model, info = train_unet(encoder, prep, data["train"][1:], data["validate"][1:], mode=mode, config=config, seed=int(seed),
                                 device=device, progress=progress)
        probs = predict_unet(model, data["test"][1], prep, batch_size=config.eval_batch_size, device=device)
        metrics = _seg_metrics(probs, data["test"][2], config.threshold)
        metrics.update(n_train=float(len(data["train"][0])), **info)
        results.append(ProtocolResult(1.0, int(seed), metrics))
        log.info("U-Net %s %s seed %d: test Dice %.4f", mode, target, seed, metrics["dice"])
    return results
