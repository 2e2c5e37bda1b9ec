"""Writes docs/RESULTS.md from the raw results in benchmarks/results/ (never typed by hand).

    python -m benchmarks.make_results [--results benchmarks/results] [--out docs/RESULTS.md]

Every number in the page comes from a JSON file there, next to the command that produced it,
the device, the load average and the date; the page also names the git commit it was
generated at.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

SPEED_TABLES = {
    "steps_per_execution": "Steps per execution: the host's work per step (tiny width)",
    "overhead": "ASCL vs MoCo v2 overhead (same settings)",
    "queue": "Queue size",
    "precision": "Precision and XLA",
    "batch": "Batch size",
}
KEY_DIM = 128  # the projector's output, as in every recipe here
# Published CIFAR-10 kNN top-1 (%) of ResNet-18 after 200 epochs, for the full protocol.
# Published numbers, each with its own protocol: they are not measurements of this
# project and are shown apart from them. (method, top-1 %, metric, protocol, source)
# Date (UTC) from which MoCo's step computes no neighbour distribution.
MOCO_ONE_HOT_SINCE = "2026-12-01"
MOCO_DEMO_PROTOCOL = (
    "ResNet-18 (3x3 stem, no max-pool), 200 epochs, batch 512, SGD lr 0.06 cosine, wd 5e-4, "
    "queue 4096, m 0.99, τ 0.1, split BN (8); kNN k 200, t 0.1, bank: the 50,000 training "
    "images, queries: the 10,000 test images"
)
LITERATURE = [
    ("MoCo v2", "82.6", "kNN top-1", f"asymmetric loss; {MOCO_DEMO_PROTOCOL}",
     "MoCo CIFAR-10 demo (colab/moco_cifar10_demo.ipynb, results table)"),
    ("MoCo v2", "85.3", "kNN top-1", f"symmetric loss (the sum of both directions); "
     f"{MOCO_DEMO_PROTOCOL}", "MoCo CIFAR-10 demo (colab/moco_cifar10_demo.ipynb, results table)"),
    ("ReSSL", "88.9", "as published", "not re-checked here: see the paper for its protocol",
     "ReSSL paper (Zheng et al., NeurIPS 2021)"),
    ("SCE", "88.5", "as published", "not re-checked here: see the paper for its protocol",
     "SCE paper (Denize et al., WACV 2023)"),
]  # fmt: skip
# Published GPU anchors for 200 epochs of MoCo on CIFAR-10 (ResNet-18, 50,000 pairs an
# epoch): (source, hardware, minutes for 200 epochs).
GPU_ANCHORS = [
    ("MoCo CIFAR-10 demo (PyTorch, colab/moco_cifar10_demo.ipynb)", "one NVIDIA V100", "~85–90"),
    ("lightly MoCo benchmark (PyTorch Lightning)", "one NVIDIA RTX A6000", "~112"),
]
GPU_TARGET_PAIRS_PER_SEC = 20_000  # 200 epochs of CIFAR-10 in under 10 minutes
CIFAR10_PAIRS_PER_EPOCH = 50_000
DEVICE_FILE = Path("device") / "device.jsonl"


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def _git(*args: str) -> str:
    try:
        return subprocess.check_output(["git", *args], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


def _table(rows: list[list[Any]], header: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _mean_sd(values: list[float], sign: str = "") -> str:
    """``"mean ± s.d."`` (sample standard deviation; just the mean for one value); ``sign="+"``
    writes the mean's sign (differences)."""
    mean = f"{statistics.mean(values):{sign}.2f}"
    if len(values) < 2:
        return mean
    return f"{mean} ± {statistics.stdev(values):.2f}"


def _loads(records: list[dict]) -> str:
    values = [v for r in records for v in r.get("window_load_average", [])]
    values = values or [r["load_average"][0] for r in records if "load_average" in r]
    if not values:
        return "n/a"
    return f"{min(values):.1f}–{max(values):.1f}"


OVERHEAD_TARGETS = {4096: 0.05, 65536: 0.10}  # issue 7: ASCL's step time over MoCo's


