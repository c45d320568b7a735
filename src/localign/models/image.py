"""Image encoders: torchvision ResNets and Liao et al.'s 256-px ResNets, with a region grid and a global vector.

Every method uses the same :class:`ImageEncoder` interface, so that methods differ only in their heads
and objectives ("identical encoders"). The encoder is the backbone only; projections and attention
pooling belong to the method. Regions are the output map of ``region_layer`` flattened **row-major**
(region index k = h * W + w, as LoVT); the global vector pools the **last** stage.

Configurations of the papers:

- LoVT: ResNet-50, 224 px, regions = layer4 (7x7x2048), global = attention pool (a method head).
- GLoRIA / LIMITR: ResNet-50, 224 px upsampled to 299 inside the encoder, regions = layer3
  (19x19x1024), global = layer4 average pool (2048).
- Local MI (Liao et al.): one-channel 256 px input; the local encoder is a 5-stage ResNet giving
  4x4x512 regions; the global encoder is the repository's ``ResNet256_6_2_1`` (six stages of widths
  8..192, 2x2 average pool flattened to 768).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock

from localign.models.config import ImageEncoderConfig

log = logging.getLogger(__name__)


@dataclass
class ImageFeatures:
    """Outputs of an :class:`ImageEncoder`.

    :ivar regions: ``[B, K, C_r]`` region features, K = h * w, row-major
    :ivar grid: ``(h, w)`` of the region grid
    :ivar pooled: ``[B, C_g]`` pooled last-stage features
    """

    regions: Tensor
    grid: tuple[int, int]
    pooled: Tensor

    @property
    def region_map(self) -> Tensor:
        """``[B, C_r, h, w]`` view of the regions."""
        b, k, c = self.regions.shape
        return self.regions.transpose(1, 2).reshape(b, c, *self.grid)


class LiaoResNet(nn.Module):
    """Liao et al.'s small ResNets for 256x256 radiographs (BasicBlocks, 2 per stage, stride 2 each).

    ``liao_resnet6`` is the repository's ``ResNet256_6_2_1``: a 3x3 stem conv to 8 channels
    (stride 1), six stages of widths 8, 16, 32, 64, 128, 192 (maps 128 ... 4 at 256 px).
    ``liao_resnet5`` is our reading of the paper's local encoder ("a 5-block ResNet whose output is
    4x4x512"; the repository has no local encoder): a stride-2 stem conv to 16 channels and five
    stages of widths 32, 64, 128, 256, 512, giving 4x4x512 at 256 px.
    """

    def __init__(self, widths: tuple[int, ...], stem_width: int, stem_stride: int, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        c_in = stem_width
        for i, width in enumerate(widths, start=1):
            down = nn.Sequential(nn.Conv2d(c_in, width, 1, stride=2, bias=False), nn.BatchNorm2d(width))
            stage = nn.Sequential(BasicBlock(c_in, width, stride=2, downsample=down), BasicBlock(width, width))
            self.add_module(f"layer{i}", stage)
            c_in = width
        self.widths = widths
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def _torchvision_stages(net: nn.Module) -> "OrderedDict[str, nn.Module]":
    return OrderedDict(
        stem=nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
        layer1=net.layer1,
        layer2=net.layer2,
        layer3=net.layer3,
        layer4=net.layer4,
    )


_TORCHVISION = {"resnet18": resnet18, "resnet50": resnet50}
_TORCHVISION_CHANNELS = {
    "resnet18": {"stem": 64, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
    "resnet50": {"stem": 64, "layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
}
_LIAO = {
    "liao_resnet6": dict(widths=(8, 16, 32, 64, 128, 192), stem_width=8, stem_stride=1),
    "liao_resnet5": dict(widths=(32, 64, 128, 256, 512), stem_width=16, stem_stride=2),
}
ARCHITECTURES = tuple(_TORCHVISION) + tuple(_LIAO)


def imagenet_state_dict(arch: str) -> dict[str, Tensor]:
    """torchvision's ImageNet weights (IMAGENET1K_V1, as LoVT/GLoRIA used) from the torch hub cache.

    Downloads on first use when a network is available; otherwise raises an error that says where to
    put the file. Nothing else in localign touches the network.
    """
    from torchvision.models import ResNet18_Weights, ResNet50_Weights

    weights = {"resnet18": ResNet18_Weights.IMAGENET1K_V1, "resnet50": ResNet50_Weights.IMAGENET1K_V1}.get(arch)
    if weights is None:
        raise ValueError(f"no ImageNet weights for arch {arch!r}; available for {sorted(_TORCHVISION)}")
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # URLError, socket errors, ...
        raise RuntimeError(
            f"ImageNet weights for {arch} are not cached at {path} and could not be downloaded ({type(e).__name__}: {e}). "
            f"On a machine with internet access download {weights.url} and copy it to {path}, "
            "or set weights to the path of a state_dict, or use weights=None (random init)."
        ) from e


class ImageEncoder(nn.Module):
    """A backbone returning :class:`ImageFeatures` (regions of ``region_layer`` + pooled last stage).

    Input: ``[B, 1, H, W]`` grayscale (replicated to 3 channels when ``in_channels == 3``) or
    ``[B, in_channels, H, W]``, already normalised by the data pipeline.
    """

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        arch = config.arch
        if arch in _TORCHVISION:
            net = _TORCHVISION[arch](weights=None)
            if config.weights == "imagenet":
                net.load_state_dict(imagenet_state_dict(arch))
            if config.in_channels == 1:
                # One-channel stem; with ImageNet weights the RGB filters are summed (grey = R = G = B).
                w = net.conv1.weight.data.sum(dim=1, keepdim=True)
                net.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
                net.conv1.weight.data.copy_(w)
            elif config.in_channels != 3:
                raise ValueError(f"in_channels must be 1 or 3, got {config.in_channels}")
            self.stages = nn.ModuleDict(_torchvision_stages(net))
            self.channels = dict(_TORCHVISION_CHANNELS[arch])
        elif arch in _LIAO:
            if config.weights == "imagenet":
                raise ValueError(f"{arch} has no ImageNet weights; use weights=None or a state_dict path")
            spec = _LIAO[arch]
            net = LiaoResNet(spec["widths"], spec["stem_width"], spec["stem_stride"], in_channels=config.in_channels)
            self.stages = nn.ModuleDict([("stem", net.stem)] + [(f"layer{i}", getattr(net, f"layer{i}")) for i in range(1, len(spec["widths"]) + 1)])
            self.channels = {"stem": spec["stem_width"], **{f"layer{i}": w for i, w in enumerate(spec["widths"], start=1)}}
        else:
            raise ValueError(f"unknown image encoder arch {arch!r}; choose from {ARCHITECTURES}")
        if config.region_layer not in self.stages:
            raise ValueError(f"region_layer {config.region_layer!r} is not a stage of {arch}; stages: {list(self.stages)}")
        if config.global_pool not in ("avg", "max", "avg2x2_flatten"):
            raise ValueError(f"unknown global_pool {config.global_pool!r}; use avg, max or avg2x2_flatten")
        self.last_layer = list(self.stages)[-1]
        if config.weights not in (None, "imagenet"):
            self.load_backbone(config.weights)

    # ---------------------------------------------------------------------------------------------
    @property
    def region_channels(self) -> int:
        return self.channels[self.config.region_layer]

    @property
    def pooled_channels(self) -> int:
        c = self.channels[self.last_layer]
        return 4 * c if self.config.global_pool == "avg2x2_flatten" else c

    def prepare_input(self, images: Tensor) -> Tensor:
        if images.dim() != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
        if images.shape[1] == 1 and self.config.in_channels == 3:
            images = images.expand(-1, 3, -1, -1)
        elif images.shape[1] != self.config.in_channels:
            raise ValueError(f"expected {self.config.in_channels} (or 1) input channels, got {images.shape[1]}")
        if self.config.upsample_to is not None:
            # GLoRIA/LIMITR upsample 224 -> 299 inside the encoder (bilinear, align_corners=True).
            images = F.interpolate(images, size=(self.config.upsample_to,) * 2, mode="bilinear", align_corners=True)
        return images

    def stage_maps(self, images: Tensor, upto: str | None = None) -> "OrderedDict[str, Tensor]":
        """Output map of every stage (``stem``, ``layer1``...), for U-Net decoders and analyses."""
        x = self.prepare_input(images)
        maps: OrderedDict[str, Tensor] = OrderedDict()
        for name, stage in self.stages.items():
            x = stage(x)
            maps[name] = x
            if name == upto:
                break
        return maps

    def pool(self, last_map: Tensor) -> Tensor:
        if self.config.global_pool == "avg":
            return last_map.mean(dim=(2, 3))
        if self.config.global_pool == "max":
            return last_map.amax(dim=(2, 3))
        return F.adaptive_avg_pool2d(last_map, 2).flatten(1)  # Liao et al.: 2x2 pool of 4x4x192 -> 768

    def forward(self, images: Tensor) -> ImageFeatures:
        maps = self.stage_maps(images)
        region_map = maps[self.config.region_layer]
        b, c, h, w = region_map.shape
        regions = region_map.flatten(2).transpose(1, 2)  # [B, C, h, w] -> [B, h*w, C], row-major
        return ImageFeatures(regions=regions, grid=(h, w), pooled=self.pool(maps[self.last_layer]))

    # ---------------------------------------------------------------------------------------------
    def load_backbone(self, path: str | Path) -> None:
        """Load backbone weights from an encoder export or a plain state_dict file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"image encoder weights not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if any(k.startswith("conv1.") for k in state):  # a torchvision ResNet state_dict
            state = _from_torchvision_keys(state)
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path} does not match {self.config.arch}: missing {missing[:5]}..., unexpected {unexpected[:5]}...")


def _from_torchvision_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision ResNet keys (``conv1``, ``bn1``, ``layerN``) to :class:`ImageEncoder` keys; drop ``fc``."""
    out = {}
    for k, v in state.items():
        if k.startswith("fc."):
            continue
        if k.startswith("conv1."):
            k = "stages.stem.0." + k[len("conv1.") :]
        elif k.startswith("bn1."):
            k = "stages.stem.1." + k[len("bn1.") :]
        elif k.startswith("layer"):
            k = "stages." + k
        out[k] = v
    return out
