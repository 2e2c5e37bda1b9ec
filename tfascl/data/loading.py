"""Loading an image dataset into memory as one uint8 array: `load_images` and `ImageSet`.

Three kinds of source are accepted:

* `"digits"`: scikit-learn's bundled 8x8 handwritten digits (1,797 real images, offline),
  upsampled to 32 px RGB, with a fixed stratified 80/20 train/test split.
* a TFDS dataset name (cifar10, cifar100, stl10, imagenet2012, imagenette, ...), read from
  an already prepared `data_dir`; nothing is ever downloaded.
* a folder of images (see `tfascl.data.folders` for the layouts), decoded with Pillow in a
  thread pool and cached as a .npy file (see `tfascl.data.cache`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from tfascl.data import cache, decode, folders
from tfascl.data.host import host_variable
from tfascl.data.stats import STATS_SAMPLE, STATS_SIZE, Stats, estimate_stats, stats_for_name
from tfascl.data.stream import ImageFiles


@dataclass(frozen=True)
class SourceFormat:
    """An on-disk format of data sets besides image folders and TFDS (TFRecord shards).

    Its module registers it in ``SOURCE_FORMATS`` when imported (``tfascl.data`` imports
    ``tfascl.data.tfrecord``), so this module dispatches to it without importing it: the
    format's module builds on this one (``ImageSet``, ``select_subset``), not the reverse.

    Attributes:
        detect: folder → whether it holds a data set of this format.
        open: ``(root, split, *, max_examples, fraction, keys)`` → streamed ``ImageFiles``.
        load: ``(root, split, *, max_examples, fraction, seed, image_size, keys)`` →
            an in-memory ``ImageSet``.
    """

    detect: Callable[[str], bool]
    open: Callable[..., ImageFiles]
    load: Callable[..., ImageSet]


SOURCE_FORMATS: dict[str, SourceFormat] = {}

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


class DatasetNotFoundError(ValueError):
    """A TFDS dataset that exists in the catalogue is not prepared where we looked."""


@dataclass
class ImageSet:
    """A decoded image dataset held in memory.

    Attributes:
        images: [N, H, W, 3] uint8.
        labels: [N] int64 class indices, or None for unlabelled data (STL-10's unlabelled
            images inside a labelled split carry -1).
        class_names: Class names in label order (empty when unlabelled).
        mean: Per-channel normalisation mean in [0, 1] units.
        std: Per-channel normalisation standard deviation in [0, 1] units.
        name: Dataset name (TFDS name, folder name or "digits").
        skipped: Files that could not be decoded and were left out.
    """

    images: np.ndarray
    labels: np.ndarray | None
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str
    skipped: list[str] = field(default_factory=list)
    _variables: tuple | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def host_arrays(self) -> tuple[tf.Variable, tf.Variable | None]:
        """(images, labels or None) as host variables, made once and reused.

        Variables, not constants: a dataset function captures a variable's handle, so no
        graph holds the pixels (a constant above 2 GB cannot be serialised at all).
        """
        if self._variables is None:
            images = host_variable(self.images, "images")
            labels = None if self.labels is None else host_variable(self.labels, "labels")
            self._variables = (images, labels)
        return self._variables


def select_subset(
    labels: np.ndarray | None,
    count: int,
    *,
    max_examples: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Indices of a fixed random subset, stratified by label when labels are given.

    Each class keeps its share of the subset (largest remainders get the leftover places),
    so class proportions match the full set to within one example per class.

    Args:
        labels: [count] labels, or None for an unstratified draw.
        count: Size of the full set.
        max_examples: Upper bound on the subset size.
        fraction: Fraction of the full set to keep, in (0, 1].
        seed: Seed of the draw.

    Returns:
        Sorted int64 indices; all of them when no limit applies.
    """
    size = count
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        size = max(1, round(fraction * count))
    if max_examples is not None:
        if max_examples < 1:
            raise ValueError(f"max_examples must be positive, got {max_examples}")
        size = min(size, max_examples)
    if size >= count:
        return np.arange(count, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(count, size, replace=False)).astype(np.int64)
    classes, inverse = np.unique(np.asarray(labels), return_inverse=True)
    quota = np.bincount(inverse, minlength=len(classes)) * size / count
    take = np.floor(quota).astype(np.int64)
    leftover = size - int(take.sum())
    take[np.argsort(-(quota - take), kind="stable")[:leftover]] += 1
    chosen = [rng.permutation(np.flatnonzero(inverse == c))[: take[c]] for c in range(len(classes))]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _warn_skipped(where: str, total: int, skipped: list[str], errors: list[str]) -> None:
    """One warning naming the unreadable files (the first 20 with their errors)."""
    if not skipped:
        return
    shown = []
    for path, error in zip(skipped[:20], errors[:20]):
        relative = os.path.relpath(path, where) if os.path.isabs(path) else path
        shown.append(f"{relative} ({error.replace(path, os.path.basename(path))})")
    more = f"; and {len(skipped) - 20} more" if len(skipped) > 20 else ""
    logging.warning(
        "Skipped %d of %d image files in %s that could not be read: %s%s",
        len(skipped),
        total,
        where,
        "; ".join(shown),
        more,
    )


