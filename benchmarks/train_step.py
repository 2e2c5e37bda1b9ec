"""Training-step throughput: the real ``fit`` path on batches already in memory.

    python -m benchmarks.train_step [--method=ascl] [--backbone_width=64] [--batch_size=256]
        [--queue_size=4096] [--precision=float32] [--jit_compile] [--augment_on=host]
    python -m benchmarks.train_step --table=overhead|batch|queue|precision|steps_per_execution
    python -m benchmarks.train_step --table=loss_head [--batch_size=256]
    python -m benchmarks.train_step ... [--steps_per_execution=8] [--append_jsonl=FILE]

Each configuration builds its model the way a run does (``RunSpec.build_model``), compiles it
with SGD and calls ``model.fit`` on ``tf.data.Dataset.from_tensors(batch).repeat()``: one
synthetic batch that already sits in memory (on the accelerator when there is one), so the
input pipeline is out of the measurement (``python -m benchmarks.input_pipeline`` measures that
apart, see docs/DATA.md). ``augment_on="device"`` feeds uint8 images and lets the model's
``TwoViews`` layer augment them inside the step, as a device-augmenting run does.

A configuration is first warmed up (tracing, XLA compilation, optimizer slots: one window),
then timed over ``--windows`` windows of ``--steps`` steps, each window one ``fit`` epoch timed
from ``on_epoch_begin`` to ``on_epoch_end`` (Keras turns the epoch's metrics into numbers
there, so the window's work has finished). The windows of all configurations of a table are
interleaved (A, B, A, B, ...) so that load from other processes on a shared machine falls on
all of them alike; ratios within one table are therefore more trustworthy than absolute rates.

``--steps_per_execution=N`` compiles the model with ``compile(steps_per_execution=N)``:
``fit`` then runs N steps per ``tf.function`` call and the host (callbacks, the logs) acts
once per call; ``--table=steps_per_execution`` compares 1 and 8, which shows how much of a
step is host work (at a tiny width on a CPU, or at any width on a GPU). ``--steps`` must
be a multiple of N. ``--append_jsonl=FILE`` measures the configurations one after the
other (no interleaving: for a dedicated accelerator) and appends each record to FILE as
soon as it is measured, so a run cut short keeps what it finished.

``--table=loss_head`` times only the part of the step where the methods differ, the loss
head (logits against the queue, the targets, the cross-entropy and its gradient for the
query), on random unit vectors, for MoCo v2, ASCL, AHCL and hard relabelling at queue 4096 and
65536. It takes seconds and is far less sensitive to a shared machine than whole steps, so it
bounds ASCL's overhead where the step table's windows are too noisy to resolve a few percent.

Prints one JSON line per configuration, then a markdown table. ``pairs_per_sec`` is image
pairs (one image → its two views) per second, the median over the windows.
``peak_memory_mb`` is the accelerator's peak allocation during the configuration's windows
(``tf.config.experimental.get_memory_info``); on CPU it is the process's maximum resident set
size so far (``resource.getrusage``), which only grows: read it as an upper bound for the
configurations measured after the first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfascl import losses
from tfascl.data import TwoViews
from tfascl.runs import RunSpec

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
TABLES = ("overhead", "batch", "queue", "precision", "steps_per_execution", "device", "loss_head")
# MoCo v2 ("none"), the relabelling variants, and the heads of the methods ASCL is measured
# against (the head: what the step computes after the encoders; see loss_head_ms).
LOSS_HEAD_METHODS = ("none", "ascl", "ahcl", "hard", "co2", "moco_dcl", "msf", "nnclr", "simclr")
# CIFAR-10 channel statistics: only the arithmetic matters here, not the values.
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


@dataclasses.dataclass
class Config:
    """One measured configuration (the fields of every JSON line)."""

    method: str = "ascl"
    backbone: str = "resnet18"
    backbone_width: int = 64
    batch_size: int = 256
    queue_size: int = 4096
    precision: str = "float32"
    jit_compile: bool = False
    augment_on: str = "host"
    image_size: int = 32
    steps_per_execution: int = 1


@dataclasses.dataclass
class Measurement:
    """A built, compiled model and the timings of its windows."""

    config: Config
    model: keras.Model
    dataset: tf.data.Dataset
    window_seconds: list[float] = dataclasses.field(default_factory=list)
    window_loads: list[float] = dataclasses.field(default_factory=list)
    warmup_seconds: float = 0.0
    peak_memory_mb: float = 0.0


class _WindowTimer(keras.callbacks.Callback):
    """Seconds of the last epoch, from its beginning to its end (after the metrics sync)."""

    seconds = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds = time.perf_counter() - self._start


def device_name() -> str:
    """``"GPU: <name>"`` for the first GPU, else ``"CPU: <model> x<cores>"``."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}"
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {model} x{os.cpu_count()}"


