"""A decoded image data set in memory (`ImageSet`), the fixed stratified subset draw every
source shares (`select_subset`), and the one warning naming unreadable files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from absl import logging

from tfascl.data.host import host_variable


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
