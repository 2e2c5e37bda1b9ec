"""How a training run ended: the record of ``summary.json`` and the lines tfascl-train
prints (the outcome, where the model is, the kNN gain over the random encoder), with the
exit status of each ending."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import tensorflow as tf

from tfascl import runs
from tfascl.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_PREEMPTED
from tfascl.train_config import EXIT_SAVE_FAILED, TrainConfig

EXIT_CODES = {
    "non_finite_loss": EXIT_FAILED,
    "out_of_data": EXIT_FAILED,
    "interrupted": EXIT_INTERRUPTED,
    "preempted": EXIT_PREEMPTED,
    "save_failed": EXIT_SAVE_FAILED,
}


def run_summary(
    status: str,
    config: TrainConfig,
    step: int,
    start_step: int,
    steps_per_epoch: int,
    run: Any,
    manager: tf.train.CheckpointManager,
    model_dir: runs.RunPath,
    started: float,
) -> dict[str, Any]:
    """The record of summary.json (``export_dir`` is filled in once the export is written).

    ``run``: the run's callbacks (``monitor``: the kNN monitor or None; ``logger``: the
    metrics logger with its training time and rate)."""
    return {
        "status": status,
        "completed": status == "completed",
        "epochs": config.epochs,
        "steps": step,
        "total_steps": config.epochs * steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "resumed_from_step": start_step,
        **knn_summary(run.monitor),
        "latest_checkpoint": os.path.basename(manager.latest_checkpoint or ""),
        "wall_time_s": round(time.time() - started, 3),
        "train_time_s": round(run.logger.train_seconds, 3),
        "pairs_per_second": run.logger.pairs_per_second,
        "model_dir": str(model_dir),
        "export_dir": None,
    }


def knn_summary(monitor: Any) -> dict[str, Any]:
    """The kNN fields of summary.json (None without a monitor)."""
    last, best = (monitor.last, monitor.best) if monitor else ({}, {})
    initial = monitor.initial if monitor else {}
    return {
        "initial_knn_top1": initial.get("knn_top1"),
        "final_knn_top1": last.get("knn_top1"),
        "final_knn_top5": last.get("knn_top5"),
        "best_knn_top1": best.get("knn_top1"),
        "best_checkpoint": best.get("checkpoint"),
        "best_epoch": best.get("epoch"),
        "knn_time_s": round(monitor.seconds, 3) if monitor else 0.0,
        "knn_passes": monitor.passes if monitor else 0,
    }


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals (``n/a`` for None)."""
    return "n/a" if value is None else f"{100 * value:.2f}%"


def report(summary: dict[str, Any], guard: Any, config: TrainConfig) -> int:
    """Prints the outcome and returns the exit code."""
    where = f"model: {summary['model_dir']} (latest {summary['latest_checkpoint']}"
    where += f", best {summary['best_checkpoint']})" if summary["best_checkpoint"] else ")"
    if summary["status"] == "non_finite_loss":
        print(
            f"Stopped: non-finite loss ({guard.failed_loss}) at step {guard.failed_step}; "
            f"kept the last good checkpoint, {summary['latest_checkpoint']}. "
            "Lower --learning_rate or use --precision=float32.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if summary["status"] == "out_of_data":
        print(
            f"Stopped: the input ran out of data at step {summary['steps']} of "
            f"{summary['total_steps']} (too many files are unreadable: they are named "
            "above); saved. Fix or remove them, then re-run the command to resume.",
            file=sys.stderr,
        )
        print(where)
        return EXIT_FAILED
    if summary["status"] in ("interrupted", "preempted"):
        what = summary["status"].capitalize()
        print(f"{what} at step {summary['steps']}; saved. Re-run the command to resume.")
        print(where)
        return EXIT_CODES[summary["status"]]
    print(
        f"Done: {summary['steps']} steps, {summary['epochs']} epochs. kNN top-1 "
        f"{percent(summary['final_knn_top1'])} (best {percent(summary['best_knn_top1'])}), "
        f"{summary['pairs_per_second'] or 0:.1f} pairs/s."
    )
    print(where)
    if summary["export_dir"]:
        print(f"export: {summary['export_dir']}")
    for line in verdict(summary, config):
        print(line)
    return 0


def verdict(summary: dict[str, Any], config: TrainConfig) -> list[str]:
    """The last line of a completed run: the random encoder's kNN top-1 against the final
    one, e.g. ``pretraining: 76.1% → 93.1% kNN top-1 on the 360 test digits (+17.0 points
    over the randomly initialised encoder)``; and a hint when training did not beat it."""
    start, end = summary.get("initial_knn_top1"), summary.get("final_knn_top1")
    if start is None or end is None:
        return []
    count = summary.get("knn_test_images")
    what = "test digits" if config.dataset == "digits" else f"{config.test_split} images"
    where = f" on the {count:,} {what}" if count else ""
    gain = 100 * (end - start)
    lines = [
        f"pretraining: {100 * start:.1f}% → {100 * end:.1f}% kNN top-1{where} "
        f"({gain:+.1f} points over the randomly initialised encoder)"
    ]
    if gain <= 0:
        recipe = " (flags/digits_ascl.flags for these digits)" if config.dataset == "digits" else ""
        lines.append(
            "note: not better than the random encoder yet: train longer, or use augmentations "
            f"that suit the images{recipe}"
        )
    return lines
