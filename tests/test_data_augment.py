"""Tests of the batched augmentations against independent NumPy / Pillow references."""

import colorsys
import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfascl.data import augment

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
N_STATS = 4000


def _binomial_ok(mask: np.ndarray, p: float) -> bool:
    """Observed rate within 4.5 standard errors of p (false alarm rate ~1e-5)."""
    n = mask.size
    return abs(mask.mean() - p) < 4.5 * math.sqrt(p * (1 - p) / n)


def _random_images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------
# NumPy references, written from the torchvision / Pillow definitions.


def np_bilinear_crop(img, top, left, h, w, size, flip=False):
    """Half-pixel bilinear sampling with edge clamping (valid when upsampling)."""
    height, width = img.shape[:2]
    out = np.zeros((size, size, img.shape[2]))
    for oy in range(size):
        sy = top + (oy + 0.5) * h / size - 0.5
        y0 = math.floor(sy)
        fy = sy - y0
        ya, yb = np.clip([y0, y0 + 1], 0, height - 1)
        for ox in range(size):
            src = size - 1 - ox if flip else ox
            sx = left + (src + 0.5) * w / size - 0.5
            x0 = math.floor(sx)
            fx = sx - x0
            xa, xb = np.clip([x0, x0 + 1], 0, width - 1)
            out[oy, ox] = (
                (1 - fy) * (1 - fx) * img[ya, xa]
                + (1 - fy) * fx * img[ya, xb]
                + fy * (1 - fx) * img[yb, xa]
                + fy * fx * img[yb, xb]
            )
    return out


def np_gray(x):
    return x[..., 0] * 0.2989 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def np_jitter(x, factors, order):
    x = x.astype(np.float64)
    for op in order:
        f = factors[op]
        if op == 0:
            x = np.clip(f * x, 0, 1)
        elif op == 1:
            x = np.clip(f * x + (1 - f) * np_gray(x).mean(), 0, 1)
        elif op == 2:
            x = np.clip(f * x + (1 - f) * np_gray(x)[..., None], 0, 1)
        else:
            flat = x.reshape(-1, 3)
            hsv = [colorsys.rgb_to_hsv(*p) for p in flat]
            flat = [colorsys.hsv_to_rgb((h + f) % 1.0, s, v) for h, s, v in hsv]
            x = np.asarray(flat).reshape(x.shape)
    return x


def np_blur(x, sigma, kernel_size):
    r = kernel_size // 2
    t = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        p = np.pad(x, pad, mode="reflect")
        n = x.shape[axis]
        x = sum(k[i] * np.take(p, np.arange(i, i + n), axis=axis) for i in range(kernel_size))
    return x


# ------------------------------------------------------------------------------------
# Building blocks against the references.


def test_crop_matches_numpy_bilinear_reference_when_upsampling():
    img = np.random.default_rng(1).random((6, 5, 3)).astype(np.float32)
    boxes = np.array([[0.0, 0.0, 6.0, 5.0], [1.3, 0.4, 3.3, 2.7], [0.0, 2.1, 2.0, 2.9]])
    flips = np.array([False, True, True])
    out = augment.resized_crop(
        tf.constant(np.stack([img] * 3)), tf.constant(boxes, tf.float32), tf.constant(flips), 7
    ).numpy()
    for b in range(3):
        expected = np_bilinear_crop(img, *boxes[b], 7, flip=flips[b])
        np.testing.assert_allclose(out[b], expected, atol=1e-5)


def test_crop_matches_pillow_antialiased_bilinear_when_downsampling():
    img = np.random.default_rng(2).random((40, 30, 3)).astype(np.float32)
    top, left, h, w = 3.5, 2.25, 33.0, 25.5
    out = augment.resized_crop(
        tf.constant(img[None]),
        tf.constant([[top, left, h, w]], tf.float32),
        tf.constant([False]),
        8,
    ).numpy()[0]
    for c in range(3):
        pil = Image.fromarray(img[..., c], mode="F").resize(
            (8, 8), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h)
        )
        np.testing.assert_allclose(out[..., c], np.asarray(pil), atol=1e-4)


def test_color_jitter_matches_reference_in_every_order():
    rng = np.random.default_rng(3)
    images = rng.random((6, 4, 5, 3)).astype(np.float32)
    factors = np.column_stack([rng.uniform(0.6, 1.4, (6, 3)), rng.uniform(-0.1, 0.1, 6)])
    orders = np.array([rng.permutation(4) for _ in range(6)], np.int32)
    orders[0], orders[1] = [0, 1, 2, 3], [3, 2, 1, 0]  # hue first and last
    out = augment.color_jitter(
        tf.constant(images), tf.constant(factors, tf.float32), tf.constant(orders)
    ).numpy()
    for b in range(6):
        np.testing.assert_allclose(out[b], np_jitter(images[b], factors[b], orders[b]), atol=1e-4)


