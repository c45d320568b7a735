"""The registry entries of the papers' protocols: probe, classifier re-training, segmentation, retrieval, grounding.

Each entry binds a protocol function of its module (:mod:`.classification`, :mod:`.segmentation`,
:mod:`.retrieval`, :mod:`.grounding`) to the runner through a small ``run(ctx)`` adapter, and
names its ``EvalConfig`` field, its table (:mod:`localign.eval.tables`) and its figures
(:mod:`localign.viz.evaluation`, resolved when drawn). The definitions live in those modules'
docstrings and in ``book/evaluation.md``.

================== ========================= =========================================================
task               tidy ``task``             protocol
================== ========================= =========================================================
probe              ``probe``                 linear probe on frozen global features, Pathology9,
                                             × label fractions × seeds
classify_frozen    ``classify_frozen``       local MI re-training, encoder frozen, Pathology9, × seeds
classify_tuned     ``classify_tuned``        local MI re-training, encoder tuned, Pathology9, × seeds
edema_frozen       ``edema_frozen``          EdemaSeverity, encoder frozen, × seeds
edema_tuned        ``edema_tuned``           EdemaSeverity, encoder tuned, × seeds
seg_linear         ``seg_linear:<target>``   LoVT linear segmentation × label fractions × seeds
seg_unet_frozen    ``seg_unet_frozen:<t>``   LoVT U-Net, encoder frozen, × seeds
seg_unet_finetune  ``seg_unet_finetune:<t>`` LoVT U-Net, fine-tuned after a frozen warm-up, × seeds
retrieval          ``retrieval``             image↔report R@K with the method's score (seed 0)
grounding          ``grounding:<source>``    phrase-grounding CNR, MS-CXR boxes / SynthCXR masks
================== ========================= =========================================================
"""

from __future__ import annotations

from localign.eval import tables as T
from localign.eval.protocols.classification import (
    ClassifierConfig,
    ProbeConfig,
    classifier_protocol,
    linear_probe_protocol,
    pathology_table,
)
from localign.eval.protocols.common import ProtocolResult
from localign.eval.protocols.grounding import grounding_protocol
from localign.eval.protocols.registry import FigureSpec, Protocol, TaskContext, register_protocol
from localign.eval.protocols.retrieval import retrieval_protocol
from localign.eval.protocols.segmentation import SegmentationConfig, UNetConfig, linear_segmentation_protocol, unet_protocol

_VIZ = "localign.viz.evaluation"


# --------------------------------------------------------------------------------------------------
# run adapters: (subject, config) -> the protocol function's arguments
# --------------------------------------------------------------------------------------------------
def run_probe(ctx: TaskContext) -> list[ProtocolResult]:
    cfg = ctx.config
    table = pathology_table(ctx.prepared, cfg.labels, cfg.blank)
    seeds = cfg.probe.seeds if cfg.probe.seeds is not None else cfg.seeds
    return linear_probe_protocol(ctx.encoder, ctx.prep, table, cfg.labels, fractions=cfg.fractions, seeds=seeds,
                                 config=cfg.probe, stores=ctx.stores, batch_size=cfg.batch_size, device=ctx.device,
                                 progress=ctx.progress)


def _classifier(task: str, mode: str):
    def run(ctx: TaskContext) -> list[ProtocolResult]:
        cfg = ctx.config
        return classifier_protocol(ctx.encoder, ctx.prep, ctx.prepared, task=task, mode=mode, seeds=cfg.seeds, class_names=cfg.labels,
                                   blank=cfg.blank, config=cfg.classifier_frozen if mode == "frozen" else cfg.classifier_tuned,
                                   stores=ctx.stores, device=ctx.device, progress=ctx.progress)

    run.__name__ = run.__qualname__ = f"run_{'classify' if task == 'pathology9' else 'edema'}_{mode}"
    return run


