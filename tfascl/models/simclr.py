"""In-batch contrastive learning without a momentum encoder: SimCLR, DCL, SimCLR+ASCL, NNCLR.

==========  ===========================================  ==================================
method      positive of view a's embedding, row i        negatives (N: global batch)
==========  ===========================================  ==================================
simclr      view b's z_i (Chen et al. 2020)              the 2N−2 other embeddings
dcl         view b's z_i (Chuang et al. 2020)            the 2N−2, debiased with prior τ⁺
simclr      view b's z_i, plus ASCL's soft targets on    the 2N−2 other embeddings
+ascl       view b's other rows (``--relabel=ascl``)
nnclr       view b's prediction p_i, from the nearest    the N−1 other predictions
            neighbour NN(z_i) in the support queue
==========  ===========================================  ==================================

Under a multi-replica strategy the embeddings of every replica are gathered (a gather
whose gradient flows back to the replica that computed them), so each replica's loss
sees the global batch's negatives and the summed gradients equal one device's on the
global batch.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfascl import losses
from tfascl.distribute import gather_across_replicas, replica_count, replica_offset
from tfascl.models.base import EncoderModel, l2_normalize
from tfascl.models.heads import mlp_head
from tfascl.models.queue import KeyQueue

SIMCLR_OBJECTIVES = ("nt_xent", "debiased")
# In-batch relabelling: ASCL's soft targets on the other view's rows (losses.batch_relabel_targets).
SIMCLR_RELABELS = ("none", "ascl")


def gather_with_offset(values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(bank [N, ...], offset)``: every replica's ``values`` [b, ...] in replica order
    (gradient flows back to each replica's rows) and the row of this replica's first."""
    return gather_across_replicas(values), replica_offset(tf.shape(values)[0])