def _overhead_verdict(records: list[dict]) -> list[str]:
    """Each measured overhead against its target, next to the windows' own spread."""
    spread = max(max(r["window_s"]) / min(r["window_s"]) - 1 for r in records)
    verdicts = []
    for r in records:
        target = OVERHEAD_TARGETS.get(r["queue_size"])
        if r["method"] == "ascl" and "overhead_vs_moco" in r and target is not None:
            met = "meets" if r["overhead_vs_moco"] <= target else "exceeds"
            verdicts.append(
                f"queue {r['queue_size']}: {100 * r['overhead_vs_moco']:+.1f}% {met} the "
                f"≤ {100 * target:.0f}% target"
            )
    return [
        "Targets: " + "; ".join(verdicts) + ". The windows of one configuration spread by "
        f"up to {100 * spread:.0f}% (max/min), so a difference smaller than that is noise "
        "in either direction; the loss head timed alone (below) is the cost ASCL adds.",
    ]


def _loss_head_lines(results: Path, step_records: list[dict]) -> list[str]:
    """The loss-head table (speed_loss_head.json), as a share of MoCo's measured step."""
    path = results / "speed_loss_head.json"
    if not path.is_file():
        return []
    payload = _load(path)
    records = payload["records"]
    moco_step = {
        (r["batch_size"], r["queue_size"]): r["step_ms"]
        for r in step_records
        if r["method"] == "moco"
    }
    rows = []
    for r in records:
        step = moco_step.get((r["batch_size"], r["queue_size"]))
        share = "" if step is None else f"{100 * r['extra_ms_vs_moco'] / step:+.3f}%"
        rows.append(
            [
                r["method"],
                r["batch_size"],
                r["queue_size"],
                r["loss_head_ms"],
                f"{r['extra_ms_vs_moco']:+.2f}",
                share,
            ]
        )
    lines = [
        "",
        "#### The loss head alone",
        "",
        f"`{payload['command']}` — {records[0]['device']}, {payload['date']}, commit "
        f"{payload.get('git_commit', 'n/a')}, load average {_loads(records)}. Median of "
        f"{records[0]['calls']} calls per method (3 interleaved rounds). The head is the only "
        "part of the step where the methods differ: logits against the queue, the targets, "
        "the cross-entropy and the query's gradient, on random unit vectors (D = 128). "
        "MoCo's head is the one-hot InfoNCE alone: it computes no neighbour distribution "
        "(no softmax over the queue, no entropy), as the ASCL code's `--type normal`.",
        "",
    ]
    lines += _table(
        rows,
        ["method", "batch", "queue", "head ms", "extra ms vs MoCo", "extra / MoCo step above"],
    )
    overhead_date = _load(results / "speed_overhead.json").get("date", "")
    if overhead_date < MOCO_ONE_HOT_SINCE:
        lines += [
            "",
            f"The full-step table above ({overhead_date[:10]}) predates "
            f"{MOCO_ONE_HOT_SINCE}: MoCo's step then also computed the softmax over the queue "
            "and its entropy (for a confidence it did not use), so that table charges MoCo "
            "for ASCL's work and understates ASCL's overhead; the head alone above does not.",
        ]
    return lines


def _execution_lines(records: list[dict]) -> list[str]:
    """What one step per execution costs the host, from the 1 vs N pair of the table."""
    by_n = {r.get("steps_per_execution", 1): r for r in records}
    if 1 not in by_n or len(by_n) < 2:
        return []
    n = max(by_n)
    one, many = by_n[1], by_n[n]
    saved = one["step_ms"] - many["step_ms"]
    target_ms = 1000 * 512 / GPU_TARGET_PAIRS_PER_SEC
    return [
        "",
        f"{n} steps per execution: {many['pairs_per_sec'] / one['pairs_per_sec']:.2f}× the "
        f"pairs/s of one; the host's work per step that it removes is {saved:.1f} ms "
        f"({100 * saved / one['step_ms']:.0f}% of a {one['step_ms']} ms step at this width). "
        f"Windows (s): 1: {one['window_s']}; {n}: {many['window_s']}. At the GPU target "
        f"({GPU_TARGET_PAIRS_PER_SEC:,} pairs/s at batch 512: a {target_ms:.1f} ms step) "
        f"this host work alone would be {100 * saved / target_ms:.0f}% of each step, "
        "before callbacks and the progress bar: `tfascl-train` runs several steps per "
        "execution on an accelerator by default (`--steps_per_execution`, docs/CLI.md).",
    ]


def _minutes(seconds: float | None) -> str:
    return "n/a" if not seconds else f"{seconds / 60:.1f}"


