"""tfascl-train on streamed input: a folder above 2 GB decoded trains in bounded memory,
--input=auto decides before decoding, a killed streaming run resumes exactly, and the
ImageNet and STL-10 recipes run on small stand-ins; a TFDS split streams too."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import REPO, TINY_RUN_FLAGS, logged_steps, python_env, run_python
from test_train_resume import latest_step

from benchmarks.image_folder import write_image_folder
from tfascl import train

# Runs tfascl-train in this process and prints its peak resident memory last. VmHWM is
# this process's own high-water mark; getrusage's ru_maxrss would also count the memory of
# the pytest process it was forked from (Linux carries it across exec).
PEAK_RSS = """
import sys
from tfascl import train
sys.argv = ["tfascl-train", *sys.argv[1:]]
try:
    train.run()
except SystemExit as stop:
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()
    print("peak_rss_bytes", int(status[0]) * 1024)
    raise
"""


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
    """1,100 JPEGs of 820 x 820: 2.2 GB decoded, about 40 MB on disk."""
    root = tmp_path_factory.mktemp("big")
    write_image_folder(root, 1100, [(820, 820)], classes=4, quality=80)
    return root


def test_folder_above_2gb_streams_in_less_memory_than_its_decoded_size(big_folder, tmp_path):
    decoded = 1100 * 820 * 820 * 3
    assert decoded > 2 * 2**30
    flags = [*TINY_RUN_FLAGS, f"--dataset={big_folder}", "--batch_size=64", "--queue_size=128",
             "--epochs=1", "--noexport", "--knn_every=0"]  # fmt: skip
    result = run_python("-c", PEAK_RSS, *flags, "--input=stream", f"--model_dir={tmp_path / 's'}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Input: stream (--input=stream)" in result.stdout
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["completed"] and summary["steps"] == 1100 // 64
    peak = int(result.stdout.split("peak_rss_bytes")[-1].split()[0])
    assert peak < decoded, (peak, decoded)
    # auto decides from the file headers, before decoding anything: over the budget, stream.
    result = run_python(
        "-m", "tfascl.train", *flags, "--memory_budget_gb=2", f"--model_dir={tmp_path / 'a'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("Input:"))
    assert line.startswith("Input: stream (1,100 images, about 2.22 GB") and "does not fit" in line
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["completed"]


STREAM_RUN = (*TINY_RUN_FLAGS, "--input=stream", "--epochs=4", "--warmup_epochs=1",
              "--knn_every=0", "--log_every=1", "--checkpoint_every=3", "--noexport")  # fmt: skip


def test_killed_streaming_run_resumes_and_logs_each_step_once(tmp_path):
    write_image_folder(tmp_path / "data", 80, [(60, 80), (90, 70)], classes=2)
    (tmp_path / "data" / "train" / "c0" / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    model_dir = tmp_path / "run"
    flags = [*STREAM_RUN, f"--dataset={tmp_path / 'data'}", f"--model_dir={model_dir}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "tfascl.train", *flags],
        env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.time() + 240
    try:
        while not ((step := latest_step(model_dir)) and step >= 6 and step % 5):
            assert process.poll() is None, process.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "the run never got there"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = latest_step(model_dir)
    assert 6 <= killed_at < 20
    result = run_python("-m", "tfascl.train", *flags)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"at step {killed_at} (" in result.stdout
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["steps"] == summary["total_steps"] == 4 * (81 // 16)
    assert logged_steps(model_dir) == list(range(1, 21))
    # The broken file is named once per epoch trained after the resume, not once per read.
    named = [x for x in result.stderr.splitlines() if "could not be decoded" in x]
    assert named and all(x.endswith(": c0/broken.jpg") and "skipped 1 of" in x for x in named)
    assert len(named) == len({x.split("epoch ")[1].split(":")[0] for x in named})


def recipe_flags(name, dataset, *extra):
    return (f"--flagfile={REPO / 'flags' / name}", f"--dataset={dataset}", "--backbone_width=4",
            "--projector_dims=32,16", "--noprogress_bar", "--nojit_compile", "--nojit_augment",
            "--epochs=1", "--warmup_epochs=0", "--noexport", *extra)  # fmt: skip


def test_imagenet_recipe_streams_a_folder_of_varied_images(tmp_path):
    sizes = [(375, 500), (500, 333), (240, 320), (400, 400), (333, 500)]
    write_image_folder(tmp_path / "imagenet", 24, sizes, classes=3)
    write_image_folder(tmp_path / "imagenet", 12, sizes, classes=3, split="val", seed=1)
    flags = recipe_flags(
        "imagenet_ascl.flags", tmp_path / "imagenet", "--image_size=64", "--batch_size=8",
        "--queue_size=16", "--max_train_examples=16", "--test_split=val", "--knn_k=5",
        "--num_splits=2", f"--model_dir={tmp_path / 'run'}",
    )  # fmt: skip
    result = run_python("-m", "tfascl.train", *flags)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Input: stream (--input=stream)" in result.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["completed"] and summary["steps"] == 2
    assert summary["final_knn_top1"] is not None
    saved = json.loads((tmp_path / "run" / "flags.json").read_text())
    assert saved["backbone"] == "resnet50" and saved["eval_crop"] == 0.875


def test_stl10_recipe_trains_on_train_plus_unlabelled(tmp_path):
    root = tmp_path / "stl10"
    write_image_folder(root, 16, [(96, 96)], classes=2, split="train")
    write_image_folder(root, 32, [(96, 96)], split="unlabelled", labelled=False, seed=1)
    write_image_folder(root, 8, [(96, 96)], classes=2, split="test", seed=2)
    flags = recipe_flags(
        "stl10_ascl.flags", root, "--batch_size=16", "--queue_size=32", "--knn_k=5",
        "--num_splits=2", "--image_size=32", f"--model_dir={tmp_path / 'run'}",
    )  # fmt: skip
    result = run_python("-m", "tfascl.train", *flags)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 48 // 16  # labelled and unlabelled images together
    assert summary["final_knn_top1"] is not None  # the bank: the 16 labelled images


def test_streaming_bad_input_is_one_line_before_anything_is_built(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    flags = (*TINY_RUN_FLAGS, "--input=stream", f"--model_dir={tmp_path / 'run'}")
    result = run_python("-m", "tfascl.train", *flags, f"--dataset={tmp_path / 'empty'}")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "No images in" in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()
    result = run_python(
        "-m", "tfascl.train", *flags, "--dataset=cifar10", f"--data_dir={tmp_path / 'tfds'}"
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "not prepared" in errors[0], result.stderr[-2000:]


class TfasclStreamedImages(tfds.core.GeneratorBasedBuilder):
    """A TFDS dataset prepared on the spot: 40 train and 12 test images of 20 px, 2 classes."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["dark", "light"]),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(40, 0), "test": self._generate_examples(12, 1)}

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for i in range(count):
            image = rng.integers(0, 100, (20, 20, 3), np.uint8) + 120 * (i % 2)
            yield i, {"image": image.astype(np.uint8), "label": i % 2}


