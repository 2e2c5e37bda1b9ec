"""The TensorBoard callback: Keras's, numbered by the global step as metrics.jsonl is, and
its profiler. A two-layer model keeps it fast; test_train_runs checks the CLI's files."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfascl import callbacks as cbs
from tfascl import runs, train_config
from tfascl.optim import warmup_cosine

STEPS_PER_EPOCH, BATCH = 5, 4


def events(log_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the event files under ``log_dir/train``: tag -> {step: value}."""
    scalars: dict[str, dict[int, float]] = {}
    for path in sorted((log_dir / "train").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":  # not a trace
                    number = float(tf.make_ndarray(value.tensor))
                    scalars.setdefault(value.tag, {})[event.step] = number
    return scalars


def records(model_dir: Path, kind: str) -> list[dict]:
    lines = (model_dir / cbs.METRICS_FILE).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def fit(model, model_dir, first_epoch, epochs, profile=(0, 0)):
    """``fit`` as tfascl-train calls it; a new process's callbacks for each call."""
    rng = np.random.default_rng(first_epoch)
    x = rng.normal(size=(STEPS_PER_EPOCH * BATCH, 3)).astype("float32")
    y = rng.normal(size=(STEPS_PER_EPOCH * BATCH, 1)).astype("float32")
    logger = cbs.MetricsLogger(model_dir, every_steps=2, batch_size=BATCH)
    board = cbs.TensorBoard(
        model_dir / runs.TENSORBOARD_SUBDIR, every_steps=2, profile_steps=profile
    )
    # One epoch of data a call, as run_epochs gives fit when executions do not divide it.
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    model.fit(data, epochs=epochs, initial_epoch=first_epoch, steps_per_epoch=STEPS_PER_EPOCH,
              callbacks=[logger, board], verbose=0)  # fmt: skip


def tiny_model(steps_per_execution):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    # A changing rate, so that a learning rate read at the wrong step shows.
    optimizer = keras.optimizers.SGD(warmup_cosine(0.1, 4 * STEPS_PER_EPOCH, 3))
    model.compile(optimizer=optimizer, loss="mse", steps_per_execution=steps_per_execution)
    return model


@pytest.mark.parametrize(
    ("steps_per_execution", "logged"),
    # Executions end at 2, 4, 5 | 7, 9, 10: records at the first end at or after each
    # multiple of 2, as metrics.jsonl (test_steps_per_execution checks those steps).
    [(1, [2, 4, 6, 8, 10]), (2, [2, 4, 7, 9, 10])],
)
def test_scalars_are_the_metrics_at_the_global_step_across_a_resume(
    tmp_path, steps_per_execution, logged
):
    model = tiny_model(steps_per_execution)
    fit(model, tmp_path, 0, 1)
    # A resumed run: new callbacks (Keras's own would count from 1 again), epoch 2.
    fit(model, tmp_path, 1, 2)
    scalars = events(tmp_path / runs.TENSORBOARD_SUBDIR)
    steps = records(tmp_path, "step")
    assert [r["step"] for r in steps] == logged
    for tag, key in (("batch_loss", "loss"), ("batch_learning_rate", "learning_rate")):
        assert sorted(scalars[tag]) == logged, tag
        got = [scalars[tag][r["step"]] for r in steps]
        np.testing.assert_allclose(got, [r[key] for r in steps], rtol=1e-6, err_msg=tag)
    # The rate changes between records: the test tells the steps apart.
    assert len({round(r["learning_rate"], 7) for r in steps}) == len(steps)
    epochs = records(tmp_path, "epoch")
    assert sorted(scalars["epoch_loss"]) == [0, 1]  # Keras's epoch index
    np.testing.assert_allclose(
        [scalars["epoch_loss"][e] for e in (0, 1)], [r["loss"] for r in epochs], rtol=1e-6
    )
    # pairs_per_second: MetricsLogger added it to the epoch's logs (the first epoch's
    # throughput leaves out its tracing execution, so it may lack one).
    assert scalars["epoch_pairs_per_second"][1] == pytest.approx(epochs[1]["pairs_per_second"])
    assert not (tmp_path / runs.TENSORBOARD_SUBDIR / "train" / "plugins").exists()


@pytest.mark.parametrize(("steps_per_execution", "profile"), [(1, (2, 3)), (2, (3, 3))])
def test_profile_steps_write_a_profile(tmp_path, steps_per_execution, profile):
    # (3, 3) with two steps an execution: step 3 runs inside the execution of steps 3-4.
    fit(tiny_model(steps_per_execution), tmp_path, 0, 1, profile=profile)
    profiles = list(
        (tmp_path / runs.TENSORBOARD_SUBDIR / "train/plugins/profile").glob("*/*.xplane.pb")
    )
    assert len(profiles) == 1 and profiles[0].stat().st_size > 0


def test_profile_steps_flag():
    assert cbs.profile_range("") == (0, 0)
    assert cbs.profile_range("10,15") == (10, 15)
    assert cbs.profile_range("7") == (7, 7)
    for bad in ("0,3", "5,2", "a,b", "1,2,3", "3,"):
        assert cbs.profile_range(bad) is None, bad
        with pytest.raises(train_config.FlagError, match=f"^--profile_steps={bad}: "):
            train_config.validate(train_config.TrainConfig(profile_steps=bad))
    train_config.validate(train_config.TrainConfig(profile_steps="2,3"))
