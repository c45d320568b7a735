"""Findings (Liao et al.'s hidden region states H_n): what a study contains, and how each finding
is drawn into a frontal or lateral image together with its pixel mask.

A :class:`Finding` is defined in patient coordinates and carries a ``shape_seed``: every image of a
study draws the same lesion at the same anatomical place, each through its own acquisition.
Laterality is the *patient's* side; in a frontal image the patient's right lies on the viewer's
left (see :mod:`localign.data.synthcxr.anatomy`).

Co-occurrence comes from three latent causes per study (intensive care, heart failure, infection),
each raising the probability of the findings it explains; ``SynthCXRConfig.cooccurrence`` scales
them, 0 leaving the findings independent at their background rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from localign.data.synthcxr.anatomy import (
    CM_PER_UNIT,
    SIDE_SIGN,
    SIDES,
    Acquisition,
    Anatomy,
    Frame,
    LateralGeometry,
    smooth_noise,
)
from localign.data.synthcxr.config import SynthCXRConfig

KINDS = ("consolidation", "effusion", "pneumothorax", "atelectasis", "nodule", "cardiomegaly", "edema", "device")
DEVICE_TYPES = ("ett", "enteric", "central_line", "pacemaker")

#: severity word of each grade (1..3) per finding kind; edema grade = the edema-severity score
SEVERITY_WORDS = {
    "consolidation": ("mild", "moderate", "severe"),
    "effusion": ("small", "moderate", "large"),
    "pneumothorax": ("small", "moderate", "large"),
    "atelectasis": ("mild", "moderate", "severe"),
    "nodule": ("small", "medium", "mass"),
    "cardiomegaly": ("mild", "moderate", "severe"),
    "edema": ("mild", "moderate", "severe"),
}

#: transverse heart diameter relative to the patient's normal heart, per cardiomegaly grade
_HEART_FACTOR = {1: (1.1, 1.2), 2: (1.22, 1.32), 3: (1.34, 1.48)}


@dataclass(frozen=True)
class Finding:
    """One drawn finding instance of a study.

    ``laterality`` is the patient's side: "right", "left", "bilateral" or "" (midline devices,
    the heart). ``zone``: upper/middle/lower/apex/base/lateral/retrocardiac/perihilar for the lungs,
    "cardiac" for the heart, the tip position for tubes and lines. ``certainty`` is how the report
    states it: 1 asserted, -1 hedged.
    """

    kind: str
    laterality: str
    zone: str
    grade: int
    shape_seed: int
    size_cm: float = 0.0  # nodule diameter; ETT tip above the carina; pneumothorax rim width
    subtype: str = ""  # consolidation: "pneumonia" or ""; atelectasis: plate/bibasilar/retrocardiac; device type
    certainty: int = 1

    @property
    def severity(self) -> str:
        if self.kind == "device":
            return ""
        return SEVERITY_WORDS[self.kind][self.grade - 1]

    @property
    def heart_factor(self) -> float:
        """Heart enlargement this finding causes (1 unless it is cardiomegaly)."""
        if self.kind != "cardiomegaly":
            return 1.0
        lo, hi = _HEART_FACTOR[self.grade]
        return float(np.random.default_rng(self.shape_seed).uniform(lo, hi))

    @property
    def sides(self) -> tuple[str, ...]:
        return SIDES if self.laterality == "bilateral" else (self.laterality,)


@dataclass(frozen=True)
class StudyState:
    """The hidden state of one study: latent causes and the drawn findings."""

    icu: bool
    heart_failure: bool
    infection: bool
    findings: tuple[Finding, ...]

    @property
    def normal(self) -> bool:
        return not self.findings

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def edema_grade(self) -> int:
        return max((f.grade for f in self.findings if f.kind == "edema"), default=0)

    def heart_factor(self) -> float:
        return max((f.heart_factor for f in self.findings), default=1.0)


def _pick(rng: np.random.Generator, options: tuple, weights: tuple[float, ...]) -> object:
    p = np.asarray(weights, dtype=float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def _grade(rng: np.random.Generator, weights: tuple[float, ...]) -> int:
    return int(_pick(rng, (1, 2, 3), weights))


def _certainty(rng: np.random.Generator, cfg: SynthCXRConfig, grade: int) -> int:
    p = cfg.hedge_rate * {1: 1.0, 2: 0.25, 3: 0.05}[grade]
    return -1 if rng.random() < p else 1


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def sample_study_state(cfg: SynthCXRConfig, rng: np.random.Generator) -> StudyState:
    """Draw the hidden state of one study (latent causes and findings)."""
    s = cfg.cooccurrence
    bg = cfg.background
    icu = bool(rng.random() < cfg.p_icu)
    heart_failure = bool(rng.random() < cfg.p_heart_failure)
    infection = bool(rng.random() < cfg.p_infection)
    normal_p = cfg.normal_fraction * (0.3 if icu and s > 0 else 1.0)
    if rng.random() < normal_p:
        return StudyState(icu, False, False, ())
    for _ in range(50):
        findings = _sample_findings(cfg, rng, icu, heart_failure, infection, s, bg)
        if findings:
            return StudyState(icu, heart_failure, infection, tuple(findings))
    # the rates are so low that an abnormal study drew nothing 50 times: record it as normal
    return StudyState(icu, False, False, ())


def _sample_findings(cfg, rng, icu, heart_failure, infection, s, bg) -> list[Finding]:
    out: list[Finding] = []
    # devices first: intensive care patients carry tubes and lines
    if rng.random() < min(1.0, bg.devices + s * icu * 0.8):
        if icu and s > 0:
            wanted = {"ett": 0.55, "enteric": 0.55, "central_line": 0.6, "pacemaker": 0.08}
        else:
            wanted = {"ett": 0.1, "enteric": 0.15, "central_line": 0.5, "pacemaker": 0.5}
        types = [t for t in DEVICE_TYPES if rng.random() < wanted[t]] or [str(_pick(rng, DEVICE_TYPES, tuple(wanted.values())))]
        for t in types:
            if t == "ett":
                out.append(Finding("device", "", "trachea", 0, _seed(rng), size_cm=round(float(rng.uniform(2.0, 7.0)), 1), subtype="ett"))
            elif t == "enteric":
                out.append(Finding("device", "", "stomach", 0, _seed(rng), subtype="enteric"))
            elif t == "central_line":
                side = str(_pick(rng, ("right", "left"), (0.7, 0.3)))
                tip = str(_pick(rng, ("mid SVC", "lower SVC", "cavoatrial junction"), (0.4, 0.35, 0.25)))
                out.append(Finding("device", side, tip, 0, _seed(rng), subtype="central_line"))
            else:
                side = str(_pick(rng, ("left", "right"), (0.85, 0.15)))
                out.append(Finding("device", side, "chest wall", 0, _seed(rng), subtype="pacemaker"))
    has_line = any(f.subtype == "central_line" for f in out)
    if rng.random() < min(1.0, bg.cardiomegaly + s * heart_failure * 0.7):
        g = _grade(rng, (0.45, 0.35, 0.2))
        out.append(Finding("cardiomegaly", "", "cardiac", g, _seed(rng), certainty=_certainty(rng, cfg, g)))
    if rng.random() < min(1.0, bg.edema + s * heart_failure * 0.85):
        g = _grade(rng, (0.35, 0.4, 0.25) if heart_failure else (0.6, 0.3, 0.1))
        out.append(Finding("edema", "bilateral", "perihilar", g, _seed(rng), certainty=_certainty(rng, cfg, g)))
    if rng.random() < min(1.0, bg.effusion + s * (heart_failure * 0.5 + infection * 0.12 + icu * 0.1)):
        lat = str(_pick(rng, ("bilateral", "right", "left"), (0.6, 0.3, 0.1) if heart_failure else (0.15, 0.45, 0.4)))
        g = _grade(rng, (0.5, 0.35, 0.15))
        out.append(Finding("effusion", lat, "base", g, _seed(rng), certainty=_certainty(rng, cfg, g)))
    n_cons = 0
    if rng.random() < min(1.0, bg.consolidation + s * infection * 0.95):
        n_cons = 2 if rng.random() < 0.15 else 1
    for _ in range(n_cons):
        lat = str(_pick(rng, ("right", "left", "bilateral"), (0.45, 0.37, 0.18)))
        zone = "lower" if lat == "bilateral" else str(_pick(rng, ("lower", "middle", "upper"), (0.55, 0.25, 0.2)))
        if any(f.kind == "consolidation" and f.zone == zone and (f.laterality == lat or "bilateral" in (f.laterality, lat)) for f in out):
            continue
        g = _grade(rng, (0.4, 0.4, 0.2))
        cause = "pneumonia" if (infection and s > 0) or rng.random() < 0.25 else ""
        out.append(Finding("consolidation", lat, zone, g, _seed(rng), subtype=cause, certainty=_certainty(rng, cfg, g)))
    if rng.random() < min(1.0, bg.atelectasis + s * icu * 0.25):
        sub = str(_pick(rng, ("plate", "bibasilar", "retrocardiac"), (0.45, 0.35, 0.2)))
        lat = {"plate": str(_pick(rng, ("right", "left"), (0.5, 0.5))), "bibasilar": "bilateral", "retrocardiac": "left"}[sub]
        zone = "retrocardiac" if sub == "retrocardiac" else "base"
        g = _grade(rng, (0.6, 0.35, 0.05))
        out.append(Finding("atelectasis", lat, zone, g, _seed(rng), subtype=sub, certainty=_certainty(rng, cfg, g)))
    if rng.random() < bg.nodule:
        size = float(np.clip(np.exp(rng.normal(np.log(2.2), 0.4)), 0.8, 6.0))
        size = round(size, 1)
        g = 1 if size < 1.5 else 2 if size < 3.0 else 3
        lat = str(_pick(rng, ("right", "left"), (0.55, 0.45)))
        zone = str(_pick(rng, ("upper", "middle", "lower"), (0.45, 0.3, 0.25)))
        out.append(Finding("nodule", lat, zone, g, _seed(rng), size_cm=size, certainty=_certainty(rng, cfg, g)))
    if rng.random() < min(1.0, bg.pneumothorax + s * has_line * 0.12):
        lat = str(_pick(rng, ("right", "left"), (0.5, 0.5)))
        zone = str(_pick(rng, ("apex", "lateral"), (0.6, 0.4)))
        g = _grade(rng, (0.5, 0.35, 0.15))
        rim_cm = round(float(rng.uniform(*{1: (0.7, 1.1), 2: (1.4, 2.0), 3: (2.8, 4.0)}[g])), 1)
        out.append(Finding("pneumothorax", lat, zone, g, _seed(rng), size_cm=rim_cm, certainty=_certainty(rng, cfg, g)))
    return out


# --- drawing ---------------------------------------------------------------------------------------


@dataclass
class Layer:
    """What one finding adds to one image: attenuation ``delta`` [H, W], its binary ``mask`` [H, W]
    and, for a pneumothorax, where the lung markings vanish."""

    delta: np.ndarray
    mask: np.ndarray
    clears_markings: np.ndarray | None = None


def draw_finding(f: Finding, frame: Frame, rng: np.random.Generator, contrast: float = 1.0) -> Layer:
    """Draw one finding into a frontal frame. ``rng`` is the image's stream (texture only); the
    finding's geometry comes from its ``shape_seed``."""
    draw = {
        "consolidation": _draw_consolidation,
        "effusion": _draw_effusion,
        "pneumothorax": _draw_pneumothorax,
        "atelectasis": _draw_atelectasis,
        "nodule": _draw_nodule,
        "cardiomegaly": _draw_cardiomegaly,
        "edema": _draw_edema,
        "device": _draw_device,
    }
    if f.kind not in draw:
        raise ValueError(f"unknown finding kind {f.kind!r}; expected one of {KINDS}")
    layer = draw[f.kind](f, frame, np.random.default_rng(f.shape_seed), rng)
    if f.kind not in ("device", "cardiomegaly"):
        layer.delta *= np.float32(contrast)
    return layer


