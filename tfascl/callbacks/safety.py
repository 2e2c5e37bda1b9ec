"""The callbacks that keep a training run safe: stop it cleanly, save it, never save a
broken state.

* ``NonFiniteLoss``: stops the run at the first non-finite loss.
* ``InputRanOut``: stops the run when an epoch's input ends before its steps (a streamed
  folder with too many files that cannot be decoded), and says so.
* ``StopOnSignal``: turns Ctrl-C (SIGINT) and preemption (SIGTERM) into a clean stop
  after the current step, after one and the same step on every worker of a cluster
  (``StopAgreement``).
* ``CheckpointSaver``: a checkpoint every N steps and at each epoch end, never of a
  non-finite state; a failed save (full disk) is one line (``SaveFailed``,
  ``save_checkpoint``).
"""

from __future__ import annotations

import math
import shutil
import signal
import tempfile
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfascl import console, runs
from tfascl.callbacks.clock import (
    StepClock,
    due,
    global_step,
    is_multi_worker,
    is_number,
    scalar_logs,
    state_is_finite,
)


class NonFiniteLoss(StepClock):
    """Stops training at the first check that finds a NaN or infinite loss.

    Unlike ``keras.callbacks.TerminateOnNaN`` it remembers the step, so the caller
    can exit non-zero, and ``CheckpointSaver`` refuses to save the broken state (its
    own finiteness check). The loss in the logs is the epoch's running mean, so a
    non-finite step keeps it non-finite until the epoch ends: a check after every
    execution where Keras has already turned the logs into numbers (TensorFlow), else
    (the logs are tensors) every ``every_steps`` steps and at each epoch end.

    Args:
        every_steps: steps between checks of a loss that is still a tensor.
    """

    async_safe = True  # reads the logs only; the step is counted in Python

    def __init__(self, every_steps: int = 1) -> None:
        super().__init__()
        self.every_steps = max(1, every_steps)
        self.failed_step: int | None = None
        self.failed_loss: float | None = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        previous, step = self.advance(batch)
        loss = (logs or {}).get("loss")
        if loss is not None and (is_number(loss) or due(previous, step, self.every_steps)):
            self._check(loss, step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and self.failed_step is None:
            self._check(loss, self._step)

    def _check(self, loss: Any, step: int) -> None:
        value = float(np.asarray(loss))
        if not math.isfinite(value):
            self.failed_step, self.failed_loss = step, value
            self.model.stop_training = True


class InputRanOut(StepClock):
    """Stops training when an epoch ends short of its steps with nothing asking it to stop.

    That is the input running out of data: ``fit`` then warns, ends the epoch and would
    start the next from a new iterator (the stream's first batches again). Put this
    callback first: at the short epoch's end it sets ``model.stop_training`` (the kNN
    monitor then skips the partial epoch), records ``ran_out_at`` (the global step) and
    ``epoch``, and reports one line through ``announce``.

    Args:
        announce: takes the report (default: ``tfascl.console.warn``).
    """

    async_safe = False  # sets stop_training at the epoch end, before the others read it

    def __init__(self, announce: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._announce = announce or console.warn
        self.ran_out_at: int | None = None
        self.epoch: int | None = None
        self.steps_in_epoch: tuple[int, int] | None = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.advance(batch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        steps = int((self.params or {}).get("steps") or 0)
        if self._epoch_start is None or not steps or self.model.stop_training:
            return
        if self._step - self._epoch_start >= steps:
            return
        # Short: the optimizer's own count says how far it got (the call that met the end
        # of the data may have counted a step its batch hooks never saw).
        step = global_step(self.model)
        done = step - self._epoch_start
        self.ran_out_at, self.epoch, self.steps_in_epoch = step, epoch, (done, steps)
        self.model.stop_training = True
        self._announce(
            f"the input ran out of data in epoch {epoch + 1} after {done} of its {steps} "
            f"steps (at step {step}): stopping"
        )


EXIT_STATUS_BY_SIGNAL = {signal.SIGINT: "interrupted", signal.SIGTERM: "preempted"}


class StopAgreement:
    """Makes every worker of a cluster stop after the same step when one is signalled.

    Built on ``tf.distribute.experimental.PreemptionCheckpointHandler``: its thread
    polls ``requested`` (this process's signal flag) every second; the first worker
    to see it writes "stop after step n + 1" to the coordination service and waits
    until every worker has read it; each worker's ``check()`` after a step returns
    True once it has run that many steps. The handler's own checkpoint is a dummy
    in a scratch folder (its step counter stays out of the run's checkpoints) and its
    exit function only raises a flag: ``CheckpointSaver`` saves that step and the
    run ends through the normal path (summary.json, exit status).

    Args:
        strategy: a ``MultiWorkerMirroredStrategy``.
        requested: True once this process has been asked to stop.
    """

    def __init__(self, strategy: tf.distribute.Strategy, requested: Callable[[], bool]) -> None:
        self.agreed = False
        self._scratch = tempfile.mkdtemp(prefix="tfascl-stop-agreement-")
        config = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=requested,
            exit_fn=self._agree,
            grace_period=0,
            save_fn=lambda: None,  # CheckpointSaver saves the agreed step
        )
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(), self._scratch, 1)
        self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver, manager, termination_config=config
        )

    def _agree(self) -> None:
        self.agreed = True

    def check(self) -> bool:
        """Call once after each step on every worker: True when all stop here."""
        if not self.agreed:
            # The handler's stop path reads a deprecated property of its own (a warning).
            logger = tf.get_logger()
            level = logger.level
            logger.setLevel("ERROR")
            try:
                self.handler.save_checkpoint_if_preempted()
            except tf.errors.AlreadyExistsError:
                pass  # a worker that finished its last step closed the agreement
            finally:
                logger.setLevel(level)
        return self.agreed

    def close(self) -> None:
        """Stops the handler's watcher threads (a finished worker would leave them waiting)."""
        # The handler has no public way to stop them short of exiting the process.
        for stop in ("_stop_poll_termination_signal_thread",
                     "_stop_cluster_wise_termination_watcher_thread"):  # fmt: skip
            getattr(self.handler, stop, lambda: None)()
        shutil.rmtree(self._scratch, ignore_errors=True)