def test_blur_matches_reflect_padded_reference_with_per_image_sigma():
    images = np.random.default_rng(4).random((3, 9, 9, 3)).astype(np.float32)
    sigmas = np.array([0.1, 1.0, 2.0], np.float32)
    out = augment.gaussian_blur(tf.constant(images), tf.constant(sigmas), 13).numpy()
    for b in range(3):
        np.testing.assert_allclose(out[b], np_blur(images[b], sigmas[b], 13), atol=1e-5)
    unchanged = augment.gaussian_blur(tf.constant(images), tf.zeros([3]), 13).numpy()
    np.testing.assert_allclose(unchanged, images, atol=1e-6)


def test_strong_recipe_composes_the_reference_steps_with_its_own_params():
    images = _random_images(64, 8, 8, seed=5)
    out, params = augment.strong_augment_with_params(tf.constant(images), 8, seed=11)
    out, p = out.numpy(), {k: v.numpy() for k, v in params.items()}
    for b in range(64):
        x = np_bilinear_crop(images[b] / 255.0, *p["boxes"][b], 8, flip=p["flip"][b])
        if p["jitter"][b]:
            x = np_jitter(x, p["jitter_factors"][b], p["jitter_order"][b])
        if p["gray"][b]:
            x = np.repeat(np_gray(x)[..., None], 3, axis=-1)
        if p["blur"][b]:
            x = np_blur(x, p["sigma"][b], augment.blur_kernel_size(8))
        np.testing.assert_allclose(out[b], x, atol=2e-4, err_msg=f"image {b}")


# ------------------------------------------------------------------------------------
# Statistics of the random parameters, drawn per image.


@pytest.fixture(scope="module")
def square_params():
    params = augment.sample_params(N_STATS, 32.0, 32.0, seed=7)
    return {k: v.numpy() for k, v in params.items()}


def test_crop_boxes_lie_in_the_image_with_torchvision_area_and_ratio(square_params):
    top, left, h, w = square_params["boxes"].T
    assert np.all(top >= 0) and np.all(left >= 0)
    assert np.all(top + h <= 32 + 1e-4) and np.all(left + w <= 32 + 1e-4)
    area = h * w / (32 * 32)
    assert area.min() >= 0.2 - 1e-5 and area.max() <= 1 + 1e-5
    ratio = w / h
    assert ratio.min() >= 0.75 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    # Spread over the whole range, not collapsed to one end.
    counts = np.histogram(area, bins=4, range=(0.2, 1.0))[0]
    assert np.all(counts > 0.1 * N_STATS), counts
    # Offsets are spread too: crops are not all centred.
    assert np.std(top / np.maximum(32 - h, 1e-6)) > 0.2


def test_crop_boxes_on_a_wide_image_keep_the_ratio_range():
    boxes = augment.sample_params(2000, 20.0, 60.0, seed=8)["boxes"].numpy()
    top, left, h, w = boxes.T
    assert np.all(top + h <= 20 + 1e-4) and np.all(left + w <= 60 + 1e-4)
    ratio = w / h
    assert ratio.min() >= 0.75 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5


@pytest.mark.parametrize("key,p", [("flip", 0.5), ("jitter", 0.8), ("gray", 0.2), ("blur", 0.5)])
def test_random_apply_rates(square_params, key, p):
    assert _binomial_ok(square_params[key], p), square_params[key].mean()


def test_jitter_factor_sigma_and_order_ranges(square_params):
    f = square_params["jitter_factors"]
    assert f[:, :3].min() >= 0.6 and f[:, :3].max() <= 1.4
    assert f[:, 3].min() >= -0.1 and f[:, 3].max() <= 0.1
    assert np.std(f[:, 0]) > 0.2  # uniform on [0.6, 1.4] has std 0.23
    sigma = square_params["sigma"]
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0 and np.std(sigma) > 0.5
    order = square_params["jitter_order"]
    assert np.all(np.sort(order, axis=1) == np.arange(4))
    assert len({tuple(o) for o in order}) == 24
    for op in range(4):
        assert _binomial_ok(order[:, 0] == op, 0.25)


