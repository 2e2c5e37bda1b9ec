"""TFRecord shards as a data source (tfascl.data.tfrecord): the writer's round trip, the
index, shards dealt to input pipelines, exact resume and a bad record skipped and named.

The data: real CIFAR-10 JPEGs, 3 classes, with one file that is not an image written into
the shards like the others (36 train records: 3 global batches of 12; 12 test records)."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfascl import data
from tfascl.data import tfrecord
from tfascl.data.sources import source_kind

CLASSES = ("airplane", "cat", "ship")
BAD = os.path.join("cat", "zz_broken.jpg")  # a .jpg that is not an image


@pytest.fixture(scope="module")
def folder(tmp_path_factory, cifar10_dir):
    """An image folder: train 35 JPEGs + BAD, test 12 JPEGs."""
    root = tmp_path_factory.mktemp("images")
    for split, per_class in (("train", 12), ("test", 4)):
        for label, name in enumerate(CLASSES):
            os.makedirs(root / split / name)
            count = per_class - (1 if split == "train" and label == 1 else 0)
            for path in sorted((cifar10_dir / split / name).glob("*.jpg"))[:count]:
                shutil.copy(path, root / split / name / path.name)
    (root / "train" / BAD).write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" * 4)
    return root


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory):
    """The folder written as 4 train and 4 test shards, Model Garden's flat names."""
    out = tmp_path_factory.mktemp("shards") / "tiny"
    written = data.write_tfrecords(str(folder), str(out), ("train", "test"), shards=4)
    return out, written


def read_back(root, split):
    """Every record of a split as {filename: (encoded bytes, label)}, in record order."""
    found = tfrecord.find_shards(str(root), split)
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/filename": tf.io.FixedLenFeature([], tf.string),
    }
    records = {}
    for serialized in tf.data.TFRecordDataset(list(found.paths)):
        parsed = tf.io.parse_single_example(serialized, spec)
        name = parsed["image/filename"].numpy().decode()
        records[name] = (parsed["image/encoded"].numpy(), int(parsed["image/class/label"]))
    return found, records


def test_written_shards_read_back_equal_the_images_and_labels(folder, shards):
    root, written = shards
    assert source_kind(str(root)) == "tfrecord" and source_kind(str(folder)) == "folder"
    for split, count in (("train", 36), ("test", 12)):
        found, records = read_back(root, split)
        assert [os.path.basename(p) for p in found.paths] == [
            f"{split}-0000{i}-of-00004" for i in range(4)
        ]
        assert list(records) == written[split] and len(records) == count
        for name, (contents, label) in records.items():
            assert contents == (folder / split / name).read_bytes(), name
            assert label == CLASSES.index(name.split(os.sep)[0]), name
        index = json.loads((root / f"{split}.tfascl-index.json").read_text())
        counts = [shard["records"] for shard in index["shards"]]
        assert sum(counts) == count and max(counts) - min(counts) <= 1
        assert index["class_names"] == list(CLASSES) and index["num_classes"] == 3
        files = data.open_images(str(root), split)
        assert isinstance(files, data.TFRecordFiles) and len(files) == count
        assert files.labelled and files.class_names == list(CLASSES)
    # Streamed, max_examples keeps the first records in shard order (as TFDS's [:n]).
    first = data.open_images(str(root), "train", max_examples=20)
    assert first.count == 20 and first.counts == (9, 9, 2) and len(first.shards) == 3