def git_commit() -> str:
    """The short hash of the checked-out commit, or "unknown"."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _on_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def _memory_mb() -> float:
    """Peak accelerator allocation since the last reset, or the process's max RSS on CPU."""
    if _on_gpu():
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_memory() -> None:
    if _on_gpu():
        tf.config.experimental.reset_memory_stats("GPU:0")


def forward_flops(model: keras.Model) -> int:
    """Multiply-adds × 2 of one image through a functional model's Conv2D and Dense layers."""
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            flops += forward_flops(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels = layer.output.shape
            kernel = int(np.prod(layer.kernel.shape[:-1]))  # kh · kw · C_in
            flops += 2 * height * width * channels * kernel
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * int(np.prod(layer.kernel.shape))
    return flops


def flops_per_pair(model: keras.Model) -> int:
    """Train-step FLOPs per image pair: query forward + backward (≈ 2× forward) + key forward.

    The queue logits, the EMA and the optimizer are left out (under 1% at width 64).
    """
    encoder = forward_flops(model.backbone) + forward_flops(model.projector)
    return 4 * encoder


def matmul_gflops(size: int = 4096, repeats: int = 5) -> float:
    """This machine's float32 matmul rate (GFLOP/s, best of ``repeats``): the practical peak."""
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul().numpy()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        matmul().numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def synthetic_batch(config: Config, seed: int = 0) -> tuple:
    """One batch in the form ``fit`` gets it for ``config.augment_on``.

    Host: ``((strong, weak), labels)`` float32 views; device: ``(uint8 images, labels)``.
    """
    rng = np.random.default_rng(seed)
    shape = (config.batch_size, config.image_size, config.image_size, 3)
    labels = tf.constant(rng.integers(0, 10, config.batch_size), tf.int64)
    if config.augment_on == "device":
        return tf.constant(rng.integers(0, 256, shape, dtype=np.uint8)), labels
    strong = tf.constant(rng.standard_normal(shape, dtype=np.float32))
    weak = tf.constant(rng.standard_normal(shape, dtype=np.float32))
    return (strong, weak), labels


def build(config: Config, steps: int) -> Measurement:
    """Builds and compiles the model of ``config`` and its endless one-batch dataset."""
    if steps % config.steps_per_execution:
        # fit runs whole executions: the window would run more steps than it counts.
        raise ValueError(
            f"steps ({steps}) must be a multiple of steps_per_execution "
            f"({config.steps_per_execution})"
        )
    if config.augment_on not in ("host", "device"):
        raise ValueError(f"augment_on must be 'host' or 'device', got {config.augment_on!r}")
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {config.precision!r}")
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        spec = RunSpec(
            method=config.method,
            backbone=config.backbone,
            backbone_width=config.backbone_width,
            image_size=config.image_size,
            queue_size=config.queue_size,
            batch_size=config.batch_size,
            total_steps=1_000_000,
            mean=MEAN,
            std=STD,
        )
        views = (
            TwoViews(config.image_size, MEAN, STD, seed=0)
            if config.augment_on == "device"
            else None
        )
        model = spec.build_model(views=views)
        model.compile(
            optimizer=keras.optimizers.SGD(0.03, momentum=0.9),
            jit_compile=config.jit_compile,
            steps_per_execution=config.steps_per_execution,
        )
    finally:
        # The policy is read when layers are created; later configurations start clean.
        keras.mixed_precision.set_global_policy("float32")
    dataset = tf.data.Dataset.from_tensors(synthetic_batch(config)).repeat()
    if _on_gpu():
        # Keep the batch resident on the device: the step then never waits for a host copy.
        dataset = dataset.apply(tf.data.experimental.copy_to_device("/gpu:0"))
    return Measurement(config, model, dataset.prefetch(2))


def _run_window(measurement: Measurement, steps: int) -> float:
    timer = _WindowTimer()
    measurement.model.fit(
        measurement.dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer]
    )
    return timer.seconds


