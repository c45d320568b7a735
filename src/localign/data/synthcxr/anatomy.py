"""Anatomy and acquisition (Liao et al.'s nuisance V^I): patients, views, the thorax geometry and
the attenuation map of a normal chest, and the detector transfer that turns attenuation into pixels.

Coordinates
-----------
*Patient coordinates* ``(u, v)``: ``u`` runs from the viewer's left to the viewer's right of a
frontal image, ``v`` from head to feet; the midline is ``u = 0.5`` and the top of the field is
``v = 0``. One unit is 40 cm (a detector width). A frontal radiograph is displayed in the
radiological convention, as if facing the patient, so the patient's RIGHT lung lies at ``u < 0.5``
(the viewer's LEFT) and the heart bulges to ``u > 0.5`` (patient's left, viewer's right).

*Image coordinates*: pixel ``(row, col)`` of an ``H x W`` image. Each image has its own
acquisition: a rotation, shift and scale map image coordinates to patient coordinates
(:func:`patient_grid`), so every shape - anatomy, findings, their masks - is defined once in patient
coordinates and drawn consistently in every image of a study.

*Attenuation*: shapes add to a map ``A`` (0 = air, 1 = soft tissue, lungs ~0.3, bone > 1.2, metal
~2.5); :func:`to_pixels` applies the detector response ``1 - exp(-k A)`` and the per-image
exposure, contrast, gamma, blur and noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: centimetres per patient unit (the field of view of a standard 40 cm detector)
CM_PER_UNIT = 40.0

SIDES = ("right", "left")
#: sign of ``u - 0.5`` on each of the patient's sides in a frontal image (radiological convention)
SIDE_SIGN = {"right": -1.0, "left": 1.0}

#: codes of the anatomy label map written next to the finding masks (``<dicom_id>_anatomy.png``)
ANATOMY_CODES = {
    "background": 0,
    "soft_tissue": 1,
    "right_lung": 2,
    "left_lung": 3,
    "heart": 4,
    "mediastinum": 5,
    "abdomen": 6,
}

FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEWS = ("LATERAL", "LL")


@dataclass(frozen=True)
class Anatomy:
    """Per-patient anatomy in patient units; shared by every image of every study of one patient."""

    sex: str  # "M" or "F"
    half_width: float  # lateral extent of each lung from the midline
    apex: float  # v of the lung apices
    dome_right: float  # v of the right hemidiaphragm dome (the right dome sits higher)
    dome_left: float
    cp_depth: float  # depth of the costophrenic angles below the dome
    mediastinum_half_width: float
    heart_ratio: float  # cardiothoracic ratio of a normal heart in a PA view
    heart_shift: float  # how far the heart's centre lies to the patient's left
    carina: float  # v of the carina
    rib_spacing: float
    clavicle_v: float
    body_margin: float  # soft tissue outside the ribs
    rotation_deg: float  # habitual in-plane tilt of this patient on the detector
    shift_u: float
    shift_v: float
    scale: float  # body size relative to the field of view


@dataclass(frozen=True)
class Acquisition:
    """Per-image acquisition parameters (Liao et al.'s V^I)."""

    view: str  # "PA", "AP", "LATERAL" or "LL"
    supine: bool  # portable AP films are often supine: effusions layer, lung volumes are low
    rotation_deg: float
    shift_u: float
    shift_v: float
    scale: float  # patient units -> image heights
    heart_magnification: float  # AP projects the anterior heart larger
    inspiration_shift: float  # raises the domes in poor inspiration (AP)
    exposure: float
    contrast: float
    gamma: float
    noise_sigma: float
    blur_px: float
    heel: float  # left-right exposure gradient of the anode heel effect
    portable_marker: bool

    @property
    def frontal(self) -> bool:
        return self.view in FRONTAL_VIEWS


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy."""
    sex = "F" if rng.random() < 0.5 else "M"
    dome_right = rng.uniform(0.66, 0.72)
    return Anatomy(
        sex=sex,
        half_width=rng.uniform(0.33, 0.39) * (0.96 if sex == "F" else 1.0),
        apex=rng.uniform(0.11, 0.155),
        dome_right=dome_right,
        dome_left=dome_right + rng.uniform(0.01, 0.035),
        cp_depth=rng.uniform(0.05, 0.08),
        mediastinum_half_width=rng.uniform(0.048, 0.062),
        heart_ratio=rng.uniform(0.38, 0.49),
        heart_shift=rng.uniform(0.02, 0.045),
        carina=rng.uniform(0.31, 0.35),
        rib_spacing=rng.uniform(0.054, 0.062),
        clavicle_v=rng.uniform(0.125, 0.16),
        body_margin=rng.uniform(0.05, 0.1),
        rotation_deg=float(rng.normal(0.0, 1.5)),
        shift_u=float(rng.normal(0.0, 0.012)),
        shift_v=float(rng.normal(0.0, 0.012)),
        scale=rng.uniform(0.94, 1.06),
    )


def sample_acquisition(rng: np.random.Generator, anatomy: Anatomy, view: str, supine: bool, noise: float = 1.0, portable: bool = False) -> Acquisition:
    """Draw one image's acquisition. ``noise`` scales every jitter (0 gives a clean, centred image)."""
    if view not in FRONTAL_VIEWS + LATERAL_VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {FRONTAL_VIEWS + LATERAL_VIEWS}")
    ap = view == "AP"
    return Acquisition(
        view=view,
        supine=supine,
        rotation_deg=anatomy.rotation_deg + float(rng.normal(0.0, 1.5 if ap else 0.8)) * noise,
        shift_u=anatomy.shift_u + float(rng.normal(0.0, 0.008)) * noise,
        shift_v=anatomy.shift_v + float(rng.normal(0.0, 0.01)) * noise,
        scale=anatomy.scale * (rng.uniform(1.0, 1.06) if ap else 1.0),
        heart_magnification=rng.uniform(1.08, 1.16) if ap else 1.0,
        inspiration_shift=rng.uniform(0.02, 0.05) if ap else rng.uniform(-0.01, 0.015),
        exposure=float(rng.normal(0.0, 0.05)) * noise,
        contrast=float(np.exp(rng.normal(0.0, 0.1) * noise)),
        gamma=float(np.exp(rng.normal(0.0, 0.12) * noise)),
        noise_sigma=rng.uniform(0.012, 0.03 if ap else 0.022) * noise,
        blur_px=rng.uniform(0.4, 1.0),
        heel=float(rng.normal(0.0, 0.03)) * noise,
        portable_marker=portable,
    )


def image_shape(image_size: int, view: str, rng: np.random.Generator, aspect_jitter: float) -> tuple[int, int]:
    """``(H, W)`` of one image: frontal films are portrait (up to ``aspect_jitter`` narrower),
    laterals square. Widths are even so that centring is exact."""
    if view in LATERAL_VIEWS or aspect_jitter <= 0:
        return image_size, image_size
    width = int(round(image_size * (1.0 - rng.uniform(0.0, aspect_jitter)) / 2.0)) * 2
    return image_size, max(width, 16)


def patient_grid(height: int, width: int, acq: Acquisition) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates of every pixel centre.

    :return: ``U, V`` each ``[H, W]`` float32
    """
    y = (np.arange(height, dtype=np.float32) + 0.5 - height / 2.0) / height
    x = (np.arange(width, dtype=np.float32) + 0.5 - width / 2.0) / height
    theta = np.deg2rad(acq.rotation_deg)
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    X, Y = x[None, :], y[:, None]
    U = 0.5 + (c * X + s * Y) / acq.scale - acq.shift_u
    V = 0.5 + (-s * X + c * Y) / acq.scale - acq.shift_v
    return U.astype(np.float32), V.astype(np.float32)


@dataclass(frozen=True)
class Thorax:
    """The thorax geometry of one frontal image: the patient's anatomy, adjusted by the view
    (inspiration, magnification) and by the study's heart size."""

    anatomy: Anatomy
    dome_right: float
    dome_left: float
    heart_width: float  # transverse heart diameter in patient units
    heart_height: float
    heart_u: float
    heart_v: float

    @classmethod
    def build(cls, anatomy: Anatomy, acq: Acquisition, heart_factor: float = 1.0) -> Thorax:
        dome_r = anatomy.dome_right - acq.inspiration_shift
        dome_l = anatomy.dome_left - acq.inspiration_shift
        width = anatomy.heart_ratio * 2.0 * anatomy.half_width * heart_factor * acq.heart_magnification
        height = 0.3 * (0.75 + 0.25 * heart_factor) * acq.heart_magnification
        return cls(
            anatomy=anatomy,
            dome_right=dome_r,
            dome_left=dome_l,
            heart_width=width,
            heart_height=height,
            heart_u=0.5 + anatomy.heart_shift * (0.6 + 0.4 * heart_factor),
            heart_v=dome_r + 0.04 - 0.38 * height,
        )

    def dome(self, side: str) -> float:
        return self.dome_right if side == "right" else self.dome_left

    @property
    def half_width(self) -> float:
        return self.anatomy.half_width

    def lung_edges(self, v: np.ndarray | float, side: str) -> tuple[np.ndarray | float, np.ndarray | float]:
        """Medial and lateral lung borders (distance from the midline) at height ``v``."""
        a = self.anatomy
        t = np.clip((np.asarray(v) - a.apex) / (self.dome(side) - a.apex), 0.0, 1.0)
        lateral = a.half_width * (0.72 + 0.28 * np.sqrt(t))
        return a.mediastinum_half_width, lateral

    def lung_top(self, d: np.ndarray | float) -> np.ndarray | float:
        a = self.anatomy
        return a.apex + 0.55 * ((np.asarray(d) - 0.42 * a.half_width) / a.half_width) ** 2

    def lung_bottom(self, d: np.ndarray | float, side: str) -> np.ndarray | float:
        """The hemidiaphragm: highest at mid-lung, dipping into the sharp costophrenic angle laterally."""
        a = self.anatomy
        r = np.asarray(d) / a.half_width
        lateral_dip = a.cp_depth * np.clip((r - 0.35) / 0.65, 0.0, None) ** 2
        medial_dip = 0.035 * np.clip((0.35 - r) / 0.35, 0.0, None) ** 2
        return self.dome(side) + lateral_dip + medial_dip

    def costophrenic_v(self, side: str) -> float:
        return self.dome(side) + self.anatomy.cp_depth

    def in_lung_field(self, U: np.ndarray, V: np.ndarray, side: str, lateral_inset: float = 0.0, apex_inset: float = 0.0) -> np.ndarray:
        """The lung field of one side (ignoring heart and mediastinum), optionally shrunk away from
        the lateral chest wall and the apex (what remains of a lung with a pneumothorax)."""
        d = SIDE_SIGN[side] * (U - 0.5)
        medial, lateral = self.lung_edges(V, side)
        return (d > medial) & (d < lateral - lateral_inset) & (V > self.lung_top(d) + apex_inset) & (V < self.lung_bottom(d, side))

    def heart_mask(self, U: np.ndarray, V: np.ndarray) -> np.ndarray:
        right = 0.38 * self.heart_width
        left = 0.62 * self.heart_width
        a = np.where(U < self.heart_u, right, left)
        b = 0.5 * self.heart_height
        inside = ((U - self.heart_u) / a) ** 2 + ((V - self.heart_v) / b) ** 2 < 1.0
        return inside & (V < self.dome_left + 0.05)

    def mediastinum_mask(self, U: np.ndarray, V: np.ndarray) -> np.ndarray:
        a = self.anatomy
        widen = 1.0 + 0.6 * np.clip((V - 0.22) / 0.3, 0.0, 1.0)
        band = (np.abs(U - 0.503) < a.mediastinum_half_width * widen) & (V < self.heart_v + 0.02)
        knob = (U - (0.5 + a.mediastinum_half_width + 0.012)) ** 2 + (V - (a.carina - 0.05)) ** 2 < 0.027**2
        return band | knob

    def body_half_width(self, V: np.ndarray) -> np.ndarray:
        a = self.anatomy
        full = a.half_width + a.body_margin
        return 0.13 + (full - 0.13) * np.clip((V - 0.02) / 0.12, 0.0, 1.0) ** 0.6

    def hilum(self, side: str) -> tuple[float, float]:
        a = self.anatomy
        return 0.5 + SIDE_SIGN[side] * (a.mediastinum_half_width + 0.035), a.carina + (0.08 if side == "right" else 0.06)

    def zone_v(self, side: str, zone: str) -> tuple[float, float]:
        """The ``v`` range of a lung zone (upper/middle/lower thirds, apex, base)."""
        top, bottom = self.anatomy.apex, self.dome(side)
        third = (bottom - top) / 3.0
        ranges = {
            "apex": (top + 0.01, top + 0.6 * third),
            "upper": (top + 0.35 * third, top + third),
            "middle": (top + third, top + 2 * third),
            "lower": (top + 2 * third, bottom - 0.02),
            "base": (bottom - 0.6 * third, bottom - 0.01),
        }
        if zone not in ranges:
            raise ValueError(f"unknown lung zone {zone!r}; expected one of {sorted(ranges)}")
        return ranges[zone]


@dataclass
class Frame:
    """One frontal image being drawn: pixel grid in patient coordinates and the anatomy masks."""

    height: int
    width: int
    U: np.ndarray  # [H, W]
    V: np.ndarray  # [H, W]
    thorax: Thorax
    acquisition: Acquisition
    lung: dict[str, np.ndarray]  # side -> [H, W] bool, aerated lung outside heart/mediastinum
    lung_field: dict[str, np.ndarray]  # side -> [H, W] bool, whole lung field (incl. behind heart)
    heart: np.ndarray
    mediastinum: np.ndarray
    body: np.ndarray
    abdomen: np.ndarray
    extents: GridExtents

    @property
    def px_per_unit(self) -> float:
        return self.acquisition.scale * self.height

    def box(self, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice]:
        """Row and column slices covering every pixel with ``u0 <= u <= u1`` and ``v0 <= v <= v1``
        (a superset under rotation); local shapes are computed only there, for speed."""
        return self.extents.box(u0, u1, v0, v1)

    def label_map(self) -> np.ndarray:
        """Anatomy label map ``[H, W]`` uint8 with :data:`ANATOMY_CODES`."""
        out = np.zeros((self.height, self.width), np.uint8)
        out[self.body] = ANATOMY_CODES["soft_tissue"]
        out[self.abdomen] = ANATOMY_CODES["abdomen"]
        out[self.mediastinum] = ANATOMY_CODES["mediastinum"]
        out[self.heart] = ANATOMY_CODES["heart"]
        out[self.lung["right"]] = ANATOMY_CODES["right_lung"]
        out[self.lung["left"]] = ANATOMY_CODES["left_lung"]
        return out


@dataclass(frozen=True)
class GridExtents:
    """The range of ``v`` in every pixel row and of ``u`` in every pixel column of a grid."""

    row_vmin: np.ndarray  # [H]
    row_vmax: np.ndarray  # [H]
    col_umin: np.ndarray  # [W]
    col_umax: np.ndarray  # [W]

    @classmethod
    def of(cls, U: np.ndarray, V: np.ndarray) -> GridExtents:
        return cls(V.min(axis=1), V.max(axis=1), U.min(axis=0), U.max(axis=0))

    def box(self, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice]:
        """See :meth:`Frame.box`. Rows/columns are selected by their range of ``v``/``u``."""
        rows = np.flatnonzero((self.row_vmax >= v0) & (self.row_vmin <= v1))
        cols = np.flatnonzero((self.col_umax >= u0) & (self.col_umin <= u1))
        if rows.size == 0 or cols.size == 0:
            return slice(0, 0), slice(0, 0)
        return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _side_box(extents: GridExtents, thorax: Thorax, side: str) -> tuple[slice, slice]:
    a = thorax.anatomy
    lo, hi = (0.5 - a.half_width - 0.01, 0.5) if side == "right" else (0.5, 0.5 + a.half_width + 0.01)
    return extents.box(lo, hi, a.apex - 0.01, thorax.costophrenic_v(side) + 0.01)


def make_frame(height: int, width: int, anatomy: Anatomy, acq: Acquisition, heart_factor: float = 1.0) -> Frame:
    """Set up a frontal image: pixel grid, thorax geometry and anatomy masks."""
    if not acq.frontal:
        raise ValueError(f"make_frame draws frontal views only, got view {acq.view!r}")
    U, V = patient_grid(height, width, acq)
    extents = GridExtents.of(U, V)
    thorax = Thorax.build(anatomy, acq, heart_factor)
    shape = (height, width)
    heart = np.zeros(shape, bool)
    hb = extents.box(thorax.heart_u - 0.4 * thorax.heart_width, thorax.heart_u + 0.65 * thorax.heart_width, thorax.heart_v - 0.5 * thorax.heart_height, thorax.dome_left + 0.05)
    heart[hb] = thorax.heart_mask(U[hb], V[hb])
    mb = extents.box(0.5 - 2 * anatomy.mediastinum_half_width, 0.5 + 2 * anatomy.mediastinum_half_width + 0.04, -1.0, thorax.heart_v + 0.02)
    mediastinum = np.zeros(shape, bool)
    mediastinum[mb] = thorax.mediastinum_mask(U[mb], V[mb])
    mediastinum &= ~heart
    field, lung = {}, {}
    for side in SIDES:
        sb = _side_box(extents, thorax, side)
        field[side] = np.zeros(shape, bool)
        field[side][sb] = thorax.in_lung_field(U[sb], V[sb], side)
        lung[side] = field[side] & ~heart & ~mediastinum
    d = np.abs(U - 0.5)
    body = (d < thorax.body_half_width(V)) & (V > -0.2)
    below = V > np.where(U < 0.5, thorax.lung_bottom(d, "right"), thorax.lung_bottom(d, "left"))
    abdomen = body & below & (d < anatomy.half_width + 0.02) & ~heart
    return Frame(height, width, U, V, thorax, acq, lung, field, heart, mediastinum, body, abdomen, extents)


def _bump(distance: np.ndarray, half_width: float) -> np.ndarray:
    """A smooth bump profile: 1 on the centre line, 0 beyond ``half_width``."""
    return np.clip(1.0 - (distance / half_width) ** 2, 0.0, None)


def _interpolation_matrix(n_out: int, n_in: int, cell: float) -> np.ndarray:
    """``[n_out, n_in]`` weights that smoothly interpolate ``n_in`` control points spaced ``cell``
    output pixels apart (a Gaussian kernel of one cell, normalised per output pixel)."""
    centers = (np.arange(n_in, dtype=np.float32) - 1.0) * cell
    pos = np.arange(n_out, dtype=np.float32)[:, None]
    w = np.exp(-0.5 * ((pos - centers[None, :]) / (0.6 * cell)) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell_px: float) -> np.ndarray:
    """Band-limited noise ``[H, W]`` with features of about ``cell_px`` pixels, roughly unit variance.

    Coarse Gaussian noise on a grid of control points, interpolated by two small matrix products
    (much faster than ``scipy.ndimage.zoom`` at these sizes).
    """
    gh, gw = int(np.ceil(height / cell_px)) + 3, int(np.ceil(width / cell_px)) + 3
    coarse = rng.standard_normal((gh, gw), dtype=np.float32)
    fine = _interpolation_matrix(height, gh, cell_px) @ coarse @ _interpolation_matrix(width, gw, cell_px).T
    return fine * np.float32(1.0 / max(float(fine.std()), 1e-6))


def lung_markings(frame: Frame, rng: np.random.Generator) -> np.ndarray:
    """Vascular markings ``[H, W]`` in [0, 1]: radial branching lines from each hilum, fading to the
    periphery, broken up by fine noise."""
    wobble = smooth_noise(rng, frame.height, frame.width, max(3.0, frame.height / 12))
    grain = smooth_noise(rng, frame.height, frame.width, max(1.5, frame.height / 64))
    out = 0.12 * grain
    for side in SIDES:
        sb = _side_box(frame.extents, frame.thorax, side)
        U, V = frame.U[sb], frame.V[sb]
        hu, hv = frame.thorax.hilum(side)
        du, dv = U - hu, V - hv
        theta = np.arctan2(dv, np.abs(du))
        lines = 0.5 + 0.5 * np.cos(theta * 34.0 + 1.7 * wobble[sb] + rng.uniform(0, 6.28))
        lines = lines * lines
        lines = lines * lines * lines
        out[sb] += lines * np.exp(-np.sqrt(du * du + dv * dv) / 0.2) * frame.lung_field[side][sb]
    return np.clip(out, 0.0, 1.0)


def frontal_attenuation(frame: Frame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The attenuation of a normal chest in a frontal view.

    :return: ``(A, markings)``: ``A`` [H, W] float32 without the lung markings, and the markings
        term [H, W] that the caller adds (pneumothorax removes it where the lung has collapsed)
    """
    th = frame.thorax
    a = th.anatomy
    A = frame.body.astype(np.float32)
    A += 0.12 * frame.abdomen
    # aerated lung; behind the heart the left lower lobe still lets some air through
    lungs = frame.lung["right"] | frame.lung["left"]
    A -= 0.7 * lungs
    retro = frame.lung_field["left"] & frame.heart
    A -= 0.2 * retro
    A += 0.1 * frame.heart + 0.06 * frame.mediastinum
    # trachea and main bronchi, hila
    b = frame.box(0.45, 0.55, -1.0, a.carina)
    A[b] -= 0.28 * ((np.abs(frame.U[b] - 0.497) < 0.011) & (frame.V[b] < a.carina))
    for side in SIDES:
        hu, hv = th.hilum(side)
        s = SIDE_SIGN[side]
        b = frame.box(min(0.497, hu) - 0.08, max(0.497, hu) + 0.08, a.carina - 0.08, hv + 0.1)
        U, V = frame.U[b], frame.V[b]
        # main bronchus: from the carina down-laterally towards the hilum
        t = np.clip(((U - 0.497) * s * 0.06 + (V - a.carina) * 0.05) / (0.06**2 + 0.05**2), 0.0, 1.0)
        dist = np.hypot(U - (0.497 + s * 0.06 * t), V - (a.carina + 0.05 * t))
        A[b] -= 0.16 * (dist < 0.008)
        A[b] += 0.12 * np.exp(-((U - hu) ** 2 + (V - hv) ** 2) / (2 * 0.025**2))
    # spine with vertebral bodies and discs
    b = frame.box(0.46, 0.54, -1.0, 2.0)
    spine = _bump(np.abs(frame.U[b] - 0.5), 0.034)
    vertebrae = 0.75 + 0.25 * np.cos(2 * np.pi * (frame.V[b] - a.apex) / 0.046) ** 2
    A[b] += 0.3 * spine * vertebrae * frame.body[b]
    # ribs: posterior ribs rise slightly then curve down laterally; anterior ribs run down-medially
    b = frame.box(0.5 - a.half_width - 0.03, 0.5 + a.half_width + 0.03, a.apex - 0.05, th.costophrenic_v("left") + 0.04)
    U, V = frame.U[b], frame.V[b]
    d = np.abs(U - 0.5)
    region = (d < a.half_width + 0.03) & (V < th.costophrenic_v("left") + 0.04) & frame.body[b]
    r = d / a.half_width
    posterior = (V - (a.apex - 0.035) + 0.07 * r - 0.17 * r**3) / a.rib_spacing
    k = np.floor(posterior)
    frac = (posterior - k) * a.rib_spacing
    A[b] += 0.1 * _bump(np.abs(frac - 0.011), 0.011) * ((k >= 0) & (k < 10) & (d > 0.03) & region)
    anterior = (V - (a.apex + 0.03) - 0.12 * (1.0 - r)) / (a.rib_spacing * 1.1)
    k2 = np.floor(anterior)
    frac2 = (anterior - k2) * a.rib_spacing * 1.1
    A[b] += 0.06 * _bump(np.abs(frac2 - 0.009), 0.009) * ((k2 >= 0) & (k2 < 6) & (r > 0.15) & region)
    # clavicles: from the sternal notch up-laterally to the shoulders
    b = frame.box(0.18, 0.82, a.clavicle_v - 0.06, a.clavicle_v + 0.06)
    d = np.abs(frame.U[b] - 0.5)
    clav_t = np.clip((d - 0.03) / 0.27, 0.0, 1.0)
    clav_v = a.clavicle_v + 0.02 - 0.055 * clav_t + 0.025 * np.sin(np.pi * clav_t)
    A[b] += 0.3 * _bump(np.abs(frame.V[b] - clav_v), 0.012) * ((d > 0.03) & (d < 0.3))
    # soft tissue: breast shadows over the lower zones, the gastric bubble under the left dome
    if a.sex == "F":
        b = frame.box(0.5 - a.half_width - 0.1, 0.5 + a.half_width + 0.1, th.dome_right - 0.3, th.dome_right + 0.25)
        U, V = frame.U[b], frame.V[b]
        e = np.minimum(((np.abs(U - 0.5) - 0.25) / 0.15) ** 2, 30.0) + ((V - (th.dome_right - 0.03)) / 0.12) ** 2
        A[b] += 0.1 * np.exp(-e) * frame.body[b]
    b = frame.box(0.6, 0.72, th.dome_left, th.dome_left + 0.08)
    bubble = ((frame.U[b] - 0.66) / 0.05) ** 2 + ((frame.V[b] - (th.dome_left + 0.045)) / 0.024) ** 2 < 1.0
    A[b] -= 0.3 * (bubble & frame.abdomen[b])
    markings = 0.13 * lung_markings(frame, rng) * (lungs | retro)
    return A, markings.astype(np.float32)


def burn_in_markers(image: np.ndarray, acq: Acquisition, height: int, width: int) -> None:
    """Burn the technologist's markers into the float image (in place): an "L" on the patient's left
    (the viewer's right of a frontal view) and, for portable films, a text-label bar at the top."""
    size = max(3, height // 28)
    top = max(1, height // 14)
    left = width - 2 * size - max(1, width // 20) if acq.frontal else max(1, width // 20)
    stroke = max(1, size // 4)
    image[top : top + size, left : left + stroke] = 1.0
    image[top + size - stroke : top + size, left : left + (2 * size) // 3] = 1.0
    if acq.portable_marker:
        bar_h = max(2, height // 40)
        image[max(1, height // 30) : max(1, height // 30) + bar_h, width // 12 : width // 12 + width // 6] = 0.95


def to_pixels(A: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Detector response: attenuation ``[H, W]`` -> 8-bit grayscale ``[H, W]`` uint8."""
    height, width = A.shape
    signal = 1.0 - np.exp(-1.55 * A)
    if acq.blur_px > 0:
        signal = ndimage.gaussian_filter(signal, acq.blur_px, mode="nearest")
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    signal = signal + acq.heel * x
    lo, hi = 0.04 - acq.exposure, 0.96 - acq.exposure
    img = np.clip((signal - lo) / (hi - lo), 0.0, 1.0)
    img = np.clip(0.5 + (img - 0.5) * acq.contrast, 0.0, 1.0) ** acq.gamma
    # quantum noise is stronger where fewer photons arrive (bright, attenuating regions)
    sigma = acq.noise_sigma * (0.6 + 0.8 * img)
    img = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    burn_in_markers(img, acq, height, width)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


# --- lateral views -----------------------------------------------------------------------------------
# A lateral film is displayed with the patient facing the viewer's left: u < 0.5 is anterior.


@dataclass(frozen=True)
class LateralGeometry:
    apex: float
    dome: float
    front: float  # anterior chest wall (u)
    back: float  # posterior chest wall (u)
    heart_u: float
    heart_v: float
    heart_rx: float
    heart_ry: float

    @classmethod
    def build(cls, anatomy: Anatomy, acq: Acquisition, heart_factor: float = 1.0) -> LateralGeometry:
        dome = 0.5 * (anatomy.dome_right + anatomy.dome_left) - acq.inspiration_shift
        depth = 0.56 * anatomy.half_width / 0.36
        front, back = 0.5 - 0.45 * depth, 0.5 + 0.45 * depth
        return cls(
            apex=anatomy.apex,
            dome=dome,
            front=front,
            back=back,
            heart_u=front + 0.2 * depth / 0.56 + 0.03 * (heart_factor - 1),
            heart_v=dome - 0.07,
            heart_rx=0.15 * heart_factor,
            heart_ry=0.13 * (0.8 + 0.2 * heart_factor),
        )

    def bottom(self, U: np.ndarray) -> np.ndarray:
        """The diaphragm: the posterior costophrenic sulcus is the deepest point."""
        x = np.clip((U - self.front) / (self.back - self.front), 0.0, 1.0)
        return self.dome + 0.1 * x**3

    def lung(self, U: np.ndarray, V: np.ndarray) -> np.ndarray:
        """Both lungs superimposed: a dome-topped field from the sternum to over the spine."""
        x = (U - self.front) / (self.back - self.front)
        top = self.apex + 0.35 * (x - 0.55) ** 2
        anterior = 0.05 + 0.12 * np.clip((self.apex + 0.2 - V) / 0.2, 0.0, 1.0)
        return (x > anterior) & (x < 0.94) & (V > top) & (V < self.bottom(U))

    def heart(self, U: np.ndarray, V: np.ndarray) -> np.ndarray:
        return ((U - self.heart_u) / self.heart_rx) ** 2 + ((V - self.heart_v) / self.heart_ry) ** 2 < 1.0


def lateral_attenuation(U: np.ndarray, V: np.ndarray, geo: LateralGeometry, rng: np.random.Generator) -> np.ndarray:
    """The attenuation ``[H, W]`` of a normal chest in a lateral view (both lungs superimposed)."""
    span = geo.back - geo.front
    body_half = 0.5 * span + 0.05
    body = ((np.abs(U - 0.5) < body_half * np.clip(0.55 + 3 * (V + 0.05), 0.0, 1.0)) & (V > -0.2)).astype(np.float32)
    A = 1.15 * body
    lung = geo.lung(U, V)
    heart = geo.heart(U, V) & lung
    A -= 0.8 * (lung & ~heart)
    A -= 0.35 * heart
    # thoracic spine over the posterior lung, with vertebral bodies and discs; ribs run obliquely
    spine_u = geo.back - 0.08 * span
    A += 0.3 * _bump(np.abs(U - spine_u), 0.04) * (0.7 + 0.3 * np.cos(2 * np.pi * V / 0.046) ** 2) * body
    x = (U - geo.front) / span
    ribs = np.cos(2 * np.pi * (V + 0.12 * x) / 0.06) ** 8 * np.clip((x - 0.35) / 0.3, 0.0, 1.0)
    A += 0.07 * ribs * lung
    A += 0.15 * _bump(np.abs(U - (geo.front + 0.015)), 0.009) * (V > geo.apex) * (V < geo.dome)  # sternum
    A += 0.3 * body * np.clip((0.28 - V) / 0.12, 0.0, 1.0)  # shoulders and arms over the apices
    trachea_u = 0.5 - 0.03 + 0.05 * np.clip(V / 0.33, 0.0, 1.0)
    A -= 0.22 * ((np.abs(U - trachea_u) < 0.012) & (V < 0.33) & (V > -0.1))
    # vessels fan out from the hilum
    du, dv = U - (0.5 + 0.02), V - (geo.apex + 0.28)
    vessels = (0.5 + 0.5 * np.cos(np.arctan2(dv, du) * 24.0 + 2.0 * smooth_noise(rng, *U.shape, max(3.0, U.shape[0] / 12)))) ** 6
    A += 0.12 * vessels * np.exp(-np.hypot(du, dv) / 0.15) * lung
    A += 0.02 * smooth_noise(rng, *U.shape, max(1.5, U.shape[0] / 48)) * lung
    return A.astype(np.float32)