def _lung_point(frame: Frame, side: str, zone: str, geo: np.random.Generator, margin: float) -> tuple[float, float]:
    """A point inside the lung zone of one side (patient coordinates), away from the borders and,
    on the left, lateral to the heart when there is room."""
    th = frame.thorax
    v0, v1 = th.zone_v(side, zone)
    v = float(geo.uniform(v0, v1))
    medial, lateral = th.lung_edges(v, side)
    medial, lateral = float(medial), float(lateral)
    if side == "left" and v > th.heart_v - 0.5 * th.heart_height:
        heart_edge = th.heart_u - 0.5 + 0.62 * th.heart_width
        if heart_edge < lateral - 0.06:
            medial = max(medial, heart_edge)
    lo, hi = medial + margin, lateral - margin
    d = float(geo.uniform(lo, hi)) if hi > lo else 0.5 * (medial + lateral)
    return 0.5 + SIDE_SIGN[side] * d, v


def _blob(frame: Frame, u: float, v: float, radius: float, geo: np.random.Generator, lobes: int = 4) -> np.ndarray:
    """A soft lobulated blob in [0, 1], ``[H, W]``."""
    acc = np.zeros_like(frame.U)
    for _ in range(lobes):
        cu, cv = u + geo.normal(0, 0.45 * radius), v + geo.normal(0, 0.45 * radius)
        r = radius * geo.uniform(0.55, 0.9)
        acc += np.exp(-((frame.U - cu) ** 2 + (frame.V - cv) ** 2) / (2 * r * r))
    return 1.0 - np.exp(-1.6 * acc)


