"""Tests for tfascl.optim against float64 NumPy implementations of the documented formulas."""

import copy
import math
import re
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfascl.optim import (
    BN_AND_BIAS_PATTERNS,
    LARS,
    CoupledSGD,
    build_optimizer,
    multistep_decay,
    scaled_learning_rate,
    warmup_cosine,
)

# ----------------------------------------------------------------------------- references


def warmup_cosine_ref(step, base, total, warmup, final=0.0, start=0.0):
    if step < warmup:
        return start + (base - start) * step / warmup
    if step >= total:
        return final
    progress = (step - warmup) / (total - warmup)
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * progress))


def schedule_values(schedule, steps, base, warmup, start):
    """The schedule's own float32 values (checked against the closed form here), so that the
    float64 optimizer references see exactly the learning rates the optimizer saw."""
    lrs = [float(schedule(t)) for t in range(steps)]
    want = [warmup_cosine_ref(t, base, steps, warmup, start=start) for t in range(steps)]
    np.testing.assert_allclose(lrs, want, rtol=1e-6, atol=1e-9)
    return lrs


def lars_ref(ws, grads, lrs, *, momentum, wd, eta, eps, nesterov, decay, adapt):
    """LARS (SimCLR form) in float64: ws[i] variables, grads[t][i], lrs[t], masks per var."""
    ws = [np.array(w, np.float64) for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    for g_t, lr in zip(grads, lrs):
        for i, g in enumerate(g_t):
            w = ws[i]
            g = np.asarray(g, np.float64) + (wd * w if decay[i] else 0.0)
            trust = 1.0
            if adapt[i]:
                w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
                if w_norm > 0 and g_norm > 0:
                    trust = eta * w_norm / (g_norm + eps)
            vs[i] = momentum * vs[i] + lr * trust * g
            step = momentum * vs[i] + lr * trust * g if nesterov else vs[i]
            ws[i] = w - step
    return ws


def torch_sgd_ref(ws, grads, lrs, *, momentum, wd, nesterov, decay):
    """torch.optim.SGD.step (dampening=0) in float64."""
    ws = [np.array(w, np.float64) for w in ws]
    bufs = [None] * len(ws)
    for g_t, lr in zip(grads, lrs):
        for i, g in enumerate(g_t):
            d_p = np.asarray(g, np.float64)
            if wd and decay[i]:
                d_p = d_p + wd * ws[i]
            if momentum:
                bufs[i] = d_p.copy() if bufs[i] is None else momentum * bufs[i] + d_p
                d_p = d_p + momentum * bufs[i] if nesterov else bufs[i]
            ws[i] = ws[i] - lr * d_p
    return ws


def run_steps(opt, init, grads, dtype="float64"):
    """Applies grads[t] eagerly, one optimizer step per t; returns final numpy values."""
    variables = [keras.Variable(w, name=name, dtype=dtype) for name, w in init]
    for g_t in grads:
        opt.apply([tf.constant(g, dtype) for g in g_t], variables)
    return [v.numpy() for v in variables]


def random_problem(seed, steps=4, zero_grad_step=None):
    rng = np.random.default_rng(seed)
    init = [
        ("kernel", rng.normal(size=(3, 4))),
        ("bias", rng.normal(size=(4,))),
        ("w_zero", np.zeros((2, 2))),  # ||w|| = 0 on the first step -> trust 1
        ("other", rng.normal(size=(5,))),
    ]
    grads = []
    for t in range(steps):
        g_t = [rng.normal(size=w.shape) for _, w in init]
        if t == zero_grad_step:
            g_t[3] = np.zeros_like(g_t[3])
        grads.append(g_t)
    return init, grads


# ------------------------------------------------------------------------------------ LARS


@pytest.mark.parametrize(
    ("wd", "eps", "nesterov", "momentum"),
    [
        (0.0, 0.0, False, 0.9),
        (0.05, 0.0, False, 0.9),
        (0.05, 1e-2, True, 0.8),
        (0.05, 0.0, False, 0.0),
    ],
)
def test_lars_matches_numpy(wd, eps, nesterov, momentum):
    steps = 5
    init, grads = random_problem(seed=1, steps=steps, zero_grad_step=2)
    schedule = warmup_cosine(0.8, total_steps=steps, warmup_steps=2, warmup_start_lr=0.2)
    lrs = schedule_values(schedule, steps, 0.8, 2, start=0.2)
    eta = 0.05  # large enough that trust != 1 moves the weights visibly
    opt = LARS(
        schedule,
        momentum=momentum,
        weight_decay=wd,
        trust_coefficient=eta,
        eps=eps,
        nesterov=nesterov,
        exclude_from_weight_decay=["bias"],
    )
    got = run_steps(opt, init, grads)
    want = lars_ref(
        [w for _, w in init],
        grads,
        lrs,
        momentum=momentum,
        wd=wd,
        eta=eta,
        eps=eps,
        nesterov=nesterov,
        decay=[True, False, True, True],
        adapt=[True, False, True, True],
    )
    for (name, w0), g, r in zip(init, got, want):
        assert not np.allclose(r, w0), name  # every variable moves, so a no-op would fail
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12, err_msg=name)


