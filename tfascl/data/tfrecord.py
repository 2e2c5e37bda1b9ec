"""TFRecord shards of encoded images as a data source: opened and streamed.

The shards' layouts and their index: `tfascl.data.shards`; writing shards from an image
folder: `tfascl.data.tfrecord_writer` (both re-exported here).

Streaming (`pretrain_dataset`): the shards are dealt to the input pipelines (one per
worker) by the input context, shard `s` to pipeline `s mod P`, so workers read disjoint
files. Each epoch a pipeline reads its shards in a seeded order, `READERS` at a time
(interleaved, deterministic), permutes each block of `SHUFFLE_BLOCK` records with a
stateless seed and takes exactly the records its replicas train on in that epoch (its
steps x its local batch: a pipeline whose shards hold fewer records reads some twice,
one with more leaves the last ones of that epoch's order out). Epoch e's order depends
only on (seed, e), so a resumed epoch skips the records already trained on (read, not
parsed or decoded) and sees exactly the rest, as the folder stream does. The images are
decoded and augmented as in `tfascl.data.stream` (the RandomResizedCrop window of a JPEG
decoded alone). A record that does not parse or decode is dropped and named once per
epoch (`SkippedRecords`: its shard, its number in the shard and its `image/filename`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from tfascl.data import cache
from tfascl.data.augment import KEY_AUGMENTS
from tfascl.data.imageset import ImageSet, _warn_skipped, select_subset
from tfascl.data.loading import SOURCE_FORMATS, SourceFormat

# The shards' names and index, and the writer, were this module's: re-exported.
from tfascl.data.shards import (  # noqa: F401
    FILENAME_KEY,
    IMAGE_KEY,
    INDEX_NAME,
    INDEX_VERSION,
    LABEL_KEY,
    ShardIndex,
    Shards,
    _shard_records,
    build_index,
    count_records,
    find_shards,
    holds_shards,
    is_shard_name,
    load_index,
    parse_features,
    parse_record,
    read_index,
    write_index,
)
from tfascl.data.stats import STATS_SAMPLE, STATS_SIZE, Stats, estimate_stats, stats_for_name
from tfascl.data.stream import (
    ImageFiles,
    SkippedFiles,
    batched_views,
    block_shuffle,
    epoch_numbers,
    epoch_seed,
    eval_view,
    seeded_crops,
)
from tfascl.data.tfrecord_writer import image_example, main, shard_paths, write_tfrecords  # noqa: F401

# Shards read at a time by one pipeline. Fixed (not AUTOTUNE): the interleaved order, and so
# the epoch's order, must not depend on the machine.
READERS = 8
# Consecutive (interleaved) records permuted together each epoch, as for TFDS streams.
SHUFFLE_BLOCK = 2048
_VIEWS = 2


# --- Opening a split ------------------------------------------------------------------------


@dataclasses.dataclass
class TFRecordFiles(ImageFiles):
    """A split of TFRecord shards, streamed (an `ImageFiles` without paths).

    Record `i` of the split is record `i - starts[s]` of shard `s`, the shards in name
    order; `counts` are the records read from each shard (all of them, or the first ones
    of a `max_examples` subset).
    """

    shards: tuple[str, ...] = ()
    counts: tuple[int, ...] = ()
    image_key: str = IMAGE_KEY
    label_key: str | None = LABEL_KEY
    compression: str = ""  # the shards' `compression_type` ("GZIP" or "")

    def records(self, paths: Any) -> tf.data.Dataset:
        """The serialized records of some of these shards (`paths`: a list or a string tensor)."""
        return tf.data.TFRecordDataset(paths, compression_type=self.compression)

    def sample_sizes(self, sample: int = 16) -> list[tuple[int, int]]:
        """(height, width) of the first ``sample`` images (``tfrecord.sample_sizes``): how
        ``stream.sample_sizes`` reads a split of shards without importing this module."""
        return sample_sizes(self, sample)

    def pretrain_dataset(self, global_batch: int, image_size: int, **options: Any) -> Any:
        """``tfrecord.pretrain_dataset`` of this split: ``stream.pretrain_dataset`` for shards."""
        return pretrain_dataset(self, global_batch, image_size, **options)

    def eval_dataset(self, batch_size: int, image_size: int, *args: Any, **options: Any) -> Any:
        """``tfrecord.eval_dataset`` of this split: ``stream.eval_dataset`` for shards."""
        return eval_dataset(self, batch_size, image_size, *args, **options)

    @property
    def labelled(self) -> bool:
        return self.label_key is not None

    @property
    def starts(self) -> np.ndarray:
        """[shards] int64: the split index of each shard's first record."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def host_arrays(self) -> tuple[None, None]:
        """Nothing to hold: records are read from the shards (kept for `ImageFiles` callers)."""
        return None, None

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, record number in the shard) of split record `index`."""
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return shard, int(index - self.starts[shard])

    def record_name(self, index: int) -> str:
        """`<shard file> record <n>`, with the record's `image/filename` when it has one."""
        shard, number = self.locate(index)
        name = f"{os.path.basename(self.shards[shard])} record {number}"
        try:
            spec = {FILENAME_KEY: tf.io.FixedLenFeature([], tf.string, default_value="")}
            record = self.records(self.shards[shard]).skip(number).take(1)
            for serialized in record:
                filename = tf.io.parse_single_example(serialized, spec)[FILENAME_KEY].numpy()
                if filename:
                    name += f" ({filename.decode(errors='replace')})"
        except (tf.errors.OpError, ValueError):
            pass  # the name without the file name
        return name


