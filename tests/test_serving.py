"""tfascl.serving, the library behind ``model.export`` and ``tfascl-export``: its names
are still importable from tfascl.export, and it exports any ``EncoderModel``, one without a
momentum encoder too."""

import json

import numpy as np
import pytest
import tensorflow as tf

import tfascl
from tfascl import export, serving

SIZE = 16


def test_the_export_command_reexports_the_serving_names():
    names = (
        "EmbeddingModule",
        "preprocess",
        "check_images",
        "decode_images",
        "plain_batchnorm",
        "write_serving_model",
        "write_onnx",
        "write_litert",
        "export_model",
        "check_formats",
        "DEFAULT_SIGNATURE",
        "BYTES_SIGNATURE",
        "PREPROCESSED_SIGNATURE",
        "FORMATS",
        "PORTABLE_FILES",
        "IMAGE_MAGIC",
        "EXTRA_DIR",
        "KERAS_FILE",
        "METADATA_FILE",
        "SAVED_MODEL_FILE",
    )
    for name in names:
        assert getattr(export, name) is getattr(serving, name), name


def test_model_export_of_an_encoder_without_momentum_encoder(tmp_path):
    # SimCLR is an EncoderModel only: no key_backbone, no key_projector.
    backbone = tfascl.build_backbone("resnet18", image_size=SIZE, width=4, num_splits=2)
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    model = tfascl.build_model(
        "simclr", backbone, projector_dims=(16, 8), num_splits=2, normalization=(mean, std)
    )
    assert not hasattr(model, "key_backbone")
    path = model.export(tmp_path / "simclr")

    meta = json.loads((path / serving.EXTRA_DIR / serving.METADATA_FILE).read_text())
    assert (meta["method"], meta["image_size"], meta["mean"]) == ("simclr", SIZE, list(mean))
    assert (meta["feature_dim"], meta["projection_dim"]) == (8 * 4, 8)
    variables = tf.train.list_variables(str(path / "variables" / "variables"))
    stored = {name.split("/")[0] for name, _ in variables}
    assert stored - {"_CHECKPOINTABLE_OBJECT_GRAPH"} == {
        "backbone_trainable",
        "backbone_non_trainable",
        "projector_trainable",
        "projector_non_trainable",
    }
    images = np.random.default_rng(0).integers(0, 256, (4, 20, 24, 3), dtype=np.uint8)
    served = tf.saved_model.load(str(path)).signatures[serving.DEFAULT_SIGNATURE]
    np.testing.assert_allclose(
        served(images=tf.constant(images))["embedding"].numpy(),
        model.embed(images, batch_size=4),
        atol=1e-5,
    )


def test_plain_batchnorm_of_any_size_is_the_split_bn_backbone_at_inference():
    # The one split-BN → plain-BN conversion, for the export and the evaluation encoders.
    backbone = tfascl.build_backbone("resnet18", image_size=SIZE, width=4, num_splits=2)
    rng = np.random.default_rng(1)
    # Moving statistics away from 0 and 1, so a BN that ignored them would differ.
    backbone.set_weights(
        [w + rng.uniform(0.1, 0.5, w.shape).astype(w.dtype) for w in backbone.get_weights()]
    )
    plain = serving.plain_batchnorm(backbone, any_size=True)
    kinds = {type(layer).__name__ for layer in backbone.layers}
    assert "SplitBatchNorm" in kinds
    assert "SplitBatchNorm" not in {type(layer).__name__ for layer in plain.layers}
    assert [layer.name for layer in plain.layers] == [layer.name for layer in backbone.layers]
    images = rng.normal(size=(4, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        plain(images, training=False).numpy(), backbone(images, training=False).numpy()
    )
    larger = rng.normal(size=(2, SIZE + 8, SIZE + 8, 3)).astype(np.float32)
    assert plain(larger, training=False).shape == (2, backbone.output_shape[-1])


def test_the_evaluation_crop_and_resize_are_one_definition():
    # imageops is what serving.preprocess, augment.eval_transform and the streamed crops use.
    from tfascl import imageops
    from tfascl.data import augment

    box = imageops.central_box(tf.constant(30.0), tf.constant(41.0), 0.5).numpy()
    np.testing.assert_array_equal(box, [7.5, 13.0, 15.0, 15.0])
    rng = np.random.default_rng(2)
    for height, width in [(20, 24), (37, 53), (SIZE, SIZE), (9, 12)]:
        images = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        # The whole image as the box: tf.image.resize's antialiased bilinear, bit for bit.
        whole = tf.constant([0.0, 0.0, height, width])
        np.testing.assert_array_equal(
            imageops.resize_box(images, SIZE, whole).numpy(),
            tf.image.resize(images, [SIZE, SIZE], "bilinear", antialias=True).numpy(),
        )
        # The in-memory evaluation transform resamples with matrices, the served one with
        # ScaleAndTranslate: the same crop and filter, up to float rounding.
        mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
        np.testing.assert_allclose(
            serving.preprocess(images, SIZE, mean, std).numpy(),
            augment.eval_transform(images, SIZE, mean, std).numpy(),
            atol=5e-6,
        )


def test_model_export_onnx_and_litert_write_the_portable_file(tmp_path):
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    backbone = tfascl.build_backbone("resnet18", image_size=SIZE, width=4, num_splits=2)
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    model = tfascl.build_model(
        "moco", backbone, projector_dims=(16, 8), num_splits=2, normalization=(mean, std)
    )
    rng = np.random.default_rng(3)
    for layer in model.backbone.layers:  # inference BN that is not the identity
        if hasattr(layer, "moving_variance"):
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    # Already S px square: the served resize is the identity, model.embed's too.
    images = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    expected = model.embed(images, batch_size=3)

    onnx_path = model.export(tmp_path / "sub" / "encoder.onnx", format="onnx")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("images", "tensor(uint8)")]
    embedding, projection = session.run(["embedding", "projection"], {"images": images})
    np.testing.assert_allclose(embedding, expected, atol=1e-5)
    assert projection.shape == (3, 8)

    litert_path = model.export(tmp_path / "encoder.tflite", format="litert")
    runner = Interpreter(model_path=str(litert_path)).get_signature_runner("serving_default")
    np.testing.assert_allclose(runner(images=images[:1])["embedding"], expected[:1], atol=1e-5)

    for bad in ({"format": "litert", "filepath": tmp_path / "x.lite"}, {"format": "jax"}):
        with pytest.raises(ValueError):
            model.export(**{"filepath": tmp_path / "bad", **bad})
