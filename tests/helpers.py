"""Shared by the tests: tiny runs and fresh Python processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tfascl import runs

REPO = Path(__file__).resolve().parents[1]

# The command-line flags of a tiny run: 16-px digits, a 4-channel ResNet-18, batches of 16,
# a 32-key queue, no XLA. Tests add what they vary (method, steps, checkpoints, ...).
TINY_RUN_FLAGS = (
    "--dataset=digits",
    "--image_size=16",
    "--backbone_width=4",
    "--projector_dims=32,16",
    "--batch_size=16",
    "--queue_size=32",
    "--knn_k=20",
    "--nojit_compile",
    "--nojit_augment",
    "--noprogress_bar",
)

# A tiny run whose epoch is 4 steps (64 digits in batches of 16), logged and monitored by
# kNN at every step or epoch, without warm-up: the fault, resume and remote-folder tests.
FOUR_STEP_EPOCH_FLAGS = (
    *TINY_RUN_FLAGS,
    "--max_train_examples=64",
    "--warmup_epochs=0",
    "--log_every=1",
    "--knn_every=1",
)


def tiny_spec(**overrides: object) -> runs.RunSpec:
    """The `RunSpec` of a tiny ASCL model (16 px, width 4, queue 16), with ``overrides``."""
    values = dict(
        method="ascl",
        backbone_width=4,
        image_size=16,
        num_splits=2,
        projector_dims=(16, 8),
        queue_size=16,
        batch_size=8,
    )
    return runs.RunSpec(**{**values, **overrides})


def python_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python: this repository importable, TF quiet."""
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def run_python(
    *args: str, timeout: int = 600, cwd: str | Path | None = None
) -> subprocess.CompletedProcess:
    """Runs ``python ARGS`` with the repository importable and captures its output.

    Tests use it where TensorFlow must start afresh, e.g. with two logical CPU
    devices, which can only be configured before TensorFlow initialises, and to
    run the command-line tools as a user does.
    """
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        env=python_env(),
        cwd=cwd,
        timeout=timeout,
    )


def train_in_process(*args: str):
    """``tfascl-train ARGS`` in this process (parsed on flags of their own); its RunResult."""
    from tfascl import train

    return train.train(train.config_from_args(args))


def logged_steps(model_dir) -> list:
    """The steps in a run's metrics.jsonl so far (a half-written last line is skipped)."""
    path, steps = Path(model_dir) / "metrics.jsonl", []
    for line in path.read_text().splitlines() if path.is_file() else ():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("kind") == "step":
            steps.append(record["step"])
    return steps


def run_check(script: str | Path, strategy, *args: str) -> dict:
    """Runs a tests/*_check.py script in this process with ``strategy`` (the session's
    MirroredStrategy on the two logical CPUs of tests/conftest.py) as its ``STRATEGY``,
    and returns the JSON record it prints last."""
    import contextlib
    import io
    import runpy

    out, argv = io.StringIO(), sys.argv
    sys.argv = [str(script), *map(str, args)]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(script), {"STRATEGY": strategy}, run_name="__main__")
    finally:
        sys.argv = argv
    return json.loads(out.getvalue().strip().splitlines()[-1])
