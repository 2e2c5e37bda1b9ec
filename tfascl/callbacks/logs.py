"""The callbacks that show and record a training run: the progress bar, ``metrics.jsonl``
and TensorBoard.

* ``ProgressBar``: Keras's progress bar, telling ``tfascl.console`` while its line is open,
  so that reports written meanwhile start a line of their own.
* ``MetricsLogger``: the logs (loss, learning rate, momentum, confidence, positive
  weight, purity, kNN) as JSON lines; ``truncate_metrics`` drops those past the
  checkpoint a run resumes from.
* ``TensorBoard``: the same scalars as TensorBoard summaries on the global step, and the
  TensorFlow profiler over chosen steps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfascl import console, runs
from tfascl.callbacks.clock import StepClock, current_learning_rate, due, global_step, scalar_logs
from tfascl.runs import METRICS_FILE


class ProgressBar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar (``ProgbarLogger``) that marks its line open while it redraws it.

    ``fit`` (and ``distribute.fit_loop``) use a ``ProgbarLogger`` found in the callbacks
    instead of adding their own, at its place in the list: the callbacks before it add to
    the epoch's logs it prints, those after it print below its finished line. Between two
    redraws (verbose 1) the line has no line break; ``tfascl.console.report``, absl log
    records and Python warnings (``console.keep_reports_on_their_own_lines``) end it first.
    """

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        console.end_progress_line()  # a line left open by a fit call that stopped early
        super().on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        if self.verbose == 1:
            console.set_progress_line_open(True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)  # the final redraw ends with a line break
        console.set_progress_line_open(False)

    def on_train_end(self, logs: dict | None = None) -> None:
        super().on_train_end(logs)
        console.end_progress_line()


def truncate_metrics(
    model_dir: str | Path, step: int, announce: Callable[[str], None] = print
) -> int:
    """Drops records past ``step`` (written after the checkpoint a run resumes from).

    Lines that are not JSON (the last one, cut short by a kill mid-write) are dropped
    too, with a one-line note.

    The file is rewritten atomically (``runs.atomic_write_text``): a kill while this runs
    leaves the old file whole, and the next resume truncates it again.

    Returns:
        The number of damaged lines dropped.
    """
    path = runs.join(model_dir, METRICS_FILE)
    if not runs.is_file(path):
        return 0
    kept, damaged = [], 0
    for line in runs.read_bytes(path).decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            damaged += 1
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    if damaged:
        announce(f"{path}: dropped {damaged} damaged line(s) (cut short by a kill mid-write)")
    runs.atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return damaged


