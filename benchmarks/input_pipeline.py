"""Throughput of the input pipeline alone, without any model.

    python -m benchmarks.input_pipeline [--data PATH_OR_NAME] [--max_examples N] [--batches N]

Measures, on whatever machine runs it:

* decode: listing and decoding the split's image files with Pillow (no cache involved);
* load_cached: `load_images` when its decode cache is warm;
* host_xla / host_graph: `pretrain_dataset(augment_on="host")` producing (strong, weak)
  pairs, with and without XLA for the augmentation;
* device_xla / device_graph: the `TwoViews` layer on a resident uint8 batch, as a train
  step would call it, under `tf.function(jit_compile=True)` and without XLA.

Prints one JSON line per configuration, then a markdown table. A "pair" is one image turned
into its two views; compile / warm-up time is excluded from the rates and reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf

from tfascl.data import ImageSet, TwoViews, load_images, pretrain_dataset
from tfascl.data.decode import decode_all
from tfascl.data.folders import scan_split, split_dir

# Where the repository's CI keeps a JPEG copy of CIFAR-10: a shared/ folder beside the clone.
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"


def _record(config: str, count: int, seconds: float, unit: str, **extra: float) -> dict:
    return {"config": config, unit: round(count / seconds, 1), "seconds": round(seconds, 2)} | {
        k: round(v, 2) if isinstance(v, float) else v for k, v in extra.items()
    }


def _time_iterations(step: Callable[[], object], warmup: int, iterations: int) -> tuple:
    """(warm-up seconds, timed seconds) of calling `step` warmup + iterations times."""
    started = time.perf_counter()
    for _ in range(warmup):
        step()
    warm = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(iterations):
        step()
    return warm, time.perf_counter() - started


def bench_decode(source: str, split: str, max_examples: int | None) -> list[dict]:
    """Cold decode of a folder split, then a load through the warm cache."""
    records = []
    if os.path.isdir(source):
        started = time.perf_counter()
        paths = scan_split(split_dir(source, split)).paths[:max_examples]
        images, _, _ = decode_all(paths)
        seconds = time.perf_counter() - started
        records.append(_record("decode", len(images), seconds, "images_per_s", images=len(images)))
    load_images(source, split, max_examples=max_examples)  # fills the cache if needed
    started = time.perf_counter()
    data = load_images(source, split, max_examples=max_examples)
    seconds = time.perf_counter() - started
    records.append(_record("load_cached", len(data), seconds, "images_per_s", images=len(data)))
    return records


def bench_host(data: ImageSet, batch_size: int, image_size: int, batches: int) -> list[dict]:
    """Pairs per second delivered by the host-augmenting tf.data pipeline."""
    records = []
    for jit in (True, False):
        iterator = iter(pretrain_dataset(data, batch_size, image_size, jit_compile=jit))
        warm, seconds = _time_iterations(lambda it=iterator: next(it), 3, batches)
        name = "host_xla" if jit else "host_graph"
        records.append(_record(name, batches * batch_size, seconds, "pairs_per_s", warmup_s=warm))
    return records


def bench_device(data: ImageSet, batch_size: int, image_size: int, batches: int) -> list[dict]:
    """Pairs per second of the TwoViews layer on a resident batch (this machine's CPU/GPU)."""
    images, _ = next(iter(pretrain_dataset(data, batch_size, image_size, augment_on="device")))
    records = []
    for jit in (True, False):
        layer = TwoViews(image_size, data.mean, data.std, seed=0)
        step = tf.function(layer, jit_compile=jit)

        def run(step: Callable = step) -> None:
            strong, _ = step(images)
            strong.numpy()  # wait for the result

        warm, seconds = _time_iterations(run, 2, batches)
        name = "device_xla" if jit else "device_graph"
        records.append(_record(name, batches * batch_size, seconds, "pairs_per_s", warmup_s=warm))
    return records


def markdown_table(records: list[dict]) -> str:
    """The records as a markdown table."""
    lines = ["| config | rate | seconds | warm-up s |", "|---|---:|---:|---:|"]
    for r in records:
        rate = r.get("pairs_per_s") or r.get("images_per_s")
        unit = "pairs/s" if "pairs_per_s" in r else "images/s"
        lines.append(
            f"| {r['config']} | {rate:,.0f} {unit} | {r['seconds']} | {r.get('warmup_s', '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs every configuration and prints JSON lines and a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else "digits"
    parser.add_argument("--data", default=default, help="folder, TFDS name or 'digits'")
    parser.add_argument("--split", default="train")
    parser.add_argument("--max_examples", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=100, help="timed batches per config")
    args = parser.parse_args(argv)

    records = bench_decode(args.data, args.split, args.max_examples)
    data = load_images(args.data, args.split, max_examples=args.max_examples)
    records += bench_host(data, args.batch_size, args.image_size, args.batches)
    records += bench_device(data, args.batch_size, args.image_size, args.batches)
    context = {
        "data": args.data,
        "images": len(data),
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "cpus": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    for record in records:
        print(json.dumps(record | context))
    print()
    print(markdown_table(records))
    return records


if __name__ == "__main__":
    main()