def test_lars_zero_gradient_without_decay_keeps_trust_one():
    # g' = 0 (wd = 0): trust must be 1, not 0/0; the update is then the momentum term only.
    init = [("kernel", np.ones((2, 2)))]
    grads = [[np.full((2, 2), 0.5)], [np.zeros((2, 2))]]
    opt = LARS(0.125, momentum=0.9, trust_coefficient=0.01)
    (got,) = run_steps(opt, init, grads)
    (want,) = lars_ref(
        [init[0][1]],
        grads,
        [0.125, 0.125],
        momentum=0.9,
        wd=0.0,
        eta=0.01,
        eps=0.0,
        nesterov=False,
        decay=[True],
        adapt=[True],
    )
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_lars_separate_layer_adaptation_exclusion():
    init, grads = random_problem(seed=2, steps=3)
    opt = LARS(
        0.5,
        weight_decay=0.05,
        trust_coefficient=0.05,
        exclude_from_weight_decay=["bias"],
        exclude_from_layer_adaptation=["other"],
    )
    got = run_steps(opt, init, grads)
    want = lars_ref(
        [w for _, w in init],
        grads,
        [0.5] * 3,
        momentum=0.9,
        wd=0.05,
        eta=0.05,
        eps=0.0,
        nesterov=False,
        decay=[True, False, True, True],
        adapt=[True, True, True, False],
    )
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)


def test_lars_ignores_keras_decoupled_decay():
    # If Keras' own `w -= lr * wd * w` also ran, a zero-gradient, trust-free step would shrink
    # w by lr*wd twice over; with coupled decay only, w -= lr * wd * w exactly once.
    w0 = np.array([1.0, -2.0])
    # Excluded from adaptation (trust 1), so the whole step is lr * (0 + wd * w).
    opt = LARS(0.125, momentum=0.0, weight_decay=0.5, exclude_from_layer_adaptation=["w"])
    (got,) = run_steps(opt, [("w", w0)], [[np.zeros(2)]])
    np.testing.assert_allclose(got, w0 * (1 - 0.125 * 0.5), rtol=1e-12)


def _tiny_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Dense(3),
        ]
    )


def _train(model, opt, xs, ys, *, jit):
    model_vars = model.trainable_variables
    opt.build(model_vars)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply(tape.gradient(loss, model_vars), model_vars)
        return loss

    if jit:
        step = tf.function(step, jit_compile=True)
    for x, y in zip(xs, ys):
        step(x, y)
    return [v.numpy() for v in model.weights]


def test_lars_jit_matches_eager():
    rng = np.random.default_rng(0)
    xs = [tf.constant(rng.normal(size=(16, 6)), tf.float32) for _ in range(4)]
    ys = [tf.constant(rng.integers(0, 3, size=16)) for _ in range(4)]
    results = []
    for jit in (False, True):
        opt = build_optimizer("lars", warmup_cosine(2.0, 4, 1), weight_decay=1e-3)
        results.append(_train(_tiny_model(0), opt, xs, ys, jit=jit))
    init = [v.numpy() for v in _tiny_model(0).weights]
    for e, j in zip(*results):
        np.testing.assert_allclose(j, e, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(e, w0) for e, w0 in zip(results[0], init))


