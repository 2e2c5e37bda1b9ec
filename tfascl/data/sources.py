"""The data sources' common entry points: which reader a source needs, and the readers.

``loading`` reads "digits", TFDS and image folders, and dispatches other on-disk formats
through its ``SOURCE_FORMATS`` registry; ``tfrecord`` registers TFRecord shards there when
imported. This module imports both, so whoever reads data through it (``tfascl.data``'s
``open_images``, ``load_images`` and ``source_kind``) gets every format, while ``loading``
itself never imports ``tfrecord`` (which builds on it).
"""

from __future__ import annotations

from tfascl.data import tfrecord  # noqa: F401 (registers the TFRecord format in loading)
from tfascl.data.loading import load_images, open_images, source_kind

__all__ = ["load_images", "open_images", "source_kind"]
