"""The evaluation crop and its resize, defined once for the data pipelines and the serving export.

A leaf of TensorFlow only (``tests/test_architecture.py`` checks it), so that ``tfascl.data``
(which imports only ``data/`` and leaves) and ``tfascl.serving`` (which imports only
``files``, ``_version`` and this) share it:

* ``central_box``: the central square of side ``crop_fraction`` × the shorter side, as a
  continuous box. The in-memory evaluation transform (``data.augment.eval_transform``), the
  streamed one (``data.stream.centre_box``) and the served preprocessing
  (``serving.preprocess``) all crop with it.
* ``resize_box``: a box of a batch of images resized to S × S with antialiased bilinear
  filtering, TensorFlow's ``ScaleAndTranslate`` with the triangle kernel (the op behind
  ``tf.image.resize(..., antialias=True)``; Pillow's ``resize(BILINEAR, box=...)``). The
  serving signatures resize images of any size with it, the streamed pipelines their
  decoded crops.

The in-memory pipeline resamples with per-image matrices instead
(``data.augment.resized_crop``): its training views have one box and one flip per image,
which one ``ScaleAndTranslate`` call (one scale for the batch) cannot express, and its
evaluation view takes the same path. The two compute Pillow's filter and agree to within
3e-7 on [0, 1] pixels (float rounding), not bit for bit.
"""

from __future__ import annotations

import tensorflow as tf


def central_box(
    height: tf.Tensor, width: tf.Tensor, crop_fraction: float | tf.Tensor = 1.0
) -> tf.Tensor:
    """The central square crop of an image, as a continuous box.

    Odd size differences give a half-pixel offset rather than a rounded one (as Pillow's
    ``box=`` takes it); a pipeline that decodes integer crops rounds the box itself.

    Args:
        height: the image's height in pixels, float32 scalar.
        width: the image's width in pixels, float32 scalar.
        crop_fraction: the square's side over the shorter side, in (0, 1]; torchvision's
            ``Resize(S / crop_fraction)`` + ``CenterCrop(S)`` (ImageNet's 224/256 is 0.875).

    Returns:
        [4] float32: top, left, height, width (the last two the square's side).
    """
    side = tf.minimum(height, width) * crop_fraction
    return tf.stack([(height - side) / 2, (width - side) / 2, side, side])


def resize_box(images: tf.Tensor, size: int, box: tf.Tensor) -> tf.Tensor:
    """One box of every image of a batch, resized to ``size`` × ``size`` (antialiased bilinear).

    The box may be fractional and pixels outside it but inside the image enter the filter
    at its edges, as with Pillow's ``resize(BILINEAR, box=...)``; an image already
    ``size`` square with the whole image as its box is returned unchanged.

    Args:
        images: [N, H, W, C] pixels, any real dtype (computed in float32).
        size: S, the output side.
        box: [4] float32 top, left, height, width in pixels, the same for the whole batch.

    Returns:
        [N, S, S, C] float32, in the units of ``images``.
    """
    scale = tf.stack([size / box[2], size / box[3]])
    return tf.raw_ops.ScaleAndTranslate(
        images=tf.cast(images, tf.float32),
        size=tf.constant([size, size], tf.int32),
        scale=scale,
        translation=-box[:2] * scale,
        kernel_type="triangle",
        antialias=True,
    )
