"""The linear probe: one linear layer trained on the frozen encoder's features.

:func:`linear_protocol` trains with SGD (momentum 0.9, no weight decay) on augmented training
images (RandomResizedCrop at the model's size, scale (0.08, 1), + flip), ×0.1 steps at
epochs 60 and 80 over 100 epochs, batch 256; or a per-step cosine from lr 1. ``fast=True``
("linear_fast") trains on cached eval-transform features instead, without augmentation:
minutes instead of hours on a CPU, and not the paper's number.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfascl import knn
from tfascl.data import ImageFiles, ImageSet
from tfascl.data.stream import SkippedFiles
from tfascl.evaluation.datasets import (
    DatasetProtocol,
    embed_split,
    never_decoded,
    num_classes_seen,
    with_skipped,
)
from tfascl.evaluation.encoders import Encoder, EvalInputError
from tfascl.evaluation.linear_batches import (
    LINEAR_CROP_SCALE,
    augmented_batches,
    feature_batches,
    streamed_linear_batches,
)
from tfascl.optim import build_optimizer, multistep_decay, warmup_cosine

LINEAR_SCHEDULES = ("step", "cosine")
DEFAULT_LINEAR_LR = {"step": 10.0, "cosine": 1.0}


@dataclasses.dataclass
class LinearConfig:
    """Settings of the linear probe; defaults are the ASCL code's CIFAR protocol.

    Attributes:
        epochs: Training epochs (100).
        batch_size: Images per step (256).
        learning_rate: Base rate; ``None`` takes 10 for ``"step"`` and 1 for ``"cosine"``
            (:meth:`for_dataset`: the dataset's reference rate, 30 for ImageNet).
        schedule: ``"step"`` (×``gamma`` at ``milestones``) or ``"cosine"`` (per step, to 0).
        milestones: Epochs of the step schedule (60, 80).
        gamma: Step factor (0.1).
        momentum: SGD momentum (0.9).
        nesterov: Nesterov momentum; ``None`` is on (the ASCL code), and
            :meth:`for_dataset` turns it off for ImageNet (MoCo's ``main_lincls.py``).
        crop_scale: Area range of the training crops (RandomResizedCrop's default).
        weight_decay: Coupled L2 (0).
        init_std: Std of the N(0, std) weight initialisation (0.01; bias 0).
        eval_every: Evaluate on the test split every this many epochs (and after the last).
        fast: Train on cached eval-transform features, without augmentation ("linear_fast").
        seed: Seed of the initialisation, shuffling and augmentation.
        jit_compile: Compile the augmentation with XLA (faster on CPU after a few seconds of
            compilation; turn off for tiny test runs).
    """

    epochs: int = 100
    batch_size: int = 256
    learning_rate: float | None = None
    schedule: str = "step"
    milestones: tuple[int, ...] = (60, 80)
    gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool | None = None
    crop_scale: tuple[float, float] = LINEAR_CROP_SCALE
    weight_decay: float = 0.0
    init_std: float = 0.01
    eval_every: int = 1
    fast: bool = False
    seed: int = 0
    jit_compile: bool = True

    def __post_init__(self) -> None:
        if self.schedule not in LINEAR_SCHEDULES:
            raise EvalInputError(
                f"linear schedule must be one of {LINEAR_SCHEDULES}, got {self.schedule!r}"
            )
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise EvalInputError(f"linear {name} must be >= 1, got {getattr(self, name)}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise EvalInputError(f"linear crop_scale must be 0 < low <= high <= 1, got {low, high}")

    def for_dataset(self, protocol: DatasetProtocol) -> LinearConfig:
        """This config with the unset learning rate and Nesterov taken from ``protocol``."""
        learning_rate, nesterov = self.learning_rate, self.nesterov
        if learning_rate is None and self.schedule == "step":
            learning_rate = protocol.linear_lr
        if nesterov is None:
            nesterov = protocol.nesterov
        return dataclasses.replace(self, learning_rate=learning_rate, nesterov=nesterov)

    @property
    def uses_nesterov(self) -> bool:
        return True if self.nesterov is None else self.nesterov

    @property
    def protocol(self) -> str:
        return "linear_fast" if self.fast else "linear"

    @property
    def base_lr(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return DEFAULT_LINEAR_LR[self.schedule]

    def lr_schedule(self, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
        """The per-step learning-rate schedule for ``steps_per_epoch`` steps an epoch."""
        if self.schedule == "cosine":
            return warmup_cosine(self.base_lr, total_steps=self.epochs * steps_per_epoch)
        return multistep_decay(self.base_lr, steps_per_epoch, self.milestones, self.gamma)

    def settings(self) -> dict[str, Any]:
        """JSON-ready description for ``results.json``."""
        values = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.base_lr,
            "schedule": self.schedule,
            "optimizer": f"SGD, {'Nesterov ' if self.uses_nesterov else ''}momentum "
            f"{self.momentum}, weight decay {self.weight_decay}",
            "init": f"weights N(0, {self.init_std}), bias 0",
            "augmentation": "none: cached eval-transform features"
            if self.fast
            else f"RandomResizedCrop(scale {self.crop_scale[0]}-{self.crop_scale[1]}) "
            "+ horizontal flip",
            "eval_every": self.eval_every,
            "seed": self.seed,
        }
        if self.schedule == "step":
            values.update(milestones=list(self.milestones), gamma=self.gamma)
        return values


def build_classifier(feature_dim: int, num_classes: int, init_std: float, seed: int) -> keras.Model:
    """The linear layer: ``[B, F] → [B, C]`` logits, weights N(0, init_std), bias 0."""
    inputs = keras.Input((feature_dim,), name="features")
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(0.0, init_std, seed=seed),
        bias_initializer="zeros",
        name="linear",
    )(inputs)
    return keras.Model(inputs, logits, name="linear_classifier")


def linear_protocol(
    encoder: Encoder,
    train: ImageSet | ImageFiles,
    test: ImageSet | ImageFiles,
    config: LinearConfig | None = None,
    *,
    embed_batch_size: int = 256,
    log: Callable[[str], None] | None = None,
    eval_size: int | None = None,
    crop_fraction: float = 1.0,
) -> dict[str, Any]:
    """Trains a linear classifier on the frozen encoder and reports test top-1 (best, final).

    The backbone runs in inference mode (BN moving statistics, no update) and outside the
    gradient tape; only the linear layer's kernel and bias are optimised. Test features are
    computed once: with a frozen backbone in inference mode they never change, so evaluating
    each epoch costs a matmul.

    Args:
        encoder: The frozen model.
        train: Labelled training split, decoded or streamed: streamed, the augmented probe
            crops each original image by torchvision's rule as it is read
            (:func:`streamed_linear_batches`), so memory is flat in the number of images.
        test: Labelled test split, decoded or streamed.
        config: :class:`LinearConfig` (defaults: the ASCL protocol).
        embed_batch_size: Images per forward pass when caching features.
        log: Called with a one-line progress message after each evaluation.
        eval_size: Side of the test images (and of the cached training features of
            ``fast``); training crops are at the model's size. Default: the model's size.
        crop_fraction: Side of the eval transform's central crop over the shorter side.

    Returns:
        ``{"metrics": {"top1_best", "top1_final", "top5_final", "best_epoch"}, "settings",
        "history": [{"epoch", "loss", "learning_rate", "top1"?}], "classifier": Model}``;
        accuracies are fractions. ``classifier`` is not JSON (pop it before writing).
    """
    config = config or LinearConfig()
    streamed = isinstance(train, ImageFiles) and not config.fast
    eval_size = eval_size or encoder.image_size
    test_features, test_labels, test_skipped = embed_split(
        encoder, test, embed_batch_size, eval_size, crop_fraction
    )
    train_skipped: list[str] = []
    if config.fast:
        train_features, train_labels, train_skipped = embed_split(
            encoder, train, embed_batch_size, eval_size, crop_fraction
        )
        dataset = feature_batches(train_features, train_labels, config.batch_size, config.seed)
    elif streamed:
        # TFDS records bring their labels as they are read: the class names count them.
        known = train.labels if train.labels is not None else np.zeros(0)
        train_labels = known.astype(np.int64)
        skipped = SkippedFiles(train) if train.paths is not None else None
        count = len(train)
    else:
        train_labels = train.labels.astype(np.int64)
        dataset = augmented_batches(
            train,
            config.batch_size,
            encoder.image_size,
            config.seed,
            config.jit_compile,
            config.crop_scale,
        )
    num_classes = num_classes_seen(train, test, train_labels, test_labels)
    steps_per_epoch = math.ceil((count if streamed else len(train_labels)) / config.batch_size)
    classifier = build_classifier(encoder.feature_dim, num_classes, config.init_std, config.seed)
    optimizer = build_optimizer(
        "sgd",
        config.lr_schedule(steps_per_epoch),
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        nesterov=config.uses_nesterov,
        exclude_bn_and_bias=False,  # PyTorch's SGD decays the bias too (moot at wd 0)
    )
    weights = classifier.trainable_variables
    optimizer.build(weights)
    fast = config.fast

    @tf.function(reduce_retracing=True)
    def train_step(inputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        features = inputs if fast else encoder.embed(inputs)
        features = tf.stop_gradient(features)
        with tf.GradientTape() as tape:
            logits = classifier(features, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            )
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    def test_scores() -> np.ndarray:
        return np.asarray(classifier.predict_on_batch(test_features))

    history: list[dict[str, Any]] = []
    best, best_epoch, final5 = -1.0, 0, None
    for epoch in range(1, config.epochs + 1):
        lr = float(optimizer.learning_rate)  # the rate of the epoch's first step
        if streamed:
            dataset = streamed_linear_batches(
                train, config.batch_size, encoder.image_size, config.seed, epoch,
                config.crop_scale, skipped,
            )  # fmt: skip
        losses = [float(train_step(inputs, labels)) for inputs, labels in dataset]
        if streamed and epoch == 1 and skipped is not None:
            train_skipped = never_decoded(train, skipped)
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "learning_rate": lr,
        }
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            scores = test_scores()
            top1 = knn.top_k_accuracy(scores, test_labels, 1)
            final5 = knn.top_k_accuracy(scores, test_labels, 5) if num_classes >= 5 else None
            record["top1"] = top1
            if top1 > best:
                best, best_epoch = top1, epoch
            if log is not None:
                log(
                    f"{config.protocol} epoch {epoch}/{config.epochs}: loss {record['loss']:.4f}, "
                    f"lr {lr:.4g}, test top-1 {100 * top1:.2f}% (best {100 * best:.2f}%)"
                )
        history.append(record)
    metrics: dict[str, Any] = {
        "top1_best": best,
        "top1_final": history[-1]["top1"],
        "best_epoch": best_epoch,
    }
    if final5 is not None:
        metrics["top5_final"] = final5
    settings = {
        **config.settings(),
        "steps_per_epoch": steps_per_epoch,
        "train_crop_size": encoder.image_size,
        "test_image_size": eval_size,
        "eval_crop": crop_fraction,
    }
    if streamed:
        settings["train_crops"] = (
            "streamed: torchvision's RandomResizedCrop rule on each original image (whole-pixel "
            "box from its own size, only that window decoded), then the flip"
        )
    result = {"metrics": metrics, "settings": settings, "history": history}
    return {**with_skipped(result, train_skipped, test_skipped), "classifier": classifier}
