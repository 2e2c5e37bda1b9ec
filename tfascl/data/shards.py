"""TFRecord shards of encoded images: their file names, the splits' shards and their index.

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
read-only it goes to the decode cache (`tfascl.data.cache`) instead.

Reading and streaming the records: `tfascl.data.tfrecord`; writing shards from an image
folder: `tfascl.data.tfrecord_writer`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tfascl.data import cache, folders

# TF Model Garden's feature names (official/vision/dataloaders/tf_example_decoder.py).
IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
FILENAME_KEY = "image/filename"  # written by `write_tfrecords`, read only to name bad records
INDEX_NAME = "tfascl-index.json"
INDEX_VERSION = 1
_SHARD_PATTERN = re.compile(r"(\.tfrecords?(-|$|\.))|(-\d+-of-\d+$)")


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
    compression: str = ""  # "GZIP" when the shards are gzip-compressed, else ""


GZIP_MAGIC = b"\x1f\x8b"


def compression_of(paths: Sequence[str]) -> str:
    """`tf.data.TFRecordDataset`'s `compression_type` of shards: "GZIP" when they start with
    gzip's magic bytes (TFRecordOptions("GZIP") writes them so), else "" (plain records).

    Raises:
        ValueError: Some shards compressed and others not.
    """
    kinds = set()
    for path in paths:
        with tf.io.gfile.GFile(path, "rb") as file:
            kinds.add("GZIP" if file.read(2) == GZIP_MAGIC else "")
    if len(kinds) > 1:
        raise ValueError(
            f"The shards of {os.path.dirname(paths[0])} mix GZIP-compressed and plain "
            "TFRecord files; write them all one way"
        )
    return kinds.pop() if kinds else ""


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
            index_path = os.path.join(folder, INDEX_NAME)
            return Shards(split, paths, index_path, folder, compression_of(paths))
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
    index_path = os.path.join(root, f"{split}.{INDEX_NAME}")
    return Shards(split, paths, index_path, f"{root}/{split}-*", compression_of(paths))


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


def count_records(
    path: str, label_key: str | None, limit: int | None = None, compression: str = ""
) -> tuple[int, int]:
    """(records, largest label or -1) of one shard: every record is read, no image decoded."""
    records = tf.data.TFRecordDataset(path, compression_type=compression)
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
            count, top = count_records(path, label_key, compression=shards.compression)
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