class MetricsLogger(StepClock):
    """Writes the logs every ``every_steps`` steps and at each epoch end.

    Records go to ``model_dir/metrics.jsonl`` (one JSON object a line, ``"kind"``
    ``"step"`` or ``"epoch"``), at the global step (``TensorBoard`` draws the same
    logs). Each record has the logs of
    ``train_step`` (loss, momentum, confidence, positive_weight, purity: running
    means over the epoch so far), ``learning_rate`` and, at epoch ends, the kNN
    accuracy and the throughput in image pairs per second (also added to the epoch's
    logs, for the callbacks after this one). With several steps per
    execution a step record is written at the first execution boundary at or after each
    multiple of ``every_steps``, at its true step; the logs and the learning rate are
    read only then.

    Args:
        model_dir: the run's folder; None writes nothing (non-chief workers).
        every_steps: steps between step records.
        batch_size: global batch (for pairs per second).
    """

    async_safe = False  # times the executions and reads the learning rate of the step

    def __init__(self, model_dir: str | Path | None, every_steps: int, batch_size: int) -> None:
        super().__init__()
        self.model_dir = None if model_dir is None else runs.run_path(model_dir)
        self.every_steps = max(1, every_steps)
        self.batch_size = batch_size
        self.train_seconds = 0.0
        self.steps_run = 0
        self._batch_start = 0.0
        self._epoch_seconds = 0.0
        self._epoch_steps = 0
        # Throughput leaves out the first execution of each fit call: it traces (and
        # maybe XLA-compiles) the train step.
        self._rate_seconds = 0.0
        self._rate_steps = 0
        self._first_step = True

    @property
    def pairs_per_second(self) -> float | None:
        """Image pairs per second of training, tracing steps left out."""
        if not self._rate_seconds:
            return None
        return self._rate_steps * self.batch_size / self._rate_seconds

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._first_step = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        self._epoch_seconds, self._epoch_steps = 0.0, 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # Keras turned the logs into numbers before this hook: the execution has finished.
        elapsed = time.perf_counter() - self._batch_start
        previous, step = self.advance(batch)
        steps = step - previous
        self.train_seconds += elapsed
        self.steps_run += steps
        if not self._first_step:
            self._epoch_seconds += elapsed
            self._epoch_steps += steps
            self._rate_seconds += elapsed
            self._rate_steps += steps
        self._first_step = False
        if due(previous, step, self.every_steps):
            values = scalar_logs(logs)
            values["learning_rate"] = current_learning_rate(self.model)
            step = global_step(self.model)  # the true step, read here only
            self._write({"kind": "step", "step": step, **values})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = scalar_logs(logs)
        values["learning_rate"] = current_learning_rate(self.model)
        if self._epoch_seconds:
            values["pairs_per_second"] = self._epoch_steps * self.batch_size / self._epoch_seconds
            if logs is not None:
                logs["pairs_per_second"] = values["pairs_per_second"]
        step = global_step(self.model)
        self._write({"kind": "epoch", "epoch": epoch + 1, "step": step, **values})

    def _write(self, record: dict[str, Any]) -> None:
        if self.model_dir is None:
            return
        record["time"] = time.time()
        runs.append_text(runs.join(self.model_dir, METRICS_FILE), json.dumps(record) + "\n")


