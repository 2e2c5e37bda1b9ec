"""What the backbone's explicit padding costs: ResNet-18 forward + backward, two paddings.

    PYTHONPATH=. python -m benchmarks.padding_cost [--width=64] [--batch_size=128]
        [--rounds=8] [--calls=2] [--output=benchmarks/results/padding_cost.json]

Until 67b6dd0 ``tfascl.models.backbones`` padded every k×k conv explicitly
(``ZeroPadding2D(k // 2)``, then ``padding="valid"``) so that stride-2 convs pad as
torchvision does. For a stride-1 conv that is the same arithmetic as ``padding="same"``, but
the graph gains a Pad per conv (a copy of the activation) and a Slice in the backward pass;
since 67b6dd0 stride-1 convs use ``"same"``. This builds the backbone twice, with every conv
padded explicitly ("explicit", the layout before) and as tfascl builds it now
("same_stride1": ``"same"`` wherever the stride is 1, stride-2 convs padded explicitly),
gives both the same weights, checks that their features and gradients agree, and times
``forward + gradient`` of each on one batch, in alternating windows (A B, B A, ...) of
``--calls`` calls. Prints and writes one JSON record.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from benchmarks.compare_commits import read_loadavg, round_order, spread
from tfascl.models import backbones


def explicit_padding_conv(x, filters: int, kernel: int, stride: int, name: str):  # noqa: ANN001, ANN201
    """``backbones._conv`` before 67b6dd0: every k×k conv after an explicit ``ZeroPadding2D``
    and run with ``padding="valid"`` (the same output as today's)."""
    if kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="valid",
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "normal"),
        name=name,
    )(x)


ORIGINAL_CONV = backbones._conv


def build_pair(width: int, image_size: int = 32) -> dict[str, keras.Model]:
    """The backbone padded explicitly everywhere (before 67b6dd0) and as tfascl builds it
    now, with the same weights (the stride-1 pad layers are weightless identities now, so
    the weights come in the same order)."""
    backbones._conv = explicit_padding_conv
    try:
        explicit = backbones.resnet("resnet18", width=width, image_size=image_size, stem="cifar")
    finally:
        backbones._conv = ORIGINAL_CONV
    same = backbones.resnet("resnet18", width=width, image_size=image_size, stem="cifar")
    same.set_weights(explicit.get_weights())
    return {"explicit": explicit, "same_stride1": same}


def step_function(model: keras.Model) -> Any:
    """``images [B, H, W, 3] → (features [B, F], gradients)``: forward and backward, traced."""

    @tf.function
    def step(images: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        with tf.GradientTape() as tape:
            features = model(images, training=True)
            loss = tf.reduce_mean(tf.square(features))
        return features, tape.gradient(loss, model.trainable_variables)

    return step


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=2, help="forward+backward calls a window")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    models = build_pair(args.width)
    images = tf.constant(
        np.random.default_rng(0).standard_normal((args.batch_size, 32, 32, 3), np.float32)
    )
    steps = {label: step_function(model) for label, model in models.items()}
    outputs = {label: step(images) for label, step in steps.items()}  # traces
    for step in steps.values():
        step(images)[0].numpy()  # a second call: the first ones after tracing run slower
    features_diff = float(
        tf.reduce_max(tf.abs(outputs["explicit"][0] - outputs["same_stride1"][0]))
    )
    grad_diff = max(
        float(tf.reduce_max(tf.abs(a - b)))
        for a, b in zip(outputs["explicit"][1], outputs["same_stride1"][1], strict=True)
    )
    windows = []
    for r, order in enumerate(round_order(list(steps), args.rounds)):
        for label in order:
            before = read_loadavg()
            started = time.perf_counter()
            for _ in range(args.calls):
                features, _ = steps[label](images)
                features.numpy()  # waits for the call to finish
            seconds = (time.perf_counter() - started) / args.calls
            windows.append(
                {"label": label, "round": r, "ms": round(1000 * seconds, 1),
                 "loadavg_before": before, "loadavg_after": read_loadavg()}
            )  # fmt: skip
            print(json.dumps(windows[-1]), file=sys.stderr, flush=True)
    per = {label: spread([w["ms"] for w in windows if w["label"] == label]) for label in steps}
    pads = {
        label: sum(isinstance(layer, keras.layers.ZeroPadding2D) for layer in model.layers)
        for label, model in models.items()
    }
    result = {
        "kind": "padding_cost",
        "command": "python -m benchmarks.padding_cost "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "width": args.width,
        "batch_size": args.batch_size,
        "calls_per_window": args.calls,
        "zero_padding_layers": pads,
        "max_abs_feature_diff": features_diff,
        "max_abs_gradient_diff": grad_diff,
        "ms_per_call": per,
        "same_over_explicit": round(per["same_stride1"]["median"] / per["explicit"]["median"], 4),
        "windows": windows,
        "tfascl_file": backbones.__file__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "median_loadavg": statistics.median(w["loadavg_after"][0] for w in windows),
    }
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "windows"}, indent=2))
    return result


if __name__ == "__main__":
    main()
