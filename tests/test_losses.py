"""The losses against independent float64 NumPy calculations on small cases."""

import numpy as np
import pytest
import tensorflow as tf

from tfascl import losses

B, M, D = 6, 10, 5


def unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def qkq():
    rng = np.random.default_rng(0)
    query, key, queue = (unit(rng.normal(size=s)) for s in ((B, D), (B, D), (M, D)))
    # Make a few queue entries near-duplicates of keys so relabelling has neighbours.
    queue[:3] = unit(key[:3] + 0.05 * rng.normal(size=(3, D)))
    return query, key, queue


def np_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def np_log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def np_targets(key, queue, relabel, tau_prime, k):
    logits = key @ queue.T / tau_prime
    p = np_softmax(logits)
    entropy = -(p * np.log(p)).sum(axis=1)
    c = 1 - entropy / np.log(queue.shape[0])
    extra = np.zeros_like(p)
    if relabel == "ascl":
        extra = np.minimum(k * c[:, None] * p, 1)
    elif relabel in ("ahcl", "hard"):
        for b in range(len(key)):
            top = np.argsort(-logits[b], kind="stable")[:k]
            extra[b, top] = c[b] if relabel == "ahcl" else 1.0
    targets = np.concatenate([np.ones((len(key), 1)), extra], axis=1)
    return targets / targets.sum(axis=1, keepdims=True), c


def np_logits(query, key, queue, tau):
    return np.concatenate([(query * key).sum(1, keepdims=True), query @ queue.T], 1) / tau


@pytest.mark.parametrize("relabel", ["none", "ascl", "ahcl", "hard"])
@pytest.mark.parametrize("k", [1, 3])
def test_contrastive_targets_match_numpy(qkq, relabel, k):
    _, key, queue = qkq
    got, confidence = losses.contrastive_targets(
        key, queue, relabel, target_temperature=0.05, num_neighbors=k, return_confidence=True
    )
    want, want_c = np_targets(key, queue, relabel, 0.05, k)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    if relabel == "none":  # MoCo computes no neighbour distribution, hence no confidence
        assert confidence is None
    else:
        np.testing.assert_allclose(confidence.numpy(), want_c, atol=1e-5)
    np.testing.assert_allclose(got.numpy().sum(axis=1), 1.0, atol=1e-6)
    assert got.shape == (B, 1 + M)


def test_moco_targets_are_one_hot(qkq):
    _, key, queue = qkq
    targets = losses.contrastive_targets(key, queue, "none").numpy()
    np.testing.assert_array_equal(targets, np.eye(1 + M)[np.zeros(B, int)])


def test_ascl_targets_grow_with_confidence(qkq):
    _, key, queue = qkq
    # Keys 0..2 have a near-duplicate in the queue: confident, large soft mass.
    targets, c = losses.contrastive_targets(key, queue, "ascl", return_confidence=True)
    c = c.numpy()
    assert c[:3].min() > c[3:].max()
    assert (targets.numpy()[:3, 0] < 0.75).all()


def test_confidence_is_zero_for_uniform_and_one_for_peaked():
    key = unit(np.ones((1, 4)))
    _, _, c_uniform = losses.neighbor_distribution(key, np.tile(key, (8, 1)), 0.05)
    np.testing.assert_allclose(c_uniform.numpy(), 0.0, atol=1e-6)
    queue = np.eye(4)[[0, 1, 2, 3]]
    _, _, c_peak = losses.neighbor_distribution(np.eye(4)[:1], queue, 0.001)
    np.testing.assert_allclose(c_peak.numpy(), 1.0, atol=1e-4)


def test_unknown_relabel_is_an_error(qkq):
    with pytest.raises(ValueError, match="relabel must be one of"):
        losses.contrastive_targets(qkq[1], qkq[2], "soft")


@pytest.mark.parametrize("relabel", ["none", "ascl"])
def test_soft_contrastive_loss_matches_numpy(qkq, relabel):
    query, key, queue = qkq
    targets, _ = np_targets(key, queue, relabel, 0.05, 2)
    got = losses.soft_contrastive_loss(query, key, queue, targets, tau=0.2)
    want = -(targets * np_log_softmax(np_logits(query, key, queue, 0.2))).sum(1).mean()
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_one_hot_loss_is_infonce(qkq):
    query, key, queue = qkq
    targets = losses.contrastive_targets(key, queue, "none")
    got = losses.soft_contrastive_loss(query, key, queue, targets, tau=0.1)
    logits = np_logits(query, key, queue, 0.1)
    want = -np_log_softmax(logits)[:, 0].mean()
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_sce_loss_matches_reference_formula(qkq):
    query, key, queue = qkq
    tau, tau_m, lam = 0.1, 0.05, 0.4
    # SCE's code (CEA-LIST/SCE sce/models/siamese/sce.py 101-121, eztorch sce_loss.py with
    # use_keys=False): the positive's key similarity is 0 and it is not masked out of the
    # key distribution, which is then mixed with the one-hot (and L1-normalised: sums to 1).
    sim_k = np.concatenate([np.zeros((B, 1)), key @ queue.T], 1) / tau_m
    mask = np.zeros((B, 1 + M))
    mask[:, 0] = 1
    prob_k = np_softmax(sim_k)
    targets = lam * mask + (1 - lam) * prob_k
    assert np.all(targets[:, 0] > lam)  # the positive gets λ + (1 − λ)·s₀
    want = -(targets * np_log_softmax(np_logits(query, key, queue, tau))).sum(1).mean()
    got = losses.sce_loss(query, key, queue, tau=tau, target_temperature=tau_m, lam=lam)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(
        losses.sce_targets(key, queue, tau_m, lam).numpy(), targets, atol=1e-6
    )


