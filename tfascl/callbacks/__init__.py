"""Keras callbacks that watch and protect a pre-training run.

All of them take plain arguments (no flags) and key their records on the global
step, ``model.optimizer.iterations``, so that a resumed run continues the same
curves instead of restarting them at zero. They live in modules by job, and every
name is importable from here (``from tfascl import callbacks``; ``callbacks.KnnMonitor``):

* ``clock``: ``StepClock`` (the global step counted in Python) and the helpers the
  others share (``global_step``, ``due``, ``scalar_logs``, ``state_is_finite``, ...).
* ``safety``, what keeps a run safe: ``NonFiniteLoss`` (stops at the first non-finite
  loss), ``InputRanOut`` (stops when an epoch's input ends before its steps),
  ``StopOnSignal`` and ``StopAgreement`` (Ctrl-C and preemption stop every worker after
  one and the same step), ``CheckpointSaver`` and ``save_checkpoint`` (a checkpoint every
  N steps and at each epoch end, never of a non-finite state; ``SaveFailed``).
* ``monitoring``, how good the features are: ``KnnMonitor`` (weighted kNN top-1/top-5
  every N epochs, the randomly initialised encoder's baseline, the best checkpoint's
  copy: ``read_best``, ``write_best``), ``KnnReport`` (its lines).
* ``logs``, what a run shows and records: ``ProgressBar``, ``MetricsLogger``
  (``metrics.jsonl``; ``truncate_metrics`` on a resume) and ``TensorBoard`` (the same
  scalars on the global step, and the profiler).

No per-step host work: with ``compile(steps_per_execution=N)`` Keras calls the batch
hooks once per execution of N steps, with the index of its last batch. The callbacks
count the global step in Python (``StepClock``: the optimizer's counter is read once at
each epoch's start), and read tensors (the step counter, the learning rate, the weights'
finiteness) only where a log record, a checkpoint or an epoch end is due. A record or
checkpoint every K steps is written at the first execution boundary at or after each
multiple of K: exactly there when N divides K and the steps per epoch (``tfascl-train``
refuses an N that does not divide ``--log_every`` and ``--checkpoint_every``), and
named by the true global step in any case, so a resume is exact.

``async_safe``: Keras 3 may run the batch-end hooks of callbacks that all declare
``async_safe = True`` in a worker thread (only on thread-safe backends: JAX, NumPy, not
TensorFlow, where Keras always calls them in line). ``NonFiniteLoss`` and ``KnnMonitor``
declare it; ``StopOnSignal`` (the cluster's stop agreement counts steps in order),
``CheckpointSaver`` (a save must see the state between two steps) and ``MetricsLogger``
(timing, the learning rate of the step) and ``TensorBoard`` do not.
"""

from tfascl.callbacks.clock import (
    StepClock,
    current_learning_rate,
    due,
    global_step,
    is_multi_worker,
    is_number,
    scalar_logs,
    state_is_finite,
)
from tfascl.callbacks.logs import MetricsLogger, ProgressBar, TensorBoard, truncate_metrics
from tfascl.callbacks.monitoring import (
    KnnMonitor,
    KnnReport,
    monitored_model,
    percent,
    read_best,
    read_initial,
    share_from_chief,
    write_best,
)
from tfascl.callbacks.safety import (
    EXIT_STATUS_BY_SIGNAL,
    CheckpointSaver,
    InputRanOut,
    NonFiniteLoss,
    SaveFailed,
    StopAgreement,
    StopOnSignal,
    save_checkpoint,
)
from tfascl.cli import profile_range  # parsed without TensorFlow (tfascl-train's flags)
from tfascl.runs import BEST_INFO_FILE, BEST_PREFIX, METRICS_FILE

__all__ = [
    "BEST_INFO_FILE",
    "BEST_PREFIX",
    "EXIT_STATUS_BY_SIGNAL",
    "METRICS_FILE",
    "CheckpointSaver",
    "InputRanOut",
    "KnnMonitor",
    "KnnReport",
    "MetricsLogger",
    "NonFiniteLoss",
    "ProgressBar",
    "SaveFailed",
    "StepClock",
    "StopAgreement",
    "StopOnSignal",
    "TensorBoard",
    "current_learning_rate",
    "due",
    "global_step",
    "is_multi_worker",
    "is_number",
    "monitored_model",
    "percent",
    "profile_range",
    "read_best",
    "read_initial",
    "save_checkpoint",
    "scalar_logs",
    "share_from_chief",
    "state_is_finite",
    "truncate_metrics",
    "write_best",
]
