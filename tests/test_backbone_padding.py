"""The ResNets pad as torchvision does: k // 2 on every side, also for stride 2."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfascl.models import resnet


def np_conv(x, kernel, stride, pad):
    """float64 NumPy cross-correlation, zero-padded by ``pad`` on every side (torch's Conv2d)."""
    x = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = kernel.shape[0]
    rows = (x.shape[1] - k) // stride + 1
    cols = (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], rows, cols, kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            window = x[:, i : i + stride * rows : stride, j : j + stride * cols : stride]
            out += window @ kernel[i, j].astype(np.float64)
    return out


def np_max_pool(x, pad=1, k=3, stride=2):
    """torch's MaxPool2d(3, 2, padding=1): −inf padding on every side."""
    x = np.pad(
        x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf
    )
    rows = (x.shape[1] - k) // stride + 1
    cols = (x.shape[2] - k) // stride + 1
    windows = [
        x[:, i : i + stride * rows : stride, j : j + stride * cols : stride]
        for i in range(k)
        for j in range(k)
    ]
    return np.max(windows, axis=0)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return resnet("resnet18", image_size=None, stem="imagenet", width=4, norm="batch")


@pytest.mark.parametrize("size", [32, 27])  # even and odd sides at every layer
@pytest.mark.parametrize(
    ("layer", "stride", "pad"),
    [("stem_conv", 2, 3), ("stage2_0_conv1", 2, 1), ("stage1_0_conv1", 1, 1)],
)
def test_convolutions_pad_symmetrically(model, size, layer, stride, pad):
    conv = model.get_layer(layer)
    source = model.get_layer(f"{layer}_pad").input
    probe = keras.Model(model.input, [source, conv.output])
    images = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
    x, got = probe(images, training=False)
    want = np_conv(np.asarray(x), conv.kernel.numpy(), stride, pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    if stride == 2 and x.shape[1] % 2 == 0:
        # Keras's "same" padding would not pass: on an even side it pads the bottom and
        # right one pixel more than the top and left (odd sides come out symmetric).
        same = keras.layers.Conv2D(conv.filters, conv.kernel_size, strides=stride, padding="same",
                                   use_bias=False)  # fmt: skip
        same.build(x.shape)
        same.set_weights([conv.kernel.numpy()])
        assert np.abs(np.asarray(same(x)) - want).max() > 1e-2


@pytest.mark.parametrize("size", [32, 27])
def test_max_pool_pads_symmetrically(model, size):
    pool = model.get_layer("stem_pool")
    probe = keras.Model(model.input, [model.get_layer("stem_pool_pad").input, pool.output])
    images = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
    x, got = probe(images, training=False)
    want = np_max_pool(np.asarray(x))
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)


def test_stride_one_convs_pad_inside_and_old_checkpoints_still_restore(
    model, monkeypatch, tmp_path
):
    # Only stride-2 layers copy into a padded tensor; at stride 1 "same" pads k // 2 on
    # every side inside the conv, and the "<name>_pad" layer stays as an identity.
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    padded = [conv for conv in convs if conv.kernel_size[0] > 1]
    assert len(padded) == 17  # resnet18: the stem and 16 block convs
    for conv in padded:
        pad = model.get_layer(f"{conv.name}_pad")
        if conv.strides[0] == 1:
            assert isinstance(pad, keras.layers.Identity) and conv.padding == "same"
        else:
            assert isinstance(pad, keras.layers.ZeroPadding2D) and conv.padding == "valid"
    graph = (
        tf.function(lambda x: model(x, training=False))
        .get_concrete_function(tf.TensorSpec([1, 32, 32, 3], tf.float32))
        .graph
    )
    pads = [op for op in graph.get_operations() if op.type in ("Pad", "PadV2", "MirrorPad")]
    assert len(pads) == 5  # stem conv and pool, stages 2-4: first conv

    # tf.train.Checkpoint names a functional model's weights by layer position
    # (model/_operations/<i>/...): a checkpoint of the explicit-padding layout restores
    # every weight into this one, and the two give the same features.
    from benchmarks.padding_cost import explicit_padding_conv  # the layout before 67b6dd0
    from tfascl.models import backbones

    images = np.random.default_rng(0).standard_normal((2, 27, 27, 3)).astype(np.float32)
    for stem in ("cifar", "imagenet"):
        with monkeypatch.context() as patch:
            patch.setattr(backbones, "_conv", explicit_padding_conv)
            keras.utils.set_random_seed(1)
            old = resnet("resnet18", image_size=None, stem=stem, width=4, norm="batch")
        saved = tf.train.Checkpoint(model=old).write(str(tmp_path / stem / "ckpt"))
        new = resnet("resnet18", image_size=None, stem=stem, width=4, norm="batch")
        tf.train.Checkpoint(model=new).read(saved).assert_existing_objects_matched()
        np.testing.assert_allclose(
            np.asarray(new(images, training=False)), np.asarray(old(images, training=False)),
            rtol=1e-5, atol=1e-5,
        )  # fmt: skip
