"""A run folder's files: one owner of their names, one atomic writer, a kill during the
metrics truncation of a resume, a restore that refuses another run's checkpoint, and the
one top-k accuracy."""

import json
import re
import shutil
import signal
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, run_python, tiny_spec

from tfascl import callbacks, export, knn, runs, train
from tfascl.evaluation import encoders, results
from tfascl.train_config import FlagError

# --- Names and writes ---------------------------------------------------------------------

RUN_FILES = (
    runs.SPEC_FILE,
    runs.FLAGS_FILE,
    runs.FLAGS_TEXT_FILE,
    runs.SUMMARY_FILE,
    runs.METRICS_FILE,
    runs.METRICS_CSV_FILE,
    runs.BEST_FILE,
    runs.BEST_INFO_FILE,
    runs.RESULTS_FILE,
)


def test_run_file_names_are_spelled_in_runs_only():
    spelled = {}
    for path in sorted((REPO / "tfascl").rglob("*.py")):
        if path.name == "runs.py":
            continue
        text = path.read_text()
        for name in RUN_FILES:
            if re.search(rf"[\"']{re.escape(name)}[\"']", text):
                spelled.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert spelled == {}, f"run file names as literals outside runs.py: {spelled}"
    assert len(set(RUN_FILES)) == len(RUN_FILES)


def test_run_files_are_written_through_the_one_atomic_writer(tmp_path, monkeypatch):
    written = []
    write = runs.atomic_write_text

    def recording(path, text):
        written.append(Path(path).name)
        return write(path, text)

    monkeypatch.setattr(runs, "atomic_write_text", recording)
    runs.save_spec(tiny_spec(), tmp_path)
    callbacks.write_best(tmp_path, {"checkpoint": "best-4", "knn_top1": 0.5, "step": 4})
    results.update_results(tmp_path, "knn", {"metrics": {"top1": 0.5}})
    (tmp_path / runs.METRICS_FILE).write_text('{"step": 1}\n{"step": 2}\n')
    callbacks.truncate_metrics(tmp_path, 1)
    assert written == [
        runs.SPEC_FILE,
        runs.BEST_INFO_FILE,
        runs.BEST_FILE,
        runs.RESULTS_FILE,
        runs.METRICS_FILE,
    ]
    assert callbacks.read_best(tmp_path)["checkpoint"] == "best-4"
    assert (tmp_path / runs.BEST_FILE).read_text() == "best-4\n"
    assert results.read_results(tmp_path)["knn"]["metrics"]["top1"] == 0.5
    assert (tmp_path / runs.METRICS_FILE).read_text() == '{"step": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# --- A kill during the metrics truncation of a resume ------------------------------------

# Runs truncate_metrics with every file opened for writing from then on replaced by one
# whose first write writes half its bytes, syncs them and SIGKILLs the process ("write"),
# or with os.replace SIGKILLing it before it renames ("replace"). A non-atomic truncation
# (open the metrics file "w", write) is killed with half a file on disk.
_KILL_SCRIPT = textwrap.dedent(
    """
    import builtins, io, os, signal, sys
    from tfascl import callbacks

    model_dir, step, kill_at = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def kill(note):
        sys.stderr.write(f"KILLED {note}\\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    class HalfThenKill:
        def __init__(self, stream):
            self._stream = stream

        def __getattr__(self, name):
            return getattr(self._stream, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._stream.__exit__(*exc)

        def write(self, data):
            self._stream.write(data[: len(data) // 2])
            self._stream.flush()
            os.fsync(self._stream.fileno())
            kill(f"after {len(data) // 2} of {len(data)} characters")

    real_open = io.open

    def opening(file, mode="r", *args, **kwargs):
        stream = real_open(file, mode, *args, **kwargs)
        return HalfThenKill(stream) if set(mode) & set("wax+") else stream

    if kill_at == "write":
        io.open = builtins.open = opening
    else:
        os.replace = lambda source, target: kill(f"before renaming onto {target}")
    callbacks.truncate_metrics(model_dir, step)
    print("NOT KILLED")
    """
)


