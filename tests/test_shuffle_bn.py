"""MoCo's shuffle BN across replicas (``--norm=shuffle``), on two logical CPUs (in this process)."""

import keras
import numpy as np
import pytest
from helpers import REPO, run_check, tiny_spec

from tfascl.models import SplitBatchNorm


@pytest.mark.slow
@pytest.mark.multi_device
def test_shuffle_bn_across_replicas_matches_one_device_on_the_same_groups(two_cpus):
    result = run_check(REPO / "tests" / "shuffle_bn_check.py", two_cpus)
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


def test_sce_recipe_norms_split_the_momentum_trunk_only():
    spec = tiny_spec(method="sce", norm="batch", key_norm="split", projector_bn=True)
    model = spec.build_model()

    def splits(encoder):
        return {type(layer) is SplitBatchNorm for layer in encoder.layers if "bn" in layer.name}

    # SCE's shuffle_momentum_base.py: split BN in the momentum trunk; whole-batch BN in the
    # online trunk and in both projectors.
    assert splits(model.key_backbone) == {True} and splits(model.backbone) == {False}
    assert splits(model.projector) == splits(model.key_projector) == {False}
    assert model.shuffle_keys
    # The EMA pairs the same weights: the key trunk starts as a copy of the online one.
    for key, online in zip(*model.momentum_pairs):
        np.testing.assert_array_equal(key.numpy(), online.numpy())
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(0)
    views = tuple(rng.random((8, 16, 16, 3), dtype=np.float32) for _ in range(2))
    logs = model.fit(views, np.arange(8), batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0])


def test_byol_predictor_normalises_the_whole_batch_under_split_bn():
    model = tiny_spec(method="byol", norm="split", total_steps=4).build_model()
    norms = [layer for layer in model.predictor.layers if "bn" in layer.name]
    # ASCL model.py: BatchNorm1d(512) over the batch, while the backbone splits; synced,
    # so that several replicas normalise the global batch as one device does.
    assert len(norms) == 1 and type(norms[0]) is not SplitBatchNorm and norms[0].synchronized
    assert any(type(layer) is SplitBatchNorm for layer in model.backbone.layers)
