"""MirroredStrategy on two logical CPUs against one device (in a subprocess)."""

import json

import pytest
from helpers import REPO, run_python


# byol_ascl relabels against the keys gathered from both replicas, so it must match
# one device on the global batch too.
@pytest.mark.parametrize("method", ["ascl", "byol", "byol_ascl"])
def test_two_replicas_match_one_device_and_share_one_queue(method):
    out = run_python(str(REPO / "tests" / "mirrored_check.py"), method)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # Same loss and weights as one device on the same global batch.
    assert result["mirrored_loss"] == pytest.approx(result["single_loss"], rel=1e-4)
    # Measured after three steps: ~1e-6 (ASCL) and ~5e-6 (BYOL). A missing
    # division of the loss by the replica count would double every update.
    assert result["weights_vs_single_max_diff"] < 1e-4
    if method == "ascl":
        assert result["looped_loss"] == pytest.approx(result["single_loss"], rel=1e-4)
        # Each replica's forward and backward pass compiled by XLA, under the strategy.
        assert result["replica_jit_loss"] == pytest.approx(result["single_loss"], rel=1e-4)
        # One queue, identical on both replicas, holding both replicas' keys in order.
        assert result["queue_copies"] == 2
        assert result["queue_copies_max_diff"] == 0.0
        assert result["pointer"] == [48, 48]
        assert result["queue_vs_single_max_diff"] < 1e-5
        assert result["queue_labels_equal"]
        assert result["loop_vs_fit_queue_max_diff"] < 1e-5
