"""Projection and prediction heads (MLPs) of the reference code."""

from __future__ import annotations

import keras
from keras import layers

from tfascl.models.batchnorm import norm_factory


def mlp_head(
    input_dim: int,
    hidden_dim: int = 2048,
    output_dim: int = 128,
    *,
    batch_norm: bool = False,
    norm: str = "split",
    num_splits: int = 8,
    name: str = "projector",
) -> keras.Model:
    """Linear(input, hidden) – [BN] – ReLU – Linear(hidden, output).

    The ASCL/MoCo v2 projector is ``mlp_head(F, 2048, 128)`` without BN; BYOL's
    projector and predictor use BN (``mlp_head(128, 512, 128, batch_norm=True)``
    is the BYOL predictor of the ASCL code).

    Args:
        input_dim: size of the input vector.
        hidden_dim: size of the hidden layer.
        output_dim: size of the output.
        batch_norm: put a normalisation layer after the hidden Linear.
        norm: which one (see ``norm_factory``).
        num_splits: groups of split BN.
        name: model name.

    Returns:
        A functional ``keras.Model`` mapping [B, input_dim] → [B, output_dim].
    """
    inputs = keras.Input((input_dim,), name=f"{name}_in")
    x = layers.Dense(hidden_dim, use_bias=not batch_norm, name=f"{name}_hidden")(inputs)
    if batch_norm:
        x = norm_factory(norm, num_splits)(name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    outputs = layers.Dense(output_dim, name=f"{name}_out")(x)
    return keras.Model(inputs, outputs, name=name)
