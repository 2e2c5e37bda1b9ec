"""Strategies by name, replica helpers, and a training loop for where Keras's ``fit`` breaks.

``replica_count``, ``gather_across_replicas`` and ``replica_offset`` are what the models'
train steps ask of the strategy (the queue's gather, BYOL's and the relabelling's
global-batch rows); this module imports no model, so every model may import it.

``fit`` is the loop for one device and ``MirroredStrategy``. Under
``MultiWorkerMirroredStrategy`` Keras 3's ``fit`` is broken (keras-team/keras
issue 20585: ``_maybe_symbolic_build`` reduces a PerReplica value, and scalar
metrics are reduced along axis 0), so ``fit_loop`` drives the model's own
``train_step`` through ``strategy.run`` with the same callbacks and logs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


# --- Inside a replica: who am I, and everyone's values -----------------------------------


def replica_count() -> int:
    """R, the replicas of the current strategy (1 outside one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def gather_across_replicas(values: tf.Tensor) -> tf.Tensor:
    """Concatenates ``values`` [b, ...] of all replicas in replica order: [b·R, ...].

    Outside a multi-replica strategy it is the identity.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    # identity places the tensor on this replica's device: MultiWorkerMirroredStrategy
    # derives the gather's destination from it, and an input batch carries no device.
    return context.all_gather(tf.identity(values), axis=0)


def replica_offset(rows: tf.Tensor | int) -> tf.Tensor:
    """The row of this replica's first example in ``gather_across_replicas``'s result.

    Args:
        rows: b, the examples on each replica.
    """
    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else context.replica_id_in_sync_group
    return tf.cast(replica, tf.int32) * tf.cast(rows, tf.int32)


def _local_devices() -> list[str]:
    """Local GPUs, or the logical CPUs when there is no GPU (tests use two)."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """A ``tf.distribute`` strategy by name.

    Args:
        name: ``"auto"`` (all local GPUs if more than one, else the default
            strategy), ``"one_device"``, ``"mirrored"`` (all local GPUs, or
            logical CPUs), ``"multi_worker"`` (``MultiWorkerMirroredStrategy``
            from ``TF_CONFIG``) or ``"tpu"``.

    Returns:
        The strategy; create the model and compile it inside ``strategy.scope()``.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multi_worker' needs TF_CONFIG (cluster and task) set")
        json.loads(os.environ["TF_CONFIG"])  # fail here, clearly, on malformed JSON
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    devices = _local_devices()
    if name == "mirrored" or (name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy(devices)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(devices[0])
    return tf.distribute.get_strategy()


def _global_results(model: keras.Model, names: Sequence[str]) -> dict[str, float]:
    # Read in cross-replica context, where a metric's per-replica totals and
    # counts are summed: the global mean, not replica 0's share.
    metrics = {metric.name: metric for metric in model.metrics}
    return {name: float(np.asarray(metrics[name].result())) for name in names}


def fit_loop(
    model: keras.Model,
    dataset: tf.data.Dataset | tf.distribute.DistributedDataset,
    *,
    epochs: int,
    steps_per_epoch: int,
    initial_epoch: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
    strategy: tf.distribute.Strategy | None = None,
    steps_per_execution: int = 1,
) -> keras.callbacks.History:
    """``model.fit`` for any strategy: ``train_step`` under ``strategy.run``.

    The model must have been built and compiled inside ``strategy.scope()``.
    Callbacks see the same hooks and logs as under ``fit`` (progress bar, history,
    checkpoints, TensorBoard, early stopping through ``model.stop_training``).
    As ``compile(steps_per_execution=N)`` does for ``fit``, one ``tf.function`` call
    runs N steps (a ``tf.range`` loop, the count a tensor: one trace serves every
    count; unrolled under ``MultiWorkerMirroredStrategy``) and the batch hooks run once
    per call, with the index of its last batch.
    Unlike ``fit``, the last call of an epoch runs only the steps left in it, so an
    epoch of any length ends where it should. A dataset that runs out ends its epoch
    early (``on_epoch_end`` after the last whole call), as under ``fit``.

    Args:
        model: a compiled tfascl model.
        dataset: a distributed dataset (``distribute_datasets_from_function``), or a
            ``tf.data.Dataset`` of batches at the *global* batch size; repeating.
        epochs: index of the last epoch + 1 (as ``fit``).
        steps_per_epoch: steps in an epoch.
        initial_epoch: epoch to start at (resume).
        callbacks: Keras callbacks.
        verbose: 0 silent, 1 progress bar.
        strategy: defaults to the current strategy.
        steps_per_execution: train steps per ``tf.function`` call (and per batch hook).

    Returns:
        The ``History`` callback.
    """
    if steps_per_execution < 1:
        raise ValueError(f"steps_per_execution must be >= 1, got {steps_per_execution}")
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.online_weights)
    if isinstance(dataset, tf.data.Dataset):
        dataset = strategy.experimental_distribute_dataset(dataset)
    iterator = iter(dataset)

    names: list[str] = []  # the log names train_step returns, recorded when it traces

    def one_step(data):  # noqa: ANN001, ANN202
        logs = model.train_step(data)
        names[:] = sorted(logs)
        return logs

    # MultiWorkerMirroredStrategy's all-reduce fails inside a tf.while_loop ("destinations
    # can not be empty"): there the loop is unrolled, one trace per count (N and an
    # epoch's remainder); elsewhere a tf.range loop serves every count with one trace.
    unroll = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    @tf.function
    def train_steps(iterator, count):  # noqa: ANN001, ANN202
        if unroll:
            for _ in range(count):
                logs = strategy.run(one_step, args=(next(iterator),))
            return logs
        for _ in tf.range(count):
            strategy.run(one_step, args=(next(iterator),))
        return None

    callback_list = keras.callbacks.CallbackList(
        list(callbacks),
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for begin in range(0, steps_per_epoch, steps_per_execution):
            count = min(steps_per_execution, steps_per_epoch - begin)
            callback_list.on_train_batch_begin(begin)
            try:
                train_steps(iterator, count if unroll else tf.constant(count))
            except tf.errors.OutOfRangeError:
                # The input ran out: as fit does, the epoch ends short (callbacks such as
                # tfascl.callbacks.InputRanOut see fewer steps than asked and stop the run).
                break
            with strategy.scope():
                # The one read of the device per call: the metrics of its last step.
                logs = _global_results(model, names)
            callback_list.on_train_batch_end(begin + count - 1, logs)
            if model.stop_training:
                break
        callback_list.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history
