"""Tests of load_images on the shared CIFAR-10 folder, hostile folders, TFDS and digits."""

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image, features

from tfascl.data import (
    DATASET_STATS,
    DatasetNotFoundError,
    estimate_stats,
    folders,
    load_images,
    select_subset,
    stats_for_name,
)

CIFAR10_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()


@pytest.fixture(autouse=True, scope="module")
def private_cache(tmp_path_factory):
    """Keeps the decode cache of these tests out of the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TFASCL_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _save(path: Path, image: Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def _rgb(value, size=(32, 32)) -> Image.Image:
    return Image.new("RGB", size, value)


# ------------------------------------------------------------------------------------
# The shared CIFAR-10 folder.


@pytest.fixture(scope="module")
def cifar10(cifar10_dir) -> Path:
    return cifar10_dir  # skips, or fails in CI, when the folder is absent


@pytest.mark.parametrize("split,per_class", [("train", 5000), ("test", 1000)])
def test_cifar10_listing_counts_and_labels(cifar10, split, per_class):
    listing = folders.scan_split(folders.split_dir(str(cifar10), split))
    assert listing.class_names == CIFAR10_CLASSES == sorted(os.listdir(cifar10 / split))
    assert len(listing.paths) == 10 * per_class
    np.testing.assert_array_equal(np.bincount(listing.labels), [per_class] * 10)
    parents = [Path(p).parent.name for p in listing.paths]
    assert listing.labels == [CIFAR10_CLASSES.index(name) for name in parents]


def test_cifar10_subset_decodes_the_right_files(cifar10):
    data = load_images(str(cifar10), "test", max_examples=200, seed=3)
    assert data.images.shape == (200, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(data.labels), [20] * 10)
    assert data.class_names == CIFAR10_CLASSES and data.skipped == []
    assert (data.mean, data.std) == DATASET_STATS["cifar10"]
    listing = folders.scan_split(str(cifar10 / "test"))
    chosen = select_subset(np.asarray(listing.labels), 10_000, max_examples=200, seed=3)
    for row in (0, 77, 199):
        path = listing.paths[chosen[row]]
        np.testing.assert_array_equal(data.images[row], np.asarray(Image.open(path).convert("RGB")))
        assert data.labels[row] == CIFAR10_CLASSES.index(Path(path).parent.name)


# ------------------------------------------------------------------------------------
# A folder with every kind of bad file.


def _plant_hostile_folder(root: Path) -> tuple[list[str], list[str]]:
    """Writes a labelled split with awkward files; returns (readable, unreadable) names."""
    cats = root / "train" / "cats"
    _save(cats / "good.jpg", _rgb((200, 30, 30)), quality=95)
    _save(cats / "gray.png", Image.new("L", (32, 32), 90))
    _save(cats / "rgba.png", Image.new("RGBA", (32, 32), (10, 200, 10, 0)))
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, 0, 0, 250] + [0] * 762)
    _save(cats / "palette.png", palette, transparency=0)
    deep = Image.fromarray(np.full((32, 32), 128 * 257, np.uint16))  # 16-bit mid grey
    _save(cats / "deep.png", deep)
    _save(cats / "cmyk.jpg", Image.new("CMYK", (32, 32), (0, 255, 255, 0)))
    _save(cats / "one_pixel.png", _rgb((1, 2, 3), (1, 1)))
    _save(cats / "huge.jpg", _rgb((40, 80, 120), (3000, 2000)))
    frames = [_rgb((255, 255, 0)), _rgb((0, 0, 255))]
    frames[0].save(cats / "anim.gif", save_all=True, append_images=frames[1:])
    _save(cats / "pic.bmp", _rgb((5, 6, 7)))
    readable = ["anim.gif", "cmyk.jpg", "deep.png", "gray.png", "good.jpg", "huge.jpg"]
    readable += ["one_pixel.png", "palette.png", "pic.bmp", "rgba.png"]
    if features.check("webp"):
        _save(cats / "pic.webp", _rgb((9, 9, 9)))
        readable.append("pic.webp")
    os.symlink(cats / "good.jpg", cats / "link.jpg")
    readable.append("link.jpg")
    # Unreadable files with image extensions.
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    _save(cats / "whole.jpg", Image.fromarray(noise))
    data = (cats / "whole.jpg").read_bytes()
    (cats / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (cats / "whole.jpg").unlink()
    (cats / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (cats / "text.jpg").write_bytes(b"this is not an image")
    (cats / "empty.jpeg").write_bytes(b"")
    os.symlink(cats / "missing.png", cats / "broken_link.png")
    unreadable = ["broken_link.png", "corrupt.png", "empty.jpeg", "text.jpg", "truncated.jpg"]
    # Ignored: hidden files and folders, files without an image extension.
    _save(cats / ".hidden.jpg", _rgb((0, 0, 0)))
    _save(cats / ".thumbs" / "t.jpg", _rgb((0, 0, 0)))
    (cats / "notes.txt").write_text("not counted")
    _save(root / "train" / ".git" / "x.png", _rgb((0, 0, 0)))
    dogs = root / "train" / "dogs"
    _save(dogs / "a.png", _rgb((0, 0, 0)))
    _save(dogs / "nested" / "b.png", _rgb((255, 255, 255)))
    return sorted(readable), unreadable


def test_hostile_folder_loads_readable_files_and_names_the_rest(tmp_path, caplog):
    readable, unreadable = _plant_hostile_folder(tmp_path / "pets")
    with caplog.at_level(logging.WARNING):
        data = load_images(str(tmp_path / "pets"))
    n_cats = len(readable)
    assert data.images.shape == (n_cats + 2, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.class_names == ["cats", "dogs"]
    np.testing.assert_array_equal(data.labels, [0] * n_cats + [1, 1])
    assert sorted(Path(p).name for p in data.skipped) == unreadable

    warnings = [r.getMessage() for r in caplog.records if "could not be read" in r.getMessage()]
    assert len(warnings) == 1
    assert f"Skipped {len(unreadable)} of {n_cats + 2 + len(unreadable)}" in warnings[0]
    assert all(name in warnings[0] for name in unreadable)

    row = {name: i for i, name in enumerate(readable)}
    np.testing.assert_array_equal(data.images[row["deep.png"]], 128)  # rescaled, not clipped
    assert np.all(data.images[row["gray.png"]] == 90)
    np.testing.assert_array_equal(data.images[row["rgba.png"]][0, 0], [10, 200, 10])
    np.testing.assert_array_equal(data.images[row["palette.png"]][0, 0], [0, 0, 250])
    np.testing.assert_array_equal(
        data.images[row["one_pixel.png"]], np.broadcast_to([1, 2, 3], (32, 32, 3))
    )
    np.testing.assert_array_equal(data.images[row["link.jpg"]], data.images[row["good.jpg"]])
    assert np.abs(data.images[row["huge.jpg"]].astype(int) - [40, 80, 120]).max() <= 3
    assert np.abs(data.images[row["cmyk.jpg"]].astype(int) - [255, 0, 0]).max() <= 3
    np.testing.assert_array_equal(data.images[row["anim.gif"]][0, 0], [255, 255, 0])
    assert data.images[n_cats + 1].min() == 255  # dogs/nested/b.png, found recursively


def test_image_size_resizes_everything(tmp_path):
    _save(tmp_path / "d" / "a" / "wide.png", _rgb((9, 9, 9), (60, 20)))
    _save(tmp_path / "d" / "a" / "tall.jpg", _rgb((9, 9, 9), (7, 50)))
    data = load_images(str(tmp_path / "d"), image_size=16)
    assert data.images.shape == (2, 16, 16, 3)


def test_nothing_written_into_the_dataset_folder(tmp_path):
    _save(tmp_path / "d" / "train" / "a" / "x.png", _rgb((1, 1, 1)))
    before = sorted(str(p) for p in (tmp_path / "d").rglob("*"))
    load_images(str(tmp_path / "d"))
    assert sorted(str(p) for p in (tmp_path / "d").rglob("*")) == before


@pytest.mark.parametrize(
    "layout,split,message",
    [
        ({}, "train", "empty"),
        ({"train/a/x.png": True}, "test", "Split folder not found"),
        ({"train/a/x.png": True, "train/b/notes.txt": False}, "train", "Class folder holds no"),
        ({"train/a/x.jpg": False}, "train", "No readable images"),
        ({"train/notes.txt": False}, "train", "No images in"),
    ],
)
def test_bad_folders_raise_one_line_errors_naming_the_path(tmp_path, layout, split, message):
    root = tmp_path / "data"
    root.mkdir()
    for name, is_image in layout.items():
        if is_image:
            _save(root / name, _rgb((1, 2, 3)))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("text")
    with pytest.raises(ValueError, match=message) as error:
        load_images(str(root), split)
    assert str(root) in str(error.value) and "\n" not in str(error.value)


def test_missing_folder_and_unknown_name_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_images(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="digits") as error:
        load_images("definitely_not_a_dataset_name")
    assert "cifar10" in str(error.value) and "folder" in str(error.value)


def test_flat_folder_is_unlabelled_and_class_root_serves_as_split(tmp_path):
    for i in range(3):
        _save(tmp_path / "flat" / f"{i}.png", _rgb((i, i, i)))
    flat = load_images(str(tmp_path / "flat"))
    assert flat.labels is None and flat.class_names == [] and len(flat) == 3
    for name in ("x", "y"):
        _save(tmp_path / "classes" / name / "0.png", _rgb((5, 5, 5)))
    classes = load_images(str(tmp_path / "classes"), "train")
    assert classes.class_names == ["x", "y"] and classes.labels.tolist() == [0, 1]


def test_cache_is_reused_and_invalidated_by_file_changes(tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("TFASCL_CACHE", str(cache_dir))
    image = tmp_path / "d" / "train" / "a" / "x.png"
    _save(image, _rgb((10, 10, 10)))
    assert load_images(str(tmp_path / "d")).images[0, 0, 0, 0] == 10
    entries = sorted(p.name for p in cache_dir.iterdir())
    assert entries and all(not name.startswith(".") for name in entries)
    assert load_images(str(tmp_path / "d")).images[0, 0, 0, 0] == 10
    assert sorted(p.name for p in cache_dir.iterdir()) == entries  # hit, nothing new
    _save(image, _rgb((99, 99, 99)))
    os.utime(image, ns=(time.time_ns() + 10**9,) * 2)
    assert load_images(str(tmp_path / "d")).images[0, 0, 0, 0] == 99
    monkeypatch.setenv("TFASCL_CACHE", "off")
    assert load_images(str(tmp_path / "d")).images[0, 0, 0, 0] == 99


# ------------------------------------------------------------------------------------
# Statistics.


def test_stats_for_known_names():
    assert stats_for_name("data/CIFAR-10") == DATASET_STATS["cifar10"]
    assert stats_for_name("cifar100") == DATASET_STATS["cifar100"]
    assert stats_for_name("tiny-imagenet-200") == DATASET_STATS["tiny_imagenet"]
    assert stats_for_name("imagenet2012") == DATASET_STATS["imagenet"]
    assert stats_for_name("stl10") == DATASET_STATS["stl10"]
    assert stats_for_name("cifar10_subset") is None and stats_for_name("my_photos") is None


def test_folder_stats_come_from_the_train_split(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for i in range(n):
            pixels = rng.integers(0, 256, (8, 8, 3), np.uint8)
            _save(tmp_path / "mine" / split / "a" / f"{i}.png", Image.fromarray(pixels))
    train = load_images(str(tmp_path / "mine"), "train")
    test = load_images(str(tmp_path / "mine"), "test")
    pixels = train.images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(train.mean, pixels.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(train.std, pixels.std(axis=0), atol=1e-9)
    assert (test.mean, test.std) == (train.mean, train.std)
    assert estimate_stats(train.images) == (train.mean, train.std)
    _save(tmp_path / "cifar10" / "a" / "x.png", _rgb((0, 0, 0)))
    named = load_images(str(tmp_path / "cifar10"))
    assert (named.mean, named.std) == DATASET_STATS["cifar10"]


# ------------------------------------------------------------------------------------
# TFDS.


@pytest.mark.timeout(60)
def test_missing_tfds_dataset_fails_offline_without_downloading(tmp_path):
    started = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as error:
        load_images("cifar10", data_dir=str(tmp_path))
    message = str(error.value)
    assert isinstance(error.value, ValueError) and "\n" not in message
    assert str(tmp_path) in message and "tfds build cifar10" in message
    assert list(tmp_path.iterdir()) == []  # nothing fetched or created
    assert time.monotonic() - started < 30


class TfasclTinyImages(tfds.core.GeneratorBasedBuilder):
    """A prepared-on-the-spot TFDS dataset: pixel colour channel == label."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(30), "test": self._generate_examples(9)}

    def _generate_examples(self, count):
        for i in range(count):
            image = np.zeros((8, 8, 3), np.uint8)
            image[..., i % 3] = 100 + i
            yield i, {"image": image, "label": i % 3}


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TfasclTinyImages(data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    return data_dir


def test_prepared_tfds_dataset_loads_a_stratified_subset(tiny_tfds_dir):
    data = load_images("tfascl_tiny_images", "train", data_dir=tiny_tfds_dir, max_examples=12)
    assert data.images.shape == (12, 8, 8, 3) and data.class_names == ["red", "green", "blue"]
    np.testing.assert_array_equal(np.bincount(data.labels), [4, 4, 4])
    np.testing.assert_array_equal(data.images[:, 0, 0].argmax(axis=1), data.labels)
    test = load_images("tfascl_tiny_images", "test", data_dir=tiny_tfds_dir)
    assert len(test) == 9 and (test.mean, test.std) != ((0,) * 3, (0,) * 3)
    full_train = load_images("tfascl_tiny_images", "train", data_dir=tiny_tfds_dir)
    assert (test.mean, test.std) == (full_train.mean, full_train.std)
    with pytest.raises(ValueError, match="available: test, train"):
        load_images("tfascl_tiny_images", "validation", data_dir=tiny_tfds_dir)


def test_prepared_tfds_dataset_streams_every_record_with_its_label(tiny_tfds_dir):
    from tfascl import data

    tf.random.set_seed(7)  # a global seed, as a notebook sets: the stream must not mind
    files = data.open_images("tfascl_tiny_images", "train", data_dir=tiny_tfds_dir)
    assert files.count == 30 and files.labelled and files.class_names == ["red", "green", "blue"]
    assert data.estimated_decoded_bytes(files, None) == 30 * 8 * 8 * 3
    stream = data.stream.stream_pretrain_dataset(
        files, 8, 8, seed=2, epochs=(0, 2), colour=False, jit_compile=False
    )
    batches = list(stream.take(6))  # 30 // 8 = 3 steps per epoch
    mean, std = np.array(files.mean), np.array(files.std)
    for (query, key), labels in batches:
        for view in (query, key):  # the one lit channel of each crop is its label
            pixels = view.numpy() * std + mean
            np.testing.assert_array_equal(pixels.mean(axis=(1, 2)).argmax(axis=1), labels)
    # Resumed after one step, the stream is the rest of the same epochs.
    resumed = data.stream.stream_pretrain_dataset(
        files, 8, 8, seed=2, epochs=(0, 2), skip=1, colour=False, jit_compile=False
    )
    for (_, expected), ((_, got),) in zip(batches[1:], [[b] for b in resumed.take(5)]):
        np.testing.assert_array_equal(expected.numpy(), got.numpy())
    # Epoch 1 alone (a run resumed at an epoch's start) is epoch 1 of the longer stream.
    later = data.stream.stream_pretrain_dataset(
        files, 8, 8, seed=2, epochs=(1, 2), colour=False, jit_compile=False
    )
    for ((query, key), labels), ((query_1, key_1), labels_1) in zip(batches[3:], later):
        for a, b in ((query, query_1), (key, key_1), (labels, labels_1)):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    test = data.open_images("tfascl_tiny_images", "test", data_dir=tiny_tfds_dir)
    streamed = [(x.numpy(), lab.numpy()) for x, lab in data.eval_dataset(test, 4, 8)]
    in_memory = load_images("tfascl_tiny_images", "test", data_dir=tiny_tfds_dir)
    np.testing.assert_array_equal(np.concatenate([lab for _, lab in streamed]), in_memory.labels)
    pixels = np.concatenate([x for x, _ in streamed]) * std + mean  # same order, same images
    np.testing.assert_allclose(pixels * 255, in_memory.images, atol=0.01)


# ------------------------------------------------------------------------------------
# scikit-learn digits.


def test_digits_splits():
    train, test = load_images("digits", "train"), load_images("digits", "test")
    assert len(train) + len(test) == 1797 and len(test) == 360
    for data in (train, test):
        assert data.images.shape[1:] == (32, 32, 3) and data.images.dtype == np.uint8
        assert data.class_names == [str(d) for d in range(10)]
        assert set(data.labels.tolist()) == set(range(10))
        assert np.array_equal(data.images[..., 0], data.images[..., 2])  # grey digits
    assert (test.mean, test.std) == (train.mean, train.std) == estimate_stats(train.images)
    small = load_images("digits", max_examples=100, seed=1)
    np.testing.assert_array_equal(np.bincount(small.labels), [10] * 10)
    with pytest.raises(ValueError, match="digits"):
        load_images("digits", "validation")


# ------------------------------------------------------------------------------------
# Subsets.


def test_select_subset_is_stratified_seeded_and_bounded():
    labels = np.repeat([0, 1, 2], [60, 30, 10])
    chosen = select_subset(labels, 100, max_examples=50, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[chosen]), [30, 15, 5])
    assert np.array_equal(chosen, select_subset(labels, 100, max_examples=50, seed=0))
    assert not np.array_equal(chosen, select_subset(labels, 100, max_examples=50, seed=1))
    assert len(select_subset(labels, 100, fraction=0.1)) == 10
    assert len(select_subset(labels, 100, fraction=0.5, max_examples=20)) == 20
    assert len(select_subset(None, 100, max_examples=7)) == 7
    assert len(select_subset(labels, 100)) == 100
    with pytest.raises(ValueError, match="fraction"):
        select_subset(labels, 100, fraction=1.5)


def test_block_shuffle_permutes_within_blocks_by_its_seed():
    from tfascl.data.stream import block_shuffle

    records = tf.data.Dataset.range(10).map(lambda i: (i, 100 + i))

    def order(seed):
        return [int(a) for a, _ in block_shuffle(records, tf.constant(seed, tf.int64), 4)]

    first = order([1, 2])
    assert first == order([1, 2]) and first != order([1, 3])
    # Blocks [0-3], [4-7], [8-9] keep their members; pairs stay together.
    assert [sorted(first[i : i + 4]) for i in (0, 4, 8)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(b == 100 + a for a, b in block_shuffle(records, tf.constant([1, 2], tf.int64), 4))
