"""MoCo's shuffle BN across replicas (``--norm=shuffle``), on two logical CPUs in a subprocess."""

import json

import pytest
from helpers import REPO, run_python


def test_shuffle_bn_across_replicas_matches_one_device_on_the_same_groups():
    out = run_python(str(REPO / "tests" / "shuffle_bn_check.py"))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["shuffle_keys"]
    # The identity permutation leaves each replica its own images: per-replica BN.
    assert result["identity_vs_per_replica_bn"] < 1e-5
    # A permutation mixing the replicas gives the keys one device computes when it
    # normalises the same groups of images (split BN over the permuted batch) ...
    assert result["fixed_vs_one_device_groups"] < 1e-5
    # ... which are not the per-replica-BN keys: the shuffle really regroups the batch.
    assert result["fixed_vs_per_replica_bn"] > 1e-2
    assert result["key_norms"] == pytest.approx([1.0, 1.0], abs=1e-5)
    # Three training steps with the step-seeded permutation, against one device with
    # split BN over two groups and the same permutation: same loss, weights and queue,
    # with each replica's step compiled by XLA too.
    assert result["shuffled_loss"] == pytest.approx(result["one_device_loss"], rel=1e-5)
    assert result["replica_jit_loss"] == pytest.approx(result["one_device_loss"], rel=1e-5)
    assert result["weights_max_diff"] < 1e-4
    assert result["queue_copies_max_diff"] == 0.0
    assert result["queue_vs_one_device"] < 1e-5
    assert result["pointer"] == [48, 48]