def test_streamed_tfds_split_trains_with_its_knn_monitor(tmp_path, capsys):
    # A TFDS split streamed has no file list (ImageFiles.paths is None): the training stream
    # reads its records through TFDS, and there is no file to name in a skipped-files report.
    data_dir = str(tmp_path / "tfds")
    TfasclStreamedImages(data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    config = train.config_from_args([
        *TINY_RUN_FLAGS, "--dataset=tfascl_streamed_images", f"--data_dir={data_dir}",
        "--input=stream", "--epochs=2", "--warmup_epochs=0", "--knn_k=5", "--noexport",
        f"--model_dir={tmp_path / 'run'}",
    ])  # fmt: skip
    result = train.train(config)
    out = capsys.readouterr().out
    assert result.exit_code == 0, out[-2000:]
    assert "Input: stream (--input=stream)" in out
    assert "kNN monitor: bank = train (40 images), test = test (12)" in out
    assert result.summary["completed"] and result.summary["steps"] == 2 * (40 // 16)
    assert result.summary["final_knn_top1"] is not None


def test_auto_input_decides_from_headers_size_and_budget(tmp_path):
    from tfascl import train

    write_image_folder(tmp_path / "same", 20, [(40, 40)])
    write_image_folder(tmp_path / "varied", 20, [(40, 40), (30, 60)])
    same = train.TrainConfig(dataset=str(tmp_path / "same"))
    assert train.choose_input(same)[0] == "memory"
    mode, why = train.choose_input(train.TrainConfig(dataset=str(tmp_path / "same"),
                                                     memory_budget_gb=1e-4))  # fmt: skip
    assert mode == "stream" and "does not fit" in why  # 2 x 96 kB > 100 kB
    mode, why = train.choose_input(train.TrainConfig(dataset=str(tmp_path / "varied")))
    assert mode == "stream" and "differ in size" in why
    fitted = train.TrainConfig(dataset=str(tmp_path / "varied"), load_size=32)
    assert train.choose_input(fitted)[0] == "memory"
    assert train.choose_input(train.TrainConfig(input="memory"))[0] == "memory"


@pytest.mark.slow
def test_bad_and_ignored_files_are_named_on_lines_of_their_own_and_running_out_stops(tmp_path):
    # 48 JPEGs, half of them bad (12 empty, 12 text named .jpg), and a file of an extension
    # tfascl does not read. Batches of 16: 3 steps an epoch, 6 in all; the stream (two
    # epochs and a spare) holds 72 good images, 4 batches: it runs out in epoch 2.
    root = tmp_path / "data"
    paths = write_image_folder(root, 48, [(40, 40)], classes=2)
    write_image_folder(root, 16, [(40, 40)], classes=2, split="test", seed=1)
    for number, path in enumerate(sorted(paths)[::2]):
        Path(path).write_bytes(b"" if number < 12 else b"this is text, not a JPEG")
    (root / "train" / "c1" / "x.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    flags = [f for f in TINY_RUN_FLAGS if f != "--noprogress_bar"]  # the bar, as a user sees it
    flags += ["--input=stream", "--epochs=2", "--warmup_epochs=0", "--knn_every=1", "--knn_k=5",
              "--noexport", f"--dataset={root}", f"--model_dir={tmp_path / 'run'}"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "tfascl.train", *flags],
        env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
    )  # fmt: skip
    # stdout and stderr in the order they reach a terminal; bytes, so that the bar's "\r"
    # redraws stay as they are (text mode would turn them into line breaks).
    console = result.stdout.decode()
    assert result.returncode == 1, console[-3000:]
    lines = console.split("\n")
    # Each report of ours starts a line: none is written into Keras's progress bar.
    reports = {
        "could not be decoded": "warning: epoch ",
        "tfascl does not read": "warning: ",
        "ran out of data in epoch": "warning: the input ran out of data",
        "kNN top-1 after epoch": "kNN top-1 after epoch",
        "randomly initialised encoder": "kNN top-1 of the randomly initialised encoder",
    }
    for marker, start in reports.items():
        found = [line for line in lines if marker in line]
        assert found, (marker, console[-3000:])
        assert all(line.startswith(start) for line in found), (marker, found)
    # Both epochs name the 24 bad files (20 by name); the ignored file is named once.
    skipped = [line for line in lines if "could not be decoded" in line]
    assert [line.split(":")[1] for line in skipped] == [" epoch 1", " epoch 2"]
    assert all("skipped 24 of 48 files" in line and "and 4 more" in line for line in skipped)
    (ignored,) = [line for line in lines if "tfascl does not read" in line]
    assert "ignored 1 file with an extension" in ignored and ignored.endswith(": c1/x.heic")
    # Running out is said, recorded and not "Done" (the optimizer's count of steps: the call
    # that meets the end of the data may count one more than the four whole batches).
    said = r"ran out of data in epoch 2 after \d of its 3 steps \(at step (\d)\)"
    ran_out = re.search(said, console)
    assert ran_out, console[-3000:]
    steps = int(ran_out.group(1))
    assert steps in (4, 5)
    assert f"Stopped: the input ran out of data at step {steps} of 6" in console
    assert "Done:" not in console and "Your input ran out of data" not in console
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["status"], summary["completed"]) == ("out_of_data", False)
    assert (summary["steps"], summary["total_steps"]) == (steps, 6)
