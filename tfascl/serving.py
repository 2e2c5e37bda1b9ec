"""The serving export of an online encoder: a SavedModel that needs no tfascl code.

A library of TensorFlow, Keras and NumPy only: it imports nothing of tfascl but
``tfascl.files`` (local or ``gs://`` paths), ``tfascl._version`` and
``tfascl.imageops`` (the evaluation crop and resize the data pipelines use), so a model
(``EncoderModel.export``) and the ``tfascl-export`` command (``tfascl.export``, which
restores a run and numbers the versions) both write through it.

``write_serving_model(directory, backbone, projector, ...)`` writes::

    directory/
      saved_model.pb
      variables/
      assets.extra/
        backbone.keras          <- the backbone alone, for Keras fine-tuning
        metadata.json           <- method, data statistics, dimensions, steps, ...

``export_model(model, filepath, ...)`` (what ``model.export(path)`` calls, on any
``EncoderModel``: MoCo/ASCL, BYOL, SimCLR, NNCLR, MeanShift) writes the same
into ``filepath`` through the same writer; its metadata has no run or checkpoint.

Only the query (online) encoder is exported: backbone and projector. A momentum
encoder, a queue, a predictor and the optimizer stay in the checkpoint.

The SavedModel is a plain ``tf.Module`` of three ``tf.function`` signatures, so
``tf.saved_model.load`` (or TF Serving, or ``keras.layers.TFSMLayer``) needs no
tfascl code:

* ``serving_default``: ``images`` uint8 [N, H, W, 3], any N, H and W. Inside the
  graph: the central square crop, resized to the training resolution with
  antialiased bilinear filtering, scaled to [0, 1] and normalised with the
  training mean/std. This is the evaluation transform of the training data
  pipeline (and Pillow's ``resize(BILINEAR, box=...)``), so a served embedding
  is the one kNN and linear evaluation saw.
* ``serving_bytes``: ``image_bytes`` string [N], each an encoded JPEG, PNG,
  BMP or GIF (its first frame) of any size and channel count, decoded to RGB and
  then preprocessed as ``serving_default`` does, image by image (a batch may mix
  sizes). TF Serving's REST API decodes ``{"b64": ...}`` for inputs whose name
  ends in ``_bytes``, so a request carries the compressed file, not its pixels.
* ``preprocessed``: ``images`` float32 [N, S, S, 3], already normalised.

All return ``embedding`` (L2-normalised backbone features [N, F], what kNN and
linear probes use) and ``projection`` (L2-normalised projector output [N, D], the
space the contrastive loss was computed in), float32.

``formats`` may add ``assets.extra/model.onnx`` and ``assets.extra/model.tflite``,
written by Keras 3's ``Model.export(format="onnx"|"litert")`` of ``portable_model``:
the same encoder for ONNX Runtime and LiteRT, input uint8 [N, S, S, 3] pixels of an
image already cropped and resized to S (neither format has the antialiased
resampling op), the ``(x / 255 − mean) / std`` normalisation inside, outputs
``embedding`` and ``projection``. ``model.export(path, format="onnx"|"litert")``
(``export_portable``) writes either file alone.

Split BN is plain BN at inference, so it is exported as
``keras.layers.BatchNormalization`` with the same weights: the ``.keras`` file
then loads with plain Keras, without tfascl's custom layer.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfascl import files, imageops
from tfascl._version import __version__

EXTRA_DIR = "assets.extra"
SAVED_MODEL_FILE = "saved_model.pb"
KERAS_FILE = "backbone.keras"
METADATA_FILE = "metadata.json"
DEFAULT_SIGNATURE = "serving_default"
PREPROCESSED_SIGNATURE = "preprocessed"
BYTES_SIGNATURE = "serving_bytes"
# What ``formats`` (tfascl-export's --formats) may name; the SavedModel is always
# written (it is the version directory), the others are extra files in assets.extra/.
FORMATS = ("saved_model", "onnx", "litert")
PORTABLE_FILES = {"onnx": "model.onnx", "litert": "model.tflite"}
# ONNX operator set of model.onnx: opset 17 runs on ONNX Runtime >= 1.11.
ONNX_OPSET = 17
# The leading bytes by which TensorFlow's DecodeImage tells the formats apart.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")


def plain_batchnorm(model: keras.Model, *, any_size: bool = False) -> keras.Model:
    """A copy of a functional model with every split or synchronised BN made plain BN.

    They all compute the same function at inference (they differ only in the batch
    statistics of training), and a model without tfascl's custom layer
    deserialises with plain Keras; unsynchronised BN also fine-tunes on one device
    without a distribution strategy. The one conversion of split BN to plain BN:
    the serving export and the evaluation encoders (``tfascl.evaluation.encoders``)
    both use it.

    Args:
        model: a functional ``keras.Model`` (a tfascl backbone or head).
        any_size: rebuild it on an input of any height and width
            ([N, None, None, C] instead of [N, S, S, C]): a fully convolutional
            backbone with global pooling (the ResNets) then embeds images of another
            side, and computes at S px exactly what ``model`` does.

    Returns:
        A new model with the same architecture, layer names and weights.
    """

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.layers.BatchNormalization):
            config = layer.get_config()
            config.pop("num_splits", None)  # SplitBatchNorm's only addition
            config["synchronized"] = False
            return keras.layers.BatchNormalization.from_config(config)
        return layer.__class__.from_config(layer.get_config())

    inputs = None
    if any_size:
        shape = model.inputs[0].shape  # [N, H, W, C]
        inputs = keras.Input((None, None, shape[-1]), name=model.inputs[0].name)
    copy = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone_layer)
    copy.set_weights(model.get_weights())
    return copy


def preprocess(
    images: tf.Tensor, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> tf.Tensor:
    """Raw pixels → the backbone's input, as the serving signature does it.

    Central square crop (``imageops.central_box``), resized to ``image_size`` with
    antialiased bilinear filtering (``imageops.resize_box``: ``ScaleAndTranslate``
    with the triangle kernel, the op behind ``tf.image.resize(..., antialias=True)``),
    then ``(x / 255 − mean) / std``. The crop box is continuous, as in the data
    pipeline's evaluation transform, so odd size differences give a half-pixel
    offset rather than a rounded one.
    Images already ``image_size`` square are left untouched by the resampling.

    Args:
        images: [N, H, W, 3] pixels in [0, 255] (uint8 or float).
        image_size: S, the training resolution.
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation in [0, 1] units.

    Returns:
        [N, S, S, 3] float32.
    """
    shape = tf.cast(tf.shape(images), tf.float32)
    box = imageops.central_box(shape[1], shape[2])
    x = imageops.resize_box(images, image_size, box)
    x = tf.ensure_shape(x, [None, image_size, image_size, 3])
    mean = tf.constant(mean, tf.float32, shape=[3])
    std = tf.constant(std, tf.float32, shape=[3])
    return (x / 255.0 - mean) / std


def check_images(images: tf.Tensor, expected: str, image_size: int | None = None) -> tf.Tensor:
    """``images`` once its shape is checked at run time, with a message that says what to send.

    A signature checks the dtype of its input but not its shape, and the backbone
    (convolutions, global pooling) would turn many wrong shapes into a wrong answer
    instead of an error. The checks use the run-time shape, never the static one
    the signature declares, so graph optimisation cannot fold them away.

    Args:
        images: the signature's input.
        expected: what to send, for the message (e.g. ``"uint8 [N, H, W, 3]"``).
        image_size: the height and width required, or ``None`` for any positive size.

    Returns:
        ``images``, after the checks.
    """
    shape = tf.shape(images)
    # Padded, so that the slices below stay valid whatever the rank; a wrong rank
    # fails the first test anyway.
    dims = tf.concat([shape, tf.ones([4], tf.int32)], axis=0)
    if image_size is None:
        # An empty side would make the crop divide by zero and return NaNs.
        size_ok = tf.reduce_all(dims[1:3] > 0)
    else:
        size_ok = tf.reduce_all(tf.equal(dims[1:3], [image_size, image_size]))
    valid = tf.logical_and(
        tf.logical_and(tf.equal(tf.size(shape), 4), tf.equal(dims[3], 3)), size_ok
    )
    check = tf.debugging.Assert(
        valid, [f"images must be {expected}; got shape", shape], summarize=8
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def decode_images(
    image_bytes: tf.Tensor, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> tf.Tensor:
    """Encoded images → the backbone's input, each decoded and preprocessed on its own.

    Args:
        image_bytes: [N] strings, each a JPEG, PNG, BMP or GIF file (GIF: the first
            frame); greyscale and alpha are made RGB. JPEGs are decoded as Pillow
            does (accurate integer DCT), so the pixels are those Pillow gives.
        image_size: S, the training resolution.
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation in [0, 1] units.

    Returns:
        [N, S, S, 3] float32, as ``preprocess`` makes it from the decoded pixels.
    """

    def one(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        index, data = args
        is_format = [
            tf.equal(tf.strings.substr(data, 0, len(magic)), magic) for magic in IMAGE_MAGIC
        ]
        known = tf.reduce_any(is_format)
        # DecodeImage's own error does not say which string of the batch it was.
        message = tf.strings.format("image_bytes[{}] is not a JPEG, PNG, BMP or GIF image", [index])
        with tf.control_dependencies([tf.debugging.Assert(known, [message])]):
            # JPEG with the accurate integer DCT, as Pillow (and so the training
            # data) decodes it: TensorFlow's default, the fast one, is off by a few
            # levels. decode_image has no such option.
            pixels = tf.cond(
                is_format[0],
                lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
            )
        return preprocess(pixels[tf.newaxis], image_size, mean, std)[0]

    image_bytes = tf.reshape(image_bytes, [-1])
    indices = tf.range(tf.size(image_bytes))
    # One image at a time: the images of a batch may differ in size.
    return tf.map_fn(
        one,
        (indices, image_bytes),
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )


class EmbeddingModule(tf.Module):
    """The exported object: the online encoder's variables and the three signatures.

    The functions run the Keras models through ``stateless_call`` on ``tf.Variable``
    copies named ``backbone/<layer>/<weight>`` and ``projector/<layer>/<weight>``,
    so the SavedModel holds exactly these variables, under readable names, and
    nothing else the Keras objects might reference.

    Why not ``keras.export.ExportArchive`` (``track`` both models, ``add_endpoint`` for
    each signature, ``write_out``): it writes the same three signatures, names and
    outputs (max abs difference 0 on all three; it loads in ``tf.saved_model.load`` and
    ``keras.layers.TFSMLayer`` without tfascl), but it stores every weight twice
    (checkpoint keys under ``variables/`` and ``_all_variables/``): for a ResNet-18 of
    width 4 its ``variables.data`` was 386,370 bytes against 194,647 here, the
    ``saved_model.pb`` 858,215 against 563,262, and the variables lose the
    ``backbone_trainable``/``projector_trainable`` grouping (Keras 3.15.1, TF 2.21).

    Args:
        backbone: images [N, S, S, 3] → features [N, F] (plain BN).
        projector: [N, F] → [N, D] (plain BN).
        image_size: S.
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation in [0, 1] units.
    """

    def __init__(
        self,
        backbone: keras.Model,
        projector: keras.Model,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        super().__init__(name="tfascl_embedding")
        self.image_size = image_size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # Held in a plain namespace, which tf.Module does not track: as attributes the
        # Keras models would put a second copy of every weight into the SavedModel.
        self._keras = types.SimpleNamespace(backbone=backbone, projector=projector)
        self.backbone_trainable = _copy_variables(backbone.trainable_variables, "backbone")
        self.backbone_non_trainable = _copy_variables(backbone.non_trainable_variables, "backbone")
        self.projector_trainable = _copy_variables(projector.trainable_variables, "projector")
        self.projector_non_trainable = _copy_variables(
            projector.non_trainable_variables, "projector"
        )
        # autograph off: no Python control flow on tensors here.
        self.serving_default = tf.function(
            self._serve,
            autograph=False,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        )
        self.serving_bytes = tf.function(
            self._serve_bytes,
            autograph=False,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        )
        self.preprocessed = tf.function(
            self._embed,
            autograph=False,
            input_signature=[
                tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")
            ],
        )

    def _serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        images = check_images(images, "uint8 [N, H, W, 3]")
        return self._encode(preprocess(images, self.image_size, self.mean, self.std))

    def _serve_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._encode(decode_images(image_bytes, self.image_size, self.mean, self.std))

    def _embed(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        size = self.image_size
        return self._encode(check_images(images, f"float32 [N, {size}, {size}, 3]", size))

    def portable(self) -> keras.Model:
        """What ONNX and LiteRT get (``portable_model``) of this module's encoder."""
        keras_models = self._keras
        return portable_model(
            keras_models.backbone, keras_models.projector, self.image_size, self.mean, self.std
        )

    def _encode(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        features, _ = self._keras.backbone.stateless_call(
            self.backbone_trainable, self.backbone_non_trainable, images, training=False
        )
        projection, _ = self._keras.projector.stateless_call(
            self.projector_trainable, self.projector_non_trainable, features, training=False
        )
        return {
            "embedding": tf.math.l2_normalize(tf.cast(features, tf.float32), axis=1),
            "projection": tf.math.l2_normalize(tf.cast(projection, tf.float32), axis=1),
        }


def _copy_variables(variables: Sequence[keras.Variable], prefix: str) -> list[tf.Variable]:
    return [
        tf.Variable(v.numpy(), trainable=v.trainable, name=f"{prefix}/{v.path}") for v in variables
    ]


def write_serving_model(
    directory: str | Path,
    backbone: keras.Model,
    projector: keras.Model,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    metadata: dict[str, Any],
    formats: Sequence[str] = ("saved_model",),
) -> None:
    """Writes the serving SavedModel of an online encoder and its ``assets.extra/``.

    The one writer of ``tfascl-export`` and ``model.export`` (see the module doc):
    split/sync BN made plain, ``EmbeddingModule``'s three signatures, the backbone
    as ``.keras`` and ``metadata.json`` (``metadata`` adds to, or overrides, the
    fields every export has).

    Args:
        directory: where to write; must not exist yet (callers stage and rename).
        backbone: images [N, S, S, 3] → features [N, F].
        projector: [N, F] → [N, D].
        image_size: S, the training resolution.
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation in [0, 1] units.
        metadata: the caller's fields (method, run, checkpoint, ...).
        formats: ``"saved_model"`` and any of ``"onnx"``, ``"litert"`` (see ``FORMATS``).

    Raises:
        ValueError: an unknown format, or none that is ``"saved_model"``.
        ImportError: ``"onnx"`` without tf2onnx installed.
    """
    formats = check_formats(formats)
    directory = Path(directory)
    backbone = plain_batchnorm(backbone)
    projector = plain_batchnorm(projector)
    module = EmbeddingModule(backbone, projector, image_size, mean, std)
    tf.saved_model.save(
        module,
        str(directory),
        signatures={
            DEFAULT_SIGNATURE: module.serving_default,
            BYTES_SIGNATURE: module.serving_bytes,
            PREPROCESSED_SIGNATURE: module.preprocessed,
        },
    )
    extra = directory / EXTRA_DIR
    extra.mkdir()
    backbone.save(extra / KERAS_FILE)
    if "onnx" in formats:
        write_onnx(module, extra / PORTABLE_FILES["onnx"])
    if "litert" in formats:
        write_litert(module, extra / PORTABLE_FILES["litert"])
    metadata = {
        **_metadata(backbone, projector, image_size, mean, std, formats),
        **metadata,
    }
    (extra / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """``formats`` as a tuple in ``FORMATS`` order, once each is known.

    Raises:
        ValueError: an unknown format, or no ``"saved_model"`` among them.
    """
    if isinstance(formats, str):
        formats = formats.split(",")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export format {', '.join(unknown)}: choose from {FORMATS}")
    if "saved_model" not in formats:
        raise ValueError(
            "formats must include saved_model: the version directory is the SavedModel, "
            "ONNX and LiteRT files go into its assets.extra/"
        )
    return tuple(f for f in FORMATS if f in formats)


def portable_model(
    backbone: keras.Model,
    projector: keras.Model,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> keras.Model:
    """The encoder as ONNX and LiteRT get it: uint8 [N, S, S, 3] → ``embedding``, ``projection``.

    A functional Keras model, exported by Keras 3's own ``Model.export(format="onnx")``
    (tf2onnx) and ``format="litert"`` (TensorFlow's LiteRT converter): only operators
    both formats have, a cast, the ``(x / 255 − mean) / std`` normalisation, the encoder,
    the L2 normalisations. No resize (neither format has the antialiased resampling op)
    and no shape checks (``tf.debugging.Assert`` is no LiteRT builtin); both runtimes
    check the input against the declared [N, S, S, 3] themselves.

    Args:
        backbone: images [N, S, S, 3] → features [N, F] (plain BN).
        projector: [N, F] → [N, D] (plain BN).
        image_size: S.
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation in [0, 1] units.

    Returns:
        A model of input ``images`` uint8 [N, S, S, 3] and outputs ``{"embedding": [N, F],
        "projection": [N, D]}`` float32, L2-normalised.
    """
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def normalise(images: tf.Tensor) -> tf.Tensor:
        # Constants made in the graph, not captured tensors: the converters fold them.
        mean_t = tf.constant(mean, tf.float32, shape=[3])
        std_t = tf.constant(std, tf.float32, shape=[3])
        return (tf.cast(images, tf.float32) / 255.0 - mean_t) / std_t

    images = keras.Input((image_size, image_size, 3), dtype="uint8", name="images")
    pixels = keras.layers.Lambda(normalise, name="normalise")(images)
    features = backbone(pixels, training=False)
    projection = projector(features, training=False)

    def unit(name: str) -> keras.layers.Layer:
        return keras.layers.Lambda(lambda x: tf.math.l2_normalize(x, axis=1), name=name)

    outputs = {
        "embedding": unit("embedding")(features),
        "projection": unit("projection")(projection),
    }
    return keras.Model(images, outputs, name="tfascl_portable")


def write_portable(model: keras.Model, path: str | Path, format: str) -> None:
    """``portable_model``'s model as ``format`` (``"onnx"`` or ``"litert"``) at ``path``.

    Keras 3's ``Model.export`` does the conversion: with the same converters and
    options these writers used before (tf2onnx at opset ``ONNX_OPSET``; the LiteRT
    converter with builtin operators only) its files gave the same outputs, max abs
    difference 0 on ONNX Runtime and LiteRT (batches of 8 and 1). The input signature is
    given (a free batch size, uint8 named ``images``), and LiteRT keeps Keras's
    ``serving_default`` signature.

    Raises:
        ImportError: ``"onnx"`` without tf2onnx installed.
        ValueError: another format.
    """
    size = model.inputs[0].shape[1]
    signature = [tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")]
    if format == "onnx":
        import importlib.util

        if importlib.util.find_spec("tf2onnx") is None:
            raise ImportError("the ONNX export needs tf2onnx: pip install 'tfascl[onnx]'")
        options = {"opset_version": ONNX_OPSET}
    elif format == "litert":
        # Keras adds SELECT_TF_OPS (TensorFlow kernels, a larger runtime) by default;
        # the encoder needs none.
        options = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    else:
        raise ValueError(f"format must be 'onnx' or 'litert', got {format!r}")
    with warnings.catch_warnings():
        # Keras's tf2onnx patch for NumPy 2 probes np.object, which NumPy warns about.
        warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
        model.export(str(path), format=format, input_signature=signature, verbose=False, **options)


def write_onnx(module: EmbeddingModule, path: Path) -> None:
    """``module.portable()`` as an ONNX file (Keras's export, tf2onnx, opset ``ONNX_OPSET``)."""
    write_portable(module.portable(), path, "onnx")


def write_litert(module: EmbeddingModule, path: Path) -> None:
    """``module.portable()`` as a LiteRT flatbuffer (Keras's export, builtin operators only)."""
    write_portable(module.portable(), path, "litert")


def export_portable(
    model: keras.Model,
    filepath: str | Path,
    format: str,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> files.RunPath:
    """``model.export(path, format="onnx"|"litert")``: the online encoder as one portable file.

    The file ``tfascl-export --formats`` puts into ``assets.extra/`` (``portable_model``),
    written to a local temporary file and then copied to ``filepath`` (local or another
    file system: the converters write local files only).

    Args:
        model: any ``EncoderModel`` (its ``backbone`` and ``projector`` are written).
        filepath: the file to write (LiteRT's must end in ``.tflite``, as Keras requires).
        format: ``"onnx"`` or ``"litert"``.
        image_size: S, the training resolution.
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation in [0, 1] units.

    Returns:
        ``filepath`` as a ``Path`` (the URL as given for another file system).

    Raises:
        ValueError: another format, or a LiteRT path without ``.tflite``.
        ImportError: ``"onnx"`` without tf2onnx installed.
    """
    target = files.run_path(filepath)
    if format == "litert" and not str(target).endswith(".tflite"):
        raise ValueError(f"a LiteRT file's name ends in .tflite, got {target}")
    portable = portable_model(
        plain_batchnorm(model.backbone), plain_batchnorm(model.projector), image_size, mean, std
    )
    if files.is_local(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tfascl-export-") as local:
        staging = Path(local) / PORTABLE_FILES.get(format, "model")
        write_portable(portable, staging, format)
        files.write_bytes(target, staging.read_bytes())
    return target


def export_model(
    model: keras.Model,
    filepath: str | Path,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    formats: Sequence[str] = ("saved_model",),
    method: str | None = None,
) -> files.RunPath:
    """``model.export``: the online encoder of an in-memory model, as ``tfascl-export`` writes it.

    Written beside ``filepath`` and renamed into place; an existing SavedModel (or
    empty directory) at ``filepath`` is replaced, anything else is refused.

    Args:
        model: any ``EncoderModel`` (its ``backbone`` and ``projector`` are written).
        filepath: the SavedModel directory.
        image_size: S, the training resolution.
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation in [0, 1] units.
        formats: ``"saved_model"`` (always) and any of ``"onnx"``, ``"litert"``.
        method: the metadata's ``method`` (the ``METHODS`` name: ``model.export`` asks
            the registry, which this library does not know).

    Returns:
        ``filepath`` as a ``Path`` (the URL as given for another file system).

    Raises:
        FileExistsError: ``filepath`` is a file, or a non-empty directory without a SavedModel.
    """
    target = files.run_path(filepath)
    if files.exists(target) and not (
        files.is_dir(target)
        and (not files.glob(target, "*") or files.is_file(files.join(target, SAVED_MODEL_FILE)))
    ):
        raise FileExistsError(f"{target} exists and is not a SavedModel: choose another path")
    optimizer = getattr(model, "optimizer", None)
    metadata = {
        "method": method,
        "backbone": model.backbone.name,
        "training_steps": None if optimizer is None else int(optimizer.iterations.numpy()),
    }
    write_in_place(
        target,
        lambda staging: write_serving_model(
            staging, model.backbone, model.projector, image_size, mean, std, metadata, formats
        ),
    )
    return target


def write_in_place(target: files.RunPath, write: Callable[[Path], None]) -> None:
    """``write(staging)`` writes a version into a new local folder; it then becomes ``target``.

    Locally the folder is ``.tmp-<name>-<pid>`` beside ``target``, renamed into place
    when complete, so a TF Serving instance watching the export folder never loads a
    half-written version. Another file system (``gs://``) has no atomic folder
    rename: the version is written in a local temporary folder (the ONNX and LiteRT
    converters write local files only) and copied into ``target`` file by file,
    ``saved_model.pb`` last, so a loader never finds a SavedModel with missing files;
    an existing ``target`` (``overwrite``) is deleted first.
    """
    if not files.is_local(target):
        with tempfile.TemporaryDirectory(prefix="tfascl-export-") as local:
            staging = Path(local) / "version"
            write(staging)
            files.remove_tree(target)
            files.copy_tree(staging, target, last=SAVED_MODEL_FILE)
        return
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, target: Path) -> None:
    # Rename the old version aside first: the new one appears in one rename.
    old = target.with_name(f".old-{target.name}-{os.getpid()}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _metadata(
    backbone: keras.Model,
    projector: keras.Model,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    formats: Sequence[str] = ("saved_model",),
) -> dict[str, Any]:
    size = image_size
    return {
        "method": None,
        "dataset": None,
        "backbone": None,
        "image_size": size,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "feature_dim": int(backbone.output_shape[-1]),
        "projection_dim": int(projector.output_shape[-1]),
        "training_steps": None,
        "checkpoint": None,
        "version": None,
        "tfascl_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "signatures": {
            DEFAULT_SIGNATURE: {
                "inputs": {"images": ["uint8", [None, None, None, 3]]},
                "preprocessing": (
                    f"central square crop, antialiased bilinear resize to {size}x{size}, "
                    "x / 255, (x - mean) / std"
                ),
            },
            BYTES_SIGNATURE: {
                "inputs": {"image_bytes": ["string", [None]]},
                "preprocessing": (
                    "each string decoded (JPEG, PNG, BMP, GIF first frame) to RGB, then as "
                    f"{DEFAULT_SIGNATURE}"
                ),
            },
            PREPROCESSED_SIGNATURE: {"inputs": {"images": ["float32", [None, size, size, 3]]}},
            "outputs": {
                "embedding": "L2-normalised backbone features [N, feature_dim]",
                "projection": "L2-normalised projector output [N, projection_dim]",
            },
        },
        "keras_file": f"{EXTRA_DIR}/{KERAS_FILE}",
        "keras_file_input": f"float32 [N, {size}, {size}, 3], normalised as 'preprocessed'",
        "portable": {
            name: {
                "file": f"{EXTRA_DIR}/{PORTABLE_FILES[name]}",
                "inputs": {"images": ["uint8", [None, size, size, 3]]},
                "outputs": ["embedding", "projection"],
                "in_the_model": "x / 255, (x - mean) / std with the mean and std above",
                "client_preprocessing": (
                    f"central square crop, antialiased bilinear resize to {size}x{size} "
                    "(Pillow: image.resize((S, S), Image.BILINEAR, box=central square))"
                ),
            }
            for name in formats
            if name in PORTABLE_FILES
        },
        "run": None,
    }
