"""The registry of named method presets, with each paper's defaults.

``get_method("lovt")`` returns the resolved :class:`~localign.models.config.MethodConfig`;
overrides use dotted keys (``get_method("lovt", **{"image.arch": "resnet18"})``). Every LoVT ablation
of the supplementary table is a preset derived from ``lovt`` by switches (no code copies), listed
with its published value in :data:`LOVT_ABLATIONS`.

Where the official code deviates from its paper, the preset follows the **paper** and the code's
behaviour is a separate preset or switch (documented in ``book/methods.md``):

- LIMITR: ``limitr`` = the paper's model (external + internal + global losses, positional encoding);
  ``limitr_code`` = the released configuration (external + global only, no positional encoding).
- Local MI: ``local_mi_*`` implements the paper's Eq. 5, which the repository lacks; the global CPC
  variant is a true per-anchor InfoNCE (the repository's "infonce" is ``estimator="repo_infonce"``).
- GLoRIA keeps the code's score scaling (no 1/temp2): it is what produced the published numbers;
  ``paper_scaling=True`` gives the paper form.

Run ``localign methods`` for the list.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from localign.config import replace
from localign.models.config import (
    GlobalLossConfig,
    GloriaLossConfig,
    HeadConfig,
    ImageEncoderConfig,
    LimitrLossConfig,
    LoVTLossConfig,
    MethodConfig,
    MILossConfig,
    OptimConfig,
    TextEncoderConfig,
    TextInputConfig,
)
from localign.published import published_cell

BIO_CLINICAL_BERT = "emilyalsentzer/Bio_ClinicalBERT"

# --- shared encoder settings -------------------------------------------------------------------------
_LOVT_IMAGE = ImageEncoderConfig(arch="resnet50", weights="imagenet", region_layer="layer4", global_pool="avg", input_size=224)
_LOVT_TEXT = TextEncoderConfig(model=BIO_CLINICAL_BERT, freeze_embeddings=True, freeze_layers=6)
_LOVT_OPTIM = OptimConfig(optimizer="adamw", lr=1e-4, weight_decay=1e-6, schedule="cosine_per_epoch", batch_size=32,
                          accumulate=16, max_epochs=100, monitor="val/loss", patience=10)
_WORD_IMAGE = ImageEncoderConfig(arch="resnet50", weights="imagenet", region_layer="layer3", global_pool="avg", input_size=224, upsample_to=299)
_WORD_TEXT = TextEncoderConfig(model=BIO_CLINICAL_BERT, last_layers=4)
_WORD_INPUT = TextInputConfig(mode="joint", max_length=97, overflow="truncate", pad_to_max_length=True)
_LIMITR_OPTIM = OptimConfig(optimizer="adam", lr=5e-5, weight_decay=1e-6, betas=(0.5, 0.999), schedule="plateau",
                            plateau_patience=5, plateau_factor=0.5, batch_size=48, grad_clip=0.25, max_epochs=50,
                            monitor="val/r_sum", patience=5)
_MI_TEXT = TextEncoderConfig(model=BIO_CLINICAL_BERT)
_MI_OPTIM = OptimConfig(optimizer="adam", lr=5e-4, weight_decay=0.0, text_optimizer="adamw", text_lr=2e-5, text_weight_decay=0.1,
                        schedule="none", text_schedule="linear_warmup", warmup_fraction=0.1, batch_size=8, max_epochs=5,
                        monitor="val/loss", patience=5)

_CONVIRT = MethodConfig(
    name="convirt",
    family="global_contrastive",
    description="ConVIRT: avg-pooled ResNet-50, token-max BERT over one random sentence, InfoNCE tau=0.1, lambda=0.75, no projection BN",
    image=_LOVT_IMAGE,
    text=_LOVT_TEXT,
    text_input=TextInputConfig(mode="joint", max_length=512, sentence_sampling="random_sentence"),
    head=HeadConfig(d_z=512, d_hidden=2048, norm=None),
    loss=GlobalLossConfig(image_pool="avg", report_pool="token_max", temperature=0.1, weight_a2b=0.75),
    optim=OptimConfig(optimizer="adam", lr=1e-4, weight_decay=1e-6, schedule="plateau", plateau_patience=12, plateau_factor=0.5,
                      batch_size=32, max_epochs=500, monitor="val/loss", patience=15),
    reference="Zhang et al. 2020 as reimplemented by LoVT (configs/experiment/ConVIRT_100.yaml)",
)

_LOVT = MethodConfig(
    name="lovt",
    family="lovt",
    description="LoVT: global InfoNCE + local image (smooth spatial positives) and report losses through a shared alignment model",
    image=_LOVT_IMAGE,
    text=_LOVT_TEXT,
    text_input=TextInputConfig(mode="joint", max_length=512, overflow="drop_sentences", sentence_shuffling="random_swaps", swap_prob=0.6),
    head=HeadConfig(d_z=512, d_hidden=2048, norm="batch"),
    loss=LoVTLossConfig(),
    optim=_LOVT_OPTIM,
    reference="Müller et al. ECCV 2022, configs/experiment/LoVT_100.yaml of the official repository",
)

_CLIP = dataclasses.replace(
    _LOVT,
    name="clip",
    family="global_contrastive",
    description="CLIP* (LoVT's modified CLIP): attention-pooled image, token-max report of one random sentence, LoVT optimiser",
    text_input=TextInputConfig(mode="joint", max_length=512, sentence_sampling="random_sentence"),
    loss=GlobalLossConfig(image_pool="attention", report_pool="token_max", temperature=0.1, weight_a2b=0.75),
    reference="LoVT supplementary: CLIP (single sentence, attention pooling) = ablation g_single_sent_att",
)

_GLORIA = MethodConfig(
    name="gloria",
    family="gloria",
    description="GLoRIA: word-region double-softmax attention local loss + global loss, one random sentence per caption",
    image=_WORD_IMAGE,
    text=_WORD_TEXT,
    text_input=dataclasses.replace(_WORD_INPUT, sentence_sampling="random_sentence"),
    loss=GloriaLossConfig(),
    optim=dataclasses.replace(_LIMITR_OPTIM, monitor="val/loss", patience=10),
    reference="Huang et al. ICCV 2021, configs/chexpert_pretrain_config.yaml of the official repository",
)

_LIMITR = MethodConfig(
    name="limitr",
    family="limitr",
    description="LIMITR (paper model): both alignment directions, SA aggregation, external + internal + global losses, positional encoding",
    image=_WORD_IMAGE,
    text=_WORD_TEXT,
    text_input=_WORD_INPUT,
    loss=LimitrLossConfig(),
    optim=_LIMITR_OPTIM,
    reference="Dawidowicz et al. ICCV 2023 and its supplementary",
)

_MI_GLOBAL_IMAGE = ImageEncoderConfig(arch="liao_resnet6", weights=None, region_layer="layer5", global_pool="avg2x2_flatten", in_channels=1, input_size=256)
_MI_LOCAL_IMAGE = ImageEncoderConfig(arch="liao_resnet5", weights=None, region_layer="layer5", global_pool="avg", in_channels=1, input_size=256)


def _mi(level: str, estimator: str) -> MethodConfig:
    local = level == "local"
    return MethodConfig(
        name=f"{level}_mi_{estimator}",
        family="mi",
        description=(f"Liao et al. {level} MI maximisation ({estimator.upper()} bound): "
                     + ("max over 4x4 regions per sentence [CLS], summed over sentences (Eq. 5)" if local
                        else "768-d image vector vs report [CLS] (the repository's model)")),
        image=_MI_LOCAL_IMAGE if local else _MI_GLOBAL_IMAGE,
        text=_MI_TEXT,
        text_input=TextInputConfig(mode="sentences", max_length=128) if local else TextInputConfig(mode="joint", max_length=320, overflow="truncate"),
        head=HeadConfig(),
        loss=MILossConfig(level=level, estimator=estimator),
        optim=_MI_OPTIM,
        reference="Liao et al. MICCAI 2021 (paper) and github.com/RayRuizhiLiao/mutual_info_img_txt",
    )


METHODS: dict[str, MethodConfig] = {}


def register_method(config: MethodConfig, overwrite: bool = False) -> MethodConfig:
    """Add a preset (e.g. a user's variant) under ``config.name``."""
    if config.name in METHODS and not overwrite:
        raise ValueError(f"a method named {config.name!r} is already registered")
    METHODS[config.name] = config
    return config


for _cfg in (
    _CONVIRT,
    _CLIP,
    _GLORIA,
    _mi("global", "mine"),
    _mi("global", "cpc"),
    _mi("local", "mine"),
    _mi("local", "cpc"),
    _LOVT,
    _LIMITR,
):
    register_method(_cfg)


def _variant(base: str, name: str, description: str, **overrides: Any) -> MethodConfig:
    cfg = replace(METHODS[base], name=name, description=description, **overrides)
    return register_method(cfg)


# --- the code's behaviour where it deviates from the paper ------------------------------------------
_variant("limitr", "limitr_code", "LIMITR as released (mimic_config.yaml): external + global losses only, no positional encoding",
         **{"loss.internal_weight": 0.0, "loss.positional_encoding": False})
_variant("global_mi_cpc", "global_mi_repo", "Liao et al.'s repository: global MI with its 'infonce' loss (DV plus a constant)",
         **{"loss.estimator": "repo_infonce", "loss.text_feature": "pooler"})

# --- LoVT supplementary Table 1: every ablation as a preset switch ----------------------------------
_variant("lovt", "lovt_no_weight", "LoVT without local weighting (uniform local weights)", **{"loss.local_weights": "uniform"})
_variant("lovt", "lovt_no_weight_no_att", "LoVT without local weighting, avg-pool image / token-max report global representations",
         **{"loss.local_weights": "uniform", "loss.image_pool": "avg", "loss.report_pool": "token_max", "optim.lr": 3e-5})
_variant("lovt", "lovt_no_global", "LoVT without the global loss (local losses only, uniform local weights)",
         **{"loss.global_weight": 0.0, "loss.local_weights": "uniform", "loss.report_pool": "token_max"})
_variant("lovt", "lovt_no_spatial", "LoVT with non-smooth local image positives (equal weights inside the radius)",
         **{"loss.spatial_smooth": False})
_variant("lovt", "lovt_local_report_only", "LoVT with the local report loss only (+ global): no local image loss",
         **{"loss.local_image_weight": 0.0})
_variant("lovt", "lovt_local_image_only", "LoVT with the local image loss only (+ global): no local report loss",
         **{"loss.local_report_weight": 0.0})
_variant("lovt", "lovt_no_local", "LoVT without local losses (global loss with attention pooling)",
         **{"loss.local_image_weight": 0.0, "loss.local_report_weight": 0.0})
_variant("lovt", "lovt_global_only", "Global loss only with avg/max pooling and all sentences (sentence swaps)",
         **{"loss.local_image_weight": 0.0, "loss.local_report_weight": 0.0, "loss.local_weights": "uniform",
            "loss.image_pool": "avg", "loss.report_pool": "token_max", "optim.lr": 3e-4})
_variant("convirt", "convirt_cosine", "ConVIRT with LoVT's AdamW and cyclic cosine schedule",
         **{"optim.optimizer": "adamw", "optim.schedule": "cosine_per_epoch", "optim.lr": 3e-5, "optim.accumulate": 16, "optim.patience": 10})
_variant("lovt", "lovt_plateau", "LoVT with ReduceLROnPlateau (patience 12, x0.5) instead of the cyclic cosine schedule",
         **{"optim.schedule": "plateau", "optim.plateau_patience": 12, "optim.plateau_factor": 0.5, "optim.lr": 3e-5})

#: LoVT supplementary Table 1 (RSNA YOLOv3 frozen 10 %, mAP %, mean ± 95 % CI, 30 % pretraining):
#: preset name -> (row label, published value). The values are MIMIC/RSNA numbers of the paper, read
#: from the packaged file ``localign/published/lovt_supp_table1.csv`` (its rows are the preset names).
_LOVT_ABLATION_ROWS = {
    "lovt": "LoVT",
    "lovt_no_weight": "no local weighting",
    "lovt_no_weight_no_att": "no local weighting, avg/max pooling",
    "lovt_no_global": "no global loss",
    "lovt_no_spatial": "non-smooth local image loss",
    "lovt_local_report_only": "local report loss only (+ global)",
    "lovt_local_image_only": "local image loss only (+ global)",
    "lovt_no_local": "no local losses (attention pooling)",
    "lovt_global_only": "no local losses, avg/max pooling",
    "clip": "CLIP (single sentence, attention pooling)",
    "convirt_cosine": "ConVIRT with cyclic cosine schedule",
    "convirt": "ConVIRT",
}
LOVT_ABLATIONS: dict[str, tuple[str, str]] = {
    name: (label, published_cell("lovt", "supp_table1", name)) for name, label in _LOVT_ABLATION_ROWS.items()
}


def list_methods() -> list[str]:
    return list(METHODS)


def get_method(name: str, **overrides: Any) -> MethodConfig:
    """The preset ``name`` with optional overrides (dotted keys for nested fields)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(METHODS)}")
    return replace(METHODS[name], **overrides) if overrides else METHODS[name]


# --- `localign methods` -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show the full resolved config of one method")


def main(args: argparse.Namespace) -> int:
    import yaml

    if args.name:
        print(yaml.safe_dump(get_method(args.name).to_dict(), sort_keys=False))
        return 0
    width = max(len(n) for n in METHODS)
    for name, cfg in METHODS.items():
        print(f"{name:<{width}}  {cfg.family:<18} {cfg.description}")
    return 0
