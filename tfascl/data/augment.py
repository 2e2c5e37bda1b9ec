"""Batched contrastive-learning augmentations with every random draw made per image.

The recipes follow the torchvision pipelines of the ASCL, ReSSL, SCE and MoCo v2 code:

* strong: RandomResizedCrop(scale=(0.2, 1), ratio=(3/4, 4/3)), horizontal flip (p=0.5),
  ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8 and its four parts in a random order per image,
  grayscale (p=0.2), Gaussian blur with sigma in [0.1, 2] (p=0.5), normalisation.
* weak: RandomResizedCrop(scale=(0.2, 1)), horizontal flip, normalisation.
* eval: central square crop and resize when the size differs, normalisation.

Everything is written with plain batched TensorFlow ops (matmul, elementwise maths,
stateless RNG) so the same code runs in a `tf.data` map on the host and inside a
`tf.function(jit_compile=True)` train step on an accelerator. `tf.image.crop_and_resize` and
`keras.ops.image.affine_transform` are not used because XLA rejects them, and
`keras.ops.image.gaussian_blur` is not used because it takes one sigma for the whole batch.

Crops are resampled with two per-image interpolation matrices, one for rows (Ay) and one for
columns (Ax), i.e. `einsum('byh,bhwc,bxw->byxc', Ay, images, Ax)` computed as two batched
matmuls. The weights are Pillow's bilinear filter: a triangle kernel whose support widens
when the crop is shrunk, so downscaling is antialiased as Pillow (and hence torchvision on
PIL images) does it. The horizontal flip is folded into the column matrix at no cost. Crop
boxes are continuous rather than rounded to whole pixels, so the crop area lies exactly in
the requested scale range. The Gaussian blur reuses the same machinery with banded
reflect-padded matrices, one sigma per image.

Randomness is stateless: one `[B, 53]` uniform draw from a `[2]` seed supplies every
parameter of every image, so a seed fixes the views. XLA implements the generator differently
from the TF kernels, so the same seed gives different (equally distributed) draws with and
without `jit_compile`.

Pixel values enter as uint8 or float in [0, 255] and leave as float32 normalised by
`(x / 255 - mean) / std`.

The recipe's knobs (crop scale, flip, colour jitter, grayscale and blur probabilities) are
plain values in an `AugmentRecipe`; the default is the recipe above. A part whose
probability is 0 is not computed at all, and one with probability 1 is always applied
(`flags/digits_ascl.flags` turns flips, jitter, grayscale and blur off for grey 8x8 digits).
Every recipe draws from the same uniform columns, so a seed gives the same crops whatever
the probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfascl import imageops
from tfascl.choices import KEY_AUGMENTS
from tfascl.data.recipe import (
    BLUR_PROB,
    BLUR_SIGMA,
    CROP_RATIO,
    CROP_SCALE,
    FLIP_PROB,
    GRAY_PROB,
    JITTER_PROB,
    JITTER_STRENGTH,
    STANDARD_RECIPE,
    AugmentRecipe,
)

__all__ = [  # the recipe's names are re-exported from tfascl.data.recipe
    "BLUR_PROB",
    "BLUR_SIGMA",
    "CROP_RATIO",
    "CROP_SCALE",
    "FLIP_PROB",
    "GRAY_PROB",
    "JITTER_PROB",
    "JITTER_STRENGTH",
    "KEY_AUGMENTS",
    "STANDARD_RECIPE",
    "AugmentRecipe",
    "TwoViews",
    "eval_transform",
    "sample_params",
    "strong_augment",
    "two_views",
    "weak_augment",
]

CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries ten boxes before its fallback.

# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma), also used by Pillow's "L" mode.
_LUMA = (0.2989, 0.587, 0.114)

# Columns of the per-image uniform draw, so one stateless call serves every parameter.
_AREA = slice(0, CROP_ATTEMPTS)
_LOG_RATIO = slice(CROP_ATTEMPTS, 2 * CROP_ATTEMPTS)
_TOP = slice(2 * CROP_ATTEMPTS, 3 * CROP_ATTEMPTS)
_LEFT = slice(3 * CROP_ATTEMPTS, 4 * CROP_ATTEMPTS)
_FLIP = 4 * CROP_ATTEMPTS
_JITTER_APPLY = _FLIP + 1
_JITTER_FACTORS = slice(_JITTER_APPLY + 1, _JITTER_APPLY + 5)
_JITTER_ORDER = slice(_JITTER_APPLY + 5, _JITTER_APPLY + 9)
_GRAY = _JITTER_APPLY + 9
_BLUR = _GRAY + 1
_SIGMA = _GRAY + 2
_NUM_UNIFORMS = _GRAY + 3

SeedLike = int | tf.Tensor | None


def _recipe(recipe: AugmentRecipe | None) -> AugmentRecipe:
    return STANDARD_RECIPE if recipe is None else recipe


def blur_kernel_size(size: int, max_sigma: float = BLUR_SIGMA[1]) -> int:
    """Odd Gaussian kernel length used for images of `size` pixels.

    SimCLR/BYOL use 10% of the image side (23 taps at 224 px), while ASCL, ReSSL and MoCo v2
    blur with Pillow's untruncated Gaussian. At 32 px the 10% rule would give 3 taps, which
    cuts a sigma-2 Gaussian down to nearly a box filter, so the kernel also covers +-3 sigma
    of the largest sigma: 13 taps at 32 px, 23 at 224 px.

    Args:
        size: Side of the (square) image being blurred, in pixels.
        max_sigma: The largest sigma drawn.

    Returns:
        Odd kernel length, at most `2 * size - 1` so reflect padding stays inside the image.
    """
    ten_percent = int(0.1 * size) // 2 * 2 + 1
    three_sigma = 2 * math.ceil(3 * max_sigma) + 1
    return max(1, min(max(ten_percent, three_sigma), 2 * size - 1))


def _seed_pair(seed: SeedLike) -> tf.Tensor:
    """Turns an int, a [2] seed tensor or None into a [2] int64 stateless seed."""
    if seed is None:
        # Deliberately non-deterministic: the caller asked for no seed.
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    return tf.cast(tf.reshape(seed, [2]), tf.int64)


def _to_unit_float(images: tf.Tensor) -> tf.Tensor:
    """[B, H, W, 3] pixels in [0, 255] (uint8 or float) -> float32 in [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


def normalise(images: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """[B, H, W, 3] float32 in [0, 1] -> (x - mean) / std per channel."""
    mean = tf.constant(mean, tf.float32, shape=[3])
    std = tf.constant(std, tf.float32, shape=[3])
    return (images - mean) / std


def _grayscale(images: tf.Tensor) -> tf.Tensor:
    """[B, H, W, 3] -> [B, H, W, 1] luma."""
    return tf.reduce_sum(images * tf.constant(_LUMA, images.dtype), axis=-1, keepdims=True)


def _spatial_size(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Height and width as float32 scalars (static when known, dynamic otherwise)."""
    shape = tf.shape(images)
    return tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)


def sample_crop_boxes(
    uniforms: tf.Tensor,
    height: tf.Tensor,
    width: tf.Tensor,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> tf.Tensor:
    """Draws torchvision RandomResizedCrop boxes from uniforms, one box per image.

    Each image gets `CROP_ATTEMPTS` candidate boxes (area fraction uniform in `scale`, aspect
    ratio log-uniform in `ratio`); the first one that fits is kept, and if none fits the
    image falls back to torchvision's central crop at the nearest allowed aspect ratio.

    Args:
        uniforms: [B, 4 * CROP_ATTEMPTS] float32 in [0, 1): area, log-ratio, top and left
            draws, `CROP_ATTEMPTS` columns each.
        height: Source image height in pixels (float32 scalar).
        width: Source image width in pixels (float32 scalar).
        scale: Range of the crop area as a fraction of the image area.
        ratio: Range of the crop aspect ratio (width / height).

    Returns:
        [B, 4] float32 boxes (top, left, crop_height, crop_width) in pixels.
    """
    u_area, u_ratio = uniforms[:, _AREA], uniforms[:, _LOG_RATIO]
    u_top, u_left = uniforms[:, _TOP], uniforms[:, _LEFT]
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(log_lo + (log_hi - log_lo) * u_ratio)
    crop_w = tf.sqrt(area * aspect)
    crop_h = tf.sqrt(area / aspect)
    fits = (crop_w <= width) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    any_fit = tf.reduce_any(fits, axis=1)

    def pick(values: tf.Tensor) -> tf.Tensor:
        return tf.gather(values, first[:, None], batch_dims=1)[:, 0]

    h, w = pick(crop_h), pick(crop_w)
    top = pick(u_top) * (height - h)
    left = pick(u_left) * (width - w)

    # torchvision's fallback: the whole image, clipped to the aspect-ratio range, centred.
    image_ratio = width / height
    fallback_w = tf.where(image_ratio > ratio[1], height * ratio[1], width)
    fallback_h = tf.where(image_ratio < ratio[0], width / ratio[0], height)
    boxes = tf.stack([top, left, h, w], axis=1)
    fallback = tf.stack(
        [(height - fallback_h) / 2, (width - fallback_w) / 2, fallback_h, fallback_w]
    )
    return tf.where(any_fit[:, None], boxes, fallback[None, :])


def interpolation_matrix(
    start: tf.Tensor,
    length: tf.Tensor,
    in_size: tf.Tensor,
    out_size: int,
    flip: tf.Tensor | None = None,
) -> tf.Tensor:
    """Per-image 1-D resampling matrices with Pillow's (antialiased) bilinear filter.

    Output pixel `o` of image `b` samples the source at centre
    `start[b] + (o + 0.5) * length[b] / out_size`; source pixel `i` (centre `i + 0.5`) gets
    weight `max(0, 1 - |i + 0.5 - centre| / support)` with `support = max(1, length /
    out_size)`, renormalised over the pixels inside the image. This is Pillow's
    `Image.resize(..., BILINEAR, box=...)`, and equals classic half-pixel bilinear
    interpolation with edge clamping when upsampling.

    Args:
        start: [B] float32 crop offset in source pixels.
        length: [B] float32 crop extent in source pixels.
        in_size: Source extent in pixels (scalar; int or float).
        out_size: Number of output pixels (static).
        flip: Optional [B] bool; mirrors the output order, i.e. a horizontal flip when used
            for columns.

    Returns:
        [B, out_size, in_size] float32 matrix whose rows sum to one.
    """
    in_size = tf.cast(in_size, tf.int32)
    step = length / out_size
    centres = start[:, None] + (tf.range(out_size, dtype=tf.float32) + 0.5)[None, :] * step[:, None]
    if flip is not None:
        centres = tf.where(flip[:, None], tf.reverse(centres, axis=[1]), centres)
    support = tf.maximum(step, 1.0)[:, None, None]
    pixel_centres = tf.cast(tf.range(in_size), tf.float32) + 0.5
    distance = tf.abs(pixel_centres[None, None, :] - centres[:, :, None])
    weights = tf.nn.relu(1.0 - distance / support)
    # The nearest pixel centre is at most 0.5 px away and support >= 1, so sums are >= 0.5.
    return weights / tf.reduce_sum(weights, axis=2, keepdims=True)


def resample(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """Applies separable per-image linear maps: `rows @ image @ cols^T` per channel.

    Args:
        images: [B, H, W, C] float32.
        rows: [B, H_out, H] float32.
        cols: [B, W_out, W] float32.

    Returns:
        [B, H_out, W_out, C] float32.
    """
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    channels = images.shape[3]
    # Both products are plain batched matmuls on the channels-last layout, which runs several
    # times faster on CPU than einsum's transposes.
    tall = tf.linalg.matmul(rows, tf.reshape(images, [batch, height, width * channels]))
    tall = tf.reshape(tall, [batch, tf.shape(rows)[1], width, channels])
    return tf.linalg.matmul(cols[:, None], tall)


def resized_crop(images: tf.Tensor, boxes: tf.Tensor, flip: tf.Tensor, size: int) -> tf.Tensor:
    """Crops each image to its own box, resizes to `size` and optionally mirrors it.

    Args:
        images: [B, H, W, C] float32.
        boxes: [B, 4] float32 (top, left, height, width) in pixels.
        flip: [B] bool, horizontal flip per image.
        size: Output side in pixels.

    Returns:
        [B, size, size, C] float32.
    """
    height, width = _spatial_size(images)
    rows = interpolation_matrix(boxes[:, 0], boxes[:, 2], height, size)
    cols = interpolation_matrix(boxes[:, 1], boxes[:, 3], width, size, flip=flip)
    return resample(images, rows, cols)


def _blend(images: tf.Tensor, other: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """torchvision's `_blend`: `factor * images + (1 - factor) * other`, clipped to [0, 1].

    A factor of exactly 1 returns `images` unchanged (they are already in [0, 1]), which lets
    callers switch the operation off per image without a select.
    """
    factor = factor[:, None, None, None]
    return tf.clip_by_value(factor * images + (1.0 - factor) * other, 0.0, 1.0)


def _shift_hue(images: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
    """Rotates hue by `delta[b]` turns per image via HSV, as torchvision's adjust_hue."""
    hsv = tf.image.rgb_to_hsv(images)
    hue = tf.math.floormod(hsv[..., 0] + delta[:, None, None], 1.0)
    return tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1))


def _blend_step(images: tf.Tensor, op: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """One brightness (op 0), contrast (1) or saturation (2) step per image.

    The three share torchvision's blend with different targets: black, the image's mean
    grey level, and its per-pixel grey level.

    Args:
        images: [B, H, W, 3] float32 in [0, 1].
        op: [B] int32 operation index.
        factor: [B] float32 blend factor; 1 leaves the image unchanged.
    """
    gray = _grayscale(images)
    per_image = tf.reshape(tf.one_hot(op, 3), [-1, 1, 1, 3])
    mean_gray = tf.reduce_mean(gray, axis=[1, 2, 3], keepdims=True)
    target = per_image[..., 1:2] * mean_gray + per_image[..., 2:3] * gray
    return _blend(images, target, factor)


def color_jitter(images: tf.Tensor, factors: tf.Tensor, order: tf.Tensor) -> tf.Tensor:
    """torchvision ColorJitter with per-image factors and per-image operation order.

    Operation k in {0: brightness, 1: contrast, 2: saturation, 3: hue}; image b applies them
    in the order `order[b]`. Every image rotates its hue exactly once, so the batch is split
    around that single (costly) hue step: up to three blend steps before it and up to three
    after, each switched off per image by a blend factor of 1.

    Args:
        images: [B, H, W, 3] float32 in [0, 1].
        factors: [B, 4] float32 brightness, contrast and saturation factors and hue shift.
        order: [B, 4] int32, a permutation of 0..3 per image.

    Returns:
        [B, H, W, 3] float32 in [0, 1].
    """
    hue_slot = tf.argmax(tf.cast(tf.equal(order, 3), tf.int32), axis=1, output_type=tf.int32)
    for before, slots in ((True, range(3)), (False, range(1, 4))):
        if not before:
            images = _shift_hue(images, factors[:, 3])
        for slot in slots:
            op = order[:, slot]
            active = slot < hue_slot if before else slot > hue_slot
            factor = tf.gather(factors, tf.minimum(op, 2)[:, None], batch_dims=1)[:, 0]
            images = _blend_step(images, tf.minimum(op, 2), tf.where(active, factor, 1.0))
    return images


def _reflect_shift_matrices(size: int, kernel_size: int) -> tf.Tensor:
    """[K, size, size] 0/1 matrices; tap t maps pixel y to pixel reflect(y + t - K // 2)."""
    radius = kernel_size // 2
    source = np.arange(size)[None, :] + np.arange(-radius, radius + 1)[:, None]
    source = np.abs(source)  # reflect at the top edge (torch/TF "reflect", edge not repeated)
    source = np.where(source > size - 1, 2 * (size - 1) - source, source)
    return tf.constant(np.eye(size, dtype=np.float32)[source])


def gaussian_blur(images: tf.Tensor, sigma: tf.Tensor, kernel_size: int) -> tf.Tensor:
    """Separable Gaussian blur with one sigma per image and reflect padding (torchvision).

    The blur is written as a banded [size, size] matrix per image, so it reuses the batched
    matmuls of `resample`; a sigma of 0 gives the identity.

    Args:
        images: [B, S, S, C] float32, square with a static side S.
        sigma: [B] float32 standard deviations in pixels; 0 leaves the image unchanged.
        kernel_size: Odd number of taps, at most `2 * S - 1`.

    Returns:
        [B, S, S, C] float32.
    """
    radius = kernel_size // 2
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    safe_sigma = tf.maximum(sigma, 1e-3)[:, None]
    kernel = tf.exp(-0.5 * tf.square(taps[None, :] / safe_sigma))
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)  # [B, K]
    kernel = tf.where(sigma[:, None] > 0.0, kernel, tf.one_hot(radius, kernel_size)[None, :])
    matrices = tf.einsum(
        "bt,tyx->byx", kernel, _reflect_shift_matrices(images.shape[1], kernel_size)
    )
    return resample(images, matrices, matrices)


def sample_params(
    batch: tf.Tensor,
    height: tf.Tensor,
    width: tf.Tensor,
    seed: SeedLike,
    recipe: AugmentRecipe | None = None,
) -> dict[str, tf.Tensor]:
    """Draws every random parameter of the strong recipe, independently per image.

    The weak recipe uses the `boxes` and `flip` entries only.

    Args:
        batch: Number of images (int32 scalar).
        height: Source height in pixels (float32 scalar).
        width: Source width in pixels (float32 scalar).
        seed: int, [2] integer tensor (stateless seed) or None for a fresh random seed.
        recipe: The knobs (default: the standard recipe).

    Returns:
        Dict of tensors: `boxes` [B, 4] (top, left, h, w in pixels), `flip` [B] bool,
        `jitter` [B] bool, `jitter_factors` [B, 4] (brightness, contrast, saturation
        factors, hue shift), `jitter_order` [B, 4] int32 permutations, `gray` [B] bool,
        `blur` [B] bool and `sigma` [B] float32.
    """
    # The generator is pinned rather than left to TF's automatic choice. Note that XLA
    # implements it differently from the TF kernels, so a seed reproduces the same draws
    # within one mode (XLA or not), not across them.
    r = _recipe(recipe)
    u = tf.random.stateless_uniform(
        tf.stack([batch, _NUM_UNIFORMS]), _seed_pair(seed), alg="philox"
    )
    strength = tf.constant(r.jitter_strength[:3], tf.float32)
    low = tf.maximum(0.0, 1.0 - strength)
    factors = low + (1.0 + strength - low) * u[:, _JITTER_FACTORS][:, :3]
    hue = r.jitter_strength[3] * (2.0 * u[:, _JITTER_FACTORS][:, 3:] - 1.0)
    boxes = sample_crop_boxes(
        u[:, : 4 * CROP_ATTEMPTS], height, width, scale=r.crop_scale, ratio=r.crop_ratio
    )
    return {
        "boxes": boxes,
        "flip": u[:, _FLIP] < r.flip_prob,
        "jitter": u[:, _JITTER_APPLY] < r.jitter_prob,
        "jitter_factors": tf.concat([factors, hue], axis=1),
        # argsort of iid uniforms is a uniformly random permutation, as torch.randperm.
        "jitter_order": tf.argsort(u[:, _JITTER_ORDER], axis=1),
        "gray": u[:, _GRAY] < r.gray_prob,
        "blur": u[:, _BLUR] < r.blur_prob,
        "sigma": r.blur_sigma[0] + (r.blur_sigma[1] - r.blur_sigma[0]) * u[:, _SIGMA],
    }


def _where_batch(mask: tf.Tensor, yes: tf.Tensor, no: tf.Tensor) -> tf.Tensor:
    """Per-image select: mask [B] bool, yes/no [B, ...]."""
    return tf.where(tf.reshape(mask, [-1, 1, 1, 1]), yes, no)


def apply_strong(
    images: tf.Tensor,
    params: dict[str, tf.Tensor],
    size: int,
    recipe: AugmentRecipe | None = None,
) -> tf.Tensor:
    """Applies the strong recipe with given parameters (before normalisation).

    Args:
        images: [B, H, W, 3] float32 in [0, 1].
        params: Parameters from `sample_params`.
        size: Output side in pixels.
        recipe: The recipe `params` were drawn with (parts of probability 0 are skipped).

    Returns:
        [B, size, size, 3] float32 in [0, 1].
    """
    cropped = resized_crop(images, params["boxes"], params["flip"], size)
    return apply_colour(cropped, params, recipe)


def apply_colour(
    x: tf.Tensor, params: dict[str, tf.Tensor], recipe: AugmentRecipe | None = None
) -> tf.Tensor:
    """The strong recipe after the crop: colour jitter, grayscale and blur.

    The streaming pipeline crops each image while decoding it and batches the crops, so the
    colour part is also applied on its own.

    Args:
        x: [B, S, S, 3] float32 in [0, 1], already cropped (and flipped).
        params: Parameters from `sample_params` (`boxes` and `flip` are not used).
        recipe: The recipe `params` were drawn with: a part of probability 0 is not
            computed (the result is the same, at no cost).

    Returns:
        [B, S, S, 3] float32 in [0, 1].
    """
    r = _recipe(recipe)
    size = x.shape[1]
    if r.jitter_prob > 0:
        jittered = color_jitter(x, params["jitter_factors"], params["jitter_order"])
        x = _where_batch(params["jitter"], jittered, x)
    if r.gray_prob > 0:
        # Grayscale is a saturation blend with factor 0; factor 1 keeps the colour image.
        x = _blend(x, _grayscale(x), tf.where(params["gray"], 0.0, 1.0))
    if r.blur_prob > 0:
        sigma = tf.where(params["blur"], params["sigma"], 0.0)
        x = gaussian_blur(x, sigma, blur_kernel_size(size, r.blur_sigma[1]))
    return x


def strong_augment_with_params(
    images: tf.Tensor, size: int, seed: SeedLike = None, recipe: AugmentRecipe | None = None
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Strong recipe before normalisation, also returning the drawn parameters.

    Args:
        images: [B, H, W, 3] uint8 or float pixels in [0, 255].
        size: Output side in pixels.
        seed: int, [2] integer tensor or None.
        recipe: The knobs (default: the standard recipe).

    Returns:
        ([B, size, size, 3] float32 in [0, 1], parameter dict from `sample_params`).
    """
    x = _to_unit_float(images)
    height, width = _spatial_size(x)
    params = sample_params(tf.shape(x)[0], height, width, seed, recipe)
    return apply_strong(x, params, size, recipe), params


def weak_augment_with_params(
    images: tf.Tensor, size: int, seed: SeedLike = None, recipe: AugmentRecipe | None = None
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Weak recipe (crop and flip) before normalisation, with the drawn parameters.

    Args:
        images: [B, H, W, 3] uint8 or float pixels in [0, 255].
        size: Output side in pixels.
        seed: int, [2] integer tensor or None.
        recipe: The knobs (its crop and flip; default: the standard recipe).

    Returns:
        ([B, size, size, 3] float32 in [0, 1], dict with `boxes` [B, 4] and `flip` [B]).
    """
    x = _to_unit_float(images)
    height, width = _spatial_size(x)
    params = sample_params(tf.shape(x)[0], height, width, seed, recipe)
    params = {"boxes": params["boxes"], "flip": params["flip"]}
    return resized_crop(x, params["boxes"], params["flip"], size), params


def strong_augment(
    images: tf.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    seed: SeedLike = None,
    recipe: AugmentRecipe | None = None,
) -> tf.Tensor:
    """Strong contrastive view: crop, flip, colour jitter, grayscale, blur, normalise.

    Args:
        images: [B, H, W, 3] uint8 or float pixels in [0, 255].
        size: Output side in pixels.
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
        seed: int (deterministic), [2] integer tensor (stateless seed, e.g. from a
            `keras.random.SeedGenerator`) or None (fresh randomness on each call).
        recipe: The knobs (default: the standard recipe).

    Returns:
        [B, size, size, 3] float32, normalised.
    """
    return normalise(strong_augment_with_params(images, size, seed, recipe)[0], mean, std)


def weak_augment(
    images: tf.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    seed: SeedLike = None,
    recipe: AugmentRecipe | None = None,
) -> tf.Tensor:
    """Weak contrastive view: crop (scale 0.2-1), flip, normalise.

    Args:
        images: [B, H, W, 3] uint8 or float pixels in [0, 255].
        size: Output side in pixels.
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
        seed: int, [2] integer tensor or None, as in `strong_augment`.
        recipe: The knobs (its crop and flip; default: the standard recipe).

    Returns:
        [B, size, size, 3] float32, normalised.
    """
    return normalise(weak_augment_with_params(images, size, seed, recipe)[0], mean, std)


def eval_transform(
    images: tf.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_fraction: float = 1.0,
) -> tf.Tensor:
    """Deterministic evaluation view: central crop, resize to `size`, normalise.

    The crop is the central square of side `crop_fraction` times the shorter side, i.e.
    torchvision's `Resize(size / crop_fraction)` + `CenterCrop(size)` (ImageNet's 256/224 is
    0.875); with 1.0 it is the whole central square. Images already `size` pixels square
    (CIFAR at 32 px, with fraction 1) are only normalised.

    Args:
        images: [B, H, W, 3] uint8 or float pixels in [0, 255].
        size: Output side in pixels.
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
        crop_fraction: Side of the central crop over the shorter side, in (0, 1].

    Returns:
        [B, size, size, 3] float32, normalised.
    """
    x = _to_unit_float(images)
    if x.shape[1] != size or x.shape[2] != size or crop_fraction != 1.0:
        height, width = _spatial_size(x)
        ones = tf.ones(tf.shape(x)[:1], tf.float32)
        boxes = ones[:, None] * imageops.central_box(height, width, crop_fraction)[None, :]
        x = resized_crop(x, boxes, tf.zeros_like(ones, tf.bool), size)
    return normalise(x, mean, std)


def two_views(
    images: tf.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    seed: SeedLike = None,
    key_augment: str = "weak",
    recipe: AugmentRecipe | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The (query, key) pair of views of every image, with independent randomness.

    Args:
        images: [B, H, W, 3] uint8 or float pixels in [0, 255].
        size: Output side in pixels.
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
        seed: int, [2] integer tensor or None.
        key_augment: "weak" (crop and flip: the ASCL, SCE and ReSSL key view) or "strong"
            (MoCo v2's `TwoCropsTransform`: both views strong).
        recipe: The knobs of both views (default: the standard recipe).

    Returns:
        (query, key), each [B, size, size, 3] float32, normalised; the query view is strong.
    """
    if key_augment not in KEY_AUGMENTS:
        raise ValueError(f"key_augment must be one of {KEY_AUGMENTS}, got {key_augment!r}")
    seeds = tf.random.experimental.stateless_split(_seed_pair(seed), num=2, alg="philox")
    key_view = strong_augment if key_augment == "strong" else weak_augment
    return (
        strong_augment(images, size, mean, std, seed=seeds[0], recipe=recipe),
        key_view(images, size, mean, std, seed=seeds[1], recipe=recipe),
    )


@keras.saving.register_keras_serializable(package="tfascl")
class TwoViews(keras.layers.Layer):
    """Keras layer producing the (strong, weak) views on the device, inside a train step.

    Randomness comes from a `keras.random.SeedGenerator` whose state variable advances on
    every call, so a fixed `seed` gives the same sequence of views run after run and the
    layer works inside `tf.function(jit_compile=True)`.

    Args:
        size: Output side in pixels.
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
        seed: Optional int; None draws a random initial state.
        key_augment: "weak" or "strong" key view (see `two_views`).
        recipe: An `AugmentRecipe` (or its `to_config()` dict); default: the standard one.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int | None = None,
        key_augment: str = "weak",
        recipe: AugmentRecipe | dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if key_augment not in KEY_AUGMENTS:
            raise ValueError(f"key_augment must be one of {KEY_AUGMENTS}, got {key_augment!r}")
        self.key_augment = key_augment
        if not isinstance(recipe, AugmentRecipe):
            recipe = AugmentRecipe.from_config(recipe)
        self.recipe = recipe
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """[B, H, W, 3] uint8/float in [0, 255] -> (strong, weak) [B, size, size, 3] float32."""
        seed = self.seed_generator.next()
        return two_views(
            images, self.size, self.mean, self.std, seed, self.key_augment, self.recipe
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple[tuple, tuple]:
        shape = (input_shape[0], self.size, self.size, 3)
        return shape, shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            size=self.size,
            mean=self.mean,
            std=self.std,
            seed=self.seed,
            key_augment=self.key_augment,
        )
        if self.recipe != STANDARD_RECIPE:  # configs saved before recipes load as before
            config["recipe"] = self.recipe.to_config()
        return config
