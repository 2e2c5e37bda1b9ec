"""Optimizers and learning-rate schedules for self-supervised pre-training.

Contents:

* :class:`LARS` -- Layer-wise Adaptive Rate Scaling with SGD momentum, in the form used by
  SimCLR / BYOL (TF) / the TF Model Garden, with *coupled* L2 weight decay.
* :class:`CoupledSGD` -- SGD with momentum whose update matches ``torch.optim.SGD`` exactly,
  including its coupled L2 weight decay (the optimizer of the reference ASCL / MoCo code).
* :func:`warmup_cosine` -- per-step linear warm-up, then cosine decay (Keras ``CosineDecay``).
* :func:`multistep_decay` -- PyTorch's ``MultiStepLR`` per step (Keras
  ``PiecewiseConstantDecay``).
* :class:`PerEpoch` -- any schedule held for a whole epoch at its value at the epoch's first
  step (MoCo's ``adjust_learning_rate``, called once per epoch).
* :func:`scaled_learning_rate` -- the linear scaling rule ``lr = base * batch / 256``.
* :func:`build_optimizer` -- builds one of ``sgd``, ``lars``, ``adamw``, ``lamb``.

Which variables count as "excluded" (BatchNorm / LayerNorm scale and offset, biases) is decided
by ``keras.optimizers.Optimizer.exclude_from_weight_decay(var_names=...)``. Keras compiles the
names into one regular expression (``"|".join(var_names)``) and ``re.search``-es it in
``variable.name`` of whatever variable object reaches the check. With the TensorFlow backend
that is the underlying ``tf.Variable``, whose name is the *full path* plus a suffix (for example
``"resnet/conv1_bn/gamma:0"``, or ``".../gamma/replica_1:0"`` for a mirrored copy), while a
``keras.Variable``'s own ``.name`` is only the last component (``"gamma"``). A bare substring
such as ``"beta"`` therefore also matches every variable of a layer called ``"beta_proj"``;
:data:`BN_AND_BIAS_PATTERNS` anchors the names on the last path component to avoid that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import ops

from tfascl.choices import OPTIMIZER_NAMES  # the names, TensorFlow-free (tfascl-train's flags)

__all__ = [
    "BN_AND_BIAS_PATTERNS",
    "LARS",
    "OPTIMIZER_NAMES",
    "CoupledSGD",
    "PerEpoch",
    "build_optimizer",
    "multistep_decay",
    "scaled_learning_rate",
    "warmup_cosine",
]

# Matches a variable whose last path component is exactly bias/gamma/beta, in each spelling a
# name reaches `_use_weight_decay` with: Keras short name ("bias"), tf.Variable name
# ("dense/bias:0") and a MirroredStrategy component ("dense/bias/replica_1:0").
BN_AND_BIAS_PATTERNS: tuple[str, ...] = (r"(?:^|/)(?:bias|gamma|beta)(?:/replica_\d+)?(?::\d+)?$",)


def _const(value: float, dtype: str) -> tf.Tensor:
    # Not ops.cast(value, dtype): that first makes a float32 tensor, so hyper-parameters of
    # float64 variables would carry float32 rounding.
    return ops.convert_to_tensor(value, dtype=dtype)


def _dense(gradient: tf.Tensor | tf.IndexedSlices) -> tf.Tensor:
    # Norms and `g + wd * w` need the full gradient; sparse rows (embeddings) are densified.
    if isinstance(gradient, tf.IndexedSlices):
        return tf.convert_to_tensor(gradient)
    return gradient


class _CoupledWeightDecayMixin:
    """Moves weight decay from Keras' decoupled step into the gradient (L2 regularisation).

    Keras 3's base optimizer applies ``w -= lr * wd * w`` in ``_apply_weight_decay`` before
    ``update_step`` whenever ``self.weight_decay`` is set. Optimizers using this mixin keep
    ``self.weight_decay`` (so it shows in ``get_config``) but turn that step into a no-op and add
    ``wd * w`` to the gradient in ``update_step`` instead, which is what PyTorch's SGD and every
    published LARS do. The mixin also remembers the ``var_names`` given to
    ``exclude_from_weight_decay`` so that they survive ``get_config`` / ``from_config`` (Keras
    itself does not serialise them).
    """

    def _init_exclusions(self, exclude_from_weight_decay: Sequence[str] | None) -> None:
        self._wd_exclude_names: tuple[str, ...] | None = None
        if exclude_from_weight_decay:
            self.exclude_from_weight_decay(var_names=list(exclude_from_weight_decay))

    def exclude_from_weight_decay(
        self,
        var_list: Sequence[keras.Variable] | None = None,
        var_names: Sequence[str] | None = None,
    ) -> None:
        """Like the Keras method; also records ``var_names`` for ``get_config``.

        ``var_list`` (variable identities) cannot be serialised and is not recorded.
        """
        super().exclude_from_weight_decay(var_list=var_list, var_names=var_names)
        self._wd_exclude_names = tuple(var_names) if var_names else None

    def _apply_weight_decay(self, variables: Sequence[keras.Variable]) -> None:
        # Deliberately empty: the decay is coupled, i.e. added to the gradient in update_step.
        del variables

    def _decayed_gradient(self, gradient: tf.Tensor, variable: tf.Variable) -> tf.Tensor:
        if self.weight_decay and self._use_weight_decay(variable):
            return gradient + _const(self.weight_decay, variable.dtype) * variable
        return gradient


@keras.saving.register_keras_serializable(package="tfascl")
class LARS(_CoupledWeightDecayMixin, keras.optimizers.Optimizer):
    r"""Layer-wise Adaptive Rate Scaling (You et al., 2017) with heavy-ball momentum.

    This is the SimCLR / BYOL / TF Model Garden form ("classic momentum": the learning rate is
    inside the momentum buffer). For every variable ``w`` (one "layer") with gradient ``g``, at
    learning rate ``lr`` of the current step::

        g' = g + wd * w                               # only if w is not excluded from decay
        trust = eta * ||w|| / (||g'|| + eps)           # if ||w|| > 0 and ||g'|| > 0, else 1;
                                                       # trust = 1 for vars excluded from adaptation
        v = momentum * v + lr * trust * g'            # v starts at 0
        w = w - v                                     # nesterov=False
        w = w - (momentum * v + lr * trust * g')      # nesterov=True (uses the new v)

    ``||.||`` is the Frobenius norm of the whole variable. ``eta`` is ``trust_coefficient``.

    Differences from solo-learn's (PyTorch) LARS, for whoever compares runs: solo-learn uses
    ``trust = eta * ||w|| / (||g|| + wd * ||w|| + eps)`` and keeps ``lr`` outside the buffer
    (``v = momentum * v + trust * g'``; ``w -= lr * v``). Both coincide for a constant learning
    rate when ``wd = 0`` and ``eps = 0``.

    Exclusion. Call ``exclude_from_weight_decay(var_names=...)`` (or pass
    ``exclude_from_weight_decay=``) before the first step to exempt variables from the decay;
    see the module docstring for how Keras matches names. With
    ``exclude_from_layer_adaptation=None`` (default) the same variables are also exempt from
    the trust ratio, as in SimCLR / BYOL for BatchNorm and biases; pass a list of regular
    expressions (``re.search`` in ``variable.name``, same rule as Keras) to choose them
    separately, or ``[]`` to adapt every variable.

    Keras' own decoupled decay (``w -= lr * wd * w`` before the update) is switched off, so
    ``weight_decay`` acts only through ``g'``.

    Args:
        learning_rate: Float, ``LearningRateSchedule`` or callable.
        momentum: Momentum factor in ``[0, 1)``; 0 disables the buffer.
        weight_decay: Coupled L2 coefficient ``wd``.
        trust_coefficient: ``eta`` of the trust ratio.
        eps: Added to ``||g'||`` in the trust ratio's denominator.
        nesterov: Nesterov momentum.
        exclude_from_weight_decay: Optional variable-name patterns, forwarded to
            ``exclude_from_weight_decay(var_names=...)``; kept in ``get_config``.
        exclude_from_layer_adaptation: Optional patterns of variables with ``trust = 1``;
            ``None`` means "the variables excluded from weight decay".
        **kwargs: Other ``keras.optimizers.Optimizer`` arguments (``clipnorm``, ``name``, ...).
    """

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 0.0,
        nesterov: bool = False,
        exclude_from_weight_decay: Sequence[str] | None = None,
        exclude_from_layer_adaptation: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}.")
        if weight_decay is not None and weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}.")
        if trust_coefficient <= 0:
            raise ValueError(f"`trust_coefficient` must be > 0, got {trust_coefficient}.")
        if eps < 0:
            raise ValueError(f"`eps` must be >= 0, got {eps}.")
        self.momentum = float(momentum)
        self.trust_coefficient = float(trust_coefficient)
        self.eps = float(eps)
        self.nesterov = bool(nesterov)
        self.exclude_from_layer_adaptation = (
            None if exclude_from_layer_adaptation is None else tuple(exclude_from_layer_adaptation)
        )
        self._init_exclusions(exclude_from_weight_decay)

    def build(self, var_list: Sequence[keras.Variable]) -> None:
        """Creates one momentum buffer per variable (none when ``momentum == 0``)."""
        if self.built:
            return
        super().build(var_list)
        self._momentums = []
        if self.momentum:
            self._momentums = [
                self.add_variable_from_reference(v, name="momentum") for v in var_list
            ]

    def _use_layer_adaptation(self, variable: tf.Variable) -> bool:
        if self.exclude_from_layer_adaptation is None:
            return self._use_weight_decay(variable)
        return not any(re.search(p, variable.name) for p in self.exclude_from_layer_adaptation)

    def update_step(
        self, gradient: tf.Tensor, variable: tf.Variable, learning_rate: tf.Tensor
    ) -> None:
        """Applies one LARS step to ``variable`` (see the class docstring for the formula)."""
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        grad = self._decayed_gradient(ops.cast(_dense(gradient), dtype), variable)

        if self._use_layer_adaptation(variable):
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(grad)))
            both_positive = ops.logical_and(ops.greater(w_norm, 0), ops.greater(g_norm, 0))
            # A safe denominator keeps 0/0 out of the graph even in the branch `where` discards.
            safe_g_norm = ops.where(ops.greater(g_norm, 0), g_norm, ops.ones_like(g_norm))
            ratio = (
                _const(self.trust_coefficient, dtype)
                * w_norm
                / (safe_g_norm + _const(self.eps, dtype))
            )
            lr = lr * ops.where(both_positive, ratio, ops.ones_like(ratio))

        step = lr * grad
        if self.momentum:
            momentum = _const(self.momentum, dtype)
            v = self._momentums[self._get_variable_index(variable)]
            self.assign(v, momentum * v + step)
            if self.nesterov:
                step = momentum * v + step
            else:
                step = v
        self.assign_sub(variable, step)

    def get_config(self) -> dict:
        """Returns the constructor arguments (exclusion *names* included, ``var_list`` not)."""
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "trust_coefficient": self.trust_coefficient,
                "eps": self.eps,
                "nesterov": self.nesterov,
                "exclude_from_weight_decay": _as_list(self._wd_exclude_names),
                "exclude_from_layer_adaptation": _as_list(self.exclude_from_layer_adaptation),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfascl")
class CoupledSGD(_CoupledWeightDecayMixin, keras.optimizers.SGD):
    """SGD with momentum exactly as ``torch.optim.SGD`` (dampening 0), coupled weight decay.

    For every variable ``w`` with gradient ``g`` at learning rate ``lr``::

        g' = g + wd * w                 # only if w is not excluded from weight decay
        b  = momentum * b + g'          # b starts at 0, so the first b is g' as in PyTorch
        d  = g' + momentum * b          # nesterov=True
        d  = b                          # nesterov=False
        w  = w - lr * d                 # momentum == 0: w = w - lr * g'

    Two things differ from ``keras.optimizers.SGD``: Keras' ``weight_decay`` is decoupled
    (``w -= lr * wd * w``, not passed through the momentum buffer), and Keras keeps ``lr``
    inside the buffer (``m = momentum * m - lr * g``), which diverges from PyTorch as soon as the
    learning rate changes between steps (any schedule). The reference MoCo / ASCL code trains
    with ``torch.optim.SGD(momentum=0.9, weight_decay=5e-4)``; this class reproduces it.

    The momentum buffers are built by ``keras.optimizers.SGD.build`` (``self.momentums``) but
    hold ``b`` above (no ``lr``, positive sign), so they are not interchangeable with a Keras
    SGD checkpoint.

    Args:
        learning_rate: Float, ``LearningRateSchedule`` or callable.
        momentum: Momentum factor in ``[0, 1]``.
        nesterov: Nesterov momentum (PyTorch's formula above).
        weight_decay: Coupled L2 coefficient ``wd``.
        exclude_from_weight_decay: Optional variable-name patterns, forwarded to
            ``exclude_from_weight_decay(var_names=...)``; kept in ``get_config``.
        **kwargs: Other ``keras.optimizers.Optimizer`` arguments.
    """

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        exclude_from_weight_decay: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        if weight_decay is not None and weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}.")
        super().__init__(
            learning_rate=learning_rate,
            momentum=float(momentum),
            nesterov=bool(nesterov),
            weight_decay=weight_decay,
            **kwargs,
        )
        self._init_exclusions(exclude_from_weight_decay)

    def update_step(
        self, gradient: tf.Tensor, variable: tf.Variable, learning_rate: tf.Tensor
    ) -> None:
        """Applies one PyTorch-style SGD step to ``variable``."""
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        grad = self._decayed_gradient(ops.cast(_dense(gradient), dtype), variable)
        direction = grad
        if self.momentum:
            momentum = _const(self.momentum, dtype)
            b = self.momentums[self._get_variable_index(variable)]
            self.assign(b, momentum * b + grad)
            direction = grad + momentum * b if self.nesterov else b
        self.assign_sub(variable, lr * direction)

    def get_config(self) -> dict:
        """Returns the constructor arguments (exclusion *names* included, ``var_list`` not)."""
        config = super().get_config()
        config["exclude_from_weight_decay"] = _as_list(self._wd_exclude_names)
        return config


def _as_list(names: Sequence[str] | None) -> list[str] | None:
    return None if names is None else list(names)


def warmup_cosine(
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    final_lr: float = 0.0,
    warmup_start_lr: float = 0.0,
    name: str = "WarmupCosine",
) -> keras.optimizers.schedules.CosineDecay:
    r"""Per-step linear warm-up, then cosine decay: ``keras.optimizers.schedules.CosineDecay``.

    With ``s`` the step (the optimizer's ``iterations``, from 0), ``W = warmup_steps``,
    ``T = total_steps``, ``b = base_lr``, ``f = final_lr``, ``a = warmup_start_lr``::

        lr(s) = a + (b - a) * s / W                                   0 <= s < W
        lr(s) = f + (b - f) * (1 + cos(pi * (s - W) / (T - W))) / 2   W <= s < T
        lr(s) = f                                                     s >= T

    Keras' ``CosineDecay`` computes exactly this with ``initial_learning_rate = a`` (``b``
    without warm-up), ``warmup_target = b``, ``decay_steps = T - W`` and ``alpha = f / b``
    (float32, as the optimizer's rate). This function only translates the arguments. One
    edge differs from the formula above: with ``W == T`` (warm-up over the whole run)
    Keras needs ``decay_steps >= 1``, so ``lr(T) = b`` and ``f`` is reached one step later;
    no training step (``s < T``) sees the difference.

    Args:
        base_lr: Peak learning rate ``b > 0``, reached at the end of the warm-up.
        total_steps: Step ``T`` at which the cosine reaches ``final_lr``; ``T >= W``.
        warmup_steps: Warm-up length ``W >= 0``.
        final_lr: ``f >= 0``.
        warmup_start_lr: ``a``.
        name: Name of the schedule (its ops' name scope).

    Returns:
        A ``CosineDecay``; its ``get_config`` round-trips through ``.keras`` files.

    Raises:
        ValueError: If ``base_lr <= 0``, ``final_lr < 0``, ``warmup_steps < 0`` or
            ``total_steps < warmup_steps``.
    """
    if base_lr <= 0 or final_lr < 0:
        raise ValueError(f"Need base_lr > 0 and final_lr >= 0, got {base_lr} and {final_lr}.")
    if warmup_steps < 0:
        raise ValueError(f"`warmup_steps` must be >= 0, got {warmup_steps}.")
    if total_steps < warmup_steps:
        raise ValueError(
            f"`total_steps` ({total_steps}) must be >= `warmup_steps` ({warmup_steps})."
        )
    decay = {"decay_steps": max(int(total_steps) - int(warmup_steps), 1)}
    decay.update(alpha=float(final_lr) / float(base_lr), name=name)
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(float(base_lr), **decay)
    # Floats throughout: CosineDecay computes in the dtype of initial_learning_rate.
    return keras.optimizers.schedules.CosineDecay(
        float(warmup_start_lr),
        warmup_target=float(base_lr),
        warmup_steps=int(warmup_steps),
        **decay,
    )


def multistep_decay(
    base_lr: float,
    steps_per_epoch: int,
    milestones: Sequence[int] = (60, 80),
    gamma: float = 0.1,
) -> keras.optimizers.schedules.PiecewiseConstantDecay:
    """PyTorch's ``MultiStepLR`` on a per-step clock: ``PiecewiseConstantDecay``.

    ``lr(s) = base_lr * gamma ** #{m in milestones : s // steps_per_epoch >= m}``, so with
    milestones (60, 80) epochs 0-59 train at ``base_lr``, 60-79 at ``base_lr * gamma`` and 80-
    at ``base_lr * gamma**2`` (epochs from 0, as PyTorch counts them; a milestone given twice
    counts twice, as in PyTorch). Keras' schedule keeps ``values[i]`` while
    ``s <= boundaries[i]``, so milestone ``m`` is the boundary ``m * steps_per_epoch - 1``.
    No warm-up (the linear probe has none).

    Args:
        base_lr: Learning rate of the first epochs.
        steps_per_epoch: Optimizer steps per epoch (>= 1).
        milestones: Epochs at which the rate is multiplied by ``gamma``, in any order.
        gamma: The factor.

    Returns:
        A ``PiecewiseConstantDecay`` over the optimizer's step.

    Raises:
        ValueError: If ``steps_per_epoch < 1``.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    boundaries = sorted(int(m) * int(steps_per_epoch) - 1 for m in milestones)
    values = [float(base_lr) * float(gamma) ** i for i in range(len(boundaries) + 1)]
    if not boundaries:  # Keras needs one boundary; a constant rate is two equal pieces
        boundaries, values = [0], values * 2
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


@keras.saving.register_keras_serializable(package="tfascl")
class PerEpoch(keras.optimizers.schedules.LearningRateSchedule):
    """``schedule`` stepped once per epoch: ``lr(s) = schedule(s // E * E)``, ``E`` the
    steps of an epoch.

    MoCo's ``main_moco.py`` sets the learning rate at the start of each epoch
    (``adjust_learning_rate(optimizer, epoch, args)``: ``lr · ½(1 + cos(π·epoch/epochs))``)
    and keeps it for the epoch; with :func:`warmup_cosine` without warm-up over
    ``epochs · E`` steps this is that schedule exactly, since the per-step cosine at step
    ``e · E`` is ``½(1 + cos(π·e/epochs))``.

    Args:
        schedule: A per-step schedule (or a float: then constant).
        steps_per_epoch: ``E >= 1``.
    """

    def __init__(
        self, schedule: keras.optimizers.schedules.LearningRateSchedule, steps_per_epoch: int
    ) -> None:
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.schedule = schedule
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        epoch_start = (ops.convert_to_tensor(step) // self.steps_per_epoch) * self.steps_per_epoch
        return self.schedule(epoch_start) if callable(self.schedule) else self.schedule

    def get_config(self) -> dict:
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "steps_per_epoch": self.steps_per_epoch,
        }

    @classmethod
    def from_config(cls, config: dict) -> PerEpoch:
        schedule = keras.optimizers.schedules.deserialize(config["schedule"])
        return cls(schedule, config["steps_per_epoch"])


def scaled_learning_rate(
    base_lr: float, global_batch_size: int, reference_batch: int = 256
) -> float:
    """Linear scaling rule (Goyal et al., 2017): ``base_lr * global_batch_size / reference_batch``.

    Args:
        base_lr: Learning rate tuned for ``reference_batch``.
        global_batch_size: Batch size summed over all replicas.
        reference_batch: Batch size ``base_lr`` refers to (256 in SimCLR / BYOL / MoCo).

    Returns:
        The scaled learning rate.
    """
    if global_batch_size <= 0 or reference_batch <= 0:
        raise ValueError(
            "Batch sizes must be positive, got "
            f"global_batch_size={global_batch_size}, reference_batch={reference_batch}."
        )
    return base_lr * global_batch_size / reference_batch


def build_optimizer(
    name: str,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    exclude_bn_and_bias: bool = True,
    nesterov: bool = False,
) -> keras.optimizers.Optimizer:
    """Builds an optimizer by name.

    ============  =====================================================================
    ``name``      optimizer and weight decay
    ============  =====================================================================
    ``"sgd"``     :class:`CoupledSGD` (PyTorch SGD), coupled L2: ``g += wd * w``
    ``"lars"``    :class:`LARS`, coupled L2 inside the trust ratio
    ``"adamw"``   ``keras.optimizers.AdamW``, decoupled: ``w -= lr * wd * w``
    ``"lamb"``    ``keras.optimizers.Lamb``, decoupled like AdamW (Keras applies it outside
                  the trust ratio, unlike the LAMB paper)
    ============  =====================================================================

    ``momentum`` and ``nesterov`` apply to sgd and lars only; adamw and lamb keep their Keras
    defaults (``beta_1 = 0.9``).

    Args:
        name: One of :data:`OPTIMIZER_NAMES` (case-insensitive).
        learning_rate: Float or schedule.
        weight_decay: Weight-decay coefficient (0 disables it).
        momentum: Momentum of sgd / lars.
        exclude_bn_and_bias: Exempt BatchNorm/LayerNorm ``gamma``/``beta`` and every ``bias``
            from weight decay (and, for lars, from the trust ratio) via
            :data:`BN_AND_BIAS_PATTERNS`.
        nesterov: Nesterov momentum for sgd / lars.

    Returns:
        An unbuilt Keras optimizer.

    Raises:
        ValueError: If ``name`` is not one of :data:`OPTIMIZER_NAMES`.
    """
    key = name.lower()
    excluded = list(BN_AND_BIAS_PATTERNS) if exclude_bn_and_bias else None
    if key == "sgd":
        return CoupledSGD(
            learning_rate,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            exclude_from_weight_decay=excluded,
        )
    if key == "lars":
        return LARS(
            learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=nesterov,
            exclude_from_weight_decay=excluded,
        )
    if key == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    elif key == "lamb":
        # Lamb's weight_decay=0.0 would still run the (empty) decay ops; None skips them.
        opt = keras.optimizers.Lamb(learning_rate=learning_rate, weight_decay=weight_decay or None)
    else:
        raise ValueError(
            f"Unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZER_NAMES)}."
        )
    if excluded:
        opt.exclude_from_weight_decay(var_names=excluded)
    return opt
