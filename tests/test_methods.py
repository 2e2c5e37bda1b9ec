"""The methods ASCL is measured against (SimCLR, DCL, NNCLR, MSF, Co2, MoCo+DCL) and the
relabelling plug-in, as models: the step's loss is the method's loss of the model's own
tensors, two replicas equal one device, a checkpoint resumes exactly, the command line
trains each, and a .keras file round-trips. The losses themselves are checked against
float64 NumPy transcriptions of the official code in test_losses_family.py."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import FOUR_STEP_EPOCH_FLAGS, train_in_process

from tfascl import losses
from tfascl.models import method_name
from tfascl.models.registry import build_model
from tfascl.train_config import FlagError, TrainConfig, validate

SIZE, BATCH, QUEUE, STEPS = 8, 16, 64, 3
NEW = ("simclr", "dcl", "nnclr", "msf", "co2", "moco_dcl")


def dense_backbone():
    """Images → features through one Dense layer: the replica checks then compare the
    methods' cross-replica logic (gathers, offsets, queues), not how oneDNN picks a
    convolution algorithm for each batch shape."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Dense(32, name="features")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.ReLU()(x))


def make(method, norm="split", seed=0, **options):
    keras.utils.set_random_seed(seed)
    model = build_model(
        method,
        dense_backbone(),
        projector_dims=(32, 16),
        norm=norm,
        num_splits=2,
        queue_size=QUEUE,
        batch_size=BATCH,
        **options,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return model


def data(steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    n = BATCH * steps
    views = tuple(rng.random((n, SIZE, SIZE, 3), dtype=np.float32) for _ in range(2))
    return views, np.arange(n) % 4


def fit(model, steps=STEPS, seed=0):
    views, labels = data(steps, seed)
    dataset = tf.data.Dataset.from_tensor_slices((views, labels)).batch(BATCH)
    return model.fit(dataset, epochs=1, verbose=0, shuffle=False).history


def trained_weights(model):
    weights = list(model.online_weights)
    if hasattr(model, "momentum_pairs"):
        weights += model.momentum_pairs[0]
    return [np.asarray(w.numpy() if hasattr(w, "numpy") else w) for w in weights]


def per_replica(variable):
    value = variable.value
    return list(getattr(value, "values", (value,)))


def first_batch():
    (strong, weak), labels = data(1)
    return tf.constant(strong), tf.constant(weak), labels


# --- The step's loss is the method's loss -----------------------------------------------


def test_simclr_step_is_nt_xent_of_its_two_views_and_dcl_debiases_it():
    strong, weak, _ = first_batch()
    for method, options in (("simclr", {"temperature": 0.3}), ("dcl", {"temperature": 0.4})):
        model = make(method, **options)
        z_a, z_b = model.encode_query(strong), model.encode_query(weak)
        prior = 0.1 if method == "dcl" else 0.0
        expected = float(losses.nt_xent_loss(z_a, z_b, options["temperature"], debias_prior=prior))
        got = fit(model, steps=1)["loss"][0]
        assert got == pytest.approx(expected, rel=1e-5)
        # The other method's loss on the same embeddings differs: the objective is wired.
        other = float(
            losses.nt_xent_loss(z_a, z_b, options["temperature"], debias_prior=0.1 - prior)
        )
        assert abs(other - expected) > 1e-3


def test_simclr_with_ascl_targets_is_ascls_formula_on_the_in_batch_keys():
    # --method=simclr --relabel=ascl: anchor a_i's targets over the other view's rows b_j
    # are 1 on b_i and min(K·c·p_ij, 1) elsewhere, p the softmax over j ≠ i of b_i·b_j/τ′,
    # c = 1 − H(p)/log(N−1), each row normalised; and symmetrically for the b anchors.
    tau, tau_prime, k = 0.3, 0.07, 2
    model = make(
        "simclr", relabel="ascl", temperature=tau, target_temperature=tau_prime, num_neighbors=k
    )
    assert model.relabel == "ascl" and method_name(model) == "simclr"
    strong, weak, _ = first_batch()
    z_a = np.asarray(model.encode_query(strong), np.float64)
    z_b = np.asarray(model.encode_query(weak), np.float64)

    def ascl_targets(keys):
        n = len(keys)
        logits = keys @ keys.T / tau_prime
        np.fill_diagonal(logits, -np.inf)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
        confidence = 1.0 - entropy / np.log(n - 1)
        targets = np.minimum(k * confidence[:, None] * p, 1.0) + np.eye(n)
        return targets / targets.sum(axis=1, keepdims=True)

    def soft_loss(anchors, same, other, targets):
        n = len(anchors)
        logits = np.concatenate([anchors @ other.T, anchors @ same.T - 1e9 * np.eye(n)], 1) / tau
        logits -= logits.max(axis=1, keepdims=True)
        log_prob = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        full = np.concatenate([targets, np.zeros_like(targets)], axis=1)
        return -(full * log_prob).sum(axis=1).mean()

    expected = 0.5 * (
        soft_loss(z_a, z_a, z_b, ascl_targets(z_b)) + soft_loss(z_b, z_b, z_a, ascl_targets(z_a))
    )
    targets, _ = model.relabel_targets(
        tf.constant(z_b, tf.float32), tf.constant(z_b, tf.float32), 0
    )
    np.testing.assert_allclose(targets.numpy(), ascl_targets(z_b), atol=2e-5)
    logs = fit(model, steps=1)
    assert logs["loss"][0] == pytest.approx(expected, rel=1e-4)
    assert 0.0 <= logs["confidence"][0] <= 1.0 and 0.0 < logs["positive_weight"][0] <= 1.0
    # Without the relabelling the targets are one-hot and the loss is NT-Xent's, not this.
    plain = float(losses.nt_xent_loss(tf.constant(z_a), tf.constant(z_b), tau))
    assert abs(plain - expected) > 1e-4


def test_nnclr_step_uses_the_support_sets_nearest_neighbour_and_fills_it():
    model = make("nnclr", temperature=0.2)
    strong, weak, labels = first_batch()
    support = tf.constant(model.queue.keys.numpy())
    z_a, p_a = model.project_and_predict(strong)
    z_b, p_b = model.project_and_predict(weak)
    nn_a, rows = losses.nearest_neighbors(z_a, support)
    nn_b, _ = losses.nearest_neighbors(z_b, support)
    # The neighbour is the support row of largest cosine (float64 NumPy).
    cosine = np.asarray(z_a, np.float64) @ np.asarray(support, np.float64).T
    np.testing.assert_array_equal(rows.numpy(), cosine.argmax(axis=1))
    expected = 0.5 * float(losses.nnclr_loss(nn_a, p_b, 0.2) + losses.nnclr_loss(nn_b, p_a, 0.2))
    logs = fit(model, steps=1)
    assert logs["loss"][0] == pytest.approx(expected, rel=1e-5)
    # View a's projections entered the support set, with their labels; the accuracy of the
    # neighbours' labels is logged (the initial support rows have label −1: accuracy 0).
    np.testing.assert_allclose(model.queue.keys.numpy()[:BATCH], z_a.numpy(), atol=1e-5)
    np.testing.assert_array_equal(model.queue.labels.numpy()[:BATCH], labels)
    assert int(model.queue.pointer.numpy()) == BATCH and logs["nn_accuracy"][0] == 0.0


def test_msf_step_pulls_the_prediction_to_the_targets_k_nearest_bank_rows():
    model = make("msf", num_neighbors=3, shuffle_keys=False)
    strong, weak, labels = first_batch()
    target = model.encode_key(weak)
    # The target enters the bank before the loss reads it (the official order).
    bank = model.queue.keys.numpy()
    bank[:BATCH] = target.numpy()
    query = model.predict_target(strong)
    expected = float(losses.mean_shift_loss(query, target, tf.constant(bank), 3))
    # The step finds the k nearest rows once and hands them to the loss: the same rows.
    rows = losses.top_k_neighbors(target, tf.constant(bank), 3)
    assert float(losses.mean_shift_loss(query, target, bank, 3, rows=rows)) == expected
    # The target is its own nearest bank row, so k = 1 is BYOL's one-direction loss.
    byol = float(losses.mean_shift_loss(query, target, tf.constant(bank), 1))
    cos = np.sum(np.asarray(query, np.float64) * np.asarray(target, np.float64), axis=1)
    assert byol == pytest.approx(np.mean(2 - 2 * cos), rel=1e-5)
    logs = fit(model, steps=1)
    assert logs["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - byol) > 1e-4
    np.testing.assert_array_equal(model.queue.labels.numpy()[:BATCH], labels)
    assert 0.0 < logs["purity"][0] <= 1.0  # the target itself has the query's label


@pytest.mark.parametrize("method", ["co2", "moco_dcl"])
def test_queue_objectives_are_moco_plus_consistency_and_debiased_moco(method):
    options = dict(temperature=0.2, shuffle_keys=False)
    if method == "co2":
        options.update(consistency_weight=0.7, consistency_temperature=0.05)
    else:
        options.update(debias_prior=0.2)
    model = make(method, **options)
    strong, weak, _ = first_batch()
    query, key = model.encode_query(strong), model.encode_key(weak)
    queue = tf.constant(model.queue.keys.numpy())
    infonce = float(
        losses.soft_contrastive_loss(
            query, key, queue, losses.contrastive_targets(key, queue, "none"), 0.2
        )
    )
    if method == "co2":
        consistency = float(losses.co2_consistency_loss(query, key, queue, 0.05))
        expected = infonce + 0.7 * consistency
        assert consistency > 1e-4
    else:
        expected = float(losses.debiased_contrastive_loss(query, key, queue, 0.2, 0.2))
        assert abs(expected - infonce) > 1e-3
    assert fit(model, steps=1)["loss"][0] == pytest.approx(expected, rel=1e-5)


# --- The relabelling plug-in --------------------------------------------------------------


def test_relabel_plug_in_builds_the_registered_methods_exactly():
    # --method=moco --relabel=ascl is ASCL: the same class and options, and (same seed) the
    # same first step; --method=byol --relabel=ascl is BYOL+ASCL.
    plug, ascl = make("moco", relabel="ascl"), make("ascl")
    assert method_name(plug) == "ascl"
    nested = ("name", "backbone", "projector")  # layer names differ by instance
    assert {k: v for k, v in plug.get_config().items() if k not in nested} == {
        k: v for k, v in ascl.get_config().items() if k not in nested
    }
    assert fit(plug, steps=1)["loss"] == fit(ascl, steps=1)["loss"]
    assert method_name(make("co2", relabel="hard")) == "co2"
    with pytest.raises(ValueError, match="relabel='ascl': method 'sce' takes none"):
        make("sce", relabel="ascl")


def test_validation_names_options_a_method_does_not_take(tmp_path):
    def error(**values):
        try:
            validate(TrainConfig(model_dir=str(tmp_path), **values))
        except FlagError as flag_error:
            return str(flag_error)
        return None

    assert error(method="simclr", relabel="ascl") is None
    assert error(method="co2", relabel="ahcl", consistency_weight=1.0) is None
    assert error(method="moco", consistency_weight=1.0) == (
        "--consistency_weight=1.0: --method=moco does not use it (co2 do)"
    )
    assert error(method="sce", relabel="ascl").startswith(
        "--relabel=ascl: --method=sce does not use it (moco, ascl, "
    )
    assert error(method="simclr", relabel="hard").startswith("--relabel=hard: --method=simclr")
    assert error(method="dcl", debias_prior=1.0) == "--debias_prior=1.0: must be < 1"
    assert error(method="nnclr", key_norm="split") == (
        "--key_norm=split: --method=nnclr has no momentum encoder"
    )
    assert error(method="msf", queue_size=128, num_neighbors=200).startswith("--num_neighbors=200")


# --- Two replicas equal one device ---------------------------------------------------------


CASES = [(m, {}) for m in NEW] + [("simclr", {"relabel": "ascl"}), ("co2", {"relabel": "ascl"})]


@pytest.mark.multi_device
@pytest.mark.parametrize("method,options", CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_two_replicas_match_one_device(method, options, two_cpus):
    # One device normalises the global batch of 16 in 2 split-BN groups of 8, what each of
    # 2 replicas does with BN over its 8: the two runs compute the same steps. Shuffle BN
    # draws one permutation per step on both.
    single = make(method, norm="split", **options)
    initial, start = single.get_weights(), trained_weights(single)
    single_logs = fit(single)
    with two_cpus.scope():
        mirrored = make(method, norm="batch", **options)
        mirrored.set_weights(initial)
    mirrored_logs = fit(mirrored)
    assert mirrored_logs["loss"][0] == pytest.approx(single_logs["loss"][0], rel=1e-4)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(trained_weights(single), start))
    diff = max(
        float(np.abs(a - b).max())
        for a, b in zip(trained_weights(single), trained_weights(mirrored))
    )
    # Weights moved by ~1e-2 in 3 steps; a gradient lost across replicas (a gather without
    # gradient, a missing 1/R) changes them by a sizeable share of that.
    assert moved > 1e-3 and diff < 1e-5, (moved, diff)
    if hasattr(single, "queue"):
        copies = [v.numpy() for v in per_replica(mirrored.queue.keys)]
        assert len(copies) == 2 and np.array_equal(copies[0], copies[1])
        np.testing.assert_allclose(copies[0], single.queue.keys.numpy(), atol=1e-5)
        pointers = [int(v.numpy()) for v in per_replica(mirrored.queue.pointer)]
        assert pointers == [int(single.queue.pointer.numpy())] * 2


# --- A checkpoint resumes exactly ---------------------------------------------------------


@pytest.mark.parametrize("method", ["nnclr", "msf", "simclr"])
def test_checkpoint_resumes_exactly(method, tmp_path):
    # The support set / memory bank, its labels and pointer, the predictor and the
    # optimizer are in model.checkpoint(): 2 steps, save, restore, 2 more = 4 steps.
    straight = make(method)
    fit(straight, steps=4)
    first = make(method)
    (views, labels) = data(4)
    head = tf.data.Dataset.from_tensor_slices((views, labels)).take(2 * BATCH).batch(BATCH)
    tail = tf.data.Dataset.from_tensor_slices((views, labels)).skip(2 * BATCH).batch(BATCH)
    first.fit(head, epochs=1, verbose=0)
    path = first.checkpoint().save(str(tmp_path / "ckpt"))
    resumed = make(method, seed=1)  # other initial weights: all must come from the file
    resumed.checkpoint().restore(path).assert_existing_objects_matched()
    resumed.fit(tail, epochs=1, verbose=0)
    for a, b in zip(trained_weights(straight), trained_weights(resumed)):
        np.testing.assert_array_equal(a, b)
    if hasattr(straight, "queue"):
        for name in ("keys", "labels", "pointer"):
            want, got = getattr(straight.queue, name), getattr(resumed.queue, name)
            np.testing.assert_array_equal(want.numpy(), got.numpy())


# --- Keras persistence ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["simclr", "nnclr", "msf", "co2"])
def test_keras_file_round_trip(method, tmp_path):
    model = make(method)
    fit(model, steps=1)
    path = tmp_path / f"{method}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model) and method_name(loaded) == method
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    strong, _, _ = first_batch()
    np.testing.assert_allclose(
        loaded.predict(strong, verbose=0), model.predict(strong, verbose=0), atol=1e-6
    )


# --- The command line ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [(f"--method={m}",) for m in NEW] + [("--method=simclr", "--relabel=ascl")],
    ids=lambda a: "_".join(v.split("=")[1] for v in a),
)
def test_tfascl_train_runs_each_method_for_an_epoch(args, tmp_path):
    result = train_in_process(
        *FOUR_STEP_EPOCH_FLAGS, *args, "--epochs=1", "--noexport", f"--model_dir={tmp_path}"
    )
    assert result.exit_code == 0 and result.summary["status"] == "completed"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("kind") == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) for r in steps)
    method = args[0].split("=")[1]
    if method == "nnclr":
        assert all(0.0 <= r["nn_accuracy"] <= 1.0 for r in steps)
    if "--relabel=ascl" in args:
        assert all(0.0 <= r["confidence"] <= 1.0 for r in steps)
    spec = json.loads((tmp_path / "run.json").read_text())
    assert spec["method"] == method and spec["relabel"] == (
        "ascl" if "--relabel=ascl" in args else None
    )


