"""Writing an image folder's splits as TFRecord shards (TF Model Garden's features) with
tfascl's index; `benchmarks/make_tfrecords.py` is its command line."""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from tfascl.data import folders
from tfascl.data.shards import (
    FILENAME_KEY,
    IMAGE_KEY,
    LABEL_KEY,
    ShardIndex,
    build_index,
    find_shards,
    write_index,
)


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
    compression: str = "",
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
        compression: "" (plain records, as Model Garden's and TFDS's) or "GZIP"; the reader
            tells them apart by their first bytes.

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
            with tf.io.TFRecordWriter(path, options=compression or None) as writer:
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
    parser.add_argument("--compression", choices=("", "GZIP"), default="", help="GZIP or none")
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
        compression=args.compression,
    )  # fmt: skip
    for split, names in written.items():
        print(f"{split}: {len(names)} records -> {find_shards(args.out, split).where}")
