"""The registry of methods: one ``MethodSpec`` per name says everything that is decided by
the method (model class, defining options, paper defaults, label, queue, relabelling,
loss direction, momentum schedule, projector BN). Flags, validation, ``RunSpec``,
evaluation labels and tests derive from ``METHODS``; nothing else decides by name."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import keras

from tfascl.models.backbones import default_stem, resnet
from tfascl.models.base import EncoderModel, MomentumModel
from tfascl.models.byol import BYOL
from tfascl.models.contrastive import TOP_K_RELABELS, MomentumContrast
from tfascl.models.heads import mlp_head
from tfascl.models.meanshift import MeanShift
from tfascl.models.simclr import NNCLR, SimCLR
from tfascl.options import OPTION_NAMES, RELABEL_MODES

RELABEL_KINDS = ("soft", "hard")


def relabel_kind(mode: str | None) -> str | None:
    """None, ``"soft"`` (ASCL's ``min(K·c·p, 1)`` on every key) or ``"hard"`` (the top-K
    keys only: AHCL, hard) for a relabel mode."""
    if mode in (None, "none"):
        return None
    return "hard" if mode in TOP_K_RELABELS else "soft"


@functools.cache
def accepted_arguments(model_class: type) -> frozenset[str]:
    """The keyword arguments of ``model_class`` and the bases its ``**kwargs`` reach."""
    names: set[str] = set()
    for cls in model_class.__mro__:
        if "__init__" not in vars(cls) or cls in (keras.Model, object):
            continue
        parameters = inspect.signature(cls.__init__).parameters.values()
        names.update(p.name for p in parameters if p.kind is not p.VAR_KEYWORD)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return frozenset(names - {"self"})


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """What a method is.

    Attributes:
        name: the key of ``METHODS`` (``--method``).
        label: the name in reports and plot legends.
        model_class: ``MomentumContrast``, ``BYOL``, ``SimCLR``, ``NNCLR`` or ``MeanShift``.
        fixed: the model-class options that define the method (``method_name`` reads
            a model's method back from them); callers cannot override them, except
            ``relabel`` within ``relabels``.
        defaults: the method's paper defaults of other model-class options.
        uses_queue: keys go to a queue (MoCo's negatives, NNCLR's support set, MSF's
            memory bank): ``queue_size`` applies.
        relabel_kind: None, or how the method's own relabelling moves target mass onto
            neighbours (``relabel_kind()`` of its relabel mode): ``"soft"`` or ``"hard"``
            (K must not exceed the queue).
        symmetric: the loss is averaged over both view orders by default (both keys
            enqueued, for a queue method).
        momentum_schedule: the default EMA schedule (``"constant"`` or ``"cosine"``).
        projector_bn: the projector has BN by default.
        relabels: the relabel modes ``--relabel`` may choose (the plug-in); empty: the
            method has no targets to relabel.
        options: the ``tfascl.options`` options the method takes besides
            ``relabel`` (validation refuses the others).
        reference: the paper and the code the implementation was checked against.
    """

    name: str
    label: str
    model_class: type[keras.Model]
    fixed: Mapping[str, Any]
    defaults: Mapping[str, Any]
    uses_queue: bool
    relabel_kind: str | None
    symmetric: bool
    momentum_schedule: str
    projector_bn: bool
    relabels: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    reference: str = ""

    def __post_init__(self) -> None:
        if self.relabel_kind is not None and self.relabel_kind not in RELABEL_KINDS:
            raise ValueError(
                f"relabel_kind must be None or one of {RELABEL_KINDS}, got {self.relabel_kind!r}"
            )
        unknown = set(self.options) - set(OPTION_NAMES)
        if unknown or not set(self.relabels) <= set(RELABEL_MODES):
            raise ValueError(f"{self.name}: unknown options {sorted(unknown)} or relabels")
        # Read-only views: a spec is shared by every caller.
        object.__setattr__(self, "fixed", MappingProxyType(dict(self.fixed)))
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    @property
    def has_momentum_encoder(self) -> bool:
        return issubclass(self.model_class, MomentumModel)

    def queue_keys(self, symmetric: bool) -> int:
        """Keys a queue method enqueues per image: 2 when a ``symmetric`` loss enqueues both
        views' keys (the MoCo family); 1 otherwise (NNCLR enqueues one view's projections,
        MSF its targets, whatever the loss direction)."""
        takes_symmetric = "symmetric" in accepted_arguments(self.model_class)
        return 2 if symmetric and takes_symmetric else 1

    @property
    def shuffles_keys(self) -> bool:
        """A momentum encoder with a queue, whose keys shuffle BN across replicas."""
        return "shuffle_keys" in accepted_arguments(self.model_class)

    def takes(self, option: str) -> bool:
        """Whether ``option`` (of ``tfascl.options``) may be set for this method."""
        return option in self.options or (option == "relabel" and bool(self.relabels))

    def relabel_mode(self, relabel: str | None) -> str | None:
        """The relabel mode a run uses with ``--relabel=relabel`` (None: the method's)."""
        if relabel is not None:
            return relabel
        return self.fixed.get("relabel", self.defaults.get("relabel"))

    def default_options(self) -> dict[str, Any]:
        """The model-class options a caller's options override (all but ``fixed``)."""
        base = {"symmetric": self.symmetric}
        if self.has_momentum_encoder:
            base["momentum_schedule"] = self.momentum_schedule
        return {**base, **self.defaults}


# ASCL main.py --t2 0.05 --K 1: τ′ and K of every relabelling method.
RELABEL_DEFAULTS = {"target_temperature": 0.05, "num_neighbors": 1}

MOCO_CODE = "facebookresearch/moco; MrChenFeng/Adaptive-Soft-Contrastive-Learning_ICPR2022"


def _queue_method(
    name: str,
    label: str,
    fixed: dict[str, Any],
    defaults: dict[str, Any] | None = None,
    *,
    relabels: tuple[str, ...] = (),
    options: tuple[str, ...] = (),
    reference: str = MOCO_CODE,
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
        relabel_kind=relabel_kind(relabel),
        symmetric=False,
        momentum_schedule="constant",
        projector_bn=False,
        relabels=relabels or ((relabel,) if relabel != "none" else ()),
        options=options,
        reference=reference,
    )


def _byol_method(name: str, label: str, relabel: str) -> MethodSpec:
    """BYOL (with ASCL's in-batch soft targets for ``relabel="ascl"``): no queue, the loss
    over both view orders, cosine momentum to 1, BN in the projector (BYOL paper)."""
    relabels = relabel != "none"
    return MethodSpec(
        name=name,
        label=label,
        model_class=BYOL,
        fixed={"relabel": relabel},
        defaults=RELABEL_DEFAULTS if relabels else {},
        uses_queue=False,
        relabel_kind=relabel_kind(relabel),
        symmetric=True,
        momentum_schedule="cosine",
        projector_bn=True,
        relabels=("ascl",) if relabels else ("none", "ascl"),
        reference="BYOL (Grill et al. 2020); ASCL code's BYOL (model.py)",
    )


def _relabelling(relabel: str) -> dict[str, Any]:
    return {"objective": "contrastive", "relabel": relabel}


def _simclr_method(name: str, label: str, objective: str, **spec: Any) -> MethodSpec:
    """In-batch contrastive learning without a momentum encoder (SimCLR, DCL, NNCLR)."""
    return MethodSpec(
        name=name,
        label=label,
        model_class=spec.pop("model_class", SimCLR),
        fixed={"objective": objective} if objective else {},
        uses_queue=spec.pop("uses_queue", False),
        relabel_kind=None,
        symmetric=True,
        momentum_schedule="constant",
        projector_bn=True,
        **spec,
    )


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        _queue_method(
            "moco",
            "MoCo v2",
            _relabelling("none"),
            RELABEL_DEFAULTS,
            relabels=RELABEL_MODES,
            options=("relabel",),
        ),
        _queue_method("ascl", "ASCL", _relabelling("ascl"), RELABEL_DEFAULTS),
        _queue_method("ahcl", "AHCL", _relabelling("ahcl"), RELABEL_DEFAULTS),
        _queue_method("hard", "hard relabelling", _relabelling("hard"), RELABEL_DEFAULTS),
        # SCE CIFAR config: temp_m 0.05, coeff 0.5.
        _queue_method(
            "sce",
            "SCE",
            {"objective": "sce"},
            {"target_temperature": 0.05, "sce_lambda": 0.5},
            reference="CEA-LIST/SCE (eztorch sce_loss.py)",
        ),
        # ReSSL paper: τ_t = 0.04.
        _queue_method(
            "ressl",
            "ReSSL",
            {"objective": "ressl"},
            {"target_temperature": 0.04},
            reference="mingkai-zheng/ReSSL",
        ),
        # Co2 paper (Wei et al. 2021), MoCo v2 baseline: α and τ_con in the class defaults.
        _queue_method(
            "co2",
            "Co2",
            {"objective": "co2"},
            {"relabel": "none", **RELABEL_DEFAULTS},
            relabels=RELABEL_MODES,
            options=("relabel", "consistency_weight", "consistency_temperature"),
            reference="Co2 (Wei et al. ICLR 2021); lightly loss/regularizer/co2.py",
        ),
        # DCL (Chuang et al. 2020) on MoCo's queue: τ⁺ = 0.1 and τ = 0.5 as its CIFAR runs.
        # Not MoCo's τ = 0.1: the debiased estimate falls below its clamp M·e^{−1/τ} once
        # pos/mean(neg) > 1/τ⁺, a cosine gap of only τ·ln 10 = 0.23 at τ = 0.1; the
        # negatives then get no gradient and the embeddings collapse (measured: kNN at
        # random-init level, the loss rising towards log(M + 1)).
        _queue_method(
            "moco_dcl",
            "MoCo v2 + DCL",
            {"objective": "debiased", "relabel": "none"},
            {"debias_prior": 0.1, "temperature": 0.5},
            options=("debias_prior",),
            reference="chingyaoc/DCL main.py (on the queue)",
        ),
        _byol_method("byol", "BYOL", relabel="none"),
        _byol_method("byol_ascl", "BYOL + ASCL", relabel="ascl"),
        _simclr_method(
            "simclr",
            "SimCLR",
            "nt_xent",
            defaults={"temperature": 0.5, "relabel": "none", **RELABEL_DEFAULTS},
            relabels=("none", "ascl"),
            options=("relabel",),
            reference="SimCLR (Chen et al. 2020); google-research/simclr tf2/objective.py",
        ),
        _simclr_method(
            "dcl",
            "DCL",
            "debiased",
            defaults={"temperature": 0.5, "debias_prior": 0.1},
            options=("debias_prior",),
            reference="Debiased CL (Chuang et al. 2020); chingyaoc/DCL main.py",
        ),
        _simclr_method(
            "nnclr",
            "NNCLR",
            "",
            model_class=NNCLR,
            uses_queue=True,
            defaults={"temperature": 0.1},
            options=("predictor_hidden",),
            reference="NNCLR (Dwibedi et al. 2021); solo-learn losses/nnclr.py, lightly",
        ),
        MethodSpec(
            name="msf",
            label="MeanShift",
            model_class=MeanShift,
            fixed={},
            defaults={"num_neighbors": 5},  # train_msf.py --topk 5
            uses_queue=True,
            relabel_kind=None,
            symmetric=False,
            momentum_schedule="constant",  # train_msf.py --momentum 0.99, constant
            projector_bn=True,  # get_mlp: Linear – BatchNorm1d – ReLU – Linear
            options=("predictor_hidden",),
            reference="MSF (Koohpayegani et al. ICCV 2021); UMBCvision/MSF train_msf.py",
        ),
    )
}


