"""Tests for tfascl.knn against a brute-force float64 NumPy implementation."""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfascl.knn import feature_extractor, knn_accuracy, knn_predict, nearest_neighbors


def knn_ref(train, labels, test, num_classes, k, temperature):
    """Weighted kNN in float64; ties at the k-th neighbour keep the lower training index."""
    train = np.asarray(train, np.float64)
    test = np.asarray(test, np.float64)
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    sim = test @ train.T
    k = min(k, len(train))
    scores = np.zeros((len(test), num_classes))
    for i, row in enumerate(sim):
        for j in np.argsort(-row, kind="stable")[:k]:
            scores[i, labels[j]] += np.exp(row[j] / temperature)
    return scores


def top_n_ref(scores, targets, n):
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    return float(np.mean([t in row for t, row in zip(targets, order)]))


def gaussian_problem(seed, n_train=60, n_test=23, dim=8, num_classes=6):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n_train, dim)).astype(np.float32),
        rng.integers(0, num_classes, size=n_train),
        rng.normal(size=(n_test, dim)).astype(np.float32),
        rng.integers(0, num_classes, size=n_test),
    )


def tied_problem(seed, n_train=40, n_test=12, dim=16, num_classes=5):
    """Rows with four +-1 entries: unit-normalised entries are +-0.5 exactly, so every
    similarity is an exact multiple of 0.25 in float32 and float64 alike -- many exact ties."""
    rng = np.random.default_rng(seed)

    def rows(n):
        out = np.zeros((n, dim), np.float32)
        for r in out:
            r[rng.choice(dim, size=4, replace=False)] = rng.choice([-1.0, 1.0], size=4)
        return out

    return rows(n_train), rng.integers(0, num_classes, size=n_train), rows(n_test)


def test_matches_numpy_on_random_features():
    train, labels, test, _ = gaussian_problem(0)
    got = knn_predict(train, labels, test, num_classes=6, k=7, temperature=0.1).numpy()
    want = knn_ref(train, labels, test, 6, k=7, temperature=0.1)
    assert got.shape == (23, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Each row holds exactly k votes of weight <= e^(1/t).
    assert np.all(np.count_nonzero(got, axis=1) <= 7)


def test_features_are_normalised_inside():
    train, labels, test, _ = gaussian_problem(1)
    a = knn_predict(train * 7.0, labels, test * 0.01, num_classes=6, k=5).numpy()
    b = knn_predict(train, labels, test, num_classes=6, k=5).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("k", [3, 8, 13])
def test_ties_at_kth_neighbour_keep_lower_index(k):
    train, labels, test = tied_problem(2)
    sim = (train / 2.0) @ (test / 2.0).T  # exact
    # The test is only meaningful if the k-th and (k+1)-th similarities tie for some row.
    sorted_sim = -np.sort(-sim.T, axis=1)
    assert np.any(sorted_sim[:, k - 1] == sorted_sim[:, k])
    got = knn_predict(train, labels, test, num_classes=5, k=k, temperature=0.2).numpy()
    want = knn_ref(train, labels, test, 5, k=k, temperature=0.2)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_tie_rule_on_identical_neighbours():
    # Four identical training rows, labels 3, 2, 1, 0: with k=2 the lower indices (labels 3, 2)
    # are the neighbours.
    train = np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (4, 1))
    train = np.concatenate([train, [[0.0, 1.0, 0.0]]]).astype(np.float32)
    labels = np.array([3, 2, 1, 0, 0])
    test = np.array([[1.0, 0.0, 0.0]], np.float32)
    got = knn_predict(train, labels, test, num_classes=4, k=2, temperature=0.5).numpy()
    np.testing.assert_allclose(got[0], [0.0, 0.0, np.exp(2.0), np.exp(2.0)], rtol=1e-6)


