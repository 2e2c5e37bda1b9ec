"""The losses of the methods ASCL is measured against (issue 21).

Each loss is checked against a float64 NumPy transcription, written here, of the
official code (or, where there is none, a reference implementation), with the
repository, commit, file and lines it transcribes; then against perturbed versions of
that transcription (another temperature, another neighbour, a flipped sign, τ⁺ dropped),
which it must miss by a clear margin, so a test fails if the loss drifts to any of them.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfascl import losses

B, D, M = 6, 8, 32
HALF = B // 2
TOL = dict(rtol=1e-5, atol=1e-5)
MARGIN = 1e-3  # a perturbed reference must differ from the loss by more than this


def unit(rows):
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def f64(x):
    """The float32 inputs the losses see, as float64 for the references."""
    return np.asarray(x, np.float32).astype(np.float64)


@pytest.fixture
def views():
    """Two views of B images: positives close, but at different distances per row."""
    rng = np.random.default_rng(21)
    view_a = unit(rng.normal(size=(B, D)))
    noise = np.array([0.1, 0.3, 0.6, 1.0, 1.5, 3.0])[:, None]
    view_b = unit(view_a + noise * rng.normal(size=(B, D)))
    return f64(view_a), f64(view_b)


@pytest.fixture
def qkq():
    """MoCo's query, key and queue; a few queue entries near some keys."""
    rng = np.random.default_rng(7)
    key = unit(rng.normal(size=(B, D)))
    query = unit(key + 0.5 * rng.normal(size=(B, D)))
    queue = unit(rng.normal(size=(M, D)))
    queue[:4] = unit(key[:4] + 0.3 * rng.normal(size=(4, D)))
    return f64(query), f64(key), f64(queue)


def assert_matches_and_misses(got, want, perturbed):
    """``got`` equals ``want`` within TOL and differs from each perturbed value."""
    np.testing.assert_allclose(got, want, **TOL)
    for name, value in perturbed.items():
        assert abs(value - got) > MARGIN, f"{name}: {value} is too close to {got}"


# --- SimCLR ---------------------------------------------------------------------------

LARGE_NUM = 1e9


def simclr_add_contrastive_loss(
    hidden1, hidden2, hidden1_large, hidden2_large, replica_id, temperature, labels=None
):
    """google-research/simclr @383d414, tf2/objective.py lines 55-87 (add_contrastive_loss).

    The strategy branch (lines 59-69): labels_idx = range(b) + replica_id·b, labels
    one-hot over 2N, masks one-hot over N; lines 76-87: logits_aa/bb minus
    masks·LARGE_NUM, loss_a = CE(labels, [ab, aa]), loss_b = CE(labels, [ba, bb]).
    Returns the per-anchor (loss_a, loss_b); the official returns mean(loss_a + loss_b).
    ``labels`` (a pair for the two views) replaces the one-hot labels: the official
    passes its labels to softmax_cross_entropy_with_logits, which takes soft ones.
    """
    batch_size, enlarged = len(hidden1), len(hidden1_large)
    labels_idx = np.arange(batch_size) + replica_id * batch_size
    one_hot = np.eye(enlarged * 2)[labels_idx]
    labels_a, labels_b = (one_hot, one_hot) if labels is None else labels
    masks = np.eye(enlarged)[labels_idx]
    logits_aa = hidden1 @ hidden1_large.T / temperature - masks * LARGE_NUM
    logits_bb = hidden2 @ hidden2_large.T / temperature - masks * LARGE_NUM
    logits_ab = hidden1 @ hidden2_large.T / temperature
    logits_ba = hidden2 @ hidden1_large.T / temperature
    loss_a = -(labels_a * np_log_softmax(np.concatenate([logits_ab, logits_aa], 1))).sum(1)
    loss_b = -(labels_b * np_log_softmax(np.concatenate([logits_ba, logits_bb], 1))).sum(1)
    return loss_a, loss_b