@pytest.mark.parametrize("kill_at", ["write", "replace"])
def test_a_kill_while_truncating_metrics_on_resume_loses_nothing(tmp_path, kill_at):
    # 20,000 logged steps (about 1.5 MB) and a last line cut short by the kill that ended
    # the run; the resume continues from the checkpoint of step 15,000.
    lines = [
        json.dumps({"kind": "step", "step": step, "loss": 1.0 / step, "time": 1e9 + step}) + "\n"
        for step in range(1, 20_001)
    ]
    metrics = tmp_path / runs.METRICS_FILE
    metrics.write_text("".join(lines) + '{"kind": "step", "st')
    before = metrics.read_bytes()

    proc = run_python("-c", _KILL_SCRIPT, tmp_path, 15_000, kill_at, timeout=120)

    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr[-2000:]
    assert "KILLED" in proc.stderr  # killed inside the truncation's write, not before
    assert metrics.read_bytes() == before  # the old file, whole: nothing logged is lost
    # The next resume truncates it, once and whole.
    notes = []
    assert callbacks.truncate_metrics(tmp_path, 15_000, announce=notes.append) == 1
    assert metrics.read_text() == "".join(lines[:15_000])
    assert len(notes) == 1 and "dropped 1 damaged line" in notes[0]


# --- One restore that checks the checkpoint holds the run's model ------------------------


@pytest.fixture(scope="module")
def ascl_run(tmp_path_factory):
    """A tiny ASCL run (width 4): run.json and one checkpoint of its model; and a copy of
    the checkpoint in a folder of its own (no run.json beside it)."""
    folder = tmp_path_factory.mktemp("ascl")
    model_dir = folder / "run"
    spec = tiny_spec()
    runs.save_spec(spec, model_dir)
    model = spec.build_model()
    path = tf.train.Checkpoint(model=model).save(str(runs.checkpoint_dir(model_dir) / "ckpt"))
    (folder / "bare").mkdir()
    for part in Path(path).parent.glob("ckpt-1.*"):
        shutil.copy(part, folder / "bare" / part.name)
    return model_dir, path, str(folder / "bare" / "ckpt-1")


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        # Another width: the first variable whose shape differs, both shapes, how many more.
        (
            {"backbone_width": 8},
            r"stem_conv/kernel is \(3, 3, 3, 4\) in the checkpoint, \(3, 3, 3, 8\) in the "
            r"model \(and \d+ more\)$",
        ),
        # Another queue: the same layers, other shapes.
        ({"queue_size": 32}, r"queue/keys is \(16, 8\) in the checkpoint, \(32, 8\) in the model"),
        # Another model class (BYOL's BN projector, predictor): variables the checkpoint lacks.
        ({"method": "byol", "total_steps": 10}, r"\d+ of the model's variables are not in it \("),
    ],
)
def test_another_models_checkpoint_is_a_one_line_error(ascl_run, tmp_path, capfd, changes, detail):
    _, _, bare = ascl_run  # no run.json beside it: the variables tell
    model_dir = tmp_path / "other"
    runs.save_spec(tiny_spec(**changes), model_dir)
    spec = runs.load_spec(model_dir)
    with pytest.raises(runs.CheckpointMismatch) as caught:
        runs.restore_model(model_dir, bare)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{bare} does not hold this run's model ({spec.method}, resnet18 ")
    assert f"width {spec.backbone_width}, 16 px): " in message
    assert re.search(detail, message), message
    # No traceback, no TensorFlow warnings about unrestored values beside the one line.
    assert "unrestored" not in capfd.readouterr().err

    # Evaluation and export refuse it the same way, before writing anything.
    same = re.escape(message[: message.index("): ") + 3]) + detail
    with pytest.raises(encoders.EvalInputError, match=same):
        encoders.from_model_dir(model_dir, bare)
    with pytest.raises(runs.CheckpointMismatch, match=same):
        export.export_backbone(model_dir, tmp_path / "serving", checkpoint=bare)
    assert not (tmp_path / "serving").exists()


