"""Decoding image files of any common mode into RGB uint8 arrays with Pillow."""

from __future__ import annotations

import functools
import io
import itertools
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Formats TensorFlow's decoders do not read: the streaming pipeline decodes them with
# Pillow (`decode`), as the in-memory loader does every format. TIFF's byte-order marks.
PILLOW_ONLY_MAGIC = (b"II*\x00", b"MM\x00*")

# 16-bit and 32-bit integer greyscale modes that Pillow would clip, not rescale, to 8 bits.
_WIDE_INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _wide_to_rgb(image: Image.Image) -> np.ndarray:
    """16-bit / 32-bit integer or float greyscale -> [H, W, 3] uint8, rescaled not clipped."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
    else:
        # PNG stores 16-bit samples; a full-range 65535 maps to 255.
        scale = 255.0 / 65535.0
    gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def to_rgb(image: Image.Image) -> np.ndarray:
    """Converts a Pillow image of any mode to an RGB array.

    EXIF orientation is applied (phone photos are often stored sideways), transparency is
    dropped as torchvision's loader does, and 16-bit greyscale is rescaled to 8 bits.

    Args:
        image: An opened Pillow image.

    Returns:
        [H, W, 3] uint8.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_INT_MODES or image.mode == "F":
        return _wide_to_rgb(image)
    if image.mode == "P" and "transparency" in image.info:
        # Going through RGBA avoids Pillow's warning about byte transparency in palettes.
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def fit(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes to `size` keeping the aspect ratio, centre-cropping the excess.

    Args:
        array: [H, W, 3] uint8.
        size: (height, width) of the result.

    Returns:
        [height, width, 3] uint8.
    """
    if array.shape[:2] == tuple(size):
        return array
    image = Image.fromarray(array)
    fitted = ImageOps.fit(image, (size[1], size[0]), method=Image.Resampling.BILINEAR)
    return np.asarray(fitted)


def decode(source: str | bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decodes one image file (path) or encoded image (bytes) to RGB.

    Args:
        source: File path or encoded bytes.
        size: Optional (height, width); the image is then resized with `fit`, and JPEGs are
            decoded at a reduced scale first when they are much larger (Pillow's draft mode).

    Returns:
        [H, W, 3] uint8.

    Raises:
        Whatever Pillow raises for unreadable data (OSError, SyntaxError, ValueError, ...).
    """
    opened = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(opened) as image:
        if size is not None:
            image.draft("RGB", (size[1], size[0]))
        array = to_rgb(image)
    return array if size is None else fit(array, size)


def _try_decode(source: str | bytes, size: tuple[int, int] | None) -> np.ndarray | str:
    """`decode`, returning the error text instead of raising."""
    try:
        return decode(source, size)
    # A user folder can hold anything; whatever Pillow throws on one file (OSError,
    # SyntaxError, ValueError, struct.error, DecompressionBombError, ...) marks that file
    # as unreadable rather than stopping the whole load.
    except Exception as error:
        return f"{type(error).__name__}: {error}"


def most_common_size(shapes: Sequence[tuple[int, ...]]) -> tuple[int, int]:
    """The most frequent (height, width) among array shapes; ties go to the larger area."""
    counts = Counter((int(shape[0]), int(shape[1])) for shape in shapes)
    return max(counts, key=lambda hw: (counts[hw], hw[0] * hw[1], hw))


def decode_all(
    sources: Iterable[str | bytes],
    size: tuple[int, int] | None = None,
    workers: int | None = None,
    chunk: int = 4096,
) -> tuple[np.ndarray, list[int], dict[int, str]]:
    """Decodes many images in a thread pool into one array of equal-sized images.

    Pillow releases the GIL while decoding, so threads overlap file reads and decoding.
    Sources are consumed `chunk` at a time, so a stream of encoded bytes is never held in
    memory all at once.

    Args:
        sources: File paths or encoded bytes.
        size: Optional (height, width) every image is fitted to. When None, images of the
            most common size are kept as they are and the others are fitted to it.
        workers: Threads; defaults to 4 per core, capped at 32.
        chunk: Sources submitted to the pool at a time.

    Returns:
        (images, kept, errors): images [len(kept), H, W, 3] uint8 in source order; kept, the
        indices of the readable sources; errors, error text by index of the unreadable ones.
    """
    workers = workers or min(32, 4 * (os.cpu_count() or 1))
    work = functools.partial(_try_decode, size=size)
    errors: dict[int, str] = {}
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    index = 0
    iterator = iter(sources)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while batch := list(itertools.islice(iterator, chunk)):
            for result in pool.map(work, batch, chunksize=16):
                if isinstance(result, str):
                    errors[index] = result
                else:
                    arrays.append(result)
                    kept.append(index)
                index += 1
    if not arrays:
        return np.zeros((0, 0, 0, 3), np.uint8), kept, errors
    target = size or most_common_size([a.shape for a in arrays])
    images = np.empty((len(arrays), target[0], target[1], 3), np.uint8)
    for row, array in enumerate(arrays):
        images[row] = fit(array, target)
    return images, kept, errors
