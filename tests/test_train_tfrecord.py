"""tfascl-train on TFRecord shards with two workers on loopback: each reads its own shards,
a bad record is skipped and named by the worker that owns it, the kNN monitor reads the
test split's shards, and a run killed mid-epoch resumes exactly, every step once."""

import json
import time

import numpy as np
import pytest
import tensorflow as tf
from helpers import logged_steps
from test_train_multiworker import ARGS, start_workers, wait_for

from benchmarks.image_folder import write_image_folder
from tfascl import data
from tfascl.data import tfrecord

BAD = "c0/zz_broken.jpg"


@pytest.mark.slow
@pytest.mark.multi_device
def test_two_workers_read_their_own_shards_and_resume_exactly_after_a_kill(tmp_path):
    from test_train_resume import latest_step

    # 63 JPEGs of two sizes and one broken file: 64 records in 4 shards of 16, so each
    # worker holds exactly the 32 records (4 steps x 8) it trains on per epoch.
    images = tmp_path / "images"
    write_image_folder(images, 63, [(50, 60), (64, 40)], classes=2)
    write_image_folder(images, 16, [(48, 48)], classes=2, split="test", seed=1)
    (images / "train" / BAD).write_bytes(b"\xff\xd8\xff not a JPEG" * 8)
    shards = tmp_path / "shards"
    data.write_tfrecords(str(images), str(shards), ("train", "test"), shards=4)
    model_dir = tmp_path / "run"
    args = [a for a in ARGS if not a.startswith(("--max_train_examples", "--checkpoint_every"))]
    args += [f"--dataset={shards}", "--input=stream", "--knn_every=0", "--noexport",
             "--log_every=1", "--checkpoint_every=3", "--epochs=2"]  # fmt: skip

    # 1. Both workers killed once the chief has saved step 3, mid-epoch 1 of 2.
    processes = start_workers(tmp_path, model_dir, args, tag="-k")
    deadline = time.time() + 400
    try:
        while not ((step := latest_step(model_dir)) and step >= 3):
            logs = (tmp_path / "worker0-k.log").read_text()[-3000:]
            assert [p.poll() for p, _ in processes] == [None, None], logs
            assert time.time() < deadline, "the workers never got there"
            time.sleep(0.02)
        processes[1][0].kill()
        processes[0][0].kill()
    finally:
        wait_for(processes, timeout=60)
    killed_at = latest_step(model_dir)
    assert killed_at == 3  # mid-epoch: the resumed run skips the 3 batches trained on

    # 2. Both restarted: they resume from the chief's checkpoint and finish, each step once.
    codes = wait_for(start_workers(tmp_path, model_dir, args, tag="-r"))
    logs = [(tmp_path / f"worker{i}-r.log").read_text() for i in range(2)]
    assert codes == [0, 0], [log[-3000:] for log in logs]
    assert all(f"at step {killed_at} (" in log for log in logs), logs
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["resumed_from_step"] == killed_at and summary["steps"] == 8
    assert logged_steps(model_dir) == list(range(1, 9))
    assert summary["final_knn_top1"] is not None  # the monitor read the test split's shards

    # Each worker decoded records of its own shards only (s mod 2), disjoint; in epoch 2,
    # a whole one, every record but the bad one.
    records = [np.load(tmp_path / f"worker{i}-r.npz") for i in range(2)]
    starts = records[0]["shard_starts"]
    np.testing.assert_array_equal(starts, [0, 16, 32, 48])
    shard_of = np.searchsorted(starts, np.arange(64), side="right") - 1
    read = [set(np.flatnonzero(r["first_decoded"] <= 1)) for r in records]
    for worker in range(2):
        assert set(shard_of[sorted(read[worker])]) == {worker, worker + 2}
    assert not read[0] & read[1] and len(read[0] | read[1]) == 63
    # The resumed epoch read exactly the records its last step trains on: those the epoch's
    # order puts after the 3 steps done (24 of each worker's 32), none of the first 24.
    files = data.open_images(str(shards), "train")
    for worker in range(2):
        context = tf.distribute.InputContext(2, worker, 2)
        rest = set(tfrecord.epoch_schedule(files, 16, 0, context, first_epoch=0, skip=3)(0))
        decoded = set(np.flatnonzero(records[worker]["first_decoded"] == 0))
        assert len(rest) == 8 and decoded <= rest and len(rest - decoded) <= 1
    # The bad record: named by the worker whose shard holds it, in epoch 2; never by
    # the other. (Its number in the split: the writer's order, recovered from the shards.)
    (bad,) = set(range(64)) - read[0] - read[1]
    owner = shard_of[bad] % 2
    line = f"warning: epoch 2: skipped 1 of 32 records of {shards}/train-* that could not be "
    line += "decoded"
    assert line in logs[owner] and f"record {bad - starts[shard_of[bad]]} ({BAD})" in logs[owner]
    assert "could not be decoded" not in logs[1 - owner]
