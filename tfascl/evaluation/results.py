"""``results.json`` beside a model, and the small table printed on stdout.

The file maps a key to the latest result of that evaluation::

    {
      "knn":         {"protocol": "knn", "dataset": "cifar10", "metrics": {"top1": 0.83, ...}, ...},
      "linear":      {...},
      "linear_fast": {...},
      "knn@cifar100": {...}     # a dataset other than the one the model was trained on
    }

Writing one key keeps every other key: a kNN run never clobbers a linear result. The file is
written to a temporary name and renamed, so a reader never sees half of it.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

from tfascl import runs
from tfascl.evaluation.encoders import EvalInputError
from tfascl.runs import RESULTS_FILE, atomic_write_json


def result_key(protocol: str, dataset: str, pretrain_dataset: str | None) -> str:
    """``protocol``, or ``protocol@dataset`` when evaluating on another dataset than pretraining.

    Args:
        protocol: ``"knn"``, ``"linear"`` or ``"linear_fast"``.
        dataset: The evaluation dataset's name.
        pretrain_dataset: The pretraining dataset (``None``: unknown, treated as the same).
    """
    if pretrain_dataset is None or _same_dataset(dataset, pretrain_dataset):
        return protocol
    return f"{protocol}@{dataset}"


def _same_dataset(a: str, b: str) -> bool:
    # A run trained on "/data/cifar10" evaluated on "cifar10" (or vice versa) is the same data.
    return Path(os.path.normpath(a)).name.lower() == Path(os.path.normpath(b)).name.lower()


def read_results(directory: str | Path) -> dict[str, Any]:
    """The contents of ``directory/results.json`` (``{}`` when absent).

    Raises:
        EvalInputError: The file exists but is not a JSON object.
    """
    path = runs.join(directory, RESULTS_FILE)
    if not runs.is_file(path):
        return {}
    try:
        contents = json.loads(runs.read_text(path))
    except json.JSONDecodeError as error:
        raise EvalInputError(
            f"{path} is not valid JSON ({error}); move it away to start anew"
        ) from None
    if not isinstance(contents, dict):
        raise EvalInputError(f"{path} does not hold a JSON object; move it away to start anew")
    return contents


def update_results(directory: str | Path, key: str, entry: dict[str, Any]) -> runs.RunPath:
    """Sets ``results[key] = entry`` in ``directory/results.json``, keeping the other keys.

    Args:
        directory: The model_dir or SavedModel directory.
        key: See :func:`result_key`.
        entry: JSON-serialisable result.

    Returns:
        The file's path.
    """
    results = read_results(directory)
    results[key] = entry
    return atomic_write_json(runs.join(directory, RESULTS_FILE), results)


def now_iso() -> str:
    """The current UTC time, to the second, ISO 8601."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"


def format_table(entry: dict[str, Any]) -> str:
    """A few aligned lines for stdout: what was evaluated, on what, and the accuracies.

    Args:
        entry: A results entry (``protocol``, ``dataset``, ``metrics``, ``model``, ...).
    """
    metrics = entry.get("metrics", {})
    model = entry.get("model", {})
    rows = [
        ("protocol", entry.get("protocol", "?")),
        ("model", f"{model.get('method', '?')} ({model.get('checkpoint', '?')})"),
        (
            "dataset",
            f"{entry.get('dataset', '?')}: {entry.get('num_train', '?')} train / "
            f"{entry.get('num_test', '?')} test, {entry.get('num_classes', '?')} classes",
        ),
    ]
    for name in ("top1", "top5", "top1_best", "top1_final", "top5_final"):
        if name in metrics:
            rows.append((name.replace("top", "top-"), _percent(metrics[name])))
    for name in ("same_class_fraction", "same_class_fraction_shown"):
        if name in metrics:
            rows.append((name.replace("_", " "), _percent(metrics[name])))
    if "best_epoch" in metrics:
        rows.append(("best epoch", str(metrics["best_epoch"])))
    if "wall_time_s" in entry:
        rows.append(("wall time", f"{entry['wall_time_s']:.1f} s"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
