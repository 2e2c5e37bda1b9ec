"""Losses of the ASCL family as pure functions over tensors.

Every function here is stateless, computes in float32 whatever dtype comes in
(so mixed precision never reaches a softmax), and is XLA-compilable. Targets
are wrapped in ``tf.stop_gradient``: no gradient ever reaches the key encoder
or the queue through them.

Shapes and symbols, as in the papers:

* ``query`` q: [B, D], the query encoder's output for the strong view.
* ``key`` k: [B, D], the momentum encoder's output for the weak view.
* ``queue``: [M, D], keys of earlier batches (the negatives of MoCo).
* Rows of q, k and the queue are L2-normalised.
* Logits and targets cover ``[positive, queue_0 … queue_{M-1}]``: [B, 1+M].
"""

from __future__ import annotations

import tensorflow as tf

RELABEL_MODES = ("none", "ascl", "ahcl", "hard")


def _f32(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.float32)


def neighbor_distribution(
    key: tf.Tensor, queue: tf.Tensor, tau_prime: float = 0.05
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Sharpened similarity of each key to the queue, and its confidence.

    Args:
        key: [B, D] L2-normalised keys k.
        queue: [M, D] L2-normalised queue.
        tau_prime: τ′, the (small) temperature that sharpens the distribution.

    Returns:
        ``(logits, p, confidence)``: ``l = k·queueᵀ/τ′`` [B, M], ``p = softmax(l)``
        [B, M] and ``c = 1 − H(p)/log M`` [B], all float32 without gradient.
        ``c`` is 0 for a uniform ``p`` (immature features) and 1 for a one-hot one.
    """
    key, queue = tf.stop_gradient(_f32(key)), tf.stop_gradient(_f32(queue))
    logits = tf.matmul(key, queue, transpose_b=True) / tau_prime  # [B, M]
    log_p = tf.nn.log_softmax(logits, axis=1)
    p = tf.exp(log_p)
    entropy = -tf.reduce_sum(p * log_p, axis=1)  # [B]
    num_entries = tf.cast(tf.shape(queue)[0], tf.float32)
    confidence = 1.0 - entropy / tf.math.log(num_entries)
    return logits, p, confidence


def contrastive_targets(
    key: tf.Tensor,
    queue: tf.Tensor,
    relabel: str = "ascl",
    tau_prime: float = 0.05,
    num_neighbors: int = 1,
    return_confidence: bool = False,
) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor | None]:
    """Targets over ``[positive, queue]`` for MoCo v2, ASCL, AHCL and hard relabelling.

    With ``l = k·queueᵀ/τ′``, ``p = softmax(l)`` and ``c = 1 − H(p)/log M``, the
    positive gets 1 and the queue entries get:

    * ``"none"`` (MoCo v2): 0, i.e. the one-hot target of InfoNCE.
    * ``"ascl"``: ``min(K·c·p, 1)`` (soft relabelling, weighted by confidence).
    * ``"ahcl"``: ``c`` on the top-K entries by ``l``, 0 elsewhere.
    * ``"hard"``: 1 on the top-K entries by ``l``, 0 elsewhere.

    Each row is then divided by its sum. ``"none"`` skips the neighbour distribution
    altogether (the ASCL code's ``--type normal`` computes none), so MoCo pays nothing
    for ASCL's softmax over the queue.

    Args:
        key: [B, D] L2-normalised keys of the weakly augmented view.
        queue: [M, D] L2-normalised queue.
        relabel: one of ``"none"``, ``"ascl"``, ``"ahcl"``, ``"hard"``.
        tau_prime: τ′ of the neighbour distribution.
        num_neighbors: K, the number of neighbours.
        return_confidence: also return ``c`` [B].

    Returns:
        targets [B, 1+M] float32, rows summing to 1, without gradient; with
        ``return_confidence``, the pair ``(targets, confidence)``, where confidence is
        None for ``"none"``.
    """
    if relabel not in RELABEL_MODES:
        raise ValueError(f"relabel must be one of {RELABEL_MODES}, got {relabel!r}")
    if relabel == "none":
        # One-hot on the positive; the key only fixes the batch and the queue the width.
        rows, entries = tf.shape(key)[0], tf.shape(queue)[0]
        targets = tf.one_hot(tf.zeros([rows], tf.int32), entries + 1, dtype=tf.float32)
        return (targets, None) if return_confidence else targets
    logits, p, confidence = neighbor_distribution(key, queue, tau_prime)
    if relabel == "ascl":
        queue_targets = tf.minimum(num_neighbors * confidence[:, None] * p, 1.0)
    else:
        _, top = tf.math.top_k(logits, k=num_neighbors)  # [B, K]
        is_top = tf.reduce_max(tf.one_hot(top, tf.shape(p)[1], dtype=tf.float32), axis=1)
        weight = confidence[:, None] if relabel == "ahcl" else 1.0
        queue_targets = is_top * weight
    positive = tf.ones_like(p[:, :1])
    targets = tf.concat([positive, queue_targets], axis=1)  # [B, 1+M]
    targets = tf.stop_gradient(targets / tf.reduce_sum(targets, axis=1, keepdims=True))
    return (targets, confidence) if return_confidence else targets


def contrastive_logits(
    query: tf.Tensor, key: tf.Tensor, queue: tf.Tensor, tau: float = 0.1
) -> tf.Tensor:
    """MoCo's logits ``[q·k, q·queueᵀ]/τ``: [B, 1+M], float32.

    The key and the queue are constants here: gradient flows into the query only.
    """
    query = _f32(query)
    key, queue = tf.stop_gradient(_f32(key)), tf.stop_gradient(_f32(queue))
    positive = tf.reduce_sum(query * key, axis=1, keepdims=True)  # [B, 1]
    negatives = tf.matmul(query, queue, transpose_b=True)  # [B, M]
    return tf.concat([positive, negatives], axis=1) / tau


def soft_contrastive_loss(
    query: tf.Tensor,
    key: tf.Tensor,
    queue: tf.Tensor,
    targets: tf.Tensor,
    tau: float = 0.1,
) -> tf.Tensor:
    """Cross-entropy of soft targets against MoCo's logits.

    ``loss = mean_b −Σ_j targets[b, j] · log_softmax([q·k, q·queueᵀ]/τ)[b, j]``.
    With one-hot targets this is InfoNCE (MoCo v2).

    Args:
        query: [B, D] L2-normalised queries q.
        key: [B, D] L2-normalised keys k.
        queue: [M, D] L2-normalised queue.
        targets: [B, 1+M] rows summing to 1 (e.g. from ``contrastive_targets``).
        tau: τ, the temperature of the logits.

    Returns:
        Scalar float32 loss.
    """
    log_prob = tf.nn.log_softmax(contrastive_logits(query, key, queue, tau), axis=1)
    targets = tf.stop_gradient(_f32(targets))
    return tf.reduce_mean(-tf.reduce_sum(targets * log_prob, axis=1))


def sce_targets(
    key: tf.Tensor, queue: tf.Tensor, tau_m: float = 0.05, lam: float = 0.5
) -> tf.Tensor:
    """SCE's targets (Denize et al., WACV 2023): ``λ·onehot + (1−λ)·s``.

    ``s`` is the softmax of ``k·queueᵀ/τ_m`` over the queue, the positive
    excluded (weight 0 in ``s``).

    Args:
        key: [B, D] L2-normalised keys.
        queue: [M, D] L2-normalised queue.
        tau_m: τ_m, the temperature of the key-to-queue similarities.
        lam: λ, the weight of the one-hot part.

    Returns:
        targets [B, 1+M] float32, rows summing to 1, without gradient.
    """
    _, s, _ = neighbor_distribution(key, queue, tau_m)  # [B, M]
    positive = tf.fill([tf.shape(s)[0], 1], lam)
    return tf.stop_gradient(tf.concat([positive, (1.0 - lam) * s], axis=1))


def sce_loss(
    query: tf.Tensor,
    key: tf.Tensor,
    queue: tf.Tensor,
    tau: float = 0.1,
    tau_m: float = 0.05,
    lam: float = 0.5,
) -> tf.Tensor:
    """SCE loss: ``soft_contrastive_loss`` with ``sce_targets``.

    Args:
        query: [B, D] L2-normalised queries.
        key: [B, D] L2-normalised keys.
        queue: [M, D] L2-normalised queue.
        tau: τ of the query logits.
        tau_m: τ_m of the target similarities.
        lam: λ, weight of the one-hot target.

    Returns:
        Scalar float32 loss.
    """
    return soft_contrastive_loss(query, key, queue, sce_targets(key, queue, tau_m, lam), tau)


def ressl_targets(key: tf.Tensor, queue: tf.Tensor, tau_t: float = 0.04) -> tf.Tensor:
    """ReSSL's relation targets ``softmax(k·queueᵀ/τ_t)``: [B, M], without gradient."""
    return neighbor_distribution(key, queue, tau_t)[1]


def relation_loss(
    query: tf.Tensor, queue: tf.Tensor, targets: tf.Tensor, tau_s: float = 0.1
) -> tf.Tensor:
    """Cross-entropy of targets over the queue against the query's relation to it.

    ``loss = mean_b −Σ_j targets[b, j] · log_softmax(q·queueᵀ/τ_s)[b, j]``.

    Args:
        query: [B, D] L2-normalised queries.
        queue: [M, D] L2-normalised queue.
        targets: [B, M] rows summing to 1 (e.g. ``ressl_targets``).
        tau_s: τ_s, the student temperature.

    Returns:
        Scalar float32 loss.
    """
    logits = tf.matmul(_f32(query), tf.stop_gradient(_f32(queue)), transpose_b=True) / tau_s
    targets = tf.stop_gradient(_f32(targets))
    return tf.reduce_mean(-tf.reduce_sum(targets * tf.nn.log_softmax(logits, axis=1), axis=1))


def ressl_loss(
    query: tf.Tensor,
    key: tf.Tensor,
    queue: tf.Tensor,
    tau_s: float = 0.1,
    tau_t: float = 0.04,
) -> tf.Tensor:
    """ReSSL (Zheng et al., NeurIPS 2021): match the query's relation to the queue.

    ``loss = mean_b −Σ_j softmax(k·queueᵀ/τ_t)[b, j] · log_softmax(q·queueᵀ/τ_s)[b, j]``.
    The positive takes no part.

    Args:
        query: [B, D] L2-normalised queries (student).
        key: [B, D] L2-normalised keys (teacher).
        queue: [M, D] L2-normalised queue.
        tau_s: τ_s, the student temperature.
        tau_t: τ_t, the (sharper) teacher temperature.

    Returns:
        Scalar float32 loss.
    """
    return relation_loss(query, queue, ressl_targets(key, queue, tau_t), tau_s)


def _self_columns(key: tf.Tensor, bank: tf.Tensor | None, offset: tf.Tensor | int) -> tuple:
    """The bank (default: the keys) and the one-hot [b, N] of each key's own row in it."""
    bank = key if bank is None else tf.stop_gradient(_f32(bank))
    rows = tf.shape(key)[0]
    columns = tf.range(rows) + tf.cast(offset, tf.int32)
    return bank, tf.one_hot(columns, tf.shape(bank)[0], dtype=tf.float32)


def batch_relabel_targets(
    key: tf.Tensor,
    tau_prime: float = 0.05,
    num_neighbors: int = 1,
    bank: tf.Tensor | None = None,
    offset: tf.Tensor | int = 0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """ASCL's soft targets inside a batch, for BYOL+ASCL (no queue).

    Each key is compared with the N−1 other keys of the batch: ``p = softmax(k·kᵀ/τ′)``
    over the entries of its row other than itself, ``c = 1 − H(p)/log(N−1)``; targets
    are 1 on its own entry and ``min(K·c·p, 1)`` on the others, rows normalised.

    Under a multi-replica strategy ``bank`` is the global batch's keys (gathered from
    every replica) and ``key`` this replica's rows of it, starting at ``offset``; the
    rows are then exactly those one device computes for the global batch.

    Args:
        key: [b, D] L2-normalised target-network outputs.
        tau_prime: τ′.
        num_neighbors: K; 0 gives the one-hot targets of plain BYOL.
        bank: [N, D] the whole batch's keys, with ``key`` at rows ``offset … offset+b−1``;
            None: ``key`` itself (N = b). N ≥ 2.
        offset: the row of ``key[0]`` in ``bank``.

    Returns:
        ``(targets, confidence)``: [b, N] float32 rows summing to 1, and c [b].
    """
    key = tf.stop_gradient(_f32(key))
    bank, own = _self_columns(key, bank, offset)
    others = 1.0 - own
    logits = tf.matmul(key, bank, transpose_b=True) / tau_prime  # [b, N]
    # A large finite negative keeps a key's own entry out of the softmax without
    # the 0·(−inf) NaN that −inf would put into the entropy.
    logits = logits - 1e9 * own
    log_p = tf.nn.log_softmax(logits, axis=1)
    p = tf.exp(log_p) * others
    entropy = -tf.reduce_sum(p * log_p * others, axis=1)
    neighbours = tf.cast(tf.shape(bank)[0] - 1, tf.float32)
    confidence = 1.0 - entropy / tf.math.log(neighbours)
    soft = tf.minimum(num_neighbors * confidence[:, None] * p, 1.0)
    targets = own + soft
    targets = targets / tf.reduce_sum(targets, axis=1, keepdims=True)
    return tf.stop_gradient(targets), confidence


def byol_ascl_loss(
    prediction: tf.Tensor,
    key: tf.Tensor,
    tau_prime: float = 0.05,
    num_neighbors: int = 1,
    bank: tf.Tensor | None = None,
    offset: tf.Tensor | int = 0,
) -> tf.Tensor:
    """BYOL's regression loss with ASCL's in-batch soft targets.

    ``loss = mean_b (2 − 2·Σ_j targets[b, j] · (p_b·bank_j))`` with targets from
    ``batch_relabel_targets``. With ``num_neighbors=0`` the targets are one-hot on
    each key's own entry and this is BYOL's ``2 − 2·cos(p, k)``.

    Args:
        prediction: [b, D] L2-normalised predictor outputs of the online network.
        key: [b, D] L2-normalised target-network outputs.
        tau_prime: τ′ of the in-batch neighbour distribution.
        num_neighbors: K.
        bank: [N, D] the global batch's keys under a strategy (see
            ``batch_relabel_targets``); None: ``key``.
        offset: the row of ``key[0]`` in ``bank``.

    Returns:
        Scalar float32 loss (the mean over this replica's b rows).
    """
    prediction = _f32(prediction)
    key = tf.stop_gradient(_f32(key))
    if num_neighbors == 0:
        return tf.reduce_mean(2.0 - 2.0 * tf.reduce_sum(prediction * key, axis=1))
    targets, _ = batch_relabel_targets(key, tau_prime, num_neighbors, bank, offset)
    bank = key if bank is None else tf.stop_gradient(_f32(bank))
    cosine = tf.matmul(prediction, bank, transpose_b=True)  # [b, N]
    return tf.reduce_mean(2.0 - 2.0 * tf.reduce_sum(targets * cosine, axis=1))
