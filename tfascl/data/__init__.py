"""Data for contrastive pretraining: loading images, augmenting them, and tf.data pipelines.

`load_images` reads "digits", a TFDS dataset or a folder into an in-memory `ImageSet`;
`open_images` lists a folder or TFDS split as `ImageFiles`, streamed and decoded as needed
(a folder of TFRecord shards, `tfrecord`, either way);
`augment` holds the batched, per-image random augmentations (also usable on the device via
the `TwoViews` layer); `pretrain_dataset` and `eval_dataset` build the input pipelines.
"""

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
    load_images,
    open_images,
    select_subset,
)
from tfascl.data.pipeline import INPUT_MODES, eval_dataset, pretrain_dataset
from tfascl.data.stats import DATASET_STATS, Stats, estimate_stats, stats_for_name
from tfascl.data.stream import ImageFiles, SkippedFiles, estimated_decoded_bytes
from tfascl.data.tfrecord import SkippedRecords, TFRecordFiles, write_tfrecords

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
    "stats_for_name",
    "stream",
    "strong_augment",
    "two_views",
    "weak_augment",
    "write_tfrecords",
]
