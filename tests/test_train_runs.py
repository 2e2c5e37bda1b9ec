"""Short in-process runs: one recipe per method family, the files a run leaves, mixed
precision, XLA with on-device augmentation, and a non-finite loss."""

import json
import math
import re

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, TINY_RUN_FLAGS

from tfascl import runs, train

FLAGS_DIR = REPO / "flags"
# Tiny and quick: 2 steps of 16 digits.
TINY = (
    *TINY_RUN_FLAGS,
    "--max_train_examples=32",
    "--epochs=1",
    "--warmup_epochs=0",
    "--log_every=1",
)


def run(tmp_path, *args, name="run"):
    config = train.config_from_args([*args, f"--model_dir={tmp_path / name}"])
    return train.train(config), tmp_path / name


def recipe(name):
    return f"--flagfile={FLAGS_DIR / name}.flags"


def test_ascl_recipe_run_leaves_its_files(tmp_path, capsys):
    result, model_dir = run(
        tmp_path, recipe("cifar10_ascl"), *TINY, "--checkpoint_every=1", "--profile_steps=2"
    )
    assert result.exit_code == 0
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary, sort_keys=True))
    assert summary["completed"] and summary["steps"] == summary["total_steps"] == 2
    for key in ("final_knn_top1", "best_knn_top1", "best_checkpoint", "epochs", "wall_time_s"):
        assert summary[key] is not None, key
    assert 0.0 <= summary["final_knn_top1"] <= 1.0 and summary["pairs_per_second"] > 0
    saved = json.loads((model_dir / "flags.json").read_text())
    assert (saved["method"], saved["batch_size"], saved["weight_decay"]) == ("ascl", 16, 5e-4)
    spec = runs.load_spec(model_dir)
    assert (spec.method, spec.backbone_width, spec.total_steps, spec.num_classes) == (
        "ascl",
        4,
        2,
        10,
    )
    # The layout eval and export read: latest and best checkpoints resolve and restore.
    assert runs.find_checkpoint(model_dir, "latest").endswith("ckpt-2")
    model, _, _ = runs.restore_model(model_dir, "best")
    assert model(np.zeros((2, 16, 16, 3), np.float32)).shape == (2, 32)

    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("loss", "learning_rate", "momentum", "confidence", "positive_weight", "purity"):
        assert math.isfinite(steps[-1][key]), key
    assert {"knn_top1", "knn_top5", "pairs_per_second"} <= set(epochs[-1])
    # The randomly initialised encoder's kNN, before step 1: the baseline of the last line.
    (initial,) = [r for r in records if r["kind"] == "initial"]
    assert initial["step"] == 0 and initial["knn_top1"] == summary["initial_knn_top1"]
    # The bank is the training subset (--max_train_examples=32), and the run says so.
    assert summary["knn_test_images"] == 360 and summary["knn_bank_images"] == 32
    out = capsys.readouterr().out
    bank = "kNN monitor: bank = train (32 images, the training subset of --max_train_examples)"
    assert f"{bank}, test = test (360)\n" in out
    assert "kNN top-1 of the randomly initialised encoder: " in out
    assert re.search(r"^kNN top-1 after epoch 1: \d+\.\d% \(random init", out, re.M), out
    verdict = r"^pretraining: \d+\.\d% → \d+\.\d% kNN top-1 on the 360 test digits \([+-]"
    assert re.search(verdict, out, re.M), out

    # Keras's TensorBoard callback: the step records' values at their steps (test_tensorboard
    # checks resumes and several steps an execution) and the profile of step 2.
    scalars = {}
    for path in (model_dir / "tensorboard" / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":  # not the trace
                    scalars[value.tag, event.step] = float(tf.make_ndarray(value.tensor))
    for key in ("loss", "learning_rate", "momentum", "confidence", "positive_weight", "purity"):
        for record in steps:
            assert scalars["batch_" + key, record["step"]] == pytest.approx(record[key]), key
    assert scalars["epoch_knn_top1", 0] == pytest.approx(epochs[-1]["knn_top1"])
    assert list((model_dir / "tensorboard/train/plugins/profile").glob("*/*.xplane.pb"))


def test_ressl_recipe_in_mixed_bfloat16_with_on_device_augmentation(tmp_path):
    result, model_dir = run(
        tmp_path,
        recipe("stl10_ressl"),
        *TINY,
        "--train_split=train",
        "--precision=mixed_bfloat16",
        "--augment_on=device",
    )
    assert result.model.views is not None
    assert result.exit_code == 0 and result.summary["steps"] == 2
    model = result.model
    assert model.backbone.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.backbone.trainable_weights)
    records = map(json.loads, (model_dir / "metrics.jsonl").open())
    losses = [r["loss"] for r in records if r["kind"] != "initial"]  # initial: kNN only
    assert losses and all(math.isfinite(loss) for loss in losses)


