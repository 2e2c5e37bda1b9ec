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
import subprocess
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfascl.choices import CLUSTERS, SLURM_PORT, STRATEGIES

# The first port of the workers of a node under SLURM is SlurmClusterResolver's default,
# tfascl.choices.SLURM_PORT (defined there with CLUSTERS: the flags need no TensorFlow).


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


# --- Clusters: who are the workers ---------------------------------------------------------


def in_slurm_step() -> bool:
    """Whether this process is a task of a SLURM job step (started by ``srun``)."""
    return "SLURM_PROCID" in os.environ and "SLURM_STEP_NUM_TASKS" in os.environ


def _gpus_on_node() -> int:
    """GPUs this task may use: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi``'s list
    (0 without it). Read without TensorFlow, which must not see the GPUs before the SLURM
    resolver has set ``CUDA_VISIBLE_DEVICES``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        return 0 if not devices or devices[0].startswith("-") else len(devices)
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return 0
    if listed.returncode:
        return 0
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines())


class _CpuSlurmClusterResolver(tf.distribute.cluster_resolver.SlurmClusterResolver):
    """``SlurmClusterResolver`` on nodes without GPUs.

    TensorFlow's resolver deals each task of a node its own GPUs and cannot deal none (it
    steps through the node's GPUs by the count per task). Here every task is dealt one
    placeholder, never made visible (``auto_set_gpu=False``) and never reported: the
    strategy sees no accelerator and runs each worker on its CPU.
    """

    def num_accelerators(
        self, task_type: str | None = None, task_id: int | None = None, config_proto: object = None
    ) -> dict[str, int]:
        del task_type, task_id, config_proto
        return {}


def slurm_resolver(port: int = SLURM_PORT) -> tf.distribute.cluster_resolver.ClusterResolver:
    """TensorFlow's ``SlurmClusterResolver`` for this job step: one worker per task, at
    ``<node>:<port + i>`` for the node's i-th task, worker 0 (the chief) the first task.

    On GPU nodes the resolver gives each task its share of the node's GPUs (it sets
    ``CUDA_VISIBLE_DEVICES``); the usual layout is one task per node with all its GPUs.

    Raises:
        ValueError: Not in a SLURM job step, or more tasks on a node than it has GPUs.
    """
    from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver as slurm

    if not in_slurm_step():
        raise ValueError(
            "not inside a SLURM job step (SLURM_PROCID and SLURM_STEP_NUM_TASKS are unset): "
            "start one task per node with srun"
        )
    try:
        tasks = int(os.environ["SLURM_STEP_NUM_TASKS"])
        per_node = max(slurm.expand_tasks_per_node(os.environ["SLURM_STEP_TASKS_PER_NODE"]))
        gpus = _gpus_on_node()
        if gpus:
            if gpus < per_node:
                raise ValueError(
                    f"SLURM runs {per_node} tasks on a node with {gpus} GPU(s): give each task "
                    "at least one (usually one task per node, with all its GPUs)"
                )
            return tf.distribute.cluster_resolver.SlurmClusterResolver(
                port_base=port, gpus_per_node=gpus
            )
        return _CpuSlurmClusterResolver(
            port_base=port, gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False
        )
    except (KeyError, RuntimeError) as error:  # a SLURM variable missing or malformed
        raise ValueError(f"cannot read the SLURM job step: {error}") from None


def cluster_resolver(
    cluster: str = "auto", port: int = SLURM_PORT
) -> tf.distribute.cluster_resolver.ClusterResolver | None:
    """The cluster this process is a worker of, as a TensorFlow cluster resolver.

    Args:
        cluster: ``"slurm"`` (``SlurmClusterResolver``, the job step's tasks),
            ``"tf_config"`` (``TFConfigClusterResolver``, the ``TF_CONFIG`` variable), or
            ``"auto"``: SLURM inside a job step, else ``TF_CONFIG`` when set, else none.
        port: The first port of a node's workers under SLURM.

    Returns:
        The resolver, or None (``"auto"`` outside any cluster: one machine).

    Raises:
        ValueError: An unknown name, or the cluster named is not there (or ``TF_CONFIG``
            is not JSON).
    """
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster must be one of {CLUSTERS}, got {cluster!r}")
    if cluster == "slurm" or (cluster == "auto" and in_slurm_step()):
        return slurm_resolver(port)
    if cluster == "tf_config" or (cluster == "auto" and "TF_CONFIG" in os.environ):
        if "TF_CONFIG" not in os.environ:
            raise ValueError("TF_CONFIG (cluster and task) is not set")
        try:
            json.loads(os.environ["TF_CONFIG"])  # fail here, clearly, on malformed JSON
        except json.JSONDecodeError as error:
            raise ValueError(f"TF_CONFIG is not JSON ({error})") from None
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return None


def cluster_workers(resolver: tf.distribute.cluster_resolver.ClusterResolver) -> int:
    """The chief and worker tasks of a resolver's cluster (0 without a cluster)."""
    if isinstance(resolver, tf.distribute.cluster_resolver.SlurmClusterResolver):
        return int(os.environ["SLURM_STEP_NUM_TASKS"])  # without dealing GPUs yet
    jobs = resolver.cluster_spec().as_dict()
    return sum(len(jobs.get(job, ())) for job in ("chief", "worker"))


def make_strategy(
    name: str = "auto", cluster: str = "auto", port: int = SLURM_PORT
) -> tf.distribute.Strategy:
    """A ``tf.distribute`` strategy by name.

    Args:
        name: ``"auto"`` (``MultiWorkerMirroredStrategy`` when ``cluster`` resolves to
            several workers; else all local GPUs if more than one, else the default
            strategy), ``"one_device"``, ``"mirrored"`` (all local GPUs, or logical CPUs),
            ``"multi_worker"`` (``MultiWorkerMirroredStrategy`` over ``cluster``, which
            must resolve) or ``"tpu"``.
        cluster: How the workers are found (``cluster_resolver``); for ``"auto"`` and
            ``"multi_worker"`` only.
        port: The first port of a node's workers under SLURM.

    Returns:
        The strategy; create the model and compile it inside ``strategy.scope()``.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name in ("auto", "multi_worker"):
        resolver = cluster_resolver(cluster, port)
        if name == "multi_worker" and resolver is None:
            raise ValueError(
                "strategy 'multi_worker' needs a cluster: TF_CONFIG (cluster and task) set, "
                "or a SLURM job step (srun)"
            )
        if resolver is not None and (name == "multi_worker" or cluster_workers(resolver) > 1):
            return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    elif cluster != "auto":
        raise ValueError(f"cluster {cluster!r} is for strategies auto and multi_worker")
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