def _split_index(root: str, split: str, keys: tuple | None) -> tuple[Shards, ShardIndex]:
    image_key, label_key = keys if keys is not None else (None, None)
    shards = find_shards(root, split)
    return shards, load_index(shards, image_key, label_key)


def _class_names(index: ShardIndex) -> list[str]:
    if index.class_names:
        return list(index.class_names)
    return [str(label) for label in range(index.num_classes)]


def stats_names(root: str) -> list[str]:
    """Names that may name a TFRecord folder's data set: its own; without a `tfrecords` or
    `shards` ending (`imagenet-tfrecords`); its parent's when it is only such a word
    (`imagenet/tfrecords`)."""
    path = os.path.normpath(os.path.abspath(root))
    name = os.path.basename(path)
    bare = re.sub(r"[-_. ]*(tf_?records?|shards?)$", "", name, flags=re.IGNORECASE)
    if not bare:
        return [name, os.path.basename(os.path.dirname(path))]
    return [name, bare] if bare != name else [name]


def split_stats(root: str, split: str, keys: tuple | None = None) -> Stats:
    """Published statistics when the folder's name is known (`stats_names`); otherwise an
    estimate from the first `stats.STATS_SAMPLE` records of the train split (this split
    when there is none), decoded at `stats.STATS_SIZE` px once and cached."""
    from tfascl.data import decode

    for name in stats_names(root):
        known = stats_for_name(name)
        if known is not None:
            return known
    try:
        shards, index = _split_index(root, "train", keys)
    except ValueError:
        shards, index = _split_index(root, split, keys)
    key = cache.cache_key("tfrecord-stats", os.path.realpath(shards.where),
                          _shard_records(shards.paths), index.image_key, STATS_SAMPLE)  # fmt: skip
    hit = cache.read(key)
    if hit is not None:
        return Stats(tuple(hit[2]["mean"]), tuple(hit[2]["std"]))
    records = tf.data.TFRecordDataset(list(shards.paths), compression_type=shards.compression)
    records = records.take(STATS_SAMPLE)
    encoded = records.map(lambda r: parse_record(r, index.image_key, None)[0]).ignore_errors()
    images = decode.decode_all(encoded.as_numpy_iterator(), (STATS_SIZE, STATS_SIZE))[0]
    if not len(images):
        raise ValueError(f"No readable image among the first records of {shards.where}")
    stats = estimate_stats(images)
    cache.write(key, {"mean": stats.mean, "std": stats.std}, None, None)
    return stats


def _first_records(counts: Sequence[int], max_examples: int | None) -> tuple[int, ...]:
    """Records read per shard for a subset of the first `max_examples` (in shard order)."""
    if max_examples is None:
        return tuple(counts)
    if max_examples < 1:
        raise ValueError(f"max_examples must be positive, got {max_examples}")
    left, taken = max_examples, []
    for count in counts:
        taken.append(min(count, left))
        left -= taken[-1]
    return tuple(taken)


