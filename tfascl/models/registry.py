"""The registry of methods: each name, the model class and the options that make it."""

from __future__ import annotations

from typing import Any

import keras

from tfascl.models.backbones import default_stem, resnet
from tfascl.models.byol import BYOL
from tfascl.models.contrastive import MomentumContrast
from tfascl.models.heads import mlp_head

# name -> (model class, the options that define the method, its paper defaults)
METHODS: dict[str, tuple[type[keras.Model], dict[str, Any], dict[str, Any]]] = {
    "moco": (MomentumContrast, {"objective": "contrastive", "relabel": "none"}, {}),
    "ascl": (
        MomentumContrast,
        {"objective": "contrastive", "relabel": "ascl"},
        {"target_temperature": 0.05, "num_neighbors": 1},
    ),
    "ahcl": (
        MomentumContrast,
        {"objective": "contrastive", "relabel": "ahcl"},
        {"target_temperature": 0.05, "num_neighbors": 1},
    ),
    "hard": (
        MomentumContrast,
        {"objective": "contrastive", "relabel": "hard"},
        {"target_temperature": 0.05, "num_neighbors": 1},
    ),
    "sce": (
        MomentumContrast,
        {"objective": "sce"},
        {"target_temperature": 0.05, "sce_lambda": 0.5},
    ),
    "ressl": (MomentumContrast, {"objective": "ressl"}, {"target_temperature": 0.04}),
    "byol": (BYOL, {"relabel": False}, {"momentum_schedule": "cosine"}),
    "byol_ascl": (
        BYOL,
        {"relabel": True},
        {"momentum_schedule": "cosine", "target_temperature": 0.05, "num_neighbors": 1},
    ),
}


def build_model(
    method: str,
    backbone: keras.Model,
    *,
    projector_dims: tuple[int, int] = (2048, 128),
    projector_bn: bool | None = None,
    norm: str = "split",
    num_splits: int = 8,
    **options: Any,
) -> keras.Model:
    """Builds the model of ``method`` on a backbone.

    Args:
        method: a key of ``METHODS``.
        backbone: images → features [B, F].
        projector_dims: (hidden, output) of the projector MLP.
        projector_bn: BN in the projector; default off for the queue family
            (MoCo v2/ASCL code) and on for BYOL.
        norm: normalisation of the heads (``"split"``, ``"batch"``, ``"sync"``).
        num_splits: groups of split BN.
        **options: the model class's arguments (queue_size, temperature, momentum, ...);
            unset ones take the method's paper defaults.

    Returns:
        An uncompiled ``MomentumContrast`` or ``BYOL``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    model_class, fixed, defaults = METHODS[method]
    if projector_bn is None:
        projector_bn = model_class is BYOL
    projector = mlp_head(
        backbone.output_shape[-1],
        *projector_dims,
        batch_norm=projector_bn,
        norm=norm,
        num_splits=num_splits,
    )
    if model_class is BYOL:
        options = {"norm": norm, "num_splits": num_splits, **options}
    return model_class(backbone, projector, **{**defaults, **options, **fixed})


def build_backbone(
    name: str = "resnet18",
    image_size: int = 32,
    width: int = 64,
    *,
    stem: str | None = None,
    norm: str = "split",
    num_splits: int = 8,
) -> keras.Model:
    """A ResNet for ``image_size`` with the reference code's stem (see ``backbones.resnet``)."""
    return resnet(
        name,
        image_size=image_size,
        stem=stem or default_stem(image_size),
        width=width,
        norm=norm,
        num_splits=num_splits,
    )


def method_name(model: keras.Model) -> str | None:
    """The ``METHODS`` name of a model: the one whose class and defining options it has.

    Returns:
        e.g. ``"ascl"``, or None for a model no registered method describes.
    """
    for name, (model_class, fixed, _) in METHODS.items():
        if isinstance(model, model_class) and all(
            getattr(model, option, None) == value for option, value in fixed.items()
        ):
            return name
    return None
