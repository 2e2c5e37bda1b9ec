"""Keras callbacks that watch and protect a pre-training run.

All of them take plain arguments (no flags) and key their records on the global
step, ``model.optimizer.iterations``, so that a resumed run continues the same
curves instead of restarting them at zero:

* ``NonFiniteLoss``: stops the run at the first non-finite loss.
* ``InputRanOut``: stops the run when an epoch's input ends before its steps (a streamed
  folder with too many files that cannot be decoded), and says so.
* ``StopOnSignal``: turns Ctrl-C (SIGINT) and preemption (SIGTERM) into a clean stop
  after the current step, after one and the same step on every worker of a cluster
  (``StopAgreement``).
* ``CheckpointSaver``: a checkpoint every N steps and at each epoch end, never of a
  non-finite state; a failed save (full disk) is one line (``SaveFailed``).
* ``KnnMonitor``: weighted kNN top-1/top-5 of the backbone features every N
  epochs (and, with ``at_start``, of the randomly initialised encoder before the first
  step: the baseline), and a copy of the best checkpoint.
* ``KnnReport``: one line per kNN evaluation, after the epoch's progress line.
* ``ProgressBar``: Keras's progress bar, telling ``tfascl.console`` while its line is open,
  so that reports written meanwhile start a line of their own.
* ``MetricsLogger``: the logs (loss, learning rate, momentum, confidence, positive
  weight, purity, kNN) as JSON lines.
* ``TensorBoard``: ``keras.callbacks.TensorBoard`` (scalars, the profiler) on the
  global step, writing where ``MetricsLogger`` writes.

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

from __future__ import annotations

import json
import math
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfascl import console, knn, runs
from tfascl.cli import profile_range  # noqa: F401  (re-exported: parsed without TensorFlow)
from tfascl.runs import BEST_INFO_FILE, BEST_PREFIX, METRICS_FILE


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


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether ``strategy`` is a ``MultiWorkerMirroredStrategy`` over a cluster (``TF_CONFIG``).

    (A TPU strategy has a cluster too, but one host drives it: a local stop is enough.)
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    resolver = strategy.cluster_resolver
    return bool(resolver is not None and resolver.cluster_spec().jobs)


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
    after each multiple of ``every_steps`` (the module doc). Checkpoints are numbered
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


class KnnMonitor(keras.callbacks.Callback):
    """Weighted kNN accuracy of the online backbone's features, every ``every`` epochs.

    The bank is the training set through the evaluation transform, the queries
    the test split (``tfascl.knn``: cosine similarity, k neighbours, votes
    ``exp(s/t)``). Adds ``knn_top1`` (and ``knn_top5`` with five or more classes)
    to the epoch logs. When top-1 improves, writes the whole state as
    ``checkpoints/best-<step>`` and names it in ``best_checkpoint.txt`` (the
    previous best is removed).

    Only an epoch-end hook: Keras has finished (and flushed) the epoch's steps then, so
    the monitor is ``async_safe``.

    Under several workers (``MultiWorkerMirroredStrategy``) only the chief embeds the
    bank and the queries; it sends top-1, top-5 and whether to keep a best copy to the
    other workers through one small all-reduce (``share_from_chief``), so every worker
    logs the same numbers and writes (its copy of) the best checkpoint at the same epochs,
    while the others wait in that all-reduce instead of repeating the pass.

    A best copy that cannot be written (a full disk) is one line on stderr and the run
    goes on: the latest checkpoint, not the best copy, is what a resume needs. The
    previous best copy and its record stay.

    Args:
        bank: ``(images, labels)`` batches of the training set, eval transform.
        test: ``(images, labels)`` batches of the test split.
        num_classes: number of classes.
        every: epochs between evaluations; the last epoch is always evaluated.
        last_epoch: index of the last epoch (``epochs - 1``).
        k: neighbours.
        temperature: vote temperature.
        checkpoint: the run's ``tf.train.Checkpoint``, for the best copy (None: no copy).
        model_dir: where ``best_checkpoint.txt`` goes (None: nowhere).
        write_dir: where the best copy's files go; defaults to ``model_dir``'s
            checkpoint folder (non-chief workers pass a scratch folder).
        at_start: also evaluate the encoder before the first step (at ``on_train_begin``
            when the optimizer has taken no step): ``initial``, the accuracy of the
            randomly initialised encoder, which training should beat. Recorded in
            ``model_dir``'s ``metrics.jsonl`` (``"kind": "initial"``), where a resumed
            run finds it again.
        strategy: the run's strategy; a multi-worker one makes the pass the chief's alone.
        chief: whether this process is the chief (computes the pass under several workers).
        announce: takes the line of a failed best copy (default: ``tfascl.console.warn``).
    """

    def __init__(
        self,
        bank: tf.data.Dataset,
        test: tf.data.Dataset,
        num_classes: int,
        *,
        every: int = 1,
        last_epoch: int = 0,
        k: int = 200,
        temperature: float = 0.1,
        checkpoint: tf.train.Checkpoint | None = None,
        model_dir: str | Path | None = None,
        write_dir: str | Path | None = None,
        at_start: bool = False,
        strategy: tf.distribute.Strategy | None = None,
        chief: bool = True,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.async_safe = True
        self.at_start = at_start
        self.chief = chief
        self._strategy = strategy if is_multi_worker(strategy) else None
        self._announce = announce or console.warn
        self.passes = 0  # feature passes this process ran (0 on a worker that is not chief)
        self.bank, self.test, self.num_classes = bank, test, num_classes
        self.every, self.last_epoch = every, last_epoch
        self.k, self.temperature = k, temperature
        self.checkpoint = checkpoint
        self.model_dir = None if model_dir is None else runs.run_path(model_dir)
        if write_dir is None and self.model_dir is not None:
            write_dir = runs.checkpoint_dir(self.model_dir)
        self.write_dir = None if write_dir is None else runs.run_path(write_dir)
        self.best = read_best(self.model_dir) if self.model_dir else {}
        self.initial: dict[str, float] = read_initial(self.model_dir) if self.model_dir else {}
        self.last: dict[str, float] = {}
        self.last_epoch_evaluated: int | None = None
        self.seconds = 0.0
        self._extract: Callable | None = None

    @classmethod
    def from_images(
        cls,
        bank: Any,
        test: Any,
        image_size: int,
        *,
        batch_size: int = 256,
        **options: Any,
    ) -> KnnMonitor:
        """The monitor of a notebook ``fit``, from the train and test ``ImageSet`` s.

        ``model.fit(pairs, callbacks=[KnnMonitor.from_images(train, test, 32)])``.

        The same evaluation as ``tfascl-train``'s monitor: ``eval_dataset`` of each
        set, and as many classes as the bank's names or labels say.

        Args:
            bank: the labelled training ``tfascl.data.ImageSet`` (the kNN memory bank).
            test: the labelled test ``ImageSet`` (the queries).
            image_size: the training resolution.
            batch_size: images per feature batch.
            **options: the constructor's keyword arguments (``every``, ``k``,
                ``temperature``, ``last_epoch``, ...).
        """
        from tfascl import data  # the CLI modules import callbacks; data is heavier

        for name, images in (("bank", bank), ("test", test)):
            if images.labels is None or len(images.labels) == 0:
                raise ValueError(f"KnnMonitor.from_images: the {name} set has no labels")
        num_classes = max(len(bank.class_names), int(np.max(bank.labels)) + 1)
        return cls(
            data.eval_dataset(bank, batch_size, image_size),
            data.eval_dataset(test, batch_size, image_size),
            num_classes,
            **options,
        )

    @property
    def best_top1(self) -> float | None:
        return self.best.get("knn_top1")

    def due(self, epoch: int) -> bool:
        last = epoch == self.last_epoch
        return last or (self.every > 0 and (epoch + 1) % self.every == 0)

    def evaluate(self) -> dict[str, float]:
        """kNN top-1 (and top-5) now: computed here, or under several workers by the chief
        and received from it (every worker must call this at the same points)."""
        if self._strategy is None:
            return self._compute()
        return self._shared(self._compute() if self.chief else {})[0]

    def _shared(self, result: dict[str, float], keep: bool = False) -> tuple[dict, bool]:
        """The chief's ``result`` (and ``keep`` decision) on every worker."""
        values = [result.get("knn_top1", math.nan), result.get("knn_top5", math.nan), keep]
        top1, top5, keep_flag = share_from_chief(self._strategy, values)
        shared = {"knn_top1": float(top1)}
        if math.isfinite(top5):
            shared["knn_top5"] = float(top5)
        return shared, bool(keep_flag > 0.5)

    def _compute(self) -> dict[str, float]:
        """One feature pass over the bank and the queries, and the weighted kNN."""
        start = time.perf_counter()
        self.passes += 1
        if self._extract is None:
            embed = monitored_model(self.model, self.bank)
            self._extract = knn.feature_extractor(embed, name="kNN monitor")
        bank_features, bank_labels = self._extract(self.bank, "bank images")
        test_features, test_labels = self._extract(self.test, "test images")
        result = knn.knn_accuracy(
            bank_features,
            bank_labels,
            test_features,
            test_labels,
            self.num_classes,
            k=min(self.k, len(bank_labels)),
            temperature=self.temperature,
        )
        self.seconds += time.perf_counter() - start
        return {f"knn_{name}": value for name, value in result.items()}

    def on_train_begin(self, logs: dict | None = None) -> None:
        # Under several workers the chief's record does not decide (the others have none):
        # every worker takes part at step 0.
        first = self.at_start and global_step(self.model) == 0
        if first and (not self.initial or self._strategy is not None):
            self.evaluate_initial()

    def evaluate_initial(self) -> dict[str, float]:
        """kNN of the encoder as it is now, before training: ``initial``, recorded."""
        self.initial = self.evaluate()
        if self.model_dir is not None:
            record = {"kind": "initial", "step": 0, **self.initial, "time": time.time()}
            runs.append_text(runs.join(self.model_dir, METRICS_FILE), json.dumps(record) + "\n")
        return self.initial

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # A run that is stopping (Ctrl-C, non-finite loss) ends mid-epoch: no kNN.
        if self.model.stop_training or not self.due(epoch):
            return
        result, keep = {}, False
        if self._strategy is None or self.chief:
            result = self._compute()
            top1 = result["knn_top1"]
            better = self.best_top1 is None or top1 > self.best_top1
            keep = math.isfinite(top1) and better and state_is_finite(self.model)
        if self._strategy is not None:  # the chief's numbers and decision, everywhere
            result, keep = self._shared(result, keep)
        self.last = result
        self.last_epoch_evaluated = epoch
        if logs is not None:
            logs.update(self.last)
        if keep:
            self._keep_best(epoch, self.last["knn_top1"])

    def _keep_best(self, epoch: int, top1: float) -> None:
        step = global_step(self.model)
        name = f"{BEST_PREFIX}-{step}"
        previous = self.best.get("checkpoint")
        best = {"checkpoint": name, "knn_top1": top1, "epoch": epoch + 1, "step": step}
        if self.checkpoint is None or self.write_dir is None:
            self.best = best
            return
        # The whole state, not a manager checkpoint: the manager would delete it
        # once it is older than the last few.
        path = runs.join(self.write_dir, name)
        try:
            self.checkpoint.write(str(path))
            if self.model_dir is not None:
                write_best(self.model_dir, best)
        except (tf.errors.OpError, OSError) as error:
            try:  # what the write left: its temporary folder, a half of the copy
                for part in runs.glob(self.write_dir, f"{name}_temp*"):
                    runs.remove_tree(part)
                for part in runs.glob(self.write_dir, f"{name}.*"):
                    runs.remove(part)
            except (tf.errors.OpError, OSError):
                pass  # the disk may refuse even this: the line says what happened
            kept = f"; {previous} stays the best copy" if previous else ""
            self._announce(
                f"could not keep the best checkpoint {name} (kNN top-1 {percent(top1)}) in "
                f"{self.write_dir}: {runs.error_line(error)}{kept}; training goes on (the "
                "latest checkpoint is what a resume needs)"
            )
            return
        self.best = best
        if previous and previous != name:
            for part in runs.glob(self.write_dir, f"{previous}.*"):
                runs.remove(part)


