"""Data for contrastive pretraining: loading images, augmenting them, and tf.data pipelines.

`load_images` reads "digits", a TFDS dataset or a folder into an in-memory `ImageSet`;
`augment` holds the batched, per-image random augmentations (also usable on the device via
the `TwoViews` layer); `pretrain_dataset` and `eval_dataset` build the input pipelines.
"""

from tfascl.data.augment import (
    TwoViews,
    eval_transform,
    strong_augment,
    two_views,
    weak_augment,
)
from tfascl.data.loading import (
    TFDS_SPLITS,
    DatasetNotFoundError,
    ImageSet,
    load_images,
    select_subset,
)
from tfascl.data.pipeline import eval_dataset, pretrain_dataset
from tfascl.data.stats import DATASET_STATS, Stats, estimate_stats, stats_for_name

__all__ = [
    "DATASET_STATS",
    "TFDS_SPLITS",
    "DatasetNotFoundError",
    "ImageSet",
    "Stats",
    "TwoViews",
    "estimate_stats",
    "eval_dataset",
    "eval_transform",
    "load_images",
    "pretrain_dataset",
    "select_subset",
    "stats_for_name",
    "strong_augment",
    "two_views",
    "weak_augment",
]
