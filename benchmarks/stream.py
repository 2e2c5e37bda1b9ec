"""Streaming input on this machine: tfascl's pipeline against a plain tf.data loop.

    PYTHONPATH=. python -m benchmarks.stream --folder=../shared/datasets/cifar10 --image_size=32
    PYTHONPATH=. python -m benchmarks.stream --folder=DIR --image_size=224 --rss_counts=10000,40000

For one folder of JPEGs, side by side in one process and in alternating rounds:

* ``floor``: a plain tf.data loop doing only what streaming cannot avoid: list the files,
  read each, ``decode_and_crop_jpeg`` two random windows (query and key) drawn by
  ``tf.image.sample_distorted_bounding_box`` with RandomResizedCrop's ranges, resize them
  and batch (no colour augmentation, no labels, no seeds);
* ``tfascl_read``: ``tfascl.data.pretrain_dataset`` on ``open_images(folder)`` with the
  colour augmentation off: the same work plus torchvision's crop rule, per-example seeds,
  labels, flip and normalisation;
* ``tfascl``: the whole pretraining pipeline (colour jitter, grayscale, blur; XLA).

Throughput is pairs/s (two crops of one file each), and the process's CPU time per pair
(``time.process_time``, all threads): on a machine shared with other work the wall-clock
rates follow the load, while the CPU time a pipeline spends per pair (and so its ratio to
the floor's) moves much less; both ratios are recorded, with the load average before and
after. Then, per count in ``--rss_counts``,
a fresh process streams that many files for ``--rss_batches`` batches and reports its peak
resident memory. One JSON line per measurement; ``--output`` also writes them to a file.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time

import tensorflow as tf
from absl import app, flags

from benchmarks.train_step import device_name, git_commit
from tfascl import data

FLAGS = flags.FLAGS
flags.DEFINE_string("folder", None, "Folder of JPEGs (root/train/<class>/*.jpg).")
flags.DEFINE_integer("image_size", 224, "Side of the crops.")
flags.DEFINE_integer("batch_size", 256, "Pairs per batch.")
flags.DEFINE_integer("batches", 20, "Batches timed per round (after one warm-up batch).")
flags.DEFINE_integer("rounds", 3, "Alternating rounds of the three pipelines.")
flags.DEFINE_integer("max_files", None, "Use at most this many files.")
flags.DEFINE_list("rss_counts", [], "File counts whose peak resident memory is measured.")
flags.DEFINE_integer("rss_batches", 20, "Batches streamed by each memory measurement.")
flags.DEFINE_string("output", None, "Also write the JSON lines to this file.")
flags.DEFINE_boolean("rss_child", False, "Internal: run one memory measurement and exit.")


def floor_pipeline(paths: list[str], size: int, batch: int) -> tf.data.Dataset:
    """read + two decode_and_crop_jpeg windows + resize, per file, batched."""

    def crops(path: tf.Tensor) -> tf.Tensor:
        contents = tf.io.read_file(path)
        shape = tf.io.extract_jpeg_shape(contents)
        whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
        views = []
        for _ in range(2):
            # TensorFlow's own RandomResizedCrop box (as TF Model Garden's ImageNet input):
            # the same area and aspect ranges, so both pipelines decode windows alike.
            begin, extent, _ = tf.image.sample_distorted_bounding_box(
                shape, whole, area_range=(0.2, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                max_attempts=10, use_image_if_no_bounding_boxes=True,
            )  # fmt: skip
            window = tf.stack([begin[0], begin[1], extent[0], extent[1]])
            crop = tf.io.decode_and_crop_jpeg(contents, window, channels=3)
            views.append(tf.image.resize(crop, [size, size], antialias=True))
        return tf.stack(views)

    files = tf.data.Dataset.from_tensor_slices(paths).shuffle(len(paths)).repeat()
    return files.map(crops, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(2)


def pairs_per_second(dataset: tf.data.Dataset, batches: int, batch: int) -> tuple[float, float]:
    """(pairs/s, CPU ms per pair) over `batches` batches after one warm-up batch."""
    iterator = iter(dataset)
    next(iterator)  # warm-up: tracing, XLA compilation, first file reads
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    del iterator  # its prefetching threads stop before the next pipeline is timed
    gc.collect()
    return batches * batch / wall, 1000 * cpu / (batches * batch)


def emit(record: dict, output: str | None) -> None:
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    if output:
        with open(output, "a") as stream:
            stream.write(line + "\n")


def throughput(files: data.ImageFiles) -> None:
    size, batch = FLAGS.image_size, FLAGS.batch_size
    pipelines = {
        "floor": floor_pipeline([str(p) for p in files.paths], size, batch),
        "tfascl_read": data.stream.stream_pretrain_dataset(
            files, batch, size, seed=0, epochs=(0, 100), colour=False
        ),
        "tfascl": data.pretrain_dataset(files, batch, size, seed=0, epochs=(0, 100)),
    }
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    cpu: dict[str, list[float]] = {name: [] for name in pipelines}
    load_start = os.getloadavg()[0]
    for _ in range(FLAGS.rounds):
        for name, dataset in pipelines.items():
            rate, cpu_ms = pairs_per_second(dataset, FLAGS.batches, batch)
            rates[name].append(rate)
            cpu[name].append(cpu_ms)
    floor = statistics.median(rates["floor"])
    floor_cpu = statistics.median(cpu["floor"])
    for name, values in rates.items():
        emit(
            {
                "table": "stream_throughput",
                "pipeline": name,
                "folder": os.path.basename(os.path.normpath(FLAGS.folder)),
                "files": len(files),
                "image_size": size,
                "batch_size": batch,
                "pairs_per_sec": round(statistics.median(values), 1),
                "rounds": [round(v, 1) for v in values],
                "vs_floor": round(statistics.median(values) / floor, 3),
                "cpu_ms_per_pair": round(statistics.median(cpu[name]), 3),
                "cpu_rounds": [round(v, 3) for v in cpu[name]],
                # > 1 when the pipeline spends less CPU time per pair than the floor.
                "cpu_vs_floor": round(floor_cpu / statistics.median(cpu[name]), 3),
                "cores": os.cpu_count(),
                "load_avg_start": round(load_start, 2),
                "load_avg": round(os.getloadavg()[0], 2),
                "device": device_name(),
                "commit": git_commit(),
                "date": time.strftime("%Y-%m-%d"),
            },
            FLAGS.output,
        )


def rss_child() -> None:
    files = data.open_images(FLAGS.folder, "train", max_examples=FLAGS.max_files)
    dataset = data.pretrain_dataset(files, FLAGS.batch_size, FLAGS.image_size, epochs=(0, 1))
    for _ in dataset.take(FLAGS.rss_batches):
        pass
    # This process's own high-water mark (ru_maxrss would include the parent's, via fork).
    with open("/proc/self/status") as status:
        peak = int(status.read().split("VmHWM:")[1].split()[0]) * 1024
    print(json.dumps({"files": len(files), "peak_rss_bytes": peak}))


def memory() -> None:
    for count in map(int, FLAGS.rss_counts):
        command = [sys.executable, "-m", "benchmarks.stream", "--rss_child",
                   f"--folder={FLAGS.folder}", f"--max_files={count}",
                   f"--image_size={FLAGS.image_size}", f"--batch_size={FLAGS.batch_size}",
                   f"--rss_batches={FLAGS.rss_batches}"]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        emit(
            {
                "table": "stream_memory",
                "files": measured["files"],
                "peak_rss_mb": round(measured["peak_rss_bytes"] / 2**20, 1),
                "batches": FLAGS.rss_batches,
                "image_size": FLAGS.image_size,
                "batch_size": FLAGS.batch_size,
                "device": device_name(),
                "commit": git_commit(),
                "date": time.strftime("%Y-%m-%d"),
            },
            FLAGS.output,
        )


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.rss_child:
        rss_child()
        return
    throughput(data.open_images(FLAGS.folder, "train", max_examples=FLAGS.max_files))
    memory()


if __name__ == "__main__":
    flags.mark_flag_as_required("folder")
    app.run(main)
