"""Streaming input: image files (or TFDS records) read and decoded by tf.data as needed.

An `ImageFiles` is a split that stays encoded where it is: the paths of a folder's files or
a prepared TFDS split. Memory does not grow with the number of images: only the file list
(a few tens of bytes per image) is held, in host variables rather than graph constants.

Each image is decoded once per step it is used in, fused with its crop where the format
allows: for JPEG the RandomResizedCrop box is drawn from the header's size
(`extract_jpeg_shape`) and only that window is decoded (`decode_and_crop_jpeg`); PNG, GIF
(first frame) and BMP are decoded whole and cropped. Images keep their aspect ratio: the
torchvision box (scale, log-ratio, ten tries, then the central fallback) is drawn per image
on its own size. TIFF, which TensorFlow does not decode, is decoded with Pillow (as in
memory), whole. The crops are resized to the view size (bilinear, antialiased), batched,
and the rest of the strong recipe (flip, colour jitter, grayscale, blur) runs batched, as in
the in-memory pipeline.

Files that cannot be decoded are dropped from the stream (`ignore_errors`) and reported by
`SkippedFiles` once per epoch, by name.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from tfascl import imageops
from tfascl.data import augment, decode
from tfascl.data.augment import KEY_AUGMENTS, AugmentRecipe, sample_crop_boxes
from tfascl.data.host import host_variable

# Views whose crop box a pretraining example draws: query and key.
_VIEWS = 2
# Uniforms per view's crop box: CROP_ATTEMPTS candidates of (area, log-ratio, top, left),
# in the columns `augment.sample_crop_boxes` reads.
_BOX_DRAWS = 4 * augment.CROP_ATTEMPTS
# Philox yields four 32-bit draws per step of its counter.
_DRAWS_PER_STEP = 4
# Consecutive TFDS records permuted together each epoch (TFDS shuffled the examples when it
# prepared the data set, and the files are shuffled too): about 220 MB of ImageNet JPEGs.
TFDS_SHUFFLE_BLOCK = 2048


@dataclasses.dataclass
class ImageFiles:
    """A split read from its files (or TFDS records) as it is needed.

    Attributes:
        name: Dataset name.
        count: Number of images (files, or TFDS examples).
        labels: [count] int64 labels (-1 for unlabelled images among labelled ones), or
            None for unlabelled data. For TFDS the labels come with the records and this
            is None even when the split is labelled; see `labelled`.
        class_names: Class names in label order.
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
        paths: [count] file paths (folders), or None (TFDS).
        tfds: For TFDS: (builder, split expression, image key, label key or None).
        where: The folder or TFDS split, for messages.
    """

    name: str
    count: int
    labels: np.ndarray | None
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    paths: np.ndarray | None = None
    tfds: tuple | None = None
    where: str = ""
    _variables: tuple | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return self.count

    @property
    def labelled(self) -> bool:
        if self.tfds is not None:
            return self.tfds[3] is not None
        return self.labels is not None

    def host_arrays(self) -> tuple[tf.Variable, tf.Variable | None]:
        """(paths [N] string, labels [N] int64 or None) as host variables, made once.

        Variables, not constants: a dataset function captures a variable's handle, so no
        graph ever holds the file list (and none reaches TensorFlow's 2 GB proto limit).
        """
        if self._variables is None:
            paths = host_variable(self.paths.astype(object), "paths")
            labels = None if self.labels is None else host_variable(self.labels, "labels")
            self._variables = (paths, labels)
        return self._variables


# --- Opening a source without decoding it ---------------------------------------------------


def image_header_size(path: str) -> tuple[int, int] | None:
    """(height, width) read from the file header only, or None when unreadable."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception:  # any unreadable file: it is skipped later, when decoded
        return None


def sample_sizes(files: ImageFiles, sample: int = 64) -> list[tuple[int, int]]:
    """(height, width) of up to `sample` images spread over the split, from headers only.

    Folders: the file headers (Pillow opens lazily). TFDS: the image feature's static shape
    when it has one, else the first 16 records, decoded.
    """
    if getattr(files, "shards", None) is not None:  # TFRecord shards read their own
        return files.sample_sizes()
    sizes: list[tuple[int, int]] = []
    if files.paths is not None:
        step = max(1, files.count // sample)
        for path in files.paths[::step][:sample]:
            size = image_header_size(str(path))
            if size is not None:
                sizes.append(size)
        return sizes
    builder, expression, image_key, _ = files.tfds
    shape = builder.info.features[image_key].shape
    if shape[0] is not None and shape[1] is not None:
        return [(shape[0], shape[1])]
    import tensorflow_datasets as tfds

    records = builder.as_dataset(split=expression, decoders={image_key: tfds.decode.SkipDecoding()})
    for example in records.take(16):  # any format TFDS stored (PNG by default): decoded
        image = tf.io.decode_image(example[image_key], channels=3, expand_animations=False)
        sizes.append((int(image.shape[0]), int(image.shape[1])))
    return sizes


def estimated_decoded_bytes(
    files: ImageFiles, load_size: int | None, sizes: list[tuple[int, int]] | None = None
) -> int:
    """Bytes the split takes decoded into memory as uint8 RGB, estimated before decoding.

    With `load_size` every image is `load_size` pixels square; otherwise the mean size of
    `sizes` (default: `sample_sizes(files)`) stands for all of them.
    """
    if load_size is not None:
        return files.count * load_size * load_size * 3
    sizes = sample_sizes(files) if sizes is None else sizes
    if not sizes:
        return 0
    pixels = float(np.mean([h * w for h, w in sizes]))
    return int(files.count * pixels * 3)


# --- Per-example decoding -------------------------------------------------------------------


def _integer_boxes(boxes: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """[n, 4] float (top, left, h, w) boxes -> int32 boxes inside the image, at least 1 px."""
    boxes = tf.ensure_shape(boxes, [boxes.shape[0], 4])  # a static number of boxes
    h = tf.clip_by_value(tf.round(boxes[:, 2]), 1.0, height)
    w = tf.clip_by_value(tf.round(boxes[:, 3]), 1.0, width)
    top = tf.clip_by_value(tf.floor(boxes[:, 0]), 0.0, height - h)
    left = tf.clip_by_value(tf.floor(boxes[:, 1]), 0.0, width - w)
    return tf.cast(tf.stack([top, left, h, w], axis=1), tf.int32)


def _pillow_rgb(contents: bytes) -> np.ndarray:
    """[H, W, 3] uint8 of an encoded image, by the in-memory loader's own decoder; an
    unreadable one raises (and the streaming pipeline drops it, as a failed TF decode)."""
    return decode.decode(bytes(contents))


def pillow_only(contents: tf.Tensor) -> tf.Tensor:
    """Whether an encoded image is in a format only Pillow decodes here (TIFF)."""
    prefix = tf.strings.substr(contents, 0, 4)
    return tf.reduce_any([tf.equal(prefix, magic) for magic in decode.PILLOW_ONLY_MAGIC])


def decode_whole(contents: tf.Tensor) -> tf.Tensor:
    """[H, W, 3] uint8 of a PNG, GIF (first frame), BMP, WebP or JPEG by TensorFlow, or of a
    TIFF by Pillow (``tf.numpy_function``)."""

    def by_pillow() -> tf.Tensor:
        image = tf.numpy_function(_pillow_rgb, [contents], tf.uint8, stateful=False)
        return tf.ensure_shape(image, [None, None, 3])

    def by_tensorflow() -> tf.Tensor:
        return tf.io.decode_image(contents, channels=3, expand_animations=False)

    image = tf.cond(pillow_only(contents), by_pillow, by_tensorflow)
    return tf.ensure_shape(image, [None, None, 3])


def decode_views(
    contents: tf.Tensor,
    boxes_for: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    size: int,
    dct_method: str = "",
) -> tuple[tf.Tensor, ...]:
    """Decodes one encoded image into crops resized to `size`, decoding only the crops of a JPEG.

    Args:
        contents: Scalar string, an encoded JPEG, PNG, GIF, BMP, WebP or TIFF.
        boxes_for: Maps the image's (height, width) float32 scalars to [n, 4] float32 boxes
            (top, left, h, w) in pixels; n must be static.
        size: Side of the resized crops.
        dct_method: libjpeg's inverse DCT: "" (TensorFlow's default, the fast integer one)
            or "INTEGER_ACCURATE" (Pillow's, so pixels equal the in-memory decode's; up to
            5 levels apart otherwise).

    Returns:
        n crops, each [size, size, 3] float32 in [0, 255]: separate tensors, so that a
        pipeline batches each view where it is (stacking them would copy every pixel once
        more per example).
    """

    def resize(crop: tf.Tensor) -> tf.Tensor:
        shape = tf.cast(tf.shape(crop), tf.float32)
        whole = tf.stack([0.0, 0.0, shape[0], shape[1]])
        return imageops.resize_box(crop[tf.newaxis], size, whole)[0]

    # The number of boxes is static (2 views, or 1 for evaluation): the crops are unrolled
    # rather than looped with map_fn, whose while loop costs more than a small decode.
    def jpeg() -> tuple[tf.Tensor, ...]:
        shape = tf.cast(tf.io.extract_jpeg_shape(contents), tf.float32)
        boxes = _integer_boxes(boxes_for(shape[0], shape[1]), shape[0], shape[1])
        return tuple(
            resize(tf.io.decode_and_crop_jpeg(contents, box, channels=3, dct_method=dct_method))
            for box in tf.unstack(boxes)
        )

    def other() -> tuple[tf.Tensor, ...]:
        image = decode_whole(contents)
        shape = tf.cast(tf.shape(image), tf.float32)
        boxes = _integer_boxes(boxes_for(shape[0], shape[1]), shape[0], shape[1])
        return tuple(
            resize(tf.slice(image, [box[0], box[1], 0], [box[2], box[3], 3]))
            for box in tf.unstack(boxes)
        )

    crops = tf.cond(tf.io.is_jpeg(contents), jpeg, other)
    return tuple(tf.ensure_shape(crop, [size, size, 3]) for crop in crops)


def decode_crops(
    contents: tf.Tensor,
    boxes_for: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    size: int,
    dct_method: str = "",
) -> tf.Tensor:
    """`decode_views`, stacked: [n, size, size, 3] float32 in [0, 255]."""
    return tf.stack(decode_views(contents, boxes_for, size, dct_method))


def crop_uniforms(seed: Any, epoch: Any, first: Any, count: int) -> tf.Tensor:
    """The uniforms of the crop boxes of examples `first` .. `first + count - 1` of an epoch.

    Philox is a counter-based generator: example `p`'s draws start at step
    `p * _VIEWS * _BOX_DRAWS / 4` of the epoch's counter, so they are the same whether it
    is drawn alone (a TFRecord or TFDS record) or with the rest of its share (a folder's
    share: one op per share instead of two per example), and they depend only on (`seed`,
    epoch, position), not on the replicas or workers.

    Args:
        seed: Run seed.
        epoch: Epoch (int64 scalar).
        first: Position of the first example in the epoch (int64 scalar).
        count: Number of examples (static).

    Returns:
        [count, 2, 4 * CROP_ATTEMPTS] float32 in [0, 1), `augment.sample_crop_boxes`'s
        columns, one row per view (query, key).
    """
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=epoch_seed(seed, epoch))
    steps_per_example = tf.constant(_VIEWS * _BOX_DRAWS // _DRAWS_PER_STEP, tf.uint64)
    # The low word of the 128-bit counter counts the examples; the high word is the seed's.
    counter = tf.stack([tf.cast(first, tf.uint64) * steps_per_example, counter[1]])
    return tf.raw_ops.StatelessRandomUniformV2(
        shape=[count, _VIEWS, _BOX_DRAWS], key=key, counter=counter,
        alg=tf.random.Algorithm.PHILOX.value,
    )  # fmt: skip


def uniform_boxes(uniforms: tf.Tensor, recipe: AugmentRecipe | None = None) -> Callable:
    """`boxes_for` drawing RandomResizedCrop boxes (torchvision's rule: ten tries, then the
    central fallback) from `uniforms` [views, 4 * CROP_ATTEMPTS], with the crop scale and
    ratio of `recipe` (default: the standard recipe)."""
    recipe = recipe or augment.STANDARD_RECIPE

    def boxes_for(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
        return sample_crop_boxes(
            uniforms, height, width, scale=recipe.crop_scale, ratio=recipe.crop_ratio
        )

    return boxes_for


def random_boxes(
    seed: tf.Tensor, views: int = _VIEWS, recipe: AugmentRecipe | None = None
) -> Callable:
    """`boxes_for` drawing `views` RandomResizedCrop boxes (torchvision's rule) from `seed`,
    with the crop scale and ratio of `recipe` (default: the standard recipe)."""
    uniforms = tf.random.stateless_uniform([views, _BOX_DRAWS], seed, alg="philox")
    return uniform_boxes(uniforms, recipe)


def centre_box(crop_fraction: float) -> Callable:
    """`boxes_for` giving the central square of side `crop_fraction` x the shorter side."""

    def boxes_for(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
        return imageops.central_box(height, width, crop_fraction)[None, :]

    return boxes_for


# --- Index batches shared by the in-memory and the streaming pipelines ----------------------


def epoch_seed(seed: Any, epoch: Any) -> tf.Tensor:
    """The [2] int64 stateless seed of one epoch's order and augmentations."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])


def replica_shares(
    count: int,
    global_batch: int,
    seed: tf.Tensor,
    *,
    shuffle: bool = True,
    skip: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """This input pipeline's shares of one epoch's global batches, as example indices.

    The epoch's order is one seeded permutation of all `count` examples, cut into global
    batches of `global_batch` (the remainder is dropped). Global batch `s` is split into one
    slice per replica; pipeline `p` of `P` (one per worker) keeps the slices of its own
    replicas, in order. So the union over replicas is exactly the one-device batch, the
    workers' indices are disjoint, and nothing depends on how many workers there are.

    Args:
        count: Examples in the split.
        global_batch: Examples per step, all replicas together.
        seed: [2] int64 seed of the permutation.
        shuffle: Permute the examples (else dataset order).
        skip: Global batches to leave out at the start (a resumed epoch): skipped here, as
            indices, before any image is read.
        input_context: From `distribute_datasets_from_function`; None means one pipeline
            feeding one replica.

    Returns:
        Elements `(step, replica, indices)`: the global step within the epoch (int64), the
        global replica index (int64) and [global_batch / replicas] int64 indices.
    """
    replicas, pipeline, pipelines = 1, 0, 1
    if input_context is not None:
        replicas = input_context.num_replicas_in_sync
        pipeline, pipelines = input_context.input_pipeline_id, input_context.num_input_pipelines
    if global_batch % replicas:
        raise ValueError(f"global batch {global_batch} is not divisible by {replicas} replicas")
    local = replicas // pipelines
    share = global_batch // replicas
    steps = count // global_batch
    order = tf.range(count, dtype=tf.int64)
    if shuffle:
        order = tf.random.experimental.stateless_shuffle(order, seed)
    batches = tf.reshape(order[: steps * global_batch], [steps, replicas, share])

    def local_shares(step: tf.Tensor) -> tf.data.Dataset:
        first = pipeline * local
        ids = tf.range(first, first + local, dtype=tf.int64)
        slices = tf.gather(batches, step)[first : first + local]
        return tf.data.Dataset.from_tensor_slices((tf.fill([local], step), ids, slices))

    return tf.data.Dataset.range(skip, steps).flat_map(local_shares)


def epoch_numbers(seed: int, epochs: tuple[int, int] | None, spare: int = 1) -> tf.data.Dataset:
    """The epochs a stream runs through: `range(first, last + spare)`, or for `epochs=None`
    one number per iteration, drawn anew each time (a notebook's `fit(epochs=N)` re-iterates
    one dataset N times and should see N different epochs)."""
    if epochs is None:
        return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    return tf.data.Dataset.range(epochs[0], epochs[1] + spare)


def share_seed(seed: tf.Tensor, step: tf.Tensor, replica: tf.Tensor) -> tf.Tensor:
    """The [2] stateless seed of one replica's share of one step (its augmentations)."""
    mixed = tf.random.experimental.stateless_fold_in(seed, step, alg="philox")
    return tf.random.experimental.stateless_fold_in(mixed, replica, alg="philox")


# --- Datasets -------------------------------------------------------------------------------


class SkippedFiles:
    """Names the files that failed to decode, once per epoch.

    The report is one line, given to `announce` (default: an absl warning; tfascl-train
    passes `tfascl.console.warn`, which starts it on a line of its own below the progress
    bar).

    Every example that decodes writes the first epoch it decoded in into a host variable
    (one int64 per file). Decoding is deterministic, so a file that never decoded by the
    end of an epoch it was scheduled in was dropped. The schedule is recomputed from the
    same seed (indices only, nothing is read).
    """

    NEVER = np.iinfo(np.int64).max

    def __init__(self, files: ImageFiles, announce: Callable[[str], None] | None = None) -> None:
        self.files = files
        self.announce = announce or logging.warning
        self.first_decoded = host_variable(np.full(files.count, self.NEVER), "first_decoded")
        self.reported: dict[int, list[str]] = {}

    def mark(self, index: tf.Tensor, epoch: tf.Tensor) -> tf.Operation:
        return self.first_decoded.scatter_nd_min(index[None, None], epoch[None])

    def check(self, epoch: int, scheduled: np.ndarray) -> list[str]:
        """The files scheduled in `epoch` that did not decode; logged once per epoch."""
        if epoch in self.reported:
            return self.reported[epoch]
        first_decoded = self.first_decoded.numpy()
        missing = np.sort(scheduled[first_decoded[scheduled] > epoch])
        names = [str(self.files.paths[i]) for i in missing]
        self.reported[epoch] = names
        if names:
            shown = ", ".join(os.path.relpath(n, self.files.where) for n in names[:20])
            more = f" and {len(names) - 20} more" if len(names) > 20 else ""
            self.announce(
                f"epoch {epoch + 1}: skipped {len(names)} of {len(scheduled)} files of "
                f"{self.files.where} that could not be decoded: {shown}{more}"
            )
        return names


def block_shuffle(records: tf.data.Dataset, seed: tf.Tensor, block: int) -> tf.data.Dataset:
    """Permutes each run of `block` consecutive records with a stateless seeded permutation.

    A stateless stand-in for `Dataset.shuffle`: the order depends only on `seed` (so a
    resumed epoch replays it), and the seed may be a tensor, which `shuffle` rejects once a
    global seed is set.

    Args:
        records: Any dataset.
        seed: [2] int64 seed.
        block: Records permuted together.

    Returns:
        The same records, permuted within consecutive blocks.
    """

    def permute(index: tf.Tensor, batch: Any) -> tf.data.Dataset:
        size = tf.shape(tf.nest.flatten(batch)[0])[0]
        block_seed = tf.random.experimental.stateless_fold_in(seed, index, alg="philox")
        order = tf.random.experimental.stateless_shuffle(tf.range(size), block_seed)
        shuffled = tf.nest.map_structure(lambda part: tf.gather(part, order), batch)
        return tf.data.Dataset.from_tensor_slices(shuffled)

    return records.batch(block).enumerate().flat_map(permute)


def _tfds_records(
    files: ImageFiles, input_context: tf.distribute.InputContext | None, shuffle_files: bool
) -> tf.data.Dataset:
    """(encoded image, label) records of a TFDS split: this pipeline's files, in a fixed order.

    TFDS shuffles the examples when it prepares a dataset, and the files are shuffled once
    more here with a fixed seed; each epoch then permutes blocks of records with its own
    seed (`block_shuffle`).
    """
    import tensorflow_datasets as tfds

    builder, expression, image_key, label_key = files.tfds
    # The same file order on every pass (TFDS reshuffles it each iteration by default):
    # an epoch's order then depends only on its own seed, so a resumed epoch, or a streamed
    # linear-probe epoch read from a dataset built once, sees the order it would have seen.
    read_config = tfds.ReadConfig(
        input_context=input_context,
        shuffle_seed=0,
        shuffle_reshuffle_each_iteration=False,
        try_autocache=False,
    )
    records = builder.as_dataset(
        split=expression,
        shuffle_files=shuffle_files,
        read_config=read_config,
        decoders={image_key: tfds.decode.SkipDecoding()},
    )
    if label_key is None:
        return records.map(lambda ex: (ex[image_key], tf.constant(-1, tf.int64)))
    return records.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int64)))


def batch_augmenter(
    image_size: int,
    mean: Any,
    std: Any,
    *,
    key_augment: str = "weak",
    colour: bool = True,
    recipe: AugmentRecipe | None = None,
    jit_compile: bool = True,
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """The batched part of the augmentation of a streamed pipeline (folders, TFDS and
    TFRecord shards alike): flip, the strong recipe's colour part (the query's; the key's
    with ``key_augment="strong"``) and normalisation, XLA-fused as in the in-memory pipeline.

    Returns:
        ``((query crops, key crops), batch seed [2]) → (query, key)``: crops [b, S, S, 3]
        uint8-valued float32, views [b, S, S, 3] float32.
    """

    @tf.function(jit_compile=jit_compile)
    def augment_batch(
        crops: tuple[tf.Tensor, tf.Tensor], batch_seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        size = tf.constant(image_size, tf.float32)
        seeds = tf.random.experimental.stateless_split(batch_seed, num=2, alg="philox")
        views = []
        for view in range(_VIEWS):
            x = crops[view] / 255.0
            params = augment.sample_params(tf.shape(x)[0], size, size, seeds[view], recipe)
            flip = params["flip"][:, None, None, None]
            crop = tf.where(flip, tf.reverse(x, axis=[2]), x)
            if colour and (view == 0 or key_augment == "strong"):
                crop = augment.apply_colour(crop, params, recipe)
            views.append(augment.normalise(crop, mean, std))
        return views[0], views[1]

    return augment_batch


def seeded_crops(
    contents: tf.Tensor,
    epoch: tf.Tensor,
    position: tf.Tensor,
    index: tf.Tensor,
    seed: int,
    image_size: int,
    recipe: AugmentRecipe | None,
    skipped: SkippedFiles | None,
    uniforms: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The two RandomResizedCrop windows (query, key) of one encoded image, decoded.

    Their boxes are drawn from (`seed`, `epoch`, `position`): an example's place in the
    global epoch, not the file or pipeline it came from (`crop_uniforms`). `skipped` marks
    `index` decoded in `epoch` once the decode has succeeded (a failing one raises, for
    `ignore_errors`).

    Args:
        uniforms: [2, 4 * CROP_ATTEMPTS] draws of this example already made with its share
            (`crop_uniforms`), or None to draw them here (the same values).

    Returns:
        (query crop, key crop), each [S, S, 3] float32 in [0, 255].
    """
    if uniforms is None:
        uniforms = crop_uniforms(seed, epoch, position, 1)[0]
    crops = decode_views(contents, uniform_boxes(uniforms, recipe), image_size)
    if skipped is not None:
        with tf.control_dependencies(crops):
            marked = skipped.mark(index, epoch)
        with tf.control_dependencies([marked]):
            crops = tuple(tf.identity(crop) for crop in crops)
    return crops


def batched_views(
    decoded: tf.data.Dataset,
    share: int,
    seed: int,
    image_size: int,
    mean: Any,
    std: Any,
    *,
    labelled: bool,
    batches: int | None = None,
    **augment_options: Any,
) -> tf.data.Dataset:
    """Batches of (query, key) views from decoded `(epoch, position, (query crop, key crop),
    label)`: the tail every streamed pretraining pipeline shares (folders, TFDS, shards).

    Examples that failed to decode are dropped (the stream runs on into the next ones);
    each batch of `share` is augmented (`batch_augmenter(image_size, mean, std,
    **augment_options)`) with a seed of (`seed`, its epoch, its place), so a resumed stream
    repeats the uninterrupted one. `batches`: how many to take (None: all).
    """
    augment_batch = batch_augmenter(image_size, mean, std, **augment_options)
    stream = decoded.ignore_errors().batch(share, drop_remainder=True)
    if batches is not None:
        stream = stream.take(batches)

    def finish(epoch, position, crops, label):  # noqa: ANN001, ANN202
        batch_seed = tf.random.experimental.stateless_fold_in(
            epoch_seed(seed, epoch[0]), position[0] // share, alg="philox"
        )
        views = augment_batch(crops, batch_seed)
        return (views, label) if labelled else views

    return stream.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def stream_pretrain_dataset(
    files: ImageFiles,
    global_batch: int,
    image_size: int,
    *,
    seed: int,
    epochs: tuple[int, int] | None = None,
    skip: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    key_augment: str = "weak",
    jit_compile: bool = True,
    skipped: SkippedFiles | None = None,
    colour: bool = True,
    recipe: AugmentRecipe | None = None,
) -> tf.data.Dataset:
    """Pretraining batches of (query, key) views, decoded from the files as needed.

    Epoch e's order and augmentations depend only on (`seed`, e). The first `skip` global
    batches of the first epoch are left out before any file is read (TFDS: its records are
    read but not decoded). Examples that fail to decode are dropped: the stream then runs on
    into the next epoch's order, and one spare epoch at the end keeps the run from running
    out.

    Args:
        files: The split.
        global_batch: Examples per step, all replicas together.
        image_size: Side of the views.
        seed: Run seed.
        epochs: (first, one past the last) epoch of the stream, plus one spare epoch; None:
            one epoch per iteration of the dataset, a new one each time (for `fit(epochs=)`).
        skip: Global batches of the first epoch already trained on.
        input_context: From `distribute_datasets_from_function`, or None.
        key_augment: "weak" or "strong" key view.
        jit_compile: XLA-compile the batched colour augmentation.
        skipped: Records the files that decode (folders only).
        colour: Apply the strong recipe's colour part (False leaves crop, flip and
            normalisation: the reading stage alone, for `benchmarks/stream.py`).
        recipe: The augmentation's knobs (default: the standard recipe).

    Returns:
        Batches `((query, key), labels)` of [per-replica batch, S, S, 3] float32 views and
        [per-replica batch] int64 labels (-1 unlabelled), or `(query, key)` for an
        unlabelled split.
    """
    if getattr(files, "shards", None) is not None:  # TFRecord shards: read by shard
        return files.pretrain_dataset(
            global_batch, image_size, seed=seed, epochs=epochs, skip=skip,
            input_context=input_context, key_augment=key_augment, jit_compile=jit_compile,
            skipped=skipped, colour=colour, recipe=recipe,
        )  # fmt: skip
    if key_augment not in KEY_AUGMENTS:
        raise ValueError(f"key_augment must be one of {KEY_AUGMENTS}, got {key_augment!r}")
    replicas, pipeline, pipelines = 1, 0, 1
    if input_context is not None:
        replicas = input_context.num_replicas_in_sync
        pipeline, pipelines = input_context.input_pipeline_id, input_context.num_input_pipelines
    share = global_batch // replicas
    local_batch = share * (replicas // pipelines)  # examples this pipeline feeds per step
    mean, std = files.mean, files.std
    records = None if files.tfds is None else _tfds_records(files, input_context, True)

    # Elements: (epoch, position, index, source, uniforms, label). `position` numbers the
    # examples of an epoch (seeds their crops); `index` is the file's (-1 for TFDS records);
    # `source` its path (TFDS: the encoded image); `uniforms` its crop boxes' draws.
    def epoch_examples(epoch: tf.Tensor) -> tf.data.Dataset:
        seed_e = epoch_seed(seed, epoch)
        first = epochs[0] if epochs else epoch
        epoch_skip = tf.where(tf.equal(epoch, first), tf.cast(skip, tf.int64), 0)
        if records is not None:
            shuffled = block_shuffle(records, seed_e, TFDS_SHUFFLE_BLOCK)
            counter = tf.data.Dataset.range(tf.int64.max)
            no_index = tf.constant(-1, tf.int64)  # records are not files: nothing to name

            def example(n: tf.Tensor, record: tuple) -> tuple:
                position = n * pipelines + pipeline
                contents, label = record
                uniforms = crop_uniforms(seed, epoch, position, 1)[0]
                return (epoch, position, no_index, contents, uniforms, label)

            # An epoch is its whole steps; the remainder is dropped, as for files, so that
            # epochs (and a resume's skip) stay aligned with the global steps.
            steps = files.count // global_batch
            shuffled = tf.data.Dataset.zip(counter, shuffled).take(steps * local_batch)
            return shuffled.skip(epoch_skip * local_batch).map(example)
        paths, labels = files.host_arrays()
        shares = replica_shares(
            files.count, global_batch, seed_e, skip=epoch_skip, input_context=input_context
        )

        # Paths, labels and the crop boxes' uniforms are gathered (drawn) once per share;
        # each example then carries its path, read in the same parallel map that decodes it.
        def examples(step: tf.Tensor, replica: tf.Tensor, indices: tf.Tensor) -> tf.data.Dataset:
            first = (step * replicas + replica) * share
            position = first + tf.range(share, dtype=tf.int64)
            label = -tf.ones_like(indices) if labels is None else tf.gather(labels, indices)
            uniforms = crop_uniforms(seed, epoch, first, share)
            return tf.data.Dataset.from_tensor_slices(
                (tf.fill([share], epoch), position, indices, tf.gather(paths, indices), uniforms,
                 label)
            )  # fmt: skip

        return shares.flat_map(examples)

    def decode(epoch, position, index, source, uniforms, label):  # noqa: ANN001, ANN202
        # `source` is a file path, or for TFDS the encoded image itself.
        contents = tf.io.read_file(source) if records is None else source
        crops = seeded_crops(
            contents, epoch, position, index, seed, image_size, recipe, skipped, uniforms
        )
        return epoch, position, crops, label

    batches = None
    if epochs is not None:  # exactly the steps asked for: the spare epoch only fills gaps
        steps = files.count // global_batch
        batches = ((epochs[1] - epochs[0]) * steps - skip) * (replicas // pipelines)
    examples = epoch_numbers(seed, epochs).flat_map(epoch_examples)
    return batched_views(
        examples.map(decode, num_parallel_calls=tf.data.AUTOTUNE), share, seed, image_size,
        mean, std, labelled=files.labelled, batches=batches, key_augment=key_augment,
        colour=colour, recipe=recipe, jit_compile=jit_compile,
    )  # fmt: skip


def eval_view(
    contents: tf.Tensor, image_size: int, crop_fraction: float, files: ImageFiles, normalise: bool
) -> tf.Tensor:
    """The evaluation view of one encoded image: its central crop, resized, [S, S, 3] float32
    in [0, 1], or normalised with the split's statistics.

    The accurate IDCT, as Pillow decodes in memory: evaluation sees the same pixels either
    way (the fast one, kept for training views, is up to 5 levels off).
    """
    (crop,) = decode_views(contents, centre_box(crop_fraction), image_size, "INTEGER_ACCURATE")
    crop = crop / 255.0
    return augment.normalise(crop, files.mean, files.std) if normalise else crop


def stream_eval_dataset(
    files: ImageFiles,
    batch_size: int,
    image_size: int,
    crop_fraction: float = 1.0,
    indices: np.ndarray | None = None,
    *,
    normalise: bool = True,
    skipped: SkippedFiles | None = None,
) -> tf.data.Dataset:
    """Evaluation batches in dataset order: the central crop of each image, normalised.

    Args:
        files: The split.
        batch_size: Images per batch; the last batch may be smaller.
        image_size: Side of the evaluated images.
        crop_fraction: Side of the central crop over the shorter side (see
            `augment.eval_transform`).
        indices: Optional subset of the files (folders), in this order.
        normalise: Normalise with the split's statistics; False leaves [0, 1] pixels (for
            an encoder that normalises itself).
        skipped: Records the files that decode, as epoch 0 (folders only).

    Returns:
        `(images, labels)` batches, images [B, S, S, 3] float32, labels [B] int64 (-1 where
        unlabelled). Undecodable files are left out, with their labels.
    """
    if getattr(files, "shards", None) is not None:  # TFRecord shards, in shard order
        return files.eval_dataset(
            batch_size, image_size, crop_fraction, indices, normalise=normalise
        )
    no_index = tf.constant(-1, tf.int64)
    if files.tfds is not None:
        records = _tfds_records(files, None, shuffle_files=False)
        if indices is not None:
            records = records.take(len(indices))
        records = records.map(lambda contents, label: (no_index, contents, label))
    else:
        paths, labels = files.host_arrays()
        chosen = np.arange(files.count) if indices is None else np.asarray(indices)
        order = tf.data.Dataset.from_tensor_slices(chosen.astype(np.int64))

        def read(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            label = tf.gather(labels, index) if labels is not None else tf.constant(-1, tf.int64)
            return index, tf.io.read_file(tf.gather(paths, index)), label

        records = order.map(read, num_parallel_calls=tf.data.AUTOTUNE)

    def decode(
        index: tf.Tensor, contents: tf.Tensor, label: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        view = eval_view(contents, image_size, crop_fraction, files, normalise)
        if skipped is not None and files.tfds is None:  # marked once the decode succeeded
            with tf.control_dependencies([view]):
                marked = skipped.mark(index, tf.constant(0, tf.int64))
            with tf.control_dependencies([marked]):
                view = tf.identity(view)
        return view, label

    images = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    return images.batch(batch_size).prefetch(tf.data.AUTOTUNE)
