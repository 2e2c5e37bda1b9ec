"""BYOL (Grill et al., 2020) and BYOL+ASCL: regression onto the momentum encoder.

BYOL+ASCL replaces BYOL's one-to-one target with ASCL's soft targets computed
inside the batch (there is no queue): each prediction is pulled towards its own
key and, weighted by the confidence c, towards the keys of its likely neighbours.
Under a multi-replica strategy the neighbours come from the global batch (the keys
of every replica), as on one device.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfascl import losses
from tfascl.distribute import gather_across_replicas, replica_offset
from tfascl.models.base import MomentumModel, l2_normalize
from tfascl.models.heads import mlp_head

# BYOL's targets: one-to-one, or ASCL's in-batch soft targets (losses.batch_relabel_targets).
BYOL_RELABELS = ("none", "ascl")


@keras.saving.register_keras_serializable(package="tfascl")
class BYOL(MomentumModel):
    """BYOL with optional in-batch ASCL relabelling.

    Args:
        backbone: images [B, H, W, 3] → features [B, F].
        projector: features [B, F] → [B, D].
        predictor: [B, D] → [B, D]; defaults to Linear(D, 512) – BN – ReLU –
            Linear(512, D), the ASCL code's BYOL predictor. Its BN normalises the
            whole batch (``BatchNorm1d(512)`` in the ASCL code's model.py) even when
            the encoders use split BN: synchronised BN, i.e. over the global batch
            under a multi-replica strategy.
        relabel: ``"none"`` (BYOL), or ``"ascl"``: ASCL's in-batch soft targets
            (BYOL+ASCL). A relabel mode, as every model's ``relabel``.
        target_temperature: τ′ of the in-batch neighbour distribution.
        num_neighbors: K.
        symmetric: average the loss over both view orders (BYOL's loss sums
            them: this is half of it); off, the online network sees the query view
            and the target the key view.
        norm: the encoders' normalisation (``norm_factory``); accepted for the
            registry, the default predictor always normalises the global batch.
        num_splits: accepted with ``norm`` for the registry; the predictor never splits.
        **kwargs: ``MomentumModel`` arguments (momentum, momentum_schedule, ...).
    """

    def __init__(
        self,
        backbone: keras.Model,
        projector: keras.Model,
        predictor: keras.Model | None = None,
        *,
        relabel: str = "none",
        target_temperature: float = 0.05,
        num_neighbors: int = 1,
        symmetric: bool = True,
        norm: str = "split",
        num_splits: int = 8,
        **kwargs,
    ):
        super().__init__(backbone, projector, **kwargs)
        if relabel not in BYOL_RELABELS:
            raise ValueError(f"relabel must be one of {BYOL_RELABELS}, got {relabel!r}")
        if target_temperature <= 0:
            raise ValueError(f"target_temperature must be > 0, got {target_temperature}")
        if relabel != "none" and num_neighbors < 1:
            raise ValueError(f"num_neighbors must be >= 1 with relabelling, got {num_neighbors}")
        dim = projector.output_shape[-1]
        # The ASCL code's BatchNorm1d sees the whole batch of its one GPU: synchronised
        # BN is that on one device and its global-batch equivalent across replicas.
        self.predictor = predictor or mlp_head(
            dim, 512, dim, batch_norm=True, norm="sync", name="predictor"
        )
        self.relabel = relabel
        self.target_temperature = target_temperature
        self.num_neighbors = num_neighbors if relabel != "none" else 0
        self.symmetric = symmetric
        self.norm, self.num_splits = norm, num_splits

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "predictor": keras.saving.serialize_keras_object(self.predictor),
            **self.keyword_config(BYOL),
        }

    @classmethod
    def from_config(cls, config: dict) -> BYOL:
        """The model of ``get_config``'s ``config``; a ``.keras`` file saved before 2026-12-04,
        whose ``relabel`` was a bool (True: BYOL+ASCL), loads as the same model."""
        relabel = config.get("relabel")
        if isinstance(relabel, bool):
            config = {**config, "relabel": "ascl" if relabel else "none"}
        return super().from_config(config)

    @property
    def online_weights(self) -> list[keras.Variable]:
        return super().online_weights + self.predictor.trainable_weights

    def predict_key(self, images: tf.Tensor) -> tf.Tensor:
        """The online network's normalised prediction [B, D] of the target's key."""
        projection = self.projector(self.backbone(images, training=True), training=True)
        return l2_normalize(self.predictor(projection, training=True))

    def encode_keys(self, query_view: tf.Tensor, key_view: tf.Tensor) -> list[tf.Tensor]:
        """Target-network keys [b, D]: of the key view, then (symmetric) of the query view."""
        keys = [self.encode_key(key_view)]
        if self.symmetric:
            keys.append(self.encode_key(query_view))
        return keys

    def forward_backward(
        self,
        query_view: tf.Tensor,
        key_view: tf.Tensor,
        keys: list[tf.Tensor],
        banks: list[tf.Tensor | None],
        offset: tf.Tensor | int,
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Loss and gradients of one step on one replica.

        Args:
            query_view: [b, H, W, 3] the online network's view (the pipeline's strong one).
            key_view: [b, H, W, 3] the target network's view (weak, or strong with
                ``key_augment="strong"``).
            keys: the target network's keys [b, D] of the key (and query) view.
            banks: for each key, the global batch's keys [N, D] to relabel against
                (None: this replica's keys).
            offset: the row of this replica's first key in a bank.

        Returns:
            ``(loss, gradients)``.
        """
        views = (query_view, key_view)[: len(keys)]  # the online view paired with each key
        with tf.GradientTape() as tape:
            loss = tf.add_n(
                [
                    losses.byol_ascl_loss(
                        self.predict_key(view),
                        key,
                        self.target_temperature,
                        self.num_neighbors,
                        bank,
                        offset,
                    )
                    for view, key, bank in zip(views, keys, banks)
                ]
            ) / len(keys)
            scaled_loss = self.scale_loss(loss)
        return loss, tape.gradient(scaled_loss, self.online_weights)

    def train_step(self, data) -> dict[str, tf.Tensor]:  # noqa: ANN001
        query_view, key_view, labels = self.unpack(data)
        momentum = self.update_momentum_encoder()
        keys = self.replica_function(self.encode_keys)(query_view, key_view)  # [b, D] each
        if self.relabel == "none":
            loss, gradients = self.step_function(query_view, key_view, keys, [None] * len(keys), 0)
            self.apply_gradients(gradients)
            return self.update_monitors(loss, momentum)

        # Neighbours come from the whole global batch: every replica's keys, in order.
        banks = [gather_across_replicas(key) for key in keys]  # [N, D] each
        offset = replica_offset(tf.shape(keys[0])[0])
        loss, gradients = self.step_function(query_view, key_view, keys, banks, offset)
        self.apply_gradients(gradients)

        targets, confidence = losses.batch_relabel_targets(
            keys[0], self.target_temperature, self.num_neighbors, banks[0], offset
        )  # [b, N]
        return self.update_batch_relabel_monitors(loss, momentum, targets, confidence, labels)
