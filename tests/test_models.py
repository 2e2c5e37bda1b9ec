"""One fit step at a time: what moves, by how much, and what the queue holds."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfascl
from tfascl import losses
from tfascl.models import KeyQueue, MomentumContrast, SplitBatchNorm
from tfascl.models.batchnorm import split_batch_norm

SIZE, WIDTH, BATCH, QUEUE = 16, 4, 8, 32


def tiny_backbone():
    """A user-defined backbone (any images → features model works); small to trace."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for stride in (1, 2):
        x = keras.layers.Conv2D(WIDTH, 3, strides=stride, padding="same", use_bias=False)(x)
        x = keras.layers.ReLU()(SplitBatchNorm(num_splits=2)(x))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def tiny_model(method="ascl", backbone=None, **options):
    keras.utils.set_random_seed(0)
    backbone = backbone or tiny_backbone()
    spec = tfascl.METHODS.get(method)  # None: an unknown method, for its error
    defaults = {"total_steps": 4} if spec and not spec.uses_queue else {"queue_size": QUEUE}
    model = tfascl.build_model(
        method, backbone, projector_dims=(16, 8), num_splits=2, **{**defaults, **options}
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    return model


def batch(seed=0, n=BATCH):
    rng = np.random.default_rng(seed)
    strong = rng.random((n, SIZE, SIZE, 3), dtype=np.float32)
    weak = rng.random((n, SIZE, SIZE, 3), dtype=np.float32)
    return strong, weak, np.arange(n) % 3


def values(variables):
    return [v.numpy().copy() for v in variables]


def fit_one(model, seed=0):
    strong, weak, labels = batch(seed)
    return model.fit((strong, weak), labels, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)


@pytest.mark.parametrize("method", ["ascl", "byol_ascl"])
def test_one_step_moves_only_the_online_encoder_and_the_ema_is_exact(method):
    model = tiny_model(method)
    online_before = values(model.online_weights)
    target_vars, source_vars = model.momentum_pairs
    target_before, source_before = values(target_vars), values(source_vars)
    momentum = float(model.current_momentum())

    fit_one(model)

    # The optimizer trained exactly the online weights: every one of them moved.
    trained = {id(v) for v in model.optimizer._trainable_variables}
    assert trained == {id(v) for v in model.online_weights}
    moved = [not np.allclose(a, b.numpy()) for a, b in zip(online_before, model.online_weights)]
    assert sum(moved) >= len(moved) - 2  # (ReLU-dead units may keep a few still)
    # θk ← m·θk + (1 − m)·θq with θq before the optimizer step, nothing else.
    for t_before, s_before, t_after in zip(target_before, source_before, target_vars):
        np.testing.assert_allclose(
            t_after.numpy(), momentum * t_before + (1 - momentum) * s_before, rtol=1e-5, atol=1e-7
        )


def test_queue_holds_newest_keys_and_pointer_wraps():
    model = tiny_model("ascl", shuffle_keys=False)
    steps = QUEUE // BATCH + 1  # one more than fills the queue
    for step in range(steps):
        fit_one(model, seed=step)
        expected_pointer = ((step + 1) * BATCH) % QUEUE
        assert int(model.queue.pointer.numpy()) == expected_pointer
    # The last step's keys went to rows [0, BATCH) after the wrap; recompute them
    # with the momentum encoder as it was when they were made (it is unchanged since).
    _, weak, labels = batch(steps - 1)
    keys = model.encode_key(tf.constant(weak)).numpy()
    np.testing.assert_allclose(model.queue.keys.numpy()[:BATCH], keys, atol=1e-5)
    np.testing.assert_array_equal(model.queue.labels.numpy()[:BATCH], labels)
    # The rows after them still hold the second step's labels, written before the wrap.
    np.testing.assert_array_equal(model.queue.labels.numpy()[BATCH : 2 * BATCH], batch(1)[2])
    np.testing.assert_allclose(np.linalg.norm(model.queue.keys.numpy(), axis=1), 1.0, atol=1e-5)


def test_symmetric_loss_enqueues_both_views():
    model = tiny_model("moco", symmetric=True)
    fit_one(model)
    assert int(model.queue.pointer.numpy()) == 2 * BATCH


@pytest.mark.parametrize("method", sorted(tfascl.METHODS))
def test_every_method_trains_and_reports_its_monitors(method):
    backbone = None
    if method == "ascl":  # the paper's backbone, at a tiny width
        backbone = tfascl.build_backbone("resnet18", SIZE, WIDTH, num_splits=2)
    model = tiny_model(method, backbone)
    logs = fit_one(model).history
    assert np.isfinite(logs["loss"][0])
    if tfascl.METHODS[method].relabel_kind is not None:
        assert 0.0 <= logs["confidence"][0] <= 1.0
        assert 0.0 < logs["positive_weight"][0] <= 1.0
        assert 0.0 <= logs["purity"][0] <= 1.0
    if method == "moco":
        assert logs["positive_weight"][0] == 1.0 and "purity" not in logs


@pytest.mark.parametrize("method", ["sce", "ressl", "byol"])
def test_step_loss_is_the_paper_loss_of_the_models_own_query_key_and_queue(method):
    # The pure losses are checked against float64 NumPy in test_losses.py; this checks the
    # wiring: which view goes to which encoder, which temperature goes where, and that the
    # queue is the one before this step's keys. Temperatures differ from the defaults and
    # from each other, so a swap fails.
    if method == "byol":
        model = tiny_model(method)
    else:
        options = dict(temperature=0.2, target_temperature=0.07, shuffle_keys=False)
        model = tiny_model(method, **options, **({"sce_lambda": 0.3} if method == "sce" else {}))
        assert not model.symmetric
    # The momentum encoder starts as a copy of the online one, so the step's EMA (before its
    # keys) leaves it unchanged and the keys computed here are the step's keys.
    for key_weight, online_weight in zip(*model.momentum_pairs):
        np.testing.assert_array_equal(key_weight.numpy(), online_weight.numpy())
    strong, weak, _ = batch(0)
    strong, weak = tf.constant(strong), tf.constant(weak)
    if method == "byol":
        # BYOL: mean over the view orders of 2 − 2·cos(prediction(view), target key(other)).
        pairs = [(strong, weak), (weak, strong)] if model.symmetric else [(strong, weak)]
        assert model.symmetric  # build_model("byol") is symmetric, as BYOL's loss
        terms = []
        for view, other in pairs:
            p = np.asarray(model.predict_key(view), np.float64)
            k = np.asarray(model.encode_key(other), np.float64)
            p /= np.linalg.norm(p, axis=1, keepdims=True)
            k /= np.linalg.norm(k, axis=1, keepdims=True)
            terms.append(np.mean(2.0 - 2.0 * np.sum(p * k, axis=1)))
        expected = float(np.mean(terms))
    else:
        query = model.encode_query(strong)  # q of the strong view, k of the weak one
        key = model.encode_key(weak)
        queue = tf.constant(model.queue.keys.numpy())
        if method == "sce":
            expected = float(
                losses.sce_loss(query, key, queue, tau=0.2, target_temperature=0.07, lam=0.3)
            )
        else:
            expected = float(
                losses.ressl_loss(query, key, queue, tau_s=0.2, target_temperature=0.07)
            )
    got = fit_one(model).history["loss"][0]
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def np_relabel_targets(key, queue, relabel, target_temperature, num_neighbors):
    """Float64 targets [B, 1+M] and confidence c [B] of ASCL, AHCL and hard relabelling
    (the ASCL code's ``--type ascl|ahcl|hard``)."""
    logits = key @ queue.T / target_temperature  # [B, M]
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    confidence = 1.0 + (p * log_p).sum(axis=1) / np.log(queue.shape[0])
    if relabel == "ascl":
        extra = np.minimum(num_neighbors * confidence[:, None] * p, 1.0)
    else:
        top = np.argsort(-logits, axis=1, kind="stable")[:, :num_neighbors]  # [B, K]
        extra = np.zeros_like(p)
        weight = confidence[:, None] if relabel == "ahcl" else np.ones_like(top, float)
        np.put_along_axis(extra, top, weight, axis=1)
    targets = np.concatenate([np.ones((len(key), 1)), extra], axis=1)
    return targets / targets.sum(axis=1, keepdims=True), confidence


def np_soft_contrastive_loss(query, key, queue, targets, temperature):
    logits = np.concatenate([(query * key).sum(1, keepdims=True), query @ queue.T], 1)
    logits = logits / temperature
    logits -= logits.max(axis=1, keepdims=True)
    log_prob = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(np.mean(-(targets * log_prob).sum(axis=1)))


@pytest.mark.parametrize("method", ["ascl", "ahcl", "hard"])
def test_relabel_temperature_and_k_from_the_flags_reach_the_step(method):
    # τ′ (--relabel_temperature) and K (--num_neighbors) travel from the command line
    # through TrainConfig, the RunSpec (run.json) and the model's keywords into the step:
    # its loss and confidence are float64 NumPy's with exactly those values, and NumPy's
    # with the method's defaults (τ′ = 0.05, K = 1), or with either one left at its
    # default, is far outside the tolerance: a model that ignored either would fail (τ′
    # aside for hard relabelling, whose top-K does not depend on it).
    from types import SimpleNamespace

    from tfascl import train
    from tfascl.train_config import check_replicas, config_from_args

    tau, tau_prime, k = 0.2, 0.1, 3
    args = [f"--method={method}", f"--temperature={tau}", f"--relabel_temperature={tau_prime}",
            f"--num_neighbors={k}", f"--batch_size={BATCH}", f"--queue_size={QUEUE}",
            "--num_splits=2", "--projector_dims=16,8"]  # fmt: skip
    config = check_replicas(config_from_args(args), replicas=1)
    run_data = train.RunData(SimpleNamespace(mean=(0.5,) * 3, std=(0.5,) * 3), None, None, 3)
    spec = train.make_spec(config, run_data, total_steps=4)
    assert (spec.target_temperature, spec.num_neighbors) == (tau_prime, k)
    keras.utils.set_random_seed(0)
    model = tfascl.build_model(
        spec.method,
        tiny_backbone(),
        projector_dims=tuple(spec.projector_dims),
        num_splits=spec.num_splits,
        norm=spec.norm,
        **spec.model_options(),
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    assert (model.relabel, model.target_temperature, model.num_neighbors) == (method, tau_prime, k)

    # The step's keys: the momentum encoder is still the online one's copy (the step's EMA
    # leaves it so) and the shuffle-BN permutation is the first step's.
    strong, weak, labels = batch(0)
    key = np.asarray(model.encode_key(tf.constant(weak)), np.float64)  # [B, D]
    query = np.asarray(model.encode_query(tf.constant(strong)), np.float64)  # [B, D]
    queue = model.queue.keys.numpy().astype(np.float64)  # [M, D], before the step's keys

    def expected(target_temperature, num_neighbors):
        targets, confidence = np_relabel_targets(
            key, queue, method, target_temperature, num_neighbors
        )
        loss = np_soft_contrastive_loss(query, key, queue, targets, tau)
        return loss, float(confidence.mean())

    logs = model.fit((strong, weak), labels, batch_size=BATCH, verbose=0, shuffle=False).history
    got_loss, got_confidence = logs["loss"][0], logs["confidence"][0]
    want_loss, want_confidence = expected(tau_prime, k)
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    assert got_confidence == pytest.approx(want_confidence, rel=1e-4, abs=1e-6)
    # Hard relabelling's targets are 1 on the top-K keys whatever τ′ (it orders, no more).
    others = [(0.05, 1), (tau_prime, 1)] + ([] if method == "hard" else [(0.05, k)])
    for other in others:  # the defaults, each alone
        other_loss, _ = expected(*other)
        assert abs(other_loss - want_loss) > 100 * 1e-5 * want_loss, other


def test_views_turn_raw_images_into_pairs_inside_the_step():
    seen = []

    def views(images):
        seen.append(images.shape)
        images = tf.cast(images, tf.float32) / 255.0
        return images, tf.image.flip_left_right(images)

    model = tiny_model("ascl", views=views)
    images = np.random.default_rng(0).integers(0, 255, (BATCH, SIZE, SIZE, 3), dtype=np.uint8)
    logs = model.fit(images, np.zeros(BATCH), batch_size=BATCH, epochs=1, verbose=0).history
    assert seen and np.isfinite(logs["loss"][0])


def test_single_images_without_views_is_a_clear_error():
    model = tiny_model("ascl")
    images = np.zeros((BATCH, SIZE, SIZE, 3), np.float32)
    with pytest.raises(ValueError, match="views="):
        model.fit(images, np.zeros(BATCH), batch_size=BATCH, epochs=1, verbose=0)


def test_queue_size_must_be_a_multiple_of_the_batch():
    with pytest.raises(ValueError, match="queue_size=30 must be a multiple"):
        tiny_model("ascl", queue_size=30, batch_size=BATCH)
    with pytest.raises(ValueError, match="queue_size=40 must be a multiple"):
        KeyQueue(40, 8, batch_size=16)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="method must be one of"):
        tiny_model("swav")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        tiny_model("ascl", temperature=0.0)


def test_split_batchnorm_normalises_each_group_and_averages_moving_stats():
    layer = SplitBatchNorm(num_splits=2, momentum=0.0, epsilon=0.0, center=False, scale=False)
    x = np.concatenate([np.full((2, 3), 1.0), np.full((2, 3), 5.0)])
    x[0] += 1.0
    x[2] += 2.0
    y = layer(tf.constant(x, tf.float32), training=True).numpy()
    want = np.concatenate([(g - g.mean(0)) / np.sqrt(g.var(0)) for g in (x[:2], x[2:])])
    np.testing.assert_allclose(y, want, atol=1e-5)
    np.testing.assert_allclose(
        layer.moving_mean.numpy(), (x[:2].mean(0) + x[2:].mean(0)) / 2, atol=1e-6
    )


@pytest.mark.parametrize("shape", [(8, 3, 3, 4), (6, 5)])
def test_split_batch_norm_gradient_matches_float64_autodiff(shape):
    # The closed-form backward pass against TensorFlow's autodiff of the plain formula in
    # float64: per group (consecutive samples) y = γ·(x − μ)/√(σ² + ε) + β.
    splits, epsilon = 2, 1e-3
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 3 + 1
    gamma, beta = rng.random(shape[-1]) + 0.5, rng.standard_normal(shape[-1])
    upstream = rng.standard_normal(shape)

    def gradients(x, gamma, beta, function):
        x, gamma, beta = (tf.constant(v) for v in (x, gamma, beta))
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            y = function(x, gamma, beta)
            loss = tf.reduce_sum(y * upstream)
        return [y.numpy(), *(g.numpy() for g in tape.gradient(loss, [x, gamma, beta]))]

    def reference(x, gamma, beta):
        groups = tf.reshape(x, (splits, -1, *shape[1:]))
        axes = list(range(1, len(shape)))
        mean = tf.reduce_mean(groups, axes, keepdims=True)
        variance = tf.reduce_mean((groups - mean) ** 2, axes, keepdims=True)
        y = (groups - mean) / tf.sqrt(variance + epsilon) * gamma + beta
        return tf.reshape(y, shape)

    want = gradients(x, gamma, beta, reference)
    got = gradients(
        *(v.astype(np.float32) for v in (x, gamma, beta)),
        lambda x, g, b: split_batch_norm(x, g, b, splits, epsilon)[0],
    )
    for name, g, w in zip(("y", "dx", "dgamma", "dbeta"), got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)


def test_checkpoint_restores_the_run_exactly(tmp_path):
    # Shuffle BN draws a permutation per step; with it off the next step is
    # deterministic, so continuing and restoring must agree to float precision.
    def make():
        return tiny_model("ascl", shuffle_keys=False)

    model = make()
    for step in range(2):
        fit_one(model, seed=step)
    path = model.checkpoint().save(str(tmp_path / "ckpt"))
    want = fit_one(model, seed=2).history["loss"][0]
    want_queue = model.queue.keys.numpy()

    restored = make()
    restored.checkpoint().restore(path).assert_existing_objects_matched()
    assert int(restored.optimizer.iterations.numpy()) == 2
    got = fit_one(restored, seed=2).history["loss"][0]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(restored.queue.keys.numpy(), want_queue, atol=1e-5)


def test_jit_compiled_step_matches_eager():
    results = []
    for jit in (False, True):
        model = tiny_model("ascl", shuffle_keys=False)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=jit)
        results.append([fit_one(model, seed=s).history["loss"][0] for s in range(2)])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4)


