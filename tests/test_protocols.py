"""Faithful protocols (issue 23): the device path's key view, the evaluation crop taken from
the run and the protocol, the kNN monitor's image size and MoCo's per-epoch cosine."""

import json

import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY_RUN_FLAGS

from tfascl import train
from tfascl.data import ImageSet, pretrain_dataset

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def colourful_images(count: int, side: int, seed: int = 0) -> np.ndarray:
    """Smooth, saturated random images: a grey view of one is told apart from its colour."""
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 255, size=(count, 2, 2, 3)).astype(np.float32)
    images = tf.image.resize(corners, [side, side], method="bilinear").numpy()
    return np.clip(images, 0, 255).astype(np.uint8)


def grey_fraction(views: tf.Tensor) -> float:
    """Share of views whose pixels are grey (R = G = B) once the normalisation is undone."""
    pixels = views.numpy() * np.asarray(STD) + np.asarray(MEAN)
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    return float(np.mean(spread.max(axis=(1, 2)) < 1e-3))


def colour_spread(views: tf.Tensor) -> float:
    """Mean spread between the channels: what colour jitter and grayscale change."""
    pixels = views.numpy() * np.asarray(STD) + np.asarray(MEAN)
    return float(np.mean(pixels.max(axis=-1) - pixels.min(axis=-1)))


# --- D: the device path honours --key_augment --------------------------------------------


@pytest.mark.parametrize("key_augment", ["strong", "weak"])
def test_device_key_view_has_the_host_key_views_distribution(key_augment):
    count, side = 256, 16
    images = colourful_images(count, side)
    args = [*TINY_RUN_FLAGS, "--augment_on=device", f"--key_augment={key_augment}", "--seed=3"]
    config = train.check_replicas(train.config_from_args(args), 1)
    spec = train.make_spec(
        config,
        train.RunData(ImageSet(images, None, [], MEAN, STD, "toy"), None, None, None),
        total_steps=4,
    )
    model = train.build_model(config, spec, 4, tf.distribute.get_strategy())
    assert model.views.key_augment == key_augment
    _, device_key = model.views(images)

    host = ImageSet(images, None, [], MEAN, STD, "toy")
    batches = pretrain_dataset(
        host, count, side, seed=3, key_augment=key_augment, jit_compile=False, shuffle=False
    )
    _, host_key = next(iter(batches))

    host_grey, device_grey = grey_fraction(host_key), grey_fraction(device_key)
    if key_augment == "weak":  # crop and flip: never grey, colours as stored
        assert host_grey == device_grey == 0.0
    else:  # aug+: grey with p = 0.2 on both paths (256 draws: s.d. 0.025)
        assert 0.1 < host_grey < 0.3 and 0.1 < device_grey < 0.3
    # The colour statistics agree between the paths (other draws, same distribution).
    assert colour_spread(device_key) == pytest.approx(colour_spread(host_key), rel=0.15)


# --- E: tfascl-eval's crop comes from the run and the protocol -----------------------------


def write_folder(root, sizes, classes=("a", "b"), per_class=3):
    """root/{train,test}/<class>/<i>.jpg, JPEGs of the given (height, width) sizes in turn."""
    from PIL import Image

    n = 0
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                height, width = sizes[n % len(sizes)]
                n += 1
                pixels = colourful_images(1, max(height, width), seed=n)[0][:height, :width]
                pixels = np.clip(pixels.astype(int) + 40 * c, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=95)
    return root


def saved_run(model_dir, dataset, flags=None):
    """A run folder: run.json, one (untrained) checkpoint, and flags.json if given."""
    import json

    import keras
    from helpers import tiny_spec

    from tfascl import runs

    spec = tiny_spec(image_size=16, dataset=str(dataset), num_classes=2)
    runs.save_spec(spec, model_dir)
    model = spec.build_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.checkpoint().save(str(runs.checkpoint_dir(model_dir) / "ckpt"))
    if flags is not None:
        (model_dir / runs.FLAGS_FILE).write_text(json.dumps(flags))
    return model_dir


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    """A folder the ImageNet protocol applies to (its name starts with 'imagenet')."""
    return write_folder(tmp_path_factory.mktemp("data") / "imagenet_toy", [(40, 40)])


@pytest.mark.parametrize(
    ("flags", "given", "want"),
    [
        (None, None, (0.875, "protocol imagenet")),  # no flags.json: MoCo main_lincls.py
        ({"eval_crop": 0.875}, None, (0.875, "run")),  # the imagenet recipes' run
        ({"eval_crop": 0.5}, None, (0.5, "run")),  # the run's own choice, with a note
        ({"eval_crop": 0.5}, 1.0, (1.0, "--eval_crop")),  # the flag overrides both
    ],
)
def test_eval_crop_comes_from_the_flag_the_run_or_the_protocol(
    imagenet_like, tmp_path, flags, given, want
):
    from tfascl.evaluation import evaluate

    model_dir = saved_run(tmp_path / "run", imagenet_like, flags)
    entry = evaluate("knn", model_dir=model_dir, knn_k=3, eval_crop=given, write=True)
    assert (entry["eval_crop"]["value"], entry["eval_crop"]["source"]) == want
    assert entry["settings"]["eval_crop"] == want[0]  # what the eval transform used
    recorded = json.loads((model_dir / "results.json").read_text())["knn"]
    assert recorded["eval_crop"] == {"value": want[0], "source": want[1]}
    disagree = [note for note in entry["notes"] if "not the imagenet protocol's" in note]
    assert bool(disagree) == (want == (0.5, "run"))