def _draw_consolidation(f: Finding, frame: Frame, geo: np.random.Generator, rng: np.random.Generator) -> Layer:
    radius = {1: (0.03, 0.045), 2: (0.045, 0.065), 3: (0.065, 0.09)}[f.grade]
    amp = {1: 0.17, 2: 0.27, 3: 0.4}[f.grade] * geo.uniform(0.85, 1.15)
    delta = np.zeros_like(frame.U)
    mask = np.zeros(frame.U.shape, bool)
    patchy = 0.8 + 0.2 * smooth_noise(rng, frame.height, frame.width, max(2.0, frame.height / 40))
    for side in f.sides:
        zone = "lower" if f.zone == "base" else f.zone
        r = geo.uniform(*radius)
        u, v = _lung_point(frame, side, zone, geo, margin=0.6 * r)
        field = _blob(frame, u, v, r, geo) * frame.lung_field[side]
        delta += amp * field * patchy
        mask |= field > 0.5
    return Layer(delta.astype(np.float32), mask)


def _draw_effusion(f: Finding, frame: Frame, geo: np.random.Generator, rng: np.random.Generator) -> Layer:
    th = frame.thorax
    a = th.anatomy
    delta = np.zeros_like(frame.U)
    mask = np.zeros(frame.U.shape, bool)
    layering = frame.acquisition.view == "AP" and frame.acquisition.supine
    for side in f.sides:
        height = geo.uniform(*{1: (0.03, 0.05), 2: (0.12, 0.18), 3: (0.24, 0.34)}[f.grade])
        field = frame.lung_field[side]
        r = np.clip(SIDE_SIGN[side] * (frame.U - 0.5) / a.half_width, 0.0, 1.0)
        surface = th.costophrenic_v(side) - height * (0.55 + 0.45 * r**2)  # the meniscus climbs laterally
        fluid = np.clip((frame.V - surface) / 0.02, 0.0, 1.0) * field
        if layering:
            # supine: fluid layers posteriorly, a veil over the lower hemithorax plus a flatter meniscus
            t = np.clip((frame.V - (a.apex + 0.3 * (th.dome(side) - a.apex))) / (0.7 * (th.dome(side) - a.apex)), 0.0, 1.0)
            veil = (0.12 + 0.1 * f.grade) * t**1.5 * field
            fluid = np.maximum(0.6 * fluid, veil / 0.6)
        # fluid replaces aerated lung; behind the heart it only fills the retrocardiac lucency
        delta += 0.6 * fluid * frame.lung[side] + 0.2 * fluid * (frame.heart & (side == "left"))
        mask |= (fluid > 0.5) & (frame.lung[side] | (frame.heart & (side == "left")))
    return Layer(delta.astype(np.float32), mask)


