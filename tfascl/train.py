"""tfascl-train: self-supervised pre-training with ASCL and its baselines.

With no flags it pre-trains a small ResNet-18 with ASCL on the embedded digits
data for a few minutes on a CPU and prints the kNN accuracy. Paper recipes are
flagfiles: ``tfascl-train --flagfile=flags/cifar10_ascl.flags --model_dir=runs/c10``.
Re-running the same command resumes from the last checkpoint (see docs/CLI.md).

The flags, ``TrainConfig`` and validation live in ``tfascl.train_config``; the run's images
and training stream in ``tfascl.data.training`` (given the flags' values); summary.json and
the closing report in ``tfascl.run_report``. This module runs what they describe: data,
model, strategy, checkpoints, callbacks and the epochs.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m tfascl.train: start as tfascl-train does
    # Through the launcher above the package (tfascl_launch, what the console script runs),
    # so this module, which the launcher imports, does not import it back.
    import tfascl_launch

    tfascl_launch.train()  # flags parsed without TensorFlow, then tfascl.train.main; exits

import dataclasses
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from tfascl import callbacks as cbs
from tfascl import console, data, runs
from tfascl.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_PREEMPTED,
    EXIT_USAGE,
    no_arguments,
    run_app,
)
from tfascl.data import training
from tfascl.data.training import RunData, knn_sizes
from tfascl.distribute import fit_loop, make_strategy
from tfascl.optim import PerEpoch, build_optimizer, scaled_learning_rate, warmup_cosine
from tfascl.run_report import (  # noqa: F401 (verdict: the names of this module before)
    EXIT_CODES,
    knn_summary,
    percent,
    report,
    run_summary,
    verdict,
)
from tfascl.runs import (
    EXPORT_SUBDIR,
    FLAGS_FILE,
    SUMMARY_FILE,
    RunSpec,
    atomic_write_json,
    checkpoint_dir,
    checkpoint_step,
    save_spec,
)
from tfascl.train_config import (
    EXIT_SAVE_FAILED,
    FLAGS,
    PROGRAM,
    FlagError,
    TrainConfig,
    check_previous_run,
    check_replicas,
    config_from_args,
    config_from_flags,
    define_flags,
    expand_flagfiles,
    fail_usage,
    flagfile_text,
    parse_flags,
    resolve_model_dir,
    validate,
)

# The command-line surface, importable from here as from tfascl.train_config.
__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_PREEMPTED",
    "EXIT_SAVE_FAILED",
    "EXIT_USAGE",
    "FLAGS",
    "FlagError",
    "TrainConfig",
    "config_from_args",
    "config_from_flags",
    "define_flags",
    "expand_flagfiles",
    "main",
    "parse_flags",
    "run",
    "train",
    "validate",
]


# --- Data ---------------------------------------------------------------------------------
# What the flags ask of tfascl.data.training (which takes plain values: data/ sits below the
# command); these take a TrainConfig.


def choose_input(config: TrainConfig) -> tuple[str, str]:
    """(mode, why): memory or stream, decided before anything is decoded
    (``data.choose_input``, the rule tfascl-eval uses too)."""
    return data.choose_input(
        config.dataset, [(config.train_split, config.max_train_examples)], mode=config.input,
        data_dir=config.data_dir, load_size=config.load_size,
        memory_budget_gb=config.memory_budget_gb, seed=config.seed,
        tfrecord_keys=tfrecord_keys(config),
    )  # fmt: skip


def tfrecord_keys(config: TrainConfig) -> tuple[str | None, str | None]:
    """The feature names of TFRecord shards (None: the shards' index's, else Model Garden's)."""
    return config.tfrecord_image_key, config.tfrecord_label_key


def load_data(config: TrainConfig) -> RunData:
    """The training split (and the kNN bank and test split when labelled), in the input mode
    ``choose_input`` picks; one line says which and why (``training.load_run_data``)."""
    try:
        mode, why = choose_input(config)
    except ValueError as error:  # DatasetNotFoundError is a ValueError too
        raise FlagError(f"--dataset={config.dataset}: {error}") from None
    print(f"Input: {mode} ({why}).")
    try:
        return training.load_run_data(
            config.dataset, mode, train_split=config.train_split, test_split=config.test_split,
            max_train_examples=config.max_train_examples, knn_bank_split=config.knn_bank_split,
            knn_bank_size=config.knn_bank_size, batch_size=config.batch_size,
            data_dir=config.data_dir, load_size=config.load_size, seed=config.seed,
            tfrecord_keys=tfrecord_keys(config),
        )  # fmt: skip
    except training.DataUsageError as error:
        raise FlagError(str(error)) from None


def training_stream(
    config: TrainConfig,
    images: Any,
    first_epoch: int,
    last_epoch: int,
    skip: int = 0,
    strategy: Any = None,
    skipped: Any = None,
) -> Any:
    """Batches of epochs ``[first_epoch, last_epoch)``, the first ``skip`` left out, as a
    distributed dataset, with the flags' batch, size, seed and augmentation
    (``training.training_stream``)."""
    return training.training_stream(
        images, config.batch_size, config.image_size, first_epoch, last_epoch, skip=skip,
        strategy=strategy, skipped=skipped, seed=config.seed, augment_on=config.augment_on,
        jit_compile=config.jit_augment, key_augment=config.key_augment,
        recipe=config.augment_recipe,
    )  # fmt: skip


# --- Building -----------------------------------------------------------------------------


def make_spec(config: TrainConfig, run_data: RunData, total_steps: int) -> Any:
    """The ``RunSpec`` (run.json) of this run: what rebuilds its model.

    Every ``RunSpec`` field that is also a ``TrainConfig`` field is copied (the options of
    ``tfascl.options`` are both); the rest are resolved here: the loss direction, the
    schedule's length and the data's statistics.
    """
    flags = {field.name for field in dataclasses.fields(TrainConfig)}
    names = [field.name for field in dataclasses.fields(RunSpec) if field.name in flags]
    shared = {name: getattr(config, name) for name in names}
    resolved = dict(
        projector_dims=tuple(config.projector_dims),
        symmetric=config.uses_symmetric_loss,
        total_steps=total_steps,
        mean=tuple(float(m) for m in run_data.train.mean),
        std=tuple(float(v) for v in run_data.train.std),
        num_classes=run_data.num_classes,
    )
    return RunSpec(**{**shared, **resolved})


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> Any:
    """Linear warm-up from 0, then cosine to 0 or constant, per step: Keras's CosineDecay;
    with ``--schedule_per=epoch`` held for each epoch at its first step's rate (MoCo)."""
    peak = config.learning_rate
    if config.scale_lr:
        peak = scaled_learning_rate(peak, config.batch_size)
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    final = peak if config.schedule == "constant" else 0.0
    schedule = warmup_cosine(peak, total, warmup, final_lr=final)
    return PerEpoch(schedule, steps_per_epoch) if config.schedule_per == "epoch" else schedule


def build_model(config: TrainConfig, spec: Any, steps_per_epoch: int, strategy: Any) -> Any:
    """The compiled model, created in ``strategy.scope()`` under the dtype policy."""
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        overrides = {}
        if config.augment_on == "device":
            # The key view as --key_augment says, as on the host (MoCo v2's aug+ key).
            overrides["views"] = data.TwoViews(
                config.image_size,
                spec.mean,
                spec.std,
                seed=config.seed,
                key_augment=config.key_augment,
                recipe=config.augment_recipe,
            )
        if config.jit_compile and strategy.num_replicas_in_sync > 1:
            # Keras cannot jit a step that spans replicas: compile each replica's part.
            overrides["replica_jit_compile"] = True
        model = spec.build_model(**overrides)
        optimizer = build_optimizer(
            config.optimizer,
            learning_rate_schedule(config, steps_per_epoch),
            weight_decay=config.weight_decay,
            exclude_bn_and_bias=config.exclude_bn_bias,
        )
        # Under mixed_float16, compile wraps the optimizer in a LossScaleOptimizer.
        whole_step_jit = config.jit_compile and strategy.num_replicas_in_sync == 1
        model.compile(
            optimizer=optimizer,
            jit_compile=whole_step_jit,
            steps_per_execution=config.steps_per_execution or 1,
        )
    return model


def is_chief(strategy: Any) -> bool:
    """Whether this process writes the run's files (always, except non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def restore_latest(
    checkpoint: Any, model_dir: runs.RunPath, chief: bool = True, spec: RunSpec | None = None
) -> str | None:
    """Restores the newest readable checkpoint of ``model_dir``, if any.

    Damaged checkpoints (newest first, and the best copy) are reported in one line
    each and, by the chief, set aside (``tfascl.runs.newest_readable_checkpoint``);
    the restore is ``tfascl.runs.restore_checkpoint``'s, which checks the checkpoint
    holds this model (``spec``'s: named in the error).

    Raises:
        FlagError: one line, when the checkpoint does not hold this model, or when
            checkpoints exist but none of them is readable.
    """
    directory = checkpoint_dir(model_dir)
    damaged: list[str] = []

    def note(line: str) -> None:
        damaged.append(line)
        print(line, file=sys.stderr, flush=True)

    path = runs.newest_readable_checkpoint(directory, move_aside=chief, report=note)
    runs.best_checkpoint(model_dir, move_aside=chief)  # a damaged best is set aside
    if path is None and damaged:
        raise FlagError(
            f"--model_dir={model_dir}: no readable checkpoint in {directory} (damaged ones are "
            "kept in its damaged/ folder); use another --model_dir to start over"
        )
    if path is None:
        return None
    try:
        runs.restore_checkpoint(checkpoint, path, spec)
    except runs.CheckpointMismatch as error:
        raise FlagError(f"--model_dir={model_dir}: {error}; use another --model_dir") from None
    return path


# --- Files of a run -----------------------------------------------------------------------


def finished_run(model_dir: runs.RunPath, config: TrainConfig) -> dict[str, Any] | None:
    """The summary of a completed run of ``config.epochs`` epochs, checked cheaply."""
    summary = runs.read_json_record(runs.join(model_dir, SUMMARY_FILE))
    if not summary.get("completed") or summary.get("epochs") != config.epochs:
        return None
    latest = tf.train.latest_checkpoint(str(checkpoint_dir(model_dir)))
    step = checkpoint_step(latest)
    return summary if step is not None and step >= summary.get("steps", -1) else None


def export_backbone(model_dir: runs.RunPath, export_dir: runs.RunPath) -> str:
    """The end of a completed run: ``tfascl.export.export_backbone``; where the export went."""
    from tfascl import export  # loaded only for a run that exports

    result = export.export_backbone(str(model_dir), str(export_dir))
    return str(result or export_dir)


# --- The run ------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    """What ``train`` did: the exit code, summary.json's content and the model (if built)."""

    exit_code: int
    summary: dict[str, Any]
    model: Any = None


def train(config: TrainConfig) -> RunResult:
    """Validates, then trains (or resumes) the run of ``config``; see the module doc.

    Raises:
        FlagError: a bad flag, dataset or model_dir, found before training starts.
    """
    started = time.time()
    console.keep_reports_on_their_own_lines()  # nothing written into the progress line
    validate(config)
    model_dir = resolve_model_dir(config)
    absolute = model_dir.resolve() if runs.is_local(model_dir) else model_dir
    given = dataclasses.replace(config, model_dir=str(absolute))
    check_previous_run(model_dir, config)
    summary = finished_run(model_dir, config)
    if summary is not None:
        print(
            f"{model_dir}: the run is complete ({summary['epochs']} epochs, "
            f"{summary['steps']} steps, best kNN top-1 {percent(summary.get('best_knn_top1'))}); "
            "nothing to do."
        )
        return RunResult(0, summary)

    try:
        strategy = make_strategy(config.strategy, config.cluster, config.cluster_port)
    except ValueError as error:
        flag = f"--strategy={config.strategy} --cluster={config.cluster}"
        raise FlagError(f"{flag}: {error}") from None
    config = check_replicas(config, strategy.num_replicas_in_sync)
    run_data = load_data(config)
    steps_per_epoch = len(run_data.train) // config.batch_size
    total_steps = config.epochs * steps_per_epoch
    spec = make_spec(config, run_data, total_steps)
    chief = is_chief(strategy)
    write_dir = model_dir if chief else Path(tempfile.mkdtemp(prefix="tfascl-worker-"))
    if chief:
        save_spec(spec, model_dir)
        atomic_write_json(runs.join(model_dir, FLAGS_FILE), config.to_json())
        # The flags as given (not as resolved for this machine): replays the run.
        runs.atomic_write_text(runs.join(model_dir, runs.FLAGS_TEXT_FILE), flagfile_text(given))

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        return _train_model(
            config, spec, run_data, strategy, model_dir, write_dir, chief, started, steps_per_epoch
        )
    finally:
        keras.mixed_precision.set_global_policy(policy)
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)


@dataclasses.dataclass
class RunCallbacks:
    """The callbacks of a tfascl-train run; ``in_order`` gives them in the order they act."""

    guard: cbs.NonFiniteLoss
    stopper: cbs.StopOnSignal
    ran_out: cbs.InputRanOut
    saver: cbs.CheckpointSaver
    monitor: cbs.KnnMonitor | None
    logger: cbs.MetricsLogger
    board: cbs.TensorBoard | None
    knn_report: cbs.KnnReport | None = None

    @classmethod
    def make(
        cls,
        config: TrainConfig,
        run_data: RunData,
        checkpoint: tf.train.Checkpoint,
        manager: tf.train.CheckpointManager,
        strategy: tf.distribute.Strategy,
        model_dir: runs.RunPath,
        write_dir: runs.RunPath,
        chief: bool,
    ) -> RunCallbacks:
        """The run's callbacks; only the chief writes files into ``model_dir``."""
        board = None
        if chief:
            profile = cbs.profile_range(config.profile_steps)
            board = cbs.TensorBoard(
                runs.join(model_dir, runs.TENSORBOARD_SUBDIR), config.log_every, profile
            )
        monitor = knn_monitor(
            config, run_data, checkpoint, model_dir if chief else None, write_dir, strategy, chief
        )
        return cls(
            guard=cbs.NonFiniteLoss(config.log_every),
            stopper=cbs.StopOnSignal(strategy=strategy),
            ran_out=cbs.InputRanOut(),
            saver=cbs.CheckpointSaver(manager, config.checkpoint_every),
            monitor=monitor,
            logger=cbs.MetricsLogger(
                model_dir if chief else None, config.log_every, config.batch_size
            ),
            board=board,
            knn_report=cbs.KnnReport(monitor) if monitor is not None and chief else None,
        )

    def in_order(self) -> list[keras.callbacks.Callback]:
        """The monitor and the logger add kNN and pairs/s to the logs before TensorBoard
        writes them; the logger writes a step before the saver saves it, so a resumed run
        keeps its record. ``run_epochs`` puts ``ran_out`` first and the kNN report after
        the progress bar."""
        callbacks = [self.guard, self.stopper, self.monitor, self.logger, self.board]
        return [callback for callback in (*callbacks, self.saver) if callback is not None]

    def after_progress_bar(self) -> list[keras.callbacks.Callback]:
        """Callbacks that print after the epoch's progress line is finished."""
        return [self.knn_report] if self.knn_report is not None else []


def _train_model(
    config: TrainConfig,
    spec: Any,
    run_data: RunData,
    strategy: Any,
    model_dir: runs.RunPath,
    write_dir: runs.RunPath,
    chief: bool,
    started: float,
    steps_per_epoch: int,
) -> RunResult:
    model = build_model(config, spec, steps_per_epoch, strategy)
    with strategy.scope():
        checkpoint = model.checkpoint()
    # After the restore, which may set damaged checkpoints aside: the manager reads the
    # list of checkpoints when it is made.
    restored = restore_latest(checkpoint, model_dir, chief, spec)
    manager = tf.train.CheckpointManager(
        checkpoint, str(checkpoint_dir(write_dir)), max_to_keep=config.keep_checkpoints
    )
    start_step = cbs.global_step(model)
    total_steps = config.epochs * steps_per_epoch
    if restored:
        epoch, offset = divmod(start_step, steps_per_epoch)
        where = (
            f"epoch {epoch + 1}, step {offset} of {steps_per_epoch}"
            if offset
            else (f"start of epoch {epoch + 1}")
        )
        print(f"Resuming from {restored} at step {start_step} ({where}).")
    else:
        try:  # the initial state: a NaN at step 1 keeps it
            cbs.save_checkpoint(manager, 0)
        except cbs.SaveFailed as error:
            return save_failed(error, config, model_dir, chief, model)
    if chief:
        cbs.truncate_metrics(model_dir, start_step)

    run = RunCallbacks.make(
        config, run_data, checkpoint, manager, strategy, model_dir, write_dir, chief
    )
    guard, stopper, saver, monitor = run.guard, run.stopper, run.saver, run.monitor
    saver.last_saved_step = start_step

    stopper.install()
    try:
        run_epochs(
            model, config, run_data, strategy, start_step, steps_per_epoch, run.in_order(),
            after_progress_bar=run.after_progress_bar(), ran_out=run.ran_out,
        )  # fmt: skip
        if guard.failed_step is None:
            saver.save({"loss": 0.0})  # Ctrl-C between steps, or a finished run's last step
    except cbs.SaveFailed as error:
        return save_failed(error, config, model_dir, chief, model)
    finally:
        stopper.uninstall()
    step = cbs.global_step(model)
    if monitor is not None and step >= total_steps and not monitor.last:
        monitor.set_model(model)
        monitor.last = monitor.evaluate()  # a run resumed after its last step
    status = "completed" if step >= total_steps else (stopper.reason or "interrupted")
    if run.ran_out.ran_out_at is not None and step < total_steps:
        status = "out_of_data"
    if guard.failed_step is not None:
        status = "non_finite_loss"
    summary = run_summary(
        status, config, step, start_step, steps_per_epoch, run, manager, model_dir, started
    )
    summary.update(knn_sizes(run_data))
    if chief and status == "completed" and config.export:
        export_dir = runs.run_path(config.export_dir or runs.join(model_dir, EXPORT_SUBDIR))
        summary["export_dir"] = export_backbone(model_dir, export_dir)
    if not chief:  # the chief reports; this worker's files were scratch
        return RunResult(EXIT_CODES.get(status, 0), summary, model)
    atomic_write_json(runs.join(model_dir, SUMMARY_FILE), summary)
    return RunResult(report(summary, guard, config), summary, model)


def save_failed(
    error: Exception, config: TrainConfig, model_dir: runs.RunPath, chief: bool, model: Any
) -> RunResult:
    """A checkpoint could not be written: one line, summary.json if it fits, exit 1."""
    print(f"error: {error}. Free space, then re-run the command to resume.", file=sys.stderr)
    step = cbs.global_step(model)
    summary = {"status": "save_failed", "completed": False, "epochs": config.epochs}
    summary.update(steps=step, error=str(error), model_dir=str(model_dir))
    if chief:
        try:
            atomic_write_json(runs.join(model_dir, SUMMARY_FILE), summary)
        except OSError:
            pass  # the disk is still full: the line above is the report
    return RunResult(EXIT_SAVE_FAILED, summary, model)


def knn_monitor(
    config: TrainConfig,
    run_data: RunData,
    checkpoint: Any,
    model_dir: runs.RunPath | None,
    write_dir: runs.RunPath,
    strategy: Any = None,
    chief: bool = True,
) -> Any:
    """The kNN monitor over the eval transform of the bank and test images, or None; at
    the final evaluation's size (STL-10: the native 96 px, ``monitor_image_size``). Under
    several workers the chief alone runs its feature passes (``KnnMonitor``)."""
    from tfascl.evaluation.protocols import monitor_image_size

    if run_data.bank is None:
        return None
    batch = 256
    size = monitor_image_size(config.dataset, config.image_size, run_data.bank, run_data.test)
    if size != config.image_size:
        print(f"kNN monitor: bank and test images at their own {size} px, as tfascl-eval.")
    return cbs.KnnMonitor(
        data.eval_dataset(run_data.bank, batch, size, crop_fraction=config.eval_crop),
        data.eval_dataset(run_data.test, batch, size, crop_fraction=config.eval_crop),
        run_data.num_classes,
        every=config.knn_every,
        last_epoch=config.epochs - 1,
        k=config.knn_k,
        temperature=config.knn_t,
        checkpoint=checkpoint,
        model_dir=model_dir,
        write_dir=checkpoint_dir(write_dir),
        at_start=config.knn_at_start,
        strategy=strategy,
        chief=chief,
    )


def run_epochs(
    model: Any,
    config: TrainConfig,
    run_data: RunData,
    strategy: Any,
    start_step: int,
    steps_per_epoch: int,
    callbacks: list,
    after_progress_bar: list | None = None,
    ran_out: cbs.InputRanOut | None = None,
) -> None:
    """Trains from ``start_step`` to the end: the rest of a partial epoch, then the others.

    ``fit`` (one device, mirrored) or ``distribute.fit_loop`` (multi-worker) runs each
    part; one call cannot start mid-epoch, so a resumed partial epoch is its own call.
    With ``--steps_per_execution`` not dividing an epoch, ``fit`` gets one epoch a call.
    The progress bar is in the callbacks explicitly, after ``callbacks`` (whose epoch logs
    it prints) and before ``after_progress_bar`` (which print below its line). A part
    whose input ran out (``ran_out`` saw it, or ``fit_loop`` hit the end of its dataset)
    ends the run.
    """
    epoch, offset = divmod(start_step, steps_per_epoch)
    parts = []
    if offset:
        parts.append((epoch, epoch + 1, offset))
        epoch += 1
    if epoch < config.epochs:
        parts.append((epoch, config.epochs, 0))
    verbose = (1 if config.progress_bar else 2) if is_chief(strategy) else 0
    ran_out = ran_out or cbs.InputRanOut()
    # Streamed folders and TFRecord shards: which files decode, and a line per epoch on the others.
    skipped, report = training.skipped_report(
        run_data.train, config.batch_size, config.seed, strategy, start_step, steps_per_epoch,
        ran_out, announce=console.warn,
    )  # fmt: skip
    per_execution = config.steps_per_execution or 1
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if steps_per_epoch % per_execution and not multi_worker:
        # fit runs whole executions: the last of an epoch would run into the next epoch's
        # batches unless the epoch's dataset ends with it (then it runs what is left).
        parts = [(e, e + 1, k if e == a else 0) for a, b, k in parts for e in range(a, b)]
    for first, last, skip in parts:
        dataset = training_stream(config, run_data.train, first, last, skip, strategy, skipped)
        steps = steps_per_epoch - skip
        common = {"epochs": last, "initial_epoch": first, "steps_per_epoch": steps}
        bar = [cbs.ProgressBar()] if verbose else []
        # ran_out first (it stops a short epoch), then the skipped-files report (it names
        # the files of that epoch), the run's callbacks, the bar, what prints below it.
        everything = [ran_out, *report, *callbacks, *bar, *(after_progress_bar or [])]
        common.update(callbacks=everything, verbose=verbose)
        with warnings.catch_warnings():
            # Keras's own note that the input ran out, written into the progress line:
            # InputRanOut says it on a line of its own and stops the run.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            if multi_worker:
                fit_loop(
                    model, dataset, strategy=strategy, steps_per_execution=per_execution,
                    **common,
                )  # fmt: skip
            else:  # shuffle=False: the stream is shuffled, per epoch, by its seed
                model.fit(dataset, shuffle=False, **common)
        stopped = [getattr(c, "failed_step", None) is not None for c in callbacks]
        stopped += [getattr(c, "interrupted", False) for c in callbacks]
        if any(stopped) or ran_out.ran_out_at is not None:
            return


# --- Entry points -------------------------------------------------------------------------


def quiet_libraries() -> None:
    """TensorFlow's INFO lines and Keras's warning about a subclassed model without
    build() (harmless: fit builds it symbolically) would bury the progress."""
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"`build\(\)` was called on layer")


def main(argv: list[str]) -> None:
    """absl main: trains with the parsed flags and exits with the run's status."""
    no_arguments(PROGRAM, argv)
    quiet_libraries()
    try:
        config = config_from_flags()
        result = train(config)
    except FlagError as error:
        fail_usage(str(error))
    sys.exit(result.exit_code)


def run() -> None:
    """Console script ``tfascl-train``: defines the flags, parses them, runs ``main``."""
    run_app(PROGRAM, define_flags, main)


if __name__ == "__main__":
    run()
