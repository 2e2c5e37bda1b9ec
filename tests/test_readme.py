"""The README's Keras example runs, at a smaller size, and embeds as the CLI's kNN monitor does."""

import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfascl import callbacks, data, knn, runs

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_fit_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    block = re.search(r"## ASCL in a Keras notebook\n\n```python\n(.*?)```", text, re.S).group(1)
    small = (
        block.replace("width=16", "width=4")
        .replace("epochs=5", "epochs=1")
        .replace(
            'load_images("digits", "train")', 'load_images("digits", "train", max_examples=256)'
        )
    )
    assert small != block, "the README example changed shape; update this test"
    monkeypatch.chdir(tmp_path)  # the example writes ascl.keras and ascl_serving/
    namespace = {}
    exec(compile(small, "README.md", "exec"), namespace)
    model, features, train, test = (namespace[k] for k in ("model", "features", "train", "test"))
    assert features.shape == (360, 8 * 4)
    assert int(model.queue.pointer.numpy()) == (256 // 128 * 128) % 1024
    assert "knn_top1" in model.history.history
    assert (tmp_path / "ascl.keras").is_file()
    assert (tmp_path / "ascl_serving" / "saved_model.pb").is_file()

    # The same weights through the command line's path: run.json + checkpoint, the
    # model tfascl-train builds, the kNN monitor over eval_dataset as tfascl-train
    # makes it (k=200, t=0.1, each set's own statistics).
    spec = runs.RunSpec(
        method="ascl",
        backbone_width=4,
        image_size=32,
        queue_size=1024,
        batch_size=128,
        mean=train.mean,
        std=train.std,
    )
    runs.save_spec(spec, tmp_path / "run")
    model.checkpoint().save(str(runs.checkpoint_dir(tmp_path / "run") / "ckpt"))
    restored, _, _ = runs.restore_model(tmp_path / "run")
    monitor = callbacks.KnnMonitor(
        data.eval_dataset(train, 256, 32), data.eval_dataset(test, 256, 32), 10, k=200
    )
    monitor.set_model(restored)
    cli = monitor.evaluate()

    # The example's features are the monitor's query features...
    test_features, test_labels = knn.feature_extractor(restored)(data.eval_dataset(test, 256, 32))
    np.testing.assert_allclose(features, test_features, atol=1e-5)
    np.testing.assert_array_equal(test_labels, test.labels)
    # ...and with the bank embedded the same way give the monitor's accuracy.
    notebook = knn.knn_accuracy(
        model.embed(train.images), train.labels, features, test.labels, 10, k=200
    )
    assert notebook["top1"] == cli["knn_top1"] and notebook["top5"] == cli["knn_top5"]
    # Without the mean/std (what the example did before) the features are not these.
    raw = tf.math.l2_normalize(model.predict(test.images / 255.0, verbose=0), axis=1)
    assert np.abs(raw.numpy() - features).max() > 1e-2
