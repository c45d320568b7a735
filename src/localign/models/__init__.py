"""Encoders, heads and methods under one interface, and the registry of named presets.

>>> from localign.models import get_method, build_model
>>> model = build_model(get_method("lovt", **{"image.arch": "resnet18", "text.model": "minilm"}))
"""

from localign.models.config import MethodConfig
from localign.models.embeddings import ImageEmbeddings, ReportEmbeddings
from localign.models.methods import FAMILIES, PretrainModel, PretrainOutput
from localign.models.registry import LOVT_ABLATIONS, METHODS, get_method, list_methods, register_method


def build_model(config: MethodConfig) -> PretrainModel:
    """Instantiate the method described by ``config`` (a :class:`MethodConfig` or a registry name)."""
    if isinstance(config, str):
        config = get_method(config)
    return FAMILIES[config.family](config)


__all__ = [
    "ImageEmbeddings",
    "LOVT_ABLATIONS",
    "METHODS",
    "MethodConfig",
    "PretrainModel",
    "PretrainOutput",
    "ReportEmbeddings",
    "build_model",
    "get_method",
    "list_methods",
    "register_method",
]