def device_section(results: Path) -> list[str]:
    """The GPU section: benchmarks/device.sh's JSON lines, next to the published anchors."""
    lines = ["## GPU", ""]
    anchors = [
        "Published anchors, 200 epochs of MoCo on CIFAR-10 with ResNet-18 (PyTorch):",
        "",
        *_table([list(a) for a in GPU_ANCHORS], ["source", "hardware", "minutes / 200 epochs"]),
        "",
        f"Target: 200 epochs of ASCL in under 10 minutes on one H100/H200, i.e. ≥ "
        f"{GPU_TARGET_PAIRS_PER_SEC:,} pairs/s (ResNet-18 CIFAR, batch 512, bf16 + XLA, "
        "augmentation on the device).",
        "",
    ]
    path = results / DEVICE_FILE
    records = []
    if path.is_file():
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    environment = next((r for r in records if r.get("kind") == "environment"), None)
    if environment is None or not environment["device"].startswith("GPU"):
        what = "no GPU measurement exists yet" if environment is None else (
            f"{path} holds a run on {environment['device']}, not on a GPU")  # fmt: skip
        return [
            *lines,
            f"Not measured: {what}. On a machine with one GPU, `benchmarks/device.sh` "
            f"(under 8 minutes) writes `benchmarks/results/{DEVICE_FILE}`; "
            "`python -m benchmarks.make_results` then fills this section.",
            "",
            *anchors,
        ]
    gpu = environment["device"].removeprefix("GPU: ")
    steps = {r["step"]: r for r in records if r.get("kind") == "step"}
    lines += [
        f"`benchmarks/device.sh` on **{gpu}**, {environment['date']}, commit "
        f"{environment.get('git_commit', 'n/a')}: TensorFlow {environment['tensorflow']}, "
        f"Keras {environment['keras']}, CUDA {environment.get('cuda')}, cuDNN "
        f"{environment.get('cudnn')}. Steps (exit status, seconds): "
        + ", ".join(f"{n} ({s['exit_status']}, {s['seconds']} s)" for n, s in steps.items())
        + " (124: stopped at its time limit, what it finished is below).",
        "",
    ]
    speed = [r for r in records if "pairs_per_sec" in r and "kind" not in r]
    if speed:
        best = max(speed, key=lambda r: r["pairs_per_sec"])
        met = "meets" if best["pairs_per_sec"] >= GPU_TARGET_PAIRS_PER_SEC else "misses"
        lines += [
            "### Train step (synthetic batch resident on the GPU)",
            "",
            f"`{speed[0].get('command', 'python -m benchmarks.train_step --table=device')}` — "
            f"ResNet-18 width {speed[0]['backbone_width']}, median of "
            f"{len(speed[0]['window_s'])} windows of {speed[0]['steps_per_window']} steps.",
            "",
        ]
        rows = [
            [r["batch_size"], r["queue_size"], r["precision"], r["jit_compile"], r["augment_on"],
             r.get("steps_per_execution", 1), f"{r['pairs_per_sec']:,.0f}", r["step_ms"],
             r["peak_memory_mb"],
             _minutes(200 * CIFAR10_PAIRS_PER_EPOCH / r["pairs_per_sec"])]
            for r in speed
        ]  # fmt: skip
        lines += _table(
            rows,
            ["batch", "queue", "precision", "XLA", "augment", "steps/exec", "pairs/s",
             "step ms", "peak MB", "min / 200 epochs"],
        )  # fmt: skip
        lines += [
            "",
            f"Fastest: {best['pairs_per_sec']:,.0f} pairs/s ({best['precision']}, XLA "
            f"{best['jit_compile']}, augmentation on the {best['augment_on']}, batch "
            f"{best['batch_size']}, queue {best['queue_size']}): it {met} the "
            f"{GPU_TARGET_PAIRS_PER_SEC:,} pairs/s target.",
            "",
        ]
    learning = next((r for r in records if r.get("kind") == "learning"), None)
    if learning:
        lines += [
            "### ASCL on CIFAR-10, 5 epochs",
            "",
            f"`tfascl-train --flagfile=flags/cifar10_ascl.flags --dataset=<cifar10 folder> "
            f"--input=memory --epochs={learning['epochs']} --batch_size="
            f"{learning['batch_size']} --precision={learning['precision']} --jit_compile="
            f"{learning['jit_compile']} --augment_on={learning['augment_on']}` "
            f"({learning['train_examples']:,} pairs an epoch, steps per execution "
            f"{learning['steps_per_execution']}): status {learning['status']}, kNN top-1 "
            f"{100 * (learning['knn_top1'] or 0):.2f}% after {learning['epochs']} epochs, "
            f"{learning['pairs_per_sec']:,.0f} pairs/s. 200 epochs at that rate: "
            f"{_minutes(learning['projected_train_s'])} min of training "
            f"(the whole run's wall time scaled, start-up, compilation and kNN included: "
            f"{_minutes(learning['projected_wall_s'])} min).",
            "",
        ]
    pipeline = [r for r in records if r.get("kind") == "data_pipeline"]
    if pipeline:
        rows = [
            [r["config"], f"{r.get('pairs_per_s') or r.get('images_per_s'):,.0f}",
             "pairs/s" if "pairs_per_s" in r else "images/s"]
            for r in pipeline
        ]  # fmt: skip
        lines += ["### Input pipeline on this machine", "", *_table(rows, ["config", "rate", ""])]
        lines += [""]
    return lines + anchors