# ----------------------------------------------------------------------------- CoupledSGD


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.9, False), (0.9, True), (0.0, False)])
def test_coupled_sgd_matches_torch_formula(momentum, nesterov):
    steps = 4
    init, grads = random_problem(seed=3, steps=steps)
    # A changing lr separates PyTorch's `w -= lr * buf` from Keras' lr-inside-buffer form.
    schedule = warmup_cosine(0.3, total_steps=steps, warmup_steps=1, warmup_start_lr=0.1)
    lrs = schedule_values(schedule, steps, 0.3, 1, start=0.1)
    wd = 0.05
    opt = CoupledSGD(
        schedule,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=wd,
        exclude_from_weight_decay=["bias"],
    )
    got = run_steps(opt, init, grads)
    decay = [True, False, True, True]
    want = torch_sgd_ref(
        [w for _, w in init], grads, lrs, momentum=momentum, wd=wd, nesterov=nesterov, decay=decay
    )
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)

    if momentum:
        # Keras SGD (decoupled decay, lr inside the buffer) is measurably different, so the
        # comparison above can tell the two apart.
        keras_opt = keras.optimizers.SGD(
            schedule, momentum=momentum, nesterov=nesterov, weight_decay=wd
        )
        keras_opt.exclude_from_weight_decay(var_names=["bias"])
        other = run_steps(keras_opt, init, grads)
        assert not np.allclose(other[0], want[0], rtol=1e-6)


# ------------------------------------------------------------------------------ schedules
# The formulas in float64, written out here (independent of tfascl and of Keras): every
# step of each configuration is compared, so the warm-up's last step, its end, the first
# cosine step and the last training step are all among them.


def warmup_cosine_np(steps, base, total, warmup, final=0.0, start=0.0):
    """Linear warm-up from ``start`` to ``base`` over ``warmup`` steps, cosine to ``final``
    at ``total``, ``final`` after; float64."""
    s = np.asarray(steps, np.float64)
    progress = np.clip((s - warmup) / max(total - warmup, 1), 0.0, 1.0)
    lr = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * progress))
    if warmup:
        lr = np.where(s < warmup, start + (base - start) * s / warmup, lr)
    return np.where(s >= total, final, lr)


def multistep_np(steps, base, steps_per_epoch, milestones, gamma):
    """PyTorch's MultiStepLR per step: ``base * gamma ** #{m : epoch >= m}``; float64."""
    epoch = np.asarray(steps) // steps_per_epoch
    passed = sum(((epoch >= m).astype(np.int64) for m in milestones), np.zeros_like(epoch))
    return base * np.float64(gamma) ** passed


def schedule_at(schedule, steps):
    """The schedule's float32 values at int64 step tensors, as the optimizer calls it."""
    return np.array([float(schedule(tf.constant(t, tf.int64))) for t in steps])


# (learning_rate, scale_lr, batch_size, epochs, steps_per_epoch, warmup_epochs, schedule)
TRAIN_SCHEDULES = [
    (0.3, False, 16, 3, 7, 0, "cosine"),  # no warm-up, cosine to 0
    (0.5, False, 16, 4, 5, 1, "cosine"),  # one warm-up epoch
    (0.5, False, 16, 3, 6, 1.3, "cosine"),  # fractional: round(7.8) = 8 warm-up steps
    (0.5, False, 16, 3, 5, 0.5, "cosine"),  # round(2.5) = 2 (Python rounds half to even)
    (0.06, True, 512, 3, 4, 1, "cosine"),  # peak scaled by 512 / 256
    (0.2, False, 16, 3, 4, 1, "constant"),  # warm-up, then constant (alpha = 1)
    (0.2, False, 16, 2, 4, 2, "cosine"),  # warm-up over the whole run (W = T)
]


