"""The linear probe's training batches: augmented crops of decoded images, crops streamed
from the files by torchvision's rule, or cached features.

* Decoded images (:func:`augmented_batches`): RandomResizedCrop at the model's size, scale
  (0.08, 1), + flip, drawn on device-friendly float boxes.
* Streamed files (:func:`streamed_linear_batches`): MoCo ``main_lincls.py``'s
  RandomResizedCrop(S) of each original image by torchvision's whole-pixel rule, only the
  crop's window decoded; memory is flat in the number of images.
  :func:`streamed_linear_epochs` is the same as the one dataset ``fit`` iterates each
  epoch.
* ``linear_fast`` (:func:`feature_batches`): cached eval-transform features, shuffled.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from tfascl.data import ImageFiles, ImageSet, stream
from tfascl.data.augment import (
    CROP_ATTEMPTS,
    CROP_RATIO,
    FLIP_PROB,
    resized_crop,
    sample_crop_boxes,
)
from tfascl.data.host import host_variable
from tfascl.data.stream import SkippedFiles

# torchvision's RandomResizedCrop default, which both reference linear probes use
# (the ASCL code's get_linear_augment, MoCo's main_lincls.py): not the pretraining
# views' (0.2, 1).
LINEAR_CROP_SCALE = (0.08, 1.0)


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


def augmented_batches(
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
        epoch: The epoch (a new order and new crops each); an int or an int64 scalar.
        scale: RandomResizedCrop's area range.
        skipped: Records the files that decode (folders).

    Returns:
        ``(pixels [B, S, S, 3] float32 in [0, 1], labels [B] int64)`` batches.
    """

    source = _stream_source(files)
    batches = _streamed_epoch(files, source, batch_size, image_size, seed, epoch, scale, skipped)
    return batches.prefetch(tf.data.AUTOTUNE)


def streamed_linear_epochs(
    files: ImageFiles,
    batch_size: int,
    image_size: int,
    seed: int,
    epoch: tf.Variable,
    scale: tuple[float, float] = LINEAR_CROP_SCALE,
    skipped: SkippedFiles | None = None,
) -> tf.data.Dataset:
    """The streamed probe's batches as the one dataset ``fit`` iterates afresh each epoch.

    Each iteration reads ``epoch`` (an int64 scalar variable; the probe's callback sets it
    at every epoch's start) when its first element is asked for, and yields that epoch's
    :func:`streamed_linear_batches`: for a folder the same order and crops, a function of
    (seed, epoch, file) only, however many iterators ``fit`` makes (it makes a spare one at
    an epoch's end, which reads the finished epoch and is dropped unread). TFDS records
    are read by one pipeline built here, whose file order TFDS reshuffles (seed 0) at each
    iteration; :func:`streamed_linear_batches` builds a new one, in its first order.

    Args:
        files: The labelled training split (a folder, or TFDS records).
        batch_size: Images per batch; the last batch of each epoch may be smaller.
        image_size: ``S``, the model's size.
        seed: Seed of the order and the draws.
        epoch: Variable holding the epoch an iteration yields (1 for the first).
        scale: RandomResizedCrop's area range.
        skipped: Records the files that decode (folders).

    Returns:
        ``(pixels [B, S, S, 3] float32 in [0, 1], labels [B] int64)`` batches.
    """
    source = _stream_source(files)  # TFDS's pipeline and the host variables: built once

    def one_epoch(_: tf.Tensor) -> tf.data.Dataset:
        return _streamed_epoch(
            files, source, batch_size, image_size, seed, epoch.read_value(), scale, skipped
        )

    start = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64))
    return start.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def _stream_source(files: ImageFiles) -> tf.data.Dataset | tuple[tf.Variable, tf.Variable]:
    """What every epoch reads: TFDS's (image, label) records, or the files' host variables."""
    if files.tfds is not None:
        return stream._tfds_records(files, None, shuffle_files=True)
    return files.host_arrays()


def _streamed_epoch(
    files: ImageFiles,
    source: tf.data.Dataset | tuple[tf.Variable, tf.Variable],
    batch_size: int,
    image_size: int,
    seed: int,
    epoch: Any,
    scale: tuple[float, float],
    skipped: SkippedFiles | None,
) -> tf.data.Dataset:
    """One epoch's batches (:func:`streamed_linear_batches`) from a prepared source;
    ``epoch`` may be a tensor, as in a dataset function."""
    epoch = tf.cast(epoch, tf.int64)

    def crop(contents: tf.Tensor, position: tf.Tensor) -> tf.Tensor:
        draws = linear_draws(seed, epoch, position)

        def boxes_for(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
            box = torchvision_crop_boxes(draws[None, :-1], height, width, scale)
            return tf.cast(box, tf.float32)  # whole pixels: kept exactly by decode_crops

        pixels = stream.decode_crops(contents, boxes_for, image_size, "INTEGER_ACCURATE")[0]
        pixels = tf.where(draws[-1] < FLIP_PROB, tf.reverse(pixels, axis=[1]), pixels)
        return pixels / 255.0

    if files.tfds is not None:
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        records = stream.block_shuffle(source, epoch_seed, stream.TFDS_SHUFFLE_BLOCK)

        def decode_record(position: tf.Tensor, record: tuple) -> tuple[tf.Tensor, tf.Tensor]:
            contents, label = record
            return crop(contents, position), label

        examples = records.enumerate().map(decode_record, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        paths, labels = source
        order = tf.data.Dataset.from_tensor_slices(linear_epoch_order(files.count, seed, epoch))

        def decode_file(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            pixels = crop(tf.io.read_file(tf.gather(paths, index)), index)
            if skipped is not None:  # marked once the decode has succeeded
                with tf.control_dependencies([pixels]):
                    marked = skipped.mark(index, epoch)
                with tf.control_dependencies([marked]):
                    pixels = tf.identity(pixels)
            return pixels, tf.gather(labels, index)

        examples = order.map(decode_file, num_parallel_calls=tf.data.AUTOTUNE)
    return examples.ignore_errors().batch(batch_size)


def feature_batches(
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
