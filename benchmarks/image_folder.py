"""Folders of generated JPEG files for the streaming tests and benchmarks.

The images are smooth colour fields with a few shapes: real JPEG sizes (tens of kB at
400x350), cheap to write, and different per file so that nothing decodes from a cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw


def write_image_folder(
    root: str | os.PathLike,
    count: int,
    sizes: Sequence[tuple[int, int]] = ((350, 400),),
    *,
    classes: int = 4,
    split: str = "train",
    seed: int = 0,
    quality: int = 90,
    labelled: bool = True,
) -> list[str]:
    """Writes `count` JPEGs under `root/split/<class>/` (or flat in `root/split/`).

    Args:
        root: Dataset folder.
        count: Number of images.
        sizes: (height, width) sizes, used in turn.
        classes: Class folders (c0, c1, ...); images are dealt to them in turn.
        split: Split folder name.
        seed: Seed of the pictures.
        quality: JPEG quality.
        labelled: Class folders, or one flat unlabelled folder.

    Returns:
        The file paths written, in order.
    """
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        height, width = sizes[index % len(sizes)]
        folder = os.path.join(root, split, f"c{index % classes}" if labelled else "")
        os.makedirs(folder, exist_ok=True)
        low, high = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        ramp = np.linspace(0.0, 1.0, width)[None, :, None]
        pixels = (low + (high - low) * ramp) * np.ones((height, 1, 1))
        image = Image.fromarray(pixels.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x0, y0 = int(rng.integers(0, width - 1)), int(rng.integers(0, height - 1))
            x1, y1 = (
                x0 + int(rng.integers(1, width // 2 + 1)),
                y0 + int(rng.integers(1, height // 2 + 1)),
            )
            draw.ellipse([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        path = os.path.join(folder, f"{index:06d}.jpg")
        image.save(path, quality=quality)
        paths.append(path)
    return paths