class StopOnSignal(keras.callbacks.Callback):
    """SIGINT (Ctrl-C) or SIGTERM (preemption) stops training after the current step.

    The step finishes, ``CheckpointSaver`` writes the state at the epoch-end hook that
    ``fit`` still calls, and ``interrupted`` tells the caller to exit; ``reason`` is
    ``"interrupted"`` (SIGINT) or ``"preempted"`` (SIGTERM, as sent by SLURM,
    Kubernetes or a preemptible VM at the start of its grace period). A second signal
    of the same kind ends the process at once (the default handler is back).

    Under a multi-worker strategy a signal on one worker stops every worker after
    one and the same step (``StopAgreement``), so the chief's checkpoint is the step
    all of them reached; workers that were not signalled report ``"preempted"``.
    Install the handlers with ``install()`` and remove them with ``uninstall()``.

    Args:
        announce: prints the one-line notice.
        strategy: the run's strategy (a multi-worker one gets the agreement).
    """

    def __init__(
        self,
        announce: Callable[[str], None] = print,
        strategy: tf.distribute.Strategy | None = None,
    ) -> None:
        super().__init__()
        self.interrupted = False  # stopped by a signal (set when training stops)
        self.requested = False  # a signal arrived
        self.reason: str | None = None
        self._announce = announce
        self._multi_worker = is_multi_worker(strategy)
        self._strategy = strategy
        self._agreement: StopAgreement | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in EXIT_STATUS_BY_SIGNAL:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self._previous = {}
        if self._agreement is not None:
            self._agreement.close()
            self._agreement = None

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.requested:
            self.reason = EXIT_STATUS_BY_SIGNAL.get(signum, "interrupted")
        self.requested = True
        again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
        default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        signal.signal(signum, default)
        name = signal.Signals(signum).name
        self._announce(f"\n{name}: saving a checkpoint after this step ({again} again to abort).")

    def on_train_begin(self, logs: dict | None = None) -> None:
        # One agreement for the whole run (its keys in the coordination service are
        # written once), made when every worker reaches training.
        if self._multi_worker and self._agreement is None:
            self._agreement = StopAgreement(self._strategy, lambda: self.requested)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._agreement is not None:
            stop = self._agreement.check()
            if stop and self.reason is None:
                self.reason = "preempted"  # another worker was signalled
        else:
            stop = self.requested
        if stop:
            self.interrupted = True
            self.model.stop_training = True


