"""Data for contrastive pretraining: loading images into memory.

`load_images` reads "digits", a TFDS dataset or a folder into an in-memory `ImageSet`.
"""

from tfascl.data.loading import (
    TFDS_SPLITS,
    DatasetNotFoundError,
    ImageSet,
    load_images,
    select_subset,
)
from tfascl.data.stats import DATASET_STATS, Stats, estimate_stats, stats_for_name

__all__ = [
    "DATASET_STATS",
    "TFDS_SPLITS",
    "DatasetNotFoundError",
    "ImageSet",
    "Stats",
    "estimate_stats",
    "load_images",
    "select_subset",
    "stats_for_name",
]