def method_spec(method: str) -> MethodSpec:
    """``METHODS[method]``, or a ValueError naming the known methods."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    return METHODS[method]


RELABEL_LABELS = {"none": "no relabelling", "ascl": "ASCL", "ahcl": "AHCL", "hard": "hard"}


def run_method(method: str, relabel: str | None = None) -> str:
    """A run's method as reports name it: ``method``, or ``"method+relabel"`` when the
    plug-in sets a relabel mode other than the method's own (e.g. ``"simclr+ascl"``)."""
    spec = METHODS.get(method)
    if relabel is None or spec is None or relabel == spec.relabel_mode(None):
        return method
    return f"{method}+{relabel}"


def method_label(method: str | None) -> str:
    """The display label of a method (``run_method``'s ``"simclr+ascl"`` reads
    ``"SimCLR + ASCL"``); an unknown name (or None) as it is."""
    name, _, relabel = (method or "").partition("+")
    spec = METHODS.get(name)
    if spec is None or (relabel and relabel not in RELABEL_LABELS):
        return str(method)
    return f"{spec.label} + {RELABEL_LABELS[relabel]}" if relabel else spec.label


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
            unset ones take the method's ``default_options()``; its ``fixed`` ones win,
            except ``relabel`` within ``spec.relabels``. Arguments the model class does
            not take are dropped.

    Returns:
        An uncompiled model of ``METHODS[method].model_class``.
    """
    spec = method_spec(method)
    relabel = options.pop("relabel", None)
    if relabel is not None and relabel not in spec.relabels:
        allowed = ", ".join(spec.relabels) or "none (it has no targets to relabel)"
        raise ValueError(f"relabel={relabel!r}: method {method!r} takes {allowed}")
    if projector_bn is None:
        projector_bn = spec.projector_bn
    projector = mlp_head(
        backbone.output_shape[-1],
        *projector_dims,
        batch_norm=projector_bn,
        norm=norm,
        num_splits=num_splits,
    )
    accepted = accepted_arguments(spec.model_class)
    if "norm" in accepted:  # the heads of BYOL, NNCLR and MSF normalise as the encoders
        options = {"norm": norm, "num_splits": num_splits, **options}
    arguments = {**spec.default_options(), **options, **spec.fixed}
    if relabel is not None:  # the plug-in: within spec.relabels, it wins over fixed
        arguments["relabel"] = relabel
    # Options that do not apply to this model class (a queue size for SimCLR, a momentum
    # for NNCLR) are dropped here; validation refuses the ones a user set by hand.
    arguments = {name: value for name, value in arguments.items() if name in accepted}
    return spec.model_class(backbone, projector, **arguments)


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


# model.export writes the method's name into the metadata (see EncoderModel.method_namer).
EncoderModel.method_namer = staticmethod(method_name)
