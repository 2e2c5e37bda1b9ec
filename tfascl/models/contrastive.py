"""The queue family: MoCo v2, ASCL, AHCL, hard relabelling, SCE, ReSSL, Co2 and MoCo+DCL.

One model, one ``train_step``; the methods differ only in the targets that the
momentum encoder's key of the key view sets over ``[positive, queue]``:

=========  ============================================  ============
method     targets                                       loss
=========  ============================================  ============
moco       one-hot on the positive                       InfoNCE
ascl       1 and ``min(K·c·p, 1)``, normalised           soft CE
ahcl       1 and ``c`` on the top-K, normalised          soft CE
hard       1 and 1 on the top-K, normalised              soft CE
sce        ``λ·onehot + (1−λ)·softmax(k·queue/τ_m)``     soft CE
ressl      ``softmax(k·queue/τ_t)`` (queue only)         relation CE
co2        as ``--relabel`` (one-hot by default)         soft CE + α·consistency
moco_dcl   one-hot on the positive                       debiased InfoNCE (τ⁺)
=========  ============================================  ============

Co2's relabelling is a plug-in: ``relabel`` applies to the contrastive and Co2
objectives alike (Co2+ASCL).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from tfascl import losses
from tfascl.distribute import gather_across_replicas, replica_count, replica_offset
from tfascl.models.base import MomentumModel
from tfascl.models.queue import KeyQueue

OBJECTIVES = ("contrastive", "sce", "ressl", "co2", "debiased")
# Relabel modes whose targets sit on the K nearest queue keys only: K <= queue_size.
TOP_K_RELABELS = ("ahcl", "hard")
# First word of the stateless seed of the key permutations (the second is the step).
SHUFFLE_SEED = 20190913


def shuffled_encode(
    encode: Callable[[tf.Tensor], tf.Tensor], images: tf.Tensor, permutation: tf.Tensor
) -> tf.Tensor:
    """Keys of ``images`` computed on a shuffled global batch (MoCo's shuffle BN).

    TensorFlow's form of MoCo's ``_batch_shuffle_ddp``/``_batch_unshuffle_ddp``: the
    images of all R replicas are gathered in replica order ([N, ...], N = R·b), replica r
    encodes rows ``permutation[r·b:(r+1)·b]`` of them (so its BN statistics come from
    images of every replica), the keys are gathered again and each replica takes back
    the keys of its own images. With one replica it is the single-GPU shuffle of the MoCo
    CIFAR demo: the batch is encoded in the order ``permutation`` and unshuffled.

    Args:
        encode: images [b, H, W, 3] → keys [b, D] on this replica (BN in training mode).
        images: [b, H, W, 3] this replica's images.
        permutation: [N] int32, the same on every replica.

    Returns:
        [b, D] the keys of ``images``, in their order.
    """
    rows = tf.shape(images)[0]
    offset = replica_offset(rows)
    gathered = gather_across_replicas(images)  # [N, H, W, 3]
    mine = permutation[offset : offset + rows]
    keys = gather_across_replicas(encode(tf.gather(gathered, mine)))  # [N, D], shuffled order
    # keys[j] belongs to image permutation[j]; image i's key sits at inverse[i].
    inverse = tf.math.invert_permutation(permutation)
    return tf.gather(keys, inverse[offset : offset + rows])


class ShuffleKeys:
    """MoCo's shuffle BN for a ``MomentumModel`` with a ``shuffle_keys`` attribute: the key
    encoder normalises a random regrouping of the (global) batch, so a key cannot find
    its query through shared BN statistics. Used by ``MomentumContrast`` and
    ``meanshift.MeanShift`` (whose official code shuffles its targets the same way)."""

    shuffle_keys: bool
    optimizer: keras.optimizers.Optimizer | None

    def key_permutation(self, size: tf.Tensor, salt: int = 0) -> tf.Tensor:
        """The shuffle-BN permutation [size] of this step: identical on every replica.

        Args:
            size: N, the global batch.
            salt: tells apart the permutations of one step (the symmetric loss's
                second view).
        """
        step = tf.constant(0, tf.int64)
        if self.optimizer is not None:
            step = tf.cast(self.optimizer.iterations, tf.int64)
        seed = tf.stack([tf.constant(SHUFFLE_SEED + salt, tf.int64), step])
        return tf.argsort(tf.random.stateless_uniform(tf.reshape(size, [1]), seed))

    def encode_key(self, images: tf.Tensor, salt: int = 0) -> tf.Tensor:
        """k [b, D] of the momentum encoder, through shuffle BN when ``shuffle_keys``."""
        if not self.shuffle_keys:
            return super().encode_key(images)  # type: ignore[misc]
        # BN statistics of a random regrouping of the (global) batch: keys cannot
        # find their query through shared BN statistics.
        size = tf.shape(images)[0] * replica_count()
        encode = super().encode_key  # type: ignore[misc]
        if replica_count() > 1:
            # The gathers stay outside XLA; the key encoder itself may be compiled.
            encode = self.replica_function(self.unshuffled_key)
        return shuffled_encode(encode, images, self.key_permutation(size, salt))

    def unshuffled_key(self, images: tf.Tensor) -> tf.Tensor:
        """``MomentumModel.encode_key``: the key encoder on the images as given."""
        return super().encode_key(images)  # type: ignore[misc]


@keras.saving.register_keras_serializable(package="tfascl")
class MomentumContrast(ShuffleKeys, MomentumModel):
    """Queue-based contrastive learning with soft targets (ASCL and its baselines).

    The query encoder sees the query view (strongly augmented), the momentum encoder the
    key view: weakly augmented (crop, flip: the ASCL code), or as strongly as the query
    view with ``TwoViews(key_augment="strong")`` (MoCo v2's aug+).
    Each step: EMA update of the key encoder, keys of the key view, targets
    from the keys and the queue (before this step's keys enter it), loss of the
    queries, optimizer step, then the keys are enqueued.

    Args:
        backbone: images [B, H, W, 3] → features [B, F].
        projector: features [B, F] → [B, D] (e.g. ``heads.mlp_head(F, 2048, 128)``).
        objective: ``"contrastive"`` (with ``relabel``), ``"sce"``, ``"ressl"``, ``"co2"``
            (the contrastive loss plus α times Co2's consistency) or ``"debiased"``
            (DCL's debiased InfoNCE over the queue).
        relabel: ``"none"`` (MoCo v2), ``"ascl"``, ``"ahcl"`` or ``"hard"``; used by the
            contrastive and the Co2 objectives (refused with the debiased one).
        queue_size: M.
        temperature: τ of the query logits (τ_s of ReSSL).
        target_temperature: temperature of the key-to-queue similarities:
            τ′ for relabelling, τ_m for SCE, τ_t for ReSSL.
        num_neighbors: K of ASCL/AHCL/hard.
        sce_lambda: λ of SCE.
        consistency_weight: α of Co2.
        consistency_temperature: τ_con of Co2's similarity distributions.
        debias_prior: τ⁺ of DCL, the probability that a queue key shares the query's class.
        symmetric: average the loss with the views swapped (both keys enqueued).
        shuffle_keys: shuffle BN. Under several replicas the key encoder runs on the
            global batch gathered from all replicas and shuffled by one permutation,
            each replica normalising its own share (MoCo's ``_batch_shuffle_ddp``);
            on one replica it runs on its shuffled batch (the MoCo CIFAR demo's
            single-GPU shuffle, for split BN). The permutation is drawn from a
            stateless generator seeded by the optimizer step, so every replica draws
            the same one and a run is reproducible. Defaults to on.
        batch_size: global batch, if known, to check ``queue_size`` now.
        **kwargs: ``MomentumModel`` arguments (momentum, views, ...).
    """

    def __init__(
        self,
        backbone: keras.Model,
        projector: keras.Model,
        *,
        objective: str = "contrastive",
        relabel: str = "ascl",
        queue_size: int = 4096,
        temperature: float = 0.1,
        target_temperature: float = 0.05,
        num_neighbors: int = 1,
        sce_lambda: float = 0.5,
        consistency_weight: float = 0.3,
        consistency_temperature: float = 0.04,
        debias_prior: float = 0.1,
        symmetric: bool = False,
        shuffle_keys: bool = True,
        batch_size: int | None = None,
        **kwargs,
    ):
        super().__init__(backbone, projector, **kwargs)
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if relabel not in losses.RELABEL_MODES:
            raise ValueError(f"relabel must be one of {losses.RELABEL_MODES}, got {relabel!r}")
        if relabel != "none" and objective == "debiased":
            # (SCE and ReSSL set their own targets and ignore relabel, as they always have.)
            raise ValueError(f"relabel={relabel!r}: DCL's debiased loss has no targets to relabel")
        if not 0.0 <= debias_prior < 1.0:
            raise ValueError(f"debias_prior must be in [0, 1), got {debias_prior}")
        if consistency_weight < 0:
            raise ValueError(f"consistency_weight must be >= 0, got {consistency_weight}")
        for name, value in (
            ("temperature", temperature),
            ("target_temperature", target_temperature),
            ("consistency_temperature", consistency_temperature),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if relabel in TOP_K_RELABELS and not 1 <= num_neighbors <= queue_size:
            raise ValueError(f"num_neighbors must be in [1, queue_size], got {num_neighbors}")
        if not 0.0 <= sce_lambda <= 1.0:
            raise ValueError(f"sce_lambda must be in [0, 1], got {sce_lambda}")
        self.objective, self.relabel = objective, relabel
        self.temperature, self.target_temperature = temperature, target_temperature
        self.num_neighbors, self.sce_lambda = num_neighbors, sce_lambda
        self.consistency_weight = consistency_weight
        self.consistency_temperature = consistency_temperature
        self.debias_prior = debias_prior
        self.symmetric, self.shuffle_keys = symmetric, shuffle_keys
        key_dim = projector.output_shape[-1]
        keys_per_step = None if batch_size is None else batch_size * (2 if symmetric else 1)
        self.queue = KeyQueue(queue_size, key_dim, keys_per_step, name="queue")
        self.batch_size = batch_size

    @property
    def queue_size(self) -> int:
        """M, the keys the queue holds."""
        return self.queue.size

    def get_config(self) -> dict:
        return {**super().get_config(), **self.keyword_config(MomentumContrast)}

    def encode_keys(self, query_view: tf.Tensor, key_view: tf.Tensor) -> list[tf.Tensor]:
        """Keys [b, D]: of the key view, then (symmetric) of the query view."""
        keys = [self.encode_key(key_view)]
        if self.symmetric:
            keys.append(self.encode_key(query_view, salt=1))
        return keys

    def targets(self, key: tf.Tensor, queue: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Targets [B, 1+M] (ReSSL: [B, M] over the queue) and confidence c [B] or None."""
        if self.objective == "ressl":
            return losses.ressl_targets(key, queue, self.target_temperature), None
        if self.objective == "sce":
            return losses.sce_targets(key, queue, self.target_temperature, self.sce_lambda), None
        return losses.contrastive_targets(
            key,
            queue,
            self.relabel,
            self.target_temperature,
            self.num_neighbors,
            return_confidence=True,
        )

    def objective_loss(
        self, query: tf.Tensor, key: tf.Tensor, queue: tf.Tensor, targets: tf.Tensor
    ) -> tf.Tensor:
        """The scalar float32 loss of queries [B, D] against the targets."""
        if self.objective == "ressl":
            return losses.relation_loss(query, queue, targets, self.temperature)
        if self.objective == "debiased":
            return losses.debiased_contrastive_loss(
                query, key, queue, self.temperature, self.debias_prior
            )
        loss = losses.soft_contrastive_loss(query, key, queue, targets, self.temperature)
        if self.objective == "co2":
            consistency = losses.co2_consistency_loss(
                query, key, queue, self.consistency_temperature
            )
            loss = loss + self.consistency_weight * consistency
        return loss

    def forward_backward(
        self,
        query_view: tf.Tensor,
        key_view: tf.Tensor,
        queue: tf.Tensor,
        keys: list[tf.Tensor] | None = None,
    ) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor], tf.Tensor, tf.Tensor | None]:
        """Keys, targets, loss and gradients of one step on one replica.

        Args:
            query_view: [B, H, W, 3] the query encoder's view (strongly augmented).
            key_view: [B, H, W, 3] the momentum encoder's view (weak, or strong with
                ``key_augment="strong"``).
            queue: [M, D] the queue before this step's keys.
            keys: the keys of ``encode_keys(query_view, key_view)`` if already computed
                (shuffle BN across replicas, whose gathers run outside this function).

        Returns:
            ``(loss, gradients, keys, targets, confidence)``: the scalar loss,
            gradients of the online weights, the keys to enqueue ([B, D] each),
            targets [B, 1+M] ([B, M] for ReSSL) and c [B] (None without relabelling).
        """
        if keys is None:
            keys = self.encode_keys(query_view, key_view)
        pairs = list(zip((query_view, key_view), keys))  # (query view, its key [B, D])
        target_sets = [self.targets(key, queue) for _, key in pairs]

        with tf.GradientTape() as tape:
            loss = tf.add_n(
                [
                    self.objective_loss(self.encode_query(view), key, queue, targets)
                    for (view, key), (targets, _) in zip(pairs, target_sets)
                ]
            ) / len(pairs)
            scaled_loss = self.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.online_weights)
        targets, confidence = target_sets[0]
        return loss, gradients, [key for _, key in pairs], targets, confidence

    def train_step(self, data) -> dict[str, tf.Tensor]:  # noqa: ANN001
        query_view, key_view, labels = self.unpack(data)
        momentum = self.update_momentum_encoder()
        queue = tf.identity(self.queue.keys.value)  # [M, D], before this step's keys
        keys = None
        if self.shuffle_keys and replica_count() > 1:
            keys = self.encode_keys(query_view, key_view)  # all_gather: outside the replica's XLA
        loss, gradients, keys, targets, confidence = self.step_function(
            query_view, key_view, queue, keys
        )
        self.apply_gradients(gradients)

        queue_labels = tf.identity(self.queue.labels.value)  # [M], before this step's labels
        for key in keys:
            self.queue.enqueue(key, labels)
        ressl = self.objective == "ressl"
        moco = self.objective != "sce" and not ressl and self.relabel == "none"
        return self.update_monitors(
            loss,
            momentum,
            confidence=confidence,
            positive_weight=None if ressl else targets[:, 0],
            # MoCo puts no target mass on the queue: there is no purity to report.
            neighbor_targets=None if moco else targets if ressl else targets[:, 1:],
            neighbor_labels=queue_labels,
            labels=labels,
        )