def test_eval_crop_on_another_dataset_is_that_datasets_protocols(imagenet_like, tmp_path):
    from tfascl.evaluation import evaluate

    cifar_like = write_folder(tmp_path / "cifar_toy", [(40, 40)])
    model_dir = saved_run(tmp_path / "run", imagenet_like, {"eval_crop": 0.875})
    entry = evaluate("knn", model_dir=model_dir, dataset=str(cifar_like), knn_k=3, write=False)
    assert entry["eval_crop"] == {"value": 1.0, "source": "protocol ascl_code"}


# --- G: the kNN monitor evaluates at the recipe's evaluation size --------------------------


@pytest.mark.parametrize(("name", "want"), [("stl10_toy", 24), ("cifar_toy", 16)])
def test_knn_monitor_embeds_at_the_final_evaluations_size(tmp_path, name, want):
    # STL-10's protocol: bank and test images at their native side (96 px; 24 here), not
    # the 64 px (16 here) crops the model trains on, as the ASCL code's online_test.
    folder = write_folder(tmp_path / name, [(24, 24)], per_class=4)
    args = [*TINY_RUN_FLAGS, f"--dataset={folder}", "--batch_size=8", "--queue_size=16"]
    config = train.check_replicas(train.config_from_args(args), 1)
    run_data = train.load_data(config)
    monitor = train.knn_monitor(config, run_data, None, None, tmp_path / "run")
    for batches in (monitor.bank, monitor.test):
        assert tuple(batches.element_spec[0].shape[1:3]) == (want, want)
    spec = train.make_spec(config, run_data, total_steps=4)
    model = train.build_model(config, spec, 1, tf.distribute.get_strategy())
    monitor.set_model(model)
    result = monitor.evaluate()
    assert 0.0 <= result["knn_top1"] <= 1.0
    from tfascl.callbacks import monitored_model

    embed = monitored_model(model, monitor.test)
    if want == 16:
        assert embed is model
        return
    # The trained backbone's own weights (not a copy), on images of any side.
    assert all(a is b for a, b in zip(embed.weights, model.backbone.weights))
    small = tf.random.uniform([2, 16, 16, 3])
    np.testing.assert_allclose(
        embed(small, training=False), model.backbone(small, training=False), atol=1e-6
    )


# --- C: MoCo's per-epoch cosine --------------------------------------------------------------


def test_per_epoch_cosine_is_mocos_adjust_learning_rate():
    import math

    import keras

    from tfascl.optim import PerEpoch

    args = [*TINY_RUN_FLAGS, "--schedule_per=epoch", "--warmup_epochs=0", "--epochs=10"]
    config = train.config_from_args([*args, "--learning_rate=0.03"])
    steps_per_epoch = 7
    schedule = train.learning_rate_schedule(config, steps_per_epoch)
    assert isinstance(schedule, PerEpoch)
    rates = [float(schedule(step)) for step in range(10 * steps_per_epoch)]
    # main_moco.py adjust_learning_rate, called once at the start of each epoch.
    moco = [0.03 * 0.5 * (1 + math.cos(math.pi * e / 10)) for e in range(10)]
    np.testing.assert_allclose(rates, np.repeat(moco, steps_per_epoch), rtol=1e-5)
    # Per step (the default) the rate changes within an epoch.
    per_step = train.learning_rate_schedule(train.config_from_args(args[:-3]), steps_per_epoch)
    assert float(per_step(8)) != float(per_step(9))
    # Saved with an optimizer, it comes back the same.
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert [float(again(s)) for s in (0, 6, 7, 20)] == [rates[s] for s in (0, 6, 7, 20)]


def test_per_epoch_schedule_refuses_a_warm_up():
    from tfascl.cli import FlagError

    config = train.config_from_args(
        [*TINY_RUN_FLAGS, "--schedule_per=epoch", "--warmup_epochs=1", "--epochs=3"]
    )
    with pytest.raises(FlagError, match=r"--warmup_epochs=1(\.0)?: --schedule_per=epoch holds"):
        train.validate(config)


def test_citations_name_the_official_ascl_repository():
    from helpers import REPO

    wrong = "MrChenFeng/" + "ASCL"  # not a repository: the code is the one below
    right = "MrChenFeng/Adaptive-Soft-Contrastive-Learning_ICPR2022"
    files = [*(REPO / "flags").glob("*.flags"), *(REPO / "docs").glob("*.md")]
    assert not [str(p) for p in files if wrong in p.read_text()]
    assert right in (REPO / "flags" / "base_ascl_code.flags").read_text()
