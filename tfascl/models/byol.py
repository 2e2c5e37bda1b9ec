"""BYOL (Grill et al., 2020) and BYOL+ASCL: regression onto the momentum encoder.

BYOL+ASCL replaces BYOL's one-to-one target with ASCL's soft targets computed
inside the batch (there is no queue): each prediction is pulled towards its own
key and, weighted by the confidence c, towards the keys of its likely neighbours.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfascl import losses
from tfascl.models.base import MomentumModel, l2_normalize
from tfascl.models.heads import mlp_head


class BYOL(MomentumModel):
    """BYOL with optional in-batch ASCL relabelling.

    Args:
        backbone: images [B, H, W, 3] → features [B, F].
        projector: features [B, F] → [B, D].
        predictor: [B, D] → [B, D]; defaults to Linear(D, 512) – BN – ReLU –
            Linear(512, D), the ASCL code's BYOL predictor.
        relabel: use ASCL's in-batch soft targets (BYOL+ASCL).
        target_temperature: τ′ of the in-batch neighbour distribution.
        num_neighbors: K.
        symmetric: average the loss over both view orders (BYOL's loss); off,
            the online network sees the strong view and the target the weak one.
        **kwargs: ``MomentumModel`` arguments (momentum, momentum_schedule, ...).
    """

    def __init__(
        self,
        backbone: keras.Model,
        projector: keras.Model,
        predictor: keras.Model | None = None,
        *,
        relabel: bool = False,
        target_temperature: float = 0.05,
        num_neighbors: int = 1,
        symmetric: bool = True,
        norm: str = "split",
        num_splits: int = 8,
        **kwargs,
    ):
        super().__init__(backbone, projector, **kwargs)
        if target_temperature <= 0:
            raise ValueError(f"target_temperature must be > 0, got {target_temperature}")
        if relabel and num_neighbors < 1:
            raise ValueError(f"num_neighbors must be >= 1 with relabelling, got {num_neighbors}")
        dim = projector.output_shape[-1]
        self.predictor = predictor or mlp_head(
            dim, 512, dim, batch_norm=True, norm=norm, num_splits=num_splits, name="predictor"
        )
        self.relabel = relabel
        self.target_temperature = target_temperature
        self.num_neighbors = num_neighbors if relabel else 0
        self.symmetric = symmetric

    @property
    def online_weights(self) -> list[keras.Variable]:
        return super().online_weights + self.predictor.trainable_weights

    def predict_key(self, images: tf.Tensor) -> tf.Tensor:
        """The online network's normalised prediction [B, D] of the target's key."""
        projection = self.projector(self.backbone(images, training=True), training=True)
        return l2_normalize(self.predictor(projection, training=True))

    def forward_backward(
        self, strong: tf.Tensor, weak: tf.Tensor
    ) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        """Loss and gradients of one step on one replica, and the key of the weak view.

        Args:
            strong: [B, H, W, 3] strongly augmented view.
            weak: [B, H, W, 3] weakly augmented view.

        Returns:
            ``(loss, gradients, key)`` with key [B, D] of the target network.
        """
        pairs = [(strong, self.encode_key(weak))]  # (online view, key [B, D])
        if self.symmetric:
            pairs.append((weak, self.encode_key(strong)))

        with tf.GradientTape() as tape:
            loss = tf.add_n(
                [
                    losses.byol_ascl_loss(
                        self.predict_key(view), key, self.target_temperature, self.num_neighbors
                    )
                    for view, key in pairs
                ]
            ) / len(pairs)
            scaled_loss = self.scale_loss(loss)
        return loss, tape.gradient(scaled_loss, self.online_weights), pairs[0][1]

    def train_step(self, data) -> dict[str, tf.Tensor]:  # noqa: ANN001
        strong, weak, labels = self.unpack(data)
        momentum = self.update_momentum_encoder()
        loss, gradients, key = self.step_function(strong, weak)
        self.apply_gradients(gradients)

        if not self.relabel:
            return self.update_monitors(loss, momentum)
        targets, confidence = losses.batch_relabel_targets(
            key, self.target_temperature, self.num_neighbors
        )
        return self.update_monitors(
            loss,
            momentum,
            confidence=confidence,
            positive_weight=tf.linalg.diag_part(targets),
            neighbor_targets=targets * (1.0 - tf.eye(tf.shape(targets)[0])),
            neighbor_labels=labels,
            labels=labels,
        )
