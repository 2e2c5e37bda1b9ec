"""MirroredStrategy on two logical CPUs against one device (in a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# byol_ascl is left out: it relabels within each replica's batch by design,
# so its loss differs from one device's on the global batch.
@pytest.mark.parametrize("method", ["ascl", "byol"])
def test_two_replicas_match_one_device_and_share_one_queue(method):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, str(REPO / "tests" / "mirrored_check.py"), method],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # Same loss and weights as one device on the same global batch.
    assert result["mirrored_loss"] == pytest.approx(result["single_loss"], rel=1e-4)
    assert result["looped_loss"] == pytest.approx(result["single_loss"], rel=1e-4)
    # Each replica's forward and backward pass compiled by XLA, under the strategy.
    assert result["replica_jit_loss"] == pytest.approx(result["single_loss"], rel=1e-4)
    # After one step the weights agree to 6e-7; momentum and ReLU boundaries
    # amplify float rounding over three steps to ~2e-3. A missing division of the
    # loss by the replica count would double every update (differences ~1e-1).
    assert result["weights_vs_single_max_diff"] < 5e-3
    if method == "ascl":
        # One queue, identical on both replicas, holding both replicas' keys in order.
        assert result["queue_copies"] == 2
        assert result["queue_copies_max_diff"] == 0.0
        assert result["pointer"] == [48, 48]
        assert result["queue_vs_single_max_diff"] < 1e-4
        assert result["queue_labels_equal"]
        assert result["loop_vs_fit_queue_max_diff"] < 1e-5
