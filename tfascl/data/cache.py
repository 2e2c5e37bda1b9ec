"""On-disk cache of decoded image arrays, outside the (possibly read-only) dataset folder.

The cache lives in `$TFASCL_CACHE` if set, else `~/.cache/tfascl`. Setting `TFASCL_CACHE`
to an empty string or `off` disables it. Each entry is a directory named by a SHA-256 key
over everything that determines its content (for folders: the resolved path, every file's
relative path, size and modification time, the requested image size and the code's cache
version), holding `images.npy`, optionally `labels.npy`, and `meta.json`. Entries are written
to a temporary directory and renamed into place, so concurrent runs never read a half-written
entry. Stale entries are never read (their key no longer matches) and can be deleted freely.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np
from absl import logging

# Bump when decoding or resizing changes, so old arrays are not reused.
CACHE_VERSION = 1


def cache_root() -> str | None:
    """The cache directory, or None when caching is disabled."""
    configured = os.environ.get("TFASCL_CACHE")
    if configured is None:
        return os.path.join(os.path.expanduser("~"), ".cache", "tfascl")
    if configured.strip().lower() in ("", "off", "none", "0", "false"):
        return None
    return os.path.expanduser(configured)


def cache_key(*parts: Any) -> str:
    """Stable hex key over JSON-serialisable parts (lists of file records included)."""
    digest = hashlib.sha256(str(CACHE_VERSION).encode())
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def read(key: str) -> tuple[np.ndarray | None, np.ndarray | None, dict] | None:
    """Returns (images, labels, meta) of a cache entry, or None on a miss.

    `images` is None for metadata-only entries (used for statistics).
    """
    root = cache_root()
    if root is None:
        return None
    entry = os.path.join(root, key)
    meta_path = os.path.join(entry, "meta.json")
    try:
        with open(meta_path) as file:
            meta = json.load(file)
        images_path = os.path.join(entry, "images.npy")
        images = np.load(images_path) if os.path.exists(images_path) else None
        labels_path = os.path.join(entry, "labels.npy")
        labels = np.load(labels_path) if os.path.exists(labels_path) else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logging.warning("Ignoring unreadable cache entry %s: %s", entry, error)
        return None
    return images, labels, meta


def write(key: str, meta: dict, images: np.ndarray | None, labels: np.ndarray | None) -> None:
    """Stores a cache entry; a failure (read-only home, full disk) only logs a warning."""
    root = cache_root()
    if root is None:
        return
    entry = os.path.join(root, key)
    if os.path.exists(entry):
        return
    staging = None
    try:
        os.makedirs(root, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{key}-", dir=root)
        if images is not None:
            np.save(os.path.join(staging, "images.npy"), images)
        if labels is not None:
            np.save(os.path.join(staging, "labels.npy"), labels)
        # meta.json last: its presence is what marks an entry complete.
        with open(os.path.join(staging, "meta.json"), "w") as file:
            json.dump(meta, file)
        os.rename(staging, entry)
        staging = None
    except OSError as error:
        # Another process may have renamed the same entry into place first; that is fine.
        if not os.path.exists(os.path.join(entry, "meta.json")):
            logging.warning("Could not write the decode cache %s: %s", entry, error)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
