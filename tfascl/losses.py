"""Losses of the ASCL family as pure functions over tensors.

Every function here is stateless, computes in float32 whatever dtype comes in
(so mixed precision never reaches a softmax), and is XLA-compilable. Targets
are wrapped in ``tf.stop_gradient``: no gradient ever reaches the key encoder
or the queue through them. The gathered banks of ``nt_xent_loss`` and ``nnclr_loss``
are the exception: they are this step's online embeddings and carry gradient.

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
    key: tf.Tensor, queue: tf.Tensor, target_temperature: float = 0.05
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Sharpened similarity of each key to the queue, and its confidence.

    Args:
        key: [B, D] L2-normalised keys k.
        queue: [M, D] L2-normalised queue.
        target_temperature: τ′, the (small) temperature that sharpens the distribution.

    Returns:
        ``(logits, p, confidence)``: ``l = k·queueᵀ/τ′`` [B, M], ``p = softmax(l)``
        [B, M] and ``c = 1 − H(p)/log M`` [B], all float32 without gradient.
        ``c`` is 0 for a uniform ``p`` (immature features) and 1 for a one-hot one.
    """
    key, queue = tf.stop_gradient(_f32(key)), tf.stop_gradient(_f32(queue))
    logits = tf.matmul(key, queue, transpose_b=True) / target_temperature  # [B, M]
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
    target_temperature: float = 0.05,
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
        target_temperature: τ′ of the neighbour distribution.
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
    logits, p, confidence = neighbor_distribution(key, queue, target_temperature)
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
    key: tf.Tensor, queue: tf.Tensor, target_temperature: float = 0.05, lam: float = 0.5
) -> tf.Tensor:
    """SCE's targets (Denize et al., WACV 2023) as its code computes them:
    ``λ·onehot + (1−λ)·s``.

    ``s = softmax([0, k·queueᵀ] / τ_m)`` over the positive's slot and the queue: the
    official code (CEA-LIST/SCE ``sce/models/siamese/sce.py`` 101–121; eztorch
    ``sce_loss.py``, the queue path) gives the positive a similarity of 0 and does not mask
    it, so the positive's target is ``λ + (1−λ)·s₀``, slightly above the paper's λ.

    Args:
        key: [B, D] L2-normalised keys.
        queue: [M, D] L2-normalised queue.
        target_temperature: SCE's τ_m (τ′), the temperature of the key-to-queue similarities.
        lam: λ, the weight of the one-hot part.

    Returns:
        targets [B, 1+M] float32, rows summing to 1, without gradient.
    """
    key, queue = tf.stop_gradient(_f32(key)), tf.stop_gradient(_f32(queue))
    similarities = tf.matmul(key, queue, transpose_b=True)  # [B, M]
    positive = tf.zeros_like(similarities[:, :1])  # the official code's sim_k_ktarget
    s = tf.nn.softmax(tf.concat([positive, similarities], axis=1) / target_temperature, axis=1)
    one_hot = tf.one_hot(tf.zeros(tf.shape(s)[:1], tf.int32), tf.shape(s)[1], dtype=tf.float32)
    return tf.stop_gradient(lam * one_hot + (1.0 - lam) * s)


def sce_loss(
    query: tf.Tensor,
    key: tf.Tensor,
    queue: tf.Tensor,
    tau: float = 0.1,
    target_temperature: float = 0.05,
    lam: float = 0.5,
) -> tf.Tensor:
    """SCE loss: ``soft_contrastive_loss`` with ``sce_targets``.

    Args:
        query: [B, D] L2-normalised queries.
        key: [B, D] L2-normalised keys.
        queue: [M, D] L2-normalised queue.
        tau: τ of the query logits.
        target_temperature: SCE's τ_m (τ′) of the target similarities.
        lam: λ, weight of the one-hot target.

    Returns:
        Scalar float32 loss.
    """
    return soft_contrastive_loss(
        query, key, queue, sce_targets(key, queue, target_temperature, lam), tau
    )


