"""Arrays that input pipelines read, held in host variables instead of graph constants."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import resource_variable_ops


def _plain_variable(next_creator: Any, **kwargs: Any) -> tf.Variable:
    # Not next_creator: under a strategy's scope that would mirror the array per replica.
    del next_creator
    return resource_variable_ops.ResourceVariable(**kwargs)


def host_variable(array: np.ndarray, name: str) -> tf.Variable:
    """A non-trainable variable on the host CPU holding `array`.

    A tf.data function captures a variable by its handle, so the array never becomes a
    constant of any graph: data sets above TensorFlow's 2 GB proto limit work, and
    serialising a pipeline (distribution, snapshots) stays cheap. It is one plain host
    variable even when made inside a distribution strategy's scope.

    Args:
        array: Any NumPy array (strings as an object array).
        name: Variable name.

    Returns:
        The variable.
    """
    with tf.init_scope(), tf.device("/cpu:0"), tf.variable_creator_scope(_plain_variable):
        return tf.Variable(array, trainable=False, name=name)
