"""Builds a TF Serving REST ``predict`` request for a tfascl export from image files.

    python export/make_request.py cat.jpg dog.png > request.json
    curl -s -X POST http://localhost:8501/v1/models/tfascl:predict \\
        -H 'Content-Type: application/json' -d @request.json

The request is the "row" format of the REST API: one instance per image, each
the image's pixels as nested lists [H][W][3] of integers 0–255, for the
``images`` input (uint8 [N, H, W, 3]) of the ``serving_default`` signature. The
SavedModel crops, resizes and normalises, so any image size works; but TF
Serving stacks the instances of one request into one tensor, so the images of a
request must share their size (send differently sized images in separate
requests). The response is ``{"predictions": [{"embedding": [...],
"projection": [...]}, ...]}``, one per image.

Needs Pillow (or, without it, TensorFlow); not tfascl.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SIGNATURE = "serving_default"


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 [H, W, 3] (greyscale and alpha converted to RGB)."""
    try:
        from PIL import Image
    except ImportError:  # TensorFlow decodes BMP, GIF, JPEG and PNG as well
        import tensorflow as tf

        data = tf.io.read_file(str(path))
        return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def build_request(images: list[np.ndarray], signature: str = SIGNATURE) -> dict:
    """The request body for uint8 images [H, W, 3] of one size."""
    sizes = {image.shape for image in images}
    if len(sizes) != 1:
        raise ValueError(
            f"the images of one request must share their size, got {sorted(sizes)}: "
            "send them in separate requests"
        )
    for image in images:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"images must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    return {"signature_name": signature, "instances": [image.tolist() for image in images]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--output", help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        request = build_request([read_rgb(path) for path in args.images])
    except ValueError as error:
        sys.exit(f"make_request: error: {error}")
    text = json.dumps(request, separators=(",", ":")) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