def measure(
    configs: list[Config],
    steps: int = 2,
    windows: int = 3,
    append_jsonl: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Warms up every configuration, then times their windows interleaved.

    With ``append_jsonl`` each configuration is built, warmed up, timed and released
    before the next (no interleaving), and its record, with ``extra``, is appended to
    that file at once.

    Args:
        configs: What to measure.
        steps: Train steps per window (and in the warm-up).
        windows: Timed windows per configuration.
        append_jsonl: the JSON-lines file for one-at-a-time measurement.
        extra: fields added to every appended record (e.g. the command).

    Returns:
        One record per configuration: the ``Config`` fields plus ``device``,
        ``pairs_per_sec``, ``step_ms``, ``peak_memory_mb``, ``warmup_s``, ``windows``,
        ``steps_per_window`` and ``load_average``.
    """
    if append_jsonl is not None:
        records = []
        for config in configs:
            (record,) = measure([config], steps, windows)
            record.update(extra or {})
            with open(append_jsonl, "a") as stream:
                stream.write(json.dumps(record) + "\n")
            records.append(record)
            keras.backend.clear_session()  # frees the model before the next one
        return records
    measurements = []
    for config in configs:
        measurement = build(config, steps)
        _reset_memory()
        started = time.perf_counter()
        _run_window(measurement, steps)
        measurement.warmup_seconds = time.perf_counter() - started
        measurement.peak_memory_mb = _memory_mb()
        measurements.append(measurement)
    for _ in range(windows):
        for measurement in measurements:
            _reset_memory()
            measurement.window_seconds.append(_run_window(measurement, steps))
            measurement.window_loads.append(round(os.getloadavg()[0], 2))
            measurement.peak_memory_mb = max(measurement.peak_memory_mb, _memory_mb())
    device = device_name()
    records = []
    for m in measurements:
        seconds = statistics.median(m.window_seconds)
        pairs_per_sec = steps * m.config.batch_size / seconds
        flops = flops_per_pair(m.model)
        records.append(
            dataclasses.asdict(m.config)
            | {
                "device": device,
                "pairs_per_sec": round(pairs_per_sec, 2),
                "step_ms": round(1000 * seconds / steps, 1),
                "peak_memory_mb": round(m.peak_memory_mb, 1),
                "gflop_per_pair": round(flops / 1e9, 3),
                "achieved_gflops": round(flops * pairs_per_sec / 1e9, 1),
                "warmup_s": round(m.warmup_seconds, 1),
                "window_s": [round(s, 3) for s in m.window_seconds],
                "steps_per_window": steps,
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "window_load_average": m.window_loads,  # 1-minute load after each window
            }
        )
    return records


def _loss_head(method: str, key: tf.Tensor, queue: tf.Tensor):  # noqa: ANN202
    """The loss of ``method``'s head as a function of the query [B, D] (see loss_head_ms)."""
    if method in ("none", "ascl", "ahcl", "hard", "co2"):
        relabel = "none" if method == "co2" else method
        targets = losses.contrastive_targets(key, queue, relabel=relabel)

        def head(query: tf.Tensor) -> tf.Tensor:
            loss = losses.soft_contrastive_loss(query, key, queue, targets)
            if method == "co2":  # α·consistency: two softmaxes over the queue more
                loss += 0.3 * losses.co2_consistency_loss(query, key, queue)
            return loss

        return head
    if method == "moco_dcl":
        return lambda query: losses.debiased_contrastive_loss(query, key, queue)
    if method == "msf":  # the target's 5 nearest bank rows (the bank is M entries)
        return lambda query: losses.mean_shift_loss(query, key, queue, 5)
    if method == "nnclr":  # the key's nearest support row (M entries), NT-Xent on the batch
        neighbours, _ = losses.nearest_neighbors(key, queue)
        return lambda query: losses.nnclr_loss(neighbours, query)
    if method == "simclr":  # in-batch: no queue, 2B−2 negatives
        return lambda query: losses.nt_xent_loss(query, key)
    raise ValueError(f"no loss head for {method!r}")


def loss_head_ms(
    method: str,
    batch_size: int,
    queue_size: int,
    dim: int = 128,
    repeats: int = 30,
    jit_compile: bool = False,
) -> tuple[float, list[float]]:
    """Milliseconds of one method's loss head: forward and the query's gradient.

    For the MoCo family the head is what ``MomentumContrast`` computes after the encoders:
    logits ``[q·k, q·queueᵀ]/τ`` [B, 1+M], the targets of the relabelling (``"none"`` is
    MoCo v2's one-hot), the soft cross-entropy and ∂loss/∂q [B, D]. Co2 adds its
    consistency term; MoCo+DCL replaces the cross-entropy by the debiased loss; MSF
    finds the target's k = 5 nearest of M bank rows; NNCLR the key's nearest of M
    support rows, then NT-Xent on the batch; SimCLR NT-Xent on the batch (M unused).

    Args:
        method: one of ``LOSS_HEAD_METHODS`` (``"none"``: MoCo v2).
        batch_size: B, the batch size.
        queue_size: M, the queue (bank, support set) size.
        dim: D, the projection size.
        repeats: timed calls after two warm-up calls.
        jit_compile: compile the head with XLA.

    Returns:
        ``(median ms, every call's ms)``.
    """
    rng = np.random.default_rng(0)

    def unit(rows: int) -> tf.Tensor:
        x = rng.standard_normal((rows, dim)).astype(np.float32)
        return tf.constant(x / np.linalg.norm(x, axis=1, keepdims=True))

    query, key, queue = unit(batch_size), unit(batch_size), unit(queue_size)
    loss_of = _loss_head(method, key, queue)

    @tf.function(jit_compile=jit_compile)
    def head(query: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(query)
            loss = loss_of(query)
        return tape.gradient(loss, query)

    for _ in range(2):
        head(query).numpy()
    calls = []
    for _ in range(repeats):
        started = time.perf_counter()
        head(query).numpy()
        calls.append(1000 * (time.perf_counter() - started))
    return statistics.median(calls), calls


def loss_head_table(batch_size: int, jit_compile: bool = False) -> list[dict[str, Any]]:
    """``loss_head_ms`` of every relabelling at queue 4096 and 65536, interleaved by round.

    Each record has ``extra_ms_vs_moco``: its median minus MoCo v2's at the same queue.
    """
    configs = [(relabel, queue) for queue in (4096, 65536) for relabel in LOSS_HEAD_METHODS]
    calls: dict[tuple[str, int], list[float]] = {config: [] for config in configs}
    for _ in range(3):  # rounds, so that a burst of load falls on every method
        for relabel, queue in configs:
            calls[relabel, queue] += loss_head_ms(relabel, batch_size, queue, 128, 10, jit_compile)[
                1
            ]
    device = device_name()
    records = []
    for relabel, queue in configs:
        median = statistics.median(calls[relabel, queue])
        moco = statistics.median(calls["none", queue])
        records.append(
            {
                "method": "moco" if relabel == "none" else relabel,
                "batch_size": batch_size,
                "queue_size": queue,
                "jit_compile": jit_compile,
                "device": device,
                "loss_head_ms": round(median, 3),
                "extra_ms_vs_moco": round(median - moco, 3),
                "calls": len(calls[relabel, queue]),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
        )
    return records


def table_configs(table: str, base: Config) -> list[Config]:
    """The configurations of a preset table, varying one thing around ``base``."""
    replace = dataclasses.replace
    if table == "overhead":
        return [
            replace(base, method=method, queue_size=queue)
            for queue in (4096, 65536)
            for method in ("moco", "ascl")
        ]
    if table == "batch":
        return [replace(base, batch_size=b) for b in (64, 128, 256, 512, 1024)]
    if table == "queue":
        return [replace(base, queue_size=q) for q in (4096, 8192, 16384, 32768, 65536)]
    if table == "steps_per_execution":
        return [replace(base, steps_per_execution=n) for n in (1, 8)]
    if table == "device":
        return device_configs(base)
    if table == "precision":
        configs = [
            replace(base, precision=p, jit_compile=j)
            for p in ("float32", "mixed_bfloat16")
            for j in (False, True)
        ]
        if _on_gpu():
            configs += [replace(base, precision="mixed_float16", jit_compile=True)]
        return configs
    raise ValueError(f"table must be one of {TABLES}, got {table!r}")


def device_configs(base: Config) -> list[Config]:
    """The GPU table of ``benchmarks/device.sh``, most important first (a run cut short by
    its time budget keeps the head): ``base`` (the target: bf16, XLA, device augmentation,
    several steps per execution), the same at one step per execution, at half the batch
    and at 16× the queue (ResNet-18 CIFAR: batch 512 and 256, queue 4096 and 65536), then
    the other precision × XLA × augmentation combinations at ``base``'s batch and queue.
    """
    replace = dataclasses.replace
    configs = [base]
    if base.steps_per_execution > 1:
        configs.append(replace(base, steps_per_execution=1))
    small, large = base.batch_size // 2, base.queue_size * 16
    configs += [
        replace(base, batch_size=small),
        replace(base, queue_size=large),
        replace(base, batch_size=small, queue_size=large),
    ]
    for precision in ("mixed_bfloat16", "float32"):
        for jit in (True, False):
            for augment_on in ("device", "host"):
                config = replace(base, precision=precision, jit_compile=jit, augment_on=augment_on)
                if config not in configs:
                    configs.append(config)
    return configs


def add_overheads(records: list[dict[str, Any]]) -> None:
    """Adds ``overhead_vs_moco`` (step-time increase over MoCo at the same settings)."""
    keys = ("backbone_width", "batch_size", "queue_size", "precision", "jit_compile", "augment_on")
    moco = {tuple(r[k] for k in keys): r for r in records if r["method"] == "moco"}
    for record in records:
        reference = moco.get(tuple(record[k] for k in keys))
        if reference and record["method"] != "moco":
            record["overhead_vs_moco"] = round(record["step_ms"] / reference["step_ms"] - 1, 4)


COLUMNS = (
    "method",
    "backbone_width",
    "batch_size",
    "queue_size",
    "precision",
    "jit_compile",
    "augment_on",
    "steps_per_execution",
    "pairs_per_sec",
    "step_ms",
    "peak_memory_mb",
    "overhead_vs_moco",
    "loss_head_ms",
    "extra_ms_vs_moco",
)


def markdown_table(records: list[dict[str, Any]]) -> str:
    """The records as a markdown table (``overhead_vs_moco`` as a percentage)."""
    columns = [c for c in COLUMNS if any(c in r for r in records)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in records:
        cells = []
        for column in columns:
            value = record.get(column, "")
            if column == "overhead_vs_moco" and value != "":
                value = f"{100 * value:+.1f}%"
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", choices=TABLES, default=None, help="a preset sweep")
    parser.add_argument("--method", default="ascl")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--backbone_width", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--queue_size", type=int, default=4096)
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--jit_compile", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--augment_on", choices=("host", "device"), default="host")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument(
        "--steps_per_execution", type=int, default=1, help="train steps per tf.function call"
    )
    parser.add_argument(
        "--append_jsonl", default=None, help="measure one by one, appending records here"
    )
    parser.add_argument("--steps", type=int, default=2, help="train steps per timed window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per config")
    parser.add_argument("--output", default=None, help="also write the records to this JSON")
    parser.add_argument("--limit", type=int, default=None, help="only the first N configs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Measures the chosen configuration or table; prints JSON lines and a markdown table."""
    args = parse_args(argv)
    commit = git_commit()  # the code this run started with
    base = Config(
        method=args.method,
        backbone=args.backbone,
        backbone_width=args.backbone_width,
        batch_size=args.batch_size,
        queue_size=args.queue_size,
        precision=args.precision,
        jit_compile=args.jit_compile,
        augment_on=args.augment_on,
        image_size=args.image_size,
        steps_per_execution=args.steps_per_execution,
    )
    command = "python -m benchmarks.train_step " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.table == "loss_head":
        records = loss_head_table(args.batch_size, args.jit_compile)
    else:
        configs = table_configs(args.table, base) if args.table else [base]
        configs = configs[: args.limit]
        extra = {"command": command.strip()}
        records = measure(configs, args.steps, args.windows, args.append_jsonl, extra)
        add_overheads(records)
    for record in records:
        record["command"] = command.strip()
        print(json.dumps(record), flush=True)
    print()
    print(markdown_table(records))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "kind": "speed",
            "table": args.table,
            "command": command.strip(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "git_commit": commit,
            "records": records,
        }
        Path(args.output).write_text(json.dumps(payload, indent=2) + "\n")
    return records


if __name__ == "__main__":
    main()