@pytest.mark.parametrize("case", TRAIN_SCHEDULES)
def test_train_schedule_matches_formula_at_every_step(case):
    from tfascl.train import TrainConfig, learning_rate_schedule

    lr, scale, batch, epochs, steps_per_epoch, warmup_epochs, kind = case
    config = TrainConfig(
        learning_rate=lr, scale_lr=scale, batch_size=batch, epochs=epochs,
        warmup_epochs=warmup_epochs, schedule=kind,
    )  # fmt: skip
    peak = lr * batch / 256 if scale else lr
    total, warmup = epochs * steps_per_epoch, round(warmup_epochs * steps_per_epoch)
    final = peak if kind == "constant" else 0.0
    # Every training step, and past the end unless the warm-up is the whole run (there Keras
    # reaches `final` one step after T; see optim.warmup_cosine).
    steps = range(total + (2 if warmup < total else 0))
    want = warmup_cosine_np(steps, peak, total, warmup, final)
    schedule = learning_rate_schedule(config, steps_per_epoch)
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    np.testing.assert_allclose(schedule_at(schedule, steps), want, rtol=1e-6, atol=1e-7 * peak)
    if warmup:  # the warm-up really is linear: the mid-point is half the peak
        assert want[warmup // 2] == pytest.approx(peak * (warmup // 2) / warmup)


# (base, total, warmup, final, start)
COSINE_SCHEDULES = [
    (0.4, 50, 10, 0.01, 0.02),  # alpha > 0 and a warm-up that starts above 0
    (1.0, 12, 0, 0.1, 0.0),  # alpha > 0 without warm-up
    (0.8, 5, 2, 0.0, 0.2),  # the optimizer tests' schedule
    (2.0, 4, 1, 0.0, 0.0),
]


@pytest.mark.parametrize("case", COSINE_SCHEDULES)
def test_warmup_cosine_matches_formula_at_every_step(case):
    base, total, warmup, final, start = case
    steps = range(total + 3)
    want = warmup_cosine_np(steps, base, total, warmup, final, start)
    schedule = warmup_cosine(base, total, warmup, final_lr=final, warmup_start_lr=start)
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    np.testing.assert_allclose(schedule_at(schedule, steps), want, rtol=1e-6, atol=1e-7 * base)
    # Mid-cosine is the mean of base and final (a linear decay would pass the endpoints).
    if (total - warmup) % 2 == 0:
        middle = warmup + (total - warmup) // 2
        assert want[middle] == pytest.approx((base + final) / 2)


def test_warmup_cosine_arguments_and_xla():
    jitted = tf.function(lambda s: warmup_cosine(1.0, 100, 10)(s), jit_compile=True)
    assert float(jitted(tf.constant(55, tf.int64))) == pytest.approx(
        float(warmup_cosine_np([55], 1.0, 100, 10)[0]), rel=1e-6
    )
    for bad in ({"total_steps": 5, "warmup_steps": 6}, {"total_steps": 5, "warmup_steps": -1}):
        with pytest.raises(ValueError, match="warmup_steps"):
            warmup_cosine(1.0, **bad)
    with pytest.raises(ValueError, match="base_lr > 0"):
        warmup_cosine(0.0, 10)


# (base, steps_per_epoch, epochs, milestones, gamma)
MULTISTEP_SCHEDULES = [
    (10.0, 7, 5, (2, 3), 0.1),
    (1.0, 3, 6, (4, 1), 0.5),  # milestones in any order
    (1.0, 3, 5, (2, 2), 0.1),  # a milestone twice counts twice, as in PyTorch
    (1.0, 4, 3, (0, 2), 0.1),  # milestone 0: decayed from the first step
    (0.3, 2, 3, (), 0.1),  # no milestones: constant
]


@pytest.mark.parametrize("case", MULTISTEP_SCHEDULES)
def test_multistep_decay_matches_formula_at_every_step(case):
    base, steps_per_epoch, epochs, milestones, gamma = case
    steps = range(epochs * steps_per_epoch)
    want = multistep_np(steps, base, steps_per_epoch, milestones, gamma)
    schedule = multistep_decay(base, steps_per_epoch, milestones, gamma)
    np.testing.assert_allclose(schedule_at(schedule, steps), want, rtol=1e-6)
    changes = {m for m in milestones if 0 < m < epochs}
    assert len(set(want.tolist())) == len(changes) + 1  # each milestone is a change


def test_scaled_learning_rate():
    assert scaled_learning_rate(0.3, 4096) == pytest.approx(4.8)
    assert scaled_learning_rate(0.05, 128, reference_batch=256) == pytest.approx(0.025)
    with pytest.raises(ValueError):
        scaled_learning_rate(0.1, 0)


# ------------------------------------------------------------------------------ exclusion


def _exclusion_model():
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="dense"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.LayerNormalization(name="ln"),
            # Its kernel must still decay: plain substring matching of "beta" in the TF
            # variable name ("beta_proj/kernel:0") would exclude it.
            keras.layers.Dense(2, name="beta_proj"),
        ]
    )


@pytest.mark.parametrize("name", ["sgd", "lars", "adamw", "lamb"])
@pytest.mark.parametrize("exclude", [True, False])
def test_weight_decay_exclusion(name, exclude):
    model = _exclusion_model()
    variables = model.trainable_variables
    rng = np.random.default_rng(0)
    for v in variables:  # biases and betas start at 0, where decay would be invisible
        v.assign(rng.normal(size=v.shape) + 2.0)
    before = {v.path: v.numpy().copy() for v in variables}
    opt = build_optimizer(name, 0.1, weight_decay=0.1, exclude_bn_and_bias=exclude)
    # With zero gradients only weight decay can move a variable.
    opt.apply([tf.zeros_like(v) for v in variables], variables)
    changed = {v.path for v in variables if not np.array_equal(before[v.path], v.numpy())}
    kernels = {p for p in before if p.endswith("kernel")}
    assert len(kernels) == 2
    assert changed == (kernels if exclude else set(before))
    if exclude:
        for excluded in ("dense/bias", "bn/gamma", "bn/beta", "ln/gamma", "ln/beta"):
            assert any(p.endswith(excluded) for p in before) and not any(
                p.endswith(excluded) for p in changed
            )


