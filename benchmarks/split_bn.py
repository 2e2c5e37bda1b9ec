"""Split BN forward + backward: tfascl's closed-form gradient vs autodiff, on this machine.

    PYTHONPATH=. python -m benchmarks.split_bn

Times one training-mode ``SplitBatchNorm`` (8 groups) forward and backward at the shapes of
ResNet-18 width 64, batch 256, CIFAR (each stage's activation and the projector's hidden
layer), once with ``tfascl.models.batchnorm.split_batch_norm`` and once with the same maths
left to TensorFlow's autodiff (mean, variance, normalise, scale, shift), and prints the
median milliseconds of each and their largest relative difference. One JSON line per shape.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import tensorflow as tf

from tfascl.models.batchnorm import split_batch_norm

SPLITS, EPSILON = 8, 1e-5
SHAPES = ((256, 32, 32, 64), (256, 16, 16, 128), (256, 8, 8, 256), (256, 4, 4, 512), (256, 2048))


def autodiff_split_batch_norm(
    x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, num_splits: int, epsilon: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The same function as ``split_batch_norm``, differentiated by TensorFlow."""
    grouped = tf.reshape(x, (num_splits, -1, *x.shape[1:]))
    axes = list(range(1, x.shape.rank))
    mean = tf.reduce_mean(grouped, axes, keepdims=True)
    variance = tf.math.reduce_variance(grouped, axes, keepdims=True)
    y = (grouped - mean) * tf.math.rsqrt(variance + epsilon) * gamma + beta
    return (
        tf.reshape(y, tf.shape(x)),
        tf.reshape(tf.reduce_mean(mean, 0), [-1]),
        tf.reshape(tf.reduce_mean(variance, 0), [-1]),
    )


def time_forward_backward(function: object, shape: tuple[int, ...], repeats: int = 10) -> tuple:
    """Median ms of forward + backward, and the outputs and gradients of the last call."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal(shape).astype(np.float32) * 2 + 1)
    gamma = tf.constant(rng.random(shape[-1]).astype(np.float32) + 0.5)
    beta = tf.constant(rng.standard_normal(shape[-1]).astype(np.float32))
    upstream = tf.constant(rng.standard_normal(shape).astype(np.float32))

    @tf.function
    def step() -> tuple:
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            outputs = function(x, gamma, beta, SPLITS, EPSILON)
            loss = tf.reduce_sum(outputs[0] * upstream)
        return outputs, tape.gradient(loss, [x, gamma, beta])

    result = step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = tf.nest.map_structure(lambda t: t.numpy(), step())
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times), tf.nest.flatten(result)


def main() -> None:
    for shape in SHAPES:
        closed_ms, closed = time_forward_backward(split_batch_norm, shape)
        auto_ms, auto = time_forward_backward(autodiff_split_batch_norm, shape)
        difference = max(
            float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12)) for a, b in zip(closed, auto)
        )
        print(
            json.dumps(
                {
                    "shape": shape,
                    "splits": SPLITS,
                    "closed_form_ms": round(closed_ms, 1),
                    "autodiff_ms": round(auto_ms, 1),
                    "speedup": round(auto_ms / closed_ms, 2),
                    "max_relative_difference": float(f"{difference:.1e}"),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