class TensorBoard(StepClock):
    """TensorBoard summaries of the logs at the global step, as ``metrics.jsonl``, and the
    TensorFlow profiler over chosen steps.

    Scalars go to ``log_dir/train`` (``tf.summary.scalar`` through a writer of its own),
    with the tags of ``keras.callbacks.TensorBoard``:

    * ``batch_<name>`` of each of the logs (``batch_loss``, ``batch_momentum``, ...) and
      ``batch_learning_rate`` (the rate of the next step), where ``MetricsLogger`` writes
      a step record: at the first execution end at or after each multiple of
      ``every_steps``, at the global step of that end (counted as ``StepClock`` counts).
      Keras numbers its batch summaries by its own count of batch hooks, from 1 in each
      ``fit`` call: a resumed run (and the second ``fit`` call of a resumed partial epoch)
      would draw over steps already drawn, and with N steps per execution it would count
      executions.
    * ``epoch_<name>`` of each of the epoch's logs and ``epoch_learning_rate``, at the
      epoch index (from 0, as Keras): what callbacks before this one added to the epoch's
      logs (kNN accuracy, pairs per second) is there too. ``val_<name>`` logs (none in a
      pre-training run) go to ``log_dir/validation`` as ``epoch_<name>``.

    ``profile_steps=(A, B)`` runs the TensorFlow profiler (``tf.profiler.experimental``)
    over the executions that run global steps A to B and writes it to
    ``log_dir/train/plugins/profile``, with the graph of the functions run meanwhile
    (``tf.summary.trace_on``, exported as ``batch_<B>``); steps already trained before a
    resume are not profiled again, and a profile stops at the end of a ``fit`` call
    (``run_epochs`` makes one an epoch when executions do not divide it). Nothing of
    Keras's own TensorBoard callback is used: it has no public way to number its
    summaries by the global step.

    Args:
        log_dir: the run's TensorBoard folder.
        every_steps: steps between batch summaries (``--log_every``).
        profile_steps: ``(first, last)`` global steps to profile; ``(0, 0)``: none.
    """

    async_safe = False  # reads the learning rate of the step; the profiler spans executions

    def __init__(
        self, log_dir: str | Path, every_steps: int, profile_steps: tuple[int, int] = (0, 0)
    ) -> None:
        super().__init__()
        first, last = (int(step) for step in profile_steps)
        if first < 0 or last < first:
            raise ValueError(f"profile_steps must be (0, 0) or 1 <= A <= B, got {profile_steps}")
        self.log_dir = runs.run_path(log_dir)
        self.every_steps = max(1, every_steps)
        self.profile_steps = (first, last)
        self._writers: dict[str, Any] = {}
        self._profiling = False  # this callback started the profiler and has not stopped it
        self._execution_trace: Any = None  # the profiled execution's tf.profiler Trace
        if first > 0:
            # As Keras's TensorBoard: a profiler started and stopped once ahead makes the
            # profile itself faster and more accurate.
            if self._start_profiler(""):
                self._stop_profiler(save=False)

    def writer(self, run: str = "train") -> Any:
        """The summary writer of ``log_dir/<run>``, opened on first use in each ``fit``."""
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(str(runs.join(self.log_dir, run)))
        return self._writers[run]

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.writer("train")  # the run's event file appears when training starts, as Keras's

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._profiling:
            self._stop_profile()
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        first = self.profile_steps[0]
        if not first or self._epoch_start is None:
            return
        per_execution = getattr(self.model, "steps_per_execution", 1) or 1
        steps = (self.params or {}).get("steps") or batch + per_execution
        before = self._epoch_start + batch  # the step before this execution
        end = self._epoch_start + min(batch + per_execution, int(steps))
        if not self._profiling and before < first <= end:  # profile whole executions
            self._profiling = self._start_profiler(str(runs.join(self.log_dir, "train")))
            if self._profiling:
                tf.summary.trace_on(graph=True, profiler=False)
        if self._profiling:
            self._execution_trace = tf.profiler.experimental.Trace("Profiled batch", step_num=end)
            self._execution_trace.__enter__()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        previous, step = self.advance(batch)
        if due(previous, step, self.every_steps) and isinstance(logs, dict):
            values = {**logs, "learning_rate": current_learning_rate(self.model)}
            with self.writer("train").as_default():
                for name, value in values.items():
                    tf.summary.scalar(f"batch_{name}", value, step=step)
        if self._execution_trace is not None:
            self._execution_trace.__exit__(None, None, None)
            self._execution_trace = None
        if self._profiling and step >= self.profile_steps[1]:
            self._stop_profile()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not logs:
            return
        train = {name: value for name, value in logs.items() if not name.startswith("val_")}
        train["learning_rate"] = current_learning_rate(self.model)
        validation = {name[4:]: value for name, value in logs.items() if name.startswith("val_")}
        for run, values in (("train", train), ("validation", validation)):
            if values:
                with self.writer(run).as_default():
                    for name, value in values.items():
                        tf.summary.scalar(f"epoch_{name}", value, step=epoch)

    def _stop_profile(self) -> None:
        """Writes the traced graph (``batch_<B>``) and the profile."""
        last = self.profile_steps[1]
        with self.writer("train").as_default():
            tf.summary.trace_export(name=f"batch_{last}", step=last)
        self._stop_profiler(save=True)
        self._profiling = False

    @staticmethod
    def _start_profiler(log_dir: str) -> bool:
        """Starts the profiler into ``log_dir``; False (logged) when it cannot start (one
        already running): a profile is not worth stopping the run for."""
        try:
            tf.profiler.experimental.start(logdir=log_dir)
        except Exception as error:  # the profiler raises what its backend raises
            tf.get_logger().error("could not start the profiler: %s", error)
            return False
        return True

    @staticmethod
    def _stop_profiler(save: bool) -> None:
        try:
            tf.profiler.experimental.stop(save=save)
        except Exception as error:
            tf.get_logger().error("could not stop the profiler: %s", error)
