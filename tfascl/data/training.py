"""The data of a pre-training run: its images, its training stream, its skipped-files report.

* :func:`load_run_data`: the training split and, when labelled, the kNN monitor's bank and
  queries (:class:`RunData`), in the input mode already chosen (``choose.choose_input``).
* :func:`training_stream`: the batches of a range of epochs as a distributed dataset, each
  input pipeline (one per worker) building its own share; a resumed run skips what it
  trained on before any image is read.
* :func:`skipped_report`: for streamed folders and TFRecord shards, the record of the files
  that decode and the callback that names the others once per epoch
  (:class:`SkippedFilesReport`).

``tfascl.train`` (tfascl-train's flow) calls these with its flags' values. They take plain
arguments, not its ``TrainConfig``: ``data/`` sits below the command in the layers
(docs/ARCHITECTURE.md) and imports only ``data/``. Messages still name the flags
(``--batch_size``, ``--knn_bank_split``, ...), as ``choose.choose_input``'s name
``--memory_budget_gb``: these functions exist for that command.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfascl.data import stream, tfrecord
from tfascl.data.loading import labelled_only
from tfascl.data.pipeline import pretrain_dataset
from tfascl.data.sources import load_images, open_images
from tfascl.data.stream import ImageFiles

# --- The images of a run ----------------------------------------------------------------


@dataclasses.dataclass
class RunData:
    """The images of a run: training set, kNN bank and kNN queries (None: no kNN).

    Each is an in-memory ``ImageSet`` or, streamed, an ``ImageFiles``.
    """

    train: Any
    bank: Any | None
    test: Any | None
    num_classes: int | None


class DataUsageError(ValueError):
    """The data contradicts a flag (an unknown split, a batch larger than the training set):
    one line that names the flag, for the command to report as a usage error."""


def knn_bank(
    dataset: str,
    train_split: str,
    max_train_examples: int | None,
    knn_bank_split: str | None,
    knn_bank_size: int | None,
) -> tuple[str, int | None]:
    """(split, size) of the kNN monitor's bank: ``knn_bank_split`` (default the training
    split; TFDS stl10: train_labelled) and ``knn_bank_size``; without a size, a bank that
    is the training split follows ``max_train_examples`` (the images trained on)."""
    split = knn_bank_split or ("train_labelled" if dataset == "stl10" else train_split)
    size = knn_bank_size
    if size is None and split == train_split:
        size = max_train_examples
    return split, size


def knn_bank_line(
    split: str, size: int | None, bank: int, test: int, test_split: str, knn_bank_size: int | None
) -> str:
    """The run's line on what the kNN monitor compares: ``kNN monitor: bank = train (50,000
    images), test = test (10,000)``, with why the bank is a subset.

    Args:
        split: The bank's split.
        size: The bank's requested size (None: the whole split).
        bank: Images in the bank.
        test: Query images.
        test_split: The queries' split.
        knn_bank_size: ``--knn_bank_size`` as given (None: not given).
    """
    why = ""
    if knn_bank_size is not None:
        why = ", --knn_bank_size"
    elif size is not None:
        why = ", the training subset of --max_train_examples"
    queries = f"test = {test_split} ({test:,})"
    return f"kNN monitor: bank = {split} ({bank:,} images{why}), {queries}"


def load_run_data(
    dataset: str,
    mode: str,
    *,
    train_split: str = "train",
    test_split: str = "test",
    max_train_examples: int | None = None,
    knn_bank_split: str | None = None,
    knn_bank_size: int | None = None,
    batch_size: int = 1,
    data_dir: str | None = None,
    load_size: int | None = None,
    seed: int = 0,
    tfrecord_keys: tuple[str | None, str | None] | None = None,
) -> RunData:
    """The training split (and the kNN bank and test split when labelled) in ``mode``.

    A bank or test split that cannot be loaded, or holds no labels, turns the kNN monitor
    off with one printed line; the bank line (``knn_bank_line``) is printed otherwise.

    Args:
        dataset: ``"digits"``, a TFDS name or a folder (``sources.open_images``).
        mode: ``"memory"`` (decoded ``ImageSet``) or ``"stream"`` (``ImageFiles``).
        train_split: The split trained on.
        test_split: The kNN monitor's queries.
        max_train_examples: A fixed subset of the training split (None: all of it).
        knn_bank_split: The kNN bank's split (None: ``knn_bank``'s default).
        knn_bank_size: The bank's size (None: ``knn_bank``'s default).
        batch_size: The global batch, which the training set must hold at least once.
        data_dir: TFDS data directory.
        load_size: Side in-memory images are resized to (None: as stored).
        seed: Seed of the subsets.
        tfrecord_keys: Feature names of TFRecord shards.

    Returns:
        ``RunData`` with ``bank``/``test`` None when the monitor is off; ``num_classes``
        from the class names and the bank's labels.

    Raises:
        DataUsageError: the training split cannot be loaded, or has fewer images than
            ``batch_size``.
    """

    def load(split: str, max_examples: int | None = None) -> Any:
        if mode == "stream":
            return open_images(
                dataset, split, data_dir=data_dir, max_examples=max_examples, seed=seed,
                tfrecord_keys=tfrecord_keys,
            )  # fmt: skip
        return load_images(
            dataset, split, data_dir=data_dir, max_examples=max_examples, seed=seed,
            image_size=load_size, tfrecord_keys=tfrecord_keys,
        )  # fmt: skip

    try:
        train = load(train_split, max_train_examples)
    except ValueError as error:
        raise DataUsageError(f"--dataset={dataset}: {error}") from None
    if len(train) < batch_size:
        raise DataUsageError(
            f"--batch_size={batch_size}: larger than the {len(train)} training images"
        )
    bank_split, bank_size = knn_bank(
        dataset, train_split, max_train_examples, knn_bank_split, knn_bank_size
    )
    try:
        # The training images themselves when the bank is the training subset.
        same = bank_split == train_split and bank_size == max_train_examples
        bank = train if same else load(bank_split, bank_size)
        test = load(test_split)
    except ValueError as error:
        print(f"kNN monitor off: {error}")
        return RunData(train, None, None, len(train.class_names) or None)
    bank = labelled_only(bank)
    if bank is None or len(bank) == 0 or not test.labelled:
        print(f"kNN monitor off: no labelled images in --knn_bank_split={bank_split} or "
              f"--test_split={test_split}")  # fmt: skip
        return RunData(train, None, None, len(train.class_names) or None)
    classes = max(len(train.class_names), len(bank.class_names))
    if bank.labels is not None:
        classes = max(classes, int(bank.labels.max()) + 1)
    print(knn_bank_line(bank_split, bank_size, len(bank), len(test), test_split, knn_bank_size))
    return RunData(train, bank, test, classes)


def knn_sizes(run_data: RunData) -> dict[str, Any]:
    """The kNN monitor's bank and query counts (summary.json, the verdict line)."""
    if run_data.bank is None:
        return {"knn_bank_images": None, "knn_test_images": None}
    return {"knn_bank_images": len(run_data.bank), "knn_test_images": len(run_data.test)}