def share_from_chief(strategy: tf.distribute.Strategy, values: list[float]) -> np.ndarray:
    """``values`` of the chief (global replica 0's process) on every worker: one all-reduce
    in which replica 0 contributes them and every other replica zeros. Every worker must
    call it at the same point."""
    function = _SHARE_FUNCTIONS.get(id(strategy))
    if function is None:

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def function(local: tf.Tensor) -> tf.Tensor:
            def replica_part() -> tf.Tensor:
                first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
                return tf.where(first, local, tf.zeros_like(local))

            parts = strategy.run(replica_part)
            return strategy.reduce(tf.distribute.ReduceOp.SUM, parts, axis=None)

        _SHARE_FUNCTIONS[id(strategy)] = function
    return function(tf.constant(values, tf.float32)).numpy()


_SHARE_FUNCTIONS: dict[int, Callable] = {}


class KnnReport(keras.callbacks.Callback):
    """Prints a ``KnnMonitor``'s result of each epoch it evaluated, on a line of its own
    after the epoch's progress line (put it after the progress bar in the callbacks), and
    the baseline before training: ``kNN top-1 after epoch 3: 84.2% (random init 61.2%,
    best 84.2%)``.

    Args:
        monitor: the run's ``KnnMonitor``.
        announce: takes each line (default: ``tfascl.console.report``).
    """

    def __init__(self, monitor: KnnMonitor, announce: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.monitor = monitor
        self._announce = announce
        self._initial_reported = False

    def announce(self, line: str) -> None:
        (self._announce or console.report)(line)

    def on_train_begin(self, logs: dict | None = None) -> None:
        initial = self.monitor.initial.get("knn_top1")
        if initial is not None and not self._initial_reported:
            self._initial_reported = True
            top5 = self.monitor.initial.get("knn_top5")
            more = f", top-5 {percent(top5)}" if top5 is not None else ""
            self.announce(
                f"kNN top-1 of the randomly initialised encoder: {percent(initial)}{more} "
                "(the baseline pretraining should beat)"
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.monitor.last_epoch_evaluated != epoch or not self.monitor.last:
            return
        notes = []
        if self.monitor.initial.get("knn_top1") is not None:
            notes.append(f"random init {percent(self.monitor.initial['knn_top1'])}")
        if self.monitor.best_top1 is not None:
            notes.append(f"best {percent(self.monitor.best_top1)}")
        more = f" ({', '.join(notes)})" if notes else ""
        top1 = percent(self.monitor.last["knn_top1"])
        self.announce(f"kNN top-1 after epoch {epoch + 1}: {top1}{more}")


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


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal (``n/a`` for None)."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


def read_initial(model_dir: str | Path) -> dict[str, float]:
    """The kNN of the randomly initialised encoder recorded in ``metrics.jsonl``, or {}."""
    path = runs.join(model_dir, METRICS_FILE)
    if not runs.is_file(path):
        return {}
    for line in runs.read_bytes(path).decode("utf-8", errors="replace").splitlines():
        if '"initial"' not in line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("kind") == "initial":
            return {k: v for k, v in record.items() if k.startswith("knn_")}
    return {}


def monitored_model(model: keras.Model, batches: tf.data.Dataset) -> keras.Model:
    """What the kNN monitor embeds: the model, or, when the batches' images are not the
    side its backbone was built for (STL-10's 96 px images of a run on 64 px crops), the
    backbone's own layers on images of any side (``tfascl.models.backbones.any_size``)."""
    backbone = getattr(model, "backbone", None)
    spec = batches.element_spec
    images = spec[0] if isinstance(spec, (tuple, list)) else spec
    if backbone is None or tuple(images.shape[1:3]) == tuple(backbone.inputs[0].shape[1:3]):
        return model
    from tfascl.models.backbones import any_size

    return any_size(backbone)


def read_best(model_dir: str | Path) -> dict[str, Any]:
    """The best kNN record of a run (empty before any), for resuming the comparison.

    A damaged ``best_knn.json`` counts as no record (noted on stderr): the next kNN
    evaluation writes a new best.
    """
    return runs.read_json_record(
        runs.join(model_dir, BEST_INFO_FILE), "starting a new best-kNN record"
    )


def write_best(model_dir: str | Path, best: dict[str, Any]) -> None:
    """``best_checkpoint.txt`` (the name eval/export read) and its kNN record."""
    runs.atomic_write_json(runs.join(model_dir, BEST_INFO_FILE), best)
    runs.atomic_write_text(runs.join(model_dir, runs.BEST_FILE), best["checkpoint"] + "\n")


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


class TensorBoard(keras.callbacks.TensorBoard):
    """``keras.callbacks.TensorBoard`` numbered by the global step, as ``metrics.jsonl``.

    Keras numbers its batch summaries by its own count of batch hooks, from 1 in each
    ``fit`` call: a resumed run (and the second ``fit`` call of a resumed partial epoch)
    would draw over steps already drawn, and with N steps per execution it counts
    executions. Here the count is the global step at the end of each execution (the
    optimizer's counter is read once an epoch, then counted in Python, as ``StepClock``
    does), and the batch summaries (``batch_loss``, ``batch_learning_rate``, ...) are
    written where ``MetricsLogger`` writes a step record: at the first execution end at or
    after each multiple of ``every_steps``, with the learning rate of the next step added.
    Epoch summaries are Keras's (``epoch_*`` at the epoch index, from 0): the logs,
    the learning rate and what callbacks before this one added to the epoch's logs (kNN
    accuracy, pairs per second). Files go to ``log_dir/train``.

    ``profile_steps=(A, B)`` runs the TensorFlow profiler over the executions that run
    global steps A to B (Keras's ``profile_batch``, counted in global steps) and writes it
    to ``log_dir/train/plugins/profile``; steps already trained before a resume are not
    profiled again, and a profile stops at the end of a ``fit`` call (``run_epochs`` makes
    one an epoch when executions do not divide it).

    Keras internals used (Keras 3): the batch counter ``_global_train_batch``, the
    profiler's first batch ``_start_batch`` and ``_push_writer``, which opens the batch's
    writer and decides whether its summaries are recorded.

    Args:
        log_dir: the run's TensorBoard folder.
        every_steps: steps between batch summaries (``--log_every``).
        profile_steps: ``(first, last)`` global steps to profile; ``(0, 0)``: none.
    """

    async_safe = False  # reads the learning rate of the step

    def __init__(
        self, log_dir: str | Path, every_steps: int, profile_steps: tuple[int, int] = (0, 0)
    ) -> None:
        super().__init__(
            log_dir=str(log_dir),
            write_graph=False,  # the model's config graph says little of a custom train_step
            update_freq=max(1, every_steps),
            profile_batch=tuple(profile_steps),
        )
        self.profile_steps = tuple(profile_steps)
        self._epoch_start = 0
        self._record = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        self._epoch_start = global_step(self.model)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        per_execution = getattr(self.model, "steps_per_execution", 1) or 1
        steps = (self.params or {}).get("steps") or batch + per_execution
        first = self._epoch_start + batch  # the step before this execution
        end = self._epoch_start + min(batch + per_execution, int(steps))
        self._record = due(first, end, self.update_freq)
        if first < self.profile_steps[0] <= end:  # profile whole executions
            self._start_batch = end
        self._global_train_batch = end - 1  # Keras adds the one
        super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._record and isinstance(logs, dict):
            logs = {**logs, "learning_rate": current_learning_rate(self.model)}
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # Keras writes the epoch's summaries under the last batch's record_if, which drops
        # them when that batch was not a record (an epoch not a multiple of every_steps).
        with self.summary.record_if(True):
            super().on_epoch_end(epoch, logs)

    def _push_writer(self, writer: Any, step: int) -> None:
        # Keras records when `step % update_freq == 0`; execution ends need not land on a
        # multiple (an epoch's last execution may be short), so record where one was passed.
        context = (writer.as_default(step), self.summary.record_if(self._record))
        self._prev_summary_state.append(context)
        for part in context:
            part.__enter__()