def _draw_pneumothorax(f: Finding, frame: Frame, geo: np.random.Generator, rng: np.random.Generator) -> Layer:
    th = frame.thorax
    side = f.laterality
    depth = f.size_cm / CM_PER_UNIT  # the rim of air the report measures
    if f.zone == "apex":
        lateral_inset, apex_inset = 0.5 * depth, depth
        limit = frame.V < th.anatomy.apex + 0.12 + 2.0 * depth
    else:
        lateral_inset, apex_inset = depth, 0.6 * depth
        limit = frame.V < th.dome(side) - 0.04
    line_w = 0.005
    field = th.in_lung_field(frame.U, frame.V, side)
    collapsed = th.in_lung_field(frame.U, frame.V, side, lateral_inset, apex_inset)
    inner = th.in_lung_field(frame.U, frame.V, side, lateral_inset + line_w, apex_inset + line_w)
    region = field & ~collapsed & limit
    line = collapsed & ~inner & limit
    # the visceral pleural line only shows where it borders the air rim
    delta = -0.1 * region + 0.2 * line
    return Layer(delta.astype(np.float32), region | line, clears_markings=region)


def _draw_atelectasis(f: Finding, frame: Frame, geo: np.random.Generator, rng: np.random.Generator) -> Layer:
    th = frame.thorax
    delta = np.zeros_like(frame.U)
    mask = np.zeros(frame.U.shape, bool)
    amp = {1: 0.36, 2: 0.46, 3: 0.55}[f.grade] * geo.uniform(0.85, 1.15)
    if f.subtype == "retrocardiac":
        region = frame.lung_field["left"] & frame.heart & (frame.V > th.heart_v - 0.02)
        soft = np.clip((frame.V - (th.heart_v - 0.02)) / 0.04, 0.0, 1.0) * region
        delta += amp * soft
        return Layer(delta.astype(np.float32), soft > 0.5)
    thickness = {1: 0.014, 2: 0.019, 3: 0.025}[f.grade]
    for side in f.sides:
        u, v = _lung_point(frame, side, "base", geo, margin=0.05)
        angle = np.deg2rad(geo.uniform(-15, 15)) * SIDE_SIGN[side]
        length = geo.uniform(0.12, 0.2)
        du, dv = frame.U - u, frame.V - v
        along = du * np.cos(angle) + dv * np.sin(angle)
        across = -du * np.sin(angle) + dv * np.cos(angle)
        band = np.exp(-((across / thickness) ** 2)) * np.sqrt(np.clip(1.0 - (2 * along / length) ** 2, 0.0, 1.0))
        band = band * frame.lung_field[side]
        delta += amp * band
        mask |= band > 0.35
    return Layer(delta.astype(np.float32), mask)


