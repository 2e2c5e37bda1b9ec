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
import sys
import time
from pathlib import Path
from typing import Any

import keras
from absl import app, flags

from benchmarks.train_step import device_name, git_commit
from tfascl.callbacks import KnnMonitor
from tfascl.data import eval_dataset, load_images, pretrain_dataset
from tfascl.optim import WarmupCosine, build_optimizer
from tfascl.runs import RunSpec

FLAGS = flags.FLAGS
flags.DEFINE_string("data", "../shared/datasets/cifar10", "Image folder root/<split>/<class>.")
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


class CurveMonitor(KnnMonitor):
    """tfascl's kNN monitor that also keeps the curve: ``[(epoch, top-1 %), ...]``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.curve: list[tuple[int, float]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if self.due(epoch) and not self.model.stop_training:
            top1 = 100.0 * self.last["knn_top1"]
            self.curve.append((epoch + 1, round(top1, 2)))
            print(f"epoch {epoch + 1}: kNN top-1 {top1:.2f}%", flush=True)


def main(argv: list[str]) -> None:
    del argv
    started = time.time()
    commit = git_commit()  # the code this run started with
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
    # The run's weighted kNN (k=200, t=0.1), every --knn_every epochs and at the end.
    monitor = CurveMonitor(
        train_eval, test_eval, 10, every=FLAGS.knn_every, last_epoch=FLAGS.epochs - 1
    )
    history: dict = {}
    if method == "random":
        monitor.set_model(model)
        monitor.curve.append((0, round(100.0 * monitor.evaluate()["knn_top1"], 2)))
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
        "device": device_name(),
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