def speed_section(results: Path) -> list[str]:
    """The speed section: torch comparisons, the step tables, split BN, the input pipeline."""
    lines = ["## Speed", ""]
    for path in sorted(results.glob("speed_torch_vs_tf*.json")):
        lines += _torch_comparison_lines(path)
    for table, title in SPEED_TABLES.items():
        path = results / f"speed_{table}.json"
        if path.is_file():
            lines += _step_table_lines(results, path, table, title)
    for path in sorted(results.glob("compare_*.json")):
        lines += _compare_lines(path)
    if (results / "padding_cost.json").is_file():
        lines += _padding_cost_lines(results / "padding_cost.json")
    if (results / "split_bn.jsonl").is_file():
        lines += _split_bn_lines(results / "split_bn.jsonl")
    if (results / "data_pipeline.jsonl").is_file():
        lines += _input_pipeline_lines(results / "data_pipeline.jsonl")
    return lines


def _compare_lines(path: Path) -> list[str]:
    """Two commits side by side (``benchmarks.compare_commits``): per commit the median of its
    windows, their spread and load, and the ratio of medians, recomputed from the windows."""
    s = _load(path)
    if s["kind"] == "compare_ops":
        return _ops_lines(path, s)
    key, labels = s["metric"], list(s["trees"])
    what = {
        "compare_step": "train step, one long-lived process per commit",
        "compare_run": "training runs, a fresh process per commit and round",
    }.get(s["kind"], s["kind"])
    settings = (
        ", ".join(f"{k}={v}" for k, v in s["config"].items())
        if s.get("config")
        else "the command after `--` run in each commit's checkout, pairs/s from its summary.json"
    )
    lines = [
        f"### Two commits side by side: {what} ({path.name})",
        "",
        f"`{s['command']}` — {s['started']}, {s['cpu_count']} cores shared with other jobs; "
        f"{settings}. {s['rounds']} rounds, each running every commit once "
        "(order A B, then B A, ...), one at a time: load from other processes falls on "
        "both commits alike, so read the ratio against the spread, not the absolute rates. "
        "Load: the 1-minute load average after each of its windows.",
        "",
    ]
    medians = {}
    rows = []
    for label in labels:
        windows = [w for w in s["windows"] if w["label"] == label]
        values = sorted(w[key] for w in windows)
        medians[label] = statistics.median(values)
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        loads = [w["loadavg_after"][0] for w in windows]
        rows.append(
            [label, s["commits"].get(label, ""), f"{medians[label]:.2f}",
             f"{values[0]:.2f}–{values[-1]:.2f}", f"{q1:.2f}–{q3:.2f}", len(values),
             f"{min(loads):.1f}–{max(loads):.1f}",
             f"{medians[label] / medians[labels[0]]:.3f}"]
        )  # fmt: skip
    unit = "pairs/s" if "pairs" in key else key
    lines += _table(
        rows,
        ["commit", "hash", f"median {unit}", "min–max", "IQR", "windows", "load", "ratio"],
    )
    first = labels[0]
    for label in labels[1:]:
        low = [w[key] for w in s["windows"] if w["label"] == first]
        high = [w[key] for w in s["windows"] if w["label"] == label]
        overlap = min(high) <= max(low) and min(low) <= max(high)
        by_round: dict[int, dict[str, float]] = {}
        for w in s["windows"]:
            by_round.setdefault(w["round"], {})[w["label"]] = w[key]
        paired = sorted(v[first] / v[label] for v in by_round.values() if first in v and label in v)
        lines += [
            "",
            f"{first} / {label}: {medians[first] / medians[label]:.3f} (ratio of medians); "
            + (
                "the windows' ranges overlap, so the difference is within the spread."
                if overlap
                else "the ranges do not overlap: a measured difference."
            )
            + f" Round by round (each {first} window over the {label} window of its round): "
            f"median {statistics.median(paired):.3f}, range {paired[0]:.3f}–{paired[-1]:.3f}, "
            f"{first} faster in {sum(r > 1 for r in paired)} of {len(paired)} rounds.",
        ]
    if s.get("note"):
        lines += ["", s["note"]]
    return [*lines, ""]