def open_tfrecords(
    root: str,
    split: str = "train",
    *,
    max_examples: int | None = None,
    fraction: float | None = None,
    keys: tuple[str | None, str | None] | None = None,
) -> TFRecordFiles:
    """Opens a split of TFRecord shards for streaming: reads the index, decodes nothing.

    Args:
        root: The data set folder.
        split: Split name; "a+b" joins splits.
        max_examples: Keep the first this many records (in shard order, as TFDS's
            `split[:n]`; the in-memory load draws a stratified subset instead).
        fraction: Not supported (as for streamed TFDS).
        keys: (image feature, label feature; "" for none), None for each: the index's,
            else Model Garden's.

    Raises:
        ValueError: No shards of the split, or a bad argument.
    """
    if fraction is not None:
        raise ValueError("fraction is not supported for streamed TFRecords; use max_examples")
    paths: list[str] = []
    counts: list[int] = []
    wheres: list[str] = []
    indexes: list[ShardIndex] = []
    compressions = set()
    for part in split.split("+"):
        shards, index = _split_index(root, part, keys)
        compressions.add(shards.compression)
        paths += shards.paths
        counts += index.counts
        wheres.append(shards.where)
        indexes.append(index)
    if len(compressions) > 1:
        raise ValueError(f"The parts of split {split!r} mix GZIP-compressed and plain shards")
    image_keys = {index.image_key for index in indexes}
    if len(image_keys) > 1:
        raise ValueError(f"The parts of split {split!r} store images under different features")
    label_keys = [index.label_key for index in indexes if index.label_key]
    labelled = max(indexes, key=lambda index: index.num_classes)
    counts_read = _first_records(counts, max_examples)
    kept = [i for i, count in enumerate(counts_read) if count > 0]
    stats = split_stats(root, split.split("+")[0], keys)
    return TFRecordFiles(
        name=os.path.basename(os.path.normpath(root)),
        count=int(sum(counts_read)),
        labels=None,
        class_names=_class_names(labelled),
        mean=stats.mean,
        std=stats.std,
        where=wheres[0] if len(wheres) == 1 else os.path.commonpath(wheres),
        shards=tuple(paths[i] for i in kept),
        counts=tuple(counts_read[i] for i in kept),
        image_key=image_keys.pop(),
        label_key=label_keys[0] if label_keys else None,
        compression=compressions.pop(),
    )


def load_tfrecords(
    root: str,
    split: str = "train",
    *,
    max_examples: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    image_size: int | None = None,
    keys: tuple[str | None, str | None] | None = None,
) -> Any:
    """A split of TFRecord shards decoded into memory (an `ImageSet`), through the cache.

    A `max_examples`/`fraction` subset is drawn stratified by label, as for folders (a pass
    over the labels first, then only the chosen images are decoded). Records that do not
    decode are left out and named in one warning.
    """
    from tfascl.data import decode

    files = open_tfrecords(root, split, keys=keys)
    records = files.records(list(files.shards))
    labels = None
    if files.label_key:
        spec = {files.label_key: tf.io.FixedLenFeature([], tf.int64, default_value=-1)}
        label_batches = records.batch(4096).map(
            lambda batch: tf.io.parse_example(batch, spec)[files.label_key]
        )
        labels = np.concatenate(list(label_batches.as_numpy_iterator()))
    chosen = select_subset(
        labels, files.count, max_examples=max_examples, fraction=fraction, seed=seed
    )
    size = None if image_size is None else (image_size, image_size)
    key = cache.cache_key("tfrecord", os.path.realpath(files.where),
                          _shard_records(files.shards), files.image_key, files.label_key,
                          size, max_examples, fraction, seed)  # fmt: skip
    hit = cache.read(key)
    if hit is not None:
        images, kept_labels, meta = hit
        skipped, errors = meta["skipped"], meta["errors"]
    else:
        wanted = np.zeros(files.count, bool)
        wanted[chosen] = True
        # A record without the image feature reads as b"", which fails to decode: named.
        spec = {files.image_key: tf.io.FixedLenFeature([], tf.string, default_value="")}
        encoded = (
            records.enumerate()
            .filter(lambda i, _: tf.gather(tf.constant(wanted), i))
            .map(lambda _, record: tf.io.parse_single_example(record, spec)[files.image_key])
        )
        images, kept, failed = decode.decode_all(encoded.as_numpy_iterator(), size)
        skipped = [files.record_name(int(chosen[i])) for i in sorted(failed)]
        errors = [failed[i] for i in sorted(failed)]
        kept_labels = None if labels is None else labels[chosen][kept].astype(np.int64)
        if len(kept):
            cache.write(key, {"skipped": skipped, "errors": errors}, images, kept_labels)
    if not len(images):
        raise ValueError(f"No readable images in {files.where}")
    _warn_skipped(files.where, len(images) + len(skipped), skipped, errors)
    return ImageSet(images, kept_labels, files.class_names, files.mean, files.std, files.name,
                    skipped)  # fmt: skip


