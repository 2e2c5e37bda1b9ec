"""The base models: an online encoder (``EncoderModel``) and, for the methods that have
one, its momentum (EMA) copy (``MomentumModel``).

Methods add a loss and a ``train_step``: ``simclr.SimCLR`` and ``simclr.NNCLR`` on
``EncoderModel``; ``contrastive.MomentumContrast``, ``byol.BYOL`` and
``meanshift.MeanShift`` on ``MomentumModel``. Everything they share lives here and
nowhere else.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfascl.choices import MOMENTUM_SCHEDULES
from tfascl.distribute import gather_across_replicas, replica_count, replica_offset
from tfascl.models.ema import cosine_momentum, ema_update


def l2_normalize(x: tf.Tensor) -> tf.Tensor:
    """Row-wise L2 normalisation in float32 (the dtype of every loss)."""
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=1)


def clone_encoder(model: keras.Model) -> keras.Model:
    """A structural copy of ``model`` with the same initial weights (the key encoder)."""
    try:
        copy = keras.models.clone_model(model)
    except Exception as error:  # subclassed models without get_config, say
        raise ValueError(
            f"cannot clone {model.name!r} for the momentum encoder ({error}); "
            "pass key_backbone= a second instance of the same architecture"
        ) from error
    copy.set_weights(model.get_weights())
    return copy


def check_normalization(
    normalization: tuple[Sequence[float], Sequence[float]] | None,
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` as two 3-tuples of floats (None stays None); a clear error otherwise."""
    if normalization is None:
        return None
    try:
        mean, std = (tuple(float(v) for v in np.reshape(part, [-1])) for part in normalization)
    except (TypeError, ValueError):
        raise ValueError(
            f"normalization must be (mean, std), two sequences of 3 floats, got {normalization!r}"
        ) from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(
            f"normalization must be (mean, std) of 3 channels each, std > 0, got {normalization!r}"
        )
    return mean, std


def _serialize(value: Any) -> Any:
    return None if value is None else keras.saving.serialize_keras_object(value)


def _deserialize(value: Any) -> Any:
    return None if value is None else keras.saving.deserialize_keras_object(value)


