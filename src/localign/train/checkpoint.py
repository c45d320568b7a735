"""Checkpoints (atomic, ``torch.load(weights_only=True)``-compatible) and encoder-only exports.

A training checkpoint holds the model, optimisers, schedulers, gradient scaler, RNG states,
epoch/step counters, early-stopping state and the resolved config, and is written to a temporary
file in the same folder and renamed: a run killed while saving leaves the previous checkpoint intact.

An **encoder export** (``encoder.pt``) holds only the image backbone's weights, its
:class:`~localign.models.config.ImageEncoderConfig` and the preprocessing needed to use it
(input size, padding geometry, normalisation). :func:`load_image_encoder` rebuilds it without any
training class (MGCA#25 is the counter-example this avoids).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from localign.config import config_from_dict, config_to_dict
from localign.data.transforms import Preprocessing
from localign.models.config import ImageEncoderConfig
from localign.models.image import ImageEncoder
from localign.paths import atomic_write

CHECKPOINT_FORMAT = "localign-checkpoint"
ENCODER_FORMAT = "localign-image-encoder"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be read (truncated, corrupt, or not a localign checkpoint)."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``.<name>.tmp<pid>``, fsync, then ``os.replace``: readers never see a
    partial file, and after a power loss the rename cannot land before the data (without the fsync
    a journaling file system may commit the rename first and leave an empty ``last.pt``)."""
    return atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the ``.<name>.tmp<pid>`` files that :func:`atomic_save` leaves when its process is
    killed mid-write (they are never complete and never read); returns what was removed."""
    removed = []
    for tmp in sorted(Path(folder).glob(".*.tmp[0-9]*")):
        if tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    return removed


def rng_state() -> dict[str, Any]:
    """Torch, CUDA, numpy and Python RNG states in weights_only-loadable types."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_torch_file(path: Path, map_location, hint: str) -> Any:
    """``torch.load(weights_only=True)`` with an error that names the file and says what to do.

    A damaged file fails in many ways inside torch (RuntimeError from the zip reader, EOFError,
    UnpicklingError, KeyError from the legacy loader on arbitrary bytes, ...): all of them mean the
    file cannot be used, so all become one :class:`CheckpointError`.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001  (see the docstring)
        first = (str(err).splitlines() or [""])[0]
        cut = first.find(". ")
        reason = first[: cut + 1] if 0 < cut < len(first) - 1 else first
        raise CheckpointError(
            f"{path} ({path.stat().st_size:,} bytes) is truncated or corrupt and cannot be loaded "
            f"({type(err).__name__}{': ' + reason if reason else ''}); {hint}"
        ) from err


#: What to do about an unreadable checkpoint, when resuming and when evaluating.
RESUME_HINT = (
    "copy checkpoints/best.pt over it to resume from the best epoch, or start the run over without --resume "
    "(in a new --out folder)"
)
CHECKPOINT_HINT = f"to resume, {RESUME_HINT}; to evaluate, use the run's other checkpoint (--checkpoint best or last)"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", hint: str = CHECKPOINT_HINT) -> dict[str, Any]:
    """Read a training checkpoint (``weights_only=True``) and check its format.

    :param hint: what the user can do, appended to the error for an unreadable file
    :raises FileNotFoundError: when there is no file
    :raises CheckpointError: naming the file, for a truncated, corrupt or foreign file
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = read_torch_file(path, map_location, hint)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a localign training checkpoint")
    return ckpt


def export_image_encoder(encoder: ImageEncoder, path: str | Path, preprocessing: Preprocessing | dict[str, Any],
                         meta: dict[str, Any] | None = None) -> Path:
    """Write the backbone weights + config + :class:`~localign.data.transforms.Preprocessing` record
    (see the module docstring); a dict is checked through :meth:`Preprocessing.from_dict` first."""
    if not isinstance(preprocessing, Preprocessing):
        preprocessing = Preprocessing.from_dict(preprocessing, source=f"export_image_encoder({path})")
    payload = {
        "format": ENCODER_FORMAT,
        "version": FORMAT_VERSION,
        "config": config_to_dict(encoder.config),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "preprocessing": preprocessing.to_dict(),
        "meta": meta or {},
    }
    return atomic_save(payload, path)


def load_image_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ImageEncoder, Preprocessing]:
    """Rebuild an exported image encoder: ``(encoder in eval mode, its Preprocessing record)``.

    The record holds ``input_size``, ``geometry`` (``pad_resize``), ``normalize``
    (``dataset``/``half``/``max``), ``mean``/``std`` and ``in_channels``; see
    :func:`localign.data.transforms.eval_transform` and :func:`~localign.data.transforms.normalize`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder export not found: {path}")
    payload = read_torch_file(path, map_location, "re-export it from its run folder's checkpoints/best.pt (see localign.train.load_run)")
    if not isinstance(payload, dict) or payload.get("format") != ENCODER_FORMAT:
        raise CheckpointError(f"{path} is not a localign image-encoder export (format {ENCODER_FORMAT!r})")
    config = config_from_dict(ImageEncoderConfig, {**payload["config"], "weights": None})
    encoder = ImageEncoder(config)
    encoder.load_state_dict(payload["state_dict"])
    encoder.eval()
    return encoder, read_preprocessing(payload, path)


def read_preprocessing(payload: dict[str, Any], path: str | Path) -> Preprocessing:
    """The :class:`~localign.data.transforms.Preprocessing` record of a loaded ``encoder.pt`` payload."""
    return Preprocessing.from_dict(dict(payload.get("preprocessing") or {}), source=str(path))


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (or the module itself)."""
    return model.module if hasattr(model, "module") else model