def test_k_larger_than_a_class_and_than_train_set():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(30, 5)).astype(np.float32)
    labels = np.r_[[0, 0], rng.integers(1, 4, size=28)]  # class 0 has 2 members
    test = rng.normal(size=(9, 5)).astype(np.float32)
    for k in (10, 30, 200):
        got = knn_predict(train, labels, test, num_classes=4, k=k, temperature=0.1).numpy()
        np.testing.assert_allclose(got, knn_ref(train, labels, test, 4, k, 0.1), rtol=1e-5)
    # k >= N_train: every training sample votes, so class 0 gets exactly its two members.
    t = test / np.linalg.norm(test, axis=1, keepdims=True)
    x = train[:2] / np.linalg.norm(train[:2], axis=1, keepdims=True)
    np.testing.assert_allclose(got[:, 0], np.exp(t @ x.T / 0.1).sum(axis=1), rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 22, 23, 24, 1000])
def test_chunking_does_not_change_scores(chunk_size):
    train, labels, test, _ = gaussian_problem(4)  # N_test = 23
    full = knn_predict(train, labels, test, num_classes=6, k=9, chunk_size=10_000).numpy()
    got = knn_predict(train, labels, test, num_classes=6, k=9, chunk_size=chunk_size).numpy()
    assert got.shape == full.shape
    # Equal up to float32 rounding: a different matmul blocking may move the last ulp of a
    # similarity, which exp(sim / 0.1) turns into a relative change of about 1e-6.
    np.testing.assert_allclose(got, full, rtol=1e-5)
    np.testing.assert_array_equal(got > 0, full > 0)
    np.testing.assert_allclose(got, knn_ref(train, labels, test, 6, 9, 0.1), rtol=1e-5)


def test_tf_function_dynamic_shapes_and_jit():
    train, labels, test, _ = gaussian_problem(5)
    want = knn_ref(train, labels, test, 6, 9, 0.1)

    def fn(a, b, c):
        return knn_predict(a, b, c, num_classes=6, k=9, chunk_size=5)

    dynamic = tf.function(
        fn,
        input_signature=[
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None, None], tf.float32),
        ],
    )
    jitted = tf.function(fn, jit_compile=True)
    for compiled in (dynamic, jitted):
        np.testing.assert_allclose(compiled(train, labels, test).numpy(), want, rtol=1e-5)


def test_nearest_neighbors_is_the_votes_search_in_any_mode():
    """One search for the kNN vote and the neighbours picture: the brute-force order
    (ties lower index first), chunked or not, eager, with dynamic shapes, and under XLA."""
    train, labels, test = tied_problem(6)
    sim = (train / 2.0) @ (test / 2.0).T  # exact multiples of 0.25: many ties
    want = np.array([sorted(range(len(train)), key=lambda j: (-row[j], j))[:7] for row in sim.T])
    spec = [tf.TensorSpec([None, None], tf.float32)] * 2
    for chunk_size in (1, 5, 12, 100):

        def search(a, b, chunk_size=chunk_size):
            return nearest_neighbors(a, b, 7, chunk_size)

        runs = {
            "eager": search,
            "dynamic": tf.function(search, input_signature=spec),
            "xla": tf.function(search, jit_compile=True),
        }
        for name, run in runs.items():
            sims, indices = run(train, test)
            np.testing.assert_array_equal(indices.numpy(), want, err_msg=f"{name} {chunk_size}")
            np.testing.assert_allclose(
                sims.numpy(), np.take_along_axis(sim.T, want, axis=1), atol=1e-6
            )
    assert nearest_neighbors(train[:3], test, 7)[1].shape == (12, 3)  # k clipped to N
    # knn_predict votes with exactly these neighbours.
    votes = np.zeros((len(test), 5))
    for row, (s, i) in enumerate(zip(np.take_along_axis(sim.T, want, axis=1), want)):
        np.add.at(votes[row], labels[i], np.exp(s / 0.2))
    got = knn_predict(train, labels, test, num_classes=5, k=7, temperature=0.2, chunk_size=5)
    np.testing.assert_allclose(got.numpy(), votes, rtol=1e-6)