def _draw_nodule(f: Finding, frame: Frame, geo: np.random.Generator, rng: np.random.Generator) -> Layer:
    radius = 0.5 * f.size_cm / CM_PER_UNIT
    u, v = _lung_point(frame, f.laterality, f.zone, geo, margin=radius + 0.01)
    dist2 = ((frame.U - u) ** 2 + (frame.V - v) ** 2) / radius**2
    sphere = np.sqrt(np.clip(1.0 - dist2, 0.0, 1.0))  # projected thickness of a sphere
    amp = (0.3 + 0.1 * min(f.size_cm / 3.0, 1.0)) * geo.uniform(0.85, 1.15)
    return Layer((amp * sphere).astype(np.float32), dist2 < 1.0)


def _draw_cardiomegaly(f: Finding, frame: Frame, geo: np.random.Generator, rng: np.random.Generator) -> Layer:
    # the enlarged heart is part of the frame's anatomy (Thorax.build with the heart factor)
    return Layer(np.zeros_like(frame.U), frame.heart.copy())


def _draw_edema(f: Finding, frame: Frame, geo: np.random.Generator, rng: np.random.Generator) -> Layer:
    th = frame.thorax
    amp = {1: 0.07, 2: 0.15, 3: 0.28}[f.grade] * geo.uniform(0.85, 1.15)
    sigma = 0.11 + 0.025 * f.grade
    texture = 0.75 + 0.25 * smooth_noise(rng, frame.height, frame.width, max(2.0, frame.height / 30))
    fields = frame.lung_field["right"] | frame.lung_field["left"]
    haze = np.zeros_like(frame.U)
    for side in SIDES:
        hu, hv = th.hilum(side)
        haze = np.maximum(haze, np.exp(-(((frame.U - hu) / sigma) ** 2 + ((frame.V - hv) / (1.4 * sigma)) ** 2)))
    delta = amp * haze * texture * fields
    if f.grade >= 2:
        # Kerley B lines: short horizontal septal lines at the lateral lung bases
        a = th.anatomy
        d = np.abs(frame.U - 0.5)
        lower = frame.V > a.apex + 0.6 * (th.dome_right - a.apex)
        periphery = d > 0.8 * a.half_width
        lines = np.abs(((frame.V - a.apex) / 0.016) % 1.0 - 0.5) < 0.12
        dashes = smooth_noise(rng, frame.height, frame.width, max(2.0, frame.height / 25)) > 0.3
        delta += 0.05 * f.grade * (lines & lower & periphery & fields & dashes)
    return Layer(delta.astype(np.float32), (haze > 0.45) & fields)