def run_seg_linear(ctx: TaskContext) -> list[ProtocolResult]:
    cfg = ctx.config
    return linear_segmentation_protocol(ctx.encoder, ctx.prep, ctx.prepared, target=ctx.variant, fractions=cfg.fractions,
                                        seeds=cfg.seeds, config=cfg.segmentation, stores=ctx.stores, batch_size=cfg.batch_size,
                                        device=ctx.device, progress=ctx.progress)


def _unet(mode: str):
    def run(ctx: TaskContext) -> list[ProtocolResult]:
        cfg = ctx.config
        return unet_protocol(ctx.encoder, ctx.prep, ctx.prepared, target=ctx.variant, mode=mode, seeds=cfg.seeds, config=cfg.unet,
                             stores=ctx.stores, device=ctx.device, progress=ctx.progress)

    run.__name__ = run.__qualname__ = f"run_seg_unet_{mode}"
    return run


def run_retrieval(ctx: TaskContext) -> list[ProtocolResult]:
    cfg = ctx.config
    return retrieval_protocol(ctx.model, ctx.prep, ctx.prepared, pool=cfg.retrieval_pool, split=cfg.retrieval_split,
                              batch_size=cfg.batch_size, device=ctx.device, progress=ctx.progress)


def run_grounding(ctx: TaskContext) -> list[ProtocolResult]:
    cfg = ctx.config
    return grounding_protocol(ctx.model, ctx.prep, ctx.prepared, source=ctx.variant, split=cfg.grounding_split,
                              sigma=cfg.grounding_sigma, batch_size=cfg.batch_size, device=ctx.device, progress=ctx.progress)


# --------------------------------------------------------------------------------------------------
# figures (drawn by localign.viz.evaluation; captions say what to read in them)
# --------------------------------------------------------------------------------------------------
PROBE_FIGURE = FigureSpec(
    "probe_fractions", "fig-eval-probe-fractions",
    "Linear-probe test macro AUROC against the fraction of training labels (log axis), one line per pretrained run and "
    "baseline. A pretrained encoder earns its keep where its line stays above the random-init baseline at the smallest "
    "fractions.", f"{_VIZ}:probe_figure")
CLASSIFICATION_FIGURE = FigureSpec(
    "classification", "fig-eval-classification",
    "Pathology9 test macro AUROC of the encoder-frozen (and encoder-tuned) classifiers at 100 % labels, one bar per run "
    "and baseline; the line is chance (50 %). Compare each pretrained bar with the random-init and supervised baselines, "
    "not with the published numbers.", f"{_VIZ}:classification_figure")
SEGMENTATION_FIGURE = FigureSpec(
    "segmentation", "fig-eval-segmentation",
    "Dataset-level Dice of every segmentation task (protocol:target) at 100 % labels, one bar per run and baseline. "
    "Local objectives should help most here: look for the gap between the pretrained bars and random init.",
    f"{_VIZ}:segmentation_figure")
RETRIEVAL_FIGURE = FigureSpec(
    "retrieval", "fig-eval-retrieval",
    "Image→report and report→image recall at K with each method's own score over the stated candidate pool; the black "
    "dotted marks are chance for that pool (K / pool size). Bars well above chance mean the two encoders agree on which "
    "report belongs to which image.", f"{_VIZ}:retrieval_figure")
GROUNDING_FIGURES = (
    FigureSpec("grounding_ms_cxr", "fig-eval-grounding-ms-cxr",
               "Phrase grounding on the MS-CXR-format boxes: mean CNR per finding category and overall (error bars: 95 % CI "
               "over phrases). CNR above 0 means the phrase's similarity map is higher inside its box than outside; around 0 "
               "the map ignores the phrase.", f"{_VIZ}:grounding_ms_cxr_figure"),
    FigureSpec("grounding_synth_masks", "fig-eval-grounding-synth",
               "Phrase grounding against SynthCXR's exact finding masks: mean CNR per category and overall (error bars: 95 % "
               "CI over phrases). The same reading as for the boxes, without the box's slack around the finding.",
               f"{_VIZ}:grounding_synth_masks_figure"),
)