def ressl_targets(key: tf.Tensor, queue: tf.Tensor, target_temperature: float = 0.04) -> tf.Tensor:
    """ReSSL's relation targets ``softmax(k·queueᵀ/τ_t)``: [B, M], without gradient."""
    return neighbor_distribution(key, queue, target_temperature)[1]


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
    target_temperature: float = 0.04,
) -> tf.Tensor:
    """ReSSL (Zheng et al., NeurIPS 2021): match the query's relation to the queue.

    ``loss = mean_b −Σ_j softmax(k·queueᵀ/τ_t)[b, j] · log_softmax(q·queueᵀ/τ_s)[b, j]``.
    The positive takes no part.

    Args:
        query: [B, D] L2-normalised queries (student).
        key: [B, D] L2-normalised keys (teacher).
        queue: [M, D] L2-normalised queue.
        tau_s: τ_s, the student temperature.
        target_temperature: ReSSL's τ_t (τ′), the (sharper) teacher temperature.

    Returns:
        Scalar float32 loss.
    """
    return relation_loss(query, queue, ressl_targets(key, queue, target_temperature), tau_s)


def _self_columns(key: tf.Tensor, bank: tf.Tensor | None, offset: tf.Tensor | int) -> tuple:
    """The bank (default: the keys) and the one-hot [b, N] of each key's own row in it."""
    bank = key if bank is None else tf.stop_gradient(_f32(bank))
    rows = tf.shape(key)[0]
    columns = tf.range(rows) + tf.cast(offset, tf.int32)
    return bank, tf.one_hot(columns, tf.shape(bank)[0], dtype=tf.float32)


