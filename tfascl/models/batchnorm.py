"""Batch normalisation choices for contrastive encoders.

Contrastive learning with batch norm can "cheat": when all keys of a batch
share one set of BN statistics, the positive pair can be found through them
(He et al., MoCo, §3.3). The reference code fights this with shuffle BN across
GPUs, and on one GPU (the MoCo CIFAR demo and the ASCL code) with *split*
("ghost") BN: the batch is normalised in ``num_splits`` independent groups, as
if it lived on that many GPUs.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

NORMS = ("split", "batch", "sync")

# PyTorch's BN defaults (momentum 0.1 on the new value, eps 1e-5), as in the
# reference code; Keras's momentum is the weight of the old value.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="tfascl")
class SplitBatchNorm(keras.layers.BatchNormalization):
    """BatchNormalization computed independently over ``num_splits`` sub-batches.

    In training, a batch [B, ..., C] is viewed as [S, B/S, ..., C] and each of the
    S groups is normalised with its own mean and variance; the moving statistics
    are updated with the average over the groups (as the MoCo CIFAR demo does).
    Inference uses the moving statistics, like plain BN. B must be divisible by S.

    Args:
        num_splits: S, the number of groups.
        **kwargs: passed to ``keras.layers.BatchNormalization`` (channels last).
    """

    def __init__(self, num_splits: int = 8, **kwargs):
        kwargs.setdefault("momentum", BN_MOMENTUM)
        kwargs.setdefault("epsilon", BN_EPSILON)
        super().__init__(**kwargs)
        self.num_splits = num_splits

    def call(self, inputs, training=None, mask=None):  # noqa: ANN001, ANN201
        if not (training and self.trainable) or self.num_splits == 1:
            return super().call(inputs, training=training, mask=mask)
        batch = inputs.shape[0]
        if batch is not None and batch % self.num_splits:
            raise ValueError(
                f"SplitBatchNorm: batch size {batch} is not divisible by "
                f"num_splits={self.num_splits}"
            )
        x = ops.cast(inputs, "float32")
        rest = tuple(ops.shape(x)[1:])
        # [S, B/S, ..., C]: statistics over everything but the split and channel axes.
        grouped = ops.reshape(x, (self.num_splits, -1, *rest))
        axes = tuple(range(1, len(grouped.shape) - 1))
        mean = ops.mean(grouped, axis=axes, keepdims=True)
        variance = ops.var(grouped, axis=axes, keepdims=True)
        normed = (grouped - mean) * ops.rsqrt(variance + self.epsilon)
        if self.scale:
            normed = normed * ops.cast(self.gamma, "float32")
        if self.center:
            normed = normed + ops.cast(self.beta, "float32")
        channels = (-1,)
        batch_mean = ops.reshape(ops.mean(mean, axis=0), channels)
        batch_variance = ops.reshape(ops.mean(variance, axis=0), channels)
        self.moving_mean.assign(
            self.moving_mean * self.momentum + batch_mean * (1.0 - self.momentum)
        )
        self.moving_variance.assign(
            self.moving_variance * self.momentum + batch_variance * (1.0 - self.momentum)
        )
        return ops.cast(ops.reshape(normed, ops.shape(inputs)), self.compute_dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_splits": self.num_splits}


def norm_factory(norm: str = "split", num_splits: int = 8) -> Callable[..., keras.layers.Layer]:
    """Returns a constructor of the chosen normalisation layer.

    Args:
        norm: ``"split"`` (ghost BN over ``num_splits`` groups, for one device),
            ``"batch"`` (plain BN: per replica under a strategy) or ``"sync"``
            (BN synchronised across replicas).
        num_splits: groups of ``"split"``.

    Returns:
        A callable taking layer keyword arguments (e.g. ``name``) and returning a layer.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")

    def make(**kwargs) -> keras.layers.Layer:
        kwargs = {"momentum": BN_MOMENTUM, "epsilon": BN_EPSILON, **kwargs}
        if norm == "split":
            return SplitBatchNorm(num_splits=num_splits, **kwargs)
        return keras.layers.BatchNormalization(synchronized=norm == "sync", **kwargs)

    return make
