"""A run folder on another file system: TensorFlow's in-memory ``ram://`` stands in for
``gs://`` (both reach the run through ``tf.io.gfile``; ``ram://`` lives in this process,
so the runs here are in-process)."""

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from helpers import FOUR_STEP_EPOCH_FLAGS, train_in_process

from tfascl import cli, export, plots, runs
from tfascl.evaluation import api, encoders, results

gfile = tf.io.gfile
STEPS_PER_EPOCH = 4  # 64 digits in batches of 16
ARGS = (*FOUR_STEP_EPOCH_FLAGS, "--checkpoint_every=2", "--noexport")


def ram(name: str) -> str:
    """A fresh ``ram://`` folder: the file system is shared by the whole test process."""
    return f"ram://{uuid.uuid4().hex}/{name}"


def read_json(path: str):
    with gfile.GFile(path) as stream:
        return json.loads(stream.read())


def logged_steps(model_dir: str) -> list[int]:
    with gfile.GFile(f"{model_dir}/{runs.METRICS_FILE}") as stream:
        records = [json.loads(line) for line in stream.read().splitlines()]
    return [record["step"] for record in records if record["kind"] == "step"]


@pytest.mark.parametrize("where", ["local", "ram"])
def test_atomic_write_replaces_whole_and_leaves_no_temporary(where, tmp_path):
    folder = str(tmp_path) if where == "local" else ram("atomic")
    runs.makedirs(folder)
    path = runs.join(folder, "record.json")
    assert isinstance(path, Path) == (where == "local")  # a URL is never a pathlib.Path
    runs.atomic_write_json(path, {"a": 1})
    runs.atomic_write_text(path, "second\n")
    assert runs.read_text(path) == "second\n"
    assert [runs.base_name(p) for p in runs.glob(folder, "*")] == ["record.json"]
    with pytest.raises(FileNotFoundError):  # gfile's NotFoundError, as the local one
        runs.read_bytes(runs.join(folder, "missing"))


