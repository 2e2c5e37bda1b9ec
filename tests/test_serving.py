"""tfascl.serving, the library behind ``model.export`` and ``tfascl-export``: its names
are still importable from tfascl.export, and it exports any ``EncoderModel``, one without a
momentum encoder too."""

import json

import numpy as np
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
