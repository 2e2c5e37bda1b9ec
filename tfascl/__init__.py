"""tfascl: Adaptive Soft Contrastive Learning and its baselines for Keras 3.

``import tfascl`` does not start TensorFlow: the names below are imported from their
modules when first used (PEP 562), so a command answers ``--help`` or a bad flag before
TensorFlow loads, and a program that only reads ``tfascl.__version__`` never loads it.
"""

from typing import TYPE_CHECKING

from tfascl._lazy import lazy_exports
from tfascl._version import __version__

_EXPORTS = {
    "BYOL": ".models",
    "METHODS": ".models",
    "MeanShift": ".models",
    "NNCLR": ".models",
    "SimCLR": ".models",
    "MethodSpec": ".models",
    "MomentumContrast": ".models",
    "build_backbone": ".models",
    "build_model": ".models",
    "export_backbone": ".export",
    "losses": ".losses",
    "models": ".models",
}

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see
    from tfascl import losses, models
    from tfascl.export import export_backbone
    from tfascl.models import (
        BYOL,
        METHODS,
        NNCLR,
        MeanShift,
        MethodSpec,
        MomentumContrast,
        SimCLR,
        build_backbone,
        build_model,
    )

__all__ = [
    "BYOL",
    "METHODS",
    "NNCLR",
    "MeanShift",
    "MethodSpec",
    "MomentumContrast",
    "SimCLR",
    "__version__",
    "build_backbone",
    "build_model",
    "export_backbone",
    "losses",
    "models",
]
