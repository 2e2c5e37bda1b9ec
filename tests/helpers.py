"""Shared by tests that need a fresh Python process."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_python(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs ``python ARGS`` with the repository importable.

    Tests use it where TensorFlow must start afresh, e.g. with two logical CPU
    devices, which can only be configured before TensorFlow initialises.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