def test_parameters_are_independent_across_images_in_a_batch(square_params):
    boxes = square_params["boxes"]
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    # float32 draws may collide once or twice in 4,000 (birthday bound), not more.
    assert len(np.unique(square_params["sigma"])) > 0.99 * len(boxes)
    # Independent masks: gray and flip co-occur at about the product rate.
    both = square_params["gray"] & square_params["flip"]
    assert _binomial_ok(both, 0.2 * 0.5)


# ------------------------------------------------------------------------------------
# Public functions.


def test_identical_images_get_different_views_in_one_batch():
    image = _random_images(1, 32, 32)
    batch = tf.constant(np.repeat(image, 8, axis=0))
    for fn in (augment.strong_augment, augment.weak_augment):
        out = fn(batch, 32, MEAN, STD, seed=1).numpy()
        flat = out.reshape(8, -1)
        distances = np.abs(flat[:, None] - flat[None]).max(axis=2)
        assert np.all(distances[~np.eye(8, dtype=bool)] > 1e-3)


def test_masks_show_in_the_output():
    images = _random_images(256, 32, 32, seed=9)
    out, params = augment.strong_augment_with_params(tf.constant(images), 32, seed=2)
    out = out.numpy()
    channel_spread = np.abs(out[..., 0] - out[..., 1]).max(axis=(1, 2))
    gray = params["gray"].numpy()
    assert np.all(channel_spread[gray] < 1e-5)
    assert np.all(channel_spread[~gray] > 1e-3)


def test_outputs_are_finite_float32_of_the_requested_size():
    images = _random_images(16, 40, 24)
    for out in (
        augment.strong_augment(images, 32, MEAN, STD, seed=0),
        augment.weak_augment(images.astype(np.float32), 32, MEAN, STD, seed=0),
        augment.eval_transform(images, 32, MEAN, STD),
    ):
        assert out.dtype == tf.float32 and out.shape == (16, 32, 32, 3)
        assert np.all(np.isfinite(out.numpy()))


def test_normalisation_uses_the_given_statistics():
    value = 173
    constant = np.full((4, 32, 32, 3), value, np.uint8)
    expected = (value / 255.0 - np.array(MEAN)) / np.array(STD)
    evaluated = augment.eval_transform(constant, 32, MEAN, STD).numpy()
    np.testing.assert_allclose(evaluated, np.broadcast_to(expected, evaluated.shape), atol=1e-5)
    # Any crop of a constant image is the same constant.
    weak = augment.weak_augment(constant, 16, MEAN, STD, seed=3).numpy()
    np.testing.assert_allclose(weak, np.broadcast_to(expected, weak.shape), atol=1e-5)


def test_eval_transform_centre_crops_and_resizes():
    images = _random_images(2, 10, 14).astype(np.float32)
    out = augment.eval_transform(images, 5, (0, 0, 0), (1, 1, 1)).numpy() * 255
    for b in range(2):
        pil = [
            np.asarray(
                Image.fromarray(images[b, ..., c], mode="F").resize(
                    (5, 5), Image.Resampling.BILINEAR, box=(2, 0, 12, 10)
                )
            )
            for c in range(3)
        ]
        np.testing.assert_allclose(out[b], np.stack(pil, axis=-1), atol=1e-2)


def test_seeds_make_views_reproducible():
    images = tf.constant(_random_images(8, 32, 32))
    for fn in (augment.strong_augment, augment.weak_augment):
        a = fn(images, 32, MEAN, STD, seed=5).numpy()
        b = fn(images, 32, MEAN, STD, seed=5).numpy()
        c = fn(images, 32, MEAN, STD, seed=6).numpy()
        d = fn(images, 32, MEAN, STD, seed=tf.constant([5, 0])).numpy()
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, d)
        assert np.abs(a - c).max() > 0.1
        unseeded = [fn(images, 32, MEAN, STD).numpy() for _ in range(2)]
        assert np.abs(unseeded[0] - unseeded[1]).max() > 0.1


def test_blur_kernel_size():
    assert augment.blur_kernel_size(224) == 23  # SimCLR / BYOL: 10% of 224, odd
    assert augment.blur_kernel_size(32) == 13  # covers +-3 sigma of sigma = 2
    assert augment.blur_kernel_size(4) == 7  # reflect padding must stay in the image


# ------------------------------------------------------------------------------------
# Device path.


