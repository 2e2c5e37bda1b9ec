"""tf.data input pipelines over an in-memory `ImageSet`.

The images stay one uint8 tensor; each step gathers a batch of indices from it, so a batch
costs one gather rather than hundreds of per-example ops. Augmentation runs on whole
batches (batch first, then map), with per-image random parameters.
"""

from __future__ import annotations

import tensorflow as tf

from tfascl.data.augment import eval_transform, two_views
from tfascl.data.loading import ImageSet

AUGMENT_ON = ("host", "device")


def _batch_seeds(seed: int) -> tf.data.Dataset:
    """Endless [2] int64 stateless seeds: fixed by `seed`, new on every epoch."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def _index_batches(
    count: int, batch_size: int, seed: int, shuffle: bool, drop_remainder: bool
) -> tf.data.Dataset:
    """Batches of example indices, reshuffled every epoch when `shuffle`."""
    indices = tf.data.Dataset.range(count)
    if shuffle:
        indices = indices.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    return indices.batch(batch_size, drop_remainder=drop_remainder)


def pretrain_dataset(
    data: ImageSet,
    batch_size: int,
    image_size: int,
    *,
    augment_on: str = "host",
    seed: int = 0,
    shuffle: bool = True,
    jit_compile: bool = True,
) -> tf.data.Dataset:
    """Pretraining batches of two augmented views (or raw images for device augmentation).

    Every epoch reshuffles and draws new augmentations; both are fixed by `seed`, so two
    datasets built with the same seed yield the same sequence of batches. Incomplete final
    batches are dropped.

    Args:
        data: The training images.
        batch_size: Images per batch.
        image_size: Side of the augmented views in pixels (host augmentation only; on the
            device path the `TwoViews` layer sets the size).
        augment_on: "host": augment in this pipeline and yield
            `((strong, weak), labels)`, both views [B, image_size, image_size, 3] float32
            normalised with `data.mean` / `data.std`, labels [B] int64. "device": yield
            `(images, labels)` with images [B, H, W, 3] uint8 as stored, for a model that
            applies `TwoViews` in its train step.
        seed: Seed of the shuffling and of the augmentations.
        shuffle: Reshuffle the examples every epoch.
        jit_compile: Compile the host augmentation with XLA: 1.7 to 2.5 times faster on
            CPU, after a one-off compilation of several seconds. XLA draws different random
            numbers from the same seed than the plain TF kernels do, so the two settings give
            different (equally distributed) views.

    Returns:
        A `tf.data.Dataset`. When `data.labels` is None the labels are left out: elements
        are `(strong, weak)` or `images`. (Keras' `unpack_x_y_sample_weight` would read
        `(strong, weak)` as (x, y), so a train step should unpack the tuple itself.)

    Raises:
        ValueError: Unknown `augment_on`, or fewer images than one batch.
    """
    if augment_on not in AUGMENT_ON:
        raise ValueError(f"augment_on must be one of {AUGMENT_ON}, got {augment_on!r}")
    count = len(data.images)
    if count < batch_size:
        raise ValueError(
            f"{data.name} has {count} images, fewer than one batch of {batch_size} "
            f"(incomplete batches are dropped)"
        )
    images = tf.constant(data.images)
    labels = None if data.labels is None else tf.constant(data.labels, tf.int64)
    batches = _index_batches(count, batch_size, seed, shuffle, drop_remainder=True)
    mean, std = data.mean, data.std

    def raw(indices: tf.Tensor) -> tuple | tf.Tensor:
        batch = tf.gather(images, indices)
        return batch if labels is None else (batch, tf.gather(labels, indices))

    # XLA fuses the many small elementwise ops of the augmentation; on 2 CPU cores this
    # made the host pipeline 1.7 to 2.5 times faster than graph mode (docs/DATA.md).
    @tf.function(jit_compile=jit_compile)
    def views_of(batch: tf.Tensor, seeds: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return two_views(batch, image_size, mean, std, seed=seeds)

    def augment(indices: tf.Tensor, seeds: tf.Tensor) -> tuple:
        views = views_of(tf.gather(images, indices), seeds)
        return views if labels is None else (views, tf.gather(labels, indices))

    if augment_on == "device":
        dataset = batches.map(raw, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = tf.data.Dataset.zip(batches, _batch_seeds(seed)).map(
            augment, num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_dataset(data: ImageSet, batch_size: int, image_size: int) -> tf.data.Dataset:
    """Evaluation batches in dataset order, normalised with the set's statistics.

    Args:
        data: The images to evaluate on.
        batch_size: Images per batch; the last batch may be smaller.
        image_size: Side of the evaluated images (central square crop and resize if the
            stored images differ).

    Returns:
        A `tf.data.Dataset` of `(images, labels)`, images [B, image_size, image_size, 3]
        float32 and labels [B] int64, or of `images` alone when `data.labels` is None.
    """
    images = tf.constant(data.images)
    labels = None if data.labels is None else tf.constant(data.labels, tf.int64)
    mean, std = data.mean, data.std

    def transform(indices: tf.Tensor) -> tuple | tf.Tensor:
        batch = eval_transform(tf.gather(images, indices), image_size, mean, std)
        return batch if labels is None else (batch, tf.gather(labels, indices))

    batches = _index_batches(len(data.images), batch_size, 0, False, drop_remainder=False)
    return batches.map(transform, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
