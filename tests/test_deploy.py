"""Deployment: encoded images in (serving_bytes), ONNX and LiteRT files, a quiet start.

One tiny untrained run (with random batch-norm statistics, so that inference BN
is not the identity) is exported once per module with every format.
"""

import base64
import importlib.util
import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, tiny_spec
from PIL import Image
from test_export import run_fresh

from tfascl import export, runs

SIZE = 16
MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)
TOLERANCE = 1e-4  # max abs difference of L2-normalised embeddings
# What TensorFlow prints on start-up, before a tool's first line (Linux x86 builds).
STARTUP_MARKERS = ("oneDNN", "cpu_feature_guard", "absl::InitializeLog")


def encode(pixels, fmt, **options):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def pillow_rgb(data):
    """What serving_bytes should decode: Pillow's RGB pixels (GIF: the first frame)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), np.uint8)


def make_request_module():
    spec = importlib.util.spec_from_file_location(
        "make_request", REPO / "export" / "make_request.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    model_dir = root / "run"
    spec = tiny_spec(image_size=SIZE, dataset="cifar10", mean=MEAN, std=STD)
    runs.save_spec(spec, model_dir)
    model = spec.build_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(0)
    for encoder in model.backbone, model.projector:
        for layer in encoder.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                shape = layer.moving_mean.shape
                layer.moving_mean.assign(rng.normal(0, 0.2, shape).astype(np.float32))
                layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape).astype(np.float32))
    model.checkpoint().save(str(runs.checkpoint_dir(model_dir) / "ckpt"))
    version_dir = export.export_backbone(
        model_dir, root / "serving", formats=("saved_model", "onnx", "litert")
    )
    return version_dir


def test_serving_bytes_matches_serving_default_without_tfascl(exported, tmp_path):
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)) for _ in range(2)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    files = [
        encode(rng.integers(0, 256, (20, 27, 3), dtype=np.uint8), "JPEG", quality=90),
        encode(rng.integers(0, 256, (41, 36, 4), dtype=np.uint8), "PNG"),  # RGBA
        encode(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8), "PNG"),  # greyscale
        encode(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8), "BMP"),
        gif.getvalue(),
    ]
    # Each image decoded by Pillow, as the training data is: serving_bytes must
    # give what serving_default gives on these pixels.
    np.savez(
        tmp_path / "inputs.npz",
        files=np.array(files, dtype=object),
        **{f"pixels{i}": pillow_rgb(data) for i, data in enumerate(files)},
    )
    code = r"""
import json
import numpy as np
import tensorflow as tf

version_dir, = sys.argv[1:]
inputs = np.load("inputs.npz", allow_pickle=True)
files = list(inputs["files"])
m = tf.saved_model.load(version_dir)
out = m.signatures["serving_bytes"](image_bytes=tf.constant(files))
expected = [
    m.signatures["serving_default"](images=tf.constant(inputs[f"pixels{i}"][None]))
    for i in range(len(files))
]
try:
    m.signatures["serving_bytes"](image_bytes=tf.constant([files[0], b"GIF7 no image", files[1]]))
    error = None
except tf.errors.InvalidArgumentError as e:
    error = e.message