def simclr_mean(view_a, view_b, tau, **kwargs):
    loss_a, loss_b = simclr_add_contrastive_loss(view_a, view_b, view_a, view_b, 0, tau, **kwargs)
    return np.concatenate([loss_a, loss_b]).mean()


@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_nt_xent_is_half_the_official_simclr_loss(views, tau):
    view_a, view_b = views
    got = losses.nt_xent_loss(view_a, view_b, tau).numpy()
    loss_a, loss_b = simclr_add_contrastive_loss(view_a, view_b, view_a, view_b, 0, tau)
    np.testing.assert_allclose(2 * got, np.mean(loss_a + loss_b), **TOL)  # the official value
    assert_matches_and_misses(
        got,
        np.concatenate([loss_a, loss_b]).mean(),
        {
            "other tau": simclr_mean(view_a, view_b, tau * 1.1),
            "official sum (2x)": np.mean(loss_a + loss_b),
            "one view only": loss_a.mean(),
            "own column not masked": np.concatenate(
                [
                    -np_log_softmax(
                        np.concatenate([view_a @ view_b.T, view_a @ view_a.T], 1) / tau
                    )[np.arange(B), np.arange(B)],
                    loss_b,
                ]
            ).mean(),
        },
    )


def test_nt_xent_of_a_replica_matches_the_official_strategy_branch(views):
    view_a, view_b = views
    for replica in (0, 1):
        mine = slice(replica * HALF, (replica + 1) * HALF)
        loss_a, loss_b = simclr_add_contrastive_loss(
            view_a[mine], view_b[mine], view_a, view_b, replica, 0.5
        )
        got = losses.nt_xent_loss(
            view_a[mine], view_b[mine], 0.5, bank_a=view_a, bank_b=view_b, offset=replica * HALF
        )
        np.testing.assert_allclose(got.numpy(), np.concatenate([loss_a, loss_b]).mean(), **TOL)


def full_batch_targets(view_a, view_b, rng):
    """Soft targets over the other view: mass on the positive plus random neighbours."""
    soft = rng.uniform(size=(2, B, B)) * (rng.uniform(size=(2, B, B)) < 0.3)
    soft += 2.0 * np.eye(B)
    return tuple(soft / soft.sum(axis=2, keepdims=True))


def test_nt_xent_with_soft_targets_matches_the_official_loss_with_soft_labels(views):
    view_a, view_b = views
    targets_a, targets_b = full_batch_targets(view_a, view_b, np.random.default_rng(0))
    zeros = np.zeros((B, B))
    labels = (np.concatenate([targets_a, zeros], 1), np.concatenate([targets_b, zeros], 1))
    want = simclr_mean(view_a, view_b, 0.5, labels=labels)
    got = losses.nt_xent_loss(view_a, view_b, 0.5, targets=(targets_a, targets_b)).numpy()
    swapped = (labels[1], labels[0])
    assert_matches_and_misses(
        got,
        want,
        {
            "one-hot": simclr_mean(view_a, view_b, 0.5),
            "targets of the wrong view": simclr_mean(view_a, view_b, 0.5, labels=swapped),
            "other tau": simclr_mean(view_a, view_b, 0.4, labels=labels),
        },
    )
    # One-hot targets are plain NT-Xent.
    eye = np.eye(B)
    np.testing.assert_allclose(
        losses.nt_xent_loss(view_a, view_b, 0.5, targets=(eye, eye)).numpy(),
        losses.nt_xent_loss(view_a, view_b, 0.5).numpy(),
        rtol=1e-6,
    )


def test_nt_xent_refuses_targets_with_debiasing(views):
    eye = np.eye(B)
    with pytest.raises(ValueError, match="either targets or debias_prior"):
        losses.nt_xent_loss(*views, targets=(eye, eye), debias_prior=0.1)


# --- DCL ------------------------------------------------------------------------------


