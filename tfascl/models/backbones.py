"""ResNet backbones with the stems of the reference code.

``stem="cifar"``: 3×3 stride-1 conv, no max-pool (32 px: CIFAR-10/100).
``stem="cifar_pool"``: the same conv followed by a 3×3 stride-2 max-pool
(64/96 px: STL-10, Tiny ImageNet, as the ASCL code does).
``stem="imagenet"``: 7×7 stride-2 conv and max-pool (224 px).

The output is the globally average-pooled feature vector [B, F]: the
"backbone features" of every SSL paper, used by kNN, linear probes and export.

Padding is torchvision's: every k×k conv and the max-pool pad ``k // 2`` pixels on
each side: explicitly (``ZeroPadding2D``, then ``padding="valid"``) at stride 2, and
with ``padding="same"``, which is the same there, at stride 1.
Keras's ``padding="same"`` would pad a stride-2 layer asymmetrically (nothing at
the top and left, one more pixel at the bottom and right), so weights ported from
torchvision would give other outputs.
"""

from __future__ import annotations

import keras
from keras import layers

from tfascl.models.batchnorm import norm_factory

STEMS = ("cifar", "cifar_pool", "imagenet")
# depth -> (block type, blocks per stage)
RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


def _conv(x, filters: int, kernel: int, stride: int, name: str):  # noqa: ANN001, ANN202
    # torchvision pads k // 2 on every side, whatever the stride (see module doc). At stride
    # 1 Keras's "same" pads exactly that inside the conv; an explicit ZeroPadding2D there
    # copied every activation forward and backward (34 Pad + 32 Slice ops a ResNet-18
    # step, 0.87x the backbone's speed at width 64 on a CPU: benchmarks/padding_cost.py).
    # The stride-1 layer stays, as an identity, so the layers' positions, by which
    # tf.train.Checkpoint names their weights (model/_operations/<i>/...), do not move
    # and checkpoints written before still restore.
    if kernel > 1:
        pad = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad") if stride > 1 else (
            layers.Identity(name=f"{name}_pad"))  # fmt: skip
        x = pad(x)
    # No bias: every conv is followed by BN. He-normal (fan_out) as torchvision.
    return layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same" if kernel > 1 and stride == 1 else "valid",
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "normal"),
        name=name,
    )(x)


def _block(x, filters, stride, kind, norm, name):  # noqa: ANN001, ANN202
    expansion = 4 if kind == "bottleneck" else 1
    shortcut = x
    if stride != 1 or x.shape[-1] != filters * expansion:
        shortcut = _conv(x, filters * expansion, 1, stride, f"{name}_down_conv")
        shortcut = norm(name=f"{name}_down_bn")(shortcut)
    if kind == "basic":
        y = _conv(x, filters, 3, stride, f"{name}_conv1")
        y = layers.ReLU(name=f"{name}_relu1")(norm(name=f"{name}_bn1")(y))
        y = _conv(y, filters, 3, 1, f"{name}_conv2")
        y = norm(name=f"{name}_bn2")(y)
    else:
        y = _conv(x, filters, 1, 1, f"{name}_conv1")
        y = layers.ReLU(name=f"{name}_relu1")(norm(name=f"{name}_bn1")(y))
        y = _conv(y, filters, 3, stride, f"{name}_conv2")
        y = layers.ReLU(name=f"{name}_relu2")(norm(name=f"{name}_bn2")(y))
        y = _conv(y, filters * expansion, 1, 1, f"{name}_conv3")
        y = norm(name=f"{name}_bn3")(y)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def resnet(
    depth: str = "resnet18",
    *,
    image_size: int | None = 32,
    stem: str = "cifar",
    width: int = 64,
    norm: str = "split",
    num_splits: int = 8,
    name: str | None = None,
) -> keras.Model:
    """A ResNet feature extractor: images [B, H, W, 3] → features [B, F].

    F is ``8·width`` for ResNet-18/34 and ``32·width`` for ResNet-50 (512 and
    2048 at the standard width 64).

    Args:
        depth: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        image_size: input height and width; ``None`` accepts any size.
        stem: ``"cifar"``, ``"cifar_pool"`` or ``"imagenet"`` (see module doc).
        width: channels of the first stage (64 in the paper; 8–16 for tests).
        norm: ``"split"``, ``"batch"`` or ``"sync"`` (see ``norm_factory``).
        num_splits: groups of split BN.
        name: model name; defaults to ``depth``.

    Returns:
        A functional ``keras.Model``.
    """
    if depth not in RESNETS:
        raise ValueError(f"backbone must be one of {sorted(RESNETS)}, got {depth!r}")
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    kind, stages = RESNETS[depth]
    make_norm = norm_factory(norm, num_splits)
    inputs = keras.Input((image_size, image_size, 3), name="images")
    if stem == "imagenet":
        x = _conv(inputs, width, 7, 2, "stem_conv")
    else:
        x = _conv(inputs, width, 3, 1, "stem_conv")
    x = layers.ReLU(name="stem_relu")(make_norm(name="stem_bn")(x))
    if stem != "cifar":
        # MaxPool2d(3, 2, padding=1). Zeros stand in for torch's −inf padding: the
        # inputs follow a ReLU, so no window's maximum changes.
        x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)
    for stage, blocks in enumerate(stages):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _block(x, width * 2**stage, stride, kind, make_norm, f"stage{stage + 1}_{block}")
    features = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, features, name=name or depth)


def default_stem(image_size: int) -> str:
    """The reference code's stem for an image size: CIFAR ≤ 32 px, pooled ≤ 96, else ImageNet."""
    if image_size <= 32:
        return "cifar"
    if image_size <= 96:
        return "cifar_pool"
    return "imagenet"


def any_size(backbone: keras.Model) -> keras.Model:
    """``backbone``'s own layers (the same weights, not a copy) on inputs of any side.

    The ResNets are fully convolutional with global pooling, but a functional model built
    for S px refuses other sides; this one takes them. What it computes at S px is exactly
    ``backbone``'s, and training ``backbone`` changes it too.
    """
    inputs = keras.Input((None, None, backbone.inputs[0].shape[-1]), name="images")
    return keras.models.clone_model(backbone, input_tensors=inputs, clone_function=lambda x: x)