def test_damaged_checkpoint_on_ram_is_set_aside_and_the_older_one_used():
    directory = ram("checkpoints")
    variable = tf.Variable([1.0, 2.0])
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), directory, 3)
    manager.save(checkpoint_number=2)
    manager.save(checkpoint_number=4)
    data = f"{directory}/ckpt-4.data-00000-of-00001"
    with gfile.GFile(data, "rb") as stream:
        size = len(stream.read())
    gfile.remove(data)  # ram:// appends to a file opened for writing: write it anew
    with gfile.GFile(data, "wb") as stream:  # cut short, as by a kill mid-write
        stream.write(b"\0" * (size // 2))
    notes = []
    assert runs.newest_readable_checkpoint(directory, report=notes.append) == (
        f"{directory}/ckpt-2"
    )
    assert len(notes) == 1 and "ckpt-4 is unreadable" in notes[0]
    assert gfile.glob(f"{directory}/{runs.DAMAGED}/*/ckpt-4.index")
    assert not gfile.exists(f"{directory}/ckpt-4.index")
    assert tf.train.latest_checkpoint(directory) == f"{directory}/ckpt-2"


@pytest.fixture(scope="module")
def remote_run():
    """A 1-epoch run in ram://, its files then, and its resume to 2 epochs."""
    model_dir = ram("run")
    first = train_in_process(*ARGS, "--epochs=1", f"--model_dir={model_dir}")
    files = {p[len(model_dir) + 1 :] for p in gfile.glob(f"{model_dir}/*")}
    files |= {p[len(model_dir) + 1 :] for p in gfile.glob(f"{model_dir}/checkpoints/*")}
    second = train_in_process(*ARGS, "--epochs=2", f"--model_dir={model_dir}")
    return model_dir, first, files, second


def test_run_in_ram_writes_every_run_file_and_resumes(remote_run):
    model_dir, first, files, second = remote_run
    assert first.exit_code == 0 and second.exit_code == 0
    for name in (
        runs.SPEC_FILE,
        runs.FLAGS_FILE,
        runs.FLAGS_TEXT_FILE,
        runs.SUMMARY_FILE,
        runs.METRICS_FILE,
        runs.BEST_FILE,
        runs.BEST_INFO_FILE,
        runs.TENSORBOARD_SUBDIR,
        "checkpoints/checkpoint",
        "checkpoints/ckpt-4.index",
        "checkpoints/ckpt-2.index",
        "checkpoints/best-4.index",
    ):
        assert name in files
    assert not Path("ram:").exists()  # no local folder named after the scheme
    assert first.summary["model_dir"] == model_dir and first.summary["steps"] == STEPS_PER_EPOCH
    # The resume continues from the saved step 4, not from 0.
    summary = read_json(f"{model_dir}/{runs.SUMMARY_FILE}")
    assert summary["completed"] and summary["resumed_from_step"] == STEPS_PER_EPOCH
    assert summary["steps"] == 2 * STEPS_PER_EPOCH
    assert logged_steps(model_dir) == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert read_json(f"{model_dir}/{runs.FLAGS_FILE}")["epochs"] == 2
    assert gfile.glob(f"{model_dir}/{runs.TENSORBOARD_SUBDIR}/train/events.out.tfevents.*")
    best = read_json(f"{model_dir}/{runs.BEST_INFO_FILE}")
    assert runs.best_checkpoint(model_dir) == f"{model_dir}/checkpoints/{best['checkpoint']}"


def test_run_in_ram_restores_evaluates_and_exports(remote_run, tmp_path):
    model_dir = remote_run[0]
    model, spec, path = runs.restore_model(model_dir)
    assert path == f"{model_dir}/checkpoints/ckpt-8" and spec.image_size == 16
    # The weights the second training process ended with, read back from ram://.
    trained = remote_run[3].model.backbone.get_weights()
    assert len(trained) == len(model.backbone.get_weights())
    for mine, theirs in zip(model.backbone.get_weights(), trained):
        np.testing.assert_array_equal(mine, theirs)

    entry = api.evaluate(
        "knn", model_dir=model_dir, knn_k=5, max_train_examples=64, max_test_examples=32
    )
    assert 0.0 <= entry["metrics"]["top1"] <= 1.0
    assert results.read_results(model_dir)["knn"]["metrics"] == entry["metrics"]

    export_dir = ram("export")
    target = export.export_backbone(model_dir, export_dir)
    assert target == f"{export_dir}/1" and export.next_version(export_dir) == 2
    for name in ("saved_model.pb", "assets.extra/backbone.keras", "assets.extra/metadata.json"):
        assert gfile.exists(f"{target}/{name}")
    assert read_json(f"{target}/assets.extra/metadata.json")["training_steps"] == 8
    with pytest.raises(FileExistsError):
        export.export_backbone(model_dir, export_dir, version=1)
    assert export.export_backbone(model_dir, export_dir, version=1, overwrite=True) == target
    values = export.define_flags(flags.FlagValues())  # tfascl-export's checks
    values(["tfascl-export", f"--model_dir={model_dir}", f"--export_dir={export_dir}"])
    assert export.check_flags(values) == export_dir
    values.version = 1
    with pytest.raises(cli.FlagError, match="already exists"):
        export.check_flags(values)
    served = tf.saved_model.load(target).signatures["serving_default"]
    images = tf.zeros([2, 16, 16, 3], tf.uint8)
    embedding = served(images=images)["embedding"].numpy()
    # A local export of the same run serves the same embedding.
    local = export.export_backbone(model_dir, tmp_path / "export")
    expected = tf.saved_model.load(str(local)).signatures["serving_default"](images=images)
    np.testing.assert_allclose(embedding, expected["embedding"].numpy(), atol=1e-6)
    encoder = encoders.from_saved_model(export_dir)  # the base folder: its highest version
    assert encoder.source == target
    served_entry = api.evaluate(
        "knn", saved_model=target, knn_k=5, max_train_examples=64, max_test_examples=32
    )
    assert results.read_results(target)["knn"]["metrics"] == served_entry["metrics"]


def test_run_in_ram_is_found_by_the_cli_checks_and_plotted(remote_run):
    model_dir = remote_run[0]
    cli.check_run_dir(model_dir)  # what tfascl-eval and tfascl-export check first
    with pytest.raises(cli.FlagError, match="no such folder"):
        cli.check_run_dir(ram("nothing"))
    records = plots.read_metrics(plots.find_metrics_file(model_dir))
    assert [r["step"] for r in records if r["kind"] == "step"] == logged_steps(model_dir)
    picture = plots.plot_training_curves(
        [plots.CurveRun("ascl", records)], f"{model_dir}/plots/curves.png"
    )
    with gfile.GFile(picture, "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"
