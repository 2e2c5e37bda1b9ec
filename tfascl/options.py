"""The methods' tunable options, each declared once.

An option here is at the same time a ``tfascl-train`` flag, a ``TrainConfig`` field, a
``RunSpec`` field (run.json) and a keyword argument of the model class: the
``MethodOptions`` dataclass below is a base of both ``TrainConfig`` and ``RunSpec``, so
the flag, its help, the run record and what reaches the model are all generated from
``METHOD_OPTIONS``. Every default is None, "the method's": the method's value is in its
``MethodSpec.defaults`` (or the model class's signature), and a method takes only the
options its ``MethodSpec.options`` names (validation refuses the others by name).

This module imports nothing of TensorFlow or of tfascl: the command line reads it
before anything heavy starts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

RELABEL_MODES = ("none", "ascl", "ahcl", "hard")


@dataclasses.dataclass(frozen=True)
class MethodOption:
    """One tunable option of the methods.

    Attributes:
        name: the flag, the ``TrainConfig``/``RunSpec`` field and the model's keyword.
        kind: ``"int"``, ``"float"`` or ``"str"``.
        help: the flag's help.
        choices: the values a ``str`` option takes.
        minimum: the smallest value a number may take (inclusive), if any.
        below: a number must be smaller than this, if set.
    """

    name: str
    kind: str
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    below: float | None = None

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (None: nothing, or unset)."""
        if value is None:
            return None
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum:g}"
        if self.below is not None and value >= self.below:
            return f"must be < {self.below:g}"
        return None


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

OPTION_NAMES = tuple(option.name for option in METHOD_OPTIONS)


def _field(option: MethodOption) -> tuple[str, str, dataclasses.Field]:
    field = dataclasses.field(default=None, metadata={"help": option.help})
    return option.name, f"{option.kind} | None", field


# The fields of METHOD_OPTIONS, all None by default: a base of TrainConfig and RunSpec.
MethodOptions = dataclasses.make_dataclass(
    "MethodOptions", [_field(option) for option in METHOD_OPTIONS]
)
MethodOptions.__module__ = __name__
MethodOptions.__doc__ = "The fields of ``METHOD_OPTIONS`` (each None: the method's default)."


def set_options(values: Any) -> dict[str, Any]:
    """``{name: value}`` of the options ``values`` (a ``MethodOptions``) sets."""
    values = {name: getattr(values, name) for name in OPTION_NAMES}
    return {name: value for name, value in values.items() if value is not None}
