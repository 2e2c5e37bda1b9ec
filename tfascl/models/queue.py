"""The queue of keys (MoCo's dictionary): one component for every queue method."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from tfascl.distribute import gather_across_replicas


def _unit_rows(shape, dtype=None):  # noqa: ANN001, ANN202
    rows = keras.random.normal(shape, dtype=dtype or "float32")
    return rows / ops.norm(rows, axis=1, keepdims=True)


class KeyQueue(keras.layers.Layer):
    """A FIFO queue of M L2-normalised keys [M, D], with their labels [M].

    Keys of a step are written at rows ``[ptr, ptr + N)`` and the pointer moves
    on by N modulo M, so M must be a multiple of the keys enqueued per step
    (the global batch). Under a ``tf.distribute`` strategy the keys of all
    replicas are gathered first, and the variables use
    ``ONLY_FIRST_REPLICA`` aggregation: every replica holds the same queue.

    Labels are stored beside the keys only to monitor neighbour purity; they
    never enter a loss. Entries not yet written have label −1.

    Args:
        size: M, the number of keys.
        dim: D, the key dimension.
        batch_size: keys enqueued per step, if known; checked against M now.
    """

    def __init__(self, size: int, dim: int, batch_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if size <= 0:
            raise ValueError(f"queue size must be positive, got {size}")
        if batch_size is not None:
            check_queue_size(size, batch_size)
        self.size, self.dim = size, dim
        self.keys = self.add_weight(
            shape=(size, dim),
            initializer=_unit_rows,
            trainable=False,
            aggregation="only_first_replica",
            name="keys",
        )
        self.labels = self.add_weight(
            shape=(size,),
            initializer=keras.initializers.Constant(-1),
            dtype="int32",
            trainable=False,
            aggregation="only_first_replica",
            name="labels",
        )
        self.pointer = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            aggregation="only_first_replica",
            name="pointer",
        )
        self.built = True  # all state exists now; there is nothing to infer from inputs

    def enqueue(self, keys: tf.Tensor, labels: tf.Tensor | None = None) -> None:
        """Writes this step's keys [b, D] (and labels [b]) of every replica.

        Args:
            keys: [b, D] L2-normalised keys of this replica; no gradient is kept.
            labels: [b] integer labels, or None (stored as −1).
        """
        keys = tf.stop_gradient(tf.cast(keys, self.keys.dtype))
        if labels is None:
            labels = tf.fill(tf.shape(keys)[:1], -1)
        keys = gather_across_replicas(keys)
        labels = gather_across_replicas(tf.cast(labels, "int32"))
        if keys.shape[0] is not None:
            check_queue_size(self.size, keys.shape[0])
        pointer = tf.convert_to_tensor(self.pointer.value)
        rows = (pointer + tf.range(tf.shape(keys)[0]))[:, None]  # [N, 1]
        self.keys.assign(tf.tensor_scatter_nd_update(self.keys.value, rows, keys))
        self.labels.assign(tf.tensor_scatter_nd_update(self.labels.value, rows, labels))
        self.pointer.assign((pointer + tf.shape(keys)[0]) % self.size)


def check_queue_size(queue_size: int, keys_per_step: int) -> None:
    """Raises a one-line ValueError unless the queue holds a whole number of steps."""
    if keys_per_step <= 0 or queue_size % keys_per_step:
        raise ValueError(
            f"queue_size={queue_size} must be a multiple of the keys enqueued per step "
            f"({keys_per_step}: the global batch size, twice it with a symmetric loss)"
        )