def test_index_is_rebuilt_when_missing_or_stale_and_the_script_writes_folders(folder, tmp_path):
    # The command line, with one folder per split; its index removed, then rebuilt.
    from benchmarks.make_tfrecords import main

    out = tmp_path / "per_split"
    main([str(folder), str(out), "--splits=test", "--shards=3", "--layout=folders"])
    index = out / "test" / "tfascl-index.json"
    assert sorted(os.listdir(out / "test")) == [
        "test-00000-of-00003.tfrecord", "test-00001-of-00003.tfrecord",
        "test-00002-of-00003.tfrecord", "tfascl-index.json",
    ]  # fmt: skip
    written = json.loads(index.read_text())
    index.unlink()
    main(["--index_only", str(out), "--splits=test"])  # Model Garden's shards get one so
    assert json.loads(index.read_text()) == {**written, "class_names": []}  # (no names)
    index.unlink()
    assert data.open_images(str(out), "test").count == 12  # or tfascl-train counts them
    assert json.loads(index.read_text())["shards"] == written["shards"]
    # Asked for a label feature the records lack: unlabelled, and counted once for it.
    unlabelled = data.open_images(str(out), "test", tfrecord_keys=(None, "label"))
    assert not unlabelled.labelled and unlabelled.class_names == []
    stamp = index.stat().st_mtime_ns
    assert not data.open_images(str(out), "test", tfrecord_keys=(None, "label")).labelled
    assert index.stat().st_mtime_ns == stamp  # not counted again
    assert not data.open_images(str(out), "test").labelled  # no key given: the index's
    labels = (None, "image/class/label")
    assert data.open_images(str(out), "test", tfrecord_keys=labels).labelled  # counted again
    assert data.open_images(str(out), "test").labelled
    # A shard rewritten with fewer records makes the index stale: counted again.
    shard = out / "test" / "test-00002-of-00003.tfrecord"
    first = next(iter(tf.data.TFRecordDataset(str(shard)))).numpy()
    with tf.io.TFRecordWriter(str(shard)) as writer:
        writer.write(first)
    assert data.open_images(str(out), "test").count == 12 - 4 + 1
    # A truncated shard is one error naming it (a damaged file, not a bad image).
    shard.write_bytes(shard.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"test-00002-of-00003\.tfrecord is damaged"):
        data.open_images(str(out), "test")
    with pytest.raises(ValueError, match="No TFRecord shards of split 'val'"):
        data.open_images(str(out), "val")


def test_the_eval_stream_decodes_the_same_pixels_as_the_folder_stream(folder, shards):
    root, written = shards
    files = data.open_images(str(root), "test")
    images = data.open_images(str(folder), "test")
    np.testing.assert_allclose([files.mean, files.std], [images.mean, images.std], rtol=1e-6)

    def pixels_and_labels(split):
        batches = list(data.eval_dataset(split, 5, 24, crop_fraction=0.875))
        return [np.concatenate(part) for part in zip(*batches)]

    pixels, labels = pixels_and_labels(files)
    reference, reference_labels = pixels_and_labels(images)
    order = [list(map(str, images.paths)).index(str(folder / "test" / n)) for n in written["test"]]
    np.testing.assert_array_equal(labels, reference_labels[order])
    np.testing.assert_allclose(pixels, reference[order], atol=1e-6)


def test_a_bad_record_is_skipped_and_named_in_memory_and_streamed(folder, shards, caplog):
    root, written = shards
    bad = written["train"].index(BAD)
    # In memory: decoded with Pillow, the bad record left out and named.
    images = data.load_images(str(root), "train")
    assert len(images) == 35 and images.labels.tolist().count(1) == 11
    assert len(images.skipped) == 1 and f"({BAD})" in images.skipped[0]
    # Streamed: one epoch of 3 steps reads every record; the bad one is dropped (the epoch
    # borrows one record of the next) and named once, with its shard and file name.
    files = data.open_images(str(root), "train")
    skipped = data.SkippedRecords(files)
    batches = list(data.pretrain_dataset(files, 12, 16, seed=1, epochs=(0, 1), skipped=skipped,
                                         jit_compile=False))  # fmt: skip
    assert len(batches) == 3 and all(b[0][0].shape == (12, 16, 16, 3) for b in batches)
    schedule = tfrecord.epoch_schedule(files, 12, 1, None)
    assert sorted(schedule(0)) == list(range(36))
    shard, number = files.locate(bad)
    names = skipped.check(0, schedule(0))
    assert names == [f"train-0000{shard}-of-00004 record {number} ({BAD})"]
    assert "skipped 1 of 36 records" in caplog.text and names[0] in caplog.text
    # Every other record was decoded in epoch 0.
    first = skipped.first_decoded.numpy()
    assert (first == 0).sum() == 35 and first[bad] > 0


