"""Reduced learning protocol: does the model learn, and does ASCL help over MoCo v2?

    python -m benchmarks.learning --flagfile=benchmarks/learning.flags --method=ascl --seed=0

One run per call (``benchmarks/learning.sh`` runs them all): pretrains ``--method`` on a fixed
stratified subset of the training split, then scores the backbone by weighted kNN (k=200,
t=0.1) with the subset as memory bank and the full test split as queries. ``--method=random``
scores the untrained backbone of the same seed. Writes
``<results_dir>/learning_<method>_w<width>_n<examples>_e<epochs>_seed<seed>.json``.

Training is ``tfascl.train.train(TrainConfig(...))``, the code path of ``tfascl-train``; this
file only chooses the protocol's settings (``protocol_config``) and records the result. The
subset is drawn once with ``--subset_seed`` and laid out as a folder of links (``tfascl-train``
draws ``--max_train_examples`` with ``--seed``, which would give each seed other images).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from absl import flags

from benchmarks.train_step import device_name, git_commit
from tfascl import train
from tfascl.callbacks import METRICS_FILE
from tfascl.data import open_images
from tfascl.distribute import make_strategy
from tfascl.train_config import TrainConfig, check_replicas, validate

# Its own flag set: tfascl-train's flags (method, seed, epochs, ...) live in absl's global one.
FLAGS = flags.FlagValues()
DEFAULTS = TrainConfig()
flags.DEFINE_string(
    "data", "../shared/datasets/cifar10", "Image folder root/<split>/<class>.", flag_values=FLAGS
)
flags.DEFINE_string(
    "method",
    DEFAULTS.method,
    "A tfascl method, or 'random' for the untrained backbone.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "seed",
    DEFAULTS.seed,
    "Seed of the model, the augmentations and the batch order.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "subset_seed", 0, "Seed of the training subset (fixed across runs).", flag_values=FLAGS
)
flags.DEFINE_integer("max_train_examples", 5000, "Size of the training subset.", flag_values=FLAGS)
# The rest are tfascl-train's flags of the same name (and default).
for _name in ("backbone_width", "epochs", "batch_size", "queue_size", "warmup_epochs", "knn_every"):
    _help = f"tfascl-train's --{_name}."
    flags.DEFINE_integer(_name, getattr(DEFAULTS, _name), _help, flag_values=FLAGS)
for _name in ("learning_rate", "weight_decay"):
    _help = f"tfascl-train's --{_name}."
    flags.DEFINE_float(_name, getattr(DEFAULTS, _name), _help, flag_values=FLAGS)
flags.DEFINE_enum(
    "key_augment",
    DEFAULTS.key_augment,
    ["weak", "strong"],
    "tfascl-train's --key_augment: strong for the methods published with two strong views "
    "(SimCLR, DCL, NNCLR; benchmarks/learning.sh passes it).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "results_dir", "benchmarks/results", "Where the JSON result goes.", flag_values=FLAGS
)
flags.DEFINE_string(
    "model_dir",
    None,
    "Keep the run folder here (default: a temporary one, deleted).",
    flag_values=FLAGS,
)
SETTINGS = (
    "data", "subset_seed", "max_train_examples", "backbone_width", "epochs", "batch_size",
    "queue_size", "learning_rate", "weight_decay", "warmup_epochs",
)  # fmt: skip
# Epoch-record fields that are not the model's logs (fit's history held only those).
NOT_HISTORY = ("kind", "epoch", "step", "time", "learning_rate", "pairs_per_second")


def subset_folder(data: str, max_examples: int, seed: int, root: Path) -> tuple[Path, int]:
    """``root/<name of data>/``: links to the stratified subset of ``data``'s train split
    (the draw of ``load_images(data, "train", max_examples, seed)``) and to its test split.

    The folder keeps ``data``'s name (its published statistics are looked up by name) and
    each file's path inside the split, so the subset loads in the order ``load_images``
    gives it.

    Returns:
        The folder and the number of training images in it.
    """
    files = open_images(data, "train", max_examples=max_examples, seed=seed)
    folder = root / os.path.basename(os.path.normpath(data))
    for path in files.paths:
        link = folder / "train" / os.path.relpath(path, files.where)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.realpath(path))
    (folder / "test").symlink_to(os.path.realpath(os.path.join(data, "test")))
    return folder, len(files)


def protocol_config(dataset: Path, model_dir: Path) -> TrainConfig:
    """The ``TrainConfig`` of this run: the flags above; everything else tfascl-train's
    default, except where the recorded protocol differs."""
    values = {name: FLAGS[name].value for name in SETTINGS if hasattr(DEFAULTS, name)}
    del values["max_train_examples"]  # the subset folder is the whole training split
    return TrainConfig(
        **values,
        method="moco" if FLAGS.method == "random" else FLAGS.method,
        key_augment=FLAGS.key_augment,
        seed=FLAGS.seed,
        dataset=str(dataset),
        knn_every=FLAGS.knn_every,
        # The ASCL code's SGD decays every weight, BN and biases included.
        exclude_bn_bias=False,
        # As recorded: decoded into memory, no XLA for the train step.
        input="memory",
        jit_compile=False,
        # Nothing to resume or export: a checkpoint at each epoch end only.
        checkpoint_every=0,
        export=False,
        progress_bar=False,
        model_dir=str(model_dir),
    )


def untrained_knn(config: TrainConfig) -> float:
    """kNN top-1 of the model ``train`` would start from (same seed), before any step."""
    validate(config)
    strategy = make_strategy(config.strategy)
    config = check_replicas(config, strategy.num_replicas_in_sync)
    run_data = train.load_data(config)
    steps_per_epoch = len(run_data.train) // config.batch_size
    spec = train.make_spec(config, run_data, config.epochs * steps_per_epoch)
    model = train.build_model(config, spec, steps_per_epoch, strategy)
    monitor = train.knn_monitor(config, run_data, None, None, Path(config.model_dir))
    monitor.set_model(model)
    return monitor.evaluate()["knn_top1"]


def epoch_records(model_dir: Path) -> list[dict[str, Any]]:
    """The ``"epoch"`` records of the run's metrics.jsonl, in order."""
    lines = (model_dir / METRICS_FILE).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "epoch"]


