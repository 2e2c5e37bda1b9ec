"""The evaluation protocols, by their old module's names (kept so importers keep working).

The protocols live in their own modules now:

* :mod:`tfascl.evaluation.datasets`: the reference protocol of each data set, labelled
  splits and their checks, the frozen features of a split;
* :mod:`tfascl.evaluation.knn`: weighted kNN;
* :mod:`tfascl.evaluation.linear` (and :mod:`~tfascl.evaluation.linear_batches`, its
  training batches): the linear probe;
* :mod:`tfascl.evaluation.neighbors`: the nearest-neighbours picture.

Import from those in new code; every name this module held is re-exported here.
"""

from __future__ import annotations

from tfascl.evaluation.datasets import (
    DATASET_PROTOCOLS,
    DatasetProtocol,
    check_labelled_source,
    check_labels,
    dataset_protocol,
    embed_images,
    embed_split,
    eval_image_size,
    image_shape,
    load_labelled,
    monitor_image_size,
    num_classes_of,
    open_labelled,
    pixel_batches,
    resize_note,
    timed,
)
from tfascl.evaluation.knn import knn_protocol
from tfascl.evaluation.linear import (
    DEFAULT_LINEAR_LR,
    LINEAR_SCHEDULES,
    LinearConfig,
    build_classifier,
    linear_protocol,
)
from tfascl.evaluation.linear_batches import (
    LINEAR_CROP_SCALE,
    LINEAR_DRAWS,
    augmented_batches,
    feature_batches,
    linear_augment,
    linear_crop_params,
    linear_draws,
    linear_epoch_order,
    streamed_linear_batches,
    torchvision_crop_boxes,
)
from tfascl.evaluation.neighbors import (
    NEIGHBORS_FILE,
    STREAMED_NEIGHBORS_ERROR,
    nearest_neighbors,
    neighbors_protocol,
)

# The old private names (tests and scripts reached for them).
_augmented_batches = augmented_batches
_feature_batches = feature_batches

__all__ = [
    "DATASET_PROTOCOLS",
    "DEFAULT_LINEAR_LR",
    "LINEAR_CROP_SCALE",
    "LINEAR_DRAWS",
    "LINEAR_SCHEDULES",
    "NEIGHBORS_FILE",
    "STREAMED_NEIGHBORS_ERROR",
    "DatasetProtocol",
    "LinearConfig",
    "build_classifier",
    "check_labelled_source",
    "check_labels",
    "dataset_protocol",
    "embed_images",
    "embed_split",
    "eval_image_size",
    "image_shape",
    "knn_protocol",
    "linear_augment",
    "linear_crop_params",
    "linear_draws",
    "linear_epoch_order",
    "linear_protocol",
    "load_labelled",
    "monitor_image_size",
    "nearest_neighbors",
    "neighbors_protocol",
    "num_classes_of",
    "open_labelled",
    "pixel_batches",
    "resize_note",
    "streamed_linear_batches",
    "timed",
    "torchvision_crop_boxes",
]
