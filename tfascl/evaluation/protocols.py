"""The evaluation protocols: weighted kNN and the linear probe of the ASCL code.

Both take an :class:`~tfascl.evaluation.encoders.Encoder` and two labelled splits (the
training split and the test split) and return a JSON-ready dict. The encoder stays frozen
and in inference mode throughout. A split is a decoded :class:`~tfascl.data.ImageSet` or, for
data sets of any size, :class:`~tfascl.data.ImageFiles` streamed from its files through the
same eval transform (kNN and ``linear_fast``: only the ``[N, F]`` features are held); the
augmented linear probe streams too, cropping each original image as it is read.

* :func:`knn_protocol`: the training split through the eval transform is the memory bank
  (L2-normalised backbone features); every test image is classified by its ``k`` most similar
  bank entries, each voting ``exp(sim / t)`` (``tfascl.knn``: chunked, so the similarity
  matrix never exceeds ``chunk_size × N_train``).
* :func:`linear_protocol`: one linear layer on the frozen features, trained with SGD
  (momentum 0.9, no weight decay) on augmented training images (RandomResizedCrop at the
  model's size, scale (0.08, 1), + flip), ×0.1 steps at epochs 60 and 80 over 100 epochs,
  batch 256; or a per-step cosine from lr 1. ``fast=True`` ("linear_fast") trains on cached
  eval-transform features instead, without augmentation: minutes instead of hours on a CPU,
  and not the paper's number.

The reference code's choices per dataset (:data:`DATASET_PROTOCOLS`): the ASCL code's
``main.py``/``dataloader.py`` (lr 10, Nesterov; STL-10's bank and test images at their
native 96 px while the model trains on 64 px crops) and MoCo's ``main_lincls.py`` for
ImageNet (lr 30, no Nesterov; validation Resize(256) + CenterCrop(224)).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import keras
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
    stream,
)
from tfascl.data.augment import (
    CROP_ATTEMPTS,
    CROP_RATIO,
    FLIP_PROB,
    resized_crop,
    sample_crop_boxes,
)
from tfascl.data.host import host_variable
from tfascl.data.stream import SkippedFiles, sample_sizes, stream_eval_dataset
from tfascl.evaluation.encoders import Encoder, EvalInputError
from tfascl.optim import build_optimizer, multistep_decay, warmup_cosine

# The encoder normalises; the data side produces [0, 1] pixels.
_NO_NORM = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

STREAMED_NEIGHBORS_ERROR = (
    "--input=stream: --protocol=neighbors pictures training images, so it needs them decoded "
    "in memory; use --input=memory (with --max_train_examples for a large split)"
)

LINEAR_SCHEDULES = ("step", "cosine")
DEFAULT_LINEAR_LR = {"step": 10.0, "cosine": 1.0}
# torchvision's RandomResizedCrop default, which both reference linear probes use
# (the ASCL code's get_linear_augment, MoCo's main_lincls.py): not the pretraining
# views' (0.2, 1).
LINEAR_CROP_SCALE = (0.08, 1.0)


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
    names = _never_decoded(data, skipped) if skipped is not None else []
    return features, labels, names


def _never_decoded(files: ImageFiles, skipped: SkippedFiles) -> list[str]:
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
# kNN


def knn_protocol(
    encoder: Encoder,
    train: ImageSet | ImageFiles,
    test: ImageSet | ImageFiles,
    *,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 256,
    chunk_size: int = 1024,
    eval_size: int | None = None,
    crop_fraction: float = 1.0,
) -> dict[str, Any]:
    """Weighted kNN accuracy of the test split against a bank of training-split features.

    Either split may be decoded in memory or streamed from its files; the features are
    the same (decoding is), and only they are held: ``N × F`` float32.

    Args:
        encoder: The frozen model.
        train: Labelled training split (the bank), eval transform, no augmentation.
        test: Labelled test split.
        k: Neighbours (clipped to the bank size).
        temperature: Vote weight ``exp(sim / temperature)``.
        batch_size: Images per forward pass.
        chunk_size: Test rows per similarity block (memory ``chunk_size × N_train``).
        eval_size: Side of the bank and test images (default: the model's size).
        crop_fraction: Side of the eval transform's central crop over the shorter side.

    Returns:
        ``{"metrics": {"top1", "top5"}, "settings": {...}}``, plus ``"skipped": {split:
        [file, ...]}`` when streamed files failed to decode; accuracies are fractions.
    """
    eval_size = eval_size or encoder.image_size
    bank, bank_labels, bank_skipped = embed_split(
        encoder, train, batch_size, eval_size, crop_fraction
    )
    queries, query_labels, query_skipped = embed_split(
        encoder, test, batch_size, eval_size, crop_fraction
    )
    num_classes = _num_classes(train, test, bank_labels, query_labels)
    metrics = knn.knn_accuracy(
        bank,
        bank_labels,
        queries,
        query_labels,
        num_classes,
        k=k,
        temperature=temperature,
        chunk_size=chunk_size,
    )
    settings = {
        "k": min(k, len(bank)),
        "temperature": temperature,
        "weights": "exp(sim / t)",
        "image_size": eval_size,
        "eval_crop": crop_fraction,
    }
    return _with_skipped({"metrics": metrics, "settings": settings}, bank_skipped, query_skipped)


def _num_classes(
    train: ImageSet | ImageFiles,
    test: ImageSet | ImageFiles,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
) -> int:
    """``num_classes_of``, counting the labels read from streamed TFDS records too."""
    largest = int(max(train_labels.max(initial=0), test_labels.max(initial=0)))
    return max(num_classes_of(train, test), largest + 1)


def _with_skipped(result: dict[str, Any], train: list[str], test: list[str]) -> dict[str, Any]:
    skipped = {name: files for name, files in (("train", train), ("test", test)) if files}
    if skipped:
        result["skipped"] = skipped
    return result


# --------------------------------------------------------------------------------------
# Linear probe


@dataclasses.dataclass
class LinearConfig:
    """Settings of the linear probe; defaults are the ASCL code's CIFAR protocol.

    Attributes:
        epochs: Training epochs (100).
        batch_size: Images per step (256).
        learning_rate: Base rate; ``None`` takes 10 for ``"step"`` and 1 for ``"cosine"``
            (:meth:`for_dataset`: the dataset's reference rate, 30 for ImageNet).
        schedule: ``"step"`` (×``gamma`` at ``milestones``) or ``"cosine"`` (per step, to 0).
        milestones: Epochs of the step schedule (60, 80).
        gamma: Step factor (0.1).
        momentum: SGD momentum (0.9).
        nesterov: Nesterov momentum; ``None`` is on (the ASCL code), and
            :meth:`for_dataset` turns it off for ImageNet (MoCo's ``main_lincls.py``).
        crop_scale: Area range of the training crops (RandomResizedCrop's default).
        weight_decay: Coupled L2 (0).
        init_std: Std of the N(0, std) weight initialisation (0.01; bias 0).
        eval_every: Evaluate on the test split every this many epochs (and after the last).
        fast: Train on cached eval-transform features, without augmentation ("linear_fast").
        seed: Seed of the initialisation, shuffling and augmentation.
        jit_compile: Compile the augmentation with XLA (faster on CPU after a few seconds of
            compilation; turn off for tiny test runs).
    """

    epochs: int = 100
    batch_size: int = 256
    learning_rate: float | None = None
    schedule: str = "step"
    milestones: tuple[int, ...] = (60, 80)
    gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool | None = None
    crop_scale: tuple[float, float] = LINEAR_CROP_SCALE
    weight_decay: float = 0.0
    init_std: float = 0.01
    eval_every: int = 1
    fast: bool = False
    seed: int = 0
    jit_compile: bool = True

    def __post_init__(self) -> None:
        if self.schedule not in LINEAR_SCHEDULES:
            raise EvalInputError(
                f"linear schedule must be one of {LINEAR_SCHEDULES}, got {self.schedule!r}"
            )
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise EvalInputError(f"linear {name} must be >= 1, got {getattr(self, name)}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise EvalInputError(f"linear crop_scale must be 0 < low <= high <= 1, got {low, high}")

    def for_dataset(self, protocol: DatasetProtocol) -> LinearConfig:
        """This config with the unset learning rate and Nesterov taken from ``protocol``."""
        learning_rate, nesterov = self.learning_rate, self.nesterov
        if learning_rate is None and self.schedule == "step":
            learning_rate = protocol.linear_lr
        if nesterov is None:
            nesterov = protocol.nesterov
        return dataclasses.replace(self, learning_rate=learning_rate, nesterov=nesterov)

    @property
    def uses_nesterov(self) -> bool:
        return True if self.nesterov is None else self.nesterov

    @property
    def protocol(self) -> str:
        return "linear_fast" if self.fast else "linear"

    @property
    def base_lr(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return DEFAULT_LINEAR_LR[self.schedule]

    def lr_schedule(self, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
        """The per-step learning-rate schedule for ``steps_per_epoch`` steps an epoch."""
        if self.schedule == "cosine":
            return warmup_cosine(self.base_lr, total_steps=self.epochs * steps_per_epoch)
        return multistep_decay(self.base_lr, steps_per_epoch, self.milestones, self.gamma)

    def settings(self) -> dict[str, Any]:
        """JSON-ready description for ``results.json``."""
        values = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.base_lr,
            "schedule": self.schedule,
            "optimizer": f"SGD, {'Nesterov ' if self.uses_nesterov else ''}momentum "
            f"{self.momentum}, weight decay {self.weight_decay}",
            "init": f"weights N(0, {self.init_std}), bias 0",
            "augmentation": "none: cached eval-transform features"
            if self.fast
            else f"RandomResizedCrop(scale {self.crop_scale[0]}-{self.crop_scale[1]}) "
            "+ horizontal flip",
            "eval_every": self.eval_every,
            "seed": self.seed,
        }
        if self.schedule == "step":
            values.update(milestones=list(self.milestones), gamma=self.gamma)
        return values


def build_classifier(feature_dim: int, num_classes: int, init_std: float, seed: int) -> keras.Model:
    """The linear layer: ``[B, F] → [B, C]`` logits, weights N(0, init_std), bias 0."""
    inputs = keras.Input((feature_dim,), name="features")
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(0.0, init_std, seed=seed),
        bias_initializer="zeros",
        name="linear",
    )(inputs)
    return keras.Model(inputs, logits, name="linear_classifier")


def linear_crop_params(
    batch: tf.Tensor,
    height: tf.Tensor,
    width: tf.Tensor,
    seed: tf.Tensor,
    scale: tuple[float, float] = LINEAR_CROP_SCALE,
) -> tuple[tf.Tensor, tf.Tensor]:
    """RandomResizedCrop boxes and flips of the linear probe, one per image.

    Args:
        batch: Number of images.
        height: Source height in pixels (float32 scalar).
        width: Source width in pixels (float32 scalar).
        seed: [2] integer stateless seed.
        scale: Area range of the crops.

    Returns:
        ``(boxes [B, 4] (top, left, h, w) in pixels, flip [B] bool)``.
    """
    draws = 4 * CROP_ATTEMPTS
    u = tf.random.stateless_uniform(tf.stack([batch, draws + 1]), seed, alg="philox")
    boxes = sample_crop_boxes(u[:, :draws], height, width, scale=scale)
    return boxes, u[:, draws] < FLIP_PROB


def linear_augment(
    images: tf.Tensor,
    size: int,
    seed: tf.Tensor,
    scale: tuple[float, float] = LINEAR_CROP_SCALE,
) -> tf.Tensor:
    """The linear probe's training view: RandomResizedCrop(size, scale) + flip.

    Args:
        images: [B, H, W, 3] uint8 or float pixels in [0, 255].
        size: Output side.
        seed: [2] integer stateless seed.
        scale: Area range of the crops.

    Returns:
        [B, size, size, 3] float32 pixels in [0, 1] (the encoder normalises).
    """
    x = tf.cast(images, tf.float32) / 255.0
    shape = tf.shape(x)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    boxes, flip = linear_crop_params(shape[0], height, width, seed, scale)
    return resized_crop(x, boxes, flip, size)


def _augmented_batches(
    data: ImageSet,
    batch_size: int,
    image_size: int,
    seed: int,
    jit_compile: bool,
    scale: tuple[float, float] = LINEAR_CROP_SCALE,
) -> tf.data.Dataset:
    """Shuffled batches of augmented [0, 1] pixels and labels; new draws each epoch."""
    # Host variables, not constants: the pixels stay out of the dataset function's graph.
    stored, labels = data.host_arrays()
    indices = tf.data.Dataset.range(len(data.images)).shuffle(
        len(data.images), seed=seed, reshuffle_each_iteration=True
    )
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    @tf.function(jit_compile=jit_compile)
    def augment(images: tf.Tensor, pair: tf.Tensor) -> tf.Tensor:
        return linear_augment(images, image_size, pair, scale)

    def load(batch: tf.Tensor, pair: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return augment(tf.gather(stored, batch), pair), tf.cast(tf.gather(labels, batch), tf.int64)

    batches = tf.data.Dataset.zip(indices.batch(batch_size), seeds)
    return batches.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# --- The streamed linear probe: each original image, cropped by torchvision's rule -----------

# Uniform draws of one training image's crop and flip: area, log-ratio, top and left for
# each of torchvision's ten tries, then the flip.
LINEAR_DRAWS = 4 * CROP_ATTEMPTS + 1
_LINEAR_SALT = 0x11CE  # keeps the probe's draws apart from pretraining's for the same seed


def torchvision_crop_boxes(
    uniforms: tf.Tensor,
    height: tf.Tensor,
    width: tf.Tensor,
    scale: tuple[float, float] = LINEAR_CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> tf.Tensor:
    """torchvision's ``RandomResizedCrop.get_params``, whole pixels, driven by uniforms.

    Per image, up to ten tries: area ``H·W·U(scale)``, aspect ratio ``exp(U(log ratio))``,
    ``w = round(√(area·r))``, ``h = round(√(area/r))`` (round half to even, as Python's
    ``round``); the first with ``0 < w ≤ W`` and ``0 < h ≤ H`` is kept, its top and left
    drawn uniformly among the ``H − h + 1`` and ``W − w + 1`` whole-pixel positions
    (``torch.randint``). Otherwise torchvision's fallback: the whole image, its aspect ratio
    clamped to ``ratio`` (the long side cut to ``round``), centred by floor division.
    Computed in float64, so the rounding is the rule's.

    Args:
        uniforms: ``[n, 4 * CROP_ATTEMPTS]`` in [0, 1): area, log-ratio, top and left
            draws, ``CROP_ATTEMPTS`` columns each.
        height: ``[n]`` or scalar image heights in pixels.
        width: ``[n]`` or scalar widths.
        scale: Area range, as a fraction of the image.
        ratio: Aspect-ratio (width / height) range.

    Returns:
        ``[n, 4]`` float64 boxes (top, left, height, width) of whole pixels.
    """
    u = tf.cast(uniforms, tf.float64)
    count = tf.shape(u)[0]
    height = tf.broadcast_to(tf.cast(height, tf.float64), [count])[:, None]
    width = tf.broadcast_to(tf.cast(width, tf.float64), [count])[:, None]
    tries = slice(0, CROP_ATTEMPTS)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, tries])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(log_lo + (log_hi - log_lo) * u[:, CROP_ATTEMPTS : 2 * CROP_ATTEMPTS])
    w = tf.round(tf.sqrt(area * aspect))  # tf.round: half to even, as Python's round
    h = tf.round(tf.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)[:, None]

    def pick(values: tf.Tensor) -> tf.Tensor:
        return tf.gather(values, first, batch_dims=1)

    h, w = pick(h), pick(w)
    top = tf.floor(pick(u[:, 2 * CROP_ATTEMPTS : 3 * CROP_ATTEMPTS]) * (height - h + 1))
    left = tf.floor(pick(u[:, 3 * CROP_ATTEMPTS : 4 * CROP_ATTEMPTS]) * (width - w + 1))
    boxes = tf.concat([top, left, h, w], axis=1)
    image_ratio = width / height
    fallback_w = tf.where(image_ratio > ratio[1], tf.round(height * ratio[1]), width)
    fallback_h = tf.where(image_ratio < ratio[0], tf.round(width / ratio[0]), height)
    fallback = tf.concat(
        [
            tf.math.floordiv(height - fallback_h, 2.0),
            tf.math.floordiv(width - fallback_w, 2.0),
            fallback_h,
            fallback_w,
        ],
        axis=1,
    )
    return tf.where(tf.reduce_any(fits, axis=1, keepdims=True), boxes, fallback)


def linear_draws(seed: int, epoch: Any, position: Any) -> tf.Tensor:
    """The ``[LINEAR_DRAWS]`` uniforms of one training image's crop and flip: a function of
    (seed, epoch, the image's index: file number, or record position for TFDS) only."""
    base = tf.constant([seed, _LINEAR_SALT], tf.int64)
    mixed = tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64), alg="philox")
    mixed = tf.random.experimental.stateless_fold_in(
        mixed, tf.cast(position, tf.int64), alg="philox"
    )
    return tf.random.stateless_uniform([LINEAR_DRAWS], mixed, dtype=tf.float64, alg="philox")


def linear_epoch_order(count: int, seed: int, epoch: Any) -> tf.Tensor:
    """The ``[count]`` file indices of one epoch of the streamed probe, shuffled."""
    epoch_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), epoch_seed)


def streamed_linear_batches(
    files: ImageFiles,
    batch_size: int,
    image_size: int,
    seed: int,
    epoch: int,
    scale: tuple[float, float] = LINEAR_CROP_SCALE,
    skipped: SkippedFiles | None = None,
) -> tf.data.Dataset:
    """One epoch of the linear probe's training batches, read and decoded from the files.

    MoCo ``main_lincls.py`` 251–252: ``RandomResizedCrop(S)`` of each original image, then
    a horizontal flip. The box is drawn by torchvision's rule (:func:`torchvision_crop_boxes`)
    on the image's own size, read from its header; a JPEG decodes only that window (libjpeg's
    accurate IDCT, as Pillow), resized to ``S`` (antialiased bilinear). Only the file list is
    held: memory does not grow with the number of images. Files that fail to decode are left
    out (``skipped`` records the others).

    Args:
        files: The labelled training split (a folder, or TFDS records).
        batch_size: Images per batch; the last batch of the epoch may be smaller.
        image_size: ``S``, the model's size.
        seed: Seed of the order and the draws.
        epoch: The epoch (a new order and new crops each).
        scale: RandomResizedCrop's area range.
        skipped: Records the files that decode (folders).

    Returns:
        ``(pixels [B, S, S, 3] float32 in [0, 1], labels [B] int64)`` batches.
    """

    def crop(contents: tf.Tensor, position: tf.Tensor) -> tf.Tensor:
        draws = linear_draws(seed, epoch, position)

        def boxes_for(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
            box = torchvision_crop_boxes(draws[None, :-1], height, width, scale)
            return tf.cast(box, tf.float32)  # whole pixels: kept exactly by decode_crops

        pixels = stream.decode_crops(contents, boxes_for, image_size, "INTEGER_ACCURATE")[0]
        pixels = tf.where(draws[-1] < FLIP_PROB, tf.reverse(pixels, axis=[1]), pixels)
        return pixels / 255.0

    if files.tfds is not None:
        epoch_seed = tf.constant([seed, epoch], tf.int64)
        records = stream._tfds_records(files, None, shuffle_files=True)
        records = stream.block_shuffle(records, epoch_seed, stream.TFDS_SHUFFLE_BLOCK)

        def decode_record(position: tf.Tensor, record: tuple) -> tuple[tf.Tensor, tf.Tensor]:
            contents, label = record
            return crop(contents, position), label

        examples = records.enumerate().map(decode_record, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        paths, labels = files.host_arrays()
        order = tf.data.Dataset.from_tensor_slices(linear_epoch_order(files.count, seed, epoch))

        def decode_file(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            pixels = crop(tf.io.read_file(tf.gather(paths, index)), index)
            if skipped is not None:  # marked once the decode has succeeded
                with tf.control_dependencies([pixels]):
                    marked = skipped.mark(index, tf.constant(epoch, tf.int64))
                with tf.control_dependencies([marked]):
                    pixels = tf.identity(pixels)
            return pixels, tf.gather(labels, index)

        examples = order.map(decode_file, num_parallel_calls=tf.data.AUTOTUNE)
    examples = examples.ignore_errors()
    return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _feature_batches(
    features: np.ndarray, labels: np.ndarray, batch_size: int, seed: int
) -> tf.data.Dataset:
    # Host variables gathered by shuffled indices: an ImageNet-size feature cache (GBs)
    # is neither a graph constant nor copied into a shuffle buffer.
    stored = host_variable(features, "linear_features")
    targets = host_variable(labels.astype(np.int64), "linear_labels")
    indices = tf.data.Dataset.range(len(features)).shuffle(
        len(features), seed=seed, reshuffle_each_iteration=True
    )

    def load(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(stored, batch), tf.gather(targets, batch)

    dataset = indices.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def linear_protocol(
    encoder: Encoder,
    train: ImageSet | ImageFiles,
    test: ImageSet | ImageFiles,
    config: LinearConfig | None = None,
    *,
    embed_batch_size: int = 256,
    log: Callable[[str], None] | None = None,
    eval_size: int | None = None,
    crop_fraction: float = 1.0,
) -> dict[str, Any]:
    """Trains a linear classifier on the frozen encoder and reports test top-1 (best, final).

    The backbone runs in inference mode (BN moving statistics, no update) and outside the
    gradient tape; only the linear layer's kernel and bias are optimised. Test features are
    computed once: with a frozen backbone in inference mode they never change, so evaluating
    each epoch costs a matmul.

    Args:
        encoder: The frozen model.
        train: Labelled training split, decoded or streamed: streamed, the augmented probe
            crops each original image by torchvision's rule as it is read
            (:func:`streamed_linear_batches`), so memory is flat in the number of images.
        test: Labelled test split, decoded or streamed.
        config: :class:`LinearConfig` (defaults: the ASCL protocol).
        embed_batch_size: Images per forward pass when caching features.
        log: Called with a one-line progress message after each evaluation.
        eval_size: Side of the test images (and of the cached training features of
            ``fast``); training crops are at the model's size. Default: the model's size.
        crop_fraction: Side of the eval transform's central crop over the shorter side.

    Returns:
        ``{"metrics": {"top1_best", "top1_final", "top5_final", "best_epoch"}, "settings",
        "history": [{"epoch", "loss", "learning_rate", "top1"?}], "classifier": Model}``;
        accuracies are fractions. ``classifier`` is not JSON (pop it before writing).
    """
    config = config or LinearConfig()
    streamed = isinstance(train, ImageFiles) and not config.fast
    eval_size = eval_size or encoder.image_size
    test_features, test_labels, test_skipped = embed_split(
        encoder, test, embed_batch_size, eval_size, crop_fraction
    )
    train_skipped: list[str] = []
    if config.fast:
        train_features, train_labels, train_skipped = embed_split(
            encoder, train, embed_batch_size, eval_size, crop_fraction
        )
        dataset = _feature_batches(train_features, train_labels, config.batch_size, config.seed)
    elif streamed:
        # TFDS records bring their labels as they are read: the class names count them.
        known = train.labels if train.labels is not None else np.zeros(0)
        train_labels = known.astype(np.int64)
        skipped = SkippedFiles(train) if train.paths is not None else None
        count = len(train)
    else:
        train_labels = train.labels.astype(np.int64)
        dataset = _augmented_batches(
            train,
            config.batch_size,
            encoder.image_size,
            config.seed,
            config.jit_compile,
            config.crop_scale,
        )
    num_classes = _num_classes(train, test, train_labels, test_labels)
    steps_per_epoch = math.ceil((count if streamed else len(train_labels)) / config.batch_size)
    classifier = build_classifier(encoder.feature_dim, num_classes, config.init_std, config.seed)
    optimizer = build_optimizer(
        "sgd",
        config.lr_schedule(steps_per_epoch),
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        nesterov=config.uses_nesterov,
        exclude_bn_and_bias=False,  # PyTorch's SGD decays the bias too (moot at wd 0)
    )
    weights = classifier.trainable_variables
    optimizer.build(weights)
    fast = config.fast

    @tf.function(reduce_retracing=True)
    def train_step(inputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        features = inputs if fast else encoder.embed(inputs)
        features = tf.stop_gradient(features)
        with tf.GradientTape() as tape:
            logits = classifier(features, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            )
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    def test_scores() -> np.ndarray:
        return np.asarray(classifier.predict_on_batch(test_features))

    history: list[dict[str, Any]] = []
    best, best_epoch, final5 = -1.0, 0, None
    for epoch in range(1, config.epochs + 1):
        lr = float(optimizer.learning_rate)  # the rate of the epoch's first step
        if streamed:
            dataset = streamed_linear_batches(
                train, config.batch_size, encoder.image_size, config.seed, epoch,
                config.crop_scale, skipped,
            )  # fmt: skip
        losses = [float(train_step(inputs, labels)) for inputs, labels in dataset]
        if streamed and epoch == 1 and skipped is not None:
            train_skipped = _never_decoded(train, skipped)
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "learning_rate": lr,
        }
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            scores = test_scores()
            top1 = knn.top_k_accuracy(scores, test_labels, 1)
            final5 = knn.top_k_accuracy(scores, test_labels, 5) if num_classes >= 5 else None
            record["top1"] = top1
            if top1 > best:
                best, best_epoch = top1, epoch
            if log is not None:
                log(
                    f"{config.protocol} epoch {epoch}/{config.epochs}: loss {record['loss']:.4f}, "
                    f"lr {lr:.4g}, test top-1 {100 * top1:.2f}% (best {100 * best:.2f}%)"
                )
        history.append(record)
    metrics: dict[str, Any] = {
        "top1_best": best,
        "top1_final": history[-1]["top1"],
        "best_epoch": best_epoch,
    }
    if final5 is not None:
        metrics["top5_final"] = final5
    settings = {
        **config.settings(),
        "steps_per_epoch": steps_per_epoch,
        "train_crop_size": encoder.image_size,
        "test_image_size": eval_size,
        "eval_crop": crop_fraction,
    }
    if streamed:
        settings["train_crops"] = (
            "streamed: torchvision's RandomResizedCrop rule on each original image (whole-pixel "
            "box from its own size, only that window decoded), then the flip"
        )
    result = {"metrics": metrics, "settings": settings, "history": history}
    return {**_with_skipped(result, train_skipped, test_skipped), "classifier": classifier}


def timed(function: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Runs a protocol and adds ``wall_time_s`` to its result."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    result["wall_time_s"] = round(time.perf_counter() - start, 3)
    return result


# --------------------------------------------------------------------------------------
# Nearest neighbours, as a picture

NEIGHBORS_FILE = "neighbors.png"


def nearest_neighbors(
    bank: np.ndarray, queries: np.ndarray, k: int, chunk_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` bank rows of highest cosine similarity to each query, most similar first.

    Args:
        bank: [N, F] features (any norm).
        queries: [Q, F] features.
        k: Neighbours per query (clipped to N).
        chunk_size: Queries per similarity block (memory ``chunk_size × N``).

    Returns:
        ``(indices [Q, k] int64, similarities [Q, k] float32)``; ties go to the lower index.
    """
    k = min(k, len(bank))
    bank = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
    queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    indices, similarities = [], []
    for start in range(0, len(queries), chunk_size):
        sims = queries[start : start + chunk_size] @ bank.T
        # A stable sort of the negated similarities: equal ones keep the bank's order.
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        indices.append(top.astype(np.int64))
        similarities.append(np.take_along_axis(sims, top, axis=1).astype(np.float32))
    if not indices:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate(indices), np.concatenate(similarities)


def neighbors_protocol(
    encoder: Encoder,
    train: ImageSet,
    test: ImageSet,
    *,
    picture: str | os.PathLike,
    num_queries: int = 8,
    k: int = 5,
    seed: int = 0,
    batch_size: int = 256,
    chunk_size: int = 1024,
    eval_size: int | None = None,
    title: str | None = None,
    crop_fraction: float = 1.0,
) -> dict[str, Any]:
    """Each test image's ``k`` nearest training images by the backbone's features, and a picture.

    What ASCL's relabelling sees: its soft targets come from a query's nearest
    neighbours, so the share of same-class neighbours bounds how right they can be.
    The fraction is measured over every test image given (``same_class_fraction``) and
    over the ``num_queries`` drawn with ``seed`` for the picture (``..._shown``).

    Args:
        encoder: The frozen model.
        train: Labelled training split: the images searched.
        test: Labelled test split: the queries.
        picture: The PNG to write (``tfascl.plots.plot_neighbors``).
        num_queries: Test images in the picture (rows), drawn without replacement.
        k: Neighbours per query (columns).
        seed: Seed of the draw.
        batch_size: Images per forward pass.
        chunk_size: Queries per similarity block.
        eval_size: Side of the images fed to the model (default: the model's size).
        title: The picture's title.
        crop_fraction: Side of the eval transform's central crop over the shorter side.

    Returns:
        ``{"metrics", "settings", "shown", "picture"}``: fractions, what was done, and
        per shown query its test index, class and neighbours (train index, class,
        similarity).
    """
    from tfascl import plots

    if isinstance(train, ImageFiles) or isinstance(test, ImageFiles):
        raise EvalInputError(STREAMED_NEIGHBORS_ERROR)
    if num_queries < 1 or k < 1:
        raise EvalInputError(f"neighbours need num_queries >= 1 and k >= 1, got {num_queries}, {k}")
    eval_size = eval_size or encoder.image_size
    bank = embed_images(encoder, train.host_arrays()[0], batch_size, eval_size, crop_fraction)
    queries = embed_images(encoder, test.host_arrays()[0], batch_size, eval_size, crop_fraction)
    indices, similarities = nearest_neighbors(bank, queries, k, chunk_size)
    same = train.labels[indices] == test.labels[:, None]
    rng = np.random.default_rng(seed)
    shown = np.sort(rng.choice(len(test), size=min(num_queries, len(test)), replace=False))
    class_names = list(train.class_names or test.class_names or [])
    fraction = float(same.mean())
    fraction_shown = float(same[shown].mean())
    subtitle = (
        f"{indices.shape[1]} nearest of {len(train):,} {train.name} training images "
        "(cosine, backbone features)\n"
        f"same class: {100 * fraction_shown:.0f}% of those shown, "
        f"{100 * fraction:.1f}% over {len(test):,} test images"
    )
    path = plots.plot_neighbors(
        test.images[shown],
        test.labels[shown],
        train.images[indices[shown]],
        train.labels[indices[shown]],
        similarities[shown],
        class_names,
        picture,
        title=title or "Nearest training neighbours of test images",
        subtitle=subtitle,
    )
    settings = {
        "k": int(indices.shape[1]),
        "num_queries": len(shown),
        "seed": seed,
        "similarity": "cosine of backbone features",
        "image_size": eval_size,
        "eval_crop": crop_fraction,
    }
    rows = [
        {
            "test_index": int(q),
            "label": int(test.labels[q]),
            "neighbors": [
                {"train_index": int(i), "label": int(train.labels[i]), "similarity": float(s)}
                for i, s in zip(indices[q], similarities[q])
            ],
        }
        for q in shown
    ]
    return {
        "metrics": {"same_class_fraction": fraction, "same_class_fraction_shown": fraction_shown},
        "settings": settings,
        "shown": rows,
        "picture": str(path),
    }
