"""Data for contrastive pretraining: loading images, augmenting them, and tf.data pipelines.

`load_images` reads "digits", a TFDS dataset or a folder into an in-memory `ImageSet`;
`open_images` lists a folder or TFDS split as `ImageFiles`, streamed and decoded as needed
(a folder of TFRecord shards, `tfrecord`, either way; `sources` picks the reader);
`augment` holds the batched, per-image random augmentations (also usable on the device via
the `TwoViews` layer); `pretrain_dataset` and `eval_dataset` build the input pipelines;
`training` gives a pre-training run its images and distributed stream (tfascl-train's).

Names are imported from their modules when first used (PEP 562): importing this package
(and a TensorFlow-free module of it) does not start TensorFlow.
"""

from typing import TYPE_CHECKING

from tfascl._lazy import lazy_exports

_EXPORTS = {
    # Submodules, as attributes (`data.stream.epoch_seed`), imported on first use.
    "augment": ".augment",
    "cache": ".cache",
    "choose": ".choose",
    "decode": ".decode",
    "folders": ".folders",
    "host": ".host",
    "loading": ".loading",
    "pipeline": ".pipeline",
    "stats": ".stats",
    "sources": ".sources",
    "tfrecord": ".tfrecord",
    "training": ".training",
    # Names, from the module that defines them.
    "stream": ".stream",
    "TwoViews": ".augment",
    "eval_transform": ".augment",
    "strong_augment": ".augment",
    "two_views": ".augment",
    "weak_augment": ".augment",
    "choose_input": ".choose",
    "memory_budget_bytes": ".choose",
    "TFDS_SPLITS": ".tfds_source",
    "DatasetNotFoundError": ".imageset",
    "ImageSet": ".imageset",
    "labelled_only": ".loading",
    "load_images": ".sources",
    "open_images": ".sources",
    "source_kind": ".sources",
    "select_subset": ".imageset",
    "INPUT_MODES": ".pipeline",
    "eval_dataset": ".pipeline",
    "pretrain_dataset": ".pipeline",
    "DATASET_STATS": ".stats",
    "Stats": ".stats",
    "estimate_stats": ".stats",
    "stats_for_name": ".stats",
    "ImageFiles": ".stream",
    "SkippedFiles": ".stream",
    "estimated_decoded_bytes": ".stream",
    "SkippedRecords": ".tfrecord",
    "TFRecordFiles": ".tfrecord",
    "write_tfrecords": ".tfrecord_writer",
}

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see
    from tfascl.data import stream
    from tfascl.data.augment import (
        TwoViews,
        eval_transform,
        strong_augment,
        two_views,
        weak_augment,
    )
    from tfascl.data.choose import choose_input, memory_budget_bytes
    from tfascl.data.loading import (
        TFDS_SPLITS,
        DatasetNotFoundError,
        ImageSet,
        labelled_only,
        select_subset,
    )
    from tfascl.data.pipeline import INPUT_MODES, eval_dataset, pretrain_dataset
    from tfascl.data.sources import load_images, open_images, source_kind
    from tfascl.data.stats import DATASET_STATS, Stats, estimate_stats, stats_for_name
    from tfascl.data.stream import ImageFiles, SkippedFiles, estimated_decoded_bytes
    from tfascl.data.tfrecord import SkippedRecords, TFRecordFiles
    from tfascl.data.tfrecord_writer import write_tfrecords

__all__ = [
    "DATASET_STATS",
    "INPUT_MODES",
    "TFDS_SPLITS",
    "DatasetNotFoundError",
    "ImageFiles",
    "ImageSet",
    "SkippedFiles",
    "SkippedRecords",
    "Stats",
    "TFRecordFiles",
    "TwoViews",
    "choose_input",
    "estimate_stats",
    "estimated_decoded_bytes",
    "eval_dataset",
    "eval_transform",
    "labelled_only",
    "load_images",
    "memory_budget_bytes",
    "open_images",
    "pretrain_dataset",
    "select_subset",
    "source_kind",
    "stats_for_name",
    "stream",
    "strong_augment",
    "two_views",
    "weak_augment",
    "write_tfrecords",
]
