"""The step clock and the small helpers every callback of a training run shares.

The callbacks key their records on the global step, ``model.optimizer.iterations``, so
that a resumed run continues the same curves instead of restarting them at zero. No
per-step host work: with ``compile(steps_per_execution=N)`` Keras calls the batch hooks
once per execution of N steps, with the index of its last batch. ``StepClock`` counts the
global step in Python (the optimizer's counter is read once at each epoch's start), and
the callbacks read tensors (the step counter, the learning rate, the weights'
finiteness) only where a log record, a checkpoint or an epoch end is due (``due``).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf


def global_step(model: keras.Model) -> int:
    """The optimizer's step counter: the number of train steps ever applied."""
    return int(model.optimizer.iterations.numpy())


def current_learning_rate(model: keras.Model) -> float:
    """The learning rate the next step uses (schedules are functions of the step)."""
    return float(np.asarray(model.optimizer.learning_rate))


def scalar_logs(logs: dict | None) -> dict[str, float]:
    """``logs`` as Python floats (``fit`` hands tensors to the batch hooks)."""
    return {name: float(np.asarray(value)) for name, value in (logs or {}).items()}


def state_is_finite(model: keras.Model) -> bool:
    """True when every weight of the model (both encoders, queue, heads) is finite."""
    return all(
        bool(np.all(np.isfinite(np.asarray(weight))))
        for weight in model.weights
        if np.issubdtype(np.dtype(weight.dtype), np.floating)
    )


def due(previous: int, step: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in ``(previous, step]`` (0: never)."""
    return every > 0 and step // every > previous // every


def is_number(value: Any) -> bool:
    """A Python or NumPy number: reading it waits for nothing (unlike a tensor)."""
    return isinstance(value, (int, float, np.number, np.ndarray))


class StepClock(keras.callbacks.Callback):
    """The global step after each execution, counted in Python.

    ``model.optimizer.iterations`` is read once per epoch (``on_epoch_begin``); after
    that, the step after batch index ``batch`` of the epoch is its start plus
    ``batch + 1``, capped at the epoch's ``steps`` (the last execution of an epoch may
    run fewer than ``steps_per_execution`` steps). Subclasses call ``advance(batch)``
    in ``on_train_batch_end`` and get ``(previous step, step)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._epoch_start: int | None = None
        self._step = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = self._step = global_step(self.model)

    def advance(self, batch: int) -> tuple[int, int]:
        done = batch + 1
        steps = (self.params or {}).get("steps")
        if steps:
            done = min(done, int(steps))
        if self._epoch_start is None:  # hooks called outside fit: ask the optimizer once
            self._epoch_start = global_step(self.model) - done
            self._step = max(self._epoch_start, 0)
        previous, self._step = self._step, self._epoch_start + done
        return previous, self._step


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether ``strategy`` is a ``MultiWorkerMirroredStrategy`` over a cluster (``TF_CONFIG``).

    (A TPU strategy has a cluster too, but one host drives it: a local stop is enough.)
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    resolver = strategy.cluster_resolver
    return bool(resolver is not None and resolver.cluster_spec().jobs)
