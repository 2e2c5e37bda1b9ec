"""Two workers on loopback (MultiWorkerMirroredStrategy through tfascl-train's code) end
with the same weights and queue; only the chief writes the run's files. SIGTERM to one
worker stops both after the same step, and the restarted workers resume there."""

import json
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import REPO, TINY_RUN_FLAGS, logged_steps, python_env

from tfascl import train

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


def start_workers(tmp_path, model_dir, args, tag=""):
    """Starts two workers of one cluster on 127.0.0.1; returns [(process, log file)]."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = python_env(TF_CONFIG=json.dumps(tf_config))
        command = [
            sys.executable,
            str(REPO / "tests" / "multiworker_train.py"),
            str(tmp_path / f"worker{index}{tag}.npz"),
            *args,
            f"--model_dir={model_dir}",
        ]
        log = open(tmp_path / f"worker{index}{tag}.log", "w")
        processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=log), log))
    return processes


def wait_for(processes, timeout=400):
    """Waits for the workers; returns their exit statuses (kills them past ``timeout``)."""
    deadline = time.time() + timeout
    try:
        for process, _ in processes:
            process.wait(timeout=max(1, deadline - time.time()))
    finally:
        for process, log in processes:
            if process.poll() is None:
                process.kill()
            log.close()
    return [process.returncode for process, _ in processes]


@pytest.mark.slow
@pytest.mark.multi_device
def test_two_workers_end_with_the_same_weights_and_queue(tmp_path):
    model_dir = tmp_path / "run"
    # A 48-key queue: 4 steps of 16 keys fill it and wrap once, leaving the pointer at 16.
    processes = start_workers(tmp_path, model_dir, (*ARGS, "--queue_size=48"))
    for index, code in enumerate(wait_for(processes)):
        log = (tmp_path / f"worker{index}.log").read_text()
        assert code == 0, log[-3000:]

    chief, other = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert int(chief["replicas"]) == 2 and int(chief["exit_code"]) == 0
    assert int(chief["steps"]) == int(other["steps"]) == 4  # 64 images / global batch 16
    names = [name for name in chief.files if name[:3].isdigit()]
    assert names == [name for name in other.files if name[:3].isdigit()]
    assert any("queue" in name for name in names)
    # Everything is shared but per-replica BN's moving statistics (--norm=shuffle, the
    # default here), which each worker keeps for its own replica; the chief's are saved.
    moving = [name for name in names if "moving_" in name]
    assert moving and len(moving) < len(names)
    for name in names:
        if name not in moving:
            np.testing.assert_allclose(chief[name], other[name], rtol=1e-6, atol=1e-6, err_msg=name)

    # The pointer went round: 4 steps x 16 keys = 48 + 16, on both workers.
    def queue_part(record, part):
        (name,) = [name for name in names if name.endswith(f"queue.{part}")]
        return record[name]

    assert int(queue_part(chief, "pointer")) == int(queue_part(other, "pointer")) == 16
    # The rows hold the newest keys in order: step 4's in [0, 16) after the wrap, then
    # steps 2 and 3; their labels are those of the run's global batches, rebuilt here.
    config = train.TrainConfig(
        dataset="digits", batch_size=16, image_size=16, max_train_examples=64, jit_augment=False
    )
    images = train.load_data(config).train
    steps = [labels.numpy() for _, labels in train.training_stream(config, images, 0, 1)]
    assert len(steps) == 4
    expected = np.concatenate([steps[3], steps[1], steps[2]])
    np.testing.assert_array_equal(queue_part(chief, "labels"), expected)
    np.testing.assert_array_equal(queue_part(other, "labels"), expected)
    np.testing.assert_allclose(np.linalg.norm(queue_part(chief, "keys"), axis=1), 1.0, atol=1e-5)

    # The kNN monitor's passes (at the start and after the epoch) ran on the chief alone;
    # the other worker logged the same numbers, received from it.
    assert int(chief["knn_passes"]) == 2 and int(other["knn_passes"]) == 0
    assert np.isfinite(chief["knn"]).all()
    np.testing.assert_array_equal(chief["knn"], other["knn"])

    # The chief wrote the run; the other worker's checkpoints went to a scratch folder.
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["completed"]
    assert (model_dir / "checkpoints" / "ckpt-4.index").is_file()


@pytest.mark.slow
@pytest.mark.multi_device
def test_sigterm_to_one_worker_stops_both_at_one_step_and_they_resume_there(tmp_path):
    model_dir = tmp_path / "run"
    total = 16  # 4 epochs of 64 images in global batches of 16
    args = (
        *ARGS,
        "--epochs=4",
        "--log_every=1",
        "--knn_every=0",
        "--checkpoint_every=1000",  # only epoch ends and the stop save
        "--noexport",
    )
    processes = start_workers(tmp_path, model_dir, args, tag="-a")
    deadline = time.time() + 300
    try:
        while not logged_steps(model_dir):  # both workers are training
            codes = [process.poll() for process, _ in processes]
            assert codes == [None, None], (tmp_path / "worker1-a.log").read_text()[-3000:]
            assert time.time() < deadline, "the workers never started training"
            time.sleep(0.05)
        processes[1][0].send_signal(signal.SIGTERM)  # the worker that is not the chief
    finally:
        codes = wait_for(processes, timeout=max(1, deadline - time.time()))
    logs = [(tmp_path / f"worker{i}-a.log").read_text()[-3000:] for i in range(2)]
    assert codes == [train.EXIT_PREEMPTED] * 2, logs
    chief, other = (np.load(tmp_path / f"worker{i}-a.npz") for i in range(2))
    stopped = int(chief["steps"])
    assert stopped == int(other["steps"]) and 0 < stopped < total, logs
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["status"] == "preempted" and summary["steps"] == stopped
    assert (model_dir / "checkpoints" / f"ckpt-{stopped}.index").is_file()
    assert max(logged_steps(model_dir)) == stopped

    # Restarted, both resume from the chief's checkpoint at that step and finish.
    codes = wait_for(start_workers(tmp_path, model_dir, args, tag="-b"))
    logs = [(tmp_path / f"worker{i}-b.log").read_text()[-3000:] for i in range(2)]
    assert codes == [0, 0], logs
    assert all(f"at step {stopped} (" in log for log in logs), logs
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["resumed_from_step"] == stopped and summary["steps"] == total
    assert logged_steps(model_dir) == list(range(1, total + 1))  # every step once


@pytest.mark.slow
@pytest.mark.multi_device
def test_streaming_workers_read_disjoint_files_and_resume_after_a_kill(tmp_path):
    from test_train_resume import latest_step

    from benchmarks.image_folder import write_image_folder

    write_image_folder(tmp_path / "data", 70, [(50, 60), (64, 40)], classes=2)
    model_dir = tmp_path / "run"
    args = [a for a in ARGS if not a.startswith(("--max_train_examples", "--checkpoint_every"))]
    args += [f"--dataset={tmp_path / 'data'}", "--input=stream", "--knn_every=0", "--noexport",
             "--log_every=1", "--checkpoint_every=3"]  # fmt: skip

    # 1. One epoch: each worker reads its own half of every global batch.
    codes = wait_for(start_workers(tmp_path, model_dir, args))
    assert codes == [0, 0], (tmp_path / "worker1.log").read_text()[-3000:]
    records = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
    assert all(int(r["steps"]) == 70 // 16 for r in records)
    # Files decoded in epoch 0 (the spare epoch's prefetched reads are epoch 1).
    read = [set(np.flatnonzero(r["first_decoded"] == 0)) for r in records]
    assert not read[0] & read[1]
    assert len(read[0]) == len(read[1]) == 4 * 8  # 4 steps x 8 images per worker
    assert len(read[0] | read[1]) == 4 * 16  # one global epoch, remainder dropped
    np.testing.assert_array_equal(records[0]["paths"], records[1]["paths"])

    # 2. Continued to 3 epochs, one worker is killed mid-run, then the other.
    longer = [*args, "--epochs=3"]
    processes = start_workers(tmp_path, model_dir, longer, tag="-k")
    deadline = time.time() + 300
    try:
        while not ((step := latest_step(model_dir)) and step >= 5):
            assert [p.poll() for p, _ in processes] == [None, None]
            assert time.time() < deadline, "the workers never got there"
            time.sleep(0.02)
        processes[1][0].kill()
        processes[0][0].kill()
    finally:
        wait_for(processes, timeout=60)
    killed_at = latest_step(model_dir)
    assert 5 <= killed_at < 12

    # 3. Both restarted: they resume from the chief's last checkpoint and finish, each step once.
    codes = wait_for(start_workers(tmp_path, model_dir, longer, tag="-r"))
    logs = [(tmp_path / f"worker{i}-r.log").read_text()[-3000:] for i in range(2)]
    assert codes == [0, 0], logs
    assert all(f"at step {killed_at} (" in log for log in logs), logs
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["resumed_from_step"] == killed_at and summary["steps"] == 12
    assert logged_steps(model_dir) == list(range(1, 13))