def _ops_lines(path: Path, s: dict) -> list[str]:
    """The op types whose counts differ between the commits' traced train steps."""
    labels = list(s["trees"])
    settings = ", ".join(f"{k}={v}" for k, v in s["config"].items())
    totals = ", ".join(f"{label} {s['traced'][label]['ops']}" for label in labels)
    rows = [[op, *(counts[label] for label in labels)] for op, counts in s["differences"].items()]
    lines = [
        f"### Two commits side by side: ops of the traced train step ({path.name})",
        "",
        f"`{s['command']}` — {settings}. `model.train_step` traced once per commit; ops "
        f"counted over the graph and its function library (all ops: {totals}). Op types "
        "whose counts differ:",
        "",
        *_table(rows, ["op", *labels]),
    ]
    if s.get("note"):
        lines += ["", s["note"]]
    return [*lines, ""]


def _padding_cost_lines(path: Path) -> list[str]:
    """The backbone's explicit padding against ``padding="same"`` at stride 1."""
    s = _load(path)
    per = s["ms_per_call"]
    rows = [
        [label, s["zero_padding_layers"][label], f"{per[label]['median']:.0f}",
         f"{per[label]['min']:.0f}–{per[label]['max']:.0f}", per[label]["n"]]
        for label in ("explicit", "same_stride1")
    ]  # fmt: skip
    ratio = per["same_stride1"]["median"] / per["explicit"]["median"]
    return [
        '### Backbone padding: explicit ZeroPadding2D vs "same" at stride 1 (padding_cost.json)',
        "",
        f"`{s['command']}` — {s['date']}, ResNet-18 width {s['width']}, batch "
        f"{s['batch_size']}, forward + gradient per call, windows alternating, median load "
        f"{s['median_loadavg']:.1f}. Same weights: features differ by at most "
        f"{s['max_abs_feature_diff']:.1e}, gradients by {s['max_abs_gradient_diff']:.1e}.",
        "",
        *_table(rows, ["padding", "ZeroPadding2D layers", "median ms", "min–max", "windows"]),
        "",
        f'"same" at stride 1 / explicit: {ratio:.3f}.',
        *(["", s["note"]] if s.get("note") else []),
        "",
    ]


def _torch_comparison_lines(path: Path) -> list[str]:
    """One tfascl-vs-PyTorch comparison (compare_torch.py's JSON)."""
    s = _load(path)
    tf0 = s["tf_runs"][0]
    lines = [
        f"### CPU: tfascl vs plain PyTorch eager, same step ({path.name})",
        "",
        f"`{s['command']}` — {s['device']}, {s['date']}. "
        f"{len(s['tf_runs'])} round(s) of TF then torch, back to back (each its own "
        f"process, all cores; load average (1 min) at the end of each in the table).",
        f"TF: `{s['tf_command']}`; torch: `{s['torch_command']}`.",
        *([s["note"]] if "note" in s else []),
        "",
    ]
    rows = [
        [
            r.get("framework", "tfascl (TF)"),
            r["method"],
            r["backbone_width"],
            r["batch_size"],
            r["queue_size"],
            r["pairs_per_sec"],
            r["step_ms"],
            r["peak_memory_mb"],
            r["load_average"][0],
        ]
        for pair in zip(s["tf_runs"], s["torch_runs"])
        for r in pair
    ]
    lines += _table(
        rows,
        [
            "framework",
            "method",
            "width",
            "batch",
            "queue",
            "pairs/s",
            "step ms",
            "peak RSS MB",
            "load (1 min)",
        ],
    )
    lines += [
        "",
        f"* **TF / torch = {s['ratio_tf_over_torch']}** (median pairs/s "
        f"{s['tf_pairs_per_sec']} vs {s['torch_pairs_per_sec']}); target ≥ 1.",
        f"* float32 matmul (4096², TF, measured under the same load, so it is the "
        f"share of the machine this process could get) before/after: "
        f"{s['matmul_gflops'][0]} / "
        f"{s['matmul_gflops'][1]} GFLOP/s; the step costs {s['gflop_per_pair']} GFLOP per "
        f"pair (query fwd+bwd ≈ 3× forward, key forward 1×), so the ceiling is "
        f"{s['ceiling_pairs_per_sec']} pairs/s. TF reaches "
        f"{100 * s['tf_fraction_of_ceiling']:.0f}% of it, torch "
        f"{100 * s['torch_fraction_of_ceiling']:.0f}%.",
        f"* TF warm-up (trace + first steps): {tf0['warmup_s']} s.",
        "",
    ]
    return lines