# Split folders whose ignored files were named already: once a process, in both modes.
_REPORTED_IGNORED: set[tuple[str, tuple[str, ...]]] = set()


def _report_ignored(listing: folders.Listing) -> None:
    """One warning naming the files of a split folder left out for their extension (the
    first 20), the first time this process lists that folder."""
    key = (os.path.realpath(listing.split_dir), listing.ignored)
    if not listing.ignored or key in _REPORTED_IGNORED:
        return
    _REPORTED_IGNORED.add(key)
    count = len(listing.ignored)
    shown = ", ".join(os.path.relpath(p, listing.split_dir) for p in listing.ignored[:20])
    more = f" and {count - 20} more" if count > 20 else ""
    logging.warning(
        "%s: ignored %d file%s with an extension tfascl does not read (it reads %s): %s%s",
        listing.split_dir,
        count,
        "" if count == 1 else "s",
        " ".join(decode.IMAGE_EXTENSIONS),
        shown,
        more,
    )


def _square(image_size: int | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return (image_size, image_size)


# --------------------------------------------------------------------------------------
# scikit-learn digits


def _load_digits(split: str, image_size: int | None) -> tuple[np.ndarray, np.ndarray, Stats]:
    """The digits split as [N, S, S, 3] uint8 (S = image_size or 32), labels and stats."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"digits has splits 'train' and 'test', not {split!r}")
    digits = load_digits()
    size = image_size or 32
    # The 8x8 images hold 0..16 ink levels; scale to 0..255 and upsample smoothly.
    gray = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack([decode.fit(np.repeat(g[..., None], 3, axis=-1), (size, size)) for g in gray])
    train, test = train_test_split(
        np.arange(len(gray)), test_size=0.2, stratify=digits.target, random_state=0
    )
    chosen = np.sort(train if split == "train" else test)
    stats = estimate_stats(images[np.sort(train)])
    return images[chosen], digits.target[chosen].astype(np.int64), stats


# --------------------------------------------------------------------------------------
# Folders


def _file_records(paths: list[str], base: str) -> list[list]:
    """(relative path, size, mtime) per file: what the cache key depends on."""
    records = []
    for path in paths:
        try:
            status = os.stat(path)
            records.append([os.path.relpath(path, base), status.st_size, status.st_mtime_ns])
        except OSError:
            records.append([os.path.relpath(path, base), -1, -1])  # broken link
    return records


def _decode_listing(
    listing: folders.Listing,
    indices: np.ndarray,
    size: tuple[int, int] | None,
    use_cache: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, list[str], list[str]]:
    """Decodes the chosen files of a listing, through the cache.

    Returns:
        (images [M, H, W, 3] uint8, labels [M] int64 or None, skipped paths, their errors).
    """
    paths = [listing.paths[i] for i in indices]
    labels = None if listing.labels is None else np.asarray(listing.labels)[indices]
    key = cache.cache_key(
        "folder",
        os.path.realpath(listing.split_dir),
        size,
        listing.class_names,
        labels.tolist() if labels is not None else None,
        _file_records(paths, listing.split_dir),
    )
    hit = cache.read(key) if use_cache else None
    if hit is not None:
        images, cached_labels, meta = hit
        return images, cached_labels, meta["skipped"], meta["errors"]
    images, kept, errors = decode.decode_all(paths, size)
    skipped = [paths[i] for i in sorted(errors)]
    error_texts = [errors[i] for i in sorted(errors)]
    if labels is not None:
        labels = labels[kept].astype(np.int64)
    if use_cache and len(kept):
        cache.write(key, {"skipped": skipped, "errors": error_texts}, images, labels)
    return images, labels, skipped, error_texts


def _folder_stats(
    root: str, size: tuple[int, int] | None, fallback: Callable[[], np.ndarray]
) -> Stats:
    """Published stats if the folder's name is known, else an estimate from its train split.

    The estimate uses a fixed stratified sample of at most `STATS_SAMPLE` train images, so
    every split and subset of one folder is normalised identically. Without a train split
    the images `fallback()` returns are used.
    """
    known = stats_for_name(os.path.basename(os.path.normpath(root)))
    if known is not None:
        return known
    try:
        listing = folders.scan_split(folders.split_dir(root, "train"))
    except ValueError:
        return estimate_stats(fallback())
    indices = select_subset(
        None if listing.labels is None else np.asarray(listing.labels),
        len(listing.paths),
        max_examples=STATS_SAMPLE,
    )
    key = cache.cache_key(
        "stats",
        os.path.realpath(listing.split_dir),
        size,
        _file_records([listing.paths[i] for i in indices], listing.split_dir),
    )
    hit = cache.read(key)
    if hit is not None:
        return Stats(tuple(hit[2]["mean"]), tuple(hit[2]["std"]))
    images = _decode_listing(listing, indices, size, use_cache=False)[0]
    stats = estimate_stats(images) if len(images) else estimate_stats(fallback())
    cache.write(key, {"mean": stats.mean, "std": stats.std}, None, None)
    return stats


def _scan_splits(root: str, split: str) -> folders.Listing:
    """The listing of `split`, or of several joined by "+" (e.g. STL-10's train+unlabelled).

    Class names come from the first labelled part; images of an unlabelled part (a flat
    folder) get label -1 when another part is labelled, as TFDS's STL-10 does.
    """
    listings = [folders.scan_split(folders.split_dir(root, part)) for part in split.split("+")]
    for listing in listings:
        _report_ignored(listing)
    if len(listings) == 1:
        return listings[0]
    labelled = [listing for listing in listings if listing.labels is not None]
    names = labelled[0].class_names if labelled else []
    paths: list[str] = []
    labels: list[int] = []
    for listing in listings:
        paths += listing.paths
        if listing.labels is None:
            labels += [-1] * len(listing.paths)
        else:
            index = {name: names.index(name) if name in names else -1 for name in names}
            labels += [index.get(listing.class_names[label], -1) for label in listing.labels]
    where = os.path.commonpath([listing.split_dir for listing in listings])
    ignored = tuple(path for listing in listings for path in listing.ignored)
    return folders.Listing(where, paths, labels if labelled else None, list(names), ignored)


def _load_folder(
    root: str,
    split: str,
    size: tuple[int, int] | None,
    max_examples: int | None,
    fraction: float | None,
    seed: int,
) -> ImageSet:
    listing = _scan_splits(root, split)
    labels = None if listing.labels is None else np.asarray(listing.labels)
    indices = select_subset(
        labels, len(listing.paths), max_examples=max_examples, fraction=fraction, seed=seed
    )
    images, labels, skipped, errors = _decode_listing(listing, indices, size)
    if not len(images):
        raise ValueError(
            f"No readable images in {listing.split_dir}: all {len(indices)} files failed "
            f"to decode (first: {skipped[0]}: {errors[0]})"
        )
    _warn_skipped(listing.split_dir, len(indices), skipped, errors)
    stats = _folder_stats(root, size, lambda: images)
    return ImageSet(
        images=images,
        labels=labels,
        class_names=list(listing.class_names),
        mean=stats.mean,
        std=stats.std,
        name=os.path.basename(os.path.normpath(root)),
        skipped=skipped,
    )


# --------------------------------------------------------------------------------------
# TFDS


def source_kind(source: str) -> str:
    """What an image source names: "digits", "folder" (an existing one), "tfrecord" (an
    existing folder of TFRecord shards, `tfascl.data.tfrecord`) or "tfds".

    The one rule `load_images`, `open_images` and the command line's checks share: an
    existing folder is a folder (of shards when it holds any); a path that does not exist
    (absolute, or starting with ".", "~") is an error; anything else is a TFDS name,
    configs included ("imagenette/160px-v2").

    Raises:
        ValueError: A path to a folder that does not exist.
    """
    if source == "digits":
        return "digits"
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        for kind, source_format in SOURCE_FORMATS.items():
            if source_format.detect(path):
                return kind
        return "folder"
    if os.path.isabs(path) or source.startswith((".", "~")):
        raise ValueError(f"Image folder not found: {path}")
    return "tfds"


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


def _load_tfds(
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
            sample = _load_tfds(name, "train", data_dir, size, STATS_SAMPLE, None, 0)
            return Stats(sample.mean, sample.std)
        except ValueError:
            sample = loaded
    return estimate_stats(sample[:STATS_SAMPLE])


# --------------------------------------------------------------------------------------


def labelled_only(data: ImageSet | ImageFiles) -> ImageSet | ImageFiles | None:
    """The labelled images of `data` (label >= 0), or None when it has no labels at all.

    STL-10's unlabelled images carry label -1 inside a labelled split. TFDS records are
    read as they come, so a streamed TFDS split is returned as it is when labelled.
    """
    if not data.labelled:
        return None
    if data.labels is None or (data.labels >= 0).all():
        return data
    keep = data.labels >= 0
    if isinstance(data, ImageFiles):
        return replace(data, count=int(keep.sum()), labels=data.labels[keep],
                       paths=data.paths[keep], _variables=None)  # fmt: skip
    return replace(data, images=data.images[keep], labels=data.labels[keep], _variables=None)


def open_images(
    source: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    max_examples: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    tfrecord_keys: tuple[str | None, str | None] | None = None,
) -> ImageFiles:
    """Opens a split for streaming: lists its files (or TFDS records), decodes nothing.

    Args:
        source: A folder path or a prepared TFDS dataset name (not "digits", which is
            always in memory).
        split: As in `load_images`; folders also accept "a+b".
        data_dir: TFDS data directory.
        max_examples: Keep at most this many images (folders: a stratified draw; TFDS: the
            first ones, `split[:n]`).
        fraction: Keep this fraction of the images (folders only).
        seed: Seed of the subset draw.
        tfrecord_keys: For TFRecord shards, (image feature, label feature) names; None
            for either: the shards' index's, else Model Garden's (`tfascl.data.tfrecord`).

    Returns:
        An `ImageFiles` with the split's statistics (published, or estimated once from a
        fixed sample of its train split and cached).

    Raises:
        DatasetNotFoundError: A TFDS dataset is not prepared under `data_dir`.
        ValueError: Unknown source; missing or empty folder or split; bad arguments.
    """
    kind = source_kind(source)
    if kind == "digits":
        raise ValueError("'digits' is held in memory; use load_images")
    path = os.path.expanduser(source)
    if kind in SOURCE_FORMATS:
        return SOURCE_FORMATS[kind].open(
            path, split, max_examples=max_examples, fraction=fraction, keys=tfrecord_keys
        )
    if kind == "folder":
        listing = _scan_splits(path, split)
        labels = None if listing.labels is None else np.asarray(listing.labels, np.int64)
        indices = select_subset(
            labels, len(listing.paths), max_examples=max_examples, fraction=fraction, seed=seed
        )
        # Statistics barely depend on resolution: a 64 px sample keeps this pass cheap.
        sample = (STATS_SIZE, STATS_SIZE)

        def own_sample() -> np.ndarray:
            chosen = select_subset(labels, len(listing.paths), max_examples=STATS_SAMPLE)
            return _decode_listing(listing, chosen, sample, use_cache=False)[0]

        stats = _folder_stats(path, sample, own_sample)
        return ImageFiles(
            name=os.path.basename(os.path.normpath(path)),
            count=len(indices),
            labels=None if labels is None else labels[indices],
            class_names=list(listing.class_names),
            mean=stats.mean,
            std=stats.std,
            paths=np.asarray(listing.paths, dtype=object)[indices],
            where=listing.split_dir,
        )
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
        sample = _load_tfds(source, "train", data_dir, (STATS_SIZE,) * 2, STATS_SAMPLE, None, 0)
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


def load_images(
    source: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    max_examples: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    image_size: int | None = None,
    tfrecord_keys: tuple[str | None, str | None] | None = None,
) -> ImageSet:
    """Loads a dataset split into memory as RGB uint8 images with labels and statistics.

    Args:
        source: "digits", a folder path, or a TFDS dataset name (see module docstring).
        split: "train" or "test" (TFDS names are mapped by `TFDS_SPLITS`; other names are
            passed through). For folders, the sub-folder name.
        data_dir: TFDS data directory; None uses TFDS's default (`$TFDS_DATA_DIR` or
            ~/tensorflow_datasets). Ignored for folders and digits.
        max_examples: Keep at most this many images.
        fraction: Keep this fraction of the images, in (0, 1].
        seed: Seed of the subset draw (stratified by label when there are labels).
        image_size: Resize every image to image_size x image_size (aspect ratio kept by
            centre-cropping). When None, folder images of the most common size are kept and
            the rest fitted to it; digits become 32 px.
        tfrecord_keys: As in `open_images`.

    Returns:
        An `ImageSet`.

    Raises:
        DatasetNotFoundError: A TFDS dataset is not prepared under `data_dir`.
        ValueError: Unknown source; missing, empty or unreadable folder, split or class
            folder; bad arguments.
    """
    size = _square(image_size)
    kind = source_kind(source)
    if kind == "digits":
        images, labels, stats = _load_digits(split, image_size)
        indices = select_subset(
            labels, len(labels), max_examples=max_examples, fraction=fraction, seed=seed
        )
        names = [str(d) for d in range(10)]
        return ImageSet(images[indices], labels[indices], names, stats.mean, stats.std, "digits")
    if kind in SOURCE_FORMATS:
        return SOURCE_FORMATS[kind].load(
            os.path.expanduser(source), split, max_examples=max_examples, fraction=fraction,
            seed=seed, image_size=image_size, keys=tfrecord_keys,
        )  # fmt: skip
    if kind == "folder":
        return _load_folder(os.path.expanduser(source), split, size, max_examples, fraction, seed)
    return _load_tfds(source, split, data_dir, size, max_examples, fraction, seed)