np.savez(
    "out.npz",
    embedding=out["embedding"].numpy(),
    projection=out["projection"].numpy(),
    expected_embedding=np.concatenate([e["embedding"].numpy() for e in expected]),
    expected_projection=np.concatenate([e["projection"].numpy() for e in expected]),
)
print(json.dumps({"error": error}))
"""
    result = run_fresh(code, exported, cwd=tmp_path)
    out = np.load(tmp_path / "out.npz")
    assert out["embedding"].shape == (5, 32) and out["projection"].shape == (5, 8)
    for name in "embedding", "projection":
        np.testing.assert_allclose(
            out[name], out[f"expected_{name}"], atol=TOLERANCE, rtol=0, err_msg=name
        )
    # Not trivially equal: the images differ, and so do their embeddings.
    assert np.abs(out["embedding"][0] - out["embedding"][1]).max() > 1e-2
    error = json.loads(result.stdout.strip().splitlines()[-1])["error"]
    assert "image_bytes[1] is not a JPEG, PNG, BMP or GIF image" in error


def test_serving_bytes_signature_and_metadata(exported):
    loaded = tf.saved_model.load(str(exported))
    signature = loaded.signatures["serving_bytes"]
    ((name, spec),) = signature.structured_input_signature[1].items()
    assert name == "image_bytes" and spec.dtype == tf.string and spec.shape.as_list() == [None]
    assert set(signature.structured_outputs) == {"embedding", "projection"}
    meta = json.loads((exported / "assets.extra" / "metadata.json").read_text())
    assert meta["signatures"]["serving_bytes"]["inputs"] == {"image_bytes": ["string", [None]]}
    for fmt, file in ("onnx", "model.onnx"), ("litert", "model.tflite"):
        entry = meta["portable"][fmt]
        assert entry["file"] == f"assets.extra/{file}"
        assert entry["inputs"] == {"images": ["uint8", [None, SIZE, SIZE, 3]]}
        assert (exported / entry["file"]).is_file()
    assert meta["mean"] == list(MEAN) and meta["std"] == list(STD)


def portable_inputs():
    rng = np.random.default_rng(2)
    return rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)


def saved_model_outputs(exported, images):
    serve = tf.saved_model.load(str(exported)).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}


def test_onnx_file_matches_the_saved_model(exported):
    import onnxruntime

    images = portable_inputs()
    expected = saved_model_outputs(exported, images)
    session = onnxruntime.InferenceSession(
        str(exported / "assets.extra" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (node,) = session.get_inputs()
    assert node.name == "images" and node.type == "tensor(uint8)"
    assert node.shape[1:] == [SIZE, SIZE, 3]
    names = [o.name for o in session.get_outputs()]
    assert sorted(names) == ["embedding", "projection"]
    for batch in images, images[:1]:
        got = dict(zip(names, session.run(names, {"images": batch})))
        for name in names:
            np.testing.assert_allclose(
                got[name], expected[name][: len(batch)], atol=TOLERANCE, rtol=0, err_msg=name
            )


def test_litert_file_matches_the_saved_model(exported):
    from ai_edge_litert.interpreter import Interpreter

    images = portable_inputs()
    expected = saved_model_outputs(exported, images)
    interpreter = Interpreter(model_path=str(exported / "assets.extra" / "model.tflite"))
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["images"], "outputs": ["embedding", "projection"]}
    }
    runner = interpreter.get_signature_runner()
    for batch in images, images[:1]:
        got = runner(images=batch)
        for name in "embedding", "projection":
            np.testing.assert_allclose(
                got[name], expected[name][: len(batch)], atol=TOLERANCE, rtol=0, err_msg=name
            )


def test_formats_are_checked_before_the_model_is_built(tmp_path):
    assert export.check_formats("litert,saved_model") == ("saved_model", "litert")
    with pytest.raises(ValueError, match="unknown export format jpeg"):
        export.check_formats(["saved_model", "jpeg"])
    with pytest.raises(ValueError, match="formats must include saved_model"):
        export.check_formats(["onnx"])
    model_dir = tmp_path / "run"
    runs.save_spec(tiny_spec(), model_dir)
    runs.checkpoint_dir(model_dir).mkdir(parents=True)
    (runs.checkpoint_dir(model_dir) / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    with pytest.raises(ValueError, match="formats must include saved_model"):
        export.export_backbone(model_dir, tmp_path / "out", formats=("onnx",))
    assert not (tmp_path / "out").exists()


def test_b64_request_carries_the_files(exported, tmp_path):
    make_request = make_request_module()
    rng = np.random.default_rng(3)
    files = [
        encode(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), "JPEG"),
        encode(rng.integers(0, 256, (10, 13, 3), dtype=np.uint8), "PNG"),
    ]
    paths = []
    for i, data in enumerate(files):
        paths.append(tmp_path / f"image{i}")
        paths[-1].write_bytes(data)
    make_request.main(["--b64", *map(str, paths), "--output", str(tmp_path / "request.json")])
    request = json.loads((tmp_path / "request.json").read_text())
    assert request["signature_name"] == "serving_bytes"
    sent = [base64.b64decode(instance["image_bytes"]["b64"]) for instance in request["instances"]]
    assert sent == files
    # What TF Serving does with it: the decoded strings into the signature.
    serve = tf.saved_model.load(str(exported)).signatures["serving_bytes"]
    assert serve(image_bytes=tf.constant(sent))["embedding"].shape == (2, 32)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(SystemExit, match=r"notes\.txt is not a JPEG, PNG, BMP or GIF image"):
        make_request.main(["--b64", str(paths[0]), str(tmp_path / "notes.txt")])


def launch(code, *args, level=None):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH")}
    env["PYTHONPATH"] = str(REPO)
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_commands_start_without_tensorflow_startup_lines():
    # The console script's body (setup.cfg points tfascl-train at tfascl_launch:train):
    # --help answers from flags parsed before TensorFlow is imported.
    train = (
        "import sys, tfascl_launch; sys.argv[0] = 'tfascl-train'\n"
        "try:\n    tfascl_launch.train()\n"
        "finally:\n    print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
    )
    result = launch(train, "--helpshort")  # absl exits 1 after the help
    assert "USAGE: tfascl-train" in result.stdout
    assert "tensorflow imported: False" in result.stdout
    assert not [m for m in STARTUP_MARKERS if m in result.stderr], result.stderr[-2000:]
    # absl logging (--verbosity) still reaches stderr; the start-up lines are held back
    # whether or not the user chose a C++ level, and a level the user chose is kept.
    app = (
        "import sys\n"
        "sys.modules['tfascl'] = None  # the launcher imports TensorFlow alone\n"
        "from tfascl_launch_body import quiet_tensorflow_import\n"
        "quiet_tensorflow_import()\n"
        "import os, tensorflow as tf\n"
        "from absl import app, logging\n"
        "def main(argv):\n"
        "    logging.info('the tool speaks')\n"
        "    print(os.environ['TF_CPP_MIN_LOG_LEVEL'], int(tf.constant(2) + 1))\n"
        "app.run(main)\n"
    )
    # tfascl._startup is plain Python: loaded by path here, with tfascl itself blocked.
    loader = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('tfascl_launch_body', "
        f"{str(REPO / 'tfascl' / '_startup.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "sys.modules['tfascl_launch_body'] = module\n"
    )
    quiet = launch(loader + app, "--verbosity=0")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stdout.split() == ["2", "3"]
    assert "the tool speaks" in quiet.stderr
    assert not [m for m in STARTUP_MARKERS if m in quiet.stderr], quiet.stderr[-2000:]
    chosen = launch(loader + app, "--verbosity=0", level="0")
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    assert chosen.stdout.split() == ["0", "3"]
    assert not [m for m in STARTUP_MARKERS if m in chosen.stderr], chosen.stderr[-2000:]
    if sys.platform == "linux":  # the lines exist here, so their absence above means something
        plain = launch(app.replace("from tfascl_launch_body import", "quiet_tensorflow_import = "
                                   "lambda: None  #"), "--verbosity=0", level="0")  # fmt: skip
        assert [m for m in STARTUP_MARKERS if m in plain.stderr], plain.stderr[-2000:]


def test_import_tfascl_and_python_m_answer_without_tensorflow():
    lazy = launch(
        "import sys, tfascl, tfascl.data, tfascl.evaluation, tfascl.train_config\n"
        "print('tensorflow' in sys.modules, tfascl.__version__ == tfascl._version.__version__)\n"
        "tfascl.build_model  # a model needs it: imported now\n"
        "print('tensorflow' in sys.modules)\n"
    )
    assert lazy.stdout.split() == ["False", "True", "True"], lazy.stderr[-2000:]
    for level in (None, "0", "3"):
        for args in (["--helpfull"], ["--method=swav"], ["--batch_size=abc"]):
            code = (
                "import runpy, sys\n"
                f"sys.argv = ['tfascl-train', *{args!r}]\n"
                "try:\n    runpy.run_module('tfascl.train', run_name='__main__')\n"
                "finally:\n    print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
            )
            result = launch(code, level=level)
            assert "tensorflow imported: False" in result.stdout, (level, args, result.stderr)
            assert result.returncode == (1 if args == ["--helpfull"] else 2), result.stderr
            if args != ["--helpfull"]:
                (line,) = result.stderr.strip().splitlines()
                assert line.startswith("tfascl-train: error: "), line
            assert not [m for m in STARTUP_MARKERS if m in result.stderr], result.stderr[-2000:]
