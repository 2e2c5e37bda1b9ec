"""benchmarks/device.sh, the one GPU command, runs its every step at tiny sizes on the CPU
(DEVICE_SMOKE=1) within its 3-minute budget, and make_results turns its JSON lines into
the GPU section of docs/RESULTS.md."""

import json
import subprocess
import sys
import time

import pytest
from helpers import REPO, python_env

STEPS = ("environment", "speed", "learning", "data")


@pytest.mark.slow
def test_device_script_smoke_run_writes_every_record(tmp_path):
    out = tmp_path / "device"
    env = python_env(DEVICE_SMOKE="1", OUT=str(out), PYTHON=sys.executable)
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "device.sh")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=240,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert seconds < 180 + 15, seconds  # the budget, plus the last report's start-up
    records = [json.loads(line) for line in (out / "device.jsonl").read_text().splitlines()]
    steps = {r["step"]: r["exit_status"] for r in records if r.get("kind") == "step"}
    logs = {name: (out / "logs" / f"{name}.log") for name in STEPS}
    assert steps == dict.fromkeys(STEPS, 0), {n: p.read_text()[-1500:] for n, p in logs.items()}

    (environment,) = [r for r in records if r.get("kind") == "environment"]
    assert environment["tensorflow"] and environment["device"].startswith("CPU")
    speed = [r for r in records if "pairs_per_sec" in r and "kind" not in r]
    assert len(speed) == 3  # --limit=3 of the device table, in its order
    assert [(r["steps_per_execution"], r["batch_size"]) for r in speed] == [
        (2, 16),
        (1, 16),
        (2, 8),
    ]
    for record in speed:
        assert record["pairs_per_sec"] > 0 and record["precision"] == "mixed_bfloat16"
        assert record["augment_on"] == "device" and record["command"].startswith("python -m")
    (learning,) = [r for r in records if r.get("kind") == "learning"]
    assert learning["status"] == "completed" and learning["epochs"] == 5
    assert 0 <= learning["knn_top1"] <= 1 and learning["pairs_per_sec"] > 0
    # 200 epochs of 80 pairs at the measured rate.
    want = 200 * 80 / learning["pairs_per_sec"]
    assert abs(learning["projected_train_s"] - want) <= 0.1 + 1e-3 * want
    pipeline = {r["config"] for r in records if r.get("kind") == "data_pipeline"}
    assert {"host_xla", "device_xla"} <= pipeline, pipeline