# --- Mixed precision ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["simclr", "nnclr", "msf"])
def test_mixed_precision_keeps_float32_losses_and_banks(method):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = make(method)
        strong, weak, _ = first_batch()
        assert model.backbone(strong).dtype == tf.bfloat16  # really computing in 16 bits
        if method == "simclr":
            loss = model.forward_backward(strong, weak)[0]
        elif method == "nnclr":
            loss = model.forward_backward(strong, weak, tf.constant(model.queue.keys.numpy()))[0]
        else:
            target = model.encode_key(weak)
            assert target.dtype == tf.float32
            bank = tf.constant(model.queue.keys.numpy())
            rows = losses.top_k_neighbors(target, bank, model.num_neighbors)
            loss = model.forward_backward(strong, target, bank, rows)[0]
        assert loss.dtype == tf.float32
        logs = fit(model, steps=1)
        assert np.isfinite(logs["loss"][0])
        if hasattr(model, "queue"):
            assert model.queue.keys.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_reports_name_a_plugged_in_relabelling():
    from tfascl.models.registry import method_label, run_method

    assert run_method("simclr", "ascl") == "simclr+ascl"
    assert method_label("simclr+ascl") == "SimCLR + ASCL"
    # The method's own mode (or none given) is the method: ASCL is not "ASCL + ASCL".
    assert run_method("ascl", "ascl") == "ascl" and run_method("moco", None) == "moco"
    assert run_method("moco", "none") == "moco" and method_label("co2+hard") == "Co2 + hard"
    assert method_label("simclr+nope") == "simclr+nope" and method_label(None) == "None"
