"""Faithful protocols (issue 23): the device path's key view, the evaluation crop taken from
the run and the protocol, the kNN monitor's image size and MoCo's per-epoch cosine."""

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
