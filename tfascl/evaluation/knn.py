"""The weighted kNN protocol: every test image classified by its ``k`` most similar training
images.

The training split through the eval transform is the memory bank (L2-normalised backbone
features); every test image is classified by its ``k`` most similar bank entries, each
voting ``exp(sim / t)`` (``tfascl.knn``: chunked, so the similarity matrix never exceeds
``chunk_size × N_train``). Either split may be decoded or streamed from its files.
"""

from __future__ import annotations

from typing import Any

from tfascl import knn
from tfascl.data import ImageFiles, ImageSet
from tfascl.evaluation.datasets import embed_split, num_classes_seen, with_skipped
from tfascl.evaluation.encoders import Encoder


def knn_protocol(
    encoder: Encoder,
    train: ImageSet | ImageFiles,
    test: ImageSet | ImageFiles,
    *,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 256,
    chunk_size: int = 1024,
    eval_size: int | None = None,
    crop_fraction: float = 1.0,
) -> dict[str, Any]:
    """Weighted kNN accuracy of the test split against a bank of training-split features.

    Either split may be decoded in memory or streamed from its files; the features are
    the same (decoding is), and only they are held: ``N × F`` float32.

    Args:
        encoder: The frozen model.
        train: Labelled training split (the bank), eval transform, no augmentation.
        test: Labelled test split.
        k: Neighbours (clipped to the bank size).
        temperature: Vote weight ``exp(sim / temperature)``.
        batch_size: Images per forward pass.
        chunk_size: Test rows per similarity block (memory ``chunk_size × N_train``).
        eval_size: Side of the bank and test images (default: the model's size).
        crop_fraction: Side of the eval transform's central crop over the shorter side.

    Returns:
        ``{"metrics": {"top1", "top5"}, "settings": {...}}``, plus ``"skipped": {split:
        [file, ...]}`` when streamed files failed to decode; accuracies are fractions.
    """
    eval_size = eval_size or encoder.image_size
    bank, bank_labels, bank_skipped = embed_split(
        encoder, train, batch_size, eval_size, crop_fraction
    )
    queries, query_labels, query_skipped = embed_split(
        encoder, test, batch_size, eval_size, crop_fraction
    )
    num_classes = num_classes_seen(train, test, bank_labels, query_labels)
    metrics = knn.knn_accuracy(
        bank,
        bank_labels,
        queries,
        query_labels,
        num_classes,
        k=k,
        temperature=temperature,
        chunk_size=chunk_size,
    )
    settings = {
        "k": min(k, len(bank)),
        "temperature": temperature,
        "weights": "exp(sim / t)",
        "image_size": eval_size,
        "eval_crop": crop_fraction,
    }
    return with_skipped({"metrics": metrics, "settings": settings}, bank_skipped, query_skipped)