def _catmull_rom(points: list[tuple[float, float]], per_segment: int = 6) -> np.ndarray:
    """A smooth curve through ``points`` (``[N, 2]`` in patient units)."""
    p = np.asarray(points, dtype=np.float64)
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = []
    for i in range(1, len(p) - 2):
        t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    out.append(p[-2][None, :])
    return np.vstack(out)


def _to_pixels(uv: np.ndarray, acq: Acquisition, height: int) -> np.ndarray:
    """Patient coordinates ``[N, 2]`` -> fractional pixel ``(col, row)`` ``[N, 2]`` (inverse of
    :func:`~localign.data.synthcxr.anatomy.patient_grid`, up to the width offset added by the caller)."""
    theta = np.deg2rad(acq.rotation_deg)
    c, s = np.cos(theta), np.sin(theta)
    pu = (uv[:, 0] - 0.5 + acq.shift_u) * acq.scale
    pv = (uv[:, 1] - 0.5 + acq.shift_v) * acq.scale
    x = c * pu - s * pv
    y = s * pu + c * pv
    return np.stack([x * height, y * height], axis=1)


def polyline_distance(frame_U: np.ndarray, frame_V: np.ndarray, acq: Acquisition, curve: np.ndarray, reach: float) -> np.ndarray:
    """Distance (patient units) from every pixel to a polyline ``curve`` ``[N, 2]``; pixels farther
    than ``reach`` are left at ``reach``. Each segment is evaluated only in its own pixel box."""
    height, width = frame_U.shape
    out = np.full(frame_U.shape, reach, dtype=np.float32)
    px = _to_pixels(curve, acq, height)
    px[:, 0] += width / 2.0 - 0.5
    px[:, 1] += height / 2.0 - 0.5
    margin = reach * acq.scale * height + 2
    for i in range(len(curve) - 1):
        (c0, r0), (c1, r1) = px[i], px[i + 1]
        rlo, rhi = int(max(0, np.floor(min(r0, r1) - margin))), int(min(height, np.ceil(max(r0, r1) + margin) + 1))
        clo, chi = int(max(0, np.floor(min(c0, c1) - margin))), int(min(width, np.ceil(max(c0, c1) + margin) + 1))
        if rlo >= rhi or clo >= chi:
            continue
        U, V = frame_U[rlo:rhi, clo:chi], frame_V[rlo:rhi, clo:chi]
        (u0, v0), (u1, v1) = curve[i], curve[i + 1]
        du, dv = u1 - u0, v1 - v0
        t = np.clip(((U - u0) * du + (V - v0) * dv) / max(du * du + dv * dv, 1e-12), 0.0, 1.0)
        dist = np.hypot(U - (u0 + t * du), V - (v0 + t * dv))
        np.minimum(out[rlo:rhi, clo:chi], dist, out=out[rlo:rhi, clo:chi])
    return out


