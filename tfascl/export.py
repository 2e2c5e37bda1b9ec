"""Export a run's online encoder as a SavedModel, for TF Serving and for transfer.

``export_backbone(model_dir, export_dir)`` writes the TF Serving layout::

    export_dir/
      1/                          <- one version; TF Serving serves the highest
        saved_model.pb
        variables/
        assets.extra/
          backbone.keras          <- the backbone alone, for Keras fine-tuning
          metadata.json           <- method, data statistics, dimensions, steps, ...

``model.export(path)`` on an in-memory ``MomentumContrast`` or ``BYOL`` (the
notebook's way) writes the same SavedModel and ``assets.extra/`` into ``path``
through the same writer, ``write_serving_model``; its metadata has no run or
checkpoint.

Only the query (online) encoder is exported: backbone and projector. The momentum
encoder, the queue, a BYOL predictor and the optimizer stay in the checkpoint.

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

``formats`` may add ``assets.extra/model.onnx`` (tf2onnx) and
``assets.extra/model.tflite`` (TensorFlow's LiteRT converter): the same encoder
for ONNX Runtime and LiteRT, input uint8 [N, S, S, 3] pixels of an image already
cropped and resized to S (neither format has the antialiased resampling op), the
``(x / 255 − mean) / std`` normalisation inside, outputs ``embedding`` and
``projection``.

Split BN is plain BN at inference, so it is exported as
``keras.layers.BatchNormalization`` with the same weights: the ``.keras`` file
then loads with plain Keras, without tfascl's custom layer.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m tfascl.export: TensorFlow without its start-up lines
    from tfascl._startup import quiet_tensorflow_import

    quiet_tensorflow_import()

import datetime
import json
import os
import shutil
import tempfile
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from absl import flags

from tfascl import cli, runs
from tfascl._version import __version__

EXTRA_DIR = "assets.extra"
SAVED_MODEL_FILE = "saved_model.pb"
KERAS_FILE = "backbone.keras"
METADATA_FILE = "metadata.json"
DEFAULT_SIGNATURE = "serving_default"
PREPROCESSED_SIGNATURE = "preprocessed"
BYTES_SIGNATURE = "serving_bytes"
# What --formats may name; the SavedModel is always written (it is the version
# directory), the others are extra files in assets.extra/.
FORMATS = ("saved_model", "onnx", "litert")
PORTABLE_FILES = {"onnx": "model.onnx", "litert": "model.tflite"}
# ONNX operator set of model.onnx: opset 17 runs on ONNX Runtime >= 1.11.
ONNX_OPSET = 17
# The leading bytes by which TensorFlow's DecodeImage tells the formats apart.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")
# Where Keras 3 optimizers keep their step counter in a tf.train.Checkpoint of
# ``model.checkpoint()`` (the optimizer is the checkpoint's "optimizer" child).
ITERATIONS_KEY = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def plain_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of a functional model with every split or synchronised BN made plain BN.

    They all compute the same function at inference (they differ only in the batch
    statistics of training), and a model without tfascl's custom layer
    deserialises with plain Keras; unsynchronised BN also fine-tunes on one device
    without a distribution strategy.

    Args:
        model: a functional ``keras.Model`` (a tfascl backbone or head).

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

    copy = keras.models.clone_model(model, clone_function=clone_layer)
    copy.set_weights(model.get_weights())
    return copy


def preprocess(
    images: tf.Tensor, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> tf.Tensor:
    """Raw pixels → the backbone's input, as the serving signature does it.

    Central square crop, resized to ``image_size`` with antialiased bilinear
    filtering (``ScaleAndTranslate`` with the triangle kernel, the op behind
    ``tf.image.resize(..., antialias=True)``), then ``(x / 255 − mean) / std``.
    The crop box is continuous, as in the data pipeline's evaluation transform,
    so odd size differences give a half-pixel offset rather than a rounded one.
    Images already ``image_size`` square are left untouched by the resampling.

    Args:
        images: [N, H, W, 3] pixels in [0, 255] (uint8 or float).
        image_size: S, the training resolution.
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation in [0, 1] units.

    Returns:
        [N, S, S, 3] float32.
    """
    x = tf.cast(images, tf.float32)
    shape = tf.shape(x)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    side = tf.minimum(height, width)
    scale = image_size / side
    translation = tf.stack([(side - height) / 2 * scale, (side - width) / 2 * scale])
    x = tf.raw_ops.ScaleAndTranslate(
        images=x,
        size=tf.constant([image_size, image_size], tf.int32),
        scale=tf.stack([scale, scale]),
        translation=translation,
        kernel_type="triangle",
        antialias=True,
    )
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

    def portable(self) -> tf.types.experimental.PolymorphicFunction:
        """The function ONNX and LiteRT get: uint8 [N, S, S, 3] → ``embedding``, ``projection``.

        Only operators both formats have: a cast, the normalisation, the encoder.
        No shape checks (``tf.debugging.Assert`` is no LiteRT builtin); both
        runtimes check the input against the declared [N, S, S, 3] themselves.
        """
        size = self.image_size

        def pixels(images: tf.Tensor) -> dict[str, tf.Tensor]:
            # Constants made in the graph, not captured: converters fold them.
            mean = tf.constant(self.mean, tf.float32, shape=[3])
            std = tf.constant(self.std, tf.float32, shape=[3])
            return self._encode((tf.cast(images, tf.float32) / 255.0 - mean) / std)

        return tf.function(
            pixels,
            autograph=False,
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")],
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


def next_version(export_dir: str | Path) -> int:
    """1, or one more than the highest integer-named directory in ``export_dir``."""
    directory = runs.run_path(export_dir)
    versions = (
        [int(runs.base_name(p)) for p in runs.glob(directory, "*") if _is_version(p)]
        if runs.is_dir(directory)
        else []
    )
    return max(versions, default=0) + 1


def _is_version(path: runs.RunPath) -> bool:
    return runs.base_name(path).isdigit() and runs.is_dir(path)


def training_steps(checkpoint_path: str) -> int | None:
    """The optimizer's step counter stored in a checkpoint; ``None`` if it has none."""
    reader = runs.checkpoint_reader(checkpoint_path)
    if not reader.has_tensor(ITERATIONS_KEY):
        return None
    return int(reader.get_tensor(ITERATIONS_KEY))