def test_knn_accuracy_top1_top5():
    train, labels, test, targets = gaussian_problem(6, n_train=80, n_test=40, num_classes=8)
    got = knn_accuracy(train, labels, test, targets, num_classes=8, k=6, chunk_size=16)
    scores = knn_ref(train, labels, test, 8, 6, 0.1)
    assert set(got) == {"top1", "top5"}
    assert got["top1"] == pytest.approx(np.mean(np.argmax(scores, axis=1) == targets))
    assert got["top5"] == pytest.approx(top_n_ref(scores, targets, 5))
    # With k=6, many classes score 0; the top-5 must not count all of them as hits.
    assert got["top5"] < 1.0 and got["top1"] <= got["top5"]
    # Memorised training set: every point is its own nearest neighbour.
    assert knn_accuracy(train, labels, train, labels, num_classes=8, k=1)["top1"] == 1.0


def test_knn_accuracy_without_top5_for_few_classes():
    train, labels, test, targets = gaussian_problem(7, num_classes=3)
    got = knn_accuracy(train, labels, test, targets, num_classes=3, k=5)
    assert set(got) == {"top1"}
    scores = knn_ref(train, labels, test, 3, 5, 0.1)
    assert got["top1"] == pytest.approx(np.mean(np.argmax(scores, axis=1) == targets))


def test_invalid_arguments():
    train, labels, test, _ = gaussian_problem(8)
    for kwargs in ({"k": 0}, {"chunk_size": 0}, {"temperature": 0.0}):
        with pytest.raises(ValueError):
            knn_predict(train, labels, test, num_classes=6, **kwargs)


def _feature_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5), keras.layers.Dropout(0.5), keras.layers.Dense(4)]
    )


def test_feature_extractor():
    rng = np.random.default_rng(9)
    images = rng.normal(size=(23, 6)).astype(np.float32)
    labels = rng.integers(0, 10, size=23)
    model = _feature_model()
    extract = feature_extractor(model)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(5)  # last batch: 3
    features, got_labels = extract(dataset)
    # training=False: Dropout is off, so the result is deterministic and equals a plain call.
    raw = model(images, training=False).numpy()
    want = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert features.dtype == np.float32 and got_labels.dtype == np.int64
    np.testing.assert_allclose(features, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got_labels, labels)
    # Images only, in batches of another size: no labels, and the same function serves.
    features, got_labels = extract(tf.data.Dataset.from_tensor_slices(images).batch(7))
    assert got_labels is None
    np.testing.assert_allclose(features, want, rtol=1e-5, atol=1e-6)
    # Unnormalised: the model's own outputs (as eval's checkpoint encoders give them).
    features, _ = feature_extractor(model, normalize=False)(dataset)
    np.testing.assert_allclose(features, raw, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no images to embed"):
        extract(tf.data.Dataset.from_tensor_slices(images[:0]).batch(5))


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf, keras
    from tfascl.knn import feature_extractor

    rng = np.random.default_rng(0)
    images = rng.normal(size=(23, 6)).astype(np.float32)
    labels = np.arange(23)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(6)  # last batch: 5
    strategy = STRATEGY  # the session's one MirroredStrategy (tests/conftest.py)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
        features, got_labels = feature_extractor(model)(dataset)
    assert strategy.num_replicas_in_sync == 2
    want = model(images, training=False).numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_array_equal(got_labels, labels)  # dataset order survives the split
    np.testing.assert_allclose(features, want, rtol=1e-5, atol=1e-6)
    print("MIRRORED_OK")
    """
)


@pytest.mark.multi_device
def test_feature_extractor_under_mirrored_strategy(two_cpus, capsys):
    # On the two logical CPUs tests/conftest.py configures before TF initialises.
    exec(_MIRRORED_SCRIPT, {"STRATEGY": two_cpus})
    assert "MIRRORED_OK" in capsys.readouterr().out


def test_monitor_feature_pass_reports_progress_and_normalises(monkeypatch, capsys):
    from tfascl import knn

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    images = rng.normal(size=(10, 4)).astype(np.float32)
    labels = np.arange(10) % 2
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    monkeypatch.setattr(knn, "PROGRESS_EVERY_S", 0.0)  # every batch counts as long
    features, got = knn.feature_extractor(model, name="kNN monitor")(dataset, "bank images")
    expected = model(images).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got, labels)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("kNN monitor:")]
    assert [x.split(" bank")[0] for x in lines] == [f"kNN monitor: {n}" for n in (4, 8, 10)]
