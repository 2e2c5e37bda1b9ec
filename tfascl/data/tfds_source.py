"""TFDS data sets as a source: a prepared builder (never a download), our split names, the
image and label features, a split loaded into memory (`load_tfds`) or opened for streaming
(`open_tfds`). `tfascl.data.loading` dispatches to it."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfascl.data import cache, decode
from tfascl.data.imageset import DatasetNotFoundError, ImageSet, _warn_skipped, select_subset
from tfascl.data.stats import STATS_SAMPLE, STATS_SIZE, Stats, estimate_stats, stats_for_name
from tfascl.data.stream import ImageFiles

# The split names this library uses, per TFDS dataset. STL-10's "train" is what the
# pretraining papers train on (its 5k labelled and 100k unlabelled images; unlabelled ones
# have label -1); "train_labelled" is the 5k labelled images for kNN / linear evaluation.
# ImageNet-style datasets have no labelled test split, so "test" reads "validation".
TFDS_SPLITS: dict[str, dict[str, str]] = {
    "cifar10": {"train": "train", "test": "test"},
    "cifar100": {"train": "train", "test": "test"},
    "stl10": {
        "train": "train+unlabelled",
        "train_labelled": "train",
        "unlabelled": "unlabelled",
        "test": "test",
    },
    "imagenet2012": {"train": "train", "test": "validation"},
    "imagenette": {"train": "train", "test": "validation"},
}

_TFDS_EXAMPLES = "cifar10, cifar100, stl10, imagenet2012, imagenette"


def prepared_tfds_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder for `name`, or a clear error; never downloads."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds' DatasetNotFoundError, name parsing, registry errors
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ValueError(
            f"Unknown image source {name!r}: not 'digits', not an existing folder and not a "
            f"TFDS dataset ({type(error).__name__}: {first}). Accepted: 'digits'; a folder "
            f"laid out as root/<split>/<class>/*.jpg (or a flat folder of images); or a TFDS "
            f"name such as {_TFDS_EXAMPLES} prepared under data_dir."
        ) from error
    if not builder.is_prepared():
        # builder.data_dir is <root>/<name>[/<config>]/<version>.
        root = data_dir or str(builder.data_dir).split(f"{os.sep}{builder.name}{os.sep}")[0]
        raise DatasetNotFoundError(
            f"TFDS dataset {name!r} is not prepared under data_dir={root} (looked for "
            f"{builder.data_dir}) and this loader never downloads. On a machine with internet "
            f"run `tfds build {name} --data_dir=DIR` (ImageNet also needs its manually "
            f"downloaded archives) and copy DIR here, then pass data_dir=DIR; or pass a "
            f"folder of images laid out as root/<split>/<class>/*.jpg instead."
        )
    return builder


def _tfds_split(builder: tfds.core.DatasetBuilder, name: str, split: str) -> str:
    """Maps our split name to the TFDS split expression and checks it exists."""
    base = name.split("/")[0].split(":")[0]
    expression = TFDS_SPLITS.get(base, {}).get(split, split)
    available = sorted(builder.info.splits.keys())
    for part in expression.split("+"):
        if part.split("[")[0] not in available:
            raise ValueError(
                f"TFDS dataset {name!r} has no split {part!r} (asked for {split!r}); "
                f"available: {', '.join(available)}"
            )
    return expression


def _tfds_keys(builder: tfds.core.DatasetBuilder) -> tuple[str, str | None, list[str]]:
    """(image feature key, label feature key or None, class names)."""
    features = builder.info.features
    image_keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if not image_keys:
        raise ValueError(f"TFDS dataset {builder.name!r} has no image feature")
    label_keys = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    label_key = "label" if "label" in label_keys else (label_keys[0] if label_keys else None)
    names = list(features[label_key].names) if label_key else []
    return image_keys[0], label_key, names


def _read_tfds(
    builder: tfds.core.DatasetBuilder,
    expression: str,
    size: tuple[int, int] | None,
    max_examples: int | None,
    fraction: float | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray | None, list[str], list[str], list[str]]:
    """Reads (a subset of) a TFDS split, decoding its encoded images with Pillow.

    Returns:
        (images, labels or None, class names, skipped example ids, their errors).
    """
    image_key, label_key, class_names = _tfds_keys(builder)
    dataset = builder.as_dataset(
        split=expression,
        shuffle_files=False,
        decoders={image_key: tfds.decode.SkipDecoding()},
    )
    labels = None
    if label_key is not None:
        # A label-only pass: cheap, and needed to draw a stratified subset before decoding.
        label_batches = dataset.map(lambda ex: ex[label_key]).batch(8192)
        labels = np.concatenate([np.asarray(b) for b in tfds.as_numpy(label_batches)])
    count = len(labels) if labels is not None else int(builder.info.splits[expression].num_examples)
    indices = select_subset(labels, count, max_examples=max_examples, fraction=fraction, seed=seed)
    wanted = np.zeros(count, bool)
    wanted[indices] = True
    encoded = (
        dataset.map(lambda ex: ex[image_key])
        .enumerate()
        .filter(lambda i, _: tf.gather(tf.constant(wanted), i))
        .map(lambda _, image: image)
    )
    images, kept, errors = decode.decode_all(tfds.as_numpy(encoded), size)
    skipped = [f"{builder.name}/{expression}#{indices[i]}" for i in sorted(errors)]
    error_texts = [errors[i] for i in sorted(errors)]
    if labels is not None:
        labels = labels[indices][kept].astype(np.int64)
    return images, labels, class_names, skipped, error_texts


def load_tfds(
    name: str,
    split: str,
    data_dir: str | None,
    size: tuple[int, int] | None,
    max_examples: int | None,
    fraction: float | None,
    seed: int,
) -> ImageSet:
    builder = prepared_tfds_builder(name, data_dir)
    expression = _tfds_split(builder, name, split)
    key = cache.cache_key("tfds", builder.data_dir, expression, size, max_examples, fraction, seed)
    hit = cache.read(key)
    if hit is not None:
        images, labels, meta = hit
        class_names, skipped, errors = meta["class_names"], meta["skipped"], meta["errors"]
    else:
        images, labels, class_names, skipped, errors = _read_tfds(
            builder, expression, size, max_examples, fraction, seed
        )
        if len(images):
            meta = {"class_names": class_names, "skipped": skipped, "errors": errors}
            cache.write(key, meta, images, labels)
    if not len(images):
        raise ValueError(f"No readable images in TFDS {name!r} split {expression!r}")
    _warn_skipped(f"{name}/{expression}", len(images) + len(skipped), skipped, errors)
    stats = stats_for_name(builder.name)
    if stats is None:
        stats = _tfds_estimated_stats(name, split, data_dir, size, images)
    return ImageSet(images, labels, class_names, stats.mean, stats.std, builder.name, skipped)


def _tfds_estimated_stats(
    name: str,
    split: str,
    data_dir: str | None,
    size: tuple[int, int] | None,
    loaded: np.ndarray,
) -> Stats:
    """Stats from a fixed sample of the TFDS train split (the loaded images if it is absent)."""
    if split == "train":
        sample = loaded
    else:
        try:
            sample = load_tfds(name, "train", data_dir, size, STATS_SAMPLE, None, 0)
            return Stats(sample.mean, sample.std)
        except ValueError:
            sample = loaded
    return estimate_stats(sample[:STATS_SAMPLE])


def open_tfds(
    source: str,
    split: str,
    data_dir: str | None,
    max_examples: int | None,
    fraction: float | None,
) -> ImageFiles:
    """A prepared TFDS split opened for streaming (`open_images` of a TFDS name): its
    records are read as they come (the first `max_examples`, `split[:n]`), nothing decoded."""
    if fraction is not None:
        raise ValueError("fraction is not supported for streamed TFDS data; use max_examples")
    builder = prepared_tfds_builder(source, data_dir)
    expression = _tfds_split(builder, source, split)
    if max_examples is not None:
        expression = f"({expression})[:{max_examples}]" if "+" in expression else (
            f"{expression}[:{max_examples}]")  # fmt: skip
    image_key, label_key, class_names = _tfds_keys(builder)
    count = int(builder.info.splits[expression].num_examples)
    stats = stats_for_name(builder.name)
    if stats is None:  # a fixed sample of the train split, decoded small and cached
        sample = load_tfds(source, "train", data_dir, (STATS_SIZE,) * 2, STATS_SAMPLE, None, 0)
        stats = Stats(sample.mean, sample.std)
    return ImageFiles(
        name=builder.name,
        count=count,
        labels=None,
        class_names=class_names,
        mean=stats.mean,
        std=stats.std,
        tfds=(builder, expression, image_key, label_key),
        where=f"{source}/{expression}",
    )