def test_two_views_layer_compiles_with_xla_and_is_seeded():
    images = tf.constant(_random_images(16, 32, 32))
    layer = augment.TwoViews(32, MEAN, STD, seed=3)
    step = tf.function(layer, jit_compile=True)
    first = step(images)
    for view in first:
        assert view.shape == (16, 32, 32, 3) and view.dtype == tf.float32
    # The seed generator advances, so the next step draws new views; strong != weak.
    second = step(images)
    assert np.abs(first[0].numpy() - second[0].numpy()).max() > 0.1
    assert np.abs(first[0].numpy() - first[1].numpy()).max() > 0.1
    # A fresh layer with the same seed starts from the same state as the first one did.
    assert np.array_equal(augment.TwoViews(32, MEAN, STD, seed=3).seed_generator.state, [3, 0])
    layer.seed_generator.state.assign([3, 0])
    replay = step(images)
    for got, want in zip(replay, first):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_xla_computes_the_same_recipe_as_graph_mode():
    images = tf.constant(_random_images(32, 32, 32))
    compiled = tf.function(augment.strong_augment_with_params, jit_compile=True)
    out, params = compiled(images, 32, tf.constant([4, 2]))
    expected = augment.apply_strong(tf.cast(images, tf.float32) / 255.0, params, 32)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-4)


def test_xla_random_draws_have_the_same_rates():
    compiled = tf.function(augment.sample_params, jit_compile=True)
    params = compiled(tf.constant(N_STATS), 32.0, 32.0, tf.constant([1, 1]))
    for key, p in (("flip", 0.5), ("jitter", 0.8), ("gray", 0.2), ("blur", 0.5)):
        assert _binomial_ok(params[key].numpy(), p), key
    area = np.prod(params["boxes"].numpy()[:, 2:], axis=1) / 32**2
    assert area.min() >= 0.2 - 1e-5 and np.all(np.histogram(area, 4, (0.2, 1))[0] > 400)


def test_two_views_layer_round_trips_its_config():
    layer = augment.TwoViews(24, MEAN, STD, seed=9)
    clone = augment.TwoViews.from_config(layer.get_config())
    assert (clone.size, clone.mean, clone.std, clone.seed) == (24, MEAN, STD, 9)


# ------------------------------------------------------------------------------------
# The recipe's knobs (flags/digits_ascl.flags: no flip, gentle crops, no colour).

DIGITS_RECIPE = augment.AugmentRecipe(
    crop_scale=(0.6, 1.0), flip_prob=0.0, jitter_prob=0.0, gray_prob=0.0, blur_prob=0.0
)


def test_recipe_sets_the_crop_scale_and_the_probabilities():
    params = augment.sample_params(2000, 32.0, 32.0, seed=7, recipe=DIGITS_RECIPE)
    area = np.prod(params["boxes"].numpy()[:, 2:], axis=1) / 32**2
    assert area.min() >= 0.6 - 1e-5 and area.max() <= 1 + 1e-5
    for key in ("flip", "jitter", "gray", "blur"):
        assert not params[key].numpy().any(), key
    # The same draws as the standard recipe: only the thresholds and ranges differ.
    standard = augment.sample_params(2000, 32.0, 32.0, seed=7)
    assert np.array_equal(standard["jitter_order"].numpy(), params["jitter_order"].numpy())


def test_recipe_without_colour_leaves_grey_crops_grey_and_unflipped():
    # A left-right ramp: a flip would reverse it, jitter or blur would change its values.
    ramp = np.tile(np.linspace(0, 255, 16, dtype=np.float32)[None, :, None], (16, 1, 3))
    images = tf.constant(np.stack([ramp] * 64))
    recipe = augment.AugmentRecipe(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), **{
        name: 0.0 for name in ("flip_prob", "jitter_prob", "gray_prob", "blur_prob")
    })  # fmt: skip
    strong, _ = augment.strong_augment_with_params(images, 16, seed=3, recipe=recipe)
    np.testing.assert_allclose(strong.numpy(), images.numpy() / 255.0, atol=1e-5)


def test_recipe_is_checked_and_round_trips_through_the_two_views_layer():
    with pytest.raises(ValueError, match="flip_prob"):
        augment.AugmentRecipe(flip_prob=1.5)
    with pytest.raises(ValueError, match="crop_scale"):
        augment.AugmentRecipe(crop_scale=(0.8, 0.5))
    layer = augment.TwoViews(24, MEAN, STD, seed=9, recipe=DIGITS_RECIPE)
    clone = augment.TwoViews.from_config(layer.get_config())
    assert clone.recipe == DIGITS_RECIPE
    assert "recipe" not in augment.TwoViews(24, MEAN, STD).get_config()