def sample_sizes(files: TFRecordFiles, sample: int = 16) -> list[tuple[int, int]]:
    """(height, width) of the first `sample` images, from their headers (Pillow)."""
    records = files.records(list(files.shards[:sample])).take(sample)
    encoded = records.map(lambda r: parse_record(r, files.image_key, None)[0]).ignore_errors()
    sizes = []
    for contents in encoded.as_numpy_iterator():
        try:
            with Image.open(io.BytesIO(contents)) as image:
                sizes.append((image.height, image.width))
        except Exception:  # an unreadable record: skipped when decoded
            continue
    return sizes


# --- Streaming ------------------------------------------------------------------------------


def _context(input_context: tf.distribute.InputContext | None) -> tuple[int, int, int]:
    if input_context is None:
        return 1, 0, 1
    return (input_context.num_replicas_in_sync, input_context.input_pipeline_id,
            input_context.num_input_pipelines)  # fmt: skip


def pipeline_shards(files: TFRecordFiles, pipeline: int, pipelines: int) -> np.ndarray:
    """The shards pipeline `pipeline` of `pipelines` reads: `s mod pipelines == pipeline`."""
    if len(files.shards) < pipelines:
        raise ValueError(
            f"{files.where}: {len(files.shards)} TFRecord shards cannot be shared by "
            f"{pipelines} workers (each reads whole shards); write at least {pipelines}"
        )
    return np.arange(pipeline, len(files.shards), pipelines, dtype=np.int64)


def _reader(files: TFRecordFiles, real: bool) -> Callable[[tf.Tensor], tf.data.Dataset]:
    """Shard index -> its records as (split index, serialized record); without `real`,
    (split index, "") with nothing read: the same order, for the schedule."""
    paths = tf.constant(list(files.shards))
    counts = tf.constant(np.asarray(files.counts, np.int64))
    starts = tf.constant(files.starts)

    def read(shard: tf.Tensor) -> tf.data.Dataset:
        start, count = tf.gather(starts, shard), tf.gather(counts, shard)
        if real:
            records = files.records(tf.gather(paths, shard)).take(count)
        else:
            records = tf.data.Dataset.range(count).map(lambda _: tf.constant("", tf.string))
        return records.enumerate().map(lambda n, record: (start + n, record))

    return read


