"""Builds a TF Serving REST ``predict`` request for a tfascl export from image files.

    python export/make_request.py cat.jpg dog.png > request.json
    python export/make_request.py --b64 cat.jpg dog.png > request.json  # files as sent
    curl -s -X POST http://localhost:8501/v1/models/tfascl:predict \\
        -H 'Content-Type: application/json' -d @request.json

With ``--b64`` the request is for the ``serving_bytes`` signature: one instance
per file, ``{"image_bytes": {"b64": "<the file, base64>"}}``; TF Serving decodes
``{"b64": ...}`` for inputs whose name ends in ``_bytes``, and the SavedModel
decodes the JPEG, PNG, BMP or GIF itself, so the images may differ in size and
the request is about the size of the files (a third more for base64) instead of
several bytes per pixel. Nothing is decoded here: any file that starts as one of
those formats is sent as it is.

Without it, the request is the "row" format of the REST API: one instance per image, each
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
import base64
import json
import sys
from pathlib import Path

import numpy as np

SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
# How the formats serving_bytes decodes start (as tfascl.export.IMAGE_MAGIC).
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")


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


def build_bytes_request(files: list[bytes], signature: str = BYTES_SIGNATURE) -> dict:
    """The request body for encoded image files (JPEG, PNG, BMP, GIF), sent as base64."""
    for index, data in enumerate(files):
        if not data.startswith(IMAGE_MAGIC):
            raise ValueError(f"file {index} is not a JPEG, PNG, BMP or GIF image")
    return {
        "signature_name": signature,
        "instances": [
            {"image_bytes": {"b64": base64.b64encode(data).decode("ascii")}} for data in files
        ],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--output", help="write here instead of stdout")
    parser.add_argument(
        "--b64",
        action="store_true",
        help="send the files themselves, base64, to the serving_bytes signature",
    )
    args = parser.parse_args(argv)
    try:
        if args.b64:
            files = [Path(path).read_bytes() for path in args.images]
            for path, data in zip(args.images, files):
                if not data.startswith(IMAGE_MAGIC):
                    raise ValueError(f"{path} is not a JPEG, PNG, BMP or GIF image")
            request = build_bytes_request(files)
        else:
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
