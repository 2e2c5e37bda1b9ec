"""--cluster: which TensorFlow cluster resolver finds the workers (SLURM's job step, TF_CONFIG,
or none), and two workers launched as SLURM's srun would start them, on loopback."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, python_env
from test_train_multiworker import ARGS, wait_for

from tfascl import distribute, train
from tfascl.cli import FlagError

TF_CONFIG = {"cluster": {"worker": ["h0:2222", "h1:2222"]}, "task": {"type": "worker", "index": 1}}


def slurm_env(rank, tasks=2, nodes="127.0.0.1", per_node="2", gpus=""):
    """The variables srun sets for one task of a job step (those the resolver reads)."""
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": str(rank),
        "SLURM_STEP_NUM_TASKS": str(tasks),
        "SLURM_STEP_NODELIST": nodes,
        "SLURM_STEP_TASKS_PER_NODE": per_node,
        "CUDA_VISIBLE_DEVICES": gpus,  # "": no GPU (not even nvidia-smi is asked)
    }


@pytest.fixture
def environment(monkeypatch):
    """A clean environment (no SLURM, no TF_CONFIG); returns a setter of variables."""
    for name in list(os.environ):
        if name.startswith("SLURM_") or name in ("TF_CONFIG", "CUDA_VISIBLE_DEVICES"):
            monkeypatch.delenv(name)

    def set_variables(**variables):
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    return set_variables


def test_auto_is_slurm_in_a_job_step_else_tf_config_else_one_machine(environment):
    assert distribute.cluster_resolver("auto") is None
    with pytest.raises(ValueError, match="needs a cluster"):
        distribute.make_strategy("multi_worker")
    with pytest.raises(ValueError, match="not inside a SLURM job step"):
        distribute.cluster_resolver("slurm")
    with pytest.raises(ValueError, match=r"TF_CONFIG .* is not set"):
        distribute.cluster_resolver("tf_config")

    # A one-worker TF_CONFIG is one machine for --strategy=auto (no cluster to join).
    alone = {"cluster": {"worker": ["h0:2222"]}, "task": {"type": "worker", "index": 0}}
    environment(TF_CONFIG=json.dumps(alone))
    assert distribute.cluster_workers(distribute.cluster_resolver("auto")) == 1
    strategy = distribute.make_strategy("auto")
    assert not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    environment(TF_CONFIG=json.dumps(TF_CONFIG))
    resolver = distribute.cluster_resolver("auto")
    assert isinstance(resolver, tf.distribute.cluster_resolver.TFConfigClusterResolver)
    assert distribute.cluster_workers(resolver) == 2 and resolver.task_id == 1

    # Inside a SLURM step SLURM wins, unless TF_CONFIG is asked for: two nodes of one task.
    environment(**slurm_env(1, nodes="node[07-08]", per_node="1(x2)"))
    resolver = distribute.cluster_resolver("auto", port=9000)
    assert isinstance(resolver, tf.distribute.cluster_resolver.SlurmClusterResolver)
    assert resolver.cluster_spec().as_dict() == {"worker": ["node07:9000", "node08:9000"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    assert resolver.num_accelerators() == {}  # CPU nodes: the workers run on their CPUs
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # left alone
    assert distribute.cluster_workers(resolver) == 2
    tf_config = distribute.cluster_resolver("tf_config")
    assert isinstance(tf_config, tf.distribute.cluster_resolver.TFConfigClusterResolver)

    environment(TF_CONFIG="{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not JSON"):
        distribute.cluster_resolver("tf_config")


def test_slurm_deals_each_task_of_a_gpu_node_its_gpus(environment):
    # Two tasks on one node of four GPUs: task 1 gets GPUs 2 and 3, at the node's second port.
    environment(**slurm_env(1, nodes="gpu01", per_node="2", gpus="0,1,2,3"))
    resolver = distribute.cluster_resolver("slurm", port=7000)
    assert resolver.cluster_spec().as_dict() == {"worker": ["gpu01:7000", "gpu01:7001"]}
    assert resolver.num_accelerators() == {"GPU": 2}
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    # More tasks on a node than it has GPUs: one line saying so (TF's resolver would fail
    # with a ZeroDivision-like range error).
    environment(**slurm_env(0, nodes="gpu01", per_node="2", gpus="0"))
    with pytest.raises(ValueError, match="2 tasks on a node with 1 GPU"):
        distribute.cluster_resolver("slurm")


def test_cluster_flag_is_checked(environment, tmp_path):
    def config(*args):
        return train.config_from_args(["--dataset=digits", f"--model_dir={tmp_path}", *args])

    with pytest.raises(FlagError, match="--cluster=slurm: finds the workers of"):
        train.validate(config("--cluster=slurm", "--strategy=mirrored"))
    with pytest.raises(FlagError, match="--cluster_port=0"):
        train.validate(config("--cluster_port=0"))
    with pytest.raises(FlagError, match="--cluster"):
        config("--cluster=kubernetes")
    train.validate(config("--cluster=slurm"))  # found when the strategy is made


def consecutive_free_ports(count=2):
    """A port p with p, ..., p + count - 1 free on 127.0.0.1 (SLURM's workers of a node)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        sockets = []
        try:
            for port in range(base, base + count):
                sockets.append(socket.socket())
                sockets[-1].bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free consecutive ports")


@pytest.mark.slow
@pytest.mark.multi_device
def test_two_slurm_tasks_train_as_one_cluster_and_agree_on_the_queue(tmp_path):
    """Two processes with the variables srun gives two tasks on one node, no TF_CONFIG and
    the default --strategy=auto --cluster=auto: they find each other through TensorFlow's
    SlurmClusterResolver and end with the same weights and queue, as the TF_CONFIG test."""
    model_dir = tmp_path / "run"
    port = consecutive_free_ports()
    args = [a for a in ARGS if a != "--strategy=multi_worker"]
    args += ["--queue_size=48", "--noexport", f"--cluster_port={port}", f"--model_dir={model_dir}"]
    processes = []
    for rank in range(2):
        env = {k: v for k, v in python_env(**slurm_env(rank)).items() if k != "TF_CONFIG"}
        command = [sys.executable, str(REPO / "tests" / "multiworker_train.py"),
                   str(tmp_path / f"task{rank}.npz"), *args]  # fmt: skip
        log = open(tmp_path / f"task{rank}.log", "w")
        processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=log), log))
    codes = wait_for(processes)
    logs = [(tmp_path / f"task{rank}.log").read_text()[-3000:] for rank in range(2)]
    assert codes == [0, 0], logs

    chief, other = (np.load(tmp_path / f"task{rank}.npz") for rank in range(2))
    assert int(chief["replicas"]) == int(other["replicas"]) == 2
    assert int(chief["steps"]) == int(other["steps"]) == 4
    names = [name for name in chief.files if name[:3].isdigit()]
    for name in names:
        if "moving_" not in name:  # per-replica BN statistics are each worker's own
            np.testing.assert_allclose(chief[name], other[name], rtol=1e-6, atol=1e-6, err_msg=name)
    (pointer,) = [name for name in names if name.endswith("queue.pointer")]
    assert int(chief[pointer]) == int(other[pointer]) == 16  # 4 steps x 16 keys, wrapped at 48
    # Task 0 is the chief: it wrote the run, with the kNN monitor's result.
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["completed"] and summary["steps"] == 4
    assert summary["final_knn_top1"] is not None