def device_paths(f: Finding, anatomy: Anatomy, carina: float, heart: tuple[float, float], dome_left: float) -> list[list[tuple[float, float]]]:
    """The control points of a device's tubes/leads in patient units (frontal view)."""
    geo = np.random.default_rng(f.shape_seed)
    c = carina
    s = SIDE_SIGN.get(f.laterality, 1.0)
    if f.subtype == "ett":
        tip = c - f.size_cm / CM_PER_UNIT
        return [[(0.497, -0.25), (0.497 + geo.normal(0, 0.002), 0.1), (0.497, tip)]]
    if f.subtype == "enteric":
        return [[(0.49, -0.25), (0.492, 0.15), (0.515, c + 0.12), (0.535, dome_left - 0.01), (0.6, dome_left + 0.05), (0.65 + geo.uniform(-0.01, 0.02), dome_left + 0.075)]]
    if f.subtype == "central_line":
        tip_v = c + {"mid SVC": 0.03, "lower SVC": 0.06, "cavoatrial junction": 0.095}[f.zone] + geo.normal(0, 0.005)
        svc_u = 0.5 - 0.045
        if f.laterality == "right":
            return [[(0.5 - 0.1, -0.2), (0.5 - 0.085, 0.1), (0.5 - 0.06, 0.2), (svc_u, c - 0.02), (svc_u, tip_v)]]
        return [[(0.5 + 0.11, -0.2), (0.5 + 0.09, 0.12), (0.5 + 0.05, 0.2), (0.5 - 0.01, c - 0.05), (svc_u, c - 0.01), (svc_u, tip_v)]]
    if f.subtype == "pacemaker":
        box_u, box_v = 0.5 + s * 0.24, anatomy.clavicle_v + 0.06
        hu, hv = heart
        ra = (hu - 0.09, hv - 0.06)
        rv = (hu + 0.04 + geo.normal(0, 0.01), hv + 0.07)
        entry = [(box_u - s * 0.02, box_v), (0.5 + s * 0.1, box_v + 0.03), (0.5 - 0.04, c + 0.02), (0.5 - 0.045, c + 0.1)]
        return [entry + [ra], entry + [(hu - 0.05, hv + 0.02), rv]]
    raise ValueError(f"unknown device type {f.subtype!r}; expected one of {DEVICE_TYPES}")


def _draw_device(f: Finding, frame: Frame, geo: np.random.Generator, rng: np.random.Generator) -> Layer:
    th = frame.thorax
    acq = frame.acquisition
    reach = 0.02
    dist = np.full(frame.U.shape, reach, dtype=np.float32)
    for points in device_paths(f, th.anatomy, th.anatomy.carina, (th.heart_u, th.heart_v), th.dome_left):
        curve = _catmull_rom(points)
        np.minimum(dist, polyline_distance(frame.U, frame.V, acq, curve, reach), out=dist)
    stripe = 0.0022 + 0.4 / frame.px_per_unit  # at least ~1 px wide so small images keep the device
    delta = 1.2 * np.exp(-((dist / stripe) ** 2))
    if f.subtype == "ett":
        delta += 0.08 * (dist < 0.011)  # the tube wall around the radiopaque stripe
    mask = dist < max(0.006, 1.0 / frame.px_per_unit)
    if f.subtype == "pacemaker":
        box_u, box_v = 0.5 + SIDE_SIGN[f.laterality] * 0.24, th.anatomy.clavicle_v + 0.06
        box = (np.abs(frame.U - box_u) < 0.035) & (np.abs(frame.V - box_v) < 0.025)
        delta += 1.6 * box
        mask |= box
    return Layer(delta.astype(np.float32), mask)


# --- lateral views ---------------------------------------------------------------------------------


