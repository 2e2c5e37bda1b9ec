"""tfascl.export: a SavedModel that serves and transfers without tfascl.

One tiny run is trained and exported once per module; the checks that matter
most run in fresh Python processes that cannot import tfascl.
"""

import datetime
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_python, tiny_spec
from PIL import Image

from tfascl import export, runs

REPO = Path(__file__).resolve().parents[1]
SIZE = 16
MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)

# Run first in every fresh process: `import tfascl` must fail there even if tfascl
# is installed (an editable install puts the repo on sys.path through a .pth file,
# which neither a clean PYTHONPATH nor another cwd removes). A None entry in
# sys.modules makes every import of the package, and of its submodules, raise.
BLOCK_TFASCL = """
import sys
sys.modules["tfascl"] = None
try:
    import tfascl  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("tfascl is importable in the fresh process")
"""

FRESH_LOAD = r"""
import json
import re
import keras
import numpy as np
import tensorflow as tf

version_dir, inputs_path, outputs_path, docs_path = sys.argv[1:5]
inputs = np.load(inputs_path)
# The README's snippet, as written, with its two free names bound.
docs = open(docs_path).read()
snippet = re.search(r"<!-- snippet: load-and-embed.*?```python\n(.*?)```", docs, re.S).group(1)
namespace = {"path": version_dir, "uint8_images": inputs["images"]}
exec(snippet, namespace)
loaded = tf.saved_model.load(version_dir)
serve = loaded.signatures["serving_default"]
preprocessed = loaded.signatures["preprocessed"]
out = serve(images=tf.constant(inputs["images"]))
pre = preprocessed(images=tf.constant(inputs["normalised"]))
one = serve(images=tf.constant(inputs["images"][:1]))
many = serve(images=tf.constant(np.resize(inputs["images"], (256,) + inputs["images"].shape[1:])))
backbone = keras.saving.load_model(version_dir + "/assets.extra/backbone.keras")
np.savez(
    outputs_path,
    embedding=out["embedding"].numpy(),
    projection=out["projection"].numpy(),
    pre_embedding=pre["embedding"].numpy(),
    pre_projection=pre["projection"].numpy(),
    one=one["embedding"].numpy(),
    many=many["embedding"].numpy(),
    keras_features=backbone(inputs["normalised"], training=False).numpy(),
    snippet=namespace["out"]["embedding"].numpy(),
)
print(json.dumps({
    "keras_layers": sorted({type(layer).__name__ for layer in backbone.layers}),
    # The package itself or its submodules; pip's editable-install finder
    # (__editable___tfascl_*_finder) is not tfascl code and loads nothing of it.
    "tfascl_modules": sorted(
        m for m, v in sys.modules.items() if m.split(".")[0] == "tfascl" and v
    ),
}))
"""


def cifar_spec(**overrides):
    return tiny_spec(image_size=SIZE, dataset="cifar10", mean=MEAN, std=STD, **overrides)