@keras.saving.register_keras_serializable(package="tfascl")
class SimCLR(EncoderModel):
    """SimCLR's NT-Xent, DCL's debiased form, or SimCLR with ASCL's in-batch soft targets.

    Both views go through the one encoder (backbone + projector); the step's loss is the
    mean over the 2N anchors (``losses.nt_xent_loss``).

    Args:
        backbone: images [B, H, W, 3] → features [B, F].
        projector: features [B, F] → [B, D].
        objective: ``"nt_xent"`` (SimCLR) or ``"debiased"`` (DCL).
        temperature: τ.
        debias_prior: τ⁺ of DCL, the probability that a negative shares the anchor's
            class (its ``"easy"`` estimator); used with ``objective="debiased"``.
        relabel: ``"none"``, or ``"ascl"``: the targets of anchor ``a_i`` put 1 on
            ``b_i`` and ``min(K·c·p, 1)`` on the other ``b_j`` (``p`` the softmax of
            ``b_i·b_jᵀ/τ′``, ``c`` its confidence), rows normalised; the same with the
            views swapped. The keys are the other view's embeddings without gradient.
        target_temperature: τ′ of the in-batch neighbour distribution.
        num_neighbors: K.
        **kwargs: ``EncoderModel`` arguments (views, normalization, ...).
    """

    def __init__(
        self,
        backbone: keras.Model,
        projector: keras.Model,
        *,
        objective: str = "nt_xent",
        temperature: float = 0.5,
        debias_prior: float = 0.1,
        relabel: str = "none",
        target_temperature: float = 0.05,
        num_neighbors: int = 1,
        **kwargs,
    ):
        super().__init__(backbone, projector, **kwargs)
        if objective not in SIMCLR_OBJECTIVES:
            raise ValueError(f"objective must be one of {SIMCLR_OBJECTIVES}, got {objective!r}")
        if relabel not in SIMCLR_RELABELS:
            raise ValueError(f"relabel must be one of {SIMCLR_RELABELS}, got {relabel!r}")
        if objective == "debiased" and relabel != "none":
            raise ValueError("relabel applies to NT-Xent's targets; DCL's debiased loss has none")
        temperatures = {"temperature": temperature, "target_temperature": target_temperature}
        for name, value in temperatures.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not 0.0 <= debias_prior < 1.0:
            raise ValueError(f"debias_prior must be in [0, 1), got {debias_prior}")
        if relabel != "none" and num_neighbors < 1:
            raise ValueError(f"num_neighbors must be >= 1 with relabelling, got {num_neighbors}")
        self.objective, self.relabel = objective, relabel
        self.temperature, self.debias_prior = temperature, debias_prior
        self.target_temperature, self.num_neighbors = target_temperature, num_neighbors

    def get_config(self) -> dict:
        return {**super().get_config(), **self.keyword_config(SimCLR)}

    @property
    def step_function(self):  # noqa: ANN201
        # The differentiable gather of the embeddings runs inside the step: under several
        # replicas it cannot be XLA-compiled with it (a collective spanning devices).
        return self.forward_backward if replica_count() > 1 else super().step_function

    def relabel_targets(
        self, key: tf.Tensor, bank: tf.Tensor, offset: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """ASCL's in-batch ``(targets [b, N], confidence [b])`` of keys [b, D] in a bank [N, D]."""
        return losses.batch_relabel_targets(
            tf.stop_gradient(key),
            self.target_temperature,
            self.num_neighbors,
            tf.stop_gradient(bank),
            offset,
        )

    def forward_backward(self, view_a: tf.Tensor, view_b: tf.Tensor) -> tuple:
        """Loss and gradients of one step on one replica.

        Args:
            view_a: [b, H, W, 3] the first augmented view (the pipeline's "strong").
            view_b: [b, H, W, 3] the second view.

        Returns:
            ``(loss, gradients, targets, confidence)``: targets [b, N] of view a's anchors
            and c [b] with relabelling, else None.
        """
        with tf.GradientTape() as tape:
            z_a, z_b = self.encode_query(view_a), self.encode_query(view_b)  # [b, D] each
            bank_a, offset = gather_with_offset(z_a)  # [N, D]
            bank_b, _ = gather_with_offset(z_b)
            targets = confidence = None
            pair = None
            if self.relabel != "none":
                # Anchor a_i's targets come from its positive b_i's neighbours among bank_b.
                targets, confidence = self.relabel_targets(z_b, bank_b, offset)  # [b, N]
                pair = (targets, self.relabel_targets(z_a, bank_a, offset)[0])
            loss = losses.nt_xent_loss(
                z_a,
                z_b,
                self.temperature,
                bank_a=bank_a,
                bank_b=bank_b,
                offset=offset,
                debias_prior=self.debias_prior if self.objective == "debiased" else 0.0,
                targets=pair,
            )
            scaled_loss = self.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.online_weights)
        return loss, gradients, targets, confidence

    def train_step(self, data) -> dict[str, tf.Tensor]:  # noqa: ANN001
        view_a, view_b, labels = self.unpack(data)
        loss, gradients, targets, confidence = self.step_function(view_a, view_b)
        self.apply_gradients(gradients)
        if targets is None:
            return self.update_monitors(loss)
        return self.update_batch_relabel_monitors(loss, None, targets, confidence, labels)


