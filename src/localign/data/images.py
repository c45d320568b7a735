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

DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_CHECK_MODES = ("decode", "header", "none")


class ImageReadError(OSError):
    """An image file is missing, truncated, corrupt or in an unsupported format."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


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
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    if _is_dicom(path):
        return _load_dicom(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F"):
                pixels = np.asarray(image)
            else:
                pixels = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
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
    if not path.is_file():
        raise ImageReadError(path, "file not found")
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
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(path, f"{type(err).__name__}: {err}") from err
    return int(height), int(width)
