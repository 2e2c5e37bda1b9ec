"""The model's options, each declared once: the architecture, the model class's keywords
and the methods' own options.

An option here is at the same time a ``tfascl-train`` flag, a ``TrainConfig`` field, a
``RunSpec`` field (run.json) and, for a model option, a keyword argument of the model
class: the ``MethodOptions`` dataclass below is a base of both ``TrainConfig`` and
``RunSpec``, so the flag, its help, its validation, the run record and what reaches the
model are all generated from ``OPTIONS``.

Three groups:

* ``ARCHITECTURE_OPTIONS`` (backbone, widths, projector): ``RunSpec.build_model`` builds
  the backbone and the projector from them; they are not the model class's keywords.
* ``MODEL_OPTIONS`` (τ, τ′, K, the queue, the momentum encoder, ...): the keywords every
  method's model class may take; ``build_model`` drops those a class does not take (a
  queue size for SimCLR). A default of None means "the method's": its
  ``MethodSpec.defaults``, else the model class's signature.
* ``METHOD_OPTIONS`` (relabel, consistency_weight, ...): options of some methods only,
  all None by default; a method takes those its ``MethodSpec.options`` names and
  validation refuses the others by name.

One concept has one name in the code (the field, the run.json key and the model's
keyword): ``target_temperature`` is τ′, the temperature of the key-to-queue (or key-to-
batch) similarities the targets come from (SCE's τ_m, ReSSL's τ_t). Its flag keeps the
name recipes use, ``--relabel_temperature`` (``MethodOption.flag``).

This module imports nothing of TensorFlow (only ``tfascl.choices``, plain names): the
command line reads it before anything heavy starts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfascl.choices import KEY_NORMS, MOMENTUM_SCHEDULES, RESNET_NAMES, STEMS

RELABEL_MODES = ("none", "ascl", "ahcl", "hard")

# Where an option goes when a model is built.
ARCHITECTURE, MODEL, METHOD = "architecture", "model", "method"


@dataclasses.dataclass(frozen=True)
class MethodOption:
    """One option of the model.

    Attributes:
        name: the ``TrainConfig``/``RunSpec`` field, the run.json key and (for a model or
            method option) the model class's keyword.
        kind: ``"int"``, ``"float"``, ``"str"``, ``"bool"`` or ``"pair"`` (two ints).
        help: the flag's help.
        group: ``ARCHITECTURE``, ``MODEL`` or ``METHOD`` (see the module's docstring).
        default: the field's default; None: the method's.
        flag: the command-line name, when it is not ``name`` (kept for recipes).
        choices: the values a ``str`` option takes.
        minimum: the smallest value a number may take (inclusive), if any.
        above: a number must be larger than this, if set.
        maximum: the largest value a number may take (inclusive), if any.
        below: a number must be smaller than this, if set.
    """

    name: str
    kind: str
    help: str
    group: str = METHOD
    default: Any = None
    flag: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    below: float | None = None

    @property
    def flag_name(self) -> str:
        """The command-line name (``--flag_name``)."""
        return self.flag or self.name

    @property
    def type_name(self) -> str:
        """The field's annotation, which ``train_config.define_flags`` reads."""
        base = "tuple[int, int]" if self.kind == "pair" else self.kind
        return base if self.default is not None else f"{base} | None"

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (None: nothing, or unset)."""
        if value is None:
            return None
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if self.minimum is not None and self.maximum is not None:
            if not self.minimum <= value <= self.maximum:
                return f"must be in [{self.minimum:g}, {self.maximum:g}]"
            return None
        if self.above is not None and value <= self.above:
            return f"must be > {self.above:g}"
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum:g}"
        if self.below is not None and value >= self.below:
            return f"must be < {self.below:g}"
        return None


def _architecture(name: str, kind: str, default: Any, help: str, **rules: Any) -> MethodOption:
    return MethodOption(name, kind, help, group=ARCHITECTURE, default=default, **rules)


def _model(name: str, kind: str, default: Any, help: str, **rules: Any) -> MethodOption:
    return MethodOption(name, kind, help, group=MODEL, default=default, **rules)


ARCHITECTURE_OPTIONS: tuple[MethodOption, ...] = (
    _architecture("backbone", "str", "resnet18", "Backbone.", choices=RESNET_NAMES),
    _architecture(
        "backbone_width", "int", 16, "Channels of the first stage (64 in the papers).", minimum=1
    ),
    _architecture("image_size", "int", 32, "Side of the augmented views, in pixels."),
    _architecture(
        "stem",
        "str",
        None,
        "Backbone stem. Default from --image_size (<=32 cifar, <=96 cifar_pool).",
        choices=STEMS,
    ),
    _architecture(
        "key_norm",
        "str",
        None,
        "Normalisation of the momentum backbone (e.g. split for SCE). Default: --norm.",
        choices=KEY_NORMS,
    ),
    _architecture(
        "num_splits", "int", 8, "Groups of split BN; must divide the per-replica batch.", minimum=1
    ),
    _architecture(
        "projector_dims", "pair", (2048, 128), "Hidden and output sizes of the projector."
    ),
    _architecture(
        "projector_bn",
        "bool",
        None,
        "BN in the projector. Default: off for queue methods, on for BYOL.",
    ),
)

MODEL_OPTIONS: tuple[MethodOption, ...] = (
    _model(
        "temperature",
        "float",
        None,
        "τ of the query logits (ReSSL's τ_s). Default: the method's (0.1; SimCLR, DCL 0.5).",
        above=0.0,
    ),
    _model(
        "target_temperature",
        "float",
        None,
        "τ′ of the key-to-queue similarities (SCE's τ_m, ReSSL's τ_t). Default: the method's.",
        flag="relabel_temperature",
        above=0.0,
    ),
    _model(
        "num_neighbors",
        "int",
        None,
        "K of ASCL/AHCL/hard relabelling; k of MSF's neighbours. Default: the method's (1; MSF 5).",
        minimum=1,
    ),
    _model(
        "sce_lambda",
        "float",
        0.5,
        "λ of SCE: the weight of the one-hot target.",
        minimum=0.0,
        maximum=1.0,
    ),
    _model(
        "symmetric",
        "bool",
        None,
        "Average the loss with the views swapped. Default: off (ASCL code), BYOL on.",
    ),
    _model(
        "queue_size",
        "int",
        1024,
        "Keys in the queue (MoCo's negatives, NNCLR's support set, MSF's memory bank): a "
        "multiple of the global batch (twice it if symmetric).",
    ),
    _model(
        "momentum",
        "float",
        0.99,
        "m₀ of the momentum (EMA) encoder.",
        minimum=0.0,
        maximum=1.0,
    ),
    _model(
        "momentum_schedule",
        "str",
        None,
        "constant, or cosine from m₀ to 1. Default: the method's (BYOL cosine).",
        choices=MOMENTUM_SCHEDULES,
    ),
)

METHOD_OPTIONS: tuple[MethodOption, ...] = (
    MethodOption(
        "relabel",
        "str",
        "Relabelling plug-in: none, ascl (soft), ahcl or hard (top-K) targets on the "
        "method's keys (the queue of moco/co2, the batch of simclr/byol). Default: the "
        "method's (ascl for --method=ascl, ...).",
        choices=RELABEL_MODES,
    ),
    MethodOption(
        "consistency_weight",
        "float",
        "α of Co2: the weight of the consistency term. Default: the method's.",
        minimum=0.0,
    ),
    MethodOption(
        "consistency_temperature",
        "float",
        "τ_con of Co2's similarity distributions over the queue. Default: the method's.",
        minimum=1e-6,
    ),
    MethodOption(
        "debias_prior",
        "float",
        "τ⁺ of debiased contrastive learning (DCL): the class prior, the chance that a "
        "negative shares the anchor's class. Default: the method's (0.1).",
        minimum=0.0,
        below=1.0,
    ),
    MethodOption(
        "predictor_hidden",
        "int",
        "Hidden units of the predictor of NNCLR and MSF. Default: the method's.",
        minimum=1,
    ),
)

OPTIONS: tuple[MethodOption, ...] = ARCHITECTURE_OPTIONS + MODEL_OPTIONS + METHOD_OPTIONS
OPTIONS_BY_NAME: dict[str, MethodOption] = {option.name: option for option in OPTIONS}
# The options of some methods only (``MethodSpec.options`` names them).
OPTION_NAMES = tuple(option.name for option in METHOD_OPTIONS)
# The command-line name of each option whose flag is not its field's name.
FLAG_NAMES: dict[str, str] = {option.name: option.flag for option in OPTIONS if option.flag}


def flag_name(field: str) -> str:
    """The command-line name of a ``TrainConfig`` field (``target_temperature`` →
    ``relabel_temperature``; any other field: itself)."""
    return FLAG_NAMES.get(field, field)


def _field(option: MethodOption) -> tuple[str, str, dataclasses.Field]:
    field = dataclasses.field(
        default=option.default, metadata={"help": option.help, "option": option}
    )
    return option.name, option.type_name, field


# The fields of OPTIONS, with their defaults: a base of TrainConfig and RunSpec.
MethodOptions = dataclasses.make_dataclass("MethodOptions", [_field(option) for option in OPTIONS])
MethodOptions.__module__ = __name__
MethodOptions.__doc__ = (
    "The fields of ``OPTIONS`` (architecture, model and method options), declared once."
)


def model_keywords(values: Any) -> dict[str, Any]:
    """``{name: value}`` of the model and method options ``values`` (a ``MethodOptions``)
    sets: the model class's keywords (unset ones, None, take the method's default)."""
    chosen = {
        option.name: getattr(values, option.name)
        for option in OPTIONS
        if option.group in (MODEL, METHOD)
    }
    return {name: value for name, value in chosen.items() if value is not None}
