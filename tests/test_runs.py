"""A run's spec and checkpoints round-trip through model_dir."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_spec

from tfascl import runs


def test_spec_round_trips_and_restores_weights(tmp_path):
    spec = tiny_spec(mean=(0.1, 0.2, 0.3))
    runs.save_spec(spec, tmp_path)
    assert runs.load_spec(tmp_path) == spec

    model = spec.build_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(0)
    views = (rng.random((8, 16, 16, 3), np.float32), rng.random((8, 16, 16, 3), np.float32))
    model.fit(views, np.zeros(8), batch_size=8, verbose=0)
    model.checkpoint().save(str(runs.checkpoint_dir(tmp_path) / "ckpt"))

    restored, loaded_spec, path = runs.restore_model(tmp_path)
    assert loaded_spec == spec and path.endswith("ckpt-1")
    # A model_dir relative to the working directory: the checkpoint path is not joined twice.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path.parent)
        relative = runs.find_checkpoint(tmp_path.name)
        assert runs.find_checkpoint(tmp_path.name, relative) == relative
    images = views[0]
    np.testing.assert_allclose(restored(images).numpy(), model(images).numpy(), atol=1e-6)
    np.testing.assert_allclose(restored.queue.keys.numpy(), model.queue.keys.numpy())


def test_missing_run_and_checkpoint_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a tfascl model_dir"):
        runs.load_spec(tmp_path)
    runs.save_spec(tiny_spec(), tmp_path)
    with pytest.raises(FileNotFoundError, match="no 'latest' checkpoint"):
        runs.restore_model(tmp_path)
    # A checkpoint without the model's weights is an error, not a silently random model.
    tf.train.Checkpoint(step=tf.Variable(3)).save(str(runs.checkpoint_dir(tmp_path) / "ckpt"))
    with pytest.raises(ValueError, match="does not hold this run's model"):
        runs.restore_model(tmp_path)
    with pytest.raises(ValueError, match="unknown RunSpec fields"):
        runs.RunSpec.from_dict({"methd": "ascl"})
