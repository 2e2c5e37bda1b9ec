"""Mean Shift for self-supervised learning (MSF; Koohpayegani, Tejankar and Pirsiavash,
ICCV 2021): BYOL's regression onto a target, generalised to the target's neighbourhood.

The momentum (target) encoder embeds the key view; that target enters a memory bank
first, and the online prediction of the query view is pulled towards the k bank
entries nearest the target (the target itself among them), as in the official code
(UMBCvision/MSF ``train_msf.py``, ``MeanShift.forward``). With k = 1 this is BYOL's
loss in one direction.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfascl import losses
from tfascl.models.base import MomentumModel, l2_normalize
from tfascl.models.contrastive import ShuffleKeys
from tfascl.models.heads import mlp_head
from tfascl.models.queue import KeyQueue


@keras.saving.register_keras_serializable(package="tfascl")
class MeanShift(ShuffleKeys, MomentumModel):
    """MSF: a BYOL-style online/target pair with a memory bank of targets.

    Args:
        backbone: images [B, H, W, 3] → features [B, F].
        projector: features [B, F] → [B, D] (MSF: Linear(F, 2F) – BN – ReLU – Linear(·, F/4)).
        predictor: [B, D] → [B, D]; default Linear(D, ``predictor_hidden``) – BN – ReLU –
            Linear(·, D), MSF's ``get_mlp(proj_dim, hidden_dim, proj_dim)``.
        queue_size: the memory bank's size (MSF: 128,000 on ImageNet).
        num_neighbors: k, the bank entries the prediction is pulled towards (MSF: 5).
        predictor_hidden: hidden units of the default predictor (MSF: 2F).
        shuffle_keys: shuffle BN for the target encoder (MSF's ``get_shuffle_ids``).
        batch_size: global batch, if known, to check ``queue_size`` now.
        norm: the default predictor's normalisation (``norm_factory``).
        num_splits: groups of split BN, with ``norm="split"``.
        **kwargs: ``MomentumModel`` arguments (momentum, ...).
    """

    def __init__(
        self,
        backbone: keras.Model,
        projector: keras.Model,
        predictor: keras.Model | None = None,
        *,
        queue_size: int = 128000,
        num_neighbors: int = 5,
        predictor_hidden: int = 1024,
        shuffle_keys: bool = True,
        batch_size: int | None = None,
        norm: str = "split",
        num_splits: int = 8,
        **kwargs,
    ):
        super().__init__(backbone, projector, **kwargs)
        if not 1 <= num_neighbors <= queue_size:
            raise ValueError(f"num_neighbors must be in [1, queue_size], got {num_neighbors}")
        dim = projector.output_shape[-1]
        self.predictor = predictor or mlp_head(
            dim, predictor_hidden, dim, batch_norm=True, norm=norm, num_splits=num_splits,
            name="predictor",
        )  # fmt: skip
        self.num_neighbors, self.predictor_hidden = num_neighbors, predictor_hidden
        self.shuffle_keys, self.batch_size = shuffle_keys, batch_size
        self.norm, self.num_splits = norm, num_splits
        self.queue = KeyQueue(queue_size, dim, batch_size, name="queue")

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "predictor": keras.saving.serialize_keras_object(self.predictor),
            **self.keyword_config(MeanShift),
        }

    @property
    def queue_size(self) -> int:
        """The memory bank's size."""
        return self.queue.size

    @property
    def online_weights(self) -> list[keras.Variable]:
        return super().online_weights + self.predictor.trainable_weights

    def predict_target(self, images: tf.Tensor) -> tf.Tensor:
        """The online network's normalised prediction [b, D] (MSF's ``query``)."""
        projection = self.projector(self.backbone(images, training=True), training=True)
        return l2_normalize(self.predictor(projection, training=True))

    def forward_backward(
        self, query_view: tf.Tensor, target: tf.Tensor, bank: tf.Tensor, rows: tf.Tensor
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Loss and gradients of one step on one replica.

        Args:
            query_view: [b, H, W, 3] the online network's view (strongly augmented).
            target: [b, D] the target encoder's embedding of the key view.
            bank: [M, D] the memory bank, this step's targets already in it.
            rows: [b, k] the bank rows nearest each target (``losses.top_k_neighbors``).
        """
        with tf.GradientTape() as tape:
            query = self.predict_target(query_view)  # [b, D]
            loss = losses.mean_shift_loss(query, target, bank, self.num_neighbors, rows=rows)
            scaled_loss = self.scale_loss(loss)
        return loss, tape.gradient(scaled_loss, self.online_weights)

    def train_step(self, data) -> dict[str, tf.Tensor]:  # noqa: ANN001
        query_view, key_view, labels = self.unpack(data)
        momentum = self.update_momentum_encoder()
        target = self.encode_key(key_view)  # [b, D], shuffle BN; outside XLA across replicas
        # The official order: the targets enter the bank before the loss reads it.
        self.queue.enqueue(target, labels)
        bank = tf.identity(self.queue.keys.value)  # [M, D]
        # The k nearest bank rows, found once: for the loss and for the purity.
        rows = losses.top_k_neighbors(target, bank, self.num_neighbors)  # [b, k]
        loss, gradients = self.step_function(query_view, target, bank, rows)
        self.apply_gradients(gradients)
        # Purity: the share of the k neighbours that have the query's label (MSF's log).
        k = tf.shape(rows)[1]
        neighbor_targets = tf.reduce_sum(tf.one_hot(rows, tf.shape(bank)[0]), axis=1)
        return self.update_monitors(
            loss,
            momentum,
            neighbor_targets=neighbor_targets / tf.cast(k, tf.float32),
            neighbor_labels=tf.identity(self.queue.labels.value),
            labels=labels,
        )