# --- The training stream ----------------------------------------------------------------


def training_stream(
    images: Any,
    batch_size: int,
    image_size: int,
    first_epoch: int,
    last_epoch: int,
    *,
    skip: int = 0,
    strategy: Any = None,
    skipped: Any = None,
    seed: int = 0,
    augment_on: str = "host",
    jit_compile: bool = True,
    key_augment: str = "weak",
    recipe: Any = None,
) -> Any:
    """Batches of epochs ``[first_epoch, last_epoch)``, the first ``skip`` left out, as a
    distributed dataset: each input pipeline (one per worker) builds its own share.

    Epoch e's order and augmentations depend only on (``seed``, e), so a run resumed at
    step s of epoch e skips the s index batches it already trained on, before any image is
    read, and sees exactly the rest. Each worker reads only its replicas' slices of every
    global batch (``tfascl.data.stream.replica_shares``).

    Args:
        images: The training set: ``ImageSet``, streamed folder or TFDS split
            (``ImageFiles``) or ``TFRecordFiles``.
        batch_size: The global batch.
        image_size: The views' side.
        first_epoch: The first epoch of the stream.
        last_epoch: One past its last epoch.
        skip: Global batches of ``first_epoch`` already trained on.
        strategy: The run's strategy (default the current one).
        skipped: ``SkippedFiles``/``SkippedRecords`` of streamed files, or None.
        seed: The run's seed.
        augment_on: ``"host"`` or ``"device"`` (``pretrain_dataset``).
        jit_compile: XLA-compile the batched augmentation.
        key_augment: ``"weak"`` or ``"strong"`` key view.
        recipe: The augmentation recipe (None: the standard one).

    Returns:
        A ``tf.distribute.DistributedDataset`` of per-replica ``((query, key), labels)``
        batches, views [B/replicas, S, S, 3] float32 (``pretrain_dataset``).
    """
    strategy = strategy or tf.distribute.get_strategy()
    if not isinstance(images, ImageFiles) or images.paths is not None:
        # Made once, outside the strategy, before any pipeline. A streamed TFDS split (or
        # TFRecord shards) has no file list: its records are read by TFDS (or per shard).
        images.host_arrays()

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = pretrain_dataset(
            images, batch_size, image_size, augment_on=augment_on, seed=seed,
            jit_compile=jit_compile, key_augment=key_augment, recipe=recipe,
            epochs=(first_epoch, last_epoch), skip=skip, input_context=context,
            skipped=skipped,
        )  # fmt: skip
        options = tf.data.Options()
        # Each pipeline already reads only its own shares: no automatic sharding.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options)

    return strategy.distribute_datasets_from_function(dataset_fn)


