"""TFRecord shards of encoded images as a data source: found, indexed, streamed and written.

A split is a set of shards, each a TFRecord file of `tf.train.Example`s holding one encoded
image (JPEG, PNG, GIF or BMP bytes, as stored) and optionally an int64 label, under feature
names that default to TF Model Garden's (`image/encoded`, `image/class/label`). Accepted
layouts, the split named as for folders (`--train_split`, `--test_split`):

* `root/<split>/*` — a folder per split holding the shards (`*.tfrecord*` or `*-of-*`);
* `root/<split>-*-of-*`, `root/<split>.tfrecord*` — Model Garden's ImageNet naming
  (`train-00000-of-01024`);
* `root/*-<split>.tfrecord*` — TFDS's (`cifar10-train.tfrecord-00000-of-00001`).

The record count of each shard comes from a small JSON index beside the shards
(`root/<split>/tfascl-index.json`, or `root/<split>.tfascl-index.json` for the flat
layouts), written once: when it is missing or out of date (a shard added, removed or of
another size) the shards are counted once and the index rewritten; where the folder is
read-only it goes to the decode cache (`tfascl.data.cache`) instead. `write_tfrecords`
writes shards and their index from an image folder (`benchmarks/make_tfrecords.py` is its
command line; `--index_only` indexes shards written by something else).

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

import argparse
import dataclasses
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from tfascl.data import augment, cache, folders
from tfascl.data.augment import KEY_AUGMENTS
from tfascl.data.loading import SOURCE_FORMATS, ImageSet, SourceFormat, _warn_skipped, select_subset
from tfascl.data.stats import STATS_SAMPLE, STATS_SIZE, Stats, estimate_stats, stats_for_name
from tfascl.data.stream import (
    ImageFiles,
    SkippedFiles,
    batch_augmenter,
    batched_views,
    block_shuffle,
    centre_box,
    decode_crops,
    epoch_numbers,
    epoch_seed,
    seeded_crops,
)

# TF Model Garden's feature names (official/vision/dataloaders/tf_example_decoder.py).
IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
FILENAME_KEY = "image/filename"  # written by `write_tfrecords`, read only to name bad records
INDEX_NAME = "tfascl-index.json"
INDEX_VERSION = 1
# Shards read at a time by one pipeline. Fixed (not AUTOTUNE): the interleaved order, and so
# the epoch's order, must not depend on the machine.
READERS = 8
# Consecutive (interleaved) records permuted together each epoch, as for TFDS streams.
SHUFFLE_BLOCK = 2048
_SHARD_PATTERN = re.compile(r"(\.tfrecords?(-|$|\.))|(-\d+-of-\d+$)")
_VIEWS = 2


# --- Finding shards -------------------------------------------------------------------------


def is_shard_name(name: str) -> bool:
    """A TFRecord shard's file name: `*.tfrecord*` or `*-NNNNN-of-NNNNN` (not hidden, not an
    index)."""
    if name.startswith(".") or name.endswith((".json", ".txt")):
        return False
    return bool(_SHARD_PATTERN.search(name))


def holds_shards(root: str) -> bool:
    """Whether the folder `root` is a TFRecord data set: shards in it or in a sub-folder.

    Cheap: a folder of images answers at its first image file.
    """
    try:
        with os.scandir(root) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError:
        return False
    subfolders = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            subfolders.append(entry.path)
        elif is_shard_name(entry.name):
            return True
    for folder in subfolders:
        with os.scandir(folder) as scan:
            for entry in scan:
                if entry.is_file() and is_shard_name(entry.name):
                    return True
                if entry.name.lower().endswith(folders.IMAGE_EXTENSIONS):
                    break  # an image folder
    return False


@dataclasses.dataclass(frozen=True)
class Shards:
    """The shards of one split: where they are and where their index goes."""

    split: str
    paths: tuple[str, ...]
    index_path: str
    where: str


def find_shards(root: str, split: str) -> Shards:
    """The shards of `split` under `root`, sorted by name (see the module doc for layouts).

    Raises:
        ValueError: No shard of that split.
    """
    folder = os.path.join(root, split)
    if os.path.isdir(folder):
        names = sorted(n for n in os.listdir(folder) if is_shard_name(n))
        if names:
            paths = tuple(os.path.join(folder, n) for n in names)
            return Shards(split, paths, os.path.join(folder, INDEX_NAME), folder)
    names = sorted(
        n
        for n in os.listdir(root)
        if is_shard_name(n)
        and (n.startswith((f"{split}-", f"{split}.tfrecord")) or f"-{split}.tfrecord" in n)
        and os.path.isfile(os.path.join(root, n))
    )
    if not names:
        raise ValueError(
            f"No TFRecord shards of split {split!r} in {root} (looked for {folder}/*.tfrecord*, "
            f"{root}/{split}-*-of-*, {root}/{split}.tfrecord*, {root}/*-{split}.tfrecord*)"
        )
    paths = tuple(os.path.join(root, n) for n in names)
    return Shards(split, paths, os.path.join(root, f"{split}.{INDEX_NAME}"), f"{root}/{split}-*")


# --- The index ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShardIndex:
    """Record counts of a split's shards and what their labels hold.

    Attributes:
        counts: Records per shard, in `Shards.paths` order.
        image_key: Feature of the encoded image.
        label_key: Feature of the int64 label, or None (unlabelled).
        num_classes: Largest label + 1 (0 when no record has a label).
        class_names: Class names in label order, when the writer knew them.
        looked_for: The label feature the records were read for ("" for none): an index
            of unlabelled records answers for it without counting again.
    """

    counts: tuple[int, ...]
    image_key: str
    label_key: str | None
    num_classes: int
    class_names: tuple[str, ...] = ()
    looked_for: str = ""


def _shard_records(paths: Sequence[str]) -> list[dict]:
    return [{"name": os.path.basename(p), "bytes": os.path.getsize(p)} for p in paths]


def _index_json(shards: Shards, index: ShardIndex) -> dict:
    records = _shard_records(shards.paths)
    for record, count in zip(records, index.counts):
        record["records"] = count
    return {
        "format": "tfascl TFRecord index",
        "version": INDEX_VERSION,
        "split": shards.split,
        "image_key": index.image_key,
        "label_key": index.label_key,
        "label_key_looked_for": index.looked_for or index.label_key or "",
        "num_classes": index.num_classes,
        "class_names": list(index.class_names),
        "shards": records,
    }


def _from_json(record: dict, shards: Shards) -> ShardIndex | None:
    """The index a JSON record holds, or None when it does not describe these shards."""
    try:
        if record.get("version") != INDEX_VERSION:
            return None
        listed = [{"name": s["name"], "bytes": s["bytes"]} for s in record["shards"]]
        if listed != _shard_records(shards.paths):
            return None
        return ShardIndex(
            counts=tuple(int(s["records"]) for s in record["shards"]),
            image_key=record["image_key"],
            label_key=record["label_key"],
            num_classes=int(record["num_classes"]),
            class_names=tuple(record.get("class_names") or ()),
            looked_for=record.get("label_key_looked_for") or record["label_key"] or "",
        )
    except (KeyError, TypeError, ValueError):
        return None


def _cache_key(shards: Shards) -> str:
    return cache.cache_key("tfrecord-index", os.path.realpath(shards.where),
                           _shard_records(shards.paths))  # fmt: skip


def read_index(shards: Shards) -> ShardIndex | None:
    """The up-to-date index of `shards` (beside them, else in the cache), or None."""
    try:
        with open(shards.index_path) as file:
            found = _from_json(json.load(file), shards)
        if found is not None:
            return found
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as error:
        logging.warning("Ignoring the unreadable TFRecord index %s: %s", shards.index_path, error)
    hit = cache.read(_cache_key(shards))
    return None if hit is None else _from_json(hit[2], shards)


def write_index(shards: Shards, index: ShardIndex) -> str:
    """Writes the index beside the shards (atomically), else into the cache; returns where."""
    record = _index_json(shards, index)
    folder = os.path.dirname(shards.index_path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=".tfascl-index-", dir=folder)
        with os.fdopen(handle, "w") as file:
            json.dump(record, file, indent=1)
        os.replace(temporary, shards.index_path)
        return shards.index_path
    except OSError as error:
        logging.warning(
            "Cannot write the TFRecord index beside the shards (%s); keeping it in the cache.",
            error.strerror or error,
        )
        cache.write(_cache_key(shards), record, None, None)
        return "the tfascl cache"


def parse_features(image_key: str, label_key: str | None) -> dict:
    features = {image_key: tf.io.FixedLenFeature([], tf.string)}
    if label_key:
        features[label_key] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
    return features


def parse_record(
    serialized: tf.Tensor, image_key: str, label_key: str | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """(encoded image, int64 label, -1 without one) of one serialized `tf.train.Example`."""
    parsed = tf.io.parse_single_example(serialized, parse_features(image_key, label_key))
    label = parsed[label_key] if label_key else tf.constant(-1, tf.int64)
    return parsed[image_key], label


def count_records(path: str, label_key: str | None, limit: int | None = None) -> tuple[int, int]:
    """(records, largest label or -1) of one shard: every record is read, no image decoded."""
    records = tf.data.TFRecordDataset(path)
    if limit is not None:
        records = records.take(limit)
    if not label_key:
        return int(records.reduce(np.int64(0), lambda n, _: n + 1)), -1
    spec = {label_key: tf.io.FixedLenFeature([], tf.int64, default_value=-1)}
    labels = records.batch(4096).map(lambda batch: tf.io.parse_example(batch, spec)[label_key])
    count, largest = 0, -1
    for batch in labels.as_numpy_iterator():
        count += len(batch)
        largest = max(largest, int(batch.max())) if len(batch) else largest
    return count, largest


def build_index(
    shards: Shards,
    image_key: str = IMAGE_KEY,
    label_key: str | None = LABEL_KEY,
    class_names: Sequence[str] = (),
) -> ShardIndex:
    """Counts the records of every shard (and its largest label) and writes the index."""
    logging.warning(
        "Indexing %d TFRecord shards of %s (once: the counts are kept in %s).",
        len(shards.paths),
        shards.where,
        os.path.basename(shards.index_path),
    )
    counts, largest = [], -1
    for path in shards.paths:
        try:
            count, top = count_records(path, label_key)
        except tf.errors.DataLossError as error:
            raise ValueError(f"{path} is damaged: {error.message.splitlines()[0]}") from None
        except tf.errors.InvalidArgumentError as error:  # a label of another type
            raise ValueError(
                f"{path}: cannot read the label feature {label_key!r} as one int64 "
                f"({error.message.splitlines()[0]}); pass its name or '' (none)"
            ) from None
        counts.append(count)
        largest = max(largest, top)
    labelled = bool(label_key) and largest >= 0
    index = ShardIndex(
        counts=tuple(counts),
        image_key=image_key,
        label_key=label_key if labelled else None,
        num_classes=largest + 1 if labelled else 0,
        class_names=tuple(class_names),
        looked_for=label_key or "",
    )
    write_index(shards, index)
    return index


def load_index(
    shards: Shards, image_key: str | None = None, label_key: str | None = None
) -> ShardIndex:
    """The index of `shards`, built once when missing, out of date or made for other keys.

    Args:
        shards: The split's shards.
        image_key: Feature of the encoded image; None: the index's, else Model Garden's.
        label_key: Feature of the label ("" for none); None: the index's, else Model
            Garden's.
    """
    found = read_index(shards)
    if found is not None:
        same_image = image_key is None or image_key == found.image_key
        same_label = label_key is None or (label_key or None) == found.label_key
        # Records without the label asked for: counted for that key, not again.
        same_label = same_label or (found.label_key is None and label_key == found.looked_for)
        if same_image and same_label:
            return found
    wanted_image = image_key or (found.image_key if found else IMAGE_KEY)
    wanted_label = label_key if label_key is not None else (found.label_key if found else LABEL_KEY)
    names = found.class_names if found else ()
    return build_index(shards, wanted_image, wanted_label or None, names)


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
            record = tf.data.TFRecordDataset(self.shards[shard]).skip(number).take(1)
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
    records = tf.data.TFRecordDataset(list(shards.paths)).take(STATS_SAMPLE)
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
    for part in split.split("+"):
        shards, index = _split_index(root, part, keys)
        paths += shards.paths
        counts += index.counts
        wheres.append(shards.where)
        indexes.append(index)
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
    records = tf.data.TFRecordDataset(list(files.shards))
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
    records = tf.data.TFRecordDataset(list(files.shards[:sample])).take(sample)
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
            records = tf.data.TFRecordDataset(tf.gather(paths, shard)).take(count)
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
    augment_batch = batch_augmenter(
        image_size, mean, std, key_augment=key_augment, colour=colour, recipe=recipe,
        jit_compile=jit_compile,
    )  # fmt: skip
    examples = epoch_numbers(seed, epochs).flat_map(epoch_examples)
    return batched_views(
        examples.map(decode, num_parallel_calls=tf.data.AUTOTUNE),
        share, seed, augment_batch, labelled=files.labelled, batches=batches,
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
        crops = decode_crops(contents, centre_box(crop_fraction), image_size, "INTEGER_ACCURATE")
        crop = crops[0] / 255.0
        if normalise:
            crop = augment.normalise(crop, files.mean, files.std)
        return crop, label

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


# --- Writing shards -------------------------------------------------------------------------


def _feature_bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _feature_int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def image_example(
    contents: bytes,
    label: int | None = None,
    *,
    filename: str = "",
    class_name: str = "",
    image_key: str = IMAGE_KEY,
    label_key: str | None = LABEL_KEY,
) -> tf.train.Example:
    """One image as a Model Garden `tf.train.Example`: the encoded bytes as stored, their
    format, height and width (from the header; 0 when unreadable), file name and label."""
    try:
        with Image.open(io.BytesIO(contents)) as image:
            height, width, kind = image.height, image.width, (image.format or "").lower()
    except Exception:  # written as is: the reader skips and names it
        height, width, kind = 0, 0, ""
    feature = {
        image_key: _feature_bytes(contents),
        "image/format": _feature_bytes(kind.encode()),
        "image/height": _feature_int(height),
        "image/width": _feature_int(width),
        FILENAME_KEY: _feature_bytes(filename.encode()),
    }
    if label is not None and label_key:
        feature[label_key] = _feature_int(label)
        feature["image/class/text"] = _feature_bytes(class_name.encode())
    return tf.train.Example(features=tf.train.Features(feature=feature))


def shard_paths(out: str, split: str, shards: int, layout: str) -> list[str]:
    """File names of a split's shards: `flat`, Model Garden's `out/<split>-00000-of-00004`;
    `folders`, `out/<split>/<split>-00000-of-00004.tfrecord`."""
    names = [f"{split}-{i:05d}-of-{shards:05d}" for i in range(shards)]
    if layout == "flat":
        return [os.path.join(out, name) for name in names]
    if layout == "folders":
        return [os.path.join(out, split, f"{name}.tfrecord") for name in names]
    raise ValueError(f"layout must be 'flat' or 'folders', got {layout!r}")


def write_tfrecords(
    folder: str,
    out: str,
    splits: Sequence[str] = ("train", "test"),
    *,
    shards: int | None = None,
    records_per_shard: int = 1024,
    layout: str = "flat",
    seed: int = 0,
    image_key: str = IMAGE_KEY,
    label_key: str | None = LABEL_KEY,
) -> dict[str, list[str]]:
    """Writes the images of an image folder's splits as TFRecord shards, with their index.

    Each file's bytes are stored as they are (no re-encoding), in a seeded random order
    dealt round-robin to the shards (their sizes differ by one record at most), so every
    shard mixes the classes. A file that is not a readable image is written too: the
    reader skips and names it, as the folder stream does.

    Args:
        folder: An image folder (`tfascl.data.folders` layouts).
        out: Output folder.
        splits: Splits to write; a split the folder lacks is left out with a warning.
        shards: Shards per split; None: enough for `records_per_shard` each.
        records_per_shard: Records per shard when `shards` is None.
        layout: "flat" (Model Garden's names) or "folders" (one folder per split).
        seed: Seed of the record order.
        image_key, label_key: Feature names (Model Garden's by default).

    Returns:
        {split: the file names written, relative to its split folder, in record order
        (shard 0's records first)}.
    """
    written: dict[str, list[str]] = {}
    for split in splits:
        try:
            listing = folders.scan_split(folders.split_dir(folder, split))
        except ValueError as error:
            logging.warning("Split %s not written: %s", split, error)
            continue
        count = len(listing.paths)
        order = np.random.default_rng(seed).permutation(count)
        shard_count = shards or max(1, -(-count // records_per_shard))
        paths = shard_paths(out, split, shard_count, layout)
        os.makedirs(os.path.dirname(paths[0]), exist_ok=True)
        dealt = [order[s::shard_count] for s in range(shard_count)]
        names = []
        for path, chosen in zip(paths, dealt):
            with tf.io.TFRecordWriter(path) as writer:
                for i in chosen:
                    with open(listing.paths[i], "rb") as file:
                        contents = file.read()
                    relative = os.path.relpath(listing.paths[i], listing.split_dir)
                    label = None if listing.labels is None else listing.labels[i]
                    name = "" if label is None else listing.class_names[label]
                    example = image_example(contents, label, filename=relative, class_name=name,
                                            image_key=image_key, label_key=label_key)  # fmt: skip
                    writer.write(example.SerializeToString())
                    names.append(relative)
        labelled = listing.labels is not None and bool(label_key)
        index = ShardIndex(
            counts=tuple(len(chosen) for chosen in dealt),
            image_key=image_key,
            label_key=label_key if labelled else None,
            num_classes=len(listing.class_names) if labelled else 0,
            class_names=tuple(listing.class_names) if labelled else (),
        )
        found = find_shards(out, split)
        write_index(found, index)
        written[split] = names
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Command line of `benchmarks/make_tfrecords.py`."""
    parser = argparse.ArgumentParser(
        description="Write an image folder's splits as TFRecord shards (Model Garden's "
        "features) with tfascl's index; or, with --index_only, index existing shards."
    )
    parser.add_argument("source", help="image folder (or, with --index_only, the shards' root)")
    parser.add_argument("out", nargs="?", help="output folder (not with --index_only)")
    parser.add_argument("--splits", default="train,test", help="comma-separated splits")
    parser.add_argument("--shards", type=int, default=None, help="shards per split")
    parser.add_argument("--records_per_shard", type=int, default=1024)
    parser.add_argument("--layout", choices=("flat", "folders"), default="flat")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image_key", default=IMAGE_KEY)
    parser.add_argument("--label_key", default=LABEL_KEY, help="'' for unlabelled records")
    parser.add_argument(
        "--index_only",
        action="store_true",
        help="count the records of existing shards and write their index",
    )
    args = parser.parse_args(argv)
    splits = [split for split in args.splits.split(",") if split]
    if args.index_only:
        for split in splits:
            shards = find_shards(args.source, split)
            index = build_index(shards, args.image_key, args.label_key or None)
            print(f"{shards.where}: {len(shards.paths)} shards, {sum(index.counts)} records")
        return
    if not args.out:
        parser.error("give the output folder")
    written = write_tfrecords(
        args.source, args.out, splits, shards=args.shards,
        records_per_shard=args.records_per_shard, layout=args.layout, seed=args.seed,
        image_key=args.image_key, label_key=args.label_key or None,
    )  # fmt: skip
    for split, names in written.items():
        print(f"{split}: {len(names)} records -> {find_shards(args.out, split).where}")


# tfascl.data.loading reads a folder of shards through its format registry (and stream.py
# through TFRecordFiles's own methods): neither imports this module.
SOURCE_FORMATS["tfrecord"] = SourceFormat(holds_shards, open_tfrecords, load_tfrecords)
