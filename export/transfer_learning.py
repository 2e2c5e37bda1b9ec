"""Transfer learning from a tfascl export with plain Keras: a classifier on the encoder.

The exported SavedModel is wrapped in ``keras.layers.TFSMLayer``; a linear
classifier goes on its ``embedding`` output and the whole model is fine-tuned on
labelled images (``--freeze`` trains the classifier alone: a linear probe).
Needs TensorFlow and Keras only, not tfascl.

    python export/transfer_learning.py --export runs/default/export --steps 100
    python export/transfer_learning.py --export runs/default/export/1 \\
        --data /work/shared/datasets/cifar10 --endpoint preprocessed --freeze

``--data`` is an image folder (``<split>/<class>/*.jpg``, e.g. the CIFAR-10 JPEG
copy; its ``train`` and ``test`` splits are used when present) or ``digits``
(scikit-learn's 8×8 digits, upscaled to RGB).

Endpoints: ``serving_default`` takes the raw uint8 images and does the crop,
resize and normalisation inside the SavedModel; ``preprocessed`` takes float32
images already at the training size and normalised, which this script does
with the statistics in ``assets.extra/metadata.json``.

Fine-tuning through ``TFSMLayer`` updates the encoder's weights, but its batch
norm layers stay in inference mode (the export has no training-mode function):
their moving statistics are those of pre-training. For full Keras control
(training-mode BN, freezing single layers), load ``assets.extra/backbone.keras``
with ``keras.saving.load_model`` instead.

The last line printed is a JSON summary of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

ENDPOINTS = ("serving_default", "preprocessed")


def version_dir(path: str) -> Path:
    """``path`` itself if it is a SavedModel, else its highest-numbered version directory."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = (
        sorted(
            (int(p.name) for p in path.iterdir() if p.name.isdigit() and p.is_dir()),
            reverse=True,
        )
        if path.is_dir()
        else []
    )
    if not versions:
        sys.exit(f"no SavedModel in {path} (neither saved_model.pb nor a version directory)")
    return path / str(versions[0])


def load_folder(root: Path, per_class: int, seed: int) -> tuple[dict, list[str]]:
    """Up to ``per_class`` JPEG/PNG images per class of each split, as uint8 arrays."""
    splits = [s for s in ("train", "test") if (root / s).is_dir()] or [""]
    classes = sorted(p.name for p in (root / splits[0]).iterdir() if p.is_dir())
    if not classes:
        sys.exit(f"no class folders in {root / splits[0]}")
    rng = np.random.default_rng(seed)
    data = {}
    for split in splits:
        images, labels = [], []
        for label, name in enumerate(classes):
            files = sorted((root / split / name).glob("*.[jpJP][pnPN]*[gG]"))
            for file in rng.permutation(files)[:per_class]:
                images.append(tf.io.decode_image(tf.io.read_file(str(file)), channels=3).numpy())
                labels.append(label)
        data[split or "train"] = (np.stack(images), np.array(labels))
    if "test" not in data:  # one folder: hold out a fifth
        images, labels = data["train"]
        order = rng.permutation(len(labels))
        cut = len(order) // 5
        data = {
            "train": (images[order[cut:]], labels[order[cut:]]),
            "test": (images[order[:cut]], labels[order[:cut]]),
        }
    return data, classes


