"""Reading radiographs from disk as grayscale ``uint8`` arrays, with clear errors.

MIMIC-CXR-JPG and SynthCXR images are 8-bit grayscale JPEGs; RSNA ships DICOM, read with
``pydicom`` when it is installed. Every failure (missing file, truncated or corrupt data, an
unsupported format) raises :class:`ImageReadError` naming the file, so callers can count and skip
bad files instead of crashing mid-epoch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from localign.paths import file_problem

DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_CHECK_MODES = ("decode", "header", "none")

# Geometry no radiograph has: `localign prepare` skips such images (reason
# ``image_degenerate_geometry``). A chest film is about 1:1.2; a 4:1 image is a strip, not a
# radiograph, and padding a 10000x10 one to a square would cost 400 MB per sample. The smallest
# side allowed is 16 px so that the tiny SynthCXR test sets (32 px, frontal widths down to 16)
# stay valid; real radiographs are thousands of pixels.
MAX_ASPECT_RATIO = 4.0
MIN_IMAGE_SIDE = 16

# Errors PIL raises for files it cannot decode. DecompressionBombError is not an OSError: it is
# raised for a header that claims more than 2 * Image.MAX_IMAGE_PIXELS pixels (an 8x8 JPEG can
# claim 30000x30000) before any pixel is read.
_PIL_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError)


class ImageReadError(OSError):
    """An image file is missing, truncated, corrupt or in an unsupported format.

    :ivar missing: True when there is no file at the path (nothing, or a symbolic link to nothing)
    """

    def __init__(self, path: str | Path, reason: str, missing: bool = False) -> None:
        self.path = Path(path)
        self.reason = reason
        self.missing = missing
        super().__init__(f"cannot read image {self.path}: {reason}")


def geometry_problem(height: int, width: int) -> str:
    """Why an image of ``height`` x ``width`` pixels is not a usable radiograph ('' if it is).

    >>> geometry_problem(100, 1000)
    '1000x100 px: aspect ratio 10 > 4'
    """
    long_side, short_side = max(height, width), min(height, width)
    if short_side < MIN_IMAGE_SIDE:
        return f"{width}x{height} px: smallest side {short_side} < {MIN_IMAGE_SIDE}"
    if long_side > MAX_ASPECT_RATIO * short_side:
        return f"{width}x{height} px: aspect ratio {long_side / short_side:.3g} > {MAX_ASPECT_RATIO:g}"
    return ""


def _require_file(path: Path) -> None:
    """Raise :class:`ImageReadError` unless ``path`` is a regular file, saying what is there instead."""
    problem = file_problem(path)
    if problem is not None:
        missing, reason = problem
        raise ImageReadError(path, reason, missing=missing)


def _require_pydicom():  # noqa: ANN202  (returns the module)
    try:
        import pydicom  # noqa: PLC0415  (optional dependency)
    except ImportError:
        raise ImportError(
            "reading DICOM files (.dcm, e.g. the RSNA Pneumonia images) needs pydicom, which is not "
            "installed: run `pip install pydicom` (or convert the images to PNG)"
        ) from None
    return pydicom


def _is_dicom(path: Path) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Min-max scale a high-bit-depth array to ``uint8`` (a constant image becomes zeros)."""
    pixels = pixels.astype(np.float64)
    lo, hi = float(pixels.min()), float(pixels.max())
    if hi <= lo:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round((pixels - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _load_dicom(path: Path) -> np.ndarray:
    pydicom = _require_pydicom()
    try:
        ds = pydicom.dcmread(str(path))
        pixels = ds.pixel_array
        try:
            from pydicom.pixels import apply_voi_lut  # noqa: PLC0415  (pydicom >= 3)
        except ImportError:  # pragma: no cover - pydicom 2.x
            from pydicom.pixel_data_handlers.util import apply_voi_lut  # noqa: PLC0415
        pixels = apply_voi_lut(pixels, ds)
    except Exception as err:  # pydicom raises many types for bad files
        raise ImageReadError(path, f"{type(err).__name__}: {err}") from err
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels = pixels[..., :3].mean(axis=-1)
    if pixels.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D grayscale DICOM image, got pixel array shape {pixels.shape}")
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() - pixels  # MONOCHROME1 stores bright bone as low values
    if pixels.dtype == np.uint8:
        return pixels
    return _to_uint8(pixels)


def load_image(path: str | Path) -> np.ndarray:
    """Read a radiograph as a grayscale ``uint8`` array.

    8-bit grayscale is returned as is; RGB(A) and palette images are converted to luminance;
    16-bit and 32-bit images are min-max scaled to 0..255. DICOM files (``.dcm``) are read with
    pydicom (VOI LUT applied, MONOCHROME1 inverted) if it is installed.

    :param path: an image file (JPEG, PNG, ... or DICOM)
    :return: ``[H, W]`` uint8
    :raises ImageReadError: when the file is missing, truncated, corrupt or not an image
    :raises ImportError: for a DICOM file when pydicom is not installed
    """
    path = Path(path)
    _require_file(path)
    if _is_dicom(path):
        return _load_dicom(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F"):
                pixels = np.asarray(image)
            else:
                pixels = np.asarray(image.convert("L"))
    except _PIL_ERRORS as err:
        raise ImageReadError(path, f"{type(err).__name__}: {err}") from err
    if pixels.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D grayscale image, got shape {pixels.shape}")
    if pixels.dtype == np.uint8:
        return pixels
    return _to_uint8(pixels)


def read_image_size(path: str | Path, mode: str = "decode") -> tuple[int, int] | None:
    """Check an image file and return its ``(height, width)``.

    :param mode: ``"decode"`` reads every pixel (finds truncated and corrupt files);
        ``"header"`` opens the file and reads only its header (fast; finds missing files and
        non-images); ``"none"`` checks nothing and returns None
    :raises ImageReadError: when the check fails
    """
    if mode not in IMAGE_CHECK_MODES:
        raise ValueError(f"image check mode must be one of {IMAGE_CHECK_MODES}, got {mode!r}")
    if mode == "none":
        return None
    path = Path(path)
    if mode == "decode":
        pixels = load_image(path)
        return int(pixels.shape[0]), int(pixels.shape[1])
    _require_file(path)
    if _is_dicom(path):
        pydicom = _require_pydicom()
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        except Exception as err:  # pydicom raises many types for bad files
            raise ImageReadError(path, f"{type(err).__name__}: {err}") from err
    try:
        with Image.open(path) as image:
            width, height = image.size
    except _PIL_ERRORS as err:
        raise ImageReadError(path, f"{type(err).__name__}: {err}") from err
    return int(height), int(width)