def batch_relabel_targets(
    key: tf.Tensor,
    target_temperature: float = 0.05,
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
        target_temperature: τ′.
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
    logits = tf.matmul(key, bank, transpose_b=True) / target_temperature  # [b, N]
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
    target_temperature: float = 0.05,
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
        target_temperature: τ′ of the in-batch neighbour distribution.
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
    targets, _ = batch_relabel_targets(key, target_temperature, num_neighbors, bank, offset)
    bank = key if bank is None else tf.stop_gradient(_f32(bank))
    cosine = tf.matmul(prediction, bank, transpose_b=True)  # [b, N]
    return tf.reduce_mean(2.0 - 2.0 * tf.reduce_sum(targets * cosine, axis=1))


# --- Methods ASCL is measured against (issue 21) ----------------------------------------

# google-research/simclr's LARGE_NUM: a logit this far below keeps a column out of the
# softmax (exp underflows to exactly 0) without the NaN that −inf gives in 0·log p.
_LARGE_NUM = 1e9


def _row_columns(rows: tf.Tensor, offset: tf.Tensor | int, width: tf.Tensor) -> tf.Tensor:
    """One-hot [rows, width] of the columns ``offset … offset+rows−1``, float32."""
    columns = tf.range(rows) + tf.cast(offset, tf.int32)
    return tf.one_hot(columns, width, dtype=tf.float32)


def _debiased_log_denominator(
    logits: tf.Tensor,
    positive: tf.Tensor,
    num_negatives: tf.Tensor | int,
    tau: float,
    tau_plus: float | tf.Tensor,
) -> tf.Tensor:
    """``log(Ng)`` of DCL's 'easy' estimator, computed in log space.

    ``Ng = max((−τ⁺·K·pos + Σneg)/(1−τ⁺), K·e^{−1/τ})`` with ``pos = exp(l_pos)`` and the
    sum over the columns of ``logits`` other than the positive (already-masked columns
    hold −1e9 and contribute exactly 0).

    Args:
        logits: [R, C] logits (cosine/τ); the positive and any masked columns included.
        positive: [R, C] one-hot of each row's positive column.
        num_negatives: K, the number of negatives of a row (a scalar).
        tau: τ, whose clamp ``K·e^{−1/τ}`` is K times the smallest possible negative.
        tau_plus: τ⁺, the class prior.

    Returns:
        [R] ``log Ng``, finite.
    """
    l_pos = tf.reduce_sum(logits * positive, axis=1)  # [R]
    # A per-row shift keeps exp in range; Ng scales with e^shift, so it cancels exactly.
    shift = tf.stop_gradient(tf.reduce_max(logits, axis=1))  # [R]
    pos = tf.exp(l_pos - shift)
    neg = tf.reduce_sum(tf.exp(logits - _LARGE_NUM * positive - shift[:, None]), axis=1)
    num_negatives = tf.cast(num_negatives, tf.float32)
    estimate = (neg - tau_plus * num_negatives * pos) / (1.0 - tau_plus)  # Ng·e^{−shift}
    positive_estimate = estimate > 0.0
    log_estimate = tf.where(
        positive_estimate,
        tf.math.log(tf.where(positive_estimate, estimate, 1.0)) + shift,
        tf.float32.min,
    )
    log_clamp = tf.math.log(num_negatives) - 1.0 / tau  # log(K·e^{−1/τ})
    return tf.maximum(log_estimate, log_clamp)


def _debiased_loss_rows(
    logits: tf.Tensor,
    positive: tf.Tensor,
    num_negatives: tf.Tensor | int,
    tau: float,
    tau_plus: float | tf.Tensor,
) -> tf.Tensor:
    """Per-row ``−log(pos/(pos+Ng)) = softplus(log Ng − l_pos)``: [R]."""
    l_pos = tf.reduce_sum(logits * positive, axis=1)
    log_ng = _debiased_log_denominator(logits, positive, num_negatives, tau, tau_plus)
    return tf.math.softplus(log_ng - l_pos)


def _is_zero(value: float | tf.Tensor) -> bool:
    """True for a Python (or NumPy) number equal to 0; tensors are never taken as zero."""
    return not tf.is_tensor(value) and float(value) == 0.0


def nt_xent_loss(
    view_a: tf.Tensor,
    view_b: tf.Tensor,
    tau: float = 0.5,
    *,
    bank_a: tf.Tensor | None = None,
    bank_b: tf.Tensor | None = None,
    offset: tf.Tensor | int = 0,
    debias_prior: float = 0.0,
    targets: tuple[tf.Tensor, tf.Tensor] | None = None,
) -> tf.Tensor:
    """SimCLR's NT-Xent (Chen et al., ICML 2020), optionally debiased or soft-targeted.

    Each of the 2b anchors of this replica (the rows of ``view_a`` and ``view_b``) is
    contrasted with the 2N embeddings of the global batch. For ``a_i``:

        ``l = [a_i·bank_bᵀ, a_i·bank_aᵀ]/τ`` [2N], its own column ``N+offset+i`` set to
        −1e9 (google-research/simclr's ``LARGE_NUM``), the positive at ``offset+i``;

    and symmetrically ``[b_i·bank_aᵀ, b_i·bank_bᵀ]/τ`` for ``b_i``. The loss is the mean
    of ``−log softmax(l)[positive]`` over the 2b anchors: the paper's
    ``1/2N Σ_k [ℓ(2k−1, 2k) + ℓ(2k, 2k−1)]``. google-research/simclr's tf2
    ``objective.py`` ``add_contrastive_loss`` returns ``mean(loss_a + loss_b)`` over the
    b rows, i.e. twice this value (and so twice its gradients).

    ``debias_prior`` τ⁺ > 0 gives the debiased contrastive loss (Chuang et al., NeurIPS
    2020; chingyaoc/DCL ``main.py``, the 'easy' estimator): over the K = 2N−2 negatives
    of an anchor, ``Ng = max((−τ⁺·K·pos + Σneg)/(1−τ⁺), K·e^{−1/τ})`` and the anchor's
    loss is ``−log(pos/(pos+Ng))``, with ``pos = exp(l_pos)``, ``neg = exp(l_neg)``.
    It is computed in log space (a per-row max subtracted before exp, the clamp shifted
    alike). τ⁺ = 0 (a Python number) is plain NT-Xent, computed as such.

    ``targets`` = ``(targets_a, targets_b)`` gives SimCLR+ASCL: each [b, N] is a soft
    target over the OTHER view's columns (``bank_b`` for the anchors of ``view_a``,
    ``bank_a`` for those of ``view_b``), rows summing to 1, no mass on the same view's
    columns; an anchor's loss is then ``−Σ_j t_ij·log_softmax(l)_j``.

    Under a multi-replica strategy, ``bank_a`` and ``bank_b`` are the views gathered
    from every replica, with this replica's rows at ``offset … offset+b−1``; they carry
    gradient (the gather is differentiable), and averaging this loss over the replicas
    gives the one-device loss of the global batch, gradients included.

    Args:
        view_a: [b, D] L2-normalised projections of the first view (anchors ``a_i``).
        view_b: [b, D] L2-normalised projections of the second view.
        tau: τ, the temperature (SimCLR's CIFAR-10 setting is 0.5).
        bank_a: [N, D] the global batch of the first view; None: ``view_a`` (N = b).
        bank_b: [N, D] the global batch of the second view; None: ``view_b``.
        offset: the row of ``view_a[0]`` (and ``view_b[0]``) in the banks.
        debias_prior: τ⁺, DCL's class prior; 0 for NT-Xent.
        targets: optional pair ``(targets_a, targets_b)``, each [b, N], without gradient.

    Returns:
        Scalar float32 loss: the mean over this replica's 2b anchors.

    Raises:
        ValueError: if both ``targets`` and ``debias_prior`` > 0 are given.
    """
    debiased = tf.is_tensor(debias_prior) or not _is_zero(debias_prior)
    if targets is not None and debiased:
        raise ValueError("nt_xent_loss takes either targets or debias_prior > 0, not both")
    view_a, view_b = _f32(view_a), _f32(view_b)
    bank_a = view_a if bank_a is None else _f32(bank_a)
    bank_b = view_b if bank_b is None else _f32(bank_b)
    rows, width = tf.shape(view_a)[0], tf.shape(bank_a)[0]
    own = _row_columns(rows, offset, width)  # [b, N]: positive in the other view, self here
    zeros = tf.zeros_like(own)
    positive = tf.concat([own, zeros], axis=1)  # [b, 2N]

    def anchor_logits(anchor: tf.Tensor, other_bank: tf.Tensor, same_bank: tf.Tensor) -> tf.Tensor:
        cross = tf.matmul(anchor, other_bank, transpose_b=True) / tau
        same = tf.matmul(anchor, same_bank, transpose_b=True) / tau - _LARGE_NUM * own
        return tf.concat([cross, same], axis=1)  # [b, 2N]

    logits = tf.concat(
        [anchor_logits(view_a, bank_b, bank_a), anchor_logits(view_b, bank_a, bank_b)], axis=0
    )  # [2b, 2N]
    if debiased:
        positive = tf.concat([positive, positive], axis=0)
        num_negatives = 2 * width - 2
        per_anchor = _debiased_loss_rows(logits, positive, num_negatives, tau, debias_prior)
        return tf.reduce_mean(per_anchor)
    if targets is None:
        soft = tf.concat([positive, positive], axis=0)
    else:
        targets_a, targets_b = (tf.stop_gradient(_f32(t)) for t in targets)
        soft = tf.concat(
            [tf.concat([targets_a, zeros], axis=1), tf.concat([targets_b, zeros], axis=1)], axis=0
        )
    log_prob = tf.nn.log_softmax(logits, axis=1)
    return tf.reduce_mean(-tf.reduce_sum(soft * log_prob, axis=1))


def debiased_contrastive_loss(
    query: tf.Tensor,
    key: tf.Tensor,
    queue: tf.Tensor,
    tau: float = 0.2,
    tau_plus: float = 0.1,
) -> tf.Tensor:
    """The debiased contrastive loss (Chuang et al., NeurIPS 2020) on MoCo's logits.

    With ``pos = exp(q·k/τ)`` [B] and ``neg = exp(q·queueᵀ/τ)`` [B, M], the M queue
    entries are the negatives (N = M in the paper's notation):
    ``Ng = max((−τ⁺·M·pos + Σneg)/(1−τ⁺), M·e^{−1/τ})`` and
    ``loss = mean_B −log(pos/(pos+Ng))``, computed in log space. τ⁺ = 0 (a Python
    number) is InfoNCE, computed as such (``soft_contrastive_loss`` with one-hot targets).

    Args:
        query: [B, D] L2-normalised queries q.
        key: [B, D] L2-normalised keys k (no gradient reaches them).
        queue: [M, D] L2-normalised queue (no gradient reaches it).
        tau: τ, the temperature of the logits.
        tau_plus: τ⁺, the class prior.

    Returns:
        Scalar float32 loss.
    """
    logits = contrastive_logits(query, key, queue, tau)  # [B, 1+M], positive first
    if _is_zero(tau_plus):
        return tf.reduce_mean(-tf.nn.log_softmax(logits, axis=1)[:, 0])
    positive = tf.one_hot(tf.zeros([tf.shape(logits)[0]], tf.int32), tf.shape(logits)[1])
    num_negatives = tf.shape(logits)[1] - 1
    return tf.reduce_mean(_debiased_loss_rows(logits, positive, num_negatives, tau, tau_plus))


def nearest_neighbors(embeddings: tf.Tensor, support: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """NNCLR's ``NN(z, Q) = argmin_{q∈Q} ‖z − q‖₂``: the support row of largest cosine.

    For L2-normalised rows the smallest distance is the largest ``z·q``.

    Args:
        embeddings: [b, D] L2-normalised projections z.
        support: [Q, D] L2-normalised support set (NNCLR's queue of earlier projections).

    Returns:
        ``(neighbours, indices)``: [b, D] float32 support rows and their [b] int32 row
        numbers, without gradient.
    """
    embeddings = tf.stop_gradient(_f32(embeddings))
    support = tf.stop_gradient(_f32(support))
    similarity = tf.matmul(embeddings, support, transpose_b=True)  # [b, Q]
    indices = tf.argmax(similarity, axis=1, output_type=tf.int32)
    return tf.stop_gradient(tf.gather(support, indices)), indices


def nnclr_loss(
    neighbours: tf.Tensor,
    predictions: tf.Tensor,
    tau: float = 0.1,
    *,
    bank: tf.Tensor | None = None,
    offset: tf.Tensor | int = 0,
) -> tf.Tensor:
    """NNCLR's loss (Dwibedi et al., ICCV 2021), one direction.

    ``L_i = −log( exp(NN(z_i,Q)·p_i⁺/τ) / Σ_k exp(NN(z_i,Q)·p_k⁺/τ) )``: the nearest
    neighbour of a view's projection is the anchor, the other view's prediction of the
    same image the positive, and the other view's predictions of the rest of the global
    batch the negatives. The model symmetrises (``½(L(nn₁, p₂) + L(nn₂, p₁))``). This is
    solo-learn's ``nnclr_loss_func``; lightly's NNCLR example instead feeds the pair to
    its ``NTXentLoss`` (τ = 0.5), which adds the same-view columns as negatives.

    Under a multi-replica strategy ``bank`` is the other view's predictions gathered
    from every replica (carrying gradient), with this replica's rows at ``offset``.

    Args:
        neighbours: [b, D] L2-normalised nearest neighbours ``NN(z_i, Q)`` (from
            ``nearest_neighbors``; no gradient reaches them).
        predictions: [b, D] L2-normalised predictions ``p⁺`` of the other view, this
            replica's rows.
        tau: τ, the temperature (0.1 in the paper).
        bank: [N, D] the global batch's predictions of the other view; None:
            ``predictions`` (N = b).
        offset: the row of ``predictions[0]`` in ``bank``.

    Returns:
        Scalar float32 loss: the mean over this replica's b rows.
    """
    neighbours = tf.stop_gradient(_f32(neighbours))
    bank = _f32(predictions) if bank is None else _f32(bank)
    logits = tf.matmul(neighbours, bank, transpose_b=True) / tau  # [b, N]
    positive = _row_columns(tf.shape(neighbours)[0], offset, tf.shape(bank)[0])
    return tf.reduce_mean(-tf.reduce_sum(positive * tf.nn.log_softmax(logits, axis=1), axis=1))


def top_k_neighbors(target: tf.Tensor, bank: tf.Tensor, k: int) -> tf.Tensor:
    """The k bank rows nearest each target: largest ``target·bank``, smallest ``2−2cos``.

    Args:
        target: [b, D] L2-normalised targets.
        bank: [M, D] L2-normalised memory bank, M ≥ k.
        k: the number of neighbours.

    Returns:
        [b, k] int32 row numbers into ``bank``, nearest first.
    """
    target = tf.stop_gradient(_f32(target))
    bank = tf.stop_gradient(_f32(bank))
    similarity = tf.matmul(target, bank, transpose_b=True)  # [b, M]
    return tf.math.top_k(similarity, k=k).indices


def mean_shift_loss(
    query: tf.Tensor,
    target: tf.Tensor,
    bank: tf.Tensor,
    num_neighbors: int = 5,
    *,
    rows: tf.Tensor | None = None,
) -> tf.Tensor:
    """MSF, Mean Shift for self-supervised learning (Koohpayegani et al., ICCV 2021).

    ``loss = mean_b (1/k)·Σ_{j∈NN_k(t_b)} (2 − 2·q_b·bank_j)``: the query is pulled to
    the k bank entries nearest its target (the momentum encoder's embedding of the
    other view). As in the official code (UMBCvision/MSF ``train_msf.py``,
    ``MeanShift.forward``), the bank already holds this step's targets (they are
    enqueued before the loss), so each target is its own nearest neighbour.

    Args:
        query: [b, D] L2-normalised predictions of the online network.
        target: [b, D] L2-normalised targets (no gradient reaches them).
        bank: [M, D] L2-normalised memory bank (no gradient reaches it).
        num_neighbors: k (5 in the paper).
        rows: [b, k] ``top_k_neighbors(target, bank, k)`` when the caller has them already
            (the model reports their labels' purity too); None: found here.

    Returns:
        Scalar float32 loss.
    """
    query = _f32(query)
    bank = tf.stop_gradient(_f32(bank))
    indices = top_k_neighbors(target, bank, num_neighbors) if rows is None else rows  # [b, k]
    neighbours = tf.gather(bank, indices)  # [b, k, D]
    cosine = tf.einsum("bd,bkd->bk", query, neighbours)
    return tf.reduce_mean(2.0 - 2.0 * tf.reduce_mean(cosine, axis=1))


def co2_consistency_loss(
    query: tf.Tensor,
    key: tf.Tensor,
    queue: tf.Tensor,
    tau_con: float = 0.04,
    *,
    include_positive: bool = False,
) -> tf.Tensor:
    """CO2's consistency term (Wei et al., ICLR 2021, "CO2: Consistent Contrast for
    Unsupervised Visual Representation Learning").

    ``L_con = ½·KL(P‖Q) + ½·KL(Q‖P)``, averaged over the batch, where
    ``Q = softmax(q·queueᵀ/τ_con)`` is the query's similarity distribution over the
    negatives and ``P = softmax(k·queueᵀ/τ_con)`` the positive key's, its pseudo label.
    As in the paper (abstract and Fig. 1: the similarity of the query crop to the crops
    of other images is "unlabeled", the positive crop's similarity to them its pseudo
    label), both distributions are over the M queue entries only, the positive left out.
    ``include_positive=True`` gives lightly's reading instead
    (``lightly/loss/regularizer/co2.py`` ``_get_pseudo_labels``): both over
    ``[q·k, q·queueᵀ]`` and ``[k·q, k·queueᵀ]``, the positive first.

    The key and the queue take no gradient: it flows through the query side only (and,
    with ``include_positive``, through the ``k·q`` logit of P too, as in lightly). The
    weight α of ``L_ins + α·L_con`` is the caller's.

    Args:
        query: [B, D] L2-normalised queries q.
        key: [B, D] L2-normalised keys k (the positive crop, momentum encoder).
        queue: [M, D] L2-normalised queue (the negatives).
        tau_con: τ_con, the temperature of both distributions.
        include_positive: also put the positive ``q·k`` in both distributions.

    Returns:
        Scalar float32 loss (α not applied).
    """
    query = _f32(query)
    key, queue = tf.stop_gradient(_f32(key)), tf.stop_gradient(_f32(queue))
    query_logits = tf.matmul(query, queue, transpose_b=True) / tau_con  # [B, M]
    key_logits = tf.matmul(key, queue, transpose_b=True) / tau_con
    if include_positive:
        positive = tf.reduce_sum(query * key, axis=1, keepdims=True) / tau_con  # [B, 1]
        query_logits = tf.concat([positive, query_logits], axis=1)
        key_logits = tf.concat([positive, key_logits], axis=1)
    log_q = tf.nn.log_softmax(query_logits, axis=1)
    log_p = tf.nn.log_softmax(key_logits, axis=1)
    # ½(KL(P‖Q) + KL(Q‖P)) = ½ Σ (P − Q)(log P − log Q)
    divergence = tf.reduce_sum((tf.exp(log_p) - tf.exp(log_q)) * (log_p - log_q), axis=1)
    return tf.reduce_mean(0.5 * divergence)
