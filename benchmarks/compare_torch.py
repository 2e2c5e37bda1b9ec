"""TF (tfascl) vs plain PyTorch eager: the same MoCo/ASCL train step, back to back.

    PYTHONPATH=. python -m benchmarks.compare_torch --torch_python=/work/torchvenv/bin/python

Alternates ``python -m benchmarks.train_step`` and ``benchmarks/torch_reference.py`` (each its own
process, the same settings, both on all cores: TF's default, ``torch.set_num_threads(cores)``)
for ``--rounds`` rounds, so that the load of a shared machine falls on both alike; measures the
float32 matmul rate before and after as the practical peak. Prints the ratio TF/torch of the
median pairs/s and the fraction of the peak each reaches, and writes everything to
``--output`` (default ``benchmarks/results/speed_torch_vs_tf.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.train_step import device_name, matmul_gflops


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torch_python", default="/work/torchvenv/bin/python")
    parser.add_argument("--method", default="ascl")
    parser.add_argument("--backbone_width", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--queue_size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jit_compile", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--output", default="benchmarks/results/speed_torch_vs_tf.json")
    args = parser.parse_args()
    common = [
        f"--method={args.method}",
        f"--backbone_width={args.backbone_width}",
        f"--batch_size={args.batch_size}",
        f"--queue_size={args.queue_size}",
        f"--steps={args.steps}",
        f"--windows={args.windows}",
    ]
    tf_command = [sys.executable, "-m", "benchmarks.train_step", *common]
    if args.jit_compile:
        tf_command.append("--jit_compile")
    torch_command = [
        args.torch_python,
        str(Path(__file__).with_name("torch_reference.py")),
        *common,
        f"--threads={os.cpu_count()}",
        # TF's warm-up is one window of --steps steps; torch gets the same.
        f"--warmup={args.steps}",
    ]
    peak_before = matmul_gflops()
    tf_runs, torch_runs = [], []
    for _ in range(args.rounds):
        for command, runs in ((tf_command, tf_runs), (torch_command, torch_runs)):
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            record = _json_lines(done.stdout)[0]
            print(json.dumps(record), flush=True)
            runs.append(record)
    peak_after = matmul_gflops()
    peak = max(peak_before, peak_after)
    tf_rate = statistics.median(r["pairs_per_sec"] for r in tf_runs)
    torch_rate = statistics.median(r["pairs_per_sec"] for r in torch_runs)
    gflop_per_pair = tf_runs[0]["gflop_per_pair"]
    summary = {
        "kind": "torch_vs_tf",
        "device": device_name(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": "PYTHONPATH=. python -m benchmarks.compare_torch " + " ".join(sys.argv[1:]),
        "tf_command": " ".join(tf_command[1:]),
        "torch_command": " ".join(torch_command[1:]),
        "tf_pairs_per_sec": tf_rate,
        "torch_pairs_per_sec": torch_rate,
        "ratio_tf_over_torch": round(tf_rate / torch_rate, 3),
        "matmul_gflops": [round(peak_before, 1), round(peak_after, 1)],
        "gflop_per_pair": gflop_per_pair,
        "ceiling_pairs_per_sec": round(peak / gflop_per_pair, 1),
        "tf_fraction_of_ceiling": round(tf_rate * gflop_per_pair / peak, 3),
        "torch_fraction_of_ceiling": round(torch_rate * gflop_per_pair / peak, 3),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "tf_runs": tf_runs,
        "torch_runs": torch_runs,
    }
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_runs")}))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
