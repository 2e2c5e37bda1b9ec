"""Reduced learning protocol: does the model learn, and does ASCL help over MoCo v2?

    python -m benchmarks.learning --flagfile=benchmarks/learning.flags --method=ascl --seed=0

One run per call (``benchmarks/learning.sh`` runs them all): pretrains ``--method`` on a fixed
stratified subset of the training split, then scores the backbone by weighted kNN (k=200,
t=0.1) with the subset as memory bank and the full test split as queries. ``--method=random``
scores the untrained backbone of the same seed. Writes
``<results_dir>/learning_<method>_w<width>_n<examples>_e<epochs>_seed<seed>.json``.

It uses the library API directly (data, build_model, fit, knn) because the ``tfascl-train``
CLI had not landed in main when the benchmark was written; the settings follow the ASCL
code's CIFAR recipe except where the flagfile says why.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import keras
from absl import app, flags

from tfascl.data import eval_dataset, load_images, pretrain_dataset
from tfascl.knn import extract_features, knn_accuracy
from tfascl.optim import WarmupCosine, build_optimizer
from tfascl.runs import RunSpec

FLAGS = flags.FLAGS
flags.DEFINE_string("data", "/work/shared/datasets/cifar10", "Image folder root/<split>/<class>.")
flags.DEFINE_string("method", "ascl", "A tfascl method, or 'random' for the untrained backbone.")
flags.DEFINE_integer("seed", 0, "Seed of the model, the augmentations and the batch order.")
flags.DEFINE_integer("subset_seed", 0, "Seed of the training subset (fixed across runs).")
flags.DEFINE_integer("max_train_examples", 5000, "Size of the training subset.")
flags.DEFINE_integer("backbone_width", 16, "ResNet-18 first-stage channels.")
flags.DEFINE_integer("epochs", 20, "Pretraining epochs.")
flags.DEFINE_integer("batch_size", 128, "Pretraining batch size.")
flags.DEFINE_integer("queue_size", 1024, "Keys in the queue.")
flags.DEFINE_float("learning_rate", 0.06, "Peak SGD learning rate.")
flags.DEFINE_float("weight_decay", 5e-4, "Coupled L2 (PyTorch SGD).")
flags.DEFINE_integer("warmup_epochs", 1, "Linear warm-up epochs.")
flags.DEFINE_integer("knn_every", 5, "kNN evaluation every this many epochs (and at the end).")
flags.DEFINE_string("results_dir", "benchmarks/results", "Where the JSON result goes.")


def _git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def knn_top1(backbone: keras.Model, train_eval, test_eval) -> float:  # noqa: ANN001
    """Weighted kNN top-1 (k=200, t=0.1) of ``backbone`` features, in percent."""
    train_f, train_y = extract_features(backbone, train_eval)
    test_f, test_y = extract_features(backbone, test_eval)
    return (
        100.0 * knn_accuracy(train_f, train_y, test_f, test_y, 10, k=200, temperature=0.1)["top1"]
    )


class KnnMonitor(keras.callbacks.Callback):
    """Scores the backbone every ``every`` epochs and keeps the curve."""

    def __init__(self, backbone: keras.Model, train_eval, test_eval, every: int):  # noqa: ANN001
        super().__init__()
        self.backbone, self.train_eval, self.test_eval, self.every = (
            backbone,
            train_eval,
            test_eval,
            every,
        )
        self.curve: list[tuple[int, float]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        if done % self.every == 0 or done == self.params["epochs"]:
            top1 = knn_top1(self.backbone, self.train_eval, self.test_eval)
            self.curve.append((done, round(top1, 2)))
            print(f"epoch {done}: kNN top-1 {top1:.2f}%", flush=True)


def main(argv: list[str]) -> None:
    del argv
    started = time.time()
    commit = _git_commit()  # the code this run started with
    keras.utils.set_random_seed(FLAGS.seed)
    train = load_images(
        FLAGS.data, "train", max_examples=FLAGS.max_train_examples, seed=FLAGS.subset_seed
    )
    test = load_images(FLAGS.data, "test")
    train_eval = eval_dataset(train, 500, 32)
    test_eval = eval_dataset(test, 500, 32)
    steps_per_epoch = len(train) // FLAGS.batch_size
    total_steps = steps_per_epoch * FLAGS.epochs
    method = FLAGS.method
    spec = RunSpec(
        method="moco" if method == "random" else method,
        backbone_width=FLAGS.backbone_width,
        queue_size=FLAGS.queue_size,
        batch_size=FLAGS.batch_size,
        total_steps=total_steps,
        mean=train.mean,
        std=train.std,
    )
    model = spec.build_model()
    curve: list[tuple[int, float]] = []
    history: dict = {}
    if method == "random":
        top1 = knn_top1(model.backbone, train_eval, test_eval)
        curve.append((0, round(top1, 2)))
    else:
        schedule = WarmupCosine(
            FLAGS.learning_rate, total_steps, warmup_steps=FLAGS.warmup_epochs * steps_per_epoch
        )
        model.compile(
            optimizer=build_optimizer(
                "sgd", schedule, weight_decay=FLAGS.weight_decay, exclude_bn_and_bias=False
            ),
            jit_compile=False,
        )
        monitor = KnnMonitor(model.backbone, train_eval, test_eval, FLAGS.knn_every)
        pairs = pretrain_dataset(train, FLAGS.batch_size, 32, seed=FLAGS.seed)
        fit = model.fit(pairs, epochs=FLAGS.epochs, verbose=2, callbacks=[monitor])
        history = {k: [round(float(v), 4) for v in vs] for k, vs in fit.history.items()}
        curve = monitor.curve
    result = {
        "kind": "learning",
        "method": method,
        "seed": FLAGS.seed,
        "knn_top1": curve[-1][1],
        "knn_curve": curve,
        "history": history,
        "settings": {
            name: FLAGS[name].value
            for name in (
                "data",
                "subset_seed",
                "max_train_examples",
                "backbone_width",
                "epochs",
                "batch_size",
                "queue_size",
                "learning_rate",
                "weight_decay",
                "warmup_epochs",
            )
        },
        "train_examples": len(train),
        "test_examples": len(test),
        "command": "python -m benchmarks.learning " + " ".join(sys.argv[1:]),
        "seconds": round(time.time() - started, 1),
        "device": f"CPU {_cpu_model()} x{os.cpu_count()}",
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "git_commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    out = Path(FLAGS.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = (
        f"learning_{method}_w{FLAGS.backbone_width}_n{FLAGS.max_train_examples}"
        f"_e{FLAGS.epochs}_seed{FLAGS.seed}.json"
    )
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("method", "seed", "knn_top1", "seconds")}))


if __name__ == "__main__":
    app.run(main)
