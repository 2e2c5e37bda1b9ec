"""Finding the image files of a split in a user's folder.

Accepted layouts, with hidden entries (names starting with ".") ignored everywhere:

* `root/<split>/<class>/**/*.{jpg,jpeg,png,bmp,gif,webp,tif,tiff}`: labelled; a label is the
  index of the class folder among the sorted class folder names.
* `root/<class>/**/*.jpg`: the same without split folders; `root` serves every split.
* `root/<split>/*.jpg` or `root/*.jpg`: a flat folder of unlabelled images.

Symlinked files and folders are followed (each real folder is walked once, so link loops
end). Files without an image extension are left out and listed in `Listing.ignored` (the
loaders name them once, in both input modes); files with one that cannot be decoded are
skipped later, at decode time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from absl import logging

from tfascl.data.decode import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Listing:
    """The image files of one split.

    Attributes:
        split_dir: Folder the files were found in.
        paths: Sorted image file paths.
        labels: Class index per path, or None for a flat unlabelled folder.
        class_names: Sorted class folder names (empty when unlabelled).
        ignored: Visible files left out because their extension is not one tfascl reads.
    """

    split_dir: str
    paths: list[str]
    labels: list[int] | None
    class_names: list[str]
    ignored: tuple[str, ...] = ()


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _is_image_name(name: str) -> bool:
    return _visible(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _entries(directory: str, ignored: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Sorted visible (sub-folder names, image file names) directly inside `directory`;
    visible files of other extensions are appended to `ignored` (paths), when given."""
    folders, images = [], []
    with os.scandir(directory) as scan:
        for entry in scan:
            if not _visible(entry.name):
                continue
            # is_dir follows symlinks, so a linked class folder counts as a folder; a broken
            # link is kept as a file and reported as unreadable when decoding.
            if entry.is_dir():
                folders.append(entry.name)
            elif _is_image_name(entry.name):
                images.append(entry.name)
            elif ignored is not None:
                ignored.append(os.path.join(directory, entry.name))
    return sorted(folders), sorted(images)


def list_images(directory: str, ignored: list[str] | None = None) -> list[str]:
    """All image files below `directory`, recursively, sorted by path.

    Args:
        directory: Folder to walk.
        ignored: When given, the visible files of other extensions are appended to it.

    Returns:
        Sorted file paths.
    """
    found, seen = [], set()
    for current, folders, files in os.walk(directory, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = sorted(f for f in folders if _visible(f))
        found.extend(os.path.join(current, f) for f in files if _is_image_name(f))
        if ignored is not None:
            others = (f for f in files if _visible(f) and not _is_image_name(f))
            ignored.extend(os.path.join(current, f) for f in others)
    return sorted(found)


def _holds_split(directory: str) -> bool:
    """True when `directory` itself looks like a split: images or class folders of images."""
    folders, images = _entries(directory)
    if images:
        return True
    return any(_entries(os.path.join(directory, folder))[1] for folder in folders)


def split_dir(root: str, split: str) -> str:
    """The folder holding `split` under `root`.

    `root/<split>` when it exists; otherwise `root` itself when it directly holds images or
    class folders of images.

    Args:
        root: Dataset folder.
        split: Split name, e.g. "train" or "test".

    Returns:
        The split folder.

    Raises:
        ValueError: `root` is missing or empty, or has split folders but not this one.
    """
    if not os.path.isdir(root):
        raise ValueError(f"Image folder not found: {root}")
    candidate = os.path.join(root, split)
    if os.path.isdir(candidate):
        return candidate
    folders, images = _entries(root)
    if not folders and not images:
        raise ValueError(f"Image folder is empty: {root}")
    if _holds_split(root):
        logging.info("No %s/ folder in %s; using the folder itself as that split.", split, root)
        return root
    raise ValueError(
        f"Split folder not found: {candidate} (folders in {root}: {', '.join(folders)})"
    )


def scan_split(directory: str) -> Listing:
    """Lists the images of one split folder, labelled by class folder when there are any.

    Args:
        directory: The split folder.

    Returns:
        A `Listing`.

    Raises:
        ValueError: The folder holds no images, or a class folder holds none.
    """
    ignored: list[str] = []
    folders, loose = _entries(directory, ignored)
    if not folders:
        if not loose:
            raise ValueError(
                f"No images in {directory}: expected class folders or files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)}"
            )
        paths = [os.path.join(directory, f) for f in loose]
        return Listing(directory, paths, None, [], tuple(sorted(ignored)))
    if loose:
        logging.warning(
            "Ignoring %d image files directly in %s: it has class folders, so only files "
            "inside them are labelled.",
            len(loose),
            directory,
        )
    paths, labels = [], []
    for label, name in enumerate(folders):
        files = list_images(os.path.join(directory, name), ignored)
        if not files:
            raise ValueError(f"Class folder holds no images: {os.path.join(directory, name)}")
        paths.extend(files)
        labels.extend([label] * len(files))
    return Listing(directory, paths, labels, folders, tuple(sorted(ignored)))
