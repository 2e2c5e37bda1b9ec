"""Evaluation: kNN and linear protocol wiring, SavedModel input, results.json, bad input."""

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_python, tiny_spec
from PIL import Image

from tfascl import runs
from tfascl.data import ImageSet
from tfascl.evaluation import (
    Encoder,
    EvalInputError,
    LinearConfig,
    build_classifier,
    evaluate,
    knn_protocol,
    linear_protocol,
    load_encoder,
    read_results,
)

REPO = Path(__file__).resolve().parents[1]
SIZE = 16  # the tiny runs' image size; digits images are 32 px, so they get resized


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    # Folder loads cache decoded arrays; keep them out of the user's ~/.cache.
    monkeypatch.setenv("TFASCL_CACHE", str(tmp_path / "cache"))


def make_run(model_dir, method="ascl", metrics=True):
    """A tiny run: run.json, one checkpoint (untrained weights) and a metrics.jsonl."""
    spec = tiny_spec(method=method, image_size=SIZE, dataset="digits", num_classes=10)
    runs.save_spec(spec, model_dir)
    model = spec.build_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.checkpoint().save(str(runs.checkpoint_dir(model_dir) / "ckpt"))
    if metrics:
        with open(Path(model_dir) / "metrics.jsonl", "w") as stream:
            for epoch in range(1, 6):
                record = {
                    "kind": "epoch",
                    "epoch": epoch,
                    "step": 10 * epoch,
                    "loss": 6.0 - 0.4 * epoch,
                    "knn_top1": 0.2 + 0.05 * epoch,
                    "learning_rate": 0.06,
                }
                if method == "ascl":
                    record.update(confidence=0.4 + 0.05 * epoch, positive_weight=0.9 - 0.05 * epoch)
                stream.write(json.dumps(record) + "\n")
    return Path(model_dir)


@pytest.fixture(scope="module")
def tiny_run(trained_run, tmp_path_factory):
    """The session's trained tiny run (ASCL on digits, 16 px, 4 steps), copied: the
    protocols write results.json beside it."""
    return Path(shutil.copytree(trained_run, tmp_path_factory.mktemp("runs") / "ascl"))


# --------------------------------------------------------------------------------------
# kNN: the protocol wiring against brute force


def quadrant_features(pixels):
    """The fake backbone: mean colour of each image quadrant, [B, S, S, 3] -> [B, 12]."""
    half = pixels.shape[1] // 2
    quads = [pixels[:, :half, :half], pixels[:, :half, half:]]
    quads += [pixels[:, half:, :half], pixels[:, half:, half:]]
    return np.concatenate([np.asarray(q).mean(axis=(1, 2)) for q in quads], axis=1)


def fake_encoder(tmp_path, size=8):
    def embed(pixels):
        half = size // 2
        quads = [pixels[:, :half, :half], pixels[:, :half, half:]]
        quads += [pixels[:, half:, :half], pixels[:, half:, half:]]
        return tf.concat([tf.reduce_mean(q, axis=[1, 2]) for q in quads], axis=1)

    return Encoder(
        embed=embed,
        image_size=size,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        feature_dim=12,
        method="fake",
        dataset=None,
        kind="checkpoint",
        source=str(tmp_path),
        checkpoint="fake",
        results_dir=tmp_path,
    )


def clustered_images(rng, centres, count, size=8):
    """Noisy images of class colours ``centres`` [C, 3]: features cluster by class, overlapping."""
    labels = rng.integers(0, len(centres), size=count)
    base = np.broadcast_to(centres[labels][:, None, None, :], (count, size, size, 3))
    images = np.clip(base + rng.normal(0, 60, size=(count, size, size, 3)), 0, 255)
    return images.astype(np.uint8), labels.astype(np.int64)


def brute_force_knn(train_f, train_y, test_f, test_y, num_classes, k, temperature):
    a = train_f / np.linalg.norm(train_f, axis=1, keepdims=True)
    b = test_f / np.linalg.norm(test_f, axis=1, keepdims=True)
    sim = b @ a.T
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    scores = np.zeros((len(b), num_classes))
    rows = np.repeat(np.arange(len(b)), k)
    np.add.at(
        scores,
        (rows, train_y[top].ravel()),
        np.exp(np.take_along_axis(sim, top, 1) / temperature).ravel(),
    )
    ranked = np.argsort(-scores, axis=1, kind="stable")
    return {
        "top1": float(np.mean(ranked[:, 0] == test_y)),
        "top5": float(np.mean(np.any(ranked[:, :5] == test_y[:, None], axis=1))),
    }


