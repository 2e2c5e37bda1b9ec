"""The nearest-neighbours picture: each test image's ``k`` most similar training images.

What ASCL's relabelling sees (its soft targets come from a query's nearest neighbours), as
a PNG (``tfascl.plots.plot_neighbors``) and the share of same-class neighbours. The search
is ``tfascl.knn.nearest_neighbors``, the one the kNN protocol votes with.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tfascl import knn
from tfascl.data import ImageFiles, ImageSet
from tfascl.evaluation.datasets import embed_images
from tfascl.evaluation.encoders import Encoder, EvalInputError

STREAMED_NEIGHBORS_ERROR = (
    "--input=stream: --protocol=neighbors pictures training images, so it needs them decoded "
    "in memory; use --input=memory (with --max_train_examples for a large split)"
)

NEIGHBORS_FILE = "neighbors.png"


def nearest_neighbors(
    bank: np.ndarray, queries: np.ndarray, k: int, chunk_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` bank rows of highest cosine similarity to each query, most similar first.

    ``tfascl.knn.nearest_neighbors`` (the kNN vote's search), as NumPy arrays.

    Args:
        bank: [N, F] features (any norm).
        queries: [Q, F] features.
        k: Neighbours per query (clipped to N).
        chunk_size: Queries per similarity block (memory ``chunk_size × N``).

    Returns:
        ``(indices [Q, k] int64, similarities [Q, k] float32)``; ties go to the lower index.
    """
    similarities, indices = knn.nearest_neighbors(bank, queries, k, chunk_size)
    return indices.numpy().astype(np.int64), similarities.numpy()


def neighbors_protocol(
    encoder: Encoder,
    train: ImageSet,
    test: ImageSet,
    *,
    picture: str | os.PathLike,
    num_queries: int = 8,
    k: int = 5,
    seed: int = 0,
    batch_size: int = 256,
    chunk_size: int = 1024,
    eval_size: int | None = None,
    title: str | None = None,
    crop_fraction: float = 1.0,
) -> dict[str, Any]:
    """Each test image's ``k`` nearest training images by the backbone's features, and a picture.

    What ASCL's relabelling sees: its soft targets come from a query's nearest
    neighbours, so the share of same-class neighbours bounds how right they can be.
    The fraction is measured over every test image given (``same_class_fraction``) and
    over the ``num_queries`` drawn with ``seed`` for the picture (``..._shown``).

    Args:
        encoder: The frozen model.
        train: Labelled training split: the images searched.
        test: Labelled test split: the queries.
        picture: The PNG to write (``tfascl.plots.plot_neighbors``).
        num_queries: Test images in the picture (rows), drawn without replacement.
        k: Neighbours per query (columns).
        seed: Seed of the draw.
        batch_size: Images per forward pass.
        chunk_size: Queries per similarity block.
        eval_size: Side of the images fed to the model (default: the model's size).
        title: The picture's title.
        crop_fraction: Side of the eval transform's central crop over the shorter side.

    Returns:
        ``{"metrics", "settings", "shown", "picture"}``: fractions, what was done, and
        per shown query its test index, class and neighbours (train index, class,
        similarity).
    """
    from tfascl import plots

    if isinstance(train, ImageFiles) or isinstance(test, ImageFiles):
        raise EvalInputError(STREAMED_NEIGHBORS_ERROR)
    if num_queries < 1 or k < 1:
        raise EvalInputError(f"neighbours need num_queries >= 1 and k >= 1, got {num_queries}, {k}")
    eval_size = eval_size or encoder.image_size
    bank = embed_images(encoder, train.host_arrays()[0], batch_size, eval_size, crop_fraction)
    queries = embed_images(encoder, test.host_arrays()[0], batch_size, eval_size, crop_fraction)
    indices, similarities = nearest_neighbors(bank, queries, k, chunk_size)
    same = train.labels[indices] == test.labels[:, None]
    rng = np.random.default_rng(seed)
    shown = np.sort(rng.choice(len(test), size=min(num_queries, len(test)), replace=False))
    class_names = list(train.class_names or test.class_names or [])
    fraction = float(same.mean())
    fraction_shown = float(same[shown].mean())
    subtitle = (
        f"{indices.shape[1]} nearest of {len(train):,} {train.name} training images "
        "(cosine, backbone features)\n"
        f"same class: {100 * fraction_shown:.0f}% of those shown, "
        f"{100 * fraction:.1f}% over {len(test):,} test images"
    )
    path = plots.plot_neighbors(
        test.images[shown],
        test.labels[shown],
        train.images[indices[shown]],
        train.labels[indices[shown]],
        similarities[shown],
        class_names,
        picture,
        title=title or "Nearest training neighbours of test images",
        subtitle=subtitle,
    )
    settings = {
        "k": int(indices.shape[1]),
        "num_queries": len(shown),
        "seed": seed,
        "similarity": "cosine of backbone features",
        "image_size": eval_size,
        "eval_crop": crop_fraction,
    }
    rows = [
        {
            "test_index": int(q),
            "label": int(test.labels[q]),
            "neighbors": [
                {"train_index": int(i), "label": int(train.labels[i]), "similarity": float(s)}
                for i, s in zip(indices[q], similarities[q])
            ],
        }
        for q in shown
    ]
    return {
        "metrics": {"same_class_fraction": fraction, "same_class_fraction_shown": fraction_shown},
        "settings": settings,
        "shown": rows,
        "picture": str(path),
    }
