"""Faults a real run meets: SIGTERM (preemption), a full disk while saving, a damaged
checkpoint (the newest, or the best copy), and damaged run files."""

import builtins
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf
from helpers import FOUR_STEP_EPOCH_FLAGS, logged_steps, python_env, train_in_process

from tfascl import callbacks, runs, train
from tfascl.evaluation import encoders

STEPS_PER_EPOCH = 4  # 64 digits in batches of 16
ARGS = (*FOUR_STEP_EPOCH_FLAGS, "--noexport")


def run(model_dir, *args):
    """tfascl-train in this process; returns its RunResult."""
    return train_in_process(*ARGS, *args, f"--model_dir={model_dir}")


def checkpoint_files(model_dir):
    return sorted(p.name for p in (Path(model_dir) / "checkpoints").iterdir())


def truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def data_file(model_dir, name):
    return Path(model_dir) / "checkpoints" / f"{name}.data-00000-of-00001"


@pytest.fixture(scope="module")
def one_epoch(trained_run):
    """A finished 1-epoch run: ckpt-0, ckpt-2, ckpt-4 and the best copy, best-4 (the
    session's shared run: ARGS with --epochs=1 --checkpoint_every=2; tests copy it)."""
    return trained_run


def test_damaged_newest_and_best_checkpoints_and_metrics_line_then_resume(
    one_epoch, tmp_path, capsys
):
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch, model_dir)
    truncate(data_file(model_dir, "ckpt-4"))  # what a kill or a full disk mid-save leaves
    truncate(data_file(model_dir, "best-4"))
    with open(model_dir / "metrics.jsonl", "a") as stream:
        stream.write('{"kind": "step", "step": 5, "lo')  # a kill mid-write
    capsys.readouterr()

    result = run(model_dir, "--epochs=2", "--checkpoint_every=2")

    out, err = capsys.readouterr()
    assert result.exit_code == 0, err
    # One line for each damaged file, naming it, what was done and what is used.
    (newest,) = [line for line in err.splitlines() if "ckpt-4 is unreadable" in line]
    assert "Read less bytes than requested" in newest and "moved aside to damaged/" in newest
    assert newest.endswith("using ckpt-2")
    (best,) = [line for line in err.splitlines() if "best checkpoint best-4" in line]
    assert "moved aside" in best
    assert "dropped 1 damaged line" in out
    assert "Resuming from" in out and "ckpt-2 at step 2 " in out
    # The run resumed from the previous readable checkpoint and finished.
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["resumed_from_step"] == 2
    assert summary["status"] == "completed" and summary["steps"] == 2 * STEPS_PER_EPOCH
    assert logged_steps(model_dir) == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    # The damaged files are kept, under their names, where no manager looks.
    kept = sorted(p.name for p in (model_dir / "checkpoints" / "damaged").glob("*/*"))
    assert kept == [f"{name}.{ext}" for name in ("best-4", "ckpt-4")
                    for ext in ("data-00000-of-00001", "index")], kept  # fmt: skip
    assert sorted(p.name for p in model_dir.glob("damaged/*/*")) == [
        runs.BEST_FILE,
        "best_knn.json",
    ]
    state = tf.train.get_checkpoint_state(str(model_dir / "checkpoints"))
    listed = [Path(p).name for p in state.all_model_checkpoint_paths]
    assert listed == ["ckpt-4", "ckpt-6", "ckpt-8"]
    # A new ckpt-4 was written on the way, and the resumed run's kNN made a new, readable
    # best (at an epoch end of this run: which one depends on the kNN accuracies).
    assert runs.checkpoint_problem(model_dir / "checkpoints" / "ckpt-4") is None
    best = runs.best_checkpoint(model_dir)
    assert Path(best).name in (f"best-{STEPS_PER_EPOCH}", f"best-{2 * STEPS_PER_EPOCH}")
    assert runs.checkpoint_problem(best) is None


