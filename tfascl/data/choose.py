"""Memory or stream: the one rule tfascl-train and tfascl-eval use to pick the input mode."""

from __future__ import annotations

import os
from collections.abc import Sequence

from tfascl.data.sources import open_images
from tfascl.data.stream import estimated_decoded_bytes, sample_sizes


def memory_budget_bytes(memory_budget_gb: float | None = None) -> int:
    """``--memory_budget_gb`` in bytes, or half of this machine's RAM when None."""
    if memory_budget_gb is not None:
        return int(memory_budget_gb * 1e9)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def choose_input(
    source: str,
    splits: Sequence[tuple[str, int | None]],
    *,
    mode: str = "auto",
    data_dir: str | None = None,
    load_size: int | None = None,
    memory_budget_gb: float | None = None,
    seed: int = 0,
    load_size_flag: bool = True,
    tfrecord_keys: tuple[str | None, str | None] | None = None,
) -> tuple[str, str]:
    """(mode, why): ``"memory"`` or ``"stream"``, decided before any image is decoded.

    Memory mode holds the decoded array twice at its peak (NumPy and the host variable),
    so ``auto`` streams when twice the estimated decoded size of all the splits together
    exceeds the budget. It also streams images of differing sizes without ``load_size``:
    one in-memory array holds one size, and only streamed images keep their own.

    Args:
        source: ``"digits"`` (always in memory), a TFDS name or a folder.
        splits: ``(split, max_examples)`` of every split the program loads.
        mode: ``"auto"``, ``"memory"`` or ``"stream"`` (the latter two are returned as is).
        data_dir: TFDS data directory.
        load_size: The side every image is resized to when loaded, or None (as stored).
        memory_budget_gb: RAM the decoded images may take; None: half of this machine's.
        seed: Seed of the ``max_examples`` subsets.
        load_size_flag: The program has ``--load_size`` (named in the message).
        tfrecord_keys: Feature names of TFRecord shards (``open_images``).

    Returns:
        ``(mode, why)``; ``why`` is one clause for the log line.

    Raises:
        ValueError: Unknown source or split (``DatasetNotFoundError`` is one).
    """
    if source == "digits":
        return "memory", "'digits' is built in memory"
    if mode != "auto":
        return mode, f"--input={mode}"
    count, decoded, sizes = 0, 0, set()
    for split, max_examples in splits:
        files = open_images(
            source, split, data_dir=data_dir, max_examples=max_examples, seed=seed,
            tfrecord_keys=tfrecord_keys,
        )  # fmt: skip
        sampled = sample_sizes(files)
        count += len(files)
        decoded += estimated_decoded_bytes(files, load_size, sampled)
        sizes.update(sampled)
    budget = memory_budget_bytes(memory_budget_gb)
    verdict = "fits" if 2 * decoded <= budget else "does not fit"
    why = (
        f"{count:,} images, about {decoded / 1e9:.2f} GB decoded: twice that "
        f"{verdict} the memory budget of {budget / 1e9:.1f} GB (--memory_budget_gb)"
    )
    if 2 * decoded > budget:
        return "stream", why
    if load_size is None and len(sizes) > 1:
        fitted = "with --load_size, or --input=memory," if load_size_flag else "in memory"
        varied = (
            f"{why}, but the images differ in size and keep their aspect ratio only when "
            f"streamed ({fitted} they are fitted to one size)"
        )
        return "stream", varied
    return "memory", why