def _step_table_lines(results: Path, path: Path, table: str, title: str) -> list[str]:
    """One train-step table (``benchmarks.train_step --table=...``), with its notes."""
    payload = _load(path)
    records = payload["records"]
    lines = [
        f"### {title}",
        "",
        f"`{payload['command']}` — {records[0]['device']}, {payload['date']}, "
        f"commit {payload.get('git_commit', 'n/a')}, "
        f"load average (1 min, after each window or at the end) {_loads(records)}. "
        f"Steps per window: {records[0]['steps_per_window']}, median of "
        f"{len(records[0]['window_s'])} interleaved windows.",
        "",
    ]
    header = ["method", "width", "batch", "queue", "precision", "XLA", "augment", "pairs/s",
              "step ms", "GFLOP/s", "peak MB"]  # fmt: skip
    with_execution = any(r.get("steps_per_execution", 1) != 1 for r in records)
    if with_execution:
        header.insert(7, "steps/exec")
    with_overhead = any("overhead_vs_moco" in r for r in records)
    if with_overhead:
        header.append("vs MoCo")
    rows = []
    for r in records:
        row = [
            r["method"],
            r["backbone_width"],
            r["batch_size"],
            r["queue_size"],
            r["precision"],
            r["jit_compile"],
            r["augment_on"],
            r["pairs_per_sec"],
            r["step_ms"],
            r.get("achieved_gflops", ""),
            r["peak_memory_mb"],
        ]
        if with_execution:
            row.insert(7, r.get("steps_per_execution", 1))
        if with_overhead:
            overhead = r.get("overhead_vs_moco")
            row.append("" if overhead is None else f"{100 * overhead:+.1f}%")
        rows.append(row)
    lines += _table(rows, header)
    if table == "overhead":
        lines += _overhead_notes(results, records)
    if table == "steps_per_execution":
        lines += _execution_lines(records)
    if records[0]["device"].startswith("CPU"):
        lines += [
            "",
            "CPU peak MB is the process's max RSS so far (it only grows across the "
            "configurations of a table).",
        ]
    return [*lines, ""]


def _overhead_notes(results: Path, records: list[dict]) -> list[str]:
    """ASCL's extra FLOPs over MoCo, the verdict, and the loss-head table beside it."""
    # ASCL's only extra work over MoCo: the key-to-queue similarities [B, M] (a
    # 2·D·M-FLOP matmul per pair, D = 128) and a softmax/top-1 over them.
    extra = [
        f"{100 * 2 * KEY_DIM * r['queue_size'] / (r['gflop_per_pair'] * 1e9):.2f}% "
        f"at queue {r['queue_size']}"
        for r in records
        if r["method"] == "ascl" and "gflop_per_pair" in r
    ]
    lines = [
        "",
        "ASCL adds one [B, 128] × [128, M] matmul (key vs queue) and a softmax over "
        "its rows to MoCo's step: in FLOPs " + ", ".join(extra) + " of the step. "
        "Windows (s) per config: "
        + "; ".join(f"{r['method']}/{r['queue_size']}: {r['window_s']}" for r in records)
        + ".",
        "",
        *_overhead_verdict(records),
    ]
    return lines + _loss_head_lines(results, records)