def dcl_get_negative_mask(batch_size):
    """chingyaoc/DCL @7d6345f, main.py lines 16-23."""
    negative_mask = np.ones((batch_size, 2 * batch_size), dtype=bool)
    for i in range(batch_size):
        negative_mask[i, i] = 0
        negative_mask[i, i + batch_size] = 0
    return np.concatenate([negative_mask, negative_mask], 0)


def dcl_train_loss(out_1, out_2, temperature, tau_plus, debiased=True, estimator_sign=-1.0):
    """chingyaoc/DCL @7d6345f, main.py lines 34-54 (the loss in ``train``).

    ``estimator_sign`` is −1 as in the official line 47; it is a knob for the mutation
    test. Returns the loss and, per anchor, whether the clamp (line 49) was active.
    """
    batch_size = len(out_1)
    out = np.concatenate([out_1, out_2], 0)
    neg = np.exp(out @ out.T / temperature)
    neg = neg[dcl_get_negative_mask(batch_size)].reshape(2 * batch_size, -1)
    pos = np.exp((out_1 * out_2).sum(-1) / temperature)
    pos = np.concatenate([pos, pos], 0)
    if debiased:
        n = batch_size * 2 - 2
        ng = (estimator_sign * tau_plus * n * pos + neg.sum(-1)) / (1 - tau_plus)
        clamp = n * np.e ** (-1 / temperature)
        clamped = ng < clamp
        ng = np.maximum(ng, clamp)
    else:
        ng, clamped = neg.sum(-1), np.zeros(2 * batch_size, bool)
    return (-np.log(pos / (pos + ng))).mean(), clamped


@pytest.mark.parametrize("tau_plus", [0.05, 0.1, 0.2])
def test_debiased_nt_xent_matches_the_official_dcl(views, tau_plus):
    view_a, view_b = views
    want, clamped = dcl_train_loss(view_a, view_b, 0.5, tau_plus)
    got = losses.nt_xent_loss(view_a, view_b, 0.5, debias_prior=tau_plus).numpy()
    assert_matches_and_misses(
        got,
        want,
        {
            "tau_plus dropped": dcl_train_loss(view_a, view_b, 0.5, tau_plus, debiased=False)[0],
            "estimator sign flipped": dcl_train_loss(
                view_a, view_b, 0.5, tau_plus, estimator_sign=1.0
            )[0],
            "other tau": dcl_train_loss(view_a, view_b, 0.6, tau_plus)[0],
        },
    )
    if tau_plus == 0.2:  # the case covers both branches of the estimator
        assert clamped.any() and not clamped.all()


def test_dcl_without_debiasing_is_nt_xent(views):
    view_a, view_b = views
    want, _ = dcl_train_loss(view_a, view_b, 0.5, 0.0, debiased=False)
    np.testing.assert_allclose(simclr_mean(view_a, view_b, 0.5), want, rtol=1e-10)
    for zero in (0, 0.0):
        got = losses.nt_xent_loss(view_a, view_b, 0.5, debias_prior=zero)
        assert got.numpy() == losses.nt_xent_loss(view_a, view_b, 0.5).numpy()
    np.testing.assert_allclose(
        losses.nt_xent_loss(view_a, view_b, 0.5, debias_prior=tf.constant(0.0)).numpy(),
        want,
        **TOL,
    )


