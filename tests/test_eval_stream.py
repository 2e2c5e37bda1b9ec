"""tfascl-eval on data sets of any size: streamed splits give the in-memory results, broken
files are skipped with their labels, --input=auto decides, no pixels in any graph."""

import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, run_python, tiny_spec
from test_data_stream import const_sizes

from tfascl import data, runs
from tfascl.evaluation import (
    EvalInputError,
    LinearConfig,
    datasets,
    evaluate,
    linear_batches,
    load_encoder,
    neighbors,
)

SIZE = 32  # CIFAR-10's own size: neither path resizes, so their pixels are the same


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    # Folder loads cache decoded arrays and statistics; keep them out of ~/.cache.
    monkeypatch.setenv("TFASCL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """An untrained 4-channel ResNet-18 saved as a run: its features are as good as any."""
    model_dir = tmp_path_factory.mktemp("runs") / "ascl"
    spec = tiny_spec(image_size=SIZE, dataset="cifar10", num_classes=10)
    runs.save_spec(spec, model_dir)
    keras.utils.set_random_seed(0)  # the same weights whatever ran before in this process
    model = spec.build_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.checkpoint().save(str(runs.checkpoint_dir(model_dir) / "ckpt"))
    return model_dir


def subset_folder(cifar10_dir, root, per_class=(12, 6)):
    """root/{train,test}/<class>/ of symlinks to the first real CIFAR-10 JPEGs of each class."""
    for split, count in zip(("train", "test"), per_class):
        for class_dir in sorted((cifar10_dir / split).iterdir()):
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            for path in sorted(class_dir.iterdir())[:count]:
                os.symlink(path, target / path.name)
    return root


def knn(run_dir, folder, **settings):
    settings = {"knn_k": 20, "batch_size": 50, "write": False, **settings}
    return evaluate("knn", model_dir=run_dir, dataset=str(folder), **settings)


def test_streamed_knn_equals_memory_knn_and_skips_a_broken_file(
    run_dir, cifar10_dir, tmp_path, capfd
):
    folder = subset_folder(cifar10_dir, tmp_path / "cifar")
    memory = knn(run_dir, folder, input="memory")
    streamed = knn(run_dir, folder, input="stream")
    assert memory["input"]["mode"] == "memory" and streamed["input"]["mode"] == "stream"
    assert streamed["num_train"] == memory["num_train"] == 120
    assert streamed["num_test"] == memory["num_test"] == 60
    for name in ("top1", "top5"):
        assert streamed["metrics"][name] == pytest.approx(memory["metrics"][name], abs=1e-6)
    assert "skipped" not in streamed

    # The features themselves, not only the accuracies: same decode, same pixels.
    encoder = load_encoder(run_dir)
    files = datasets.open_labelled(str(folder), "test")
    images = datasets.load_labelled(str(folder), "test")
    from_files, file_labels, _ = datasets.embed_split(encoder, files, 16)
    from_memory, memory_labels, _ = datasets.embed_split(encoder, images, 16)
    np.testing.assert_array_equal(file_labels, memory_labels)
    np.testing.assert_allclose(from_files, from_memory, rtol=1e-5, atol=1e-5)
    assert np.std(from_files, axis=0).max() > 1e-3  # features that tell images apart

    # A broken JPEG in the bank: left out with its label, named once, the rest unchanged.
    broken = folder / "train" / "airplane" / "zz_broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 300)
    capfd.readouterr()
    damaged = knn(run_dir, folder, input="stream")
    err = capfd.readouterr().err
    assert damaged["skipped"] == {"train": [str(broken)]}
    assert damaged["num_train"] == 120
    assert err.count("zz_broken.jpg") == 1 and "skipped 1 of 121 files" in err
    for name in ("top1", "top5"):
        assert damaged["metrics"][name] == pytest.approx(memory["metrics"][name], abs=1e-6)


def test_streamed_linear_fast_equals_memory_linear_fast(run_dir, cifar10_dir, tmp_path):
    folder = subset_folder(cifar10_dir, tmp_path / "cifar", per_class=(6, 3))
    linear = LinearConfig(fast=True, epochs=4, batch_size=16, learning_rate=0.001)
    entries = [
        evaluate("linear", model_dir=run_dir, dataset=str(folder), linear=linear, input=mode,
                 batch_size=32, write=False)
        for mode in ("memory", "stream")
    ]  # fmt: skip
    memory, streamed = ([record["loss"] for record in entry["history"]] for entry in entries)
    np.testing.assert_allclose(streamed, memory, rtol=1e-4)
    assert memory[-1] < memory[0]  # it trained
    for name in ("top1_final", "top5_final"):
        assert entries[1]["metrics"][name] == pytest.approx(entries[0]["metrics"][name], abs=1e-6)


def test_auto_input_streams_over_a_tiny_budget(run_dir, cifar10_dir, tmp_path, capsys):
    from absl import flags

    from tfascl.evaluation import cli as app

    folder = subset_folder(cifar10_dir, tmp_path / "cifar", per_class=(3, 2))
    values = app.define_flags(flags.FlagValues())
    values(["tfascl-eval", f"--model_dir={run_dir}", f"--dataset={folder}", "--knn_k=5",
            "--memory_budget_gb=1e-5", "--nowrite_results"])  # fmt: skip
    app.run_with(values)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("input:")]
    # 50 images x 3 kB decoded: twice that is over 10 kB
    assert len(lines) == 1 and lines[0].startswith("input: stream (50 images"), lines
    assert "does not fit the memory budget of 0.0 GB" in lines[0]
    # ...and with the default budget (half the RAM) the same folder is decoded in memory.
    entry = knn(run_dir, folder, knn_k=5, max_train_examples=20)
    assert entry["input"]["mode"] == "memory" and "fits" in entry["input"]["why"]
    # Neighbours pictures training images, so it cannot stream: auto says so rather than
    # decoding (the augmented linear probe streams: tests/test_linear_stream.py).
    with pytest.raises(EvalInputError, match="--protocol=neighbors needs the images in memory"):
        evaluate("neighbors", model_dir=run_dir, dataset=str(folder), memory_budget_gb=1e-5)


def captured_sizes(dataset):
    """Bytes of every tensor the dataset's functions (nested too) capture by value.

    A captured eager tensor (the old ``tf.constant(images)`` made outside the function) is
    a placeholder in the function graph, so ``const_sizes`` misses it; it is passed by
    value and becomes a Const node whenever the dataset graph is serialised. A host
    variable is captured as a resource handle: no bytes of its contents.
    """
    sizes, pending = [], [dataset]
    while pending:
        current = pending.pop()
        pending.extend(current._inputs())
        for wrapper in current._functions():
            for tensor in wrapper.function.captured_inputs:
                if tensor.dtype != tf.resource:
                    sizes.append(int(np.prod(tensor.shape)) * tensor.dtype.size)
    return sizes


def large_captures(dataset):
    """The largest graph constant or by-value capture of a dataset's functions, in bytes."""
    return max(const_sizes(dataset) + captured_sizes(dataset), default=0)


def test_eval_pixels_never_become_graph_constants():
    # 3 MB of pixels: captured by value (the old pixel_batches' tf.constant), 3 MB.
    old = tf.constant(np.zeros((250, 64, 64, 3), np.uint8))
    assert large_captures(tf.data.Dataset.range(9).map(lambda i: old[i])) == 250 * 64 * 64 * 3
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (250, 64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 250)
    image_set = data.ImageSet(images, labels, [], (0.5,) * 3, (0.25,) * 3, "noise")
    batches = datasets.pixel_batches(images, 32, 100)
    assert large_captures(batches) < 1 << 20
    # ...and the batches are still the eval transform of the stored pixels.
    first = next(iter(batches)).numpy()
    expected = data.eval_transform(images[:100], 32, (0.0,) * 3, (1.0,) * 3).numpy()
    np.testing.assert_allclose(first, expected, atol=1e-6)
    augmented = linear_batches.augmented_batches(image_set, 64, 32, 0, False)
    assert large_captures(augmented) < 1 << 20
    features = rng.normal(size=(1000, 512)).astype(np.float32)  # 2 MB
    cached = linear_batches.feature_batches(features, labels.repeat(4), 100, 0)
    assert large_captures(cached) < 1 << 20
    batch, batch_labels = next(iter(cached))
    rows = [np.flatnonzero((features == row).all(axis=1))[0] for row in batch.numpy()]
    np.testing.assert_array_equal(batch_labels.numpy(), labels.repeat(4)[rows])


def test_streamed_neighbors_is_a_one_line_usage_error(run_dir):
    process = run_python(
        "-m", "tfascl.evaluation.cli", "--protocol=neighbors", "--input=stream",
        f"--model_dir={run_dir}", cwd=REPO,
    )  # fmt: skip
    assert process.returncode == 2, process.stderr[-2000:]
    errors = [line for line in process.stderr.splitlines() if "tfascl-eval: error" in line]
    assert errors == [f"tfascl-eval: error: {neighbors.STREAMED_NEIGHBORS_ERROR}"]
    assert "Traceback" not in process.stderr
    assert not Path(run_dir, "results.json").exists()
