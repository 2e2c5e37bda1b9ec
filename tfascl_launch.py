"""The console commands of tfascl, started quietly.

``tfascl-train``, ``tfascl-eval`` and ``tfascl-export`` point here, not at the
modules themselves: ``import tfascl`` imports TensorFlow, and TensorFlow prints
its C++ start-up lines (oneDNN, cpu_feature_guard, "All log messages before
absl::InitializeLog() ...") while it is imported, before any tool code could
set a log level. This module lives outside the package so that it runs first.

Where the user has not set ``TF_CPP_MIN_LOG_LEVEL``, it sets it to 2 (TensorFlow's
C++ errors only) and imports TensorFlow with the process's stderr (file
descriptor 2, where the C++ logs go) redirected to a temporary file; it then
writes back every captured line except the start-up notices in ``STARTUP_NOISE``
(some of which TensorFlow 2.21 prints before it reads the level). A user who sets
``TF_CPP_MIN_LOG_LEVEL`` (to anything, ``0`` included) gets TensorFlow untouched.
Python's absl logging, which ``--verbosity`` controls, is not affected.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "2"
# Lines TensorFlow prints while it is imported, whatever the program does. Only
# informational ones: a warning or error from the import is written back.
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|^I\d{4} [\d:. ]+\d+ \S+:\d+\]"  # a C++ INFO line: oneDNN, cpu_feature_guard, ...
    r"|^To enable the following instructions: "  # cpu_feature_guard's second line
    r"|Unable to register cu(DNN|FFT|BLAS) factory"  # the GPU wheel's duplicate plugins
    r"|^WARNING: All log messages"
)


def quiet_tensorflow_import() -> None:
    """Imports TensorFlow without its start-up lines, unless the user chose a log level."""
    if LOG_LEVEL_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return
    os.environ[LOG_LEVEL_VARIABLE] = QUIET_LEVEL
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not STARTUP_NOISE.search(line)))
            sys.stderr.flush()


def train() -> None:
    """``tfascl-train``."""
    quiet_tensorflow_import()
    from tfascl.train import run

    run()


def evaluate() -> None:
    """``tfascl-eval``."""
    quiet_tensorflow_import()
    from tfascl.evaluation.cli import run

    run()


def export() -> None:
    """``tfascl-export``."""
    quiet_tensorflow_import()
    from tfascl.export import run

    run()
