"""What the evaluation protocols share: the reference protocol of each data set, the
labelled splits and their checks, and the frozen features of a split.

A split is a decoded :class:`~tfascl.data.ImageSet` or, for data sets of any size,
:class:`~tfascl.data.ImageFiles` streamed from its files through the same eval transform
(only the ``[N, F]`` features are held).

The reference code's choices per dataset (:data:`DATASET_PROTOCOLS`): the ASCL code's
``main.py``/``dataloader.py`` (lr 10, Nesterov; STL-10's bank and test images at their
native 96 px while the model trains on 64 px crops) and MoCo's ``main_lincls.py`` for
ImageNet (lr 30, no Nesterov; validation Resize(256) + CenterCrop(224)).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tfascl import knn
from tfascl.data import (
    ImageFiles,
    ImageSet,
    eval_transform,
    folders,
    load_images,
    open_images,
)
from tfascl.data.host import host_variable
from tfascl.data.stream import SkippedFiles, sample_sizes, stream_eval_dataset
from tfascl.evaluation.encoders import Encoder, EvalInputError

# The encoder normalises; the data side produces [0, 1] pixels.
_NO_NORM = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@dataclasses.dataclass(frozen=True)
class DatasetProtocol:
    """How the reference code evaluates one dataset.

    Attributes:
        name: Key in :data:`DATASET_PROTOCOLS`.
        source: Where the values come from.
        native_size: kNN bank, kNN queries and the linear probe's test images at the
            images' own side rather than the model's training size.
        linear_lr: Base learning rate of the step schedule.
        nesterov: Nesterov momentum in the linear probe's SGD.
        eval_crop: The eval transform's central crop over the shorter side (ImageNet's
            Resize(256) + CenterCrop(224): 0.875; the small data sets: 1, the image as is).
    """

    name: str
    source: str
    native_size: bool
    linear_lr: float
    nesterov: bool
    eval_crop: float = 1.0


DATASET_PROTOCOLS = {
    "ascl_code": DatasetProtocol(
        "ascl_code",
        "ASCL code: main.py linear_eval (SGD lr 10, Nesterov momentum 0.9, steps at 60/80), "
        "dataloader.py (test/memory sets ToTensor+Normalize, linear RandomResizedCrop(size))",
        native_size=False,
        linear_lr=10.0,
        nesterov=True,
    ),
    "stl10": DatasetProtocol(
        "stl10",
        "ASCL code dataloader.py for stl10: memory and test sets ToTensor+Normalize at the "
        "native 96 px, linear RandomResizedCrop(64); main.py linear_eval",
        native_size=True,
        linear_lr=10.0,
        nesterov=True,
    ),
    "imagenet": DatasetProtocol(
        "imagenet",
        "MoCo main_lincls.py: SGD lr 30, momentum 0.9 (no Nesterov), wd 0, steps at 60/80, "
        "RandomResizedCrop(224); validation Resize(256) + CenterCrop(224)",
        native_size=False,
        linear_lr=30.0,
        nesterov=False,
        eval_crop=224 / 256,
    ),
}


def dataset_protocol(name: str) -> DatasetProtocol:
    """The reference protocol of a dataset name (TFDS name or folder path).

    ``stl10*`` → STL-10's, ``imagenet*`` (ImageNet-1k, not Tiny ImageNet) → MoCo's
    ``main_lincls.py``, anything else → the ASCL code's CIFAR protocol.
    """
    base = "".join(c for c in os.path.basename(os.path.normpath(name)).lower() if c.isalnum())
    if base.startswith("stl10"):
        return DATASET_PROTOCOLS["stl10"]
    if base.startswith("imagenet"):
        return DATASET_PROTOCOLS["imagenet"]
    return DATASET_PROTOCOLS["ascl_code"]


def image_shape(data: ImageSet | ImageFiles) -> tuple[int, int] | None:
    """(height, width) of a split's images: the array's, or for files the one size their
    headers give (a sample of them); None when the files differ in size."""
    if isinstance(data, ImageSet):
        return tuple(int(side) for side in data.images.shape[1:3])
    sizes = set(sample_sizes(data))
    return sizes.pop() if len(sizes) == 1 else None


def eval_image_size(
    protocol: DatasetProtocol, encoder: Encoder, data: ImageSet | ImageFiles
) -> tuple[int, str | None]:
    """The side the kNN bank, kNN queries and linear test images are embedded at.

    Returns:
        ``(size, note)``: the images' own side when the protocol evaluates at native
        size, the images are square and the encoder takes any size; else the model's
        size. ``note`` says when the protocol's native size could not be used.
    """
    shape = image_shape(data)
    if shape is None:
        return encoder.image_size, None
    height, width = shape
    if not protocol.native_size or height != width or height == encoder.image_size:
        return encoder.image_size, None
    if not encoder.any_size:
        return encoder.image_size, (
            f"{protocol.name} is evaluated at the images' {height} px, but this "
            f"{encoder.kind} takes {encoder.image_size} px only"
        )
    return int(height), None


def monitor_image_size(dataset: str, image_size: int, *splits: ImageSet | ImageFiles) -> int:
    """The side tfascl-train's kNN monitor embeds its bank and test images at: the final
    evaluation's (:func:`eval_image_size`), so the monitor and the best checkpoint it picks
    see what ``tfascl-eval`` sees.

    STL-10's protocol evaluates the native 96 px images (the ASCL code's ``online_test``
    uses the same ``memory_loader``/``test_loader`` as the final evaluation: ``main.py``
    121, 135; ``dataloader.py`` 345–347); the others the model's ``image_size``.

    Args:
        dataset: The run's ``--dataset`` (its name picks the protocol).
        image_size: The run's ``--image_size``.
        *splits: The bank and test images; their own side is used when they all share one
            square size.
    """
    if not dataset_protocol(dataset).native_size:
        return image_size
    shapes = {image_shape(split) for split in splits}
    if len(shapes) != 1:
        return image_size
    shape = shapes.pop()
    return int(shape[0]) if shape is not None and shape[0] == shape[1] else image_size


# --------------------------------------------------------------------------------------
# Data


def check_labelled_source(source: str, split: str) -> None:
    """Fails fast, before any image is decoded, when a folder split has no class folders.

    Only folders can be checked this cheaply (a directory listing); other sources are checked
    by :func:`load_labelled` after loading.

    Raises:
        EvalInputError: The split is a flat folder of unlabelled images, or missing.
    """
    path = os.path.expanduser(source)
    if not os.path.isdir(path):
        return
    try:
        listing = folders.scan_split(folders.split_dir(path, split))
    except ValueError as error:
        raise EvalInputError(str(error)) from None
    if listing.labels is None:
        raise EvalInputError(
            f"{listing.split_dir} has no class folders, so its images have no labels; kNN and "
            "linear evaluation need <split>/<class>/*.jpg"
        )


def load_labelled(
    source: str,
    split: str,
    *,
    data_dir: str | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> ImageSet:
    """``tfascl.data.load_images`` plus the checks a supervised protocol needs.

    Args:
        source: ``"digits"``, a TFDS name or a folder (see ``tfascl.data.load_images``).
        split: Split name.
        data_dir: TFDS data directory.
        max_examples: A stratified subset of at most this many images.
        seed: Seed of the subset.

    Returns:
        The split, with int64 labels in ``[0, C)``.

    Raises:
        EvalInputError: Unknown source/split, no labels, or unlabelled (-1) examples.
    """
    check_labelled_source(source, split)
    try:
        data = load_images(source, split, data_dir=data_dir, max_examples=max_examples, seed=seed)
    except ValueError as error:  # DatasetNotFoundError is a ValueError too
        raise EvalInputError(str(error).splitlines()[0]) from None
    check_labels(source, split, data.labels is not None, data.labels)
    return data


def open_labelled(
    source: str,
    split: str,
    *,
    data_dir: str | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> ImageFiles:
    """``tfascl.data.open_images`` (streamed, nothing decoded) plus the label checks.

    Folders are checked here; a TFDS split's labels come with its records and are checked
    as they are read (:func:`embed_split`).

    Raises:
        EvalInputError: Unknown source/split, no labels, or unlabelled (-1) examples.
    """
    check_labelled_source(source, split)
    try:
        files = open_images(source, split, data_dir=data_dir, max_examples=max_examples, seed=seed)
    except ValueError as error:
        raise EvalInputError(str(error).splitlines()[0]) from None
    check_labels(source, split, files.labelled, files.labels)
    return files


def check_labels(source: str, split: str, labelled: bool, labels: np.ndarray | None) -> None:
    """Raises ``EvalInputError`` for a split without labels or with unlabelled (-1) images.

    Args:
        source: The data set, for the message.
        split: The split, for the message.
        labelled: Whether the split has labels at all.
        labels: [N] int labels when known before reading (None: checked as records are read).
    """
    if not labelled:
        raise EvalInputError(f"{source} split {split!r} has no labels; this protocol needs them")
    if labels is not None and np.any(labels < 0):
        raise EvalInputError(
            f"{source} split {split!r} holds unlabelled images (label -1); pick a labelled split "
            "(for STL-10: --train_split=train_labelled)"
        )


def num_classes_of(train: ImageSet | ImageFiles, test: ImageSet | ImageFiles) -> int:
    """``C`` for a train/test pair; their class lists must agree.

    Raises:
        EvalInputError: The two splits name different classes.
    """
    if train.class_names and test.class_names and train.class_names != test.class_names:
        raise EvalInputError(
            f"train and test splits have different classes ({len(train.class_names)}: "
            f"{train.class_names[:5]}... vs {len(test.class_names)}: {test.class_names[:5]}...)"
        )
    known = [split.labels for split in (train, test) if split.labels is not None]
    largest = int(max((labels.max(initial=0) for labels in known), default=0))
    return max(len(train.class_names), len(test.class_names), largest + 1)


def resize_note(
    data: ImageSet | ImageFiles, image_size: int, crop_fraction: float = 1.0
) -> str | None:
    """A note when a split's images are not the model's size (they are resized, not refused)."""
    shape = image_shape(data)
    if shape == (image_size, image_size) and crop_fraction == 1.0:
        return None
    crop = "central square" if crop_fraction == 1.0 else f"central {crop_fraction:g} square"
    sizes = "of varied sizes" if shape is None else f"are {shape[0]}x{shape[1]}"
    return (
        f"{data.name} images {sizes}: {crop} crop resized to "
        f"{image_size}x{image_size} (antialiased bilinear) for the model"
    )


def pixel_batches(
    images: np.ndarray | tf.Variable,
    image_size: int,
    batch_size: int,
    crop_fraction: float = 1.0,
) -> tf.data.Dataset:
    """The eval transform of ``images`` in order: ``[B, S, S, 3]`` float32 pixels in [0, 1].

    Args:
        images: ``[N, H, W, 3]`` uint8, or a host variable holding them
            (``ImageSet.host_arrays``).
        image_size: ``S``.
        batch_size: Images per batch (the last may be smaller).
        crop_fraction: Side of the central crop over the shorter side (1: the whole
            central square; ImageNet's 0.875).
    """
    # A host variable, not a constant: the dataset function captures its handle, so the
    # pixels never enter a graph (a graph constant above 2 GB cannot even be built).
    stored = images if isinstance(images, tf.Variable) else host_variable(images, "eval_images")

    def transform(indices: tf.Tensor) -> tf.Tensor:
        pixels = tf.gather(stored, indices)
        return eval_transform(pixels, image_size, *_NO_NORM, crop_fraction=crop_fraction)

    batches = tf.data.Dataset.range(int(stored.shape[0])).batch(batch_size)
    return batches.map(transform, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def embed_images(
    encoder: Encoder,
    images: np.ndarray | tf.Variable,
    batch_size: int = 256,
    size: int | None = None,
    crop_fraction: float = 1.0,
) -> np.ndarray:
    """Frozen features of ``images`` through the eval transform (``knn.feature_extractor``).

    Args:
        encoder: The model.
        images: ``[N, H, W, 3]`` uint8 (or a host variable of them).
        batch_size: Images per forward pass.
        size: Side the images are brought to (default: the model's ``image_size``).
        crop_fraction: Side of the central crop over the shorter side.

    Returns:
        ``[N, F]`` float32 features, as ``encoder.embed`` returns them (raw for checkpoints,
        unit-norm for SavedModels).
    """
    if int(images.shape[0]) == 0:
        raise EvalInputError("no images to embed")
    size = size or encoder.image_size
    features, _ = _extractor(encoder, size)(pixel_batches(images, size, batch_size, crop_fraction))
    return features


def _extractor(encoder: Encoder, size: int) -> Callable:
    # compiled_embed is traced once per size for the encoder: every pass reuses it.
    return knn.feature_extractor(
        encoder.compiled_embed(size), normalize=False, compiled=True, name="eval", report=_note
    )


def embed_split(
    encoder: Encoder,
    data: ImageSet | ImageFiles,
    batch_size: int = 256,
    size: int | None = None,
    crop_fraction: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Frozen features and labels of a labelled split, decoded or streamed from its files.

    Streamed files get the same eval transform, decoded by tf.data as needed (JPEGs only in
    the crop's window); only the ``[N, F]`` features are held. Files that fail to decode
    are left out together with their labels, and named once on stderr.

    Args:
        encoder: The model.
        data: The split, with labels.
        batch_size: Images per forward pass.
        size: Side of the images fed to the model (default: the model's ``image_size``).
        crop_fraction: Side of the central crop over the shorter side.

    Returns:
        ``(features [N', F] float32, labels [N'] int64, skipped file names)``; ``N'`` is
        ``N`` less the skipped files.

    Raises:
        EvalInputError: No image decoded, or (TFDS) an unlabelled (-1) example.
    """
    size = size or encoder.image_size
    if isinstance(data, ImageSet):
        images, _ = data.host_arrays()
        features = embed_images(encoder, images, batch_size, size, crop_fraction)
        return features, data.labels.astype(np.int64), []
    skipped = SkippedFiles(data) if data.paths is not None else None
    batches = stream_eval_dataset(
        data, batch_size, size, crop_fraction, normalise=False, skipped=skipped
    )
    try:
        features, labels = _extractor(encoder, size)(batches)
    except ValueError:  # every file failed to decode
        raise EvalInputError(f"{data.where or data.name}: no image could be decoded") from None
    if np.any(labels < 0):
        raise EvalInputError(
            f"{data.where or data.name} holds unlabelled images (label -1); pick a labelled "
            "split (for STL-10: --train_split=train_labelled)"
        )
    names = never_decoded(data, skipped) if skipped is not None else []
    return features, labels, names


def never_decoded(files: ImageFiles, skipped: SkippedFiles) -> list[str]:
    """The files of a streamed split that did not decode in its first pass, named once."""
    missing = np.flatnonzero(skipped.first_decoded.numpy() == SkippedFiles.NEVER)
    names = [str(files.paths[i]) for i in missing]
    if names:
        shown = ", ".join(os.path.relpath(name, files.where) for name in names[:20])
        more = f" and {len(names) - 20} more" if len(names) > 20 else ""
        _note(
            f"skipped {len(names)} of {len(files)} files of {files.where} that could not be "
            f"decoded: {shown}{more}"
        )
    return names


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# What every protocol's result shares


def num_classes_seen(
    train: ImageSet | ImageFiles,
    test: ImageSet | ImageFiles,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
) -> int:
    """``num_classes_of``, counting the labels read from streamed TFDS records too.

    Args:
        train: The training split.
        test: The test split.
        train_labels: ``[N_train]`` int labels as read.
        test_labels: ``[N_test]`` int labels as read.
    """
    largest = int(max(train_labels.max(initial=0), test_labels.max(initial=0)))
    return max(num_classes_of(train, test), largest + 1)


def with_skipped(result: dict[str, Any], train: list[str], test: list[str]) -> dict[str, Any]:
    """``result`` plus ``"skipped": {split: [file, ...]}`` when streamed files failed to decode."""
    skipped = {name: files for name, files in (("train", train), ("test", test)) if files}
    if skipped:
        result["skipped"] = skipped
    return result


def timed(function: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Runs a protocol and adds ``wall_time_s`` to its result."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    result["wall_time_s"] = round(time.perf_counter() - start, 3)
    return result
