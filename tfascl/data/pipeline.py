"""tf.data input pipelines: pretraining and evaluation batches, in memory or streamed.

In memory (`ImageSet`) the images stay one uint8 array in a host variable; each step
gathers a batch of indices from it, so a batch costs one gather rather than hundreds of
per-example ops. Streamed (`ImageFiles`) the files are read and decoded per example
(`tfascl.data.stream`). Both cut an epoch into the same index batches and per-replica
shares (`stream.replica_shares`), and augment whole batches with per-image parameters.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfascl.choices import AUGMENT_ON, INPUT_MODES
from tfascl.data.augment import AugmentRecipe, eval_transform, two_views
from tfascl.data.loading import ImageSet
from tfascl.data.stream import (
    ImageFiles,
    SkippedFiles,
    epoch_numbers,
    epoch_seed,
    replica_shares,
    share_seed,
    stream_eval_dataset,
    stream_pretrain_dataset,
)

__all__ = ["AUGMENT_ON", "INPUT_MODES", "eval_dataset", "pretrain_dataset"]


def memory_pretrain_dataset(
    data: ImageSet,
    global_batch: int,
    image_size: int,
    *,
    seed: int = 0,
    epochs: tuple[int, int] | None = None,
    skip: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    augment_on: str = "host",
    key_augment: str = "weak",
    shuffle: bool = True,
    jit_compile: bool = True,
    recipe: AugmentRecipe | None = None,
) -> tf.data.Dataset:
    """Pretraining batches from an in-memory `ImageSet` (see `pretrain_dataset`).

    The images live in a host variable and each batch is one gather from it: no graph holds
    them as a constant, so any set that fits in RAM trains whatever its size.
    """
    images, labels = data.host_arrays()
    mean, std = data.mean, data.std

    # XLA fuses the many small elementwise ops of the augmentation; on 2 CPU cores this
    # made the host pipeline 1.7 to 2.5 times faster than graph mode (docs/DATA.md).
    @tf.function(jit_compile=jit_compile)
    def views_of(batch: tf.Tensor, seeds: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return two_views(
            batch, image_size, mean, std, seed=seeds, key_augment=key_augment, recipe=recipe
        )

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        seed_e = epoch_seed(seed, epoch)
        first = epochs[0] if epochs else epoch
        epoch_skip = tf.where(tf.equal(epoch, first), tf.cast(skip, tf.int64), 0)
        shares = replica_shares(
            len(data), global_batch, seed_e, shuffle=shuffle, skip=epoch_skip,
            input_context=input_context,
        )  # fmt: skip

        def batch(step: tf.Tensor, replica: tf.Tensor, indices: tf.Tensor) -> tuple | tf.Tensor:
            pixels = tf.gather(images, indices)
            if augment_on == "host":
                pixels = views_of(pixels, share_seed(seed_e, step, replica))
            return pixels if labels is None else (pixels, tf.gather(labels, indices))

        return shares.map(batch, num_parallel_calls=tf.data.AUTOTUNE)

    # flat_map hides the length; Keras's fit reads an epoch's steps from it.
    local = 1
    if input_context is not None:
        local = input_context.num_replicas_in_sync // input_context.num_input_pipelines
    steps = len(data) // global_batch
    count = steps if epochs is None else (epochs[1] - epochs[0]) * steps - skip
    dataset = epoch_numbers(seed, epochs, spare=0).flat_map(epoch_batches)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(count * local))
    return dataset.prefetch(tf.data.AUTOTUNE)


def pretrain_dataset(
    data: ImageSet | ImageFiles,
    batch_size: int,
    image_size: int,
    *,
    augment_on: str = "host",
    seed: int = 0,
    shuffle: bool = True,
    jit_compile: bool = True,
    key_augment: str = "weak",
    epochs: tuple[int, int] | None = None,
    skip: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    skipped: SkippedFiles | None = None,
    recipe: AugmentRecipe | None = None,
) -> tf.data.Dataset:
    """Pretraining batches of two augmented views (or raw images for device augmentation).

    Works on an in-memory `ImageSet` (one gather per batch) or on an `ImageFiles` split
    (read and decoded as needed, `tfascl.data.stream`). Epoch e's order and augmentations
    depend only on (`seed`, e): two datasets built alike yield the same batches, and a run
    resumed mid-epoch sees exactly the rest of it. Incomplete final batches are dropped.

    Args:
        data: The training images.
        batch_size: Global batch size (all replicas together).
        image_size: Side of the augmented views in pixels (host augmentation only; on the
            device path the `TwoViews` layer sets the size).
        augment_on: "host": augment in this pipeline and yield
            `((query, key), labels)`, both views [B, image_size, image_size, 3] float32
            normalised with `data.mean` / `data.std`, labels [B] int64. "device": yield
            `(images, labels)` with images [B, H, W, 3] uint8 as stored, for a model that
            applies `TwoViews` in its train step (in-memory data only).
        seed: Seed of the shuffling and of the augmentations.
        shuffle: Reshuffle the examples every epoch (in-memory data; files are always
            shuffled).
        jit_compile: Compile the host augmentation with XLA: 1.7 to 2.5 times faster on
            CPU, after a one-off compilation of several seconds. XLA draws different random
            numbers from the same seed than the plain TF kernels do, so the two settings give
            different (equally distributed) views.
        key_augment: "weak" (crop and flip) or "strong" (MoCo v2: both views strong).
        epochs: (first, one past the last) epoch for a run that knows its length; None
            (a notebook): each iteration of the dataset is one new epoch.
        skip: Global batches of the first epoch to leave out (a resumed run).
        input_context: From `strategy.distribute_datasets_from_function`: yields this
            pipeline's per-replica batches (see `stream.replica_shares`).
        skipped: For `ImageFiles`: records which files decode, to name the others.
        recipe: The augmentation's knobs (`augment.AugmentRecipe`: crop scale, flip,
            jitter, grayscale, blur); default: the standard (CIFAR) recipe. Host
            augmentation only: on the device path the `TwoViews` layer holds its recipe.

    Returns:
        A `tf.data.Dataset`. When the data has no labels they are left out: elements
        are `(query, key)` or `images`. (Keras' `unpack_x_y_sample_weight` would read
        `(query, key)` as (x, y), so a train step should unpack the tuple itself.)

    Raises:
        ValueError: Unknown `augment_on`, device augmentation of files, or fewer images than
            one batch.
    """
    if augment_on not in AUGMENT_ON:
        raise ValueError(f"augment_on must be one of {AUGMENT_ON}, got {augment_on!r}")
    if len(data) < batch_size:
        raise ValueError(
            f"{data.name} has {len(data)} images, fewer than one batch of {batch_size} "
            f"(incomplete batches are dropped)"
        )
    if isinstance(data, ImageFiles):
        if augment_on != "host":
            raise ValueError(
                "augment_on='device' needs images of one size in memory; streamed files "
                "are augmented on the host"
            )
        return stream_pretrain_dataset(
            data, batch_size, image_size, seed=seed, epochs=epochs, skip=skip,
            input_context=input_context, key_augment=key_augment, jit_compile=jit_compile,
            skipped=skipped, recipe=recipe,
        )  # fmt: skip
    return memory_pretrain_dataset(
        data, batch_size, image_size, seed=seed, epochs=epochs, skip=skip,
        input_context=input_context, augment_on=augment_on, key_augment=key_augment,
        shuffle=shuffle, jit_compile=jit_compile, recipe=recipe,
    )  # fmt: skip


def eval_dataset(
    data: ImageSet | ImageFiles,
    batch_size: int,
    image_size: int,
    *,
    crop_fraction: float = 1.0,
    indices: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Evaluation batches in dataset order, normalised with the set's statistics.

    Args:
        data: The images to evaluate on, in memory or as files.
        batch_size: Images per batch; the last batch may be smaller.
        image_size: Side of the evaluated images.
        crop_fraction: The central crop's side over the shorter side (ImageNet: 0.875,
            torchvision's Resize(256) + CenterCrop(224)); 1.0 (whole central square) leaves
            images already `image_size` square untouched.
        indices: Optional subset (and order) of the images.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`, images [B, image_size, image_size, 3]
        float32 and labels [B] int64, or of `images` alone when the data has no labels
        (in memory; streamed files give label -1).
    """
    if isinstance(data, ImageFiles):
        return stream_eval_dataset(data, batch_size, image_size, crop_fraction, indices)
    images, labels = data.host_arrays()
    mean, std = data.mean, data.std
    chosen = np.arange(len(data)) if indices is None else np.asarray(indices)

    def transform(batch: tf.Tensor) -> tuple | tf.Tensor:
        pixels = eval_transform(tf.gather(images, batch), image_size, mean, std, crop_fraction)
        return pixels if labels is None else (pixels, tf.gather(labels, batch))

    batches = tf.data.Dataset.from_tensor_slices(chosen.astype(np.int64)).batch(batch_size)
    return batches.map(transform, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
