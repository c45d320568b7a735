"""Method implementations, one module per family; :func:`localign.models.build_model` picks one."""

from localign.models.methods.base import PretrainModel, PretrainOutput
from localign.models.methods.global_contrastive import GlobalContrastive
from localign.models.methods.gloria import Gloria
from localign.models.methods.limitr import Limitr
from localign.models.methods.lovt import LoVT
from localign.models.methods.mi import MutualInformation

# Importing the modules above registers their families (PretrainModel.__init_subclass__).
from localign.models.config import FAMILIES  # noqa: E402

__all__ = ["FAMILIES", "GlobalContrastive", "Gloria", "Limitr", "LoVT", "MutualInformation", "PretrainModel", "PretrainOutput"]
