"""The augmented linear probe streamed from files (issue 23 F): MoCo main_lincls.py's
RandomResizedCrop(S) + flip of each original image, by torchvision's rule, on a folder of
JPEGs of varied sizes, nothing decoded into memory."""

import math

import numpy as np
import pytest
from PIL import Image
from test_protocols import saved_run

from tfascl.evaluation import LinearConfig, datasets, evaluate, linear_batches

# (height, width): square, wide, tall, and two beyond the 3/4-4/3 ratios (the fallback).
SIZES = [(40, 40), (36, 60), (64, 44), (24, 90), (96, 20), (50, 37)]
SIDE = 16


def torchvision_rule(u, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params, transcribed, with its random numbers
    given: u[0:10] areas, u[10:20] log-ratios, u[20:30] tops, u[30:40] lefts (randint as
    floor(u * n))."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for t in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[t])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[10 + t])
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            i = int(u[20 + t] * (height - h + 1))
            j = int(u[30 + t] * (width - w + 1))
            return i, j, h, w
    return central_crop(height, width, ratio)


def central_crop(height, width, ratio=(3 / 4, 4 / 3)):
    """torchvision's fallback after ten misses: the whole image, its ratio clamped, centred."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        h = height
        w = round(h * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def test_crop_boxes_are_torchvisions_rule():
    rng = np.random.default_rng(0)
    count = 4000
    heights = rng.integers(1, 400, count)
    widths = np.where(rng.random(count) < 0.2, heights * 3, rng.integers(1, 400, count))
    u = rng.random((count, 40))
    got = linear_batches.torchvision_crop_boxes(u, heights, widths).numpy()
    want = [torchvision_rule(u[n], heights[n], widths[n]) for n in range(count)]
    np.testing.assert_array_equal(got, np.asarray(want, np.float64))
    fallbacks = sum(box == central_crop(h, w) for box, h, w in zip(want, heights, widths))
    assert fallbacks > 10  # the fallback is exercised (tiny and 3:1 images)


def textured_jpeg(path, height, width, seed):
    """A JPEG whose 4-px blocks have random colours: a crop one pixel off looks different."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    pixels = blocks.repeat(4, axis=0).repeat(4, axis=1)[:height, :width]
    Image.fromarray(pixels).save(path, quality=98)


@pytest.fixture(scope="module")
def varied_folder(tmp_path_factory):
    """imagenet_toy/{train,test}/{a,b}/*.jpg: two classes, JPEGs of the varied SIZES."""
    root = tmp_path_factory.mktemp("data") / "imagenet_toy"
    n = 0
    for split in ("train", "test"):
        for name in ("a", "b"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, (height, width) in enumerate(SIZES):
                textured_jpeg(folder / f"{i}.jpg", height, width, seed=n)
                n += 1
    return root


def view(image, box, flip):
    """torchvision's view of a PIL image: crop, resize (Pillow bilinear), flip."""
    crop = np.asarray(image.crop(box).resize((SIDE, SIDE), Image.BILINEAR), np.float64)
    return crop[:, ::-1] if flip else crop


def test_streamed_crops_are_the_rules_crops_of_each_original_image(varied_folder):
    files = datasets.open_labelled(str(varied_folder), "train")
    seed, epoch = 5, 2
    batches = linear_batches.streamed_linear_batches(files, len(files), SIDE, seed, epoch)
    (pixels, labels), *rest = list(batches)
    assert not rest and pixels.shape == (len(files), SIDE, SIDE, 3)
    order = linear_batches.linear_epoch_order(len(files), seed, epoch).numpy()
    np.testing.assert_array_equal(labels.numpy(), files.labels[order])
    assert sorted(order) == list(range(len(files)))  # every image once, shuffled
    errors, wrong = [], []
    for got, index in zip(pixels.numpy() * 255.0, order):
        draws = linear_batches.linear_draws(seed, epoch, index).numpy()
        with Image.open(files.paths[index]) as image:
            image = image.convert("RGB")
            top, left, h, w = torchvision_rule(draws[:-1], image.height, image.width)
            flip = draws[-1] < 0.5
            right = view(image, (left, top, left + w, top + h), flip)
            errors.append(np.abs(got - right).mean())
            # The same crop one pixel lower or to the right is told apart.
            shifted = (left + 1, top, left + w + 1, top + h) if left + w < image.width else None
            if shifted is None and top + h < image.height:
                shifted = (left, top + 1, left + w, top + h + 1)
            if shifted is not None:
                wrong.append(np.abs(got - view(image, shifted, flip)).mean())
    # Pillow's bilinear resize against TensorFlow's antialiased one: a level or two.
    assert max(errors) < 2.5, errors
    assert wrong and min(wrong) > 2 * max(errors), (errors, wrong)
    # Another epoch: another order and other crops.
    other = next(iter(linear_batches.streamed_linear_batches(files, len(files), SIDE, seed, 3)))
    assert not np.allclose(other[0].numpy(), pixels.numpy())


def test_linear_protocol_streams_varied_sizes_with_nothing_in_memory(
    varied_folder, tmp_path, monkeypatch
):
    run = saved_run(tmp_path / "run", varied_folder, {"eval_crop": 0.875})
    broken = varied_folder / "train" / "a" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")

    def refuse(*args, **kwargs):
        raise AssertionError("a streamed probe decoded a split into memory")

    monkeypatch.setattr(datasets, "load_images", refuse)
    config = LinearConfig(
        epochs=2, batch_size=4, learning_rate=0.05, eval_every=1, schedule="cosine"
    )
    try:  # auto: the images differ in size, so they stream (and keep their own size)
        entry = evaluate("linear", model_dir=run, linear=config, write=False)
    finally:
        broken.unlink()
    assert entry["protocol"] == "linear" and entry["input"]["mode"] == "stream"
    assert "differ in size" in entry["input"]["why"]
    assert entry["settings"]["train_crops"].startswith("streamed: torchvision's")
    assert entry["settings"]["steps_per_epoch"] == math.ceil(13 / 4)  # 12 images + broken
    assert entry["skipped"] == {"train": [str(broken)]}
    assert entry["num_train"] == 12 and len(entry["history"]) == 2
    assert all(np.isfinite(record["loss"]) for record in entry["history"])
    # The schedule's clock is the steps taken: 3 batches an epoch (12 images decode), not
    # one more for the step fit tries when a streamed epoch runs out of files.
    schedule = config.lr_schedule(entry["settings"]["steps_per_epoch"])
    want = [float(schedule(step)) for step in (0, 3)]
    assert [record["learning_rate"] for record in entry["history"]] == pytest.approx(want)
    assert want[1] != pytest.approx(float(schedule(4)))
    assert entry["eval_crop"] == {"value": 0.875, "source": "run"}


def test_the_dataset_fit_iterates_yields_each_epochs_batches(varied_folder):
    from tfascl.data.host import host_variable

    files = datasets.open_labelled(str(varied_folder), "train")
    epoch = host_variable(np.int64(0), "epoch")
    epochs = linear_batches.streamed_linear_epochs(files, 5, SIDE, 7, epoch)
    spare = iter(epochs)  # fit makes one at an epoch's end, before the next epoch is set
    for number in (1, 2, 3):
        epoch.assign(number)  # the probe's callback, at the epoch's start
        got = list(epochs)
        want = list(linear_batches.streamed_linear_batches(files, 5, SIDE, 7, number))
        assert [len(labels) for _, labels in got] == [5, 5, 2]  # 12 images, batches of 5
        for (pixels, labels), (want_pixels, want_labels) in zip(got, want):
            np.testing.assert_array_equal(pixels.numpy(), want_pixels.numpy())
            np.testing.assert_array_equal(labels.numpy(), want_labels.numpy())
    del spare