# --------------------------------------------------------------------------------------------------
# registration (this order is the order of tasks, tables and figures)
# --------------------------------------------------------------------------------------------------
def _classifier_frozen_default() -> ClassifierConfig:
    return ClassifierConfig(epochs=20, augmented_views=2)


def _classifier_tuned_default() -> ClassifierConfig:
    return ClassifierConfig(batch_size=16, max_steps=30)


def _seg_targets(cfg) -> tuple[str, ...]:
    return tuple(cfg.seg_targets)


def _grounding_sources(cfg) -> tuple[str, ...]:
    return tuple(cfg.grounding_sources)


register_protocol(Protocol(
    "probe", run_probe, "linear probe on frozen global features, Pathology9, × label fractions × seeds",
    config_field="probe", config_class=ProbeConfig, uses_fractions=True, table=T.probe_tables, figures=(PROBE_FIGURE,)))
register_protocol(Protocol(
    "classify_frozen", _classifier("pathology9", "frozen"), "local MI re-training, encoder frozen, Pathology9, × seeds",
    aliases=("classify",), config_field="classifier_frozen", config_class=ClassifierConfig, config_default=_classifier_frozen_default,
    table=T.pathology9_frozen_tables, figures=(CLASSIFICATION_FIGURE,)))
register_protocol(Protocol(
    "classify_tuned", _classifier("pathology9", "tuned"), "local MI re-training, encoder tuned, Pathology9, × seeds",
    aliases=("classify",), config_field="classifier_tuned", config_class=ClassifierConfig, config_default=_classifier_tuned_default,
    table=T.pathology9_tuned_tables, figures=(CLASSIFICATION_FIGURE,)))
register_protocol(Protocol(
    "edema_frozen", _classifier("edema", "frozen"), "EdemaSeverity, encoder frozen, × seeds",
    aliases=("edema",), config_field="classifier_frozen", config_class=ClassifierConfig, config_default=_classifier_frozen_default,
    table=T.edema_tables))
register_protocol(Protocol(
    "edema_tuned", _classifier("edema", "tuned"), "EdemaSeverity, encoder tuned, × seeds",
    aliases=("edema",), config_field="classifier_tuned", config_class=ClassifierConfig, config_default=_classifier_tuned_default,
    table=T.edema_tables))
register_protocol(Protocol(
    "seg_linear", run_seg_linear, "LoVT linear segmentation × label fractions × seeds", aliases=("seg",), variants=_seg_targets,
    config_field="segmentation", config_class=SegmentationConfig, uses_fractions=True, table=T.segmentation_tables,
    figures=(SEGMENTATION_FIGURE,)))
register_protocol(Protocol(
    "seg_unet_frozen", _unet("frozen"), "LoVT U-Net, encoder frozen, × seeds", aliases=("seg",), variants=_seg_targets,
    config_field="unet", config_class=UNetConfig, table=T.segmentation_tables, figures=(SEGMENTATION_FIGURE,)))
register_protocol(Protocol(
    "seg_unet_finetune", _unet("finetune"), "LoVT U-Net, fine-tuned after a frozen warm-up, × seeds", aliases=("seg",),
    variants=_seg_targets, config_field="unet", config_class=UNetConfig, table=T.segmentation_tables, figures=(SEGMENTATION_FIGURE,)))
register_protocol(Protocol(
    "retrieval", run_retrieval, "image↔report R@K with the method's score (seed 0)", needs_text=True, table=T.retrieval_tables,
    figures=(RETRIEVAL_FIGURE,)))
register_protocol(Protocol(
    "grounding", run_grounding, "phrase-grounding CNR, MS-CXR boxes / SynthCXR masks", variants=_grounding_sources, needs_text=True,
    table=T.grounding_tables, figures=GROUNDING_FIGURES))
