"""The momentum (EMA) update of the key encoder, and its schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf


def ema_update(
    target: Sequence[keras.Variable], online: Sequence[keras.Variable], momentum: tf.Tensor
) -> None:
    """``θ_k ← m·θ_k + (1 − m)·θ_q`` for each pair of variables, in place.

    Args:
        target: the momentum encoder's variables θ_k.
        online: the query encoder's variables θ_q, in the same order and shapes.
        momentum: m, a scalar.
    """
    if len(target) != len(online):
        raise ValueError(f"EMA over {len(target)} target and {len(online)} online variables")
    for t, o in zip(target, online):
        m = tf.cast(momentum, t.dtype)
        t.assign(m * t + (1.0 - m) * tf.cast(o, t.dtype))


def cosine_momentum(step: tf.Tensor, total_steps: int, base: float) -> tf.Tensor:
    """BYOL's schedule ``m = 1 − (1 − m₀)·(cos(π·step/T) + 1)/2``: m₀ at step 0, 1 at T."""
    progress = tf.minimum(tf.cast(step, tf.float32) / float(max(total_steps, 1)), 1.0)
    return 1.0 - (1.0 - base) * (tf.cos(math.pi * progress) + 1.0) / 2.0
