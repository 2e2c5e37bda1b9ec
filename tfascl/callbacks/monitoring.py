"""The kNN monitor of a training run: how good the features are, and the best checkpoint.

* ``KnnMonitor``: weighted kNN top-1/top-5 of the backbone features every N epochs (and,
  with ``at_start``, of the randomly initialised encoder before the first step: the
  baseline), and a copy of the best checkpoint (``read_best``, ``write_best``); under
  several workers the chief's numbers (``share_from_chief``).
* ``KnnReport``: one line per kNN evaluation, after the epoch's progress line.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfascl import console, knn, runs
from tfascl.callbacks.clock import global_step, is_multi_worker, state_is_finite
from tfascl.runs import BEST_INFO_FILE, BEST_PREFIX, METRICS_FILE


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
