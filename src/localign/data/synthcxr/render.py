"""Composing one image: the patient's anatomy through one acquisition, plus the study's findings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from localign.data.synthcxr.anatomy import (
    Acquisition,
    Anatomy,
    Frame,
    LateralGeometry,
    frontal_attenuation,
    lateral_attenuation,
    make_frame,
    patient_grid,
    to_pixels,
)
from localign.data.synthcxr.findings import Finding, draw_finding, lateral_delta


@dataclass
class FrontalImage:
    """A rendered frontal image with one mask per finding (same order as the findings)."""

    pixels: np.ndarray  # [H, W] uint8
    masks: list[np.ndarray]  # each [H, W] bool
    frame: Frame


def render_frontal(
    anatomy: Anatomy,
    acq: Acquisition,
    findings: tuple[Finding, ...],
    height: int,
    width: int,
    rng: np.random.Generator,
    finding_contrast: float = 1.0,
) -> FrontalImage:
    """Draw a PA or AP image of a chest with ``findings``.

    :return: pixels ``[H, W]`` uint8, masks ``[H, W]`` bool per finding, and the frame (anatomy masks)
    """
    heart_factor = max((f.heart_factor for f in findings), default=1.0)
    frame = make_frame(height, width, anatomy, acq, heart_factor)
    A, markings = frontal_attenuation(frame, rng)
    masks = []
    for f in findings:
        layer = draw_finding(f, frame, rng, finding_contrast)
        A += layer.delta
        if layer.clears_markings is not None:
            markings = markings * ~layer.clears_markings
        masks.append(layer.mask)
    pixels = to_pixels(A + markings, acq, rng)
    return FrontalImage(pixels, masks, frame)


def render_lateral(
    anatomy: Anatomy,
    acq: Acquisition,
    findings: tuple[Finding, ...],
    size: int,
    rng: np.random.Generator,
    finding_contrast: float = 1.0,
) -> np.ndarray:
    """Draw a lateral image ``[size, size]`` uint8 of a chest with ``findings``."""
    heart_factor = max((f.heart_factor for f in findings), default=1.0)
    U, V = patient_grid(size, size, acq)
    geo = LateralGeometry.build(anatomy, acq, heart_factor)
    A = lateral_attenuation(U, V, geo, rng)
    for f in findings:
        A += lateral_delta(f, U, V, geo, anatomy, rng, finding_contrast)
    return to_pixels(A, acq, rng)
