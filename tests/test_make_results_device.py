"""The GPU section of docs/RESULTS.md and the steps-per-execution table, computed from the
JSON that benchmarks/device.sh and benchmarks.train_step write."""

import importlib.util
import json

from helpers import REPO

spec = importlib.util.spec_from_file_location(
    "make_results", REPO / "benchmarks" / "make_results.py"
)
make_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_results)


def speed(pairs_per_sec, **config):
    return {
        "method": "ascl", "backbone_width": 64, "batch_size": 512, "queue_size": 4096,
        "precision": "mixed_bfloat16", "jit_compile": True, "augment_on": "device",
        "steps_per_execution": 25, "pairs_per_sec": pairs_per_sec, "step_ms": 1.0,
        "peak_memory_mb": 100.0, "window_s": [1.0, 1.0, 1.0], "steps_per_window": 50,
        "device": "GPU: NVIDIA H200", "command": "python -m benchmarks.train_step --table=device",
        **config,
    }  # fmt: skip


def test_without_device_results_the_page_says_no_gpu_measurement_exists(tmp_path):
    page = make_results.render(tmp_path)
    assert "Not measured: no GPU measurement exists yet" in page
    assert (
        "| MoCo CIFAR-10 demo (PyTorch, colab/moco_cifar10_demo.ipynb) | one NVIDIA V100 |" in page
    )
    assert "| one NVIDIA RTX A6000 | ~112 |" in page
    # A smoke run on the CPU is no GPU measurement either.
    (tmp_path / "device").mkdir()
    cpu = {"kind": "environment", "device": "CPU: test x2", "tensorflow": "2.21.0"}
    (tmp_path / "device" / "device.jsonl").write_text(json.dumps(cpu) + "\n")
    assert "holds a run on CPU: test x2, not on a GPU" in make_results.render(tmp_path)


def test_device_lines_become_the_gpu_section(tmp_path):
    records = [
        {"kind": "environment", "device": "GPU: NVIDIA H200", "tensorflow": "2.21.0",
         "keras": "3.15.1", "cuda": "12.5", "cudnn": "9", "date": "d", "git_commit": "abc"},
        {"kind": "step", "step": "environment", "exit_status": 0, "seconds": 5},
        speed(25_000.0),
        speed(12_500.0, precision="float32", jit_compile=False, augment_on="host"),
        {"kind": "step", "step": "speed", "exit_status": 124, "seconds": 210},
        {"kind": "learning", "epochs": 5, "batch_size": 512, "precision": "mixed_bfloat16",
         "jit_compile": True, "augment_on": "device", "train_examples": 49_664,
         "steps_per_execution": 25, "status": "completed", "knn_top1": 0.5,
         "pairs_per_sec": 20_000.0, "projected_train_s": 496.6, "projected_wall_s": 900.0},
        {"kind": "data_pipeline", "config": "host_xla", "pairs_per_s": 30_000.0},
    ]  # fmt: skip
    (tmp_path / "device").mkdir()
    (tmp_path / "device" / "device.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records)
    )
    page = make_results.render(tmp_path)
    assert "`benchmarks/device.sh` on **NVIDIA H200**" in page
    assert "speed (124, 210 s)" in page
    # 200 epochs of 50,000 pairs: 1e7 pairs at 25,000/s = 400 s = 6.7 min; at 12,500/s 13.3.
    assert (
        "| 512 | 4096 | mixed_bfloat16 | True | device | 25 | 25,000 | 1.0 | 100.0 | 6.7 |" in page
    )
    assert "| float32 | False | host | 25 | 12,500 | 1.0 | 100.0 | 13.3 |" in page
    assert "Fastest: 25,000 pairs/s" in page and "it meets the 20,000 pairs/s target" in page
    assert "kNN top-1 50.00% after 5 epochs, 20,000 pairs/s" in page
    assert "8.3 min of training" in page and "15.0 min)" in page  # 496.6 s, 900 s
    assert "| host_xla | 30,000 | pairs/s |" in page
    assert "| one NVIDIA V100 | ~85–90 |" in page


def test_steps_per_execution_table_states_the_host_work_removed(tmp_path):
    base = {"method": "ascl", "backbone_width": 4, "batch_size": 16, "queue_size": 256,
            "precision": "float32", "jit_compile": False, "augment_on": "host",
            "peak_memory_mb": 1.0, "device": "CPU: test", "steps_per_window": 32}  # fmt: skip
    records = [
        {**base, "steps_per_execution": 1, "pairs_per_sec": 100.0, "step_ms": 10.0,
         "window_s": [0.32, 0.33]},
        {**base, "steps_per_execution": 8, "pairs_per_sec": 250.0, "step_ms": 4.0,
         "window_s": [0.13, 0.12]},
    ]  # fmt: skip
    payload = {"command": "python -m benchmarks.train_step --table=steps_per_execution",
               "date": "d", "records": records}  # fmt: skip
    (tmp_path / "speed_steps_per_execution.json").write_text(json.dumps(payload))
    page = make_results.render(tmp_path)
    assert "`python -m benchmarks.train_step --table=steps_per_execution`" in page
    assert "| ascl | 4 | 16 | 256 | float32 | False | host | 8 | 250.0 | 4.0 |" in page
    # 250 / 100 = 2.50×; 10 − 4 = 6.0 ms removed, 60% of the 10 ms step.
    assert "8 steps per execution: 2.50× the pairs/s of one" in page
    assert "6.0 ms (60% of a 10.0 ms step" in page
