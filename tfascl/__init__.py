"""tfascl: Adaptive Soft Contrastive Learning and its baselines for Keras 3."""

__version__ = "0.1.0"

from tfascl import losses, models
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