def test_debiased_loss_is_stable_at_a_small_temperature(views):
    # exp(1/0.01) = e^100 overflows float32 in the official formula; the log-space
    # computation stays finite and equals the float64 reference.
    view_a, view_b = views
    want, _ = dcl_train_loss(view_a, view_b, 0.01, 0.1)
    got = losses.nt_xent_loss(view_a, view_b, 0.01, debias_prior=0.1).numpy()
    assert np.isfinite(got)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def dcl_on_moco(query, key, queue, temperature, tau_plus, debiased=True):
    """The estimator of chingyaoc/DCL @7d6345f main.py lines 40-54 on MoCo's logits.

    pos = exp(q·k/t) (line 41), neg = exp(q·queueᵀ/t) in place of the batch negatives
    (lines 36-38), N = M (line 46), Ng and its clamp (lines 47-49), loss (line 54).
    """
    pos = np.exp((query * key).sum(-1) / temperature)
    neg = np.exp(query @ queue.T / temperature)
    if debiased:
        n = len(queue)
        ng = (-tau_plus * n * pos + neg.sum(-1)) / (1 - tau_plus)
        ng = np.maximum(ng, n * np.e ** (-1 / temperature))
    else:
        ng = neg.sum(-1)
    return (-np.log(pos / (pos + ng))).mean()


@pytest.mark.parametrize("tau_plus", [0.05, 0.1])
def test_debiased_contrastive_loss_matches_dcl_on_moco_logits(qkq, tau_plus):
    query, key, queue = qkq
    got = losses.debiased_contrastive_loss(query, key, queue, tau=0.2, tau_plus=tau_plus)
    assert_matches_and_misses(
        got.numpy(),
        dcl_on_moco(query, key, queue, 0.2, tau_plus),
        {
            "tau_plus dropped": dcl_on_moco(query, key, queue, 0.2, tau_plus, debiased=False),
            "other tau": dcl_on_moco(query, key, queue, 0.25, tau_plus),
            "other tau_plus": dcl_on_moco(query, key, queue, 0.2, 2 * tau_plus),
        },
    )


def test_debiased_contrastive_loss_without_prior_is_infonce(qkq):
    query, key, queue = qkq
    one_hot = losses.contrastive_targets(key, queue, "none")
    infonce = losses.soft_contrastive_loss(query, key, queue, one_hot, tau=0.2)
    got = losses.debiased_contrastive_loss(query, key, queue, tau=0.2, tau_plus=0.0)
    assert got.numpy() == infonce.numpy()
    np.testing.assert_allclose(
        got.numpy(), dcl_on_moco(query, key, queue, 0.2, 0.0, debiased=False), **TOL
    )


def test_debiased_gradient_equals_that_of_the_direct_formula(views):
    # The log-space computation (shift, where, softplus) has the gradient of the
    # formula as written.
    view_a, view_b = (tf.Variable(x, dtype=tf.float32) for x in views)

    def direct(tau, tau_plus):
        out = tf.concat([view_a, view_b], 0)
        mask = tf.constant(dcl_get_negative_mask(B))
        neg = tf.reshape(tf.boolean_mask(tf.exp(out @ tf.transpose(out) / tau), mask), [2 * B, -1])
        pos = tf.exp(tf.reduce_sum(view_a * view_b, -1) / tau)
        pos = tf.concat([pos, pos], 0)
        n = 2 * B - 2
        ng = tf.maximum(
            (-tau_plus * n * pos + tf.reduce_sum(neg, -1)) / (1 - tau_plus), n * np.e ** (-1 / tau)
        )
        return tf.reduce_mean(-tf.math.log(pos / (pos + ng)))

    for tau_plus in (0.1, 0.2):
        with tf.GradientTape(persistent=True) as tape:
            ours = losses.nt_xent_loss(view_a, view_b, 0.5, debias_prior=tau_plus)
            reference = direct(0.5, tau_plus)
        for got, want in zip(
            tape.gradient(ours, [view_a, view_b]), tape.gradient(reference, [view_a, view_b])
        ):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


# --- NNCLR ----------------------------------------------------------------------------


def solo_find_nn(z, queue):
    """vturrisi/solo-learn @9187ea3, solo/methods/nnclr.py lines 150-151 (find_nn)."""
    idx = (z @ queue.T).argmax(axis=1)
    return idx, queue[idx]