def test_knn_protocol_uses_train_bank_and_scores_test_split(tmp_path):
    rng = np.random.default_rng(0)
    num_classes = 7
    centres = rng.integers(40, 215, size=(num_classes, 3)).astype(np.float64)
    train_images, train_labels = clustered_images(rng, centres, 300)
    test_images, test_labels = clustered_images(rng, centres, 120)
    names = [f"c{i}" for i in range(num_classes)]
    train = ImageSet(train_images, train_labels, names, (0.5,) * 3, (0.5,) * 3, "toy")
    test = ImageSet(test_images, test_labels, names, (0.5,) * 3, (0.5,) * 3, "toy")

    result = knn_protocol(
        fake_encoder(tmp_path), train, test, k=15, temperature=0.07, batch_size=64, chunk_size=50
    )
    # The eval transform at the model's size only scales to [0, 1]; the encoder normalises.
    expected = brute_force_knn(
        quadrant_features(train_images / 255.0),
        train_labels,
        quadrant_features(test_images / 255.0),
        test_labels,
        num_classes,
        k=15,
        temperature=0.07,
    )
    assert 0.3 < expected["top1"] < 0.95  # a problem where the answer is not trivial
    assert result["metrics"]["top1"] == pytest.approx(expected["top1"], abs=1e-6)
    assert result["metrics"]["top5"] == pytest.approx(expected["top5"], abs=1e-6)
    assert result["settings"]["k"] == 15


# --------------------------------------------------------------------------------------
# Linear protocol