# --- Files that did not decode ----------------------------------------------------------


class SkippedFilesReport(keras.callbacks.Callback):
    """After each epoch, names the files of that epoch that could not be decoded (streamed
    folders, TFRecord shards): once per epoch, however often a file was read. An epoch
    stopped early is not reported (its files were not all read), except one whose input ran
    out (``ran_out.epoch``, the run's ``InputRanOut``: every file was tried)."""

    def __init__(self, skipped: Any, schedule: Callable[[int], np.ndarray], ran_out: Any) -> None:
        super().__init__()
        self.skipped, self.schedule, self.ran_out = skipped, schedule, ran_out

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.model.stop_training or self.ran_out.epoch == epoch:
            self.skipped.check(epoch, self.schedule(epoch))


def worker_input_context(strategy: Any) -> tf.distribute.InputContext:
    """This worker's ``InputContext`` under ``strategy``, as
    ``distribute_datasets_from_function`` gives it to this worker's pipeline."""
    resolver = getattr(strategy, "cluster_resolver", None)
    clustered = bool(resolver and resolver.task_type)
    workers = max(1, strategy.extended._num_workers if clustered else 1)
    worker = resolver.task_id if clustered and workers > 1 else 0
    return tf.distribute.InputContext(workers, worker, strategy.num_replicas_in_sync)


def epoch_schedule(
    files: ImageFiles,
    global_batch: int,
    seed: int,
    input_context: tf.distribute.InputContext | None,
    first_epoch: int = 0,
    skip: int = 0,
) -> Callable[[int], np.ndarray]:
    """Maps an epoch to the file indices of a streamed folder this pipeline reads in it (no
    file read); ``skip`` batches of ``first_epoch`` (trained before a resume) are not read,
    so not counted. ``tfrecord.epoch_schedule`` is the same for shards."""

    def schedule(epoch: int) -> np.ndarray:
        shares = stream.replica_shares(
            len(files), global_batch, stream.epoch_seed(seed, epoch),
            input_context=input_context, skip=skip if epoch == first_epoch else 0,
        )  # fmt: skip
        return np.concatenate([indices.numpy() for _, _, indices in shares])

    return schedule


def skipped_report(
    files: Any,
    global_batch: int,
    seed: int,
    strategy: Any,
    start_step: int,
    steps_per_epoch: int,
    ran_out: Any,
    announce: Callable[[str], None] | None = None,
) -> tuple[Any, list[keras.callbacks.Callback]]:
    """The record of which of this worker's files decode, and the callback that names the
    others once per epoch: for a streamed folder (``stream.SkippedFiles``) or TFRecord shards
    (``tfrecord.SkippedRecords``); ``(None, [])`` for anything else (in memory, TFDS).

    Args:
        files: The training set.
        global_batch: The global batch.
        seed: The run's seed.
        strategy: The run's strategy (this worker's share of each batch).
        start_step: The step the run starts (or resumes) at.
        steps_per_epoch: Steps of an epoch.
        ran_out: The run's ``InputRanOut`` (``SkippedFilesReport``).
        announce: Where the report's line goes (default an absl warning).
    """
    context = worker_input_context(strategy)
    first_epoch, skip = divmod(start_step, steps_per_epoch)
    # The classes are looked up when called, so a test may record what they saw.
    if isinstance(files, tfrecord.TFRecordFiles):
        schedule = tfrecord.epoch_schedule(files, global_batch, seed, context, first_epoch, skip)
        skipped = tfrecord.SkippedRecords(files, announce=announce)
    elif isinstance(files, ImageFiles) and files.paths is not None:
        schedule = epoch_schedule(files, global_batch, seed, context, first_epoch, skip)
        skipped = stream.SkippedFiles(files, announce=announce)
    else:
        return None, []
    return skipped, [SkippedFilesReport(skipped, schedule, ran_out)]
