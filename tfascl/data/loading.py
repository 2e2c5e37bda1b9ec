"""Loading an image dataset into memory as one uint8 array: `load_images` and `ImageSet`.

Three kinds of source are accepted:

* `"digits"`: scikit-learn's bundled 8x8 handwritten digits (1,797 real images, offline),
  upsampled to 32 px RGB, with a fixed stratified 80/20 train/test split.
* a TFDS dataset name (cifar10, cifar100, stl10, imagenet2012, imagenette, ...), read from
  an already prepared `data_dir`; nothing is ever downloaded.
* a folder of images (see `tfascl.data.folders` for the layouts), decoded with Pillow in a
  thread pool and cached as a .npy file (see `tfascl.data.cache`).

Other on-disk formats (TFRecord shards) register in `SOURCE_FORMATS`. `open_images` opens a
split for streaming instead. The TFDS reader is `tfascl.data.tfds_source`; `ImageSet` and
the subset draw are `tfascl.data.imageset`'s (both re-exported here).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from absl import logging

from tfascl.data import cache, decode, folders, tfds_source

# Moved to their own modules; re-exported (the names of this module before).
from tfascl.data.imageset import (  # noqa: F401
    DatasetNotFoundError,
    ImageSet,
    _warn_skipped,
    select_subset,
)
from tfascl.data.stats import STATS_SAMPLE, STATS_SIZE, Stats, estimate_stats, stats_for_name
from tfascl.data.stream import ImageFiles
from tfascl.data.tfds_source import TFDS_SPLITS, prepared_tfds_builder  # noqa: F401


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
    return tfds_source.open_tfds(source, split, data_dir, max_examples, fraction)


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
    return tfds_source.load_tfds(source, split, data_dir, size, max_examples, fraction, seed)
