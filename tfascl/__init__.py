"""tfascl: Adaptive Soft Contrastive Learning and its baselines for Keras 3."""

from tfascl import losses, models
from tfascl._version import __version__
from tfascl.export import export_backbone
from tfascl.models import (
    BYOL,
    METHODS,
    MethodSpec,
    MomentumContrast,
    build_backbone,
    build_model,
)

__all__ = [
    "BYOL",
    "METHODS",
    "MethodSpec",
    "MomentumContrast",
    "__version__",
    "build_backbone",
    "build_model",
    "export_backbone",
    "losses",
    "models",
]