class SaveFailed(RuntimeError):
    """A checkpoint could not be written (full disk, lost mount): one line for the user."""


class CheckpointSaver(StepClock):
    """Saves ``manager``'s checkpoint every ``every_steps`` steps and at each epoch end.

    With several steps per execution the save is at the first execution boundary at or
    after each multiple of ``every_steps`` (``tfascl.callbacks``). Checkpoints are numbered
    by the global step (``ckpt-<step>``), so the name says where a resumed run continues.
    A state whose loss or weights are not finite is never saved: the last good
    checkpoint stays the latest. A save that fails (a
    full disk) removes what it wrote and raises ``SaveFailed``, one line naming the
    folder, the error and the newest good checkpoint.

    Args:
        manager: a ``tf.train.CheckpointManager`` of ``model.checkpoint()``.
        every_steps: save every this many global steps; 0 saves at epoch ends only.
    """

    async_safe = False  # a save must see the state between two steps, not during one

    def __init__(self, manager: tf.train.CheckpointManager, every_steps: int = 0) -> None:
        super().__init__()
        self.manager = manager
        self.every_steps = every_steps
        self.last_saved_step: int | None = None
        self.refused_step: int | None = None

    def save(self, logs: dict | None = None) -> str | None:
        """Saves now unless this step is already saved or the state is not finite."""
        step = global_step(self.model)
        if step == self.last_saved_step:
            return None
        loss = scalar_logs(logs).get("loss", 0.0)
        if not math.isfinite(loss) or not state_is_finite(self.model):
            self.refused_step = step
            return None
        path = save_checkpoint(self.manager, step)
        self.last_saved_step = step
        return path

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        previous, step = self.advance(batch)
        if due(previous, step, self.every_steps):
            self.save(logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.save(logs)


def save_checkpoint(manager: tf.train.CheckpointManager, step: int) -> str:
    """``manager.save(checkpoint_number=step)``; on failure, cleans up and raises ``SaveFailed``.

    Raises:
        SaveFailed: the write failed; the partial ``ckpt-<step>`` files and the
            ``ckpt-<step>_temp`` folder are removed, and the manager's ``checkpoint``
            file (written last) still names the newest good checkpoint.
    """
    try:
        return manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as error:
        directory = runs.run_path(manager.directory)
        name = f"{runs.CHECKPOINT_NAME}-{step}"  # the manager's default checkpoint_name
        for path in runs.glob(directory, f"{name}_temp*"):
            runs.remove_tree(path)
        if f"{runs.join(directory, name)}" not in manager.checkpoints:
            parts = ("index", "data-*")
            for path in [p for part in parts for p in runs.glob(directory, f"{name}.{part}")]:
                runs.remove(path)
        good = tf.train.latest_checkpoint(str(directory))
        newest = runs.base_name(good) if good else "none"
        raise SaveFailed(
            f"could not save a checkpoint at step {step} in {directory}: "
            f"{runs.error_line(error)}; newest good checkpoint: {newest}"
        ) from None