@pytest.mark.slow
def test_byol_ascl_recipe_xla_step(tmp_path):
    # The one XLA test (its compile costs tens of seconds on CPU): the BYOL+ASCL step,
    # against the same run without XLA. Same seed, data and initial weights, so the first
    # step starts from the same state: its loss, and the weights after both steps, agree.
    # Split BN over groups of 8, not the recipe's 2 (batch 16 / 8 splits): BN over two
    # images turns float rounding into differences of 1e-2 after a step.
    args = (recipe("tinyimagenet_byol_ascl"), *TINY, "--test_split=test", "--num_splits=2")
    result, xla_dir = run(tmp_path, *args, "--jit_compile", name="xla")
    assert result.exit_code == 0 and result.summary["steps"] == 2
    assert result.model.jit_compile and result.summary["final_knn_top1"] is not None
    plain, plain_dir = run(tmp_path, *args, "--nojit_compile", "--noexport", name="plain")
    assert plain.exit_code == 0 and not plain.model.jit_compile

    def step_losses(model_dir):
        lines = (model_dir / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "step"]

    xla_losses, plain_losses = step_losses(xla_dir), step_losses(plain_dir)
    assert len(xla_losses) == len(plain_losses) == 2
    np.testing.assert_allclose(xla_losses, plain_losses, rtol=1e-4)
    moved = 0.0
    for a, b, before in zip(
        result.model.online_weights, plain.model.online_weights, plain.model.momentum_pairs[0]
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
        moved = max(moved, float(np.abs(b.numpy() - before.numpy()).max()))
    assert moved > 1e-4  # the steps changed the weights: the comparison is not of the init


def test_sce_recipe_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path, capsys):
    result, model_dir = run(
        tmp_path,
        recipe("cifar100_sce"),
        *TINY,
        "--learning_rate=1e30",
        "--epochs=3",
        "--checkpoint_every=1",
    )
    assert result.exit_code == train.EXIT_FAILED
    assert "non-finite loss" in capsys.readouterr().err
    assert result.summary["status"] == "non_finite_loss" and not result.summary["completed"]
    latest = runs.find_checkpoint(model_dir, "latest")
    assert train.checkpoint_step(latest) < result.summary["steps"] < 6
    for prefix in {p.with_suffix("") for p in (model_dir / "checkpoints").glob("*.index")}:
        reader = tf.train.load_checkpoint(str(prefix))
        for name, dtype in reader.get_variable_to_dtype_map().items():
            if dtype.is_floating:
                assert np.all(np.isfinite(reader.get_tensor(name))), (prefix.name, name)


def test_training_stream_epochs_are_the_seeded_pipeline(tmp_path):
    # What makes mid-epoch resume exact: epoch e of the stream depends only on (seed, e),
    # whatever epoch the stream starts at, and skip drops the batches already trained on.
    from tfascl import data

    config = train.TrainConfig(batch_size=8, image_size=16, seed=3, jit_augment=False)
    images = data.load_images("digits", max_examples=24)

    def arrays(batch):  # ((strong, weak), labels) -> the three arrays
        (strong, weak), labels = batch
        return strong.numpy(), weak.numpy(), labels.numpy()

    stream = [arrays(b) for b in train.training_stream(config, images, 1, 3, skip=1)]
    want = []
    for epoch in (1, 2):  # each epoch built on its own, as a run started there would
        epoch_data = data.pretrain_dataset(
            images, 8, 16, seed=3, epochs=(epoch, epoch + 1), jit_compile=False
        )
        want += [arrays(b) for b in epoch_data]
    assert len(stream) == 5 and len(want) == 6
    # The augmented views themselves, pixel for pixel, not only the order of the images.
    for step, (got, expected) in enumerate(zip(stream, want[1:], strict=True)):
        for name, g, e in zip(("strong", "weak", "labels"), got, expected):
            np.testing.assert_array_equal(g, e, err_msg=f"batch {step}: {name}")
    assert not np.array_equal(want[0][2], want[3][2])  # epochs differ
    # Two views of one image differ, and a batch differs from its epoch's next one.
    assert not np.array_equal(want[0][0], want[0][1])
    assert not np.array_equal(want[0][0], want[1][0])


def test_the_verdict_compares_the_final_knn_with_the_random_encoder():
    config = train.TrainConfig()
    summary = {"initial_knn_top1": 0.761, "final_knn_top1": 0.931, "knn_test_images": 360}
    (line,) = train.verdict(summary, config)
    assert line == (
        "pretraining: 76.1% → 93.1% kNN top-1 on the 360 test digits "
        "(+17.0 points over the randomly initialised encoder)"
    )
    worse = train.verdict({**summary, "final_knn_top1": 0.594}, config)
    assert "(-16.7 points" in worse[0] and "flags/digits_ascl.flags" in worse[1]
    assert train.verdict({**summary, "initial_knn_top1": None}, config) == []


@pytest.mark.parametrize(
    "args, line",
    [
        ([], "bank = train (1,437 images), test = test (360)"),
        (["--max_train_examples=64"], "bank = train (64 images, the training subset of "),
        (["--max_train_examples=64", "--knn_bank_size=200"], "bank = train (200 images, --knn_"),
        (["--knn_bank_split=test"], "bank = test (360 images), test = test (360)"),
    ],
)
def test_the_knn_bank_is_stated_and_follows_the_training_subset(args, line, capsys):
    config = train.config_from_args(["--dataset=digits", "--batch_size=16", *args])
    run_data = train.load_data(config)
    out = capsys.readouterr().out
    assert f"kNN monitor: {line}" in out
    size = int(line.split("(")[1].split(" ")[0].replace(",", ""))
    assert len(run_data.bank) == size
    if "--max_train_examples=64" in args and len(args) == 1:
        assert run_data.bank is run_data.train  # the very images trained on
