"""Shared test helpers: tiny encoders for every method (CPU, seconds)."""

from __future__ import annotations

from localign.config import replace
from localign.models import get_method
from localign.models.config import MethodConfig
from localign.train.config import encoder_overrides

# A 2-layer random BERT with the MiniLM vocabulary: real tokenization, tiny compute.
TINY_TEXT = (("hidden_size", 32), ("num_hidden_layers", 2), ("num_attention_heads", 2), ("intermediate_size", 64))


def tiny_method(name: str, image_size: int = 64, **overrides) -> MethodConfig:
    """The preset ``name`` on a ResNet-18 at ``image_size`` px and a tiny random BERT."""
    base = get_method(name)
    o = encoder_overrides(base, image_arch="resnet18", image_size=image_size, text_model="minilm")
    o.update({"text.random_init": True, "text.tiny": TINY_TEXT, "text.freeze_layers": 0,
              "text.last_layers": min(base.text.last_layers, 2), "head.d_z": 16, "head.d_hidden": 32})
    if base.family == "mi":
        o["loss.critic_hidden"] = (32, 16)
    o.update(overrides)
    return replace(base, **o)