class EncoderModel(keras.Model):
    """Backbone + projector: the online encoder that every method trains.

    ``call`` returns the online backbone's features, so ``model.predict`` gives what
    kNN and linear probes use; ``embed`` and ``export`` apply the evaluation transform.

    Args:
        backbone: any ``keras.Model`` mapping images [B, H, W, 3] to features [B, F].
        projector: ``keras.Model`` mapping [B, F] to [B, D].
        views: optional callable (e.g. ``tfascl.data.TwoViews``) turning a batch of
            raw images into ``(query_view, key_view)`` inside the train step, for
            augmentation on the accelerator.
        normalization: ``(mean, std)``, the per-channel statistics in [0, 1] units
            the training images were normalised with (``ImageSet.mean``/``.std``);
            ``embed`` and ``export`` apply them to raw pixels. Defaults to those of
            ``views`` when it has them.
        replica_jit_compile: compile each replica's forward and backward pass
            with XLA. Keras cannot jit the whole step under a multi-replica
            strategy (the step spans devices); this compiles the part that lives
            on one device and leaves the cross-replica gradient sum, the EMA and
            the queue update outside. On one device prefer
            ``compile(jit_compile=True)``, which also compiles those.
    """

    # A model's METHODS name (None when no method describes it), for the metadata of
    # ``export``. The registry knows the methods and imports this module, so it sets this
    # to its ``method_name`` when it loads (``import tfascl.models`` always loads it):
    # importing it here would be an import cycle.
    method_namer: Callable[[keras.Model], str | None] = staticmethod(lambda model: None)

    def __init__(
        self,
        backbone: keras.Model,
        projector: keras.Model,
        *,
        views: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]] | None = None,
        replica_jit_compile: bool = False,
        normalization: tuple[Sequence[float], Sequence[float]] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.projector = projector
        self.views = views
        if normalization is None and hasattr(views, "mean") and hasattr(views, "std"):
            normalization = (views.mean, views.std)
        self.normalization = check_normalization(normalization)
        self.replica_jit_compile = replica_jit_compile
        self._replica_functions: dict[str, Callable] = {}
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.confidence_tracker = keras.metrics.Mean(name="confidence")
        self.positive_tracker = keras.metrics.Mean(name="positive_weight")
        self.purity_tracker = keras.metrics.Mean(name="purity")
        self._embed_function: Callable | None = None
        # Built as soon as the encoders are (functional backbones always are): the
        # weights exist, so save_weights, ModelCheckpoint and BackupAndRestore work
        # before any step. A backbone built on first use builds the model in the
        # first train step (see ``build``).
        self.built = backbone.built and projector.built

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [
            self.loss_tracker,
            self.confidence_tracker,
            self.positive_tracker,
            self.purity_tracker,
        ]

    # --- Keras persistence: build, compile, config ------------------------------------

    def build(self, input_shape: Any) -> None:
        """Creates the encoders' weights for images of ``input_shape`` [B, H, W, 3].

        Only needed for a backbone built on first use (a subclassed model, or a
        ``Sequential`` without ``Input``): it is run once on zeros (and a momentum
        backbone takes the online weights). ``fit`` does this in its first step;
        call it yourself to save weights before any step. A ``(query_view, key_view)`` pair
        of shapes uses the first.
        """
        if isinstance(input_shape, (tuple, list)) and isinstance(input_shape[0], (tuple, list)):
            input_shape = input_shape[0]
        batch, *rest = tuple(input_shape)
        # Eagerly, also when called while a train step or compute_output_spec traces.
        with tf.init_scope():
            self.build_encoders(tf.zeros([batch or 1, *rest], self.compute_dtype))
        self.built = True

    def build_encoders(self, zeros: tf.Tensor) -> None:
        """Runs the unbuilt encoders once on ``zeros`` [B, H, W, 3] (eagerly)."""
        if not self.backbone.built:
            self.backbone(zeros, training=False)

    def compile(self, optimizer: Any = "rmsprop", *args: Any, **kwargs: Any) -> None:
        """``keras.Model.compile``, then the optimizer is built on ``online_weights``.

        Keras would otherwise build it on ``trainable_variables`` (BackupAndRestore,
        ``load_model``), which include the momentum encoder that no gradient
        reaches, and then skip restoring its slots from a file built on the
        online weights alone.
        """
        super().compile(optimizer, *args, **kwargs)
        if self.built and not self.optimizer.built:
            self.optimizer.build(self.online_weights)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Recompiles from ``get_compile_config()`` (``load_model``): optimizer built on
        ``online_weights``, so its saved slots and step are restored."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    def get_config(self) -> dict[str, Any]:
        """Everything ``from_config`` needs; the encoders and ``views`` as nested Keras objects."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": _serialize(self.backbone),
            "projector": _serialize(self.projector),
            "views": _serialize(self.views),
            "replica_jit_compile": self.replica_jit_compile,
            "normalization": None
            if self.normalization is None
            else [list(self.normalization[0]), list(self.normalization[1])],
        }

    def keyword_config(self, cls: type) -> dict[str, Any]:
        """``get_config``'s entries for ``cls.__init__``'s keyword-only arguments.

        A method's model stores each of its options as the attribute of the same name
        (``self.temperature``, ``self.queue_size``, ...), so its ``get_config`` is read
        from its signature rather than listed again; nested Keras objects (a predictor)
        are the class's to serialise.
        """
        parameters = inspect.signature(cls.__init__).parameters.values()
        return {p.name: getattr(self, p.name) for p in parameters if p.kind is p.KEYWORD_ONLY}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EncoderModel:
        config = dict(config)
        for name in ("backbone", "projector", "key_backbone", "views", "predictor"):
            if name in config:
                config[name] = _deserialize(config[name])
        return cls(**config)

    def _rng_states(self) -> list[keras.Variable]:
        # The state of every keras.random.SeedGenerator inside (the TwoViews
        # augmentation's): variables but not weights, which Keras files leave out.
        weights = {id(v) for v in self.weights}
        return [v for v in self.variables if id(v) not in weights]

    def save_own_variables(self, store: Any) -> None:
        """Keras's own-variable saving, plus the random generators' states, so a
        model loaded from a ``.keras`` or ``.weights.h5`` file draws the same
        device augmentations as the one saved (``model.checkpoint()`` has them too)."""
        super().save_own_variables(store)
        for index, state in enumerate(self._rng_states()):
            store[f"rng_state_{index}"] = state

    def load_own_variables(self, store: Any) -> None:
        keys = list(store.keys())
        states = self._rng_states()
        for index, state in enumerate(states):
            if f"rng_state_{index}" in keys:  # files saved before the states were added lack them
                state.assign(store[f"rng_state_{index}"])
        super().load_own_variables(
            {key: store[key] for key in keys if not key.startswith("rng_state_")}
        )

    # --- Features and export ---------------------------------------------------------

    @property
    def image_size(self) -> int | None:
        """The backbone's input side S, when its input shape fixes one."""
        shape = getattr(self.backbone, "input_shape", None)
        if not shape or len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
            return None
        return int(shape[1])

    def _training_normalization(self, use: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.normalization is None:
            raise ValueError(
                f"{use} needs the training normalisation: build the model with "
                "normalization=(train.mean, train.std), or set model.normalization"
            )
        return check_normalization(self.normalization)

    def _resolve_image_size(self, image_size: int | None, use: str) -> int:
        size = image_size or self.image_size
        if not size:
            raise ValueError(f"{use}: the backbone takes any size; pass image_size=")
        return int(size)

    def embed(
        self,
        images: np.ndarray | tf.Tensor,
        batch_size: int = 256,
        *,
        image_size: int | None = None,
        normalize: bool = True,
    ) -> np.ndarray:
        """Features of raw images, with the evaluation transform of training.

        The images go through ``tfascl.data.eval_transform`` (central square crop,
        resize to the training resolution, ``(x/255 − mean)/std`` with
        ``normalization``), then the online backbone in inference mode, then
        (``normalize``) an L2 normalisation: the features the kNN monitor and
        ``tfascl-eval`` use, and what the exported ``serving_default`` returns as
        ``embedding``.

        Args:
            images: [N, H, W, 3] pixels in [0, 255], uint8 (as ``ImageSet.images``).
            batch_size: images per forward pass.
            image_size: the training resolution; default the backbone's input size.
            normalize: L2-normalise each row.

        Returns:
            [N, F] float32 NumPy array.
        """
        from tfascl.data.augment import eval_transform  # tfascl.data needs no models

        mean, std = self._training_normalization("embed")
        size = self._resolve_image_size(image_size, "embed")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [N, H, W, 3] pixels, got shape {images.shape}")
        if self._embed_function is None:
            # One function for every call (like the kNN monitor's), reading the
            # variables as they are at call time.
            @tf.function(reduce_retracing=True)
            def embed_batch(batch: tf.Tensor, size: int, mean: tuple, std: tuple) -> tf.Tensor:
                features = tf.cast(self(eval_transform(batch, size, mean, std)), tf.float32)
                return tf.reshape(features, [tf.shape(features)[0], -1])

            self._embed_function = embed_batch
        batches = [
            self._embed_function(images[start : start + batch_size], size, mean, std)
            for start in range(0, int(images.shape[0]), batch_size)
        ]
        if not batches:
            return np.zeros([0, int(self.backbone.output_shape[-1])], np.float32)
        features = tf.concat(batches, axis=0)
        if normalize:
            features = tf.math.l2_normalize(features, axis=1)
        return features.numpy()

    def export(
        self,
        filepath: str | Path,
        format: str = "tf_saved_model",  # keras.Model.export's name
        verbose: bool | None = None,
        input_signature: Any = None,
        *,
        image_size: int | None = None,
        **kwargs: Any,
    ) -> Path:
        """Writes the online encoder as ``tfascl-export`` does, to ``filepath``.

        The SavedModel has the uint8 ``serving_default`` and the float32
        ``preprocessed`` signatures (``embedding`` and ``projection``), with the
        training ``normalization`` inside, plus ``assets.extra/`` (the backbone as
        ``.keras`` and ``metadata.json``); see ``tfascl.serving``. For TF Serving
        export to ``<base>/<version>``. ``format="onnx"`` or ``"litert"`` writes the
        one file ``tfascl-export --formats`` adds to ``assets.extra/`` instead: uint8
        [N, S, S, 3] pixels of an image already cropped and resized, normalised inside.

        Args:
            filepath: the SavedModel directory (an existing SavedModel there is
                replaced), or the ONNX or LiteRT (``.tflite``) file.
            format: ``"tf_saved_model"``, ``"onnx"`` or ``"litert"``.
            verbose: print the path written.
            input_signature: not supported (the signatures are fixed).
            image_size: the training resolution; default the backbone's input size.
            **kwargs: not supported.

        Returns:
            The directory or file written.
        """
        from tfascl import serving  # TensorFlow and Keras only: it knows no model

        formats = ("tf_saved_model", "onnx", "litert")
        if format not in formats or input_signature is not None or kwargs:
            raise ValueError(
                f"{type(self).__name__}.export writes the tfascl serving export only "
                f"(format one of {formats}, no input_signature or other options)"
            )
        mean, std = self._training_normalization("export")
        size = self._resolve_image_size(image_size, "export")
        if format == "tf_saved_model":
            path = serving.export_model(
                self, filepath, image_size=size, mean=mean, std=std, method=self.method_namer(self)
            )
        else:
            path = serving.export_portable(
                self, filepath, format, image_size=size, mean=mean, std=std
            )
        if verbose:
            print(f"Saved the serving {format} export at {path}")
        return path

    # --- Training ---------------------------------------------------------------------

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Backbone features of the online encoder: [B, H, W, 3] → [B, F].

        Given a ``(query_view, key_view)`` pair, as ``fit`` does when it traces the model
        under a strategy, it embeds the first view.
        """
        if isinstance(images, (tuple, list)):
            images = images[0]
        return self.backbone(images, training=training)

    @property
    def online_weights(self) -> list[keras.Variable]:
        """θ_q: what the optimizer trains (subclasses add their heads)."""
        return self.backbone.trainable_weights + self.projector.trainable_weights

    def encode_query(self, images: tf.Tensor, training: bool = True) -> tf.Tensor:
        """q = normalize(projector(backbone(x))): [B, H, W, 3] → [B, D] float32."""
        return l2_normalize(
            self.projector(self.backbone(images, training=training), training=training)
        )

    def unpack(self, data) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:  # noqa: ANN001
        """``(query_view, key_view, labels)`` from what ``fit`` feeds.

        Accepted: ``((query_view, key_view), labels)``, ``(query_view, key_view)``,
        ``(query_view, key_view, labels)``, ``(images, labels)`` or ``images`` (the last
        two need ``views``). The query view is the strongly augmented one; the key view,
        the momentum (target) encoder's, is weak or strong as ``TwoViews.key_augment``.
        Labels serve monitoring only. A model whose backbone was not built is
        built here, in its first step.
        """
        query_view, key_view, labels = self._split_batch(data)
        if not self.built:
            self.build(query_view.shape)
        return query_view, key_view, labels

    def _split_batch(self, data) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:  # noqa: ANN001
        labels = None
        if isinstance(data, (tuple, list)) and len(data) == 1:
            data = data[0]
        if isinstance(data, (tuple, list)):
            first = data[0]
            if isinstance(first, (tuple, list)):
                query_view, key_view = first
                labels = data[1] if len(data) > 1 else None
                return query_view, key_view, labels
            if len(data) >= 2 and len(data[1].shape) == len(first.shape):
                labels = data[2] if len(data) > 2 else None
                return data[0], data[1], labels
            images, labels = first, data[1]
        else:
            images = data
        if self.views is None:
            raise ValueError(
                "fit got single images: give the model views= (e.g. tfascl.data.TwoViews) "
                "or feed ((query_view, key_view), labels) pairs"
            )
        query_view, key_view = self.views(images)
        return query_view, key_view, labels

    def checkpoint(self, **extra: tf.Module) -> tf.train.Checkpoint:
        """A ``tf.train.Checkpoint`` of the whole run state: both encoders, queue and
        pointer, optimizer slots and step (plus ``extra`` trackables).

        The optimizer's variables are created first, so a restore fills them
        instead of being deferred.
        """
        if self.optimizer is None:
            raise ValueError("compile() the model before asking for its checkpoint")
        if not self.optimizer.built:
            self.optimizer.build(self.online_weights)
        return tf.train.Checkpoint(model=self, optimizer=self.optimizer, **extra)

    def replica_function(self, function: Callable) -> Callable:
        """``function`` (a method run on each replica), XLA-compiled once when
        ``replica_jit_compile`` is set; as it is otherwise."""
        if not self.replica_jit_compile:
            return function
        name = function.__name__
        if name not in self._replica_functions:
            self._replica_functions[name] = tf.function(function, jit_compile=True)
        return self._replica_functions[name]

    @property
    def step_function(self) -> Callable:
        """``forward_backward``, XLA-compiled when ``replica_jit_compile`` is set."""
        return self.replica_function(self.forward_backward)

    def forward_backward(self, *args: tf.Tensor) -> tuple:
        """Loss and gradients of one step on one replica; defined by each method."""
        raise NotImplementedError

    def apply_gradients(self, gradients: list[tf.Tensor]) -> None:
        """The optimizer step on the online weights (sums gradients across replicas)."""
        self.optimizer.apply_gradients(zip(gradients, self.online_weights))

    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        """Per-replica share of the loss, then the optimizer's (mixed float16) scaling.

        Gradients are summed over replicas, so each replica minimises loss/R.
        Call inside the tape.
        """
        return self.optimizer.scale_loss(loss / replica_count())

    def update_batch_relabel_monitors(
        self,
        loss: tf.Tensor,
        momentum: tf.Tensor | None,
        targets: tf.Tensor,
        confidence: tf.Tensor,
        labels: tf.Tensor | None,
    ) -> dict[str, tf.Tensor]:
        """``update_monitors`` for in-batch relabelling (BYOL+ASCL, SimCLR+ASCL).

        Args:
            loss: scalar loss.
            momentum: m used this step, or None.
            targets: [b, N] this replica's targets over the global batch, its own rows
                at ``replica_offset(b)``.
            confidence: c [b].
            labels: [b] this replica's labels, or None.
        """
        rows = tf.shape(targets)[0]
        own = tf.one_hot(tf.range(rows) + replica_offset(rows), tf.shape(targets)[1])
        return self.update_monitors(
            loss,
            momentum,
            confidence=confidence,
            positive_weight=tf.reduce_sum(targets * own, axis=1),
            neighbor_targets=targets * (1.0 - own),
            neighbor_labels=None if labels is None else gather_across_replicas(labels),
            labels=labels,
        )

    def update_monitors(
        self,
        loss: tf.Tensor,
        momentum: tf.Tensor | None = None,
        *,
        confidence: tf.Tensor | None = None,
        positive_weight: tf.Tensor | None = None,
        neighbor_targets: tf.Tensor | None = None,
        neighbor_labels: tf.Tensor | None = None,
        labels: tf.Tensor | None = None,
    ) -> dict[str, tf.Tensor]:
        """Updates the step's monitors and returns the results of those that apply.

        Args:
            loss: scalar loss (not scaled for replicas).
            momentum: m used this step (None: the model has no momentum encoder).
            confidence: c [B] of the relabelling, if any.
            positive_weight: target weight of the positive [B], if any.
            neighbor_targets: target mass [B, N] on the neighbours (queue entries
                or other batch items), for purity.
            neighbor_labels: labels [N] of those neighbours (−1: unknown).
            labels: labels [B] of the batch; monitoring only.

        Returns:
            ``{name: value}`` for ``fit``'s logs.
        """
        self.loss_tracker.update_state(loss)
        results = {"loss": self.loss_tracker}
        if momentum is not None:
            self.momentum_tracker.update_state(momentum)
            results["momentum"] = self.momentum_tracker
        if confidence is not None:
            self.confidence_tracker.update_state(confidence)
            results["confidence"] = self.confidence_tracker
        if positive_weight is not None:
            self.positive_tracker.update_state(positive_weight)
            results["positive_weight"] = self.positive_tracker
        if labels is not None and neighbor_targets is not None:
            labels = tf.cast(labels, tf.int32)[:, None]
            neighbor_labels = tf.cast(neighbor_labels, tf.int32)[None, :]
            # −1 marks an unknown label (unwritten queue rows, unlabelled images):
            # it never counts as the same class.
            same_label = tf.cast(
                tf.logical_and(tf.equal(labels, neighbor_labels), neighbor_labels >= 0),
                tf.float32,
            )
            mass = tf.reduce_sum(neighbor_targets)
            # Purity: the share of the target mass on neighbours that falls on the
            # query's class, weighted by that mass (a step that puts none counts nothing).
            purity = tf.math.divide_no_nan(tf.reduce_sum(neighbor_targets * same_label), mass)
            self.purity_tracker.update_state(purity, sample_weight=mass)
            results["purity"] = self.purity_tracker
        return {name: tracker.result() for name, tracker in results.items()}


class MomentumModel(EncoderModel):
    """``EncoderModel`` and its EMA copy (the key/target encoder).

    The momentum encoder starts from the online encoder's weights and follows
    ``θ_k ← m·θ_k + (1 − m)·θ_q`` over the trainable weights only: BN moving
    statistics are its own, as in the reference code.

    Args:
        backbone: any ``keras.Model`` mapping images [B, H, W, 3] to features [B, F].
        projector: ``keras.Model`` mapping [B, F] to [B, D].
        momentum: m₀, the EMA coefficient (0.99 in the ASCL CIFAR recipes).
        momentum_schedule: ``"constant"``, or ``"cosine"`` from m₀ to 1 over
            ``total_steps`` (BYOL).
        total_steps: length of the cosine momentum schedule.
        key_backbone: the momentum backbone, when ``backbone`` cannot be cloned.
        **kwargs: ``EncoderModel`` arguments (views, normalization, replica_jit_compile).
    """

    def __init__(
        self,
        backbone: keras.Model,
        projector: keras.Model,
        *,
        momentum: float = 0.99,
        momentum_schedule: str = "constant",
        total_steps: int | None = None,
        key_backbone: keras.Model | None = None,
        **kwargs,
    ):
        super().__init__(backbone, projector, **kwargs)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if momentum_schedule not in MOMENTUM_SCHEDULES:
            raise ValueError(
                f"momentum_schedule must be one of {MOMENTUM_SCHEDULES}, got {momentum_schedule!r}"
            )
        if momentum_schedule == "cosine" and not total_steps:
            raise ValueError("momentum_schedule='cosine' needs total_steps")
        # Serialised only when given: otherwise from_config clones the backbone again.
        self.key_backbone_given = key_backbone is not None
        if key_backbone is None:
            key_backbone = clone_encoder(backbone)
        else:
            key_backbone.set_weights(backbone.get_weights())
        self.key_backbone = key_backbone
        self.key_projector = clone_encoder(projector)
        self.base_momentum = momentum
        self.momentum_schedule = momentum_schedule
        self.total_steps = total_steps
        self.momentum_tracker = keras.metrics.Mean(name="momentum")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.momentum_tracker, *super().metrics[1:]]

    def build_encoders(self, zeros: tf.Tensor) -> None:
        """Builds both backbones; the key backbone then takes the online weights."""
        copy_weights = not (self.backbone.built and self.key_backbone.built)
        for encoder in (self.backbone, self.key_backbone):
            if not encoder.built:
                encoder(zeros, training=False)
        if copy_weights:
            self.key_backbone.set_weights(self.backbone.get_weights())

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "key_backbone": _serialize(self.key_backbone) if self.key_backbone_given else None,
            "momentum": self.base_momentum,
            "momentum_schedule": self.momentum_schedule,
            "total_steps": self.total_steps,
        }

    @property
    def momentum_pairs(self) -> tuple[list[keras.Variable], list[keras.Variable]]:
        """``(θ_k, θ_q)``: the EMA's target and source variables, in matching order."""
        target = self.key_backbone.trainable_weights + self.key_projector.trainable_weights
        source = self.backbone.trainable_weights + self.projector.trainable_weights
        return target, source

    def current_momentum(self) -> tf.Tensor:
        """m at the optimizer's current step."""
        if self.momentum_schedule == "cosine":
            return cosine_momentum(self.optimizer.iterations, self.total_steps, self.base_momentum)
        return tf.constant(self.base_momentum, tf.float32)

    def update_momentum_encoder(self) -> tf.Tensor:
        """Applies the EMA step and returns the m used."""
        momentum = self.current_momentum()
        ema_update(*self.momentum_pairs, momentum)
        return momentum

    def encode_key(self, images: tf.Tensor) -> tf.Tensor:
        """k of the momentum encoder, BN in training mode as the reference: [B, D], no gradient."""
        features = self.key_backbone(images, training=True)
        return tf.stop_gradient(l2_normalize(self.key_projector(features, training=True)))