def test_multistep_schedule_steps_at_epochs_60_and_80():
    steps_per_epoch = 7
    schedule = LinearConfig().lr_schedule(steps_per_epoch)
    assert isinstance(schedule, keras.optimizers.schedules.PiecewiseConstantDecay)

    def lr_at_epoch(epoch, offset=0):
        return float(schedule(epoch * steps_per_epoch + offset))

    assert lr_at_epoch(0) == pytest.approx(10.0)
    assert lr_at_epoch(59, steps_per_epoch - 1) == pytest.approx(10.0)  # last step of epoch 59
    assert lr_at_epoch(60) == pytest.approx(1.0)
    assert lr_at_epoch(79, steps_per_epoch - 1) == pytest.approx(1.0)
    assert lr_at_epoch(80) == pytest.approx(0.1)
    assert lr_at_epoch(99) == pytest.approx(0.1)

    cosine = LinearConfig(schedule="cosine").lr_schedule(steps_per_epoch)
    total = 100 * steps_per_epoch
    assert float(cosine(0)) == pytest.approx(1.0)
    assert float(cosine(total // 2)) == pytest.approx(0.5, abs=1e-3)
    assert float(cosine(total)) == pytest.approx(0.0, abs=1e-6)


def test_linear_classifier_init_is_normal_001_with_zero_bias():
    classifier = build_classifier(512, 100, init_std=0.01, seed=3)
    kernel, bias = (np.asarray(w) for w in classifier.get_weights())
    assert kernel.shape == (512, 100) and bias.shape == (100,)
    assert np.std(kernel) == pytest.approx(0.01, rel=0.03)
    assert abs(np.mean(kernel)) < 3e-4
    assert not np.any(bias)


def test_linear_protocol_trains_only_the_linear_layer(tiny_run, tmp_path):
    encoder = load_encoder(tiny_run)
    from tfascl.evaluation import load_labelled

    train = load_labelled("digits", "train", max_examples=48)
    test = load_labelled("digits", "test", max_examples=40)
    before = [np.array(w) for w in encoder.backbone.weights]  # BN moving stats included
    config = LinearConfig(
        epochs=3, batch_size=16, milestones=(1, 2), jit_compile=False, eval_every=2
    )
    result = linear_protocol(encoder, train, test, config)

    after = [np.array(w) for w in encoder.backbone.weights]
    assert not encoder.backbone.trainable_weights  # frozen: BN also runs in inference mode
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)
    kernel = np.asarray(result["classifier"].get_weights()[0])
    assert np.std(kernel) > 0.011  # the linear layer did move away from N(0, 0.01)
    # lr of each epoch's first step: the optimizer's clock steps with the epochs.
    assert [h["learning_rate"] for h in result["history"]] == pytest.approx([10.0, 1.0, 0.1])
    assert [("top1" in h) for h in result["history"]] == [False, True, True]
    metrics = result["metrics"]
    assert set(metrics) == {"top1_best", "top1_final", "top5_final", "best_epoch"}
    assert metrics["top1_best"] >= metrics["top1_final"] and metrics["best_epoch"] in (2, 3)
    assert result["settings"]["steps_per_epoch"] == 3
    assert result["settings"]["augmentation"].startswith("RandomResizedCrop")


def test_linear_probe_fit_is_the_plain_sgd_loop(tiny_run):
    """``fit`` trains the probe step for step as the hand-written loop it replaced: the same
    batches, PyTorch's SGD with coupled weight decay (Nesterov), the rate of each epoch's
    first step, the mean step loss, test top-1 each epoch."""
    import math

    from tfascl import knn
    from tfascl.evaluation import load_labelled
    from tfascl.evaluation.datasets import embed_split
    from tfascl.evaluation.linear_batches import feature_batches
    from tfascl.optim import build_optimizer

    encoder = load_encoder(tiny_run)
    train = load_labelled("digits", "train", max_examples=64)
    test = load_labelled("digits", "test", max_examples=40)
    # A large weight decay: coupled (through the momentum) and decoupled differ visibly.
    config = LinearConfig(
        epochs=3, batch_size=24, learning_rate=0.2, milestones=(2,), weight_decay=0.05,
        fast=True, seed=5,
    )  # fmt: skip
    result = linear_protocol(encoder, train, test, config)

    features, labels, _ = embed_split(encoder, train)
    test_features, test_labels, _ = embed_split(encoder, test)
    classifier = build_classifier(encoder.feature_dim, 10, config.init_std, config.seed)
    optimizer = build_optimizer(
        "sgd", config.lr_schedule(math.ceil(64 / 24)), weight_decay=0.05, momentum=0.9,
        nesterov=True, exclude_bn_and_bias=False,
    )  # fmt: skip
    weights = classifier.trainable_variables
    dataset = feature_batches(features, labels, config.batch_size, config.seed)
    for epoch, record in enumerate(result["history"], start=1):
        lr, losses = float(optimizer.learning_rate), []
        for x, y in dataset:
            with tf.GradientTape() as tape:
                logits = classifier(x, training=True)
                loss = tf.reduce_mean(
                    keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
                )
            optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
            losses.append(float(loss))
        scores = classifier.predict_on_batch(test_features)
        assert record["epoch"] == epoch
        assert record["learning_rate"] == pytest.approx(lr)
        assert record["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
        assert record["top1"] == pytest.approx(knn.top_k_accuracy(scores, test_labels, 1))
    for got, want in zip(result["classifier"].get_weights(), classifier.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert result["settings"]["steps_per_epoch"] == 3 and len(result["history"]) == 3


def test_evaluate_writes_and_merges_results_json(tiny_run):
    from tfascl.evaluation import embed_images, load_labelled

    common = dict(model_dir=tiny_run, max_train_examples=120, max_test_examples=60, batch_size=64)
    knn_entry = evaluate("knn", knn_k=20, **common)
    # 30 epochs on cached features cost ~1 s; lr 0.1 (the protocol's 10 is meant for
    # 100 epochs on CIFAR features and needs more steps than 120 images give here).
    fast = LinearConfig(epochs=30, batch_size=32, fast=True, learning_rate=0.1)
    linear_entry = evaluate("linear", linear=fast, **common)

    results = read_results(tiny_run)
    assert set(results) >= {"knn", "linear_fast"}  # the second run kept the first's entry
    assert results["knn"]["metrics"] == knn_entry["metrics"]
    assert results["linear_fast"]["metrics"] == linear_entry["metrics"]
    for entry in (results["knn"], results["linear_fast"]):
        assert entry["dataset"] == "digits" and entry["num_train"] == 120
        assert entry["num_test"] == 60 and entry["num_classes"] == 10
        assert entry["model"]["checkpoint"].endswith("ckpt-4")  # the run's latest
        assert "resized to 16x16" in " ".join(entry["notes"])  # digits are 32 px
    assert linear_entry["protocol"] == "linear_fast"
    assert results["linear_fast"]["settings"]["augmentation"].startswith("none")

    # kNN: the same subsets and features, voted in float64 NumPy (k=20, τ=0.1).
    encoder = load_encoder(tiny_run)
    train = load_labelled("digits", "train", max_examples=120, seed=0)
    test = load_labelled("digits", "test", max_examples=60, seed=0)
    expected = brute_force_knn(
        embed_images(encoder, train.images).astype(np.float64),
        train.labels,
        embed_images(encoder, test.images).astype(np.float64),
        test.labels,
        num_classes=10,
        k=20,
        temperature=0.1,
    )
    assert results["knn"]["metrics"]["top1"] == pytest.approx(expected["top1"], abs=1e-6)
    assert results["knn"]["metrics"]["top5"] == pytest.approx(expected["top5"], abs=1e-6)
    assert results["knn"]["settings"]["k"] == 20
    # The linear probe on the trained run's frozen features beats chance (0.1) by far
    # (0.63 measured): labels that do not follow their features (shuffled, offset) or a
    # classifier that does not train give ~0.1.
    assert linear_entry["metrics"]["top1_final"] > 0.35, linear_entry["metrics"]


# --------------------------------------------------------------------------------------
# SavedModel input


def save_serving_only_model(encoder, path):
    """A SavedModel with only ``serving_default`` (uint8 in) and no metadata, built here."""
    backbone, mean, std = encoder.backbone, encoder.mean, encoder.std
    module = tf.Module()
    module.backbone = backbone

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(images):
        x = tf.image.resize(tf.cast(images, tf.float32) / 255.0, [SIZE, SIZE], antialias=True)
        features = backbone((x - mean) / np.float32(std), training=False)
        unit = tf.math.l2_normalize(features, axis=1)
        return {"embedding": unit, "projection": unit[:, :4]}

    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return Path(path)


def test_saved_model_input_gives_the_checkpoints_features(tiny_run, tmp_path):
    from tfascl.evaluation import embed_images, from_saved_model, load_labelled
    from tfascl.export import export_backbone

    encoder = load_encoder(tiny_run)
    images = load_labelled("digits", "test", max_examples=30).images  # 32 px: resized to 16
    reference = embed_images(encoder, images)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)

    # tfascl-export's layout: export_dir/1 with both signatures and assets.extra/metadata.json.
    version = export_backbone(tiny_run, tmp_path / "export")
    exported = from_saved_model(version)
    assert (exported.image_size, exported.method, exported.dataset) == (SIZE, "ascl", "digits")
    assert exported.checkpoint.endswith("ckpt-4") and not exported.notes
    np.testing.assert_allclose(embed_images(exported, images), reference, atol=1e-5)
    assert from_saved_model(tmp_path / "export").notes == [  # the base dir: highest version
        f"evaluated version 1, the highest in {tmp_path / 'export'}"
    ]

    # Only serving_default, no metadata: fed uint8, and the size must come from the caller.
    bare = save_serving_only_model(encoder, tmp_path / "bare")
    with pytest.raises(EvalInputError, match="pass --image_size"):
        from_saved_model(bare)
    served = from_saved_model(bare, image_size=SIZE)
    assert any("serving_default" in note for note in served.notes)
    # Images already at the model's size: the [0, 1] pixels round back to the same uint8.
    small = np.random.default_rng(0).integers(0, 256, (20, SIZE, SIZE, 3), dtype=np.uint8)
    expected = embed_images(encoder, small)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(embed_images(served, small), expected, atol=1e-5)

    entry = evaluate("knn", saved_model=version, max_train_examples=100, max_test_examples=40)
    assert entry["model"]["kind"] == "saved_model" and entry["dataset"] == "digits"
    assert entry["model"]["features"] == "embedding (L2-normalised)"
    assert read_results(version)["knn"]["metrics"] == entry["metrics"]
    with pytest.raises(EvalInputError, match="is not a SavedModel"):
        evaluate("knn", saved_model=tmp_path)
    with pytest.raises(EvalInputError, match="is a SavedModel"):
        evaluate("knn", model_dir=version)


# --------------------------------------------------------------------------------------
# Bad input: one-line errors before expensive work


def test_model_dir_without_checkpoint_is_a_clear_error(tmp_path):
    runs.save_spec(runs.RunSpec(backbone_width=4, image_size=SIZE), tmp_path)
    with pytest.raises(EvalInputError, match="no 'latest' checkpoint"):
        evaluate("knn", model_dir=tmp_path)
    with pytest.raises(EvalInputError, match="not a tfascl model_dir"):
        evaluate("knn", model_dir=tmp_path / "nowhere")
    with pytest.raises(EvalInputError, match="exactly one"):
        evaluate("knn")


def test_saved_model_without_the_signature_is_a_clear_error(tmp_path):
    module = tf.Module()
    module.other = tf.function(
        lambda x: {"y": x}, input_signature=[tf.TensorSpec([None], tf.float32, name="x")]
    )
    tf.saved_model.save(module, str(tmp_path), signatures={"other": module.other})
    with pytest.raises(EvalInputError, match=r"no 'serving_default' signature.*other"):
        evaluate("knn", saved_model=tmp_path)


def _write_images(folder, count):
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (SIZE, SIZE), (i * 20, 0, 0)).save(folder / f"{i}.png")


def test_unlabelled_folder_fails_before_decoding(tiny_run, tmp_path, monkeypatch):
    for split in ("train", "test"):
        _write_images(tmp_path / "flat" / split, 3)

    def no_decoding(*args, **kwargs):
        raise AssertionError("images were loaded before the labels were checked")

    monkeypatch.setattr("tfascl.evaluation.datasets.load_images", no_decoding)
    with pytest.raises(EvalInputError, match="no class folders"):
        evaluate("knn", model_dir=tiny_run, dataset=str(tmp_path / "flat"))


def test_image_size_mismatch_and_broken_results_file(tiny_run, tmp_path):
    with pytest.raises(EvalInputError, match="trained at 16 px"):
        evaluate("knn", model_dir=tiny_run, image_size=24)
    copy = tmp_path / "run"
    make_run(copy, metrics=False)
    (copy / "results.json").write_text("{not json")
    with pytest.raises(EvalInputError, match=r"results\.json is not valid JSON"):
        evaluate("knn", model_dir=copy, max_train_examples=20, max_test_examples=20)


def test_cli_prints_one_line_error_and_exits_2(tmp_path):
    runs.save_spec(runs.RunSpec(backbone_width=4, image_size=SIZE), tmp_path)
    process = run_python(
        "-m", "tfascl.evaluation.cli", "--protocol=knn", f"--model_dir={tmp_path}", cwd=REPO
    )
    assert process.returncode == 2
    errors = [line for line in process.stderr.splitlines() if "tfascl-eval: error" in line]
    assert errors == [f"tfascl-eval: error: no 'latest' checkpoint in {tmp_path}/checkpoints"]
    assert "Traceback" not in process.stderr


# --------------------------------------------------------------------------------------
# The app in-process: table on stdout, plots


def run_app(argv):
    """The app in this process, on its own FlagValues (tfascl.train's global flags may exist)."""
    from absl import flags

    from tfascl.evaluation import cli as app

    values = flags.FlagValues()
    app.define_flags(values)
    values(["tfascl-eval", *argv])
    app.run_with(values)


def test_app_knn_table_and_plots_side_by_side(tiny_run, tmp_path, capsys):
    run_app([f"--model_dir={tiny_run}", "--max_train_examples=100", "--max_test_examples=50"])
    out = capsys.readouterr().out
    assert "knn" in out.splitlines()[0] and "top-1" in out and "results:" in out

    moco = make_run(tmp_path / "moco", method="moco")
    plots_dir = tmp_path / "pictures"
    run_app(
        [
            "--protocol=plots",
            f"--model_dir={tiny_run}",
            f"--compare_model_dir={moco}",
            f"--plots_dir={plots_dir}",
            "--map_points=60",
        ]
    )
    out = capsys.readouterr().out
    for name in ("training_curves.png", "tsne_map.png"):
        assert str(plots_dir / name) in out
        with Image.open(plots_dir / name) as image:
            assert image.size[0] > 600 and image.size[1] > 400
    with Image.open(plots_dir / "tsne_map.png") as image:  # two panels side by side
        assert image.size == (1400, 700)

    with pytest.raises(EvalInputError, match="compare_model_dir is for --protocol=plots"):
        run_app([f"--model_dir={tiny_run}", f"--compare_model_dir={moco}"])