def test_another_methods_checkpoint_of_the_same_weights_is_refused(ascl_run, tmp_path):
    _, path, bare = ascl_run
    model_dir = tmp_path / "moco"
    runs.save_spec(tiny_spec(method="moco"), model_dir)
    # ASCL and MoCo have the same variables: the run.json beside the checkpoint tells.
    with pytest.raises(runs.CheckpointMismatch) as caught:
        runs.restore_model(model_dir, path)
    assert str(caught.value).endswith(
        f"its run ({Path(path).parents[1] / 'run.json'}) is ascl, not moco"
    )
    # Without a run.json beside it nothing tells them apart: the weights load.
    model, _, _ = runs.restore_model(model_dir, bare)
    assert model.queue.keys.shape == (16, 8)


def test_training_resume_of_another_model_is_a_flag_error(ascl_run, capfd):
    model_dir, _, _ = ascl_run
    wider = tiny_spec(backbone_width=8)  # e.g. --backbone_width changed with --force
    checkpoint = tf.train.Checkpoint(model=wider.build_model())
    with pytest.raises(FlagError) as caught:
        train.restore_latest(checkpoint, model_dir, chief=False, spec=wider)
    message = str(caught.value)
    assert message.startswith(f"--model_dir={model_dir}: ") and "\n" not in message
    assert "ckpt-1 does not hold this run's model (ascl, resnet18 width 8, 16 px): " in message
    assert re.search(r" in the checkpoint, .* in the model .*; use another --model_dir$", message)
    assert "unrestored" not in capfd.readouterr().err
    # The run's own model restores, and its weights are the checkpoint's.
    spec = runs.load_spec(model_dir)
    model = spec.build_model()
    assert train.restore_latest(tf.train.Checkpoint(model=model), model_dir, spec=spec)
    restored, _, _ = runs.restore_model(model_dir)
    for mine, theirs in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


# --- One top-k accuracy -------------------------------------------------------------------


def top_k_reference(scores, labels, k):
    """float64 NumPy: the label among the first k classes by score, lower index first on ties."""
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean([label in row for label, row in zip(labels, order)]))


def test_top_k_accuracy_against_numpy_with_ties():
    scores = np.array(
        [
            [0.5, 0.0, 0.0, 0.0, 0.0],  # four classes tied at 0 (no kNN vote)
            [0.1, 0.3, 0.3, 0.2, 0.0],  # a tie at the top
            [0.2, 0.2, 0.2, 0.2, 0.2],  # all tied
            [0.0, 0.1, 0.4, 0.9, 0.4],
            [1.0, 2.0, 3.0, 4.0, 5.0],
            [0.3, 0.3, 0.1, 0.0, 0.3],
        ]
    )
    labels = np.array([3, 2, 1, 2, 4, 4])
    for k in range(1, 7):  # 6 > 5 classes: all of them
        want = top_k_reference(scores, labels, k)
        assert knn.top_k_accuracy(scores, labels, k) == pytest.approx(want, abs=1e-12), k
        got32 = knn.top_k_accuracy(scores.astype(np.float32), tf.constant(labels), k)
        assert got32 == pytest.approx(want, abs=1e-12), k
    # These ties decide: counting every class tied with the k-th score (in_top_k) differs.
    tied = tf.math.in_top_k(tf.constant(labels, tf.int32), tf.constant(scores, tf.float32), 2)
    assert float(np.mean(tied)) != top_k_reference(scores, labels, 2)
    # By hand, top-2 (ties: lower index first): rows 1, 2, 3 and 4 are hits.
    assert top_k_reference(scores, labels, 2) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match=r"scores must be \[N, C\] with one label a row"):
        knn.top_k_accuracy(scores, labels[:3], 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn.top_k_accuracy(scores, labels, 0)
