"""Per-channel normalisation statistics: published values and a one-pass estimate."""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

# Images decoded to estimate a dataset's statistics when no published values exist: enough
# for three decimals, and the same fixed subset whichever split or subset is being loaded.
STATS_SAMPLE = 10_000
# Side the images of that sample are decoded at for streamed data (any size would do).
STATS_SIZE = 64


class Stats(NamedTuple):
    """Per-channel mean and standard deviation of RGB pixels in [0, 1] units."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# The values the ASCL, ReSSL, SCE and MoCo code bases normalise with. The CIFAR-10 std is
# the widely copied (0.2023, 0.1994, 0.2010), which is the mean of per-image stds rather
# than the pixel std (about 0.247); it is kept so inputs match the reference code.
DATASET_STATS: dict[str, Stats] = {
    "cifar10": Stats((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": Stats((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "stl10": Stats((0.4408, 0.4279, 0.3867), (0.2682, 0.2610, 0.2686)),
    "tiny_imagenet": Stats((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    "imagenet": Stats((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# Name endings (lower case, letters and digits only) that select a DATASET_STATS entry.
# Longer endings are tried first so "tinyimagenet" wins over "imagenet".
_ALIASES = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "stl10": "stl10",
    "tinyimagenet": "tiny_imagenet",
    "tinyimagenet200": "tiny_imagenet",
    "imagenet": "imagenet",
    "imagenet1k": "imagenet",
    "imagenet2012": "imagenet",
    "ilsvrc2012": "imagenet",
    "imagenette": "imagenet",
}


def stats_for_name(name: str) -> Stats | None:
    """Published statistics for a dataset or folder name, if it names a known dataset.

    Matching ignores case and punctuation and looks at the end of the name, so
    "data/CIFAR-10" and "cifar10" match CIFAR-10 but "cifar10_subset" does not.

    Args:
        name: Dataset name or folder basename.

    Returns:
        The matching `Stats`, or None.
    """
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for alias in sorted(_ALIASES, key=len, reverse=True):
        if key.endswith(alias):
            return DATASET_STATS[_ALIASES[alias]]
    return None


def estimate_stats(images: np.ndarray, chunk: int = 4096) -> Stats:
    """One pass per-channel pixel mean and standard deviation.

    Sums run in float64 over chunks so a large uint8 array is never copied as floats.

    Args:
        images: [N, H, W, 3] uint8.
        chunk: Images per chunk.

    Returns:
        `Stats` in [0, 1] units.
    """
    if len(images) == 0:
        raise ValueError("cannot estimate statistics from zero images")
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, 3).astype(np.float64)
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    return Stats(
        tuple(float(m) for m in mean / 255.0),
        tuple(float(s) for s in std / 255.0),
    )
