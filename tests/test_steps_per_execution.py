"""Several train steps per execution: the same training, with records, checkpoints and a
mid-epoch resume where a one-step-per-execution run has them (epochs of 5 steps, 2 steps an
execution: the last execution of each epoch runs the step that is left)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY_RUN_FLAGS, logged_steps, train_in_process

from tfascl import train, train_config

STEPS_PER_EPOCH, EPOCHS = 5, 2  # 80 digits in batches of 16
ARGS = (
    *TINY_RUN_FLAGS,
    "--max_train_examples=80",
    f"--epochs={EPOCHS}",
    "--warmup_epochs=0",
    "--knn_every=0",
    "--log_every=2",
    "--checkpoint_every=2",
    "--keep_checkpoints=20",
    "--noexport",
)


def run(model_dir, *args):
    return train_in_process(*ARGS, *args, f"--model_dir={model_dir}")


def checkpoint_steps(model_dir):
    state = tf.train.get_checkpoint_state(str(Path(model_dir) / "checkpoints"))
    return [train.checkpoint_step(p) for p in state.all_model_checkpoint_paths]


def weights(result):
    return [np.asarray(w) for w in result.model.weights]


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    result = run(tmp_path_factory.mktemp("spe") / "one", "--steps_per_execution=1")
    assert result.exit_code == 0 and result.summary["steps"] == STEPS_PER_EPOCH * EPOCHS
    return result


def test_two_steps_per_execution_train_the_same_and_resume_exactly(one_step_run, tmp_path):
    model_dir = tmp_path / "two"
    result = run(model_dir, "--steps_per_execution=2")
    assert result.exit_code == 0 and result.model.steps_per_execution == 2
    assert result.summary["steps"] == STEPS_PER_EPOCH * EPOCHS  # no epoch ran over
    # Executions end at steps 2, 4, 5 | 7, 9, 10: a record and a checkpoint at the first
    # boundary at or after each multiple of 2, and the epoch ends.
    assert logged_steps(model_dir) == [2, 4, 7, 9, 10]
    assert checkpoint_steps(model_dir) == [0, 2, 4, 5, 7, 9, 10]
    for got, want in zip(weights(result), weights(one_step_run), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # Resume mid-epoch 2 from ckpt-7 (2 of its 5 steps done): the same end state.
    resumed = tmp_path / "resumed"
    shutil.copytree(model_dir, resumed)
    (resumed / "summary.json").unlink()
    checkpoints = resumed / "checkpoints"
    for step in (9, 10):
        for path in checkpoints.glob(f"ckpt-{step}.*"):
            path.unlink()
    state = tf.train.get_checkpoint_state(str(checkpoints))
    kept = [p for p in state.all_model_checkpoint_paths if train.checkpoint_step(p) <= 7]
    tf.compat.v1.train.update_checkpoint_state(str(checkpoints), kept[-1], kept)
    again = run(resumed, "--steps_per_execution=2")
    assert again.exit_code == 0 and again.summary["resumed_from_step"] == 7
    assert logged_steps(resumed) == [2, 4, 7, 9, 10]
    for got, want in zip(weights(again), weights(result), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_steps_per_execution_must_divide_the_log_and_checkpoint_intervals(tmp_path):
    config = train.TrainConfig(
        model_dir=str(tmp_path), log_every=10, checkpoint_every=25, steps_per_execution=4
    )
    with pytest.raises(train.FlagError, match=r"--steps_per_execution=4: must divide --log_every"):
        train.validate(config)
    config = train.TrainConfig(
        model_dir=str(tmp_path), log_every=20, checkpoint_every=30, steps_per_execution=4
    )
    with pytest.raises(train.FlagError, match="must divide --checkpoint_every=30"):
        train.validate(config)


def test_default_is_one_on_cpu_and_a_common_divisor_on_an_accelerator(tmp_path):
    config = train.TrainConfig(model_dir=str(tmp_path))
    assert train_config.check_replicas(config, 1).steps_per_execution == 1  # no GPU here
    assert train_config.auto_steps_per_execution(50, 500) == 25
    assert train_config.auto_steps_per_execution(64, 0) == 32
    assert train_config.auto_steps_per_execution(7, 500) == 1