def solo_nnclr_loss_func(nn, p_gathered, rank, temperature):
    """vturrisi/solo-learn @9187ea3, solo/losses/nnclr.py lines 39-50 (nnclr_loss_func).

    ``p_gathered`` is ``gather(p)`` (line 43); labels arange(n·rank, n·(rank+1)) (49).
    """
    nn, p = unit(nn), unit(p_gathered)
    logits = nn @ p.T / temperature
    n = len(nn)
    labels = np.arange(n * rank, n * (rank + 1))
    return -np_log_softmax(logits)[np.arange(n), labels].mean()


@pytest.fixture
def nnclr_case():
    rng = np.random.default_rng(3)
    z = unit(rng.normal(size=(B, D)))
    support = unit(rng.normal(size=(M, D)))
    support[:B] = unit(z + 0.4 * rng.normal(size=(B, D)))  # near neighbours, not exact
    predictions = unit(z + 0.5 * rng.normal(size=(B, D)))
    return f64(z), f64(support), f64(predictions)


def test_nearest_neighbors_match_solo_learn(nnclr_case):
    z, support, _ = nnclr_case
    neighbours, indices = losses.nearest_neighbors(z, support)
    want_idx, want_nn = solo_find_nn(z, support)
    assert indices.dtype == tf.int32 and indices.shape == (B,)
    np.testing.assert_array_equal(indices.numpy(), want_idx)
    np.testing.assert_allclose(neighbours.numpy(), want_nn, atol=1e-7)
    # Under the Euclidean distance of the paper's NN(z, Q) = argmin ‖z − q‖ too.
    distance = ((z[:, None] - support[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(indices.numpy(), distance.argmin(1))


def second_nearest(z, support):
    return support[np.argsort(-(z @ support.T), axis=1)[:, 1]]


def test_nnclr_loss_matches_solo_learn(nnclr_case):
    z, support, predictions = nnclr_case
    neighbours, _ = losses.nearest_neighbors(z, support)
    _, nn = solo_find_nn(z, support)
    got = losses.nnclr_loss(neighbours, predictions, tau=0.1).numpy()
    assert_matches_and_misses(
        got,
        solo_nnclr_loss_func(nn, predictions, 0, 0.1),
        {
            "second-nearest neighbour": solo_nnclr_loss_func(
                second_nearest(z, support), predictions, 0, 0.1
            ),
            "z instead of its neighbour": solo_nnclr_loss_func(z, predictions, 0, 0.1),
            "other tau": solo_nnclr_loss_func(nn, predictions, 0, 0.12),
            "directions swapped": solo_nnclr_loss_func(predictions, nn, 0, 0.1),
        },
    )


def test_nnclr_loss_of_a_replica_matches_solo_learn_rank(nnclr_case):
    z, support, predictions = nnclr_case
    _, nn = solo_find_nn(z, support)
    for rank in (0, 1):
        mine = slice(rank * HALF, (rank + 1) * HALF)
        got = losses.nnclr_loss(
            nn[mine], predictions[mine], 0.1, bank=predictions, offset=rank * HALF
        )
        want = solo_nnclr_loss_func(nn[mine], predictions, rank, 0.1)
        np.testing.assert_allclose(got.numpy(), want, **TOL)


# --- MSF ------------------------------------------------------------------------------


def msf_dequeue_and_enqueue(queue, ptr, targets):
    """UMBCvision/MSF @130191c, train_msf.py lines 148-159 (_dequeue_and_enqueue)."""
    queue = queue.copy()
    queue[ptr : ptr + len(targets)] = targets
    return queue


def msf_loss(query, current_target, queue, topk, skip=0):
    """UMBCvision/MSF @130191c, train_msf.py lines 186-201 (forward, after the enqueue).

    ``skip`` (0 in the official) drops the nearest ``skip`` neighbours: a knob for the
    mutation test.
    """
    targets = queue
    dist_t = 2 - 2 * current_target @ targets.T
    dist_q = 2 - 2 * query @ targets.T
    nn_index = np.argsort(dist_t, axis=1, kind="stable")[:, skip : skip + topk]
    nn_dist_q = np.take_along_axis(dist_q, nn_index, axis=1)
    return (nn_dist_q.sum(axis=1) / topk).mean(), nn_index


@pytest.fixture
def msf_case():
    rng = np.random.default_rng(5)
    target = unit(rng.normal(size=(B, D)))
    query = unit(target + 0.5 * rng.normal(size=(B, D)))
    old = unit(rng.normal(size=(M, D)))
    old[B : 3 * B] = unit(np.repeat(target, 2, 0) + 0.5 * rng.normal(size=(2 * B, D)))
    bank = msf_dequeue_and_enqueue(old, 2 * B, target)  # official order: enqueue, then loss
    return f64(query), f64(target), f64(bank)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_neighbors_match_msf(msf_case, k):
    _, target, bank = msf_case
    got = losses.top_k_neighbors(target, bank, k)
    _, want = msf_loss(target, target, bank, k)
    assert got.dtype == tf.int32 and got.shape == (B, k)
    np.testing.assert_array_equal(got.numpy(), want)
    # The bank holds this step's targets, so each target is its own nearest neighbour.
    np.testing.assert_array_equal(got.numpy()[:, 0], 2 * B + np.arange(B))


@pytest.mark.parametrize("k", [1, 5])
def test_mean_shift_loss_matches_msf(msf_case, k):
    query, target, bank = msf_case
    want, _ = msf_loss(query, target, bank, k)
    got = losses.mean_shift_loss(query, target, bank, num_neighbors=k).numpy()
    # Neighbours by the query instead of the target; 2 + 2cos instead of 2 − 2cos.
    by_query, _ = msf_loss(query, query, bank, k)
    assert_matches_and_misses(
        got,
        want,
        {
            "neighbours shifted by one": msf_loss(query, target, bank, k, skip=1)[0],
            "neighbours chosen by the query": by_query,
            "sign of the cosine flipped": 4.0 - want,
            "other k": msf_loss(query, target, bank, k + 2)[0],
        },
    )


# --- CO2 ------------------------------------------------------------------------------


def co2_regularizer(out0, out1, negatives, t_consistency, alpha=1.0, include_positive=True):
    """lightly-ai/lightly @e8d317f, lightly/loss/regularizer/co2.py lines 92-111 (forward)
    and 135-160 (_get_pseudo_labels, memory-bank branch lines 147-152); the same as
    philippmwirth/co2 @341b8f0, co2.py lines 73-96 and 115-131.

    ``include_positive`` is True in both repositories; False drops ``l_pos`` from the
    logits (line 155), which is the paper's definition over the negatives only.
    KLDivLoss(reduction="batchmean", log_target=True)(input, target) is
    Σ exp(target)·(target − input) / batch.
    """

    def pseudo_labels(o0, o1):
        l_pos = (o0 * o1).sum(1, keepdims=True)
        l_neg = o0 @ negatives.T
        logits = np.concatenate([l_pos, l_neg], 1) if include_positive else l_neg
        return np_log_softmax(logits / t_consistency)

    def kl_div(inp, target):
        return (np.exp(target) * (target - inp)).sum() / len(inp)

    p = pseudo_labels(out0, out1)
    q = pseudo_labels(out1, out0)
    return alpha * 0.5 * (kl_div(p, q) + kl_div(q, p))


@pytest.mark.parametrize("tau_con", [0.04, 0.2])
def test_co2_consistency_matches_the_paper_over_the_negatives(qkq, tau_con):
    query, key, queue = qkq
    got = losses.co2_consistency_loss(query, key, queue, tau_con).numpy()
    want = co2_regularizer(query, key, queue, tau_con, include_positive=False)
    one_sided = (
        (
            np.exp(np_log_softmax(key @ queue.T / tau_con))
            * (np_log_softmax(key @ queue.T / tau_con) - np_log_softmax(query @ queue.T / tau_con))
        )
        .sum(1)
        .mean()
    )
    assert_matches_and_misses(
        got,
        want,
        {
            "other tau_con": co2_regularizer(
                query, key, queue, 1.2 * tau_con, include_positive=False
            ),
            "positive included": co2_regularizer(query, key, queue, tau_con),
            # ½KL(P‖Q) − ½KL(Q‖P): one term's sign flipped
            "sign of KL(Q|P) flipped": one_sided - want,
        },
    )


def test_co2_with_the_positive_matches_lightly(qkq):
    query, key, queue = qkq
    got = losses.co2_consistency_loss(query, key, queue, 0.05, include_positive=True)
    np.testing.assert_allclose(got.numpy(), co2_regularizer(query, key, queue, 0.05), **TOL)


def test_co2_is_zero_when_query_and_key_agree(qkq):
    _, key, queue = qkq
    np.testing.assert_allclose(losses.co2_consistency_loss(key, key, queue).numpy(), 0.0, atol=1e-6)


# --- Replicas, gradients, dtypes ------------------------------------------------------


@pytest.mark.parametrize("mode", ["plain", "debiased", "targets"])
def test_nt_xent_replica_halves_average_to_the_one_device_loss_and_gradients(views, mode):
    bank_a, bank_b = (tf.Variable(x, dtype=tf.float32) for x in views)
    full_targets = full_batch_targets(*views, np.random.default_rng(1))

    def loss(rows, offset, **banks):
        kwargs = {"debiased": dict(debias_prior=0.1), "plain": {}}.get(mode)
        if kwargs is None:
            kwargs = dict(targets=tuple(t[rows] for t in full_targets))
        return losses.nt_xent_loss(
            bank_a[rows], bank_b[rows], 0.5, offset=offset, **banks, **kwargs
        )

    with tf.GradientTape(persistent=True) as tape:
        one_device = loss(slice(0, B), 0)
        halves = [
            loss(
                slice(r * HALF, (r + 1) * HALF), tf.constant(r * HALF), bank_a=bank_a, bank_b=bank_b
            )
            for r in (0, 1)
        ]
        split = (halves[0] + halves[1]) / 2
    np.testing.assert_allclose(split.numpy(), one_device.numpy(), **TOL)
    assert abs(halves[0].numpy() - halves[1].numpy()) > MARGIN  # the halves differ
    for got, want in zip(
        tape.gradient(split, [bank_a, bank_b]), tape.gradient(one_device, [bank_a, bank_b])
    ):
        assert np.abs(want.numpy()).sum() > 0
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


def test_nnclr_replica_halves_average_to_the_one_device_loss_and_gradients(nnclr_case):
    z, support, predictions = nnclr_case
    neighbours, _ = losses.nearest_neighbors(z, support)
    bank = tf.Variable(predictions, dtype=tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        one_device = losses.nnclr_loss(neighbours, bank, 0.1)
        halves = [
            losses.nnclr_loss(
                neighbours[r * HALF : (r + 1) * HALF],
                bank[r * HALF : (r + 1) * HALF],
                0.1,
                bank=bank,
                offset=r * HALF,
            )
            for r in (0, 1)
        ]
        split = (halves[0] + halves[1]) / 2
    np.testing.assert_allclose(split.numpy(), one_device.numpy(), **TOL)
    want = tape.gradient(one_device, bank).numpy()
    assert np.abs(want).sum() > 0
    np.testing.assert_allclose(tape.gradient(split, bank).numpy(), want, rtol=1e-4, atol=1e-6)


def test_no_gradient_reaches_keys_queues_supports_or_banks(qkq, nnclr_case, msf_case):
    query, key, queue = (tf.Variable(x, dtype=tf.float32) for x in qkq)
    z, support = (tf.Variable(x, dtype=tf.float32) for x in nnclr_case[:2])
    predictions = tf.Variable(nnclr_case[2], dtype=tf.float32)
    msf_query, target, bank = (tf.Variable(x, dtype=tf.float32) for x in msf_case)
    cases = {
        "dcl": (lambda: losses.debiased_contrastive_loss(query, key, queue), [query], [key, queue]),
        "co2": (lambda: losses.co2_consistency_loss(query, key, queue), [query], [key, queue]),
        "co2+": (
            lambda: losses.co2_consistency_loss(query, key, queue, include_positive=True),
            [query],
            [key, queue],
        ),
        "nnclr": (
            lambda: losses.nnclr_loss(losses.nearest_neighbors(z, support)[0], predictions),
            [predictions],
            [z, support],
        ),
        "nn": (lambda: tf.reduce_sum(losses.nearest_neighbors(z, support)[0]), [], [z, support]),
        "msf": (
            lambda: losses.mean_shift_loss(msf_query, target, bank),
            [msf_query],
            [target, bank],
        ),
    }
    for name, (loss_fn, trained, frozen) in cases.items():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, trained + frozen, unconnected_gradients="zero")
        for grad in grads[: len(trained)]:
            assert np.abs(grad.numpy()).sum() > 0, name
        for grad in grads[len(trained) :]:
            np.testing.assert_array_equal(grad.numpy(), 0.0, err_msg=name)


def all_losses(views, qkq, nnclr_case, msf_case, dtype):
    """Every loss of this module on inputs of ``dtype``: name → thunk."""
    cast = lambda *xs: [tf.constant(x, dtype) for x in xs]  # noqa: E731
    view_a, view_b = cast(*views)
    query, key, queue = cast(*qkq)
    z, support, predictions = cast(*nnclr_case)
    msf_query, target, bank = cast(*msf_case)
    eye = tf.eye(B, dtype=dtype)
    return {
        "nt_xent": lambda: losses.nt_xent_loss(view_a, view_b),
        "nt_xent_dcl": lambda: losses.nt_xent_loss(view_a, view_b, debias_prior=0.1),
        "nt_xent_targets": lambda: losses.nt_xent_loss(view_a, view_b, targets=(eye, eye)),
        "nt_xent_replica": lambda: losses.nt_xent_loss(
            view_a[HALF:], view_b[HALF:], bank_a=view_a, bank_b=view_b, offset=HALF
        ),
        "dcl": lambda: losses.debiased_contrastive_loss(query, key, queue),
        "nnclr": lambda: losses.nnclr_loss(losses.nearest_neighbors(z, support)[0], predictions),
        "msf": lambda: losses.mean_shift_loss(msf_query, target, bank),
        "co2": lambda: losses.co2_consistency_loss(query, key, queue),
    }


def test_float16_inputs_give_float32_losses(views, qkq, nnclr_case, msf_case):
    half = all_losses(views, qkq, nnclr_case, msf_case, tf.float16)
    full = all_losses(views, qkq, nnclr_case, msf_case, tf.float32)
    for name, loss_fn in half.items():
        value = loss_fn()
        assert value.dtype == tf.float32 and value.shape == (), name
        np.testing.assert_allclose(value.numpy(), full[name]().numpy(), rtol=0.05, err_msg=name)
    neighbours, indices = losses.nearest_neighbors(
        *(tf.constant(x, tf.float16) for x in nnclr_case[:2])
    )
    assert neighbours.dtype == tf.float32 and indices.dtype == tf.int32
    assert (
        losses.top_k_neighbors(*(tf.constant(x, tf.float16) for x in msf_case[1:]), 3).dtype
        == tf.int32
    )


def test_losses_are_xla_compilable(views, qkq, nnclr_case, msf_case):
    thunks = all_losses(views, qkq, nnclr_case, msf_case, tf.float32)

    @tf.function(jit_compile=True)
    def compiled():
        return {name: thunk() for name, thunk in thunks.items()}

    for name, value in compiled().items():
        np.testing.assert_allclose(value.numpy(), thunks[name]().numpy(), rtol=1e-5, err_msg=name)
