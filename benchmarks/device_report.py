"""JSON lines for ``benchmarks/device.sh``: the machine, and the ASCL run's outcome.

python -m benchmarks.device_report environment OUT.jsonl
python -m benchmarks.device_report learning OUT.jsonl MODEL_DIR EPOCHS TARGET_EPOCHS
python -m benchmarks.device_report step OUT.jsonl NAME EXIT_STATUS SECONDS
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def append(path: str | Path, record: dict[str, Any]) -> None:
    """Appends one JSON line (with the time) to ``path``."""
    record = {**record, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    with open(path, "a") as stream:
        stream.write(json.dumps(record) + "\n")


def environment() -> dict[str, Any]:
    """nvidia-smi's table, TensorFlow, CUDA/cuDNN (as TF was built), the devices TF sees."""
    import keras
    import tensorflow as tf

    from benchmarks.train_step import device_name, git_commit

    try:
        smi = subprocess.run(
            ["nvidia-smi"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        smi = ""
    build = tf.sysconfig.get_build_info()
    return {
        "kind": "environment",
        "device": device_name(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cuda": build.get("cuda_version"),
        "cudnn": build.get("cudnn_version"),
        "python": platform.python_version(),
        "nvidia_smi": smi or None,
        "git_commit": git_commit(),
    }


def learning(model_dir: str | Path, epochs: int, target_epochs: int) -> dict[str, Any]:
    """The run's kNN accuracy, pairs/s and the time ``target_epochs`` epochs would take.

    The projection is the run's training time per epoch (kNN evaluations and the first,
    tracing, execution left out) times ``target_epochs``; ``projected_wall_s`` scales
    the whole wall time instead (start-up, compile and kNN included, an upper bound).
    """
    summary = json.loads((Path(model_dir) / "summary.json").read_text())
    flags = json.loads((Path(model_dir) / "flags.json").read_text())
    pairs = summary.get("pairs_per_second") or 0.0
    pairs_per_epoch = summary["steps_per_epoch"] * flags["batch_size"]
    return {
        "kind": "learning",
        "method": flags["method"],
        "dataset": flags["dataset"],
        "epochs": epochs,
        "status": summary["status"],
        "batch_size": flags["batch_size"],
        "backbone_width": flags["backbone_width"],
        "queue_size": flags["queue_size"],
        "precision": flags["precision"],
        "jit_compile": flags["jit_compile"],
        "augment_on": flags["augment_on"],
        "steps_per_execution": flags.get("steps_per_execution"),
        "train_examples": pairs_per_epoch,
        "pairs_per_sec": round(pairs, 1),
        "knn_top1": summary.get("final_knn_top1"),
        "knn_top5": summary.get("final_knn_top5"),
        "wall_time_s": summary.get("wall_time_s"),
        "train_time_s": summary.get("train_time_s"),
        "knn_time_s": summary.get("knn_time_s"),
        "target_epochs": target_epochs,
        "projected_train_s": round(target_epochs * pairs_per_epoch / pairs, 1) if pairs else None,
        "projected_wall_s": round(summary["wall_time_s"] * target_epochs / epochs, 1),
    }


def main(argv: list[str]) -> None:
    what, out, *rest = argv
    if what == "environment":
        append(out, environment())
    elif what == "learning":
        model_dir, epochs, target = rest
        append(out, learning(model_dir, int(epochs), int(target)))
    elif what == "step":
        name, status, seconds = rest
        append(out, {"kind": "step", "step": name, "exit_status": int(status),
                     "seconds": int(seconds)})  # fmt: skip
    else:
        raise SystemExit(f"unknown report {what!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