def fresh_env():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def run_fresh(code, *args, cwd):
    """Runs code in a new interpreter where tfascl cannot be imported.

    -I (isolated) keeps the cwd and PYTHON* variables off sys.path; cwd is a
    temporary folder, not the repository; BLOCK_TFASCL covers installed copies.
    """
    result = subprocess.run(
        [sys.executable, "-I", "-c", BLOCK_TFASCL + code, *map(str, args)],
        cwd=cwd,
        env=fresh_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_cli(*args, cwd):
    return run_python("-m", "tfascl.export", *args, cwd=cwd, timeout=300)


def normalise(images):
    return ((images.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)).astype(
        np.float32
    )


def l2(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pillow_resize(images, size=SIZE):
    """The central square of uint8 images [N, H, W, 3], resized to ``size`` as Pillow's
    antialiased bilinear does, channel by channel in float: [N, size, size, 3] float32."""
    height, width = images.shape[1:3]
    side = min(height, width)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    return np.stack(
        [
            np.stack(
                [
                    np.asarray(
                        Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(
                            (size, size), Image.BILINEAR, box=box
                        )
                    )
                    for c in range(3)
                ],
                axis=-1,
            )
            for image in images
        ]
    )


def reference(model, normalised):
    """What the export must return: the in-process online encoder, L2-normalised."""
    features = model.backbone(normalised, training=False)
    return l2(features), l2(model.projector(features, training=False))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model_dir = root / "run"
    spec = cifar_spec()
    runs.save_spec(spec, model_dir)
    model = spec.build_model()
    # Eager: two steps cost less than tracing the train step.
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    rng = np.random.default_rng(0)
    views = tuple(rng.normal(size=(8, SIZE, SIZE, 3)).astype(np.float32) for _ in range(2))
    model.fit(views, np.zeros(8), batch_size=8, epochs=2, verbose=0)
    model.checkpoint().save(str(runs.checkpoint_dir(model_dir) / "ckpt"))
    export_dir = root / "serving"
    version_dir = export.export_backbone(model_dir, export_dir)
    images = rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    return SimpleNamespace(
        root=root,
        model=model,
        spec=spec,
        model_dir=model_dir,
        export_dir=export_dir,
        version_dir=version_dir,
        images=images,
        loaded=tf.saved_model.load(str(version_dir)),
    )


def test_layout_and_metadata(exported):
    assert exported.version_dir == exported.export_dir / "1"
    assert (exported.version_dir / "saved_model.pb").is_file()
    assert sorted(p.name for p in exported.export_dir.iterdir()) == ["1"]  # no staging left
    meta = json.loads((exported.version_dir / "assets.extra" / "metadata.json").read_text())
    model = exported.model
    assert meta["method"] == "ascl" and meta["dataset"] == "cifar10"
    assert meta["image_size"] == SIZE
    assert meta["mean"] == list(MEAN) and meta["std"] == list(STD)
    assert meta["feature_dim"] == model.backbone.output_shape[-1] == 32
    assert meta["projection_dim"] == 8
    assert meta["training_steps"] == int(model.optimizer.iterations.numpy()) == 2
    assert meta["checkpoint"] == str((runs.checkpoint_dir(exported.model_dir) / "ckpt-1").resolve())
    assert meta["tfascl_version"] and meta["version"] == 1
    assert datetime.datetime.fromisoformat(meta["exported_at"]).tzinfo is not None
    assert runs.RunSpec.from_dict(meta["run"]) == exported.spec
    # The .keras file names no tfascl class: plain Keras can rebuild it.
    with zipfile.ZipFile(exported.version_dir / "assets.extra" / "backbone.keras") as archive:
        assert "tfascl" not in archive.read("config.json").decode()


def test_fresh_process_without_tfascl_matches_the_model(exported, tmp_path):
    images = exported.images
    normalised = normalise(images)
    np.savez(tmp_path / "inputs.npz", images=images, normalised=normalised)
    docs = REPO / "docs" / "EXPORT.md"
    result = run_fresh(
        FRESH_LOAD, exported.version_dir, "inputs.npz", "out.npz", docs, cwd=tmp_path
    )
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["tfascl_modules"] == []
    assert "BatchNormalization" in info["keras_layers"]
    assert not any("Split" in name for name in info["keras_layers"])
    out = np.load(tmp_path / "out.npz")

    embedding, projection = reference(exported.model, normalised)
    # uint8 at the training size: the resampling is the identity, so both
    # signatures see the same input as the in-process model.
    for name, expected in [
        ("embedding", embedding),
        ("snippet", embedding),
        ("pre_embedding", embedding),
        ("projection", projection),
        ("pre_projection", projection),
    ]:
        assert out[name].dtype == np.float32
        np.testing.assert_allclose(out[name], expected, atol=1e-5, rtol=0, err_msg=name)
        np.testing.assert_allclose(np.linalg.norm(out[name], axis=1), 1.0, atol=1e-5)
    assert out["embedding"].shape == (5, 32) and out["projection"].shape == (5, 8)
    # Batches of 1 and 256 (inference BN: rows do not depend on the batch).
    assert out["one"].shape == (1, 32) and out["many"].shape == (256, 32)
    np.testing.assert_allclose(out["one"][0], embedding[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["many"][:5], embedding, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["many"][5:10], embedding, atol=1e-5, rtol=0)
    features = exported.model.backbone(normalised, training=False).numpy()
    np.testing.assert_allclose(out["keras_features"], features, atol=1e-5, rtol=0)


def test_only_the_online_encoder_is_exported(exported):
    model = exported.model
    online = {
        **{f"backbone/{v.path}": v.numpy() for v in model.backbone.weights},
        **{f"projector/{v.path}": v.numpy() for v in model.projector.weights},
    }
    for name in export.DEFAULT_SIGNATURE, export.PREPROCESSED_SIGNATURE:
        variables = exported.loaded.signatures[name].variables
        saved = {v.name.removesuffix(":0"): v.numpy() for v in variables}
        assert len(variables) == len(saved) == len(online)
        assert saved.keys() == online.keys()
        for key, value in saved.items():
            np.testing.assert_array_equal(value, online[key], err_msg=key)
    # The check above means something: training moved the momentum encoder away.
    assert any(
        not np.array_equal(k.numpy(), q.numpy())
        for k, q in zip(model.key_backbone.trainable_weights, model.backbone.trainable_weights)
    )
    stored = tf.train.list_variables(str(exported.version_dir / "variables" / "variables"))
    stored = [name for name, _ in stored]
    assert not [n for n in stored if re.search("key_|queue|optimizer|iteration", n)]
    values = [n for n in stored if n.endswith("VARIABLE_VALUE")]
    assert len(values) == len(online)


def test_resize_is_central_crop_and_pillow_bilinear(exported):
    """Other sizes: the central square, resized as Pillow's antialiased bilinear does."""
    serve = exported.loaded.signatures["serving_default"]
    preprocessed = exported.loaded.signatures["preprocessed"]
    rng = np.random.default_rng(1)
    for height, width in [(20, 27), (41, 36), (11, 10)]:
        images = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        resized = pillow_resize(images)
        expected = preprocessed(images=tf.constant(normalise(resized)))["embedding"].numpy()
        got = serve(images=tf.constant(images))["embedding"].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0, err_msg=f"{height}x{width}")


def test_wrong_inputs_fail_clearly_and_batches_of_1_and_256_work(exported):
    serve = exported.loaded.signatures["serving_default"]
    preprocessed = exported.loaded.signatures["preprocessed"]
    images = exported.images
    error = tf.errors.InvalidArgumentError
    with pytest.raises(error, match="expected to be a uint8 tensor but is a float tensor"):
        serve(images=tf.constant(images.astype(np.float32)))
    with pytest.raises(
        error, match=r"images must be uint8 \[N, H, W, 3\]; got shape\] \[16 16 3\]"
    ):
        serve(images=tf.constant(images[0]))
    with pytest.raises(error, match=r"images must be uint8 .*\] \[5 16 16 1\]"):
        serve(images=tf.constant(images[..., :1]))
    with pytest.raises(error, match=r"images must be uint8 .*\] \[1 0 5 3\]"):
        serve(images=tf.constant(np.zeros((1, 0, 5, 3), np.uint8)))
    with pytest.raises(error, match=r"images must be float32 \[N, 16, 16, 3\]; .*\] \[2 32 32 3\]"):
        preprocessed(images=tf.constant(np.zeros((2, 32, 32, 3), np.float32)))
    with pytest.raises(error, match="expected to be a float tensor but is a uint8 tensor"):
        preprocessed(images=tf.constant(images))
    for batch in 1, 256:
        out = serve(images=tf.constant(np.resize(images, (batch, SIZE, SIZE, 3))))
        assert out["embedding"].shape == (batch, 32) and out["projection"].shape == (batch, 8)
        assert np.all(np.isfinite(out["embedding"].numpy()))


def test_saved_model_cli_lists_both_signatures(exported):
    cli = Path(sys.executable).with_name("saved_model_cli")
    command = (
        [str(cli)]
        if cli.exists()
        else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    )
    result = subprocess.run(
        [*command, "show", "--all", "--dir", str(exported.version_dir)],
        env=fresh_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    signatures = {
        name: (body, method)
        for name, body, method in re.findall(
            r"signature_def\['(\w+)'\]:\n(.*?)Method name is: ?(\S*)", result.stdout, re.S
        )
    }
    assert signatures.keys() >= {"serving_default", "preprocessed"}

    def tensor(body, kind, name):
        match = re.search(
            rf"{kind}\['{name}'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", body
        )
        assert match, f"no {kind} {name} in\n{body}"
        return match.groups()

    for name, image_info in [
        ("serving_default", ("DT_UINT8", "(-1, -1, -1, 3)")),
        ("preprocessed", ("DT_FLOAT", f"(-1, {SIZE}, {SIZE}, 3)")),
    ]:
        body, method = signatures[name]
        assert method == "tensorflow/serving/predict"
        assert tensor(body, "inputs", "images") == image_info
        assert tensor(body, "outputs", "embedding") == ("DT_FLOAT", "(-1, 32)")
        assert tensor(body, "outputs", "projection") == ("DT_FLOAT", "(-1, 8)")


# Runs export/transfer_learning.py's main() with its loaders and classifier builder wrapped,
# so the test sees which files it read, the test images, the fine-tuned encoder's
# embeddings and the classifier's weights; the script's summary is the last line.
TRANSFER_RUN = r"""
import importlib.util
import json
import numpy as np
import tensorflow as tf

script, out_path, *argv = sys.argv[1:]
spec = importlib.util.spec_from_file_location("transfer_learning", script)
transfer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(transfer)
read, seen = [], {}
read_file = tf.io.read_file
tf.io.read_file = lambda path, *a, **k: read.append(str(path)) or read_file(path, *a, **k)
load_folder, build_classifier = transfer.load_folder, transfer.build_classifier
transfer.load_folder = lambda *a, **k: seen.setdefault("data", load_folder(*a, **k))
transfer.build_classifier = lambda *a, **k: seen.setdefault("model", build_classifier(*a, **k))
summary = transfer.main(argv)
(data, _), (model, encoder) = seen["data"], seen["model"]
images = data["test"][0]
exported = tf.saved_model.load(summary["saved_model"]).signatures["serving_default"]
kernel, bias = model.get_layer("classifier").get_weights()
np.savez(
    out_path,
    read=np.array(read),
    test_images=images,
    test_labels=data["test"][1],
    exported=exported(images=tf.constant(images))["embedding"].numpy(),
    tuned=encoder(tf.constant(images))["embedding"].numpy(),
    kernel=kernel,
    bias=bias,
)
print(json.dumps(summary))
"""


def test_transfer_learning_example_fine_tunes_through_tfsmlayer(exported, cifar10_dir, tmp_path):
    """On real CIFAR-10 (no fallback): the files read and their labels, the export's
    features of them against the in-memory encoder, and the reported test accuracy against
    the fine-tuned encoder and classifier, recomputed in float64 NumPy."""
    script = REPO / "export" / "transfer_learning.py"
    args = ["--export", exported.export_dir, "--data", cifar10_dir, "--steps", "2"]
    args += ["--batch_size", "8", "--per_class", "2"]
    result = run_fresh(TRANSFER_RUN, script, tmp_path / "out.npz", *args, cwd=tmp_path)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    out = np.load(tmp_path / "out.npz")
    assert summary["saved_model"] == str(exported.version_dir)
    assert summary["steps"] == 2 and summary["classes"] == 10
    assert summary["train_images"] == summary["test_images"] == 20

    # The images are the CIFAR-10 test files read, labelled by their class folder.
    classes = sorted(p.name for p in (cifar10_dir / "train").iterdir())
    test_files = [Path(p) for p in out["read"] if Path(p).parent.parent.name == "test"]
    labels = np.array([classes.index(p.parent.name) for p in test_files])
    assert len(test_files) == 20 and np.bincount(labels, minlength=10).tolist() == [2] * 10
    np.testing.assert_array_equal(out["test_labels"], labels)
    for file, image in zip(test_files, out["test_images"], strict=True):
        decoded = tf.io.decode_image(tf.io.read_file(str(file)), channels=3).numpy()
        np.testing.assert_array_equal(image, decoded, err_msg=str(file))

    # The export's embedding of these 32-px images: the in-memory online encoder on their
    # Pillow resize to 16 px, normalised with the run's statistics.
    features = exported.model.backbone(normalise(pillow_resize(out["test_images"])), training=False)
    np.testing.assert_allclose(out["exported"], l2(features), atol=1e-5, rtol=0)

    # The reported accuracy: the fine-tuned encoder and the classifier, in float64.
    logits = out["tuned"].astype(np.float64) @ out["kernel"].astype(np.float64) + out["bias"]
    assert summary["test_accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == labels))
    assert np.isfinite(summary["loss"])
    n_trainable = len(exported.model.backbone.trainable_weights) + len(
        exported.model.projector.trainable_weights
    )
    assert summary["trainable_encoder_weights"] == n_trainable
    # The gradient reached the SavedModel's own variables: fine-tuning, not a probe.
    assert summary["encoder_max_change"] > 0
    assert np.abs(out["tuned"] - out["exported"]).max() > 1e-6


def test_request_example_feeds_the_serving_signature(exported):
    request = json.loads((REPO / "export" / "request.json").read_text())
    assert request["signature_name"] == "serving_default"
    images = np.array(request["instances"])
    assert images.ndim == 4 and images.shape[-1] == 3
    assert images.min() >= 0 and images.max() <= 255
    out = exported.loaded.signatures["serving_default"](images=tf.constant(images, tf.uint8))
    assert out["embedding"].shape == (len(images), 32)

    spec = importlib.util.spec_from_file_location(
        "make_request", REPO / "export" / "make_request.py"
    )
    make_request = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_request)
    pixels = exported.images[:2]
    built = make_request.build_request(list(pixels))
    np.testing.assert_array_equal(np.array(built["instances"], np.uint8), pixels)
    with pytest.raises(ValueError, match="must share their size"):
        make_request.build_request([pixels[0], pixels[0][:8]])


def test_models_config_is_a_valid_model_server_config():
    """Parses export/models.config against the fields of TF Serving's ModelServerConfig."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="model_server_config_subset.proto", package="ts")

    def message(name, *fields):
        proto = file.message_type.add(name=name)
        for number, (fname, ftype, label, type_name) in enumerate(fields, 1):
            proto.field.add(name=fname, number=number, type=ftype, label=label, type_name=type_name)

    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    message("Latest", ("num_versions", field.TYPE_UINT32, optional, None))
    message("All")
    message("Specific", ("versions", field.TYPE_INT64, repeated, None))
    message(
        "ServableVersionPolicy",
        ("latest", field.TYPE_MESSAGE, optional, ".ts.Latest"),
        ("all", field.TYPE_MESSAGE, optional, ".ts.All"),
        ("specific", field.TYPE_MESSAGE, optional, ".ts.Specific"),
    )
    message(
        "ModelConfig",
        ("name", field.TYPE_STRING, optional, None),
        ("base_path", field.TYPE_STRING, optional, None),
        ("model_platform", field.TYPE_STRING, optional, None),
        ("model_version_policy", field.TYPE_MESSAGE, optional, ".ts.ServableVersionPolicy"),
    )
    message("ModelConfigList", ("config", field.TYPE_MESSAGE, repeated, ".ts.ModelConfig"))
    message(
        "ModelServerConfig",
        ("model_config_list", field.TYPE_MESSAGE, optional, ".ts.ModelConfigList"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    config_class = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("ts.ModelServerConfig")
    )
    config = text_format.Parse((REPO / "export" / "models.config").read_text(), config_class())
    (model,) = config.model_config_list.config
    assert model.name == "tfascl" and model.model_platform == "tensorflow"
    assert model.base_path.startswith("/") and model.model_version_policy.latest.num_versions == 1


def test_next_version_and_bad_versions(exported, tmp_path):
    assert export.next_version(tmp_path / "absent") == 1
    assert export.next_version(tmp_path) == 1
    for name in "1", "2", "10", "notes", ".tmp-11-1":
        (tmp_path / name).mkdir()
    (tmp_path / "12").write_text("a file, not a version")
    assert export.next_version(tmp_path) == 11
    for bad in -1, "3", 2.0, True:
        with pytest.raises(ValueError, match="version must be a non-negative integer"):
            export.export_backbone(exported.model_dir, tmp_path, version=bad)


def test_missing_run_or_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a tfascl model_dir"):
        export.export_backbone(tmp_path, tmp_path / "serving")
    runs.save_spec(cifar_spec(), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^no 'latest' checkpoint in .*checkpoints$"):
        export.export_backbone(tmp_path, tmp_path / "serving")
    with pytest.raises(FileNotFoundError, match="no 'best' checkpoint"):
        export.export_backbone(tmp_path, tmp_path / "serving", checkpoint="best")
    assert not (tmp_path / "serving").exists()


def test_checkpoint_without_the_model_is_a_clear_error(tmp_path):
    runs.save_spec(cifar_spec(), tmp_path)
    tf.train.Checkpoint(step=tf.Variable(3)).save(str(runs.checkpoint_dir(tmp_path) / "ckpt"))
    with pytest.raises(ValueError, match="does not hold this run's model"):
        export.export_backbone(tmp_path, tmp_path / "serving")
    assert not (tmp_path / "serving").exists()


def test_existing_version_is_a_clear_error(exported):
    with pytest.raises(FileExistsError, match=r"1 already exists: .*overwrite=True"):
        export.export_backbone(exported.model_dir, exported.export_dir, version=1)


def test_cli_overwrites_on_request_and_refuses_otherwise(exported, tmp_path):
    """The app end to end; overwrite=True replaces a version (its old files go)."""
    serving = tmp_path / "serving"
    shutil.copytree(exported.export_dir, serving)
    (serving / "1" / "stale.txt").write_text("from the old version")
    (serving / "3").mkdir()
    common = ["--model_dir", exported.model_dir, "--export_dir", serving]

    result = run_cli(*common, "--version", "1", cwd=tmp_path)
    assert result.returncode == 2  # a usage error, found before the model is built
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"tfascl-export: error: --version=1: {serving / '1'} already exists; choose another "
        "--version or pass --overwrite"
    )
    assert (serving / "1" / "stale.txt").exists()

    result = run_cli(
        *common, "--version", "1", "--overwrite", "--checkpoint", "ckpt-1", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(serving / "1")
    assert not (serving / "1" / "stale.txt").exists()
    assert sorted(p.name for p in serving.iterdir()) == ["1", "3"]  # nothing staged left
    loaded = tf.saved_model.load(str(serving / "1"))
    images = tf.constant(exported.images)
    np.testing.assert_allclose(
        loaded.signatures["serving_default"](images=images)["embedding"].numpy(),
        exported.loaded.signatures["serving_default"](images=images)["embedding"].numpy(),
        atol=1e-6,
    )
