"""A run survives: SIGKILL mid-epoch and resume, Ctrl-C saves, a finished run is left
alone, and a changed key flag is refused unless --force."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TINY_RUN_FLAGS, logged_steps, python_env, run_python

from tfascl import train

STEPS_PER_EPOCH, EPOCHS = 4, 6  # 64 digits in batches of 16
TOTAL = STEPS_PER_EPOCH * EPOCHS
ARGS = (
    *TINY_RUN_FLAGS,
    "--max_train_examples=64",
    f"--epochs={EPOCHS}",
    "--warmup_epochs=1",
    "--knn_every=3",
    "--log_every=1",
    "--checkpoint_every=3",
)


def command(model_dir, *extra):
    return [sys.executable, "-m", "tfascl.train", *ARGS, f"--model_dir={model_dir}", *extra]


def run(model_dir, *extra):
    return run_python("-m", "tfascl.train", *ARGS, f"--model_dir={model_dir}", *extra, timeout=300)


def latest_step(model_dir):
    state = Path(model_dir) / "checkpoints" / "checkpoint"
    if not state.is_file():
        return None
    for line in state.read_text().splitlines():
        if line.startswith("model_checkpoint_path:"):
            return train.checkpoint_step(line.split(":", 1)[1].strip().strip('"'))
    return None


def start_until(model_dir, ready, sig, timeout=240):
    """Starts a run, sends ``sig`` once ``ready()``, and returns (process, stdout)."""
    process = subprocess.Popen(
        command(model_dir), env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + timeout
    try:
        while not ready():
            assert process.poll() is None, process.stdout.read().decode()
            assert time.time() < deadline, "the run never got there"
            time.sleep(0.02)
        process.send_signal(sig)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return process, output.decode()


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_finish_and_rerun(tmp_path):
    model_dir = tmp_path / "run"

    # 1. Killed (no chance to save) once a checkpoint in the middle of epoch 3 exists.
    def mid_epoch_checkpoint():
        step = latest_step(model_dir)
        return step is not None and step >= 9 and step % STEPS_PER_EPOCH

    process, _ = start_until(model_dir, mid_epoch_checkpoint, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    killed_at = latest_step(model_dir)
    assert 9 <= killed_at < TOTAL

    # 2. The same command resumes from that step, not from zero, and finishes.
    result = run(model_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"at step {killed_at} (" in result.stdout
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["resumed_from_step"] == killed_at
    # The random encoder's kNN, recorded before step 1, still makes the verdict.
    assert summary["initial_knn_top1"] is not None
    assert "pretraining: " in result.stdout and "on the 360 test digits" in result.stdout
    assert summary["steps"] == summary["total_steps"] == TOTAL
    assert latest_step(model_dir) == TOTAL
    # Each step logged once: records after the resumed checkpoint were replaced.
    assert logged_steps(model_dir) == list(range(1, TOTAL + 1))

    # 3. Re-running a finished run trains nothing and changes nothing.
    before = {p.name: p.stat().st_mtime_ns for p in (model_dir / "checkpoints").iterdir()}
    result = run(model_dir)
    assert result.returncode == 0 and "complete" in result.stdout, result.stderr
    assert before == {p.name: p.stat().st_mtime_ns for p in (model_dir / "checkpoints").iterdir()}

    # 4. A changed key flag is one clear line and exit 2.
    result = run(model_dir, "--method=moco")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--method=moco" in errors[0] and "--force" in errors[0]


def test_force_accepts_changed_key_flags(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    saved = train.TrainConfig(method="ascl", batch_size=16)
    (model_dir / "flags.json").write_text(json.dumps(saved.to_json()))
    changed = train.TrainConfig(method="ahcl", batch_size=32)
    with pytest.raises(train.FlagError, match=r"^--method=ahcl: .*changed: method, batch_size"):
        train.check_previous_run(model_dir, changed)
    changed.force = True
    assert train.check_previous_run(model_dir, changed)["method"] == "ascl"


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    model_dir = tmp_path / "run"
    # Interrupted between periodic checkpoints (every 3 steps): only the interrupt saves it.
    process, output = start_until(
        model_dir, lambda: any(s % 3 for s in logged_steps(model_dir)), signal.SIGINT
    )
    assert process.returncode == train.EXIT_INTERRUPTED, output
    assert "Interrupted at step" in output
    saved = latest_step(model_dir)
    assert saved == max(logged_steps(model_dir)) and saved < TOTAL
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == saved