def _split_bn_lines(path: Path) -> list[str]:
    """Split BN's closed-form gradient against autodiff (``benchmarks.split_bn``)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    lines = [
        "### Split batch norm: closed-form gradient vs autodiff",
        "",
        "`PYTHONPATH=. python -m benchmarks.split_bn` — forward + backward of one "
        f"training-mode split BN ({records[0]['splits']} groups) at the activation shapes "
        "of ResNet-18 width 64, batch 256 (median ms). `SplitBatchNorm` uses the closed "
        "form; autodiff is the same maths differentiated by TensorFlow (what it used "
        "before).",
        "",
    ]
    rows = [
        [
            "×".join(map(str, r["shape"])),
            r["closed_form_ms"],
            r["autodiff_ms"],
            f"{r['speedup']}×",
            r["max_relative_difference"],
        ]
        for r in records
    ]
    lines += _table(rows, ["shape", "closed form ms", "autodiff ms", "speed-up", "max rel. diff"])
    return [*lines, ""]


def _input_pipeline_lines(path: Path) -> list[str]:
    """The input pipeline's rates (``benchmarks.input_pipeline``)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    first = records[0]
    lines = [
        "### Input pipeline (`benchmarks.input_pipeline`)",
        "",
        f"`python -m benchmarks.input_pipeline --max_examples=10000 --batches=20` — "
        f"{first['images']} images, batch {first['batch_size']}, {first['cpus']} CPUs, "
        f"load average {first['load_average'][0]}. See docs/DATA.md for the method.",
        "",
    ]
    rows = []
    for r in records:
        rate = r.get("pairs_per_s") or r.get("images_per_s")
        unit = "pairs/s" if "pairs_per_s" in r else "images/s"
        rows.append([r["config"], f"{rate:,.0f} {unit}", r["seconds"]])
    lines += _table(rows, ["config", "rate", "seconds"])
    lines += [
        "",
        "The host pipeline must outrun the train step for the step to be the bottleneck; "
        "compare its pairs/s with the step's above.",
        "",
    ]
    return lines


# The learning table's row order: the baselines, then the registry's order of methods.
LEARNING_ORDER = (
    "random", "moco", "ascl", "ahcl", "hard", "sce", "ressl", "co2", "moco_dcl", "byol",
    "byol_ascl", "simclr", "dcl", "nnclr", "msf",
)  # fmt: skip


def _method_order(method: str) -> tuple[int, str]:
    return (
        LEARNING_ORDER.index(method) if method in LEARNING_ORDER else len(LEARNING_ORDER),
        method,
    )


def learning_section(results: Path) -> list[str]:
    runs = [_load(p) for p in sorted(results.glob("learning_*.json"))]
    if not runs:
        return []
    lines = ["## Learning (reduced protocol)", ""]
    first = next((r for r in runs if r["method"] != "random"), runs[0])
    settings = first["settings"]
    lines += [
        "One command runs it: `benchmarks/learning.sh` (flags: `benchmarks/learning.flags`; "
        "each run is `python -m benchmarks.learning --flagfile=benchmarks/learning.flags "
        "--method=M --seed=S`, logs in `benchmarks/results/logs/`).",
        "",
        f"ResNet-18 (CIFAR stem) width {settings['backbone_width']}, pretrained on a fixed "
        f"stratified subset of {first['train_examples']} CIFAR-10 training images "
        f"(`{settings['data']}`, subset seed {settings['subset_seed']}) for "
        f"{settings['epochs']} epochs, batch {settings['batch_size']}, queue "
        f"{settings['queue_size']}, SGD lr {settings['learning_rate']} (warm-up "
        f"{settings['warmup_epochs']} epoch, cosine), wd {settings['weight_decay']}. "
        f"Weighted kNN (k=200, t=0.1): the subset as memory bank, all "
        f"{first['test_examples']} test images as queries. `random` is the untrained "
        f"backbone of the same seed. Devices: {', '.join(sorted({r['device'] for r in runs}))}.",
        "",
    ]
    by_method: dict[str, list[dict]] = {}
    for run in runs:
        by_method.setdefault(run["method"], []).append(run)
    # Runs of one seed share the subset, the initial weights and the data order, so the
    # per-seed difference is the paired comparison of the methods.
    by_seed = {m: {r["seed"]: r["knn_top1"] for r in group} for m, group in by_method.items()}

    def paired(method: str, reference: str) -> str:
        seeds = sorted(set(by_seed[method]) & set(by_seed.get(reference, {})))
        if method in (reference, "random") or not seeds:
            return ""
        return _mean_sd([by_seed[method][s] - by_seed[reference][s] for s in seeds], "+")

    rows = []
    for method in sorted(by_method, key=_method_order):
        group = sorted(by_method[method], key=lambda r: r["seed"])
        values = [r["knn_top1"] for r in group]
        rows.append(
            [
                method,
                group[0].get("key_augment", "weak") if method != "random" else "",
                len(values),
                _mean_sd(values),
                paired(method, "random"),
                paired(method, "moco"),
                paired(method, "ascl"),
                ", ".join(f"{v:.2f}" for v in values),
                ", ".join(f"{r['seconds'] / 60:.0f}" for r in group),
            ]
        )
    lines += _table(
        rows,
        [
            "method", "key view", "seeds", "kNN top-1 % (mean ± s.d.)", "− random",
            "− MoCo", "− ASCL", "per seed", "minutes",
        ],
    )  # fmt: skip
    lines += [
        "",
        "The three difference columns are paired by seed (same subset, initial weights and "
        "data order), mean ± s.d. of the per-seed differences in kNN points, over the seeds "
        "both methods have. Curves (epoch: kNN top-1 %):",
        "",
    ]
    lines += [
        f"* {method}: "
        + "; ".join(" → ".join(f"e{e}: {a}" for e, a in r["knn_curve"]) for r in group)
        for method, group in sorted(by_method.items(), key=lambda item: _method_order(item[0]))
        if method != "random"
    ]
    # Purity and confidence of the relabelling methods (MSF logs a purity of its k
    # neighbours but has no confidence: it is not relabelling).
    relabelled = [r for r in runs if "confidence" in r.get("history", {})]
    if relabelled:
        last = {
            key: [r["history"][key][-1] for r in relabelled if key in r["history"]]
            for key in ("confidence", "purity")
        }
        methods = ", ".join(sorted({r["method"] for r in relabelled}))
        confidence, purity = (statistics.mean(last[key]) for key in ("confidence", "purity"))
        lines += [
            "",
            f"Relabelling at the last epoch ({methods}, mean over {len(relabelled)} runs): "
            f"confidence c {confidence:.2f}, purity {purity:.3f} (the share of the target mass "
            "moved to neighbours that lands on the query's class; chance is 1/classes).",
        ]
    lines += [
        "",
        "Runs (date, load average at the end, commit):",
        "",
        *[
            f"* {r['method']} seed {r['seed']}: {r['date']}, load {r['load_average_end'][0]}, "
            f"commit {r['git_commit']}, `{r['command']}`"
            for r in runs
        ],
        "",
    ]
    return lines


