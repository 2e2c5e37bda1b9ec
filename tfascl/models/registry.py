"""The registry of methods: one ``MethodSpec`` per name says everything that is decided by
the method (model class, defining options, paper defaults, label, queue, relabelling,
loss direction, momentum schedule, projector BN). Flags, validation, ``RunSpec``,
evaluation labels and tests derive from ``METHODS``; nothing else decides by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import keras

from tfascl.models.backbones import default_stem, resnet
from tfascl.models.byol import BYOL
from tfascl.models.contrastive import TOP_K_RELABELS, MomentumContrast
from tfascl.models.heads import mlp_head

RELABEL_KINDS = ("soft", "hard")


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """What a method is.

    Attributes:
        name: the key of ``METHODS`` (``--method``).
        label: the name in reports and plot legends.
        model_class: ``MomentumContrast`` or ``BYOL``.
        fixed: the model-class options that define the method (``method_name`` reads
            a model's method back from them); callers cannot override them.
        defaults: the method's paper defaults of other model-class options.
        uses_queue: keys go to a queue of negatives (``queue_size`` applies).
        relabel: None, or how ASCL-style relabelling moves target mass onto neighbours:
            ``"soft"`` (ASCL's ``min(K·c·p, 1)`` on every key) or ``"hard"`` (only the K
            nearest keys: AHCL, hard; K must not exceed the queue).
        symmetric: the loss is averaged over both view orders by default.
        momentum_schedule: the default EMA schedule (``"constant"`` or ``"cosine"``).
        projector_bn: the projector has BN by default.
    """

    name: str
    label: str
    model_class: type[keras.Model]
    fixed: Mapping[str, Any]
    defaults: Mapping[str, Any]
    uses_queue: bool
    relabel: str | None
    symmetric: bool
    momentum_schedule: str
    projector_bn: bool

    def __post_init__(self) -> None:
        if self.relabel is not None and self.relabel not in RELABEL_KINDS:
            raise ValueError(
                f"relabel must be None or one of {RELABEL_KINDS}, got {self.relabel!r}"
            )
        # Read-only views: a spec is shared by every caller.
        object.__setattr__(self, "fixed", MappingProxyType(dict(self.fixed)))
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    def default_options(self) -> dict[str, Any]:
        """The model-class options a caller's options override (all but ``fixed``)."""
        return {
            "symmetric": self.symmetric,
            "momentum_schedule": self.momentum_schedule,
            **self.defaults,
        }


# ASCL main.py --t2 0.05 --K 1: τ′ and K of every relabelling method.
RELABEL_DEFAULTS = {"target_temperature": 0.05, "num_neighbors": 1}


def _queue_method(
    name: str,
    label: str,
    fixed: dict[str, Any],
    defaults: dict[str, Any] | None = None,
) -> MethodSpec:
    """A method of the queue family, as in the MoCo v2 and ASCL code: one loss direction,
    constant momentum, no BN in the projector."""
    relabel = fixed.get("relabel", "none")
    return MethodSpec(
        name=name,
        label=label,
        model_class=MomentumContrast,
        fixed=fixed,
        defaults=defaults or {},
        uses_queue=True,
        relabel=None if relabel == "none" else "hard" if relabel in TOP_K_RELABELS else "soft",
        symmetric=False,
        momentum_schedule="constant",
        projector_bn=False,
    )


def _byol_method(name: str, label: str, relabel: bool) -> MethodSpec:
    """BYOL (with ASCL's in-batch soft targets when ``relabel``): no queue, the loss over
    both view orders, cosine momentum to 1, BN in the projector (BYOL paper)."""
    return MethodSpec(
        name=name,
        label=label,
        model_class=BYOL,
        fixed={"relabel": relabel},
        defaults=RELABEL_DEFAULTS if relabel else {},
        uses_queue=False,
        relabel="soft" if relabel else None,
        symmetric=True,
        momentum_schedule="cosine",
        projector_bn=True,
    )


def _relabelling(relabel: str) -> dict[str, Any]:
    return {"objective": "contrastive", "relabel": relabel}


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        _queue_method("moco", "MoCo v2", _relabelling("none")),
        _queue_method("ascl", "ASCL", _relabelling("ascl"), RELABEL_DEFAULTS),
        _queue_method("ahcl", "AHCL", _relabelling("ahcl"), RELABEL_DEFAULTS),
        _queue_method("hard", "hard relabelling", _relabelling("hard"), RELABEL_DEFAULTS),
        # SCE CIFAR config: temp_m 0.05, coeff 0.5.
        _queue_method(
            "sce", "SCE", {"objective": "sce"}, {"target_temperature": 0.05, "sce_lambda": 0.5}
        ),
        # ReSSL paper: τ_t = 0.04.
        _queue_method("ressl", "ReSSL", {"objective": "ressl"}, {"target_temperature": 0.04}),
        _byol_method("byol", "BYOL", relabel=False),
        _byol_method("byol_ascl", "BYOL + ASCL", relabel=True),
    )
}


def method_spec(method: str) -> MethodSpec:
    """``METHODS[method]``, or a ValueError naming the known methods."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    return METHODS[method]


def method_label(method: str | None) -> str:
    """The display label of a method; an unknown name (or None) as it is."""
    spec = METHODS.get(method or "")
    return spec.label if spec else str(method)


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
        projector_bn: BN in the projector; default the method's ``projector_bn``.
        norm: normalisation of the heads (``"split"``, ``"batch"``, ``"sync"``).
        num_splits: groups of split BN.
        **options: the model class's arguments (queue_size, temperature, momentum, ...);
            unset ones take the method's ``default_options()``; its ``fixed`` ones win.

    Returns:
        An uncompiled ``MomentumContrast`` or ``BYOL``.
    """
    spec = method_spec(method)
    if projector_bn is None:
        projector_bn = spec.projector_bn
    projector = mlp_head(
        backbone.output_shape[-1],
        *projector_dims,
        batch_norm=projector_bn,
        norm=norm,
        num_splits=num_splits,
    )
    if spec.model_class is BYOL:
        options = {"norm": norm, "num_splits": num_splits, **options}
    return spec.model_class(
        backbone, projector, **{**spec.default_options(), **options, **spec.fixed}
    )


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
    for name, spec in METHODS.items():
        if isinstance(model, spec.model_class) and all(
            getattr(model, option, None) == value for option, value in spec.fixed.items()
        ):
            return name
    return None