def test_eval_and_export_latest_skip_a_damaged_checkpoint(one_epoch, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch, model_dir)
    truncate(data_file(model_dir, "ckpt-4"))
    notes = []
    # What tfascl-eval and tfascl-export call for --checkpoint=latest.
    path = runs.find_checkpoint(model_dir, "latest", report=notes.append)
    assert Path(path).name == "ckpt-2" and len(notes) == 1 and "ckpt-4 is unreadable" in notes[0]
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-2")
    encoder = encoders.from_model_dir(model_dir, "latest")
    assert Path(encoder.checkpoint).name == "ckpt-2"
    # A named checkpoint that is damaged is an error of one line, and is left alone.
    truncate(data_file(model_dir, "ckpt-2"))
    with pytest.raises(runs.RunFileError, match=r"ckpt-2 is unreadable \(Read less bytes"):
        runs.find_checkpoint(model_dir, "ckpt-2")
    assert data_file(model_dir, "ckpt-2").is_file()
    # A damaged best copy: set aside with its pointer, the newest readable one is used.
    (model_dir / "checkpoints" / "best-4.index").write_bytes(b"not an index")
    notes.clear()
    path = runs.find_checkpoint(model_dir, "best", report=notes.append)
    assert Path(path).name == "ckpt-0", notes
    assert any("best checkpoint best-4 is unreadable" in note for note in notes)
    assert not (model_dir / runs.BEST_FILE).exists()
    assert any("ckpt-2 is unreadable" in note for note in notes)


def test_full_disk_while_saving_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    model_dir = tmp_path / "run"
    save = tf.train.CheckpointManager.save

    def save_on_a_full_disk(manager, checkpoint_number=None, **kwargs):
        if checkpoint_number is None or checkpoint_number < 3:
            return save(manager, checkpoint_number=checkpoint_number, **kwargs)
        # A real write error inside TensorFlow's writer: files larger than 8 KiB
        # cannot be written (EFBIG, as ENOSPC on a full disk).
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, limits[1]))
        try:
            return save(manager, checkpoint_number=checkpoint_number, **kwargs)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, previous)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save_on_a_full_disk)
    capsys.readouterr()
    result = run(model_dir, "--epochs=1", "--checkpoint_every=1")
    _, err = capsys.readouterr()
    assert result.exit_code == train.EXIT_SAVE_FAILED == 1
    (line,) = [line for line in err.splitlines() if line.strip()]
    assert line.startswith(f"error: could not save a checkpoint at step 3 in {model_dir}")
    assert "File too large" in line and "newest good checkpoint: ckpt-2" in line
    files = checkpoint_files(model_dir)
    assert not [f for f in files if "ckpt-3" in f], files  # no ckpt-3_temp, no half ckpt-3
    assert "ckpt-2.index" in files
    assert json.loads((model_dir / "summary.json").read_text())["status"] == "save_failed"

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)  # space freed
    result = run(model_dir, "--epochs=1", "--checkpoint_every=1")
    summary = json.loads((model_dir / "summary.json").read_text())
    assert result.exit_code == 0 and summary["resumed_from_step"] == 2
    assert summary["steps"] == STEPS_PER_EPOCH
    assert logged_steps(model_dir) == list(range(1, STEPS_PER_EPOCH + 1))


def test_full_disk_while_copying_the_best_checkpoint_is_one_line_and_the_run_goes_on(
    tmp_path, monkeypatch, capsys
):
    model_dir = tmp_path / "run"
    write = tf.train.Checkpoint.write

    def write_on_a_full_disk(checkpoint, file_prefix, *args, **kwargs):
        if "best-" not in str(file_prefix):
            return write(checkpoint, file_prefix, *args, **kwargs)
        # A real write error, as in the test above: EFBIG past 8 KiB, as ENOSPC.
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, limits[1]))
        try:
            return write(checkpoint, file_prefix, *args, **kwargs)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, previous)

    monkeypatch.setattr(tf.train.Checkpoint, "write", write_on_a_full_disk)
    capsys.readouterr()
    result = run(model_dir, "--epochs=1", "--noknn_at_start")
    _, err = capsys.readouterr()
    assert result.exit_code == 0 and result.summary["completed"]
    (line,) = [line for line in err.splitlines() if line.strip()]
    assert line.startswith("warning: could not keep the best checkpoint best-4 (kNN top-1 ")
    assert "File too large" in line and "training goes on" in line
    # No best copy and no half of one; the latest checkpoint is whole, as resume needs.
    files = checkpoint_files(model_dir)
    assert not [f for f in files if f.startswith("best")], files
    assert "ckpt-4.index" in files and result.summary["best_checkpoint"] is None
    assert not (model_dir / runs.BEST_FILE).exists()


