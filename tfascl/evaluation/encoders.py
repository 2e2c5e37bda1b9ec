"""Frozen feature extractors for evaluation: a training run's checkpoint or an exported model.

Both kinds are wrapped in an :class:`Encoder` that maps *pixels* — float32 ``[B, S, S, 3]`` in
``[0, 1]``, already cropped/resized to the model's size ``S`` but not normalised — to backbone
features ``[B, F]``. The encoder applies the model's own normalisation, so the evaluation data
pipeline (eval transform, weak augmentation) never needs to know it, and the three model
kinds look the same to the protocols:

* a ``model_dir`` checkpoint: ``backbone((x - mean) / std, training=False)``, raw features
  (not L2-normalised), the input of the reference code's linear classifier;
* a SavedModel with the ``preprocessed`` signature and ``assets.extra/metadata.json``
  (what ``tfascl.export`` writes): ``preprocessed((x - mean) / std)["embedding"]``;
* a SavedModel with only ``serving_default`` (uint8 images of any size):
  ``serving_default(round(255 x))["embedding"]``.

The exported ``embedding`` is L2-normalised, so a linear probe on a SavedModel sees unit-norm
features where the checkpoint path sees raw ones; kNN is unaffected (it normalises anyway).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfascl import runs
from tfascl.models.registry import run_method
from tfascl.serving import plain_batchnorm

SAVED_MODEL_FILE = "saved_model.pb"
SERVING_SIGNATURE = "serving_default"
PREPROCESSED_SIGNATURE = "preprocessed"
SIGNATURE_INPUT = "images"
SIGNATURE_OUTPUT = "embedding"
# Where tfascl.export puts its metadata, relative to the version directory; a copy directly
# in the directory is also accepted (hand-made SavedModels, tests).
METADATA_PATHS = ("assets.extra/metadata.json", "metadata.json")


class EvalInputError(ValueError):
    """Bad evaluation input (model, data or flags): shown to the user as one line."""


@dataclasses.dataclass
class Encoder:
    """A frozen backbone and what is needed to feed it.

    Attributes:
        embed: pixels ``[B, S, S, 3]`` float32 in ``[0, 1]`` → features ``[B, F]`` float32, in
            inference mode (BN uses its moving statistics; nothing is updated).
        image_size: ``S``.
        mean: Per-channel normalisation mean the model was trained with, ``[0, 1]`` units.
        std: Per-channel normalisation std.
        feature_dim: ``F``.
        method: Pretraining method (``"ascl"``, ``"moco"``, ...), or ``"unknown"``.
        dataset: The pretraining dataset (the evaluation default), or ``None`` if unknown.
        kind: ``"checkpoint"`` or ``"saved_model"``.
        source: The ``model_dir`` or SavedModel directory.
        checkpoint: The checkpoint prefix, or the SavedModel directory.
        results_dir: Where ``results.json`` goes (the ``model_dir`` or SavedModel directory).
        normalized_features: ``embed`` returns L2-normalised features (exported models).
        backbone: The Keras backbone for checkpoints (``None`` for SavedModels).
        notes: Human-readable remarks recorded with the results.
        any_size: ``embed`` takes square images of any side, not only ``image_size``
            (checkpoints: the backbone is fully convolutional with global pooling).
        eval_crop: The evaluation crop the run recorded (``flags.json``'s ``--eval_crop``,
            or an export's metadata), or ``None`` when it recorded none.
    """

    embed: Callable[[tf.Tensor], tf.Tensor]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    method: str
    dataset: str | None
    kind: str
    source: str
    checkpoint: str
    results_dir: runs.RunPath
    normalized_features: bool = False
    backbone: keras.Model | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    any_size: bool = False
    eval_crop: float | None = None
    _compiled: dict[int, Callable[[tf.Tensor], tf.Tensor]] = dataclasses.field(
        default_factory=dict, init=False, repr=False
    )

    def compiled_embed(self, size: int | None = None) -> Callable[[tf.Tensor], tf.Tensor]:
        """``embed`` as one ``tf.function`` for any batch size of ``size`` px images
        (default ``image_size``), traced once per size."""
        size = size or self.image_size
        if size != self.image_size and not self.any_size:
            raise EvalInputError(f"{self.source} takes {self.image_size} px images, not {size}")
        if size not in self._compiled:
            spec = tf.TensorSpec([None, size, size, 3], tf.float32)
            self._compiled[size] = tf.function(self.embed, input_signature=[spec])
        return self._compiled[size]

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary of the model for ``results.json``."""
        return {
            "kind": self.kind,
            "source": self.source,
            "checkpoint": self.checkpoint,
            "method": self.method,
            "pretrain_dataset": self.dataset,
            "image_size": self.image_size,
            "feature_dim": self.feature_dim,
            "features": "embedding (L2-normalised)" if self.normalized_features else "backbone",
        }


def _normalise(pixels: tf.Tensor, mean: tuple, std: tuple) -> tf.Tensor:
    mean_t = tf.constant(mean, tf.float32, shape=[3])
    std_t = tf.constant(std, tf.float32, shape=[3])
    return (tf.cast(pixels, tf.float32) - mean_t) / std_t


def is_saved_model(path: str | Path) -> bool:
    """True when ``path`` is a SavedModel directory (holds ``saved_model.pb``)."""
    return runs.is_file(runs.join(path, SAVED_MODEL_FILE))


def from_model_dir(model_dir: str | Path, checkpoint: str = "latest") -> Encoder:
    """The online backbone of a training run, restored from one of its checkpoints.

    Args:
        model_dir: The run's directory (``run.json``, ``checkpoints/``).
        checkpoint: ``"latest"``, ``"best"`` or a checkpoint name/path.

    Returns:
        An :class:`Encoder` on the restored backbone, frozen (``trainable = False``).

    Raises:
        EvalInputError: No ``run.json`` or no such checkpoint (checked before anything is built).
    """
    model_dir = runs.run_path(model_dir)  # a Path, or a URL (gs://...)
    if is_saved_model(model_dir):
        raise EvalInputError(f"{model_dir} is a SavedModel: pass it as --saved_model")
    try:
        spec = runs.load_spec(model_dir)
        # Resolved (and checked: damaged ones set aside) before the model is built.
        path = runs.find_checkpoint(model_dir, checkpoint)
        model, spec, path = runs.restore_model(model_dir, path)
    except (FileNotFoundError, runs.RunFileError) as error:
        raise EvalInputError(str(error)) from None
    backbone = any_size_backbone(model.backbone)
    backbone.trainable = False
    mean, std = tuple(spec.mean), tuple(spec.std)

    def embed(pixels: tf.Tensor) -> tf.Tensor:
        features = backbone(_normalise(pixels, mean, std), training=False)
        return tf.cast(features, tf.float32)

    return Encoder(
        embed=embed,
        image_size=spec.image_size,
        mean=mean,
        std=std,
        feature_dim=int(backbone.output_shape[-1]),
        method=run_method(spec.method, spec.relabel),
        dataset=spec.dataset,
        kind="checkpoint",
        source=str(model_dir),
        checkpoint=path,
        results_dir=model_dir,
        backbone=backbone,
        any_size=True,
        eval_crop=recorded_eval_crop(runs.read_json_record(runs.join(model_dir, runs.FLAGS_FILE))),
    )


def recorded_eval_crop(record: dict[str, Any]) -> float | None:
    """The ``eval_crop`` of a run's ``flags.json`` or an export's metadata, if valid."""
    value = record.get("eval_crop")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1:
        return float(value)
    return None


def any_size_backbone(trained: keras.Model) -> keras.Model:
    """``trained``'s weights in the same ResNet built for inputs of any side, with plain BN.

    The ResNets are fully convolutional with global pooling, so a backbone trained on
    64 px crops can embed STL-10's 96 px images as the reference code does. Plain BN
    stands in for split BN (inference uses the moving statistics either way): the
    serving export's conversion, ``serving.plain_batchnorm``.
    """
    return plain_batchnorm(trained, any_size=True)


def read_saved_model_metadata(path: str | Path) -> dict[str, Any]:
    """The export metadata beside a SavedModel (see :data:`METADATA_PATHS`), or ``{}``."""
    for relative in METADATA_PATHS:
        candidate = runs.join(path, relative)
        if runs.is_file(candidate):
            try:
                return json.loads(runs.read_text(candidate))
            except json.JSONDecodeError as error:
                raise EvalInputError(f"{candidate} is not valid JSON ({error})") from None
    return {}


def _signature(loaded: Any, name: str) -> Any | None:
    """The signature ``name`` if it takes ``images`` and returns ``embedding``, else None."""
    function = loaded.signatures.get(name)
    if function is None:
        return None
    _, inputs = function.structured_input_signature
    outputs = function.structured_outputs
    if SIGNATURE_INPUT not in inputs or SIGNATURE_OUTPUT not in outputs:
        return None
    return function


def from_saved_model(path: str | Path, image_size: int | None = None) -> Encoder:
    """An exported encoder (``tfascl-export``'s layout, or any SavedModel with its signatures).

    Required: ``serving_default(images: uint8 [N, H, W, 3]) -> {"embedding": [N, F], ...}``.
    When the ``preprocessed`` signature (float32 normalised ``[N, S, S, 3]``) and the metadata's
    ``mean``/``std`` are there, they are used (no uint8 rounding of augmented images).

    Args:
        path: The SavedModel directory (for an export, ``export_dir/<version>``; given
            ``export_dir`` itself, its highest version).
        image_size: ``S``, only needed when neither the metadata nor the ``preprocessed``
            signature tells it; must agree with them otherwise.

    Returns:
        An :class:`Encoder`.

    Raises:
        EvalInputError: Not a SavedModel, no suitable signature, or an unknown/conflicting
            image size.
    """
    path = runs.run_path(path)  # a Path, or a URL (gs://...)
    if not runs.is_dir(path):
        raise EvalInputError(f"SavedModel directory not found: {path}")
    notes = []
    if not is_saved_model(path):
        # An export base directory (TF Serving's model_base_path): take its highest version.
        versions = [
            p for p in runs.glob(path, "*") if runs.base_name(p).isdigit() and is_saved_model(p)
        ]
        if not versions:
            raise EvalInputError(f"{path} is not a SavedModel: no {SAVED_MODEL_FILE} in it")
        path = max(versions, key=lambda p: int(runs.base_name(p)))
        notes.append(
            f"evaluated version {runs.base_name(path)}, the highest in {runs.parent(path)}"
        )
    metadata = read_saved_model_metadata(path)
    loaded = tf.saved_model.load(str(path))
    serving = _signature(loaded, SERVING_SIGNATURE)
    if serving is None:
        found = ", ".join(sorted(loaded.signatures.keys())) or "none"
        raise EvalInputError(
            f"SavedModel {path} has no '{SERVING_SIGNATURE}' signature taking "
            f"'{SIGNATURE_INPUT}' and returning '{SIGNATURE_OUTPUT}' (signatures: {found})"
        )
    preprocessed = _signature(loaded, PREPROCESSED_SIGNATURE)

    sizes = {}
    if metadata.get("image_size"):
        sizes["metadata"] = int(metadata["image_size"])
    if preprocessed is not None:
        shape = preprocessed.structured_input_signature[1][SIGNATURE_INPUT].shape
        if shape.rank == 4 and shape[1] is not None:
            sizes["'preprocessed' signature"] = int(shape[1])
    if image_size is not None:
        for where, size in sizes.items():
            if size != image_size:
                raise EvalInputError(
                    f"--image_size={image_size} but the SavedModel's {where} says {size}: the "
                    "exported backbone takes one size (leave --image_size unset)"
                )
        sizes["--image_size"] = image_size
    if not sizes:
        raise EvalInputError(
            f"cannot tell the input size of SavedModel {path} (no metadata image_size, no "
            f"'{PREPROCESSED_SIGNATURE}' signature): pass --image_size"
        )
    size = next(iter(sizes.values()))

    mean, std = metadata.get("mean"), metadata.get("std")
    if preprocessed is not None and mean and std:
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        function = preprocessed

        def embed(pixels: tf.Tensor) -> tf.Tensor:
            return function(images=_normalise(pixels, mean, std))[SIGNATURE_OUTPUT]

    else:
        # The model normalises uint8 itself; our [0, 1] pixels are quantised back to uint8.
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        function = serving
        notes.append("fed uint8 images to serving_default (no 'preprocessed' signature/metadata)")

        def embed(pixels: tf.Tensor) -> tf.Tensor:
            images = tf.cast(tf.round(tf.clip_by_value(pixels, 0.0, 1.0) * 255.0), tf.uint8)
            return function(images=images)[SIGNATURE_OUTPUT]

    outputs = function.structured_outputs[SIGNATURE_OUTPUT]
    feature_dim = metadata.get("feature_dim") or outputs.shape[-1]
    if feature_dim is None:
        feature_dim = int(embed(tf.zeros([1, size, size, 3])).shape[-1])
    # Keep the loaded object alive as long as the closures that call its functions.
    embed.saved_model = loaded  # type: ignore[attr-defined]
    return Encoder(
        embed=embed,
        image_size=size,
        mean=mean,
        std=std,
        feature_dim=int(feature_dim),
        method=str(metadata.get("method", "unknown")),
        dataset=metadata.get("dataset"),
        kind="saved_model",
        source=str(path),
        checkpoint=str(metadata.get("checkpoint", path)),
        results_dir=path,
        normalized_features=True,
        notes=notes,
        eval_crop=recorded_eval_crop(metadata),
    )


def load_encoder(
    model_dir: str | Path | None = None,
    saved_model: str | Path | None = None,
    *,
    checkpoint: str = "latest",
    image_size: int | None = None,
) -> Encoder:
    """Exactly one of ``model_dir`` / ``saved_model`` → an :class:`Encoder`.

    Raises:
        EvalInputError: Neither or both given, or see :func:`from_model_dir` /
            :func:`from_saved_model`.
    """
    if (model_dir is None) == (saved_model is None):
        raise EvalInputError("give exactly one of --model_dir and --saved_model")
    if saved_model is not None:
        return from_saved_model(saved_model, image_size)
    if image_size is not None:
        spec_size = _spec_image_size(model_dir)
        if spec_size is not None and spec_size != image_size:
            raise EvalInputError(
                f"--image_size={image_size} but {model_dir} was trained at {spec_size} px and "
                "its backbone takes that size only (leave --image_size unset: evaluation "
                "images are resized to it)"
            )
    return from_model_dir(model_dir, checkpoint)


def _spec_image_size(model_dir: str | Path) -> int | None:
    try:
        return runs.load_spec(model_dir).image_size
    except (FileNotFoundError, ValueError):
        return None
