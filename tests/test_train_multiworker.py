"""Two workers on loopback (MultiWorkerMirroredStrategy through tfascl-train's code) end
with the same weights and queue; only the chief writes the run's files."""

import json
import socket
import subprocess
import sys

import numpy as np
from helpers import REPO, TINY_RUN_FLAGS, python_env

ARGS = (
    *TINY_RUN_FLAGS,
    "--strategy=multi_worker",
    "--method=ascl",
    "--max_train_examples=64",
    "--epochs=1",
    "--warmup_epochs=0",
    "--checkpoint_every=2",
)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_two_workers(tmp_path, *args):
    """Runs the two workers to the end; returns their .npz records (chief first)."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = python_env(TF_CONFIG=json.dumps(tf_config))
        command = [
            sys.executable,
            str(REPO / "tests" / "multiworker_train.py"),
            str(tmp_path / f"worker{index}.npz"),
            *args,
        ]
        log = open(tmp_path / f"worker{index}.log", "w")
        processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=log), log))
    try:
        for process, _ in processes:
            process.wait(timeout=400)
    finally:
        for process, log in processes:
            if process.poll() is None:
                process.kill()
            log.close()
    for index, (process, _) in enumerate(processes):
        log = (tmp_path / f"worker{index}.log").read_text()
        assert process.returncode == 0, log[-3000:]
    return [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]


def test_two_workers_end_with_the_same_weights_and_queue(tmp_path):
    model_dir = tmp_path / "run"
    chief, other = run_two_workers(tmp_path, *ARGS, f"--model_dir={model_dir}")
    assert int(chief["replicas"]) == 2 and int(chief["exit_code"]) == 0
    assert int(chief["steps"]) == int(other["steps"]) == 4  # 64 images / global batch 16
    names = [name for name in chief.files if name[:3].isdigit()]
    assert names == [name for name in other.files if name[:3].isdigit()]
    assert any("queue" in name for name in names)
    for name in names:
        np.testing.assert_allclose(chief[name], other[name], rtol=1e-6, atol=1e-6, err_msg=name)
    # The queue was written: the pointer went round (4 steps x 16 keys = 2 x 32).
    keys = next(chief[name] for name in names if name.endswith("queue.labels"))
    assert (keys >= 0).all()

    # The chief wrote the run; the other worker's checkpoints went to a scratch folder.
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["completed"]
    assert (model_dir / "checkpoints" / "ckpt-4.index").is_file()


def test_two_streaming_workers_read_disjoint_files_that_cover_the_epoch(tmp_path):
    from benchmarks.image_folder import write_image_folder

    write_image_folder(tmp_path / "data", 70, [(50, 60), (64, 40)], classes=2)
    args = [a for a in ARGS if not a.startswith("--max_train_examples")]
    model_dir = tmp_path / "run"
    records = run_two_workers(
        tmp_path, *args, f"--dataset={tmp_path / 'data'}", "--input=stream",
        "--knn_every=0", "--noexport", f"--model_dir={model_dir}",
    )  # fmt: skip
    assert all(int(r["steps"]) == 70 // 16 for r in records)
    # Files decoded in epoch 0 (the spare epoch's prefetched reads are epoch 1).
    read = [set(np.flatnonzero(r["first_decoded"] == 0)) for r in records]
    assert not read[0] & read[1]
    assert len(read[0]) == len(read[1]) == 4 * 8  # 4 steps x 8 images per worker
    assert len(read[0] | read[1]) == 4 * 16  # one global epoch, remainder dropped
    np.testing.assert_array_equal(records[0]["paths"], records[1]["paths"])
