"""The parameters of SynthCXR: one frozen dataclass, saved resolved into every generated ``generator.json``.

Probabilities are per study unless a name says otherwise. Lengths in the generative model are in
*patient units*: 1 unit is the 40 cm width of a standard detector, so a 1 cm nodule has diameter
``1 / 40`` before the acquisition's scale and magnification are applied.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from localign.config import config_to_dict

#: Bumped whenever the same config and seed would give different files; part of the cache key.
GENERATOR_VERSION = "1.0.0"


@dataclass(frozen=True)
class BackgroundRates:
    """Per-study probabilities of each finding in an abnormal study, *before* the latent causes
    (heart failure, infection, intensive care) add their share. With ``cooccurrence=0`` these are
    the only rates and findings are drawn independently of each other."""

    consolidation: float = 0.06
    effusion: float = 0.08
    pneumothorax: float = 0.07
    atelectasis: float = 0.15
    nodule: float = 0.12
    cardiomegaly: float = 0.08
    edema: float = 0.04
    devices: float = 0.04


@dataclass(frozen=True)
class SynthCXRConfig:
    """Everything that determines a SynthCXR dataset (with :data:`GENERATOR_VERSION`).

    The defaults are the default demo dataset: 2000 studies of about 1400 patients, 3.2k JPEG
    images (2.3k frontal) at 256 px, plus a 600-image RSNA-style detection set. It costs about two
    CPU-minutes (about a minute on two free cores) and takes about 80 MB (file sizes; about 130 MB
    of disk blocks, as most of its ~10k files are small masks and reports).
    """

    # --- size ------------------------------------------------------------------------------------
    n_studies: int = 2000
    #: image height (``Rows``) in pixels; frontal widths are up to ``aspect_jitter`` narrower
    image_size: int = 256
    aspect_jitter: float = 0.1
    seed: int = 0
    #: train / validate / test fractions of *patients* (MIMIC-CXR splits by patient)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    #: mean number of studies per patient (1 + Poisson(mean - 1)); several studies share a patient
    studies_per_patient: float = 1.4

    # --- hidden disease state H_n ------------------------------------------------------------------
    #: share of studies drawn with no finding at all (ICU studies are rarely normal)
    normal_fraction: float = 0.35
    #: latent causes that couple findings: intensive care -> portable AP view + support devices
    #: + atelectasis; heart failure -> cardiomegaly + edema + (bilateral) effusion;
    #: infection -> consolidation reported as pneumonia
    p_icu: float = 0.3
    p_heart_failure: float = 0.2
    p_infection: float = 0.22
    #: strength of the latent causes (0: findings independent at their background rates; 1: default)
    cooccurrence: float = 1.0
    background: BackgroundRates = field(default_factory=BackgroundRates)

    # --- acquisition V^I -----------------------------------------------------------------------
    #: share of non-ICU studies with a lateral view next to the PA view
    p_lateral: float = 0.65
    #: share of studies with a second frontal image (repeat or portable follow-up)
    p_second_frontal: float = 0.12
    #: share of images whose ``ViewPosition`` is missing in the metadata (as in real MIMIC-CXR-JPG)
    missing_view_rate: float = 0.02
    #: multiplies the acquisition noise and the exposure/contrast/gamma jitter
    noise: float = 1.0
    #: multiplies the attenuation of every drawn finding (the calibration knob)
    finding_contrast: float = 1.0

    # --- reports V^R -----------------------------------------------------------------------------
    #: weights of the radiologist styles ``academic, terse, icu, narrative``
    style_weights: tuple[float, float, float, float] = (0.3, 0.3, 0.25, 0.15)
    #: share of reports with an IMPRESSION and no FINDINGS section
    impression_only_rate: float = 0.15
    #: share of reports with neither section (loaders must drop them)
    no_sections_rate: float = 0.02
    #: probability that the mildest finding of a kind is reported with a hedge (label -1);
    #: scaled down for more severe findings
    hedge_rate: float = 0.3
    #: per-study probability of a hedge about something that is not drawn ("cannot exclude early
    #: pneumonia"): a sentence with an uncertain label and no image correlate
    spurious_hedge_rate: float = 0.08

    # --- the other file sets -----------------------------------------------------------------------
    #: frontal images without edema that enter the edema-severity CSV, per image with edema
    edema_negatives_per_positive: float = 1.0
    #: number of RSNA-style detection images (new patients); 0 to skip
    n_rsna: int = 600
    #: share of RSNA images with pneumonia boxes (Target=1); real stage 2 has 0.22
    rsna_positive_fraction: float = 0.3
    #: RSNA image size (square, as in the challenge); ``None`` uses ``image_size``
    rsna_image_size: int | None = None
    jpeg_quality: int = 85

    def __post_init__(self) -> None:
        if self.n_studies < 1:
            raise ValueError(f"SynthCXRConfig.n_studies must be >= 1, got {self.n_studies}")
        if not 32 <= self.image_size <= 4096:
            raise ValueError(f"SynthCXRConfig.image_size must be in [32, 4096], got {self.image_size}")
        if self.rsna_image_size is not None and not 32 <= self.rsna_image_size <= 4096:
            raise ValueError(f"SynthCXRConfig.rsna_image_size must be in [32, 4096], got {self.rsna_image_size}")
        if len(self.split_fractions) != 3 or any(f < 0 for f in self.split_fractions) or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(f"SynthCXRConfig.split_fractions must be 3 non-negative numbers summing to 1, got {self.split_fractions}")
        if len(self.style_weights) != 4 or any(w < 0 for w in self.style_weights) or sum(self.style_weights) <= 0:
            raise ValueError(f"SynthCXRConfig.style_weights must be 4 non-negative weights, got {self.style_weights}")
        if self.studies_per_patient < 1:
            raise ValueError(f"SynthCXRConfig.studies_per_patient must be >= 1, got {self.studies_per_patient}")
        if self.n_rsna < 0:
            raise ValueError(f"SynthCXRConfig.n_rsna must be >= 0, got {self.n_rsna}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"SynthCXRConfig.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if not 0 <= self.aspect_jitter < 0.5:
            raise ValueError(f"SynthCXRConfig.aspect_jitter must be in [0, 0.5), got {self.aspect_jitter}")
        probabilities = {
            name: getattr(self, name)
            for name in (
                "normal_fraction", "p_icu", "p_heart_failure", "p_infection", "p_lateral", "p_second_frontal",
                "missing_view_rate", "impression_only_rate", "no_sections_rate", "hedge_rate",
                "spurious_hedge_rate", "rsna_positive_fraction",
            )
        }
        probabilities.update({f"background.{k}": v for k, v in config_to_dict(self.background).items()})
        for name, value in probabilities.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"SynthCXRConfig.{name} must be a probability in [0, 1], got {value}")
        if self.impression_only_rate + self.no_sections_rate > 1:
            raise ValueError("SynthCXRConfig.impression_only_rate + no_sections_rate must be <= 1")
        for name in ("cooccurrence", "noise", "finding_contrast", "edema_negatives_per_positive"):
            if getattr(self, name) < 0:
                raise ValueError(f"SynthCXRConfig.{name} must be >= 0, got {getattr(self, name)}")

    @property
    def rsna_size(self) -> int:
        return self.rsna_image_size or self.image_size


def config_hash(config: SynthCXRConfig) -> str:
    """A short stable hash of the config and :data:`GENERATOR_VERSION` (the demo cache key)."""
    payload = json.dumps({"version": GENERATOR_VERSION, "config": config_to_dict(config)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]