def test_pipelines_read_disjoint_shards_and_a_resumed_epoch_is_exact(shards):
    root, _ = shards
    files = data.open_images(str(root), "train")
    starts = files.starts
    shard_of = np.searchsorted(starts, np.arange(36), side="right") - 1
    read = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(2, pipeline, 2)
        indices = tfrecord.epoch_schedule(files, 12, 0, context)(3)
        assert len(indices) == 18 and set(shard_of[indices]) == {pipeline, pipeline + 2}
        read.append(set(indices))
        # The real pipeline decodes exactly the scheduled records (the bad one fails).
        skipped = data.SkippedRecords(files)
        batches = data.pretrain_dataset(files, 12, 16, seed=0, epochs=(3, 4), skipped=skipped,
                                        input_context=context, jit_compile=False)  # fmt: skip
        assert sum(1 for _ in batches) == 3  # 3 steps x 1 replica of this pipeline
        decoded = set(np.flatnonzero(skipped.first_decoded.numpy() == 3))
        assert decoded <= set(indices) and len(set(indices) - decoded) <= 1
    assert not read[0] & read[1] and len(read[0] | read[1]) == 36

    # Resumed after one step of epoch 0: the rest of that epoch and the next, bit for bit;
    # and epoch 1 alone is epoch 1 of the longer stream. (On the test split: a bad record
    # shifts the rest of the stream by one example, as a bad file does in a folder.)
    test = data.open_images(str(root), "test")

    def batches(**kwargs):
        stream = data.pretrain_dataset(test, 4, 16, seed=0, jit_compile=False, **kwargs)
        return [(q.numpy(), k.numpy(), y.numpy()) for (q, k), y in stream]

    whole = batches(epochs=(0, 2))
    resumed, later = batches(epochs=(0, 2), skip=1), batches(epochs=(1, 2))
    assert (len(whole), len(resumed), len(later)) == (6, 5, 3)
    for a, b in [*zip(whole[1:], resumed), *zip(whole[3:], later)]:
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(whole[0][0], whole[3][0])  # epochs differ
    assert sorted(np.concatenate([b[2] for b in whole[:3]])) == sorted([0, 1, 2] * 4)


def test_the_augmentation_recipe_reaches_the_shards_pipeline(shards):
    # --crop_scale/--flip_prob/... (AugmentRecipe) apply to TFRecord shards as to folders:
    # whole-image crops and no random part leave the query and the key the same image.
    from tfascl.data.recipe import AugmentRecipe

    root, _ = shards
    files = data.open_images(str(root), "test")
    still = AugmentRecipe(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0,
        gray_prob=0.0, blur_prob=0.0,
    )  # fmt: skip

    def first(recipe):
        stream = data.pretrain_dataset(
            files, 4, 16, seed=0, epochs=(0, 1), key_augment="strong", jit_compile=False,
            recipe=recipe,
        )  # fmt: skip
        (query, key), _ = next(iter(stream))
        return query.numpy(), key.numpy()

    query, key = first(still)
    np.testing.assert_allclose(query, key, atol=1e-5)
    query, key = first(None)  # the standard recipe: crops, flips and colour differ
    assert np.abs(query - key).max() > 0.1


def test_gzip_shards_read_as_the_plain_ones_and_a_mixed_split_is_refused(folder, shards, tmp_path):
    # Shards written with TFRecordOptions("GZIP") (TFDS and Beam pipelines can write them):
    # the reader tells them by their first bytes; the same records, pixels and labels.
    plain_root, _ = shards
    root = tmp_path / plain_root.name  # the same name: the same statistics (stats_for_name)
    # (Both splits: the normalisation comes from the train split, as for folders.)
    data.write_tfrecords(str(folder), str(root), ("train", "test"), shards=2, compression="GZIP")
    found = tfrecord.find_shards(str(root), "test")
    assert found.compression == "GZIP"
    with open(found.paths[0], "rb") as file:
        assert file.read(2) == b"\x1f\x8b"
    gzipped = data.open_images(str(root), "test")
    plain = data.open_images(str(plain_root), "test")
    assert gzipped.count == plain.count == 12 and gzipped.compression == "GZIP"

    def by_label(files):  # the two writes deal records to shards alike, but check the set
        batches = list(data.eval_dataset(files, 6, 24, crop_fraction=0.875))
        pixels, labels = (np.concatenate(part) for part in zip(*batches))
        return sorted((int(y), float(x.sum())) for x, y in zip(pixels, labels))

    np.testing.assert_allclose(by_label(gzipped), by_label(plain), rtol=1e-6)
    loaded = data.load_images(str(root), "test")
    assert len(loaded.images) == 12
    # A split mixing both kinds names the problem instead of failing mid-epoch.
    shutil.copy(
        tfrecord.find_shards(str(plain_root), "test").paths[0], root / "test-00009-of-00010"
    )
    with pytest.raises(ValueError, match="mix GZIP-compressed and plain"):
        tfrecord.find_shards(str(root), "test")
