"""The linear probe: one linear layer trained on the frozen encoder's features.

:func:`linear_protocol` trains with SGD (momentum 0.9, no weight decay) on augmented training
images (RandomResizedCrop at the model's size, scale (0.08, 1), + flip), ×0.1 steps at
epochs 60 and 80 over 100 epochs, batch 256; or a per-step cosine from lr 1. ``fast=True``
("linear_fast") trains on cached eval-transform features instead, without augmentation:
minutes instead of hours on a CPU, and not the paper's number.

The training is Keras ``compile``/``fit`` on :class:`LinearProbe` (features in, logits out;
image batches are embedded by the frozen encoder first), with a callback
(:class:`_ProbeHistory`) for the per-epoch record and the test evaluation. It reproduces
the hand-written loop it replaced step for step (``tests/test_eval.py``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfascl import knn
from tfascl.data import ImageFiles, ImageSet
from tfascl.data.host import host_variable
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
    streamed_linear_epochs,
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


class LinearProbe(keras.Model):
    """The linear classifier as ``fit`` trains it: ``[B, F]`` features in, ``[B, C]`` logits
    out; given ``embed``, a batch of images is embedded by the frozen encoder first.

    ``train_step`` embeds outside the gradient tape, in inference mode (BN moving
    statistics, no update), and only the classifier's kernel and bias are read inside it,
    so no backbone activation is kept for a backward pass; then one step of the compiled
    optimizer on the compiled loss (the mean cross-entropy of the batch). It logs the
    step's own loss as ``batch_loss`` (Keras's ``loss`` is a running mean weighted by the
    batch sizes; the probe's history is the plain mean over steps).

    Args:
        classifier: :func:`build_classifier`'s model.
        embed: ``[B, S, S, 3]`` pixels → ``[B, F]`` features (``Encoder.embed``); None when
            the dataset holds features already (``linear_fast``).
    """

    def __init__(
        self, classifier: keras.Model, embed: Callable[[tf.Tensor], tf.Tensor] | None = None
    ) -> None:
        super().__init__(name="linear_probe")
        self.classifier = classifier
        self._embed = embed

    def call(self, features: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.classifier(features, training=training)

    def train_step(self, data: tuple[tf.Tensor, tf.Tensor]) -> dict[str, tf.Tensor]:
        inputs, labels = data
        features = inputs if self._embed is None else tf.stop_gradient(self._embed(inputs))
        weights = self.classifier.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.classifier(features, training=True)
            loss = self.compute_loss(x=features, y=labels, y_pred=logits)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return {"batch_loss": loss}


class _ProbeHistory(keras.callbacks.Callback):
    """The probe's per-epoch record: the rate of the epoch's first step, the mean step loss,
    and test top-1 on evaluation epochs (with the best so far); sets the streamed probe's
    epoch, and names its undecodable files after the first epoch.

    Args:
        config: The probe's settings.
        evaluated: ``epoch -> (top-1, top-5 or None)`` on evaluation epochs, else None.
        log: Called with a progress line after each evaluation.
        epoch: The streamed dataset's epoch variable (set at each epoch's start), or None.
        first_epoch_skipped: Called after the first epoch: the files that did not decode.
    """

    def __init__(
        self,
        config: LinearConfig,
        evaluated: Callable[[int], tuple[float, float | None] | None],
        log: Callable[[str], None] | None,
        epoch: tf.Variable | None = None,
        first_epoch_skipped: Callable[[], list[str]] | None = None,
    ) -> None:
        super().__init__()
        self.config, self.evaluated, self.log, self.epoch = config, evaluated, log, epoch
        self.first_epoch_skipped = first_epoch_skipped
        self.history: list[dict[str, Any]] = []
        self.best, self.best_epoch, self.final5 = -1.0, 0, None
        self.losses: list[float] = []
        self.lr = 0.0
        self.steps = 0  # optimizer steps taken
        self.train_skipped: list[str] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.epoch is not None:
            self.epoch.assign(epoch + 1)  # fit counts from 0, the probe's epochs from 1
        self.lr = float(self.model.optimizer.learning_rate)  # the epoch's first step's rate
        self.losses = []

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.losses.append(float(logs["batch_loss"]))
        self.steps += 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        epoch += 1
        # A streamed epoch ends when fit's next step finds no batch; that step still counts
        # one optimizer iteration (Keras 3.15), which would run the schedule a step ahead
        # for every epoch. The clock is the steps taken, as in a plain loop.
        iterations = self.model.optimizer.iterations
        if int(iterations.numpy()) != self.steps:
            iterations.assign(self.steps)
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": float(np.mean(self.losses)),
            "learning_rate": self.lr,
        }
        if epoch == 1 and self.first_epoch_skipped is not None:
            self.train_skipped = self.first_epoch_skipped()
        scores = self.evaluated(epoch)
        if scores is not None:
            top1, self.final5 = scores
            record["top1"] = top1
            if top1 > self.best:
                self.best, self.best_epoch = top1, epoch
            if self.log is not None:
                self.log(
                    f"{self.config.protocol} epoch {epoch}/{self.config.epochs}: loss "
                    f"{record['loss']:.4f}, lr {self.lr:.4g}, test top-1 {100 * top1:.2f}% "
                    f"(best {100 * self.best:.2f}%)"
                )
        self.history.append(record)


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

    Trained by Keras ``compile``/``fit`` (:class:`LinearProbe`): the batches are one
    ``tf.data`` dataset, the optimizer :func:`tfascl.optim.build_optimizer`'s ``"sgd"``
    (PyTorch's SGD: coupled L2 weight decay ``g += wd * w``, not Keras's decoupled one),
    its per-step schedule :meth:`LinearConfig.lr_schedule`. The backbone runs in inference
    mode (BN moving statistics, no update) and outside the gradient tape; only the linear
    layer's kernel and bias are optimised. Test features are computed once: with a frozen
    backbone in inference mode they never change, so evaluating each epoch (a callback,
    ``eval_every`` epochs and the last; top-k ties rank the lower class first, as
    :func:`tfascl.knn.top_k_accuracy`) costs a matmul.

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
    optimizer.build(classifier.trainable_variables)
    # The encoder runs on the step's batch, as part of the step (not in tf.data's threads).
    probe = LinearProbe(classifier, None if config.fast else encoder.embed)
    # No XLA: the step embeds with the encoder (a restored SavedModel function for some),
    # as the hand-written step did; steps_per_execution 1: one loss per step for the history.
    probe.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )

    def evaluated(epoch: int) -> tuple[float, float | None] | None:
        """Test (top-1, top-5) after ``epoch`` when it is an evaluation epoch, else None."""
        if epoch % config.eval_every and epoch != config.epochs:
            return None
        scores = np.asarray(classifier.predict_on_batch(test_features))
        top5 = knn.top_k_accuracy(scores, test_labels, 5) if num_classes >= 5 else None
        return knn.top_k_accuracy(scores, test_labels, 1), top5

    epoch_var, first_epoch_skipped = None, None
    if streamed:
        epoch_var = host_variable(np.int64(0), "linear_epoch")
        if skipped is not None:

            def first_epoch_skipped() -> list[str]:
                return never_decoded(train, skipped)

        dataset = streamed_linear_epochs(
            train, config.batch_size, encoder.image_size, config.seed, epoch_var,
            config.crop_scale, skipped,
        )  # fmt: skip
        fit_steps = None  # epochs end when their files do (undecodable ones are left out)
    else:
        # One iterator over the repeated batches, as many steps an epoch as they hold:
        # each repetition reshuffles (and redraws the crops) exactly as a new pass over
        # the dataset did in the hand-written loop.
        dataset, fit_steps = dataset.repeat(), steps_per_epoch
    record = _ProbeHistory(config, evaluated, log, epoch_var, first_epoch_skipped)
    with warnings.catch_warnings():
        # A streamed epoch ends when its files run out, which fit reports as a warning.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        probe.fit(
            dataset,
            epochs=config.epochs,
            steps_per_epoch=fit_steps,
            shuffle=False,  # the dataset shuffles itself
            callbacks=[record],
            verbose=0,
        )
    train_skipped = record.train_skipped if streamed else train_skipped
    metrics: dict[str, Any] = {
        "top1_best": record.best,
        "top1_final": record.history[-1]["top1"],
        "best_epoch": record.best_epoch,
    }
    if record.final5 is not None:
        metrics["top5_final"] = record.final5
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
    result = {"metrics": metrics, "settings": settings, "history": record.history}
    return {**with_skipped(result, train_skipped, test_skipped), "classifier": classifier}
