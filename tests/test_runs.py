"""A run's spec and checkpoints round-trip through model_dir."""

import os
from pathlib import Path

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


# --- A checkpoint folder (tfascl.checkpoints) ----------------------------------------------


def managed_folder(directory, steps=(1, 2, 3)):
    """A CheckpointManager folder with a checkpoint at each of ``steps``; its state."""
    checkpoint = tf.train.Checkpoint(v=tf.Variable(tf.range(64, dtype=tf.float32)))
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=None)
    for step in steps:
        manager.save(checkpoint_number=step)
    return tf.train.get_checkpoint_state(str(directory))


def truncate_data(prefix):
    path = f"{prefix}.data-00000-of-00001"
    with open(path, "r+b") as stream:
        stream.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("relative", [False, True])
def test_a_damaged_newest_checkpoint_leaves_the_state_file_listing_the_others(
    tmp_path, monkeypatch, relative
):
    directory = tmp_path / "checkpoints"
    before = managed_folder(directory)
    # The manager's timestamps and last preserved time are kept (a resumed manager's
    # keep_checkpoint_every_n_hours reads them).
    assert len(before.all_model_checkpoint_timestamps) == 3 and before.last_preserved_timestamp
    truncate_data(directory / "ckpt-3")
    notes = []
    if relative:  # a folder given relative to the working directory: names not joined twice
        monkeypatch.chdir(tmp_path)
        directory = Path("checkpoints")
    chosen = runs.newest_readable_checkpoint(directory, report=notes.append)
    assert Path(chosen).name == "ckpt-2" and "ckpt-3 is unreadable" in notes[0]
    monkeypatch.chdir(tmp_path)
    state = tf.train.get_checkpoint_state("checkpoints")
    assert [Path(p).name for p in state.all_model_checkpoint_paths] == ["ckpt-1", "ckpt-2"]
    assert Path(state.model_checkpoint_path).name == "ckpt-2"
    assert list(state.all_model_checkpoint_timestamps) == list(
        before.all_model_checkpoint_timestamps[:2]
    )
    assert state.last_preserved_timestamp == before.last_preserved_timestamp
    text = (tmp_path / "checkpoints" / runs.STATE_FILE).read_text()
    # Names relative to the folder, as the manager writes them: the run folder can move.
    assert str(tmp_path) not in text and '"ckpt-2"' in text, text
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint*")) == ["checkpoint"]


def test_a_failed_state_file_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from tensorflow.python.lib.io import file_io

    directory = tmp_path / "checkpoints"
    managed_folder(directory)
    old_text = (directory / runs.STATE_FILE).read_text()
    truncate_data(directory / "ckpt-3")

    def full_disk(path, contents):  # half the file written, then no space left
        with open(path, "w") as stream:
            stream.write(contents[: len(contents) // 2])
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(file_io, "write_string_to_file", full_disk)
    with pytest.raises(tf.errors.ResourceExhaustedError):
        runs.newest_readable_checkpoint(directory, report=lambda line: None)
    assert (directory / runs.STATE_FILE).read_text() == old_text
    assert sorted(p.name for p in directory.glob("checkpoint*")) == ["checkpoint"]


def test_a_checkpoint_is_read_whole_once_while_its_files_are_unchanged(tmp_path, monkeypatch):
    from tfascl import checkpoints

    managed_folder(tmp_path, steps=(1,))
    prefix = str(tmp_path / "ckpt-1")
    reads = []
    open_reader = tf.compat.v1.train.NewCheckpointReader

    class Counting:
        def __init__(self, path):
            self.reader = open_reader(path)

        def get_variable_to_shape_map(self):
            return self.reader.get_variable_to_shape_map()

        def get_tensor(self, name):
            reads.append(name)
            return self.reader.get_tensor(name)

    monkeypatch.setattr(tf.compat.v1.train, "NewCheckpointReader", Counting)
    # Files changed within the last seconds are read again (a rewrite in place might keep
    # every timestamp): a check right after the save reads the whole checkpoint each time.
    assert checkpoints.checkpoint_problem(prefix) is None
    first = len(reads)
    assert first >= 2
    assert checkpoints.checkpoint_problem(prefix) is None
    assert len(reads) == 2 * first
    # Files as old as a finished run's: the second check reads nothing.
    monkeypatch.setattr(checkpoints, "_SETTLED_SECONDS", -60.0)
    checkpoints._WHOLE.clear()
    assert checkpoints.checkpoint_problem(prefix) is None
    assert checkpoints.checkpoint_problem(prefix) is None
    assert runs.find_checkpoint(tmp_path.parent, prefix) == prefix
    assert len(reads) == 3 * first
    # A changed file is read again, and the damage found.
    truncate_data(prefix)
    assert "Read less bytes" in checkpoints.checkpoint_problem(prefix)
