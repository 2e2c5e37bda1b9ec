"""Weighted k-nearest-neighbour evaluation of frozen features.

The protocol of InstDisc (Wu et al., 2018), used as a training monitor by the MoCo CIFAR demo
and the ASCL code: features are L2-normalised, every test sample takes its ``k`` most
cosine-similar training samples, and each neighbour votes for its label with weight
``exp(sim / temperature)``.

For a test feature ``q`` and training features ``x_j`` with labels ``y_j``::

    s_j      = <q / ||q||, x_j / ||x_j||>                  cosine similarity
    N(q)     = indices of the k largest s_j                 k := min(k, N_train)
    score_c  = sum_{j in N(q), y_j = c} exp(s_j / temperature)
    pred     = argmax_c score_c

Ties: when several training samples share the k-th largest similarity, ``tf.math.top_k`` keeps
the ones with the lower index (it documents that equal values come out lower-index first).

``N(q)`` is :func:`nearest_neighbors`, the package's one nearest-neighbour search of frozen
features: the vote here and ``tfascl-eval --protocol=neighbors``'s picture both use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tfascl import console

__all__ = [
    "feature_extractor",
    "knn_accuracy",
    "knn_predict",
    "nearest_neighbors",
    "top_k_accuracy",
]


def nearest_neighbors(
    bank: tf.Tensor | np.ndarray,
    queries: tf.Tensor | np.ndarray,
    k: int,
    chunk_size: int = 1024,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The ``k`` bank rows most cosine-similar to each query, most similar first.

    The one nearest-neighbour search of the package: :func:`knn_predict` votes with it,
    and ``tfascl-eval --protocol=neighbors`` pictures it. Both sets are L2-normalised here
    (raw backbone outputs can be passed). Query rows are processed ``chunk_size`` at a time,
    so peak memory is ``O(chunk_size * N)`` for the similarity block; chunking does not
    change the result (every row is searched on its own). Pure TensorFlow ops: runs on GPU
    and inside ``tf.function`` (also ``jit_compile=True`` when all shapes are static).

    Ties: ``tf.math.top_k`` puts equal similarities lower bank index first.

    Args:
        bank: ``[N, D]`` float features searched.
        queries: ``[Q, D]`` float features.
        k: Neighbours per query; clipped to ``N``.
        chunk_size: Query rows per similarity block.

    Returns:
        ``(similarities [Q, k'] float32, indices [Q, k'] int32)``, ``k' = min(k, N)``.
    """
    if k < 1:
        raise ValueError(f"`k` must be >= 1, got {k}.")
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
    bank = tf.math.l2_normalize(tf.cast(bank, tf.float32), axis=1)
    queries = tf.math.l2_normalize(tf.cast(queries, tf.float32), axis=1)
    n_bank_static = bank.shape[0]
    if n_bank_static is not None:
        k_eff = min(k, n_bank_static)  # a Python int keeps top_k XLA-compilable
    else:
        k_eff = tf.minimum(k, tf.shape(bank)[0])

    def search(chunk: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        sim = tf.matmul(chunk, bank, transpose_b=True)  # [B, N]
        top = tf.math.top_k(sim, k=k_eff)  # [B, k'], lower index first on ties
        return top.values, top.indices

    n_static = queries.shape[0]
    if n_static is not None and n_static <= chunk_size:
        return search(queries)

    # Pad to whole chunks and map over them sequentially; parallel_iterations=1 keeps only
    # one [chunk_size, N] similarity block alive at a time in graph mode.
    n = tf.shape(queries)[0]
    num_chunks = (n + chunk_size - 1) // chunk_size
    padded = tf.pad(queries, [[0, num_chunks * chunk_size - n], [0, 0]])
    dim = queries.shape[1] if queries.shape[1] is not None else tf.shape(queries)[1]
    chunks = tf.reshape(padded, [num_chunks, chunk_size, dim])
    width = k_eff if isinstance(k_eff, int) else None
    similarities, indices = tf.map_fn(
        search,
        chunks,
        fn_output_signature=(
            tf.TensorSpec([chunk_size, width], tf.float32),
            tf.TensorSpec([chunk_size, width], tf.int32),
        ),
        parallel_iterations=1,
    )
    flat = [-1, tf.shape(similarities)[-1]]
    return tf.reshape(similarities, flat)[:n], tf.reshape(indices, flat)[:n]


def knn_predict(
    train_features: tf.Tensor,
    train_labels: tf.Tensor,
    test_features: tf.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> tf.Tensor:
    """Weighted kNN class scores (see the module docstring for the formula).

    The neighbours are :func:`nearest_neighbors`'s: both feature sets are L2-normalised
    there, so raw backbone outputs can be passed; for features that are already unit-norm
    this is a no-op up to float32 rounding. Test rows are searched ``chunk_size`` at a time,
    so peak memory is ``O(chunk_size * N_train)`` for the similarity block, plus
    ``O(N_test * (k + num_classes))`` for the neighbours and the scores. Chunking does not
    change the result: every test row is scored independently. Pure TensorFlow ops; runs on
    GPU and inside ``tf.function`` (also with ``jit_compile=True`` when all shapes are static).

    Args:
        train_features: ``[N_train, D]`` float features of the memory bank.
        train_labels: ``[N_train]`` integer labels in ``[0, num_classes)``. Out-of-range labels
            are not checked (a segment sum would silently misplace them).
        test_features: ``[N_test, D]`` float features to classify.
        num_classes: ``C``.
        k: Number of neighbours; clipped to ``N_train``.
        temperature: Softmax-like temperature of the vote weights ``exp(sim / temperature)``.
        chunk_size: Test rows per similarity block.

    Returns:
        ``[N_test, C]`` float32 scores; ``argmax`` over the last axis is the prediction.
    """
    if temperature <= 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    top_sim, top_idx = nearest_neighbors(train_features, test_features, k, chunk_size)
    labels = tf.cast(tf.reshape(train_labels, [-1]), tf.int32)
    weights = tf.exp(top_sim / temperature)  # [N_test, k]
    top_labels = tf.gather(labels, top_idx)  # [N_test, k]
    # Segment id row * C + label scatters the votes into a [N_test * C] vector without
    # materialising a [N_test, k, C] one-hot tensor (800 MB for 1024 rows, k=200, C=1000).
    rows = tf.shape(top_sim)[0]
    segment = tf.range(rows)[:, None] * num_classes + top_labels
    scores = tf.math.unsorted_segment_sum(
        tf.reshape(weights, [-1]), tf.reshape(segment, [-1]), rows * num_classes
    )
    return tf.reshape(scores, [rows, num_classes])


def knn_accuracy(
    train_features: tf.Tensor | np.ndarray,
    train_labels: tf.Tensor | np.ndarray,
    test_features: tf.Tensor | np.ndarray,
    test_labels: tf.Tensor | np.ndarray,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Top-1 (and top-5) weighted-kNN accuracy; arguments as in :func:`knn_predict`.

    A test sample counts as top-``n`` correct when its label is among the ``n`` highest
    scores; equal scores (including classes with no vote, score 0) rank lower class index first.

    Args:
        train_features: ``[N_train, D]`` features.
        train_labels: ``[N_train]`` integer labels.
        test_features: ``[N_test, D]`` features.
        test_labels: ``[N_test]`` integer labels.
        num_classes: ``C``.
        k: Neighbours.
        temperature: Vote temperature.
        chunk_size: Test rows per similarity block.

    Returns:
        ``{"top1": a1}`` or, when ``num_classes >= 5``, ``{"top1": a1, "top5": a5}``; fractions
        in ``[0, 1]``.
    """
    scores = knn_predict(
        tf.convert_to_tensor(train_features),
        tf.convert_to_tensor(train_labels),
        tf.convert_to_tensor(test_features),
        num_classes,
        k=k,
        temperature=temperature,
        chunk_size=chunk_size,
    )
    targets = tf.cast(tf.reshape(tf.convert_to_tensor(test_labels), [-1]), tf.int32)
    result = {"top1": top_k_accuracy(scores, targets, 1)}
    if num_classes >= 5:
        result["top5"] = top_k_accuracy(scores, targets, 5)
    return result


def top_k_accuracy(
    scores: tf.Tensor | np.ndarray, labels: tf.Tensor | np.ndarray, k: int = 1
) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores.

    Ties rank the lower class index first (``tf.math.top_k``'s documented order), so a
    row counts as correct only when its label is in the first ``k`` of that order; not
    ``tf.math.in_top_k``, which counts every class tied with the ``k``-th score as a hit
    and so inflates the accuracy when many classes score 0 (no kNN vote).

    Args:
        scores: ``[N, C]`` class scores (any float dtype).
        labels: ``[N]`` integer labels in ``[0, C)``.
        k: how many of the highest scores count; clipped to ``C``.

    Returns:
        The accuracy, a fraction in ``[0, 1]``.
    """
    scores = tf.convert_to_tensor(scores)
    labels = tf.cast(tf.reshape(tf.convert_to_tensor(labels), [-1]), tf.int32)
    if scores.shape.rank != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(
            f"top_k_accuracy: scores must be [N, C] with one label a row, got scores "
            f"{scores.shape.as_list()} and labels {labels.shape.as_list()}"
        )
    if k < 1:
        raise ValueError(f"top_k_accuracy: k must be >= 1, got {k}")
    _, top = tf.math.top_k(scores, k=min(k, int(scores.shape[1])))
    hits = tf.reduce_any(tf.equal(top, labels[:, None]), axis=1)
    return float(tf.reduce_mean(tf.cast(hits, tf.float64)))


def _say(line: str) -> None:
    console.report(line)  # on a line of its own, below an open progress line


# Seconds between the progress lines of a long feature pass (an ImageNet bank).
PROGRESS_EVERY_S = 30.0


def feature_extractor(
    embed: keras.Model | Callable[[tf.Tensor], tf.Tensor],
    *,
    normalize: bool = True,
    compiled: bool = False,
    name: str = "features",
    report: Callable[[str], None] | None = None,
) -> Callable[..., tuple[np.ndarray, np.ndarray | None]]:
    """A function mapping a dataset of image batches to features (and labels), in order.

    The one feature pass of the package: the kNN monitor, the evaluation protocols
    and the tests use it. One ``tf.function`` (``reduce_retracing``: the last, smaller
    batch does not retrace) serves every pass of the returned function, so call this
    once per model and keep the result. A pass that takes long says so every
    ``PROGRESS_EVERY_S`` seconds (``<name>: 1,234 <what> embedded (31 s)``).

    Features are computed on the default device: a Keras model is called as
    ``model(x, training=False)`` (BN on its moving statistics, dropout off), which reads
    (mirrored) variables without any cross-replica op, so this works under every
    strategy, outside ``strategy.scope()`` as callbacks run.

    Args:
        embed: a Keras model, or a function of ``[B, ...]`` images to ``[B, ...]`` features.
        normalize: flatten the features to ``[B, D]`` and L2-normalise them (the kNN
            features); otherwise they are returned as ``embed`` gives them, in float32.
        compiled: ``embed`` is a ``tf.function`` already (``Encoder.compiled_embed``):
            not wrapped in another.
        name: the prefix of the progress lines.
        report: takes each progress line (default: printed on stdout).

    Returns:
        ``extract(dataset, what="images") -> (features, labels)``: ``dataset`` yields
        image batches or ``(images, labels, ...)`` tuples; ``features`` is ``[N, D]``
        float32, ``labels`` ``[N]`` int64 (None for a dataset of images only).
    """
    if isinstance(embed, keras.Model):
        model = embed

        def call(images: tf.Tensor) -> tf.Tensor:
            return model(images, training=False)

    else:
        call = embed

    def features_of(images: tf.Tensor) -> tf.Tensor:
        features = tf.cast(call(images), tf.float32)
        if not normalize:
            return features
        features = tf.reshape(features, [tf.shape(features)[0], -1])
        return tf.math.l2_normalize(features, axis=1)

    step = features_of if compiled else tf.function(features_of, reduce_retracing=True)

    def extract(
        dataset: tf.data.Dataset, what: str = "images"
    ) -> tuple[np.ndarray, np.ndarray | None]:
        features, labels = [], []
        started = last_note = time.perf_counter()
        for element in dataset:
            images = element[0] if isinstance(element, (tuple, list)) else element
            features.append(step(images).numpy())
            if isinstance(element, (tuple, list)):
                labels.append(np.reshape(element[1].numpy(), [-1]).astype(np.int64))
            now = time.perf_counter()
            if now - last_note >= PROGRESS_EVERY_S:
                done = sum(len(f) for f in features)
                (report or _say)(f"{name}: {done:,} {what} embedded ({now - started:.0f} s)")
                last_note = now
        if not features:
            raise ValueError(f"{name}: no {what} to embed (the dataset is empty)")
        return np.concatenate(features), (np.concatenate(labels) if labels else None)

    return extract