def literature_section() -> list[str]:
    lines = [
        "## Literature (other protocols; not measured here)",
        "",
        "Published CIFAR-10 numbers, each under its authors' protocol. None of them is "
        "comparable with the reduced learning protocol above (width 16, 4,000 images, 6 "
        "epochs, batch 128); a full tfascl run under the recipe's protocol would be.",
        "",
    ]
    lines += _table(
        [list(row) for row in LITERATURE], ["method", "top-1 %", "metric", "protocol", "source"]
    )
    lines += [
        "",
        "The full protocol with tfascl (flagfiles come with the CLI; they follow the ASCL "
        "code's recipe — ResNet-18, batch 256, lr 0.03, 5 warm-up epochs, queue 4096, one "
        "loss direction — not the MoCo demo's):",
        "",
        "```",
        "tfascl-train --flagfile=flags/cifar10_ascl.flags --model_dir=runs/cifar10_ascl",
        "tfascl-train --flagfile=flags/cifar10_moco.flags --model_dir=runs/cifar10_moco",
        "```",
        "",
        "`model_dir/summary.json` holds the final and best kNN top-1.",
        "",
    ]
    return lines


KNOWN_DEPARTURES_FILE = Path(__file__).resolve().parents[1] / "docs" / "known_departures.md"


def known_departures_section(path: Path = KNOWN_DEPARTURES_FILE) -> list[str]:
    """The "Known departures" section: docs/known_departures.md, as written (the table of
    what tfascl still does differently from the official code, and what was matched)."""
    return [*path.read_text().rstrip().splitlines(), ""]


def render(results: Path) -> str:
    """The whole page."""
    lines = [
        "# Results",
        "",
        "<!-- Generated by `python -m benchmarks.make_results` from benchmarks/results/; "
        "do not edit by hand. -->",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at commit "
        f"`{_git('rev-parse', '--short', 'HEAD')}` (branch `{_git('branch', '--show-current')}`)"
        f" on {_cpu()}. The load average is given with each table: on these 2 cores a "
        "load well above 2 means other jobs shared the machine. Compare ratios measured "
        "side by side in one run, not rates across tables.",
        "",
    ]
    lines += speed_section(results)
    lines += device_section(results)
    lines += learning_section(results)
    lines += literature_section()
    lines += known_departures_section()
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument("--out", default="docs/RESULTS.md")
    args = parser.parse_args()
    Path(args.out).write_text(render(Path(args.results)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