def export_backbone(
    model_dir: str | Path,
    export_dir: str | Path,
    *,
    checkpoint: str = "latest",
    version: int | None = None,
    overwrite: bool = False,
    formats: Sequence[str] = ("saved_model",),
) -> runs.RunPath:
    """Exports a run's online encoder as ``export_dir/<version>/`` (see the module doc).

    The version is written to a hidden directory beside it and renamed into place
    when complete, so a TF Serving instance watching ``export_dir`` never loads a
    half-written version.

    Args:
        model_dir: the run's directory (``run.json`` and ``checkpoints/``).
        export_dir: the model's base path for TF Serving.
        checkpoint: ``"latest"``, ``"best"`` or a checkpoint name/path.
        version: the version number; default one more than the highest present (1 at first).
        overwrite: replace an existing version instead of failing.
        formats: ``"saved_model"`` (always) and any of ``"onnx"``, ``"litert"``.

    Returns:
        The version directory (a ``Path``, or a URL for another file system).

    Raises:
        FileNotFoundError: no ``run.json`` or no such checkpoint.
        FileExistsError: the version exists and ``overwrite`` is off.
        ValueError: a negative or non-integer version, or an unknown format.
        runs.CheckpointMismatch: (a ValueError) the checkpoint does not hold this run's
            model: another run's, method or width.
    """
    # Everything that can fail cheaply is checked before the model is built.
    formats = check_formats(formats)
    spec = runs.load_spec(model_dir)
    checkpoint_path = runs.find_checkpoint(model_dir, checkpoint)
    export_dir = runs.run_path(export_dir)
    if version is None:
        version = next_version(export_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    target = runs.join(export_dir, str(version))
    if runs.exists(target) and not overwrite:
        raise FileExistsError(
            f"{target} already exists: choose another version or pass overwrite=True (--overwrite)"
        )

    # The whole model is restored, so a checkpoint of another run, method or width is
    # refused (one line) rather than exported with random or partly restored weights.
    model = runs.load_model(spec, checkpoint_path)
    metadata = {
        "method": spec.method,
        "dataset": spec.dataset,
        "backbone": spec.backbone,
        "training_steps": training_steps(checkpoint_path),
        "checkpoint": str(
            Path(checkpoint_path).resolve() if runs.is_local(checkpoint_path) else checkpoint_path
        ),
        "version": version,
        "run": json.loads(spec.to_json()),
    }
    _write_in_place(
        target,
        lambda staging: write_serving_model(
            staging,
            model.backbone,
            model.projector,
            spec.image_size,
            spec.mean,
            spec.std,
            metadata,
            formats,
        ),
    )
    return target


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


def write_onnx(module: EmbeddingModule, path: Path) -> None:
    """``module.portable()`` as an ONNX file, converted by tf2onnx (opset ``ONNX_OPSET``)."""
    try:
        import tf2onnx
    except ImportError:
        raise ImportError("the ONNX export needs tf2onnx: pip install 'tfascl[onnx]'") from None
    function = module.portable()
    tf2onnx.convert.from_function(
        function,
        input_signature=function.input_signature,
        opset=ONNX_OPSET,
        output_path=str(path),
    )


def write_litert(module: EmbeddingModule, path: Path) -> None:
    """``module.portable()`` as a LiteRT flatbuffer, with builtin operators only.

    Converted from a SavedModel of that one signature (written to a temporary
    folder): from a concrete function the converter keeps no signature, and the
    variables must belong to a saved ``tf.Module`` to be frozen into constants.
    """
    holder = tf.Module()
    holder.encoder = module  # tracks the variables
    holder.pixels = module.portable()
    with tempfile.TemporaryDirectory(prefix="tfascl-litert-") as saved:
        tf.saved_model.save(holder, saved, signatures={DEFAULT_SIGNATURE: holder.pixels})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        path.write_bytes(converter.convert())


def export_model(
    model: keras.Model,
    filepath: str | Path,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    formats: Sequence[str] = ("saved_model",),
) -> runs.RunPath:
    """``model.export``: the online encoder of an in-memory model, as ``tfascl-export`` writes it.

    Written beside ``filepath`` and renamed into place; an existing SavedModel (or
    empty directory) at ``filepath`` is replaced, anything else is refused.

    Args:
        model: a ``MomentumContrast`` or ``BYOL``.
        filepath: the SavedModel directory.
        image_size: S, the training resolution.
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation in [0, 1] units.
        formats: ``"saved_model"`` (always) and any of ``"onnx"``, ``"litert"``.

    Returns:
        ``filepath`` as a ``Path`` (the URL as given for another file system).

    Raises:
        FileExistsError: ``filepath`` is a file, or a non-empty directory without a SavedModel.
    """
    from tfascl.models.registry import method_name

    target = runs.run_path(filepath)
    if runs.exists(target) and not (
        runs.is_dir(target)
        and (not runs.glob(target, "*") or runs.is_file(runs.join(target, SAVED_MODEL_FILE)))
    ):
        raise FileExistsError(f"{target} exists and is not a SavedModel: choose another path")
    optimizer = getattr(model, "optimizer", None)
    metadata = {
        "method": method_name(model),
        "backbone": model.backbone.name,
        "training_steps": None if optimizer is None else int(optimizer.iterations.numpy()),
    }
    _write_in_place(
        target,
        lambda staging: write_serving_model(
            staging, model.backbone, model.projector, image_size, mean, std, metadata, formats
        ),
    )
    return target


def _write_in_place(target: runs.RunPath, write: Callable[[Path], None]) -> None:
    """``write(staging)`` writes a version into a new local folder; it then becomes ``target``.

    Locally the folder is ``.tmp-<name>-<pid>`` beside ``target``, renamed into place
    when complete, so a TF Serving instance watching the export folder never loads a
    half-written version. Another file system (``gs://``) has no atomic folder
    rename: the version is written in a local temporary folder (the ONNX and LiteRT
    converters write local files only) and copied into ``target`` file by file,
    ``saved_model.pb`` last, so a loader never finds a SavedModel with missing files;
    an existing ``target`` (``overwrite``) is deleted first.
    """
    if not runs.is_local(target):
        with tempfile.TemporaryDirectory(prefix="tfascl-export-") as local:
            staging = Path(local) / "version"
            write(staging)
            runs.remove_tree(target)
            runs.copy_tree(staging, target, last=SAVED_MODEL_FILE)
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


PROGRAM = "tfascl-export"


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagValues:
    """Defines tfascl-export's flags in ``flag_values`` (once; again does nothing).

    Called when the command starts, not at import: importing tfascl.export into another
    absl program must not clash with its flags.

    Returns:
        ``flag_values``.
    """
    if cli.defined(flag_values, ["export_dir", "formats", "overwrite"]):
        return flag_values
    define = {"flag_values": flag_values}
    flags.DEFINE_string(
        "model_dir", None, "The run's directory (run.json, checkpoints/).", **define
    )
    flags.DEFINE_string(
        "export_dir",
        None,
        "Base path of the export (TF Serving's model_base_path); default <model_dir>/export.",
        **define,
    )
    flags.DEFINE_string(
        "checkpoint", "latest", "latest, best, or a checkpoint name/path.", **define
    )
    flags.DEFINE_integer("version", None, "Version number; default the next free one.", **define)
    flags.DEFINE_bool("overwrite", False, "Replace an existing version.", **define)
    flags.DEFINE_list(
        "formats",
        ["saved_model"],
        "What to write: saved_model (always), onnx (assets.extra/model.onnx, needs "
        "tfascl[onnx]), litert (assets.extra/model.tflite).",
        **define,
    )
    return flag_values


# What each portable format needs installed, and the extra that brings it.
FORMAT_MODULES = {"onnx": ("tf2onnx", "tfascl[onnx]")}


def check_flags(values: flags.FlagValues) -> str:
    """Every flag checked before the model is built; the export directory.

    Raises:
        FlagError: one line naming the flag.
    """
    import importlib.util

    require = cli.require
    require(values.model_dir is not None, "--model_dir: required (a training run's folder)")
    version = values.version
    require(version is None or version >= 0, f"--version={version}: must be >= 0")
    try:
        formats = check_formats(values.formats)
    except ValueError as error:
        raise cli.FlagError(f"--formats={','.join(values.formats)}: {error}") from None
    for name in formats:
        module, extra = FORMAT_MODULES.get(name, (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise cli.FlagError(f"--formats={name}: needs {module}: pip install '{extra}'")
    # Then the files the flags name.
    cli.check_run_dir(values.model_dir)
    try:
        runs.load_spec(values.model_dir)
    except ValueError as error:  # a damaged run.json
        raise cli.FlagError(f"--model_dir={values.model_dir}: {error}") from None
    try:
        runs.find_checkpoint(values.model_dir, values.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        raise cli.FlagError(f"--checkpoint={values.checkpoint}: {error}") from None
    export_dir = values.export_dir or str(runs.join(values.model_dir, runs.EXPORT_SUBDIR))
    target = runs.join(export_dir, str(next_version(export_dir) if version is None else version))
    require(
        values.overwrite or not runs.exists(target),
        f"--version={runs.base_name(target)}: {target} already exists; choose another --version or "
        "pass --overwrite",
    )
    return export_dir


def main(argv: Sequence[str]) -> None:
    """The ``tfascl-export`` app: exports and prints the version directory.

    Exit status 2 and one line for a usage error (found before the model is built), 1
    and one line when the export itself fails (a converter, a full disk).
    """
    cli.no_arguments(PROGRAM, argv)
    values = flags.FLAGS
    try:
        export_dir = check_flags(values)
    except cli.FlagError as error:
        cli.fail_usage(PROGRAM, str(error))
    try:
        path = export_backbone(
            values.model_dir,
            export_dir,
            checkpoint=values.checkpoint,
            version=values.version,
            overwrite=values.overwrite,
            formats=values.formats,
        )
    except (OSError, ValueError, ImportError) as error:
        cli.fail_run(PROGRAM, runs.error_line(error))
    print(path)


def run() -> None:
    """Console script ``tfascl-export``."""
    cli.run_app(PROGRAM, define_flags, main)


if __name__ == "__main__":
    run()