@keras.saving.register_keras_serializable(package="tfascl")
class NNCLR(EncoderModel):
    """NNCLR (Dwibedi et al., ICCV 2021): the nearest neighbour in a support set as positive.

    Each step: projections ``z`` [b, D] (L2-normalised) and predictions ``p`` [b, D] of
    both views; ``NN(z_a)`` is the support row most similar to ``z_a``; the loss is the
    cross-entropy of ``NN(z_a)·p_bᵀ/τ`` with the positive on the diagonal, averaged with
    the views swapped (``losses.nnclr_loss``). Then view a's ``z`` enter the support set,
    a FIFO ``KeyQueue`` (the queue of the MoCo family) of size ``queue_size``. No
    gradient reaches the projector through ``z``: only through the predictions.

    Args:
        backbone: images [B, H, W, 3] → features [B, F].
        projector: features [B, F] → [B, D].
        predictor: [B, D] → [B, D]; default Linear(D, ``predictor_hidden``) – BN – ReLU –
            Linear(·, D), the NNCLR paper's (4096 hidden units).
        temperature: τ.
        queue_size: the support set's size (the paper's 98,304 on ImageNet).
        predictor_hidden: hidden units of the default predictor.
        batch_size: global batch, if known, to check ``queue_size`` now.
        norm: normalisation of the default predictor's BN (``norm_factory``).
        num_splits: groups of split BN, with ``norm="split"``.
        **kwargs: ``EncoderModel`` arguments.
    """

    def __init__(
        self,
        backbone: keras.Model,
        projector: keras.Model,
        predictor: keras.Model | None = None,
        *,
        temperature: float = 0.1,
        queue_size: int = 98304,
        predictor_hidden: int = 4096,
        batch_size: int | None = None,
        norm: str = "split",
        num_splits: int = 8,
        **kwargs,
    ):
        super().__init__(backbone, projector, **kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        dim = projector.output_shape[-1]
        self.predictor = predictor or mlp_head(
            dim, predictor_hidden, dim, batch_norm=True, norm=norm, num_splits=num_splits,
            name="predictor",
        )  # fmt: skip
        self.temperature, self.predictor_hidden = temperature, predictor_hidden
        self.norm, self.num_splits, self.batch_size = norm, num_splits, batch_size
        self.queue = KeyQueue(queue_size, dim, batch_size, name="queue")
        self.nn_accuracy_tracker = keras.metrics.Mean(name="nn_accuracy")

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "predictor": keras.saving.serialize_keras_object(self.predictor),
            **self.keyword_config(NNCLR),
        }

    @property
    def queue_size(self) -> int:
        """The support set's size."""
        return self.queue.size

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [*super().metrics, self.nn_accuracy_tracker]

    @property
    def online_weights(self) -> list[keras.Variable]:
        return super().online_weights + self.predictor.trainable_weights

    @property
    def step_function(self):  # noqa: ANN201
        # As SimCLR's: the predictions' gather is inside the step.
        return self.forward_backward if replica_count() > 1 else super().step_function

    def project_and_predict(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(z, p)``: the normalised projection and prediction [b, D] of ``images``."""
        projection = self.projector(self.backbone(images, training=True), training=True)
        return l2_normalize(projection), l2_normalize(self.predictor(projection, training=True))

    def forward_backward(self, view_a: tf.Tensor, view_b: tf.Tensor, support: tf.Tensor) -> tuple:
        """Loss and gradients of one step on one replica.

        Args:
            view_a, view_b: [b, H, W, 3] the two augmented views.
            support: [M, D] the support set before this step's projections.

        Returns:
            ``(loss, gradients, z_a, neighbour_rows)``: z_a [b, D] to enqueue and the
            support rows [b] of view a's nearest neighbours.
        """
        with tf.GradientTape() as tape:
            z_a, p_a = self.project_and_predict(view_a)  # [b, D] each
            z_b, p_b = self.project_and_predict(view_b)
            nn_a, rows_a = losses.nearest_neighbors(z_a, support)  # [b, D], [b]
            nn_b, _ = losses.nearest_neighbors(z_b, support)
            bank_a, offset = gather_with_offset(p_a)  # [N, D], with gradient
            bank_b, _ = gather_with_offset(p_b)
            loss = 0.5 * (
                losses.nnclr_loss(nn_a, p_b, self.temperature, bank=bank_b, offset=offset)
                + losses.nnclr_loss(nn_b, p_a, self.temperature, bank=bank_a, offset=offset)
            )
            scaled_loss = self.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.online_weights)
        return loss, gradients, tf.stop_gradient(z_a), rows_a

    def train_step(self, data) -> dict[str, tf.Tensor]:  # noqa: ANN001
        view_a, view_b, labels = self.unpack(data)
        support = tf.identity(self.queue.keys.value)  # [M, D], before this step's z
        support_labels = tf.identity(self.queue.labels.value)  # [M]
        loss, gradients, z_a, rows = self.step_function(view_a, view_b, support)
        self.apply_gradients(gradients)
        self.queue.enqueue(z_a, labels)
        results = self.update_monitors(loss)
        if labels is not None:
            # NNCLR's diagnostic: how often the neighbour has the query's label.
            same = tf.equal(tf.gather(support_labels, rows), tf.cast(labels, tf.int32))
            self.nn_accuracy_tracker.update_state(tf.cast(same, tf.float32))
            results["nn_accuracy"] = self.nn_accuracy_tracker.result()
        return results