def test_momentum_cosine_schedule_reaches_one():
    # Every step against BYOL's m = 1 − (1 − m₀)(cos(πk/K) + 1)/2, held at 1 after K:
    # a linear ramp (or any other) from m₀ to 1 differs by ~1e-3 in between.
    total = 10
    model = tiny_model("byol", total_steps=total)
    assert model.base_momentum == 0.99
    for step in range(total + 3):
        model.optimizer.iterations.assign(step)
        progress = min(step, total) / total
        expected = 1.0 - (1.0 - 0.99) * (math.cos(math.pi * progress) + 1.0) / 2.0
        assert float(model.current_momentum()) == pytest.approx(expected, abs=2e-7), step
    assert isinstance(tiny_model("moco"), MomentumContrast)


@pytest.mark.parametrize(
    ("depth", "stem", "size", "features"),
    [
        ("resnet18", "cifar", 32, 8 * WIDTH),
        ("resnet34", "cifar_pool", 64, 8 * WIDTH),
        ("resnet50", "imagenet", 64, 32 * WIDTH),
    ],
)
def test_resnet_shapes_and_stems(depth, stem, size, features):
    model = tfascl.models.resnet(depth, image_size=size, stem=stem, width=WIDTH, norm="batch")
    out = model(np.zeros((2, size, size, 3), np.float32), training=False)
    assert out.shape == (2, features)
    first = model.get_layer("stem_conv")
    assert first.kernel_size == ((7, 7) if stem == "imagenet" else (3, 3))
    assert first.strides == ((2, 2) if stem == "imagenet" else (1, 1))
    has_pool = any(layer.name == "stem_pool" for layer in model.layers)
    assert has_pool == (stem != "cifar")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_step_keeps_float32_losses_and_queue(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = tiny_model("ascl")
        strong, weak, _ = batch()
        assert model.backbone(strong).dtype != tf.float32  # really computing in 16 bits
        loss, _, keys, targets, _ = model.forward_backward(
            tf.constant(strong), tf.constant(weak), tf.constant(model.queue.keys.numpy())
        )
        assert loss.dtype == tf.float32 and targets.dtype == tf.float32
        assert keys[0].dtype == tf.float32
        logs = fit_one(model).history
        assert np.isfinite(logs["loss"][0])
        assert model.queue.keys.dtype == "float32"
        if policy == "mixed_float16":  # Keras wraps the optimizer for loss scaling
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_purity_counts_target_mass_on_known_same_class_neighbours():
    model = tiny_model("ascl")
    targets = tf.constant([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]])  # mass on 3 neighbours
    neighbor_labels = tf.constant([1, -1, 2])
    labels = tf.constant([1, -1])  # the second query is unlabelled: -1 matches nothing
    logs = model.update_monitors(
        tf.constant(1.0),
        tf.constant(0.99),
        neighbor_targets=targets,
        neighbor_labels=neighbor_labels,
        labels=labels,
    )
    # Same-class mass: 0.5 (query 0 on neighbour 0) out of 2.0 in all.
    assert float(logs["purity"]) == pytest.approx(0.25)
