"""Tests of the tf.data pipelines on small synthetic image sets whose pixels name them."""

import numpy as np
import pytest
import tensorflow as tf

from tfascl.data import ImageSet, eval_dataset, pretrain_dataset

STEP = 4  # image i is the constant 4 * i, so any crop of it still says i


def _indexed_set(count: int, labelled: bool = True, side: int = 8) -> ImageSet:
    values = STEP * np.arange(count, dtype=np.uint8)
    images = np.broadcast_to(values[:, None, None, None], (count, side, side, 3)).copy()
    labels = (np.arange(count) % 3).astype(np.int64) if labelled else None
    return ImageSet(images, labels, ["a", "b", "c"], (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "toy")


def _ids(views: tf.Tensor) -> np.ndarray:
    """Image index from the weak view or raw images (unnormalised: mean 0, std 1)."""
    pixels = views.numpy()[:, 0, 0, 0].astype(np.float64)
    scale = 255.0 if views.dtype == tf.float32 else 1.0
    return np.rint(pixels * scale / STEP).astype(int)


def _epoch(dataset: tf.data.Dataset) -> list:
    return list(dataset)


def test_host_batches_carry_two_views_and_matching_labels():
    data = _indexed_set(50)
    dataset = pretrain_dataset(data, 16, 6, seed=1, jit_compile=False)
    epoch = _epoch(dataset)
    assert len(epoch) == 3  # 50 // 16, the incomplete batch dropped
    ids = []
    for (strong, weak), labels in epoch:
        assert strong.shape == weak.shape == (16, 6, 6, 3)
        assert strong.dtype == weak.dtype == tf.float32 and labels.dtype == tf.int64
        batch_ids = _ids(weak)
        np.testing.assert_array_equal(labels.numpy(), batch_ids % 3)
        ids.extend(batch_ids)
    assert len(set(ids)) == 48 and max(ids) < 50
    assert ids != sorted(ids)  # shuffled


def test_host_pipeline_is_seeded_and_changes_every_epoch():
    data = _indexed_set(32)

    def first_epoch_and_second(seed):
        dataset = pretrain_dataset(data, 8, 8, seed=seed, jit_compile=False)
        return _epoch(dataset), _epoch(dataset)

    a1, a2 = first_epoch_and_second(5)
    b1, _ = first_epoch_and_second(5)
    c1, _ = first_epoch_and_second(6)
    for ((sa, wa), la), ((sb, wb), lb) in zip(a1, b1):
        np.testing.assert_array_equal(sa.numpy(), sb.numpy())
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())
        np.testing.assert_array_equal(la.numpy(), lb.numpy())
    order = [list(_ids(w)) for (_, w), _ in a1]
    assert order != [list(_ids(w)) for (_, w), _ in a2]
    assert order != [list(_ids(w)) for (_, w), _ in c1]
    # Same image order would still get new augmentations: compare strong views of epoch 2.
    assert not np.array_equal(a1[0][0][0].numpy(), a2[0][0][0].numpy())


def test_host_pipeline_compiles_with_xla_by_default():
    data = _indexed_set(24)
    (strong, weak), labels = next(iter(pretrain_dataset(data, 8, 8, seed=0)))
    assert strong.shape == (8, 8, 8, 3) and np.all(np.isfinite(strong.numpy()))
    np.testing.assert_array_equal(labels.numpy(), _ids(weak) % 3)


def test_unlabelled_data_yields_views_only():
    data = _indexed_set(16, labelled=False)
    host = pretrain_dataset(data, 8, 8, jit_compile=False)
    assert isinstance(host.element_spec, tuple) and len(host.element_spec) == 2
    assert all(isinstance(s, tf.TensorSpec) for s in host.element_spec)
    device = pretrain_dataset(data, 8, 8, augment_on="device")
    assert isinstance(device.element_spec, tf.TensorSpec)


def test_device_path_yields_stored_uint8_images():
    data = _indexed_set(20)
    epoch = _epoch(pretrain_dataset(data, 8, 32, augment_on="device", seed=2))
    assert len(epoch) == 2
    for images, labels in epoch:
        assert images.dtype == tf.uint8 and images.shape == (8, 8, 8, 3)
        np.testing.assert_array_equal(labels.numpy(), _ids(images) % 3)


def test_eval_dataset_keeps_order_and_the_last_partial_batch():
    data = _indexed_set(10)
    data.mean, data.std = (0.1, 0.2, 0.3), (0.5, 0.5, 0.5)
    batches = list(eval_dataset(data, 4, 8))
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    images = np.concatenate([x.numpy() for x, _ in batches])
    expected = (STEP * np.arange(10)[:, None] / 255.0 - np.array([0.1, 0.2, 0.3])) / 0.5
    np.testing.assert_allclose(images[:, 3, 5], expected, atol=1e-5)
    labels = np.concatenate([y.numpy() for _, y in batches])
    np.testing.assert_array_equal(labels, np.arange(10) % 3)
    unlabelled = eval_dataset(_indexed_set(10, labelled=False), 4, 8)
    assert isinstance(unlabelled.element_spec, tf.TensorSpec)


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError, match="fewer than one batch"):
        pretrain_dataset(_indexed_set(10), 16, 8)
    with pytest.raises(ValueError, match="augment_on"):
        pretrain_dataset(_indexed_set(10), 4, 8, augment_on="gpu")
