"""Streaming input and the in-memory pipeline's graph: shares across replicas and workers,
decode fused with the crop, bad files, exact skipping, no large graph constants."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from benchmarks.image_folder import write_image_folder
from tfascl import data
from tfascl.data import augment, stream


def const_sizes(dataset):
    """Bytes of every Const node in the functions a dataset was traced with (nested too).

    Captured variables stay placeholders here; a `tf.constant` of the images made inside a
    dataset function (the old pipeline) is a Const node of their full size.
    """
    sizes, pending = [], [dataset]
    while pending:
        current = pending.pop()
        pending.extend(current._inputs())
        for wrapper in current._functions():
            graph = wrapper.function.graph.as_graph_def()
            nodes = list(graph.node)
            for function in graph.library.function:
                nodes += list(function.node_def)
            for node in nodes:
                if node.op == "Const":
                    tensor = node.attr["value"].tensor
                    sizes.append(len(tensor.tensor_content) + sum(map(len, tensor.string_val)))
    return sizes


def test_in_memory_images_never_become_a_graph_constant():
    # 20 MB of pixels: as a constant (the old pipeline) it would be one 20 MB node.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (1700, 64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 1700)
    image_set = data.ImageSet(images, labels, [], (0.5,) * 3, (0.25,) * 3, "noise")
    dataset = data.pretrain_dataset(image_set, 64, 32, epochs=(0, 2), jit_compile=False)
    sizes = const_sizes(dataset)
    assert sizes and max(sizes) < 1 << 20, max(sizes)
    # ...and it still yields the stored pixels: the first raw batch is a gather of them.
    raw = data.pretrain_dataset(image_set, 64, 32, epochs=(0, 1), augment_on="device")
    batch, batch_labels = next(iter(raw))
    order = stream.replica_shares(1700, 64, stream.epoch_seed(0, 0))
    indices = next(iter(order))[2].numpy()
    np.testing.assert_array_equal(batch.numpy(), images[indices])
    np.testing.assert_array_equal(batch_labels.numpy(), labels[indices])
    assert max(const_sizes(data.eval_dataset(image_set, 100, 64))) < 1 << 20


def shares_of(count, batch, pipelines, replicas, skip=0):
    """{(step, replica): indices} over every pipeline."""
    found = {}
    for pipeline in range(pipelines):
        context = tf.distribute.InputContext(pipelines, pipeline, replicas)
        seed = stream.epoch_seed(3, 1)
        for step, replica, indices in stream.replica_shares(
            count, batch, seed, skip=skip, input_context=context
        ):
            key = (int(step), int(replica))
            assert key not in found
            found[key] = (pipeline, indices.numpy())
    return found


def test_replica_shares_split_each_global_batch_across_workers_and_replicas():
    one = shares_of(103, 12, 1, 1)
    four = shares_of(103, 12, 2, 4)  # 2 workers x 2 replicas
    assert sorted(one) == [(s, 0) for s in range(8)]  # 103 // 12 steps, remainder dropped
    assert sorted(four) == [(s, r) for s in range(8) for r in range(4)]
    for step in range(8):
        whole = one[(step, 0)][1]
        parts = [four[(step, r)] for r in range(4)]
        # Replica r holds slice r of the one-device batch; workers hold their replicas'.
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole)
        assert [p[0] for p in parts] == [0, 0, 1, 1]
    per_worker = [np.concatenate([v[1] for k, v in four.items() if v[0] == w]) for w in range(2)]
    assert not set(per_worker[0]) & set(per_worker[1])
    assert len(set(np.concatenate(per_worker))) == 8 * 12
    # Skipping leaves out whole global batches, on every worker alike.
    skipped = shares_of(103, 12, 2, 4, skip=5)
    assert sorted(skipped) == [(s, r) for s in range(5, 8) for r in range(4)]
    for key, (_, indices) in skipped.items():
        np.testing.assert_array_equal(indices, four[key][1])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder of JPEGs of four sizes, a PNG, a GIF and a grayscale JPEG, and two bad files."""
    root = tmp_path_factory.mktemp("varied")
    write_image_folder(root, 90, [(350, 400), (300, 500), (480, 320), (96, 96)], classes=3)
    Image.new("RGB", (120, 70), (200, 30, 10)).save(root / "train" / "c0" / "red.png")
    Image.new("L", (64, 80), 128).save(root / "train" / "c1" / "gray.jpg")
    Image.new("P", (50, 40), 3).save(root / "train" / "c2" / "palette.gif")
    (root / "train" / "c1" / "notes.jpg").write_bytes(b"not an image at all")
    whole = (root / "train" / "c0" / "000000.jpg").read_bytes()
    (root / "train" / "c2" / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    return root


def test_stream_trains_on_every_format_and_names_bad_files_once_per_epoch(folder):
    files = data.open_images(str(folder), "train")
    assert files.count == 95 and files.class_names == ["c0", "c1", "c2"]
    skipped = data.SkippedFiles(files)
    dataset = data.pretrain_dataset(
        files, 8, 24, seed=1, epochs=(0, 2), skipped=skipped, jit_compile=False
    )
    batches = list(dataset.take(2 * (95 // 8)))
    (query, key), labels = batches[0]
    assert query.shape == key.shape == (8, 24, 24, 3) and labels.shape == (8,)
    assert all(np.isfinite(q.numpy()).all() for (q, _), _ in batches)
    assert set(np.concatenate([lab.numpy() for _, lab in batches])) <= {0, 1, 2}
    bad = {
        str(folder / "train" / "c1" / "notes.jpg"),
        str(folder / "train" / "c2" / "truncated.jpg"),
    }
    for epoch in range(2):
        scheduled = np.concatenate(
            [i.numpy() for _, _, i in stream.replica_shares(95, 8, stream.epoch_seed(1, epoch))]
        )
        names = set(skipped.check(epoch, scheduled))
        assert names == bad & {str(files.paths[i]) for i in scheduled}
    # Evaluation reads every good file once, in order.
    evaluated = sum(int(x.shape[0]) for x, _ in data.eval_dataset(files, 16, 24))
    assert evaluated == 93


def test_resumed_stream_is_exactly_the_rest_of_the_epoch(tmp_path):
    # (With undecodable files before the resume point the rest shifts by their number.)
    write_image_folder(tmp_path, 50, [(60, 80), (90, 50)], classes=3)
    files = data.open_images(str(tmp_path), "train")
    full = data.pretrain_dataset(files, 8, 16, seed=4, epochs=(1, 3), jit_compile=False)
    resumed = data.pretrain_dataset(files, 8, 16, seed=4, epochs=(1, 3), skip=5, jit_compile=False)
    expected = list(full.take(12))[5:]
    got = list(resumed.take(7))
    for ((q1, k1), l1), ((q2, k2), l2) in zip(expected, got, strict=True):
        np.testing.assert_array_equal(l1.numpy(), l2.numpy())
        np.testing.assert_array_equal(q1.numpy(), q2.numpy())
        np.testing.assert_array_equal(k1.numpy(), k2.numpy())


def jpeg_bytes(height, width, seed=0):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_decode_and_crop_equals_decoding_whole_then_cropping():
    contents = tf.constant(jpeg_bytes(300, 420))
    box = tf.constant([[31.6, 57.2, 150.4, 201.0]])  # top, left, h, w (float, rounded inside)
    fused = stream.decode_crops(contents, lambda h, w: box, 40)[0].numpy()
    whole = tf.io.decode_jpeg(contents, channels=3)[31 : 31 + 150, 57 : 57 + 201]
    reference = tf.image.resize(whole, [40, 40], antialias=True).numpy()
    # decode_and_crop_jpeg may round chroma upsampling at the window's edge differently.
    assert np.abs(fused - reference).mean() < 1.0 and np.abs(fused - reference).max() < 12


def test_random_crop_boxes_keep_each_images_own_aspect_ratio():
    # Boxes drawn on a 200 x 600 image: area in [0.2, 1] of it, ratio in [3/4, 4/3].
    boxes = []
    for index in range(300):
        seed = tf.constant([7, index], tf.int64)
        boxes.append(stream.random_boxes(seed)(tf.constant(200.0), tf.constant(600.0)).numpy())
    boxes = np.concatenate(boxes)
    top, left, height, width = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= 200 + 1e-3).all() and (left + width <= 600 + 1e-3).all()
    area = height * width / (200 * 600)
    assert area.min() >= 0.2 - 1e-4 and area.max() <= 1 + 1e-4
    ratio = width / height
    assert ratio.min() >= 0.75 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
    # Crops reach the whole width: a square centre crop at load would keep them in 200-400.
    assert left.min() < 100 and (left + width).max() > 500


def test_an_examples_crop_draws_are_the_same_alone_or_with_its_share():
    # A folder share draws its examples' uniforms in one op; a TFRecord record draws its
    # own. Both must give example p of an epoch the same boxes, whatever the share.
    share = stream.crop_uniforms(5, 2, 40, 16).numpy()
    assert share.shape == (16, 2, 4 * augment.CROP_ATTEMPTS)
    for k in (0, 7, 15):
        np.testing.assert_array_equal(stream.crop_uniforms(5, 2, 40 + k, 1).numpy()[0], share[k])
    # Other positions, epochs and seeds draw other values (no two examples share a box).
    assert not np.array_equal(share[0], share[1])
    assert not np.array_equal(stream.crop_uniforms(5, 3, 40, 1).numpy()[0], share[0])
    assert not np.array_equal(stream.crop_uniforms(6, 2, 40, 1).numpy()[0], share[0])
    assert 0.0 <= share.min() and share.max() < 1.0 and abs(share.mean() - 0.5) < 0.05
    # The pipeline's views are the boxes of these draws, decoded separately per view.
    contents = tf.constant(jpeg_bytes(300, 420))
    views = stream.seeded_crops(contents, tf.constant(2, tf.int64), tf.constant(47, tf.int64),
                                tf.constant(0, tf.int64), 5, 32, None, None)  # fmt: skip
    expected = stream.decode_crops(contents, stream.uniform_boxes(share[7]), 32)
    assert len(views) == 2
    np.testing.assert_array_equal(np.stack([v.numpy() for v in views]), expected.numpy())


def test_eval_crop_fraction_is_resize_then_centre_crop():
    # Resize(256) + CenterCrop(224) of a 256 x 320 image is its central 224 x 224 square.
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (1, 256, 320, 3)).astype(np.float32)
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    out = augment.eval_transform(image, 224, mean, std, crop_fraction=0.875).numpy()[0]
    np.testing.assert_allclose(out * 255.0, image[0, 16:240, 48:272], atol=1e-3)
    # The streamed eval crop is the same window (decoded from PNG: lossless).
    buffer = io.BytesIO()
    Image.fromarray(image[0].astype(np.uint8)).save(buffer, format="PNG")
    crop = stream.decode_crops(tf.constant(buffer.getvalue()), stream.centre_box(0.875), 224)
    np.testing.assert_allclose(crop[0].numpy(), image[0, 16:240, 48:272], atol=1e-3)


def test_open_images_joins_labelled_and_unlabelled_splits(tmp_path):
    write_image_folder(tmp_path, 6, [(40, 40)], classes=2, split="train")
    write_image_folder(tmp_path, 4, [(40, 40)], split="unlabelled", labelled=False)
    files = data.open_images(str(tmp_path), "train+unlabelled")
    assert files.count == 10 and files.class_names == ["c0", "c1"]
    assert sorted(files.labels.tolist()) == [-1] * 4 + [0] * 3 + [1] * 3
    labelled = data.labelled_only(files)
    assert labelled.count == 6 and (labelled.labels >= 0).all()
    assert all("unlabelled" not in str(p) for p in labelled.paths)
    in_memory = data.load_images(str(tmp_path), "train+unlabelled")
    assert len(in_memory) == 10 and sorted(in_memory.labels.tolist()) == sorted(files.labels)


def test_estimated_size_reads_headers_only(tmp_path):
    write_image_folder(tmp_path, 20, [(300, 400), (100, 200)])
    files = data.open_images(str(tmp_path), "train")
    exact = 10 * (300 * 400 + 100 * 200) * 3
    assert abs(data.estimated_decoded_bytes(files, None) - exact) <= 0.05 * exact
    assert data.estimated_decoded_bytes(files, 64) == 20 * 64 * 64 * 3
    assert os.path.getsize(files.paths[0]) < 0.1 * 300 * 400 * 3  # really compressed


def test_streamed_files_cannot_be_augmented_on_the_device(folder):
    files = data.open_images(str(folder), "train")
    with pytest.raises(ValueError, match="augmented on the host"):
        data.pretrain_dataset(files, 8, 16, augment_on="device")


def test_tiff_reads_in_both_modes_and_other_extensions_are_named_once_in_both(tmp_path, caplog):
    import logging

    from tfascl.data import loading

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    split = tmp_path / "train"
    for name, array in (("c0/a.tiff", pixels[0]), ("c1/b.tif", pixels[1])):
        (split / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(split / name)
    Image.fromarray(pixels[0]).save(split / "c0" / "a.png")
    (split / "c1" / "x.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (split / "c1" / "notes.txt").write_text("not an image")
    # In memory (Pillow) and streamed (TensorFlow, Pillow for TIFF): the same pixels.
    memory = data.load_images(str(tmp_path), "train", image_size=16)
    files = data.open_images(str(tmp_path), "train")
    assert sorted(os.path.basename(p) for p in files.paths) == ["a.png", "a.tiff", "b.tif"]
    batch, labels = next(iter(stream.stream_eval_dataset(files, 8, 16, normalise=False)))
    streamed = np.rint(batch.numpy() * 255).astype(np.uint8)
    order = np.argsort([os.path.basename(p) for p in files.paths])
    np.testing.assert_array_equal(streamed[order], pixels[[0, 0, 1]])
    np.testing.assert_array_equal(memory.images, streamed)
    np.testing.assert_array_equal(labels.numpy(), memory.labels)
    # The two files tfascl does not read are named, once a process and folder, in both modes.
    loading._REPORTED_IGNORED.clear()
    for load in (data.load_images, data.open_images):
        with caplog.at_level(logging.WARNING):
            caplog.clear()
            load(str(tmp_path), "train")
            load(str(tmp_path), "train")
        named = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
        assert len(named) == 1, named
        assert "ignored 2 files with an extension tfascl does not read" in named[0]
        assert named[0].endswith(": c1/notes.txt, c1/x.heic")
        loading._REPORTED_IGNORED.clear()