def run(model_dir: Path, dataset: Path) -> dict[str, Any]:
    """Trains (or, for random, only builds) and returns the kNN curve and the history."""
    config = protocol_config(dataset, model_dir)
    if FLAGS.method == "random":
        top1 = untrained_knn(config)
        return {"knn_curve": [(0, round(100.0 * top1, 2))], "history": {}}
    result = train.train(config)
    if result.exit_code != 0:
        raise SystemExit(f"training ended with status {result.summary.get('status')}")
    records = epoch_records(model_dir)
    history: dict[str, list[float]] = {}
    for record in records:
        for name, value in record.items():
            if name not in NOT_HISTORY:
                history.setdefault(name, []).append(round(float(value), 4))
    curve = [(r["epoch"], round(100.0 * r["knn_top1"], 2)) for r in records if "knn_top1" in r]
    for epoch, top1 in curve:
        print(f"epoch {epoch}: kNN top-1 {top1:.2f}%", flush=True)
    return {"knn_curve": curve, "history": history}


def main(argv: list[str]) -> None:
    try:
        rest = FLAGS(argv)
    except flags.Error as error:
        print(f"benchmarks.learning: error: {error}", file=sys.stderr)
        sys.exit(2)
    if len(rest) > 1:
        print(f"benchmarks.learning: error: unexpected arguments {rest[1:]}", file=sys.stderr)
        sys.exit(2)
    flags.FLAGS(rest[:1])  # absl's own flags (logging) at their defaults
    train.quiet_libraries()
    started = time.time()
    commit = git_commit()  # the code this run started with
    with tempfile.TemporaryDirectory(prefix="tfascl-learning-") as scratch:
        data = FLAGS.data
        subset, train_examples = subset_folder(
            data, FLAGS.max_train_examples, FLAGS.subset_seed, Path(scratch)
        )
        model_dir = Path(FLAGS.model_dir or Path(scratch) / "run")
        measured = run(model_dir, subset)
    curve = measured["knn_curve"]
    result = {
        "kind": "learning",
        "method": FLAGS.method,
        "seed": FLAGS.seed,
        "knn_top1": curve[-1][1],
        **measured,
        "settings": {name: FLAGS[name].value for name in SETTINGS},
        # Outside "settings" (the protocol shared by every method): the method's key view.
        "key_augment": FLAGS.key_augment,
        "train_examples": train_examples,
        "test_examples": len(open_images(data, "test")),
        "command": "python -m benchmarks.learning " + " ".join(argv[1:]),
        "seconds": round(time.time() - started, 1),
        "device": device_name(),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "git_commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    out = Path(FLAGS.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = (
        f"learning_{FLAGS.method}_w{FLAGS.backbone_width}_n{FLAGS.max_train_examples}"
        f"_e{FLAGS.epochs}_seed{FLAGS.seed}.json"
    )
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("method", "seed", "knn_top1", "seconds")}))


if __name__ == "__main__":
    main(sys.argv)