def worker_epoch(
    files: TFRecordFiles,
    global_batch: int,
    seed: Any,
    epoch: Any,
    skip: Any = 0,
    input_context: tf.distribute.InputContext | None = None,
    real: bool = True,
) -> tf.data.Dataset:
    """One epoch of this pipeline's records: `(n, split index, serialized record)`.

    `n` numbers the pipeline's examples of the epoch (from `skip` x its local batch when
    resuming); there are exactly steps x local batch of them (see the module doc).
    `real=False` yields the same indices with empty records, reading nothing.
    """
    replicas, pipeline, pipelines = _context(input_context)
    local_batch = global_batch // replicas * (replicas // pipelines)
    per_epoch = files.count // global_batch * local_batch
    mine = pipeline_shards(files, pipeline, pipelines)
    held = int(np.asarray(files.counts)[mine].sum())
    seed_e = epoch_seed(seed, epoch)
    order = tf.random.experimental.stateless_shuffle(tf.constant(mine), seed_e)
    records = tf.data.Dataset.from_tensor_slices(order).interleave(
        _reader(files, real),
        cycle_length=min(READERS, len(mine)),
        block_length=1,
        **({"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True} if real else {}),
    )
    records = block_shuffle(records, seed_e, SHUFFLE_BLOCK)
    if held < per_epoch:  # unbalanced shards: this pipeline reads some records twice
        records = records.repeat()
    numbered = tf.data.Dataset.zip(tf.data.Dataset.range(per_epoch), records)
    numbered = numbered.map(lambda n, record: (n, *record))
    return numbered.skip(tf.cast(skip, tf.int64) * local_batch)


def pretrain_dataset(
    files: TFRecordFiles,
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
    recipe: Any = None,
) -> tf.data.Dataset:
    """Pretraining batches of (query, key) views read from the shards as needed.

    The arguments and batches are `tfascl.data.stream.stream_pretrain_dataset`'s; this
    pipeline reads only its own shards (`pipeline_shards`). `skipped`: a `SkippedRecords`.
    """
    if key_augment not in KEY_AUGMENTS:
        raise ValueError(f"key_augment must be one of {KEY_AUGMENTS}, got {key_augment!r}")
    replicas, pipeline, pipelines = _context(input_context)
    share = global_batch // replicas
    local_batch = share * (replicas // pipelines)
    steps = files.count // global_batch
    held = int(np.asarray(files.counts)[pipeline_shards(files, pipeline, pipelines)].sum())
    if held < steps * local_batch:
        logging.warning(
            "%s: the shards of input pipeline %d of %d hold %d records, fewer than the %d it "
            "trains on per epoch; it reads some twice (shards of equal size avoid this).",
            files.where, pipeline, pipelines, held, steps * local_batch,
        )  # fmt: skip
    mean, std = files.mean, files.std

    def epoch_examples(epoch: tf.Tensor) -> tf.data.Dataset:
        first = epochs[0] if epochs else epoch
        epoch_skip = tf.where(tf.equal(epoch, first), tf.cast(skip, tf.int64), 0)
        records = worker_epoch(files, global_batch, seed, epoch, epoch_skip, input_context)

        def example(n: tf.Tensor, index: tf.Tensor, record: tf.Tensor) -> tuple:
            # The example's place in the global epoch, as the folder stream numbers it.
            position = n // local_batch * global_batch + pipeline * local_batch + n % local_batch
            return epoch, position, index, record

        return records.map(example)

    def decode(epoch, position, index, record):  # noqa: ANN001, ANN202
        contents, label = parse_record(record, files.image_key, files.label_key)
        crops = seeded_crops(contents, epoch, position, index, seed, image_size, recipe, skipped)
        return epoch, position, crops, label

    batches = None
    if epochs is not None:  # exactly the steps asked for: the spare epoch only fills gaps
        batches = ((epochs[1] - epochs[0]) * steps - skip) * (replicas // pipelines)
    examples = epoch_numbers(seed, epochs).flat_map(epoch_examples)
    return batched_views(
        examples.map(decode, num_parallel_calls=tf.data.AUTOTUNE), share, seed, image_size,
        mean, std, labelled=files.labelled, batches=batches, key_augment=key_augment,
        colour=colour, recipe=recipe, jit_compile=jit_compile,
    )  # fmt: skip


def eval_dataset(
    files: TFRecordFiles,
    batch_size: int,
    image_size: int,
    crop_fraction: float = 1.0,
    indices: np.ndarray | None = None,
    *,
    normalise: bool = True,
) -> tf.data.Dataset:
    """Evaluation batches in shard order (`stream.stream_eval_dataset`'s, for shards).

    `indices`: as for TFDS records, the first `len(indices)` records. Records that do not
    decode are left out, with their labels.
    """
    read = _reader(files, real=True)
    records = tf.data.Dataset.range(len(files.shards)).flat_map(read)
    if indices is not None:
        records = records.take(len(indices))

    def decode(index: tf.Tensor, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        contents, label = parse_record(record, files.image_key, files.label_key)
        return eval_view(contents, image_size, crop_fraction, files, normalise), label

    images = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    return images.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class SkippedRecords(SkippedFiles):
    """`SkippedFiles` for shards: names the records that did not decode, once per epoch.

    A record is named by its shard, its number in the shard and its `image/filename`.
    """

    def check(self, epoch: int, scheduled: np.ndarray) -> list[str]:
        if epoch in self.reported:
            return self.reported[epoch]
        scheduled = np.unique(scheduled)
        first_decoded = self.first_decoded.numpy()
        missing = scheduled[first_decoded[scheduled] > epoch]
        names = [self.files.record_name(int(i)) for i in missing[:20]]
        self.reported[epoch] = names
        if len(missing):
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            self.announce(  # on a line of its own (tfascl-train's console), as for files
                f"epoch {epoch + 1}: skipped {len(missing)} of {len(scheduled)} records of "
                f"{self.files.where} that could not be decoded: {', '.join(names)}{more}"
            )
        return names


def epoch_schedule(
    files: TFRecordFiles,
    global_batch: int,
    seed: int,
    input_context: tf.distribute.InputContext | None,
    first_epoch: int = 0,
    skip: int = 0,
) -> Callable[[int], np.ndarray]:
    """Maps an epoch to the split indices of the records this pipeline reads in it, from the
    shards' counts alone (nothing is read); `skip` batches of `first_epoch` left out."""

    def schedule(epoch: int) -> np.ndarray:
        skipped = skip if epoch == first_epoch else 0
        records = worker_epoch(files, global_batch, seed, epoch, skipped, input_context, False)
        indices = records.map(lambda n, index, record: index).batch(65536)
        return np.concatenate([[], *indices.as_numpy_iterator()]).astype(np.int64)

    return schedule


# tfascl.data.loading reads a folder of shards through its format registry (and stream.py
# through TFRecordFiles's own methods): neither imports this module.
SOURCE_FORMATS["tfrecord"] = SourceFormat(holds_shards, open_tfrecords, load_tfrecords)