def lateral_delta(f: Finding, U: np.ndarray, V: np.ndarray, geo_lat: LateralGeometry, anatomy: Anatomy, rng: np.random.Generator, contrast: float = 1.0) -> np.ndarray:
    """What a finding adds to a lateral view ``[H, W]`` (no mask: both lungs superimpose, and the
    frontal-only filter drops lateral images from every localized task)."""
    geo = np.random.default_rng(f.shape_seed + 1)
    g = geo_lat
    lung = g.lung(U, V)
    span = g.back - g.front
    zone_v = {"upper": 0.3, "middle": 0.5, "lower": 0.72, "base": 0.85, "apex": 0.12, "retrocardiac": 0.8, "perihilar": 0.45}
    if f.kind in ("consolidation", "nodule"):
        out = np.zeros_like(U)
        for _ in f.sides:
            v = g.apex + zone_v.get(f.zone, 0.5) * (g.dome - g.apex)
            u = g.front + geo.uniform(0.3, 0.75) * span
            if f.kind == "nodule":
                r = 0.5 * f.size_cm / CM_PER_UNIT
                out += (0.26 + 0.1 * min(f.size_cm / 3, 1)) * np.sqrt(np.clip(1 - ((U - u) ** 2 + (V - v) ** 2) / r**2, 0, 1))
            else:
                r = 0.03 + 0.015 * f.grade
                out += {1: 0.17, 2: 0.27, 3: 0.4}[f.grade] * np.exp(-((U - u) ** 2 + (V - v) ** 2) / (2 * r * r)) * lung
        return contrast * out
    if f.kind == "effusion":
        h = {1: 0.035, 2: 0.1, 3: 0.2}[f.grade] * (1.4 if f.laterality == "bilateral" else 1.0)
        x = np.clip((U - g.front) / span, 0.0, 1.0)
        surface = g.bottom(U) - h * (0.3 + 0.7 * x**2)
        return contrast * 0.55 * np.clip((V - surface) / 0.02, 0.0, 1.0) * lung
    if f.kind == "atelectasis":
        v = g.dome - 0.06
        return contrast * 0.25 * np.exp(-(((V - v - 0.1 * (U - 0.5)) / 0.01) ** 2)) * lung * (np.abs(U - 0.55) < 0.12)
    if f.kind == "edema":
        hv = anatomy.carina + 0.07
        haze = np.exp(-(((U - 0.5) / 0.15) ** 2 + ((V - hv) / 0.18) ** 2))
        return contrast * {1: 0.07, 2: 0.15, 3: 0.28}[f.grade] * haze * lung
    if f.kind == "device":
        pts = {
            "ett": [(0.48, -0.2), (0.5, 0.15), (0.53, anatomy.carina - f.size_cm / CM_PER_UNIT)],
            "enteric": [(0.52, -0.2), (0.56, 0.3), (0.58, g.dome), (0.5, g.dome + 0.08)],
            "central_line": [(0.55, -0.2), (0.45, 0.2), (0.42, anatomy.carina + 0.06)],
            "pacemaker": [(g.front + 0.02, 0.2), (0.45, 0.35), (g.heart_u + 0.05, g.heart_v + 0.05)],
        }[f.subtype]
        curve = _catmull_rom(pts)
        out = np.zeros_like(U)
        for (u0, v0), (u1, v1) in zip(curve[:-1], curve[1:]):
            du, dv = u1 - u0, v1 - v0
            t = np.clip(((U - u0) * du + (V - v0) * dv) / max(du * du + dv * dv, 1e-12), 0, 1)
            out = np.maximum(out, np.exp(-((np.hypot(U - (u0 + t * du), V - (v0 + t * dv)) / 0.004) ** 2)))
        if f.subtype == "pacemaker":
            out = np.maximum(out, 1.3 * ((np.abs(U - (g.front + 0.01)) < 0.012) & (np.abs(V - 0.2) < 0.03)))
        return 1.2 * out
    return np.zeros_like(U)  # cardiomegaly: in the lateral geometry; pneumothorax: not seen laterally
