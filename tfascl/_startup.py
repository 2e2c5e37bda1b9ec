"""How the commands start: flags first, then TensorFlow, quietly.

``tfascl-train`` and ``tfascl-eval`` define and parse their flags before TensorFlow is
imported (``import tfascl`` does not import it, and their flag modules need no
TensorFlow), so ``--help``, ``--helpfull`` and a bad flag answer at once. TensorFlow is
imported when the command's work starts, by ``quiet_tensorflow_import``:

TensorFlow prints C++ start-up lines while it loads (oneDNN, "All log messages before
absl::InitializeLog() ...") whatever ``TF_CPP_MIN_LOG_LEVEL`` says, and, at level 0, the
cpu_feature_guard notice when it makes its first device. Where the user has not set
``TF_CPP_MIN_LOG_LEVEL`` it is set to 2 (TensorFlow's C++ errors only). Either way the
import (at level 0, the first device too) runs with the process's stderr (file descriptor
2, where the C++ logs go) redirected to a temporary file, and every captured line except
the start-up notices of ``STARTUP_NOISE`` is written back: a warning or an error of the
import still shows, and a level the user chose governs everything after.

Plain Python: nothing here imports TensorFlow at import time.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "2"
# Lines TensorFlow prints while it starts, whatever the program does. Only informational
# ones: a warning or error from the import is written back.
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|^I\d{4} [\d:. ]+\d+ \S+:\d+\]"  # a C++ INFO line: oneDNN, cpu_feature_guard, ...
    r"|^To enable the following instructions: "  # cpu_feature_guard's second line
    r"|Unable to register cu(DNN|FFT|BLAS) factory"  # the GPU wheel's duplicate plugins
    r"|^WARNING: All log messages"
)


def quiet_tensorflow_import() -> None:
    """Imports TensorFlow without its start-up lines (see the module doc)."""
    if "tensorflow" in sys.modules:
        return
    user_level = os.environ.get(LOG_LEVEL_VARIABLE)
    if user_level is None:
        os.environ[LOG_LEVEL_VARIABLE] = QUIET_LEVEL
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            if user_level is not None and user_level.strip() in ("", "0"):
                # INFO lines show at level 0: the first device's cpu_feature_guard notice
                # comes now, inside the capture, rather than at the run's first op.
                tf.config.list_logical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not STARTUP_NOISE.search(line)))
            sys.stderr.flush()


def with_tensorflow(main: Callable[[Sequence[str]], None]) -> Callable[[Sequence[str]], None]:
    """``main`` run after a quiet TensorFlow import: an absl main whose flags were parsed
    without TensorFlow."""

    def run(argv: Sequence[str]) -> None:
        quiet_tensorflow_import()
        main(argv)

    return run


def train() -> None:
    """``tfascl-train``: flags parsed without TensorFlow; ``tfascl.train.main`` after."""
    from tfascl.cli import run_app
    from tfascl.train_config import PROGRAM, define_flags

    def main(argv: Sequence[str]) -> None:
        from tfascl.train import main as train_main

        train_main(argv)

    run_app(PROGRAM, define_flags, with_tensorflow(main))


def evaluate() -> None:
    """``tfascl-eval``: flags parsed without TensorFlow; ``tfascl.evaluation.cli.main``."""
    from tfascl.cli import run_app
    from tfascl.evaluation.cli import PROGRAM, define_flags, main

    run_app(PROGRAM, define_flags, with_tensorflow(main))


def export() -> None:
    """``tfascl-export``: its flags live beside the SavedModel writer, a TensorFlow module,
    so TensorFlow (quietly) comes first."""
    quiet_tensorflow_import()
    from tfascl.export import run

    run()