def test_ressl_loss_matches_numpy(qkq):
    query, key, queue = qkq
    teacher = np_softmax(key @ queue.T / 0.04)
    want = -(teacher * np_log_softmax(query @ queue.T / 0.1)).sum(1).mean()
    got = losses.ressl_loss(query, key, queue, tau_s=0.1, target_temperature=0.04)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def np_byol_ascl(prediction, key, tau_prime, k):
    n = len(key)
    logits = key @ key.T / tau_prime
    off = ~np.eye(n, dtype=bool)
    targets = np.eye(n)
    for b in range(n):
        row = logits[b, off[b]]
        p = np_softmax(row[None])[0]
        c = 1 - (-(p * np.log(p)).sum()) / np.log(n - 1)
        targets[b, off[b]] = np.minimum(k * c * p, 1)
    targets /= targets.sum(1, keepdims=True)
    return (2 - 2 * (targets * (prediction @ key.T)).sum(1)).mean(), targets


def test_byol_ascl_loss_matches_numpy(qkq):
    prediction, key, _ = qkq
    want, want_targets = np_byol_ascl(prediction, key, 0.1, 2)
    got = losses.byol_ascl_loss(prediction, key, target_temperature=0.1, num_neighbors=2)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    targets, _ = losses.batch_relabel_targets(key, 0.1, 2)
    np.testing.assert_allclose(targets.numpy(), want_targets, atol=1e-6)


def np_byol_ascl_rows(prediction, key, tau_prime, k):
    _, targets = np_byol_ascl(prediction, key, tau_prime, k)
    return 2 - 2 * (targets * (prediction @ key.T)).sum(1), targets


@pytest.mark.parametrize("offset", [0, 2, 4])
def test_byol_ascl_rows_of_a_gathered_batch_match_the_whole_batch(qkq, offset):
    # A replica holds rows offset..offset+1 of the global batch of 6 and relabels them
    # against all 6 gathered keys: the same targets and per-row losses as one device.
    prediction, key, _ = qkq
    rows, want_targets = np_byol_ascl_rows(prediction, key, 0.1, 2)
    mine = slice(offset, offset + 2)
    targets, confidence = losses.batch_relabel_targets(key[mine], 0.1, 2, bank=key, offset=offset)
    assert targets.shape == (2, B) and confidence.shape == (2,)
    np.testing.assert_allclose(targets.numpy(), want_targets[mine], atol=1e-6)
    got = losses.byol_ascl_loss(
        prediction[mine],
        key[mine],
        target_temperature=0.1,
        num_neighbors=2,
        bank=key,
        offset=offset,
    )
    np.testing.assert_allclose(got.numpy(), rows[mine].mean(), rtol=1e-5)


def test_byol_without_relabelling_is_two_minus_two_cos(qkq):
    prediction, key, _ = qkq
    want = (2 - 2 * (prediction * key).sum(1)).mean()
    got = losses.byol_ascl_loss(prediction, key, num_neighbors=0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_no_gradient_reaches_key_or_queue(qkq):
    query, key, queue = (tf.Variable(x, dtype=tf.float32) for x in qkq)
    cases = {
        "ascl": lambda: losses.soft_contrastive_loss(
            query, key, queue, losses.contrastive_targets(key, queue, "ascl")
        ),
        "sce": lambda: losses.sce_loss(query, key, queue),
        "ressl": lambda: losses.ressl_loss(query, key, queue),
        "byol_ascl": lambda: losses.byol_ascl_loss(query, key),
    }
    for name, loss_fn in cases.items():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grad_q, grad_k, grad_queue = tape.gradient(loss, [query, key, queue])
        assert grad_q is not None and np.abs(grad_q.numpy()).sum() > 0, name
        assert grad_k is None and grad_queue is None, name


def test_losses_are_float32_and_xla_compilable_under_bfloat16(qkq):
    query, key, queue = (tf.constant(x, tf.bfloat16) for x in qkq)

    @tf.function(jit_compile=True)
    def compiled(q, k, qu):
        targets = losses.contrastive_targets(k, qu, "ahcl", num_neighbors=2)
        return losses.soft_contrastive_loss(q, k, qu, targets), losses.byol_ascl_loss(q, k)

    loss, byol = compiled(query, key, queue)
    assert loss.dtype == tf.float32 and byol.dtype == tf.float32
    eager = losses.soft_contrastive_loss(
        query, key, queue, losses.contrastive_targets(key, queue, "ahcl", num_neighbors=2)
    )
    np.testing.assert_allclose(loss.numpy(), eager.numpy(), rtol=1e-5)
