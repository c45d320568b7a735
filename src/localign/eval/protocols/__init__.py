"""Every downstream protocol of the three papers, as code and as a written definition.

Each protocol module opens with the paragraph that defines exactly what it computes (quoted in the
book); :func:`evaluate_runs` runs them on run folders and baselines and returns one tidy table.

- :mod:`.features`        the input pipeline exported with an encoder; frozen global features
- :mod:`.classification`  linear probe (1/10/100 % labels); local MI's encoder-frozen/-tuned
                          re-training on Pathology9 and EdemaSeverity
- :mod:`.segmentation`    LoVT's linear segmentation and U-Net (frozen / finetune); RSNA box masks
                          and SynthCXR lung-opacity masks
- :mod:`.retrieval`       image↔report R@K with the method's own score and an explicit pool
- :mod:`.grounding`       phrase-grounding CNR on MS-CXR boxes, and on SynthCXR's exact masks
- :mod:`.zero_shot`       zero-shot classification from class prompts (GLoRIA's CheXpert 5×200)
- :mod:`.baselines`       random init, supervised image-only (local MI), ImageNet init
- :mod:`.registry`        the protocol registry: name, aliases, variants, config, run, table, figures
- :mod:`.builtin`         the registry entries of the papers' protocols
- :mod:`.runner`          :func:`evaluate_runs`, :class:`EvalConfig`, the task names
"""

from localign.eval.protocols.baselines import (
    BASELINES,
    BaselineUnavailable,
    imagenet_encoder,
    random_init_encoder,
    supervised_encoder,
)
from localign.eval.protocols.classification import (
    ClassifierConfig,
    ImageClassifier,
    ProbeConfig,
    classifier_protocol,
    edema_table,
    linear_probe_protocol,
    pathology_table,
    train_classifier,
)
from localign.data.transforms import Preprocessing
from localign.eval.protocols.common import ProtocolResult, TaskUnavailable
from localign.eval.protocols.features import (
    LIGHT_AUGMENT,
    ImageStore,
    StoreCache,
    extract_features,
    load_unnormalized,
    mask_to_input,
)
from localign.eval.protocols.grounding import grounding_protocol, ms_cxr_phrases, phrase_cnr, synth_sentence_masks
from localign.eval.protocols.registry import (
    FigureSpec,
    Protocol,
    TaskContext,
    get_protocol,
    protocols,
    register_protocol,
)
from localign.eval.protocols.retrieval import retrieval_protocol
from localign.eval.protocols.runner import TASK_ALIASES, TASKS, EvalConfig, EvalSettings, evaluate_runs, resolve_tasks
from localign.eval.protocols.segmentation import (
    OPACITY_FINDINGS,
    LinearSegmentationHead,
    SegmentationConfig,
    UNet,
    UNetConfig,
    UNetDecoder,
    feature_pyramid,
    linear_segmentation_protocol,
    segmentation_table,
    soft_dice_loss,
    train_linear_segmentation,
    train_unet,
    unet_protocol,
)
from localign.eval.protocols.zero_shot import ZeroShotConfig, class_prompts, zero_shot_protocol

__all__ = [
    "BASELINES",
    "LIGHT_AUGMENT",
    "OPACITY_FINDINGS",
    "TASKS",
    "TASK_ALIASES",
    "BaselineUnavailable",
    "ClassifierConfig",
    "EvalConfig",
    "EvalSettings",
    "FigureSpec",
    "ImageClassifier",
    "ImageStore",
    "LinearSegmentationHead",
    "Preprocessing",
    "ProbeConfig",
    "Protocol",
    "ProtocolResult",
    "SegmentationConfig",
    "StoreCache",
    "TaskContext",
    "TaskUnavailable",
    "UNet",
    "UNetConfig",
    "UNetDecoder",
    "ZeroShotConfig",
    "class_prompts",
    "classifier_protocol",
    "edema_table",
    "evaluate_runs",
    "extract_features",
    "feature_pyramid",
    "get_protocol",
    "grounding_protocol",
    "imagenet_encoder",
    "linear_probe_protocol",
    "linear_segmentation_protocol",
    "load_unnormalized",
    "mask_to_input",
    "ms_cxr_phrases",
    "pathology_table",
    "phrase_cnr",
    "protocols",
    "random_init_encoder",
    "register_protocol",
    "resolve_tasks",
    "retrieval_protocol",
    "segmentation_table",
    "soft_dice_loss",
    "supervised_encoder",
    "synth_sentence_masks",
    "train_classifier",
    "train_linear_segmentation",
    "train_unet",
    "unet_protocol",
    "zero_shot_protocol",
]