def test_bn_and_bias_patterns_spellings():
    pattern = re.compile("|".join(BN_AND_BIAS_PATTERNS))
    for name in ["bias", "gamma", "dense/bias:0", "m/bn/beta:0", "m/bn/gamma/replica_1:0"]:
        assert pattern.search(name), name
    for name in ["kernel", "m/beta_proj/kernel:0", "m/bias_net/kernel:0", "m/dense/kernel:0"]:
        assert not pattern.search(name), name


def test_unknown_optimizer_name():
    with pytest.raises(ValueError, match="sgd, lars, adamw, lamb"):
        build_optimizer("adam", 0.1)
    assert isinstance(build_optimizer("LARS", 0.1), LARS)
    assert isinstance(build_optimizer("adamw", 0.1), keras.optimizers.AdamW)
    assert isinstance(build_optimizer("lamb", 0.1), keras.optimizers.Lamb)


# ---------------------------------------------------------------------------- get_config


@pytest.mark.parametrize("name", ["lars", "sgd"])
def test_get_config_round_trip(name):
    sched = warmup_cosine(0.5, 10, 2, final_lr=0.01, warmup_start_lr=0.1)
    opt = build_optimizer(name, sched, weight_decay=0.05, momentum=0.8, nesterov=True)
    config = opt.get_config()
    # Keras' Optimizer.from_config overwrites config["learning_rate"] in place, hence the copy.
    clone = type(opt).from_config(copy.deepcopy(config))
    assert clone.get_config() == config
    assert config["weight_decay"] == 0.05
    assert config["exclude_from_weight_decay"] == list(BN_AND_BIAS_PATTERNS)
    clone2 = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(clone2) is type(opt) and clone2.get_config() == config
    assert type(sched).from_config(sched.get_config()).get_config() == sched.get_config()

    # The clone behaves identically, exclusions included.
    init, grads = random_problem(seed=4, steps=3)
    for a, b in zip(run_steps(opt, init, grads), run_steps(clone, init, grads)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- distribution

_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf, keras
    from tfascl.optim import build_optimizer, warmup_cosine

    def make(name):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                                  keras.layers.LayerNormalization(), keras.layers.Dense(3)])
        opt = build_optimizer(name, warmup_cosine(1.0, 4, 1), weight_decay=1e-2)
        return model, opt

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8, 6)).astype("float32")
    y = rng.integers(0, 3, size=(4, 8))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="sum")

    for name in ("lars", "sgd"):
        model, opt = make(name)
        for xb, yb in zip(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb)) / 8.0
            opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        want = [v.numpy() for v in model.weights]

        strategy = STRATEGY  # the session's one MirroredStrategy (tests/conftest.py)
        with strategy.scope():
            dmodel, dopt = make(name)
            # Built up front, as model.fit does: letting apply() create the slots inside the
            # tf.function's replica context fails (in Keras SGD as well).
            dopt.build(dmodel.trainable_variables)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).unbatch().batch(8)
        dist = strategy.experimental_distribute_dataset(ds)

        @tf.function
        def step(xb, yb):
            def replica(xb, yb):
                with tf.GradientTape() as tape:
                    loss = loss_fn(yb, dmodel(xb)) / 8.0
                grads = tape.gradient(loss, dmodel.trainable_variables)
                dopt.apply(grads, dmodel.trainable_variables)
            strategy.run(replica, args=(xb, yb))

        for xb, yb in dist:
            step(xb, yb)
        assert strategy.num_replicas_in_sync == 2
        for a, b in zip(dmodel.weights, want):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-6)
    print("MIRRORED_OK")
    """
)


@pytest.mark.multi_device
def test_mirrored_strategy_matches_single_device(two_cpus, capsys):
    # On the two logical CPUs tests/conftest.py configures before TF initialises.
    exec(_MIRRORED_SCRIPT, {"STRATEGY": two_cpus})
    assert "MIRRORED_OK" in capsys.readouterr().out
