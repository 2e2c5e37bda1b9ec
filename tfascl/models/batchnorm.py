"""Batch normalisation choices for contrastive encoders.

Contrastive learning with batch norm can "cheat": when all keys of a batch
share one set of BN statistics, the positive pair can be found through them
(He et al., MoCo, §3.3). The reference code fights this with shuffle BN across
GPUs (each GPU normalises a random share of the global batch of keys: ``"shuffle"``
here, see ``contrastive.shuffled_encode``), and on one GPU (the MoCo CIFAR demo and
the ASCL code) with *split* ("ghost") BN: the batch is normalised in ``num_splits``
independent groups, as if it lived on that many GPUs.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

NORMS = ("split", "batch", "sync", "shuffle")
# What a key (momentum) encoder may use besides its query encoder's norm.
KEY_NORMS = ("split", "batch", "sync")

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
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        normed, mean, variance = split_batch_norm(
            tf.cast(inputs, tf.float32), gamma, beta, self.num_splits, self.epsilon
        )
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
        )
        return tf.cast(normed, self.compute_dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_splits": self.num_splits}


def split_batch_norm(
    x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, num_splits: int, epsilon: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Training-mode batch norm over ``num_splits`` groups of the batch, with its gradient.

    The batch [B, ..., C] is viewed as S groups [S, B/S, ..., C] (consecutive samples);
    each group is normalised with its own mean μ_s and biased variance σ²_s over the
    B/S · (spatial) values of each channel: ``y = γ · (x − μ_s)/√(σ²_s + ε) + β``.

    The gradient is the closed form of batch norm's backward pass
    (``dx = γ/(n·√(σ²+ε)) · (n·dy − Σdy − x̂·Σ(dy·x̂))`` per group, n values per channel)
    rather than autodiff through the mean and variance: on a CPU that takes under half
    the time (see benchmarks/split_bn.py), and split BN sits after every convolution.

    Args:
        x: [B, ..., C] float32, B divisible by S.
        gamma: [C] float32 scale γ.
        beta: [C] float32 offset β.
        num_splits: S.
        epsilon: ε.

    Returns:
        ``(y, mean, variance)``: y [B, ..., C]; the mean and biased variance [C] averaged
        over the groups (what the moving statistics are updated with), without gradient.
    """
    grouped = tf.reshape(x, tf.concat([[num_splits, -1], tf.shape(x)[1:]], axis=0))
    axes = list(range(1, x.shape.rank))  # all but the group and channel axes
    count = tf.cast(tf.reduce_prod(tf.shape(grouped)[1:-1]), tf.float32)  # n
    mean, variance = tf.nn.moments(tf.stop_gradient(grouped), axes, keepdims=True)
    inv_std = tf.math.rsqrt(variance + epsilon)  # [S, 1, ..., 1, C]

    @tf.custom_gradient
    def normalise(grouped: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor) -> tuple:
        x_hat = (grouped - mean) * inv_std
        y = x_hat * gamma + beta

        def gradient(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            sum_dy = tf.reduce_sum(dy, axes, keepdims=True)
            sum_dy_x_hat = tf.reduce_sum(dy * x_hat, axes, keepdims=True)
            dx = (gamma * inv_std / count) * (count * dy - sum_dy - x_hat * sum_dy_x_hat)
            over_groups = [0, *axes]
            return (
                dx,
                tf.reduce_sum(sum_dy_x_hat, over_groups),
                tf.reduce_sum(sum_dy, over_groups),
            )

        return y, gradient

    y = tf.reshape(normalise(grouped, gamma, beta), tf.shape(x))
    channels = [-1]
    return (
        y,
        tf.reshape(tf.reduce_mean(mean, axis=0), channels),
        tf.reshape(tf.reduce_mean(variance, axis=0), channels),
    )


def norm_factory(norm: str = "split", num_splits: int = 8) -> Callable[..., keras.layers.Layer]:
    """Returns a constructor of the chosen normalisation layer.

    Args:
        norm: ``"split"`` (ghost BN over ``num_splits`` groups, for one device),
            ``"batch"`` (plain BN: per replica under a strategy), ``"shuffle"``
            (the same layer; the name tells the queue methods to shuffle the key
            batch across replicas, MoCo's shuffle BN) or ``"sync"`` (BN synchronised
            across replicas).
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
        # Per-replica BN ("batch", "shuffle") keeps each replica's moving statistics, as
        # DDP without buffer broadcasting: under several workers each holds its own, and
        # the chief's are the ones saved (an aggregated update would need a merge_call,
        # which the per-replica XLA step cannot hold).
        return keras.layers.BatchNormalization(synchronized=norm == "sync", **kwargs)

    return make