def load_digits(per_class: int, seed: int) -> tuple[dict, list[str]]:
    """scikit-learn's digits: 8×8 grey levels 0–16, upscaled to 32×32 RGB uint8."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)[..., None].repeat(3, axis=-1)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in range(10):
        index = rng.permutation(np.flatnonzero(digits.target == label))
        train += list(index[:per_class])
        test += list(index[per_class : per_class + max(per_class // 4, 1)])
    return {
        "train": (images[train], digits.target[train]),
        "test": (images[test], digits.target[test]),
    }, [str(d) for d in range(10)]


def preprocess(images: np.ndarray, metadata: dict) -> np.ndarray:
    """For the ``preprocessed`` endpoint, what ``serving_default`` does in its graph:
    central square crop, antialiased bilinear resize, ``(x / 255 − mean) / std``.

    The crop here starts on a whole pixel; the SavedModel's is continuous, so the
    two differ by half a pixel when the sides differ by an odd number of pixels."""
    size = metadata["image_size"]
    height, width = images.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    x = tf.image.resize(
        images[:, top : top + side, left : left + side].astype(np.float32),
        [size, size],
        antialias=True,
    )
    return ((x / 255.0 - metadata["mean"]) / metadata["std"]).numpy().astype(np.float32)


class EncoderLayer(keras.layers.TFSMLayer):
    """``TFSMLayer`` whose weights can be fine-tuned with optimizers that keep slots.

    Keras 3.15's ``TFSMLayer`` names its weights after the ``tf.Variable`` s, ":0"
    included, and optimizers name their slots after the weights: Adam or SGD with
    momentum then fail with "'..._kernel:0_momentum' is not a valid scope name", for
    any SavedModel. Dropping the suffix is the whole fix; should a later Keras rename
    the hook below, this class is a plain ``TFSMLayer``.
    """

    def _add_existing_weight(self, weight: tf.Variable) -> None:
        variable = keras.Variable(
            initializer=weight,  # wraps the SavedModel's variable itself, not a copy
            trainable=weight.trainable,
            dtype=weight.dtype,
            shape=weight.shape,
            name=weight.name.split(":")[0].replace("/", "_"),
        )
        self._track_variable(variable)


def build_classifier(
    saved_model: Path, endpoint: str, num_classes: int, image_size: int, freeze: bool
) -> tuple[keras.Model, keras.layers.Layer]:
    encoder = EncoderLayer(str(saved_model), call_endpoint=endpoint, trainable=not freeze)
    if endpoint == "serving_default":
        inputs = keras.Input((None, None, 3), dtype="uint8", name="images")
    else:
        inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="images")
    embedding = encoder(inputs)["embedding"]
    logits = keras.layers.Dense(num_classes, name="classifier")(embedding)
    return keras.Model(inputs, logits), encoder


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", required=True, help="export_dir or one of its versions")
    parser.add_argument("--data", default="digits", help="image folder, or 'digits'")
    parser.add_argument("--endpoint", default="serving_default", choices=ENDPOINTS)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--per_class", type=int, default=100, help="training images per class")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--freeze", action="store_true", help="train the classifier only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    saved_model = version_dir(args.export)
    metadata = json.loads((saved_model / "assets.extra" / "metadata.json").read_text())
    if args.data == "digits":
        data, classes = load_digits(args.per_class, args.seed)
    else:
        data, classes = load_folder(Path(args.data), args.per_class, args.seed)
    if args.endpoint == "preprocessed":
        data = {split: (preprocess(x, metadata), y) for split, (x, y) in data.items()}

    model, encoder = build_classifier(
        saved_model, args.endpoint, len(classes), metadata["image_size"], args.freeze
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    before = [w.numpy().copy() for w in encoder.weights]
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    train = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(len(y_train), seed=args.seed)
        .repeat()
        .batch(args.batch_size)
    )
    # The dataset is shuffled already.
    history = model.fit(train, steps_per_epoch=args.steps, epochs=1, shuffle=False, verbose=2)
    # Called directly rather than through evaluate(): no second graph to trace.
    logits = np.concatenate(
        [model(x_test[i : i + args.batch_size]) for i in range(0, len(y_test), args.batch_size)]
    )
    accuracy = float(np.mean(logits.argmax(axis=1) == y_test))
    change = max(float(np.abs(w.numpy() - b).max()) for w, b in zip(encoder.weights, before))
    summary = {
        "saved_model": str(saved_model),
        "endpoint": args.endpoint,
        "classes": len(classes),
        "train_images": len(y_train),
        "test_images": len(y_test),
        "steps": args.steps,
        "loss": float(history.history["loss"][-1]),
        "test_accuracy": float(accuracy),
        "encoder_weights": len(encoder.weights),
        "trainable_encoder_weights": len(encoder.trainable_weights),
        "encoder_max_change": change,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