def test_damaged_run_files_are_one_line(tmp_path, capsys):
    model_dir = tmp_path / "run"
    runs.save_spec(runs.RunSpec(), model_dir)
    (model_dir / "run.json").write_text('{"method": "ascl", "backb')
    with pytest.raises(runs.RunFileError, match=r"run\.json is damaged \(") as error:
        runs.load_spec(model_dir)
    assert "\n" not in str(error.value)
    with pytest.raises(encoders.EvalInputError, match=r"run\.json is damaged"):
        encoders.from_model_dir(model_dir)
    (model_dir / "run.json").write_text('{"methd": "ascl"}')
    with pytest.raises(runs.RunFileError, match=r"run\.json is damaged \(unknown RunSpec"):
        runs.load_spec(model_dir)

    (model_dir / "flags.json").write_bytes(b'{"method": "ascl", \x00\x00')
    config = train.TrainConfig()
    with pytest.raises(train.FlagError, match=r"flags\.json is damaged .*--force"):
        train.check_previous_run(model_dir, config)
    config.force = True
    assert train.check_previous_run(model_dir, config) is None

    (model_dir / "summary.json").write_text('{"status": "compl')
    assert runs.read_json_record(model_dir / "summary.json") == {}
    (model_dir / callbacks.BEST_INFO_FILE).write_text("{")
    assert callbacks.read_best(model_dir) == {}
    assert "best_knn.json is damaged" in capsys.readouterr().err

    records = [{"kind": "step", "step": s, "loss": 1.0} for s in (1, 2, 3)]
    text = "".join(json.dumps(r) + "\n" for r in records)
    (model_dir / "metrics.jsonl").write_text(text + '{"kind": "step", "st')
    notes = []
    assert callbacks.truncate_metrics(model_dir, 2, announce=notes.append) == 1
    assert logged_steps(model_dir) == [1, 2] and "dropped 1 damaged line" in notes[0]


@pytest.mark.parametrize("fails", ["write", "sync", "rename"])
def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path, monkeypatch, fails):
    # The write that fails is of the file that holds the old text: a writer that opened
    # it for writing (truncating it) and then met a full disk would leave half a file.
    path = tmp_path / "flags.json"
    runs.atomic_write_text(path, "old\n")
    new = "new " * 5000 + "\n"

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if fails == "write":  # any file opened for writing: half the text, then a full disk

        class HalfWritten:
            def __init__(self, stream):
                self.stream = stream

            def write(self, text):
                self.stream.write(text[: len(text) // 2])
                self.stream.flush()
                full_disk()

            def __getattr__(self, name):
                return getattr(self.stream, name)

            def __enter__(self):
                return self

            def __exit__(self, *error):
                self.stream.close()

        real_fdopen, real_open = os.fdopen, builtins.open

        def opened(path, mode="r", *args, **kwargs):
            stream = real_open(path, mode, *args, **kwargs)
            return HalfWritten(stream) if set(mode) & set("wax+") else stream

        monkeypatch.setattr(os, "fdopen", lambda *a, **k: HalfWritten(real_fdopen(*a, **k)))
        monkeypatch.setattr(builtins, "open", opened)
        monkeypatch.setattr(io, "open", opened)
    else:
        monkeypatch.setattr(os, "fsync" if fails == "sync" else "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        runs.atomic_write_text(path, new)
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flags.json"]  # no temporary left
    runs.atomic_write_text(path, new)
    assert path.read_text() == new


# --- SIGTERM on one machine ----------------------------------------------------------------

EPOCHS = 3
TOTAL = EPOCHS * STEPS_PER_EPOCH


def test_sigterm_saves_the_step_reached_and_the_same_command_resumes(tmp_path, capsys):
    model_dir = tmp_path / "run"
    args = (f"--epochs={EPOCHS}", "--knn_every=0", "--checkpoint_every=5")
    command = [sys.executable, "-m", "tfascl.train", *ARGS, *args, f"--model_dir={model_dir}"]
    process = subprocess.Popen(
        command, env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 240
    try:
        # In epoch 2, between periodic checkpoints: only the SIGTERM handler saves it.
        while not any(s > STEPS_PER_EPOCH and s % 5 for s in logged_steps(model_dir)):
            assert process.poll() is None, process.stdout.read().decode()
            assert time.time() < deadline, "the run never got there"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=120)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == train.EXIT_PREEMPTED == 143, output
    assert "SIGTERM: saving a checkpoint after this step" in output
    assert "Preempted at step" in output
    summary = json.loads((model_dir / "summary.json").read_text())
    stopped = summary["steps"]
    assert summary["status"] == "preempted" and STEPS_PER_EPOCH < stopped < TOTAL
    assert stopped == max(logged_steps(model_dir))
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith(f"ckpt-{stopped}")

    # The same command (here in this process, to save a TensorFlow start) resumes there.
    capsys.readouterr()
    result = run(model_dir, *args)
    assert result.exit_code == 0
    assert f"at step {stopped} (" in capsys.readouterr().out
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["resumed_from_step"] == stopped and summary["steps"] == TOTAL
    assert logged_steps(model_dir) == list(range(1, TOTAL + 1))  # every step once
