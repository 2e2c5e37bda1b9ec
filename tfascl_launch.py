"""The console commands of tfascl, started quietly.

``tfascl-train``, ``tfascl-eval`` and ``tfascl-export`` point here (setup.cfg); the work is
``tfascl._startup``'s: flags are defined and parsed before TensorFlow is imported (``import
tfascl`` does not import it), so ``--help`` and a bad flag answer at once, and TensorFlow is
then imported without its C++ start-up lines (oneDNN, cpu_feature_guard, "All log messages
before absl::InitializeLog() ..."), whether or not the user set ``TF_CPP_MIN_LOG_LEVEL``
(which, when set, governs every later line). ``python -m tfascl.train`` (and
``tfascl.evaluation.cli``, ``tfascl.export``) start the same way. Python's absl logging,
which ``--verbosity`` controls, is not affected.
"""

from __future__ import annotations

from tfascl._startup import (
    LOG_LEVEL_VARIABLE,
    QUIET_LEVEL,
    STARTUP_NOISE,
    evaluate,
    export,
    quiet_tensorflow_import,
    train,
)

__all__ = [
    "LOG_LEVEL_VARIABLE",
    "QUIET_LEVEL",
    "STARTUP_NOISE",
    "evaluate",
    "export",
    "quiet_tensorflow_import",
    "train",
]
