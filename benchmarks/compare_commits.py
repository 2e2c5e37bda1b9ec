"""Times two (or more) checkouts of tfascl side by side: the same command, alternating.

    # The train step (benchmarks/train_step.py of THIS tree, each checkout's tfascl):
    python -m benchmarks.compare_commits step --tree main=/tmp/cmp-main \\
        --tree c214606=/tmp/cmp-c214606 --rounds=8 --steps=3 \\
        --backbone_width=64 --batch_size=128 --queue_size=4096 --output=compare_step.json
    # Any command that leaves a JSON record (default: a tfascl-train run's summary.json):
    python -m benchmarks.compare_commits run --tree main=/tmp/cmp-main \\
        --tree c214606=/tmp/cmp-c214606 --rounds=4 --output=compare_run.json -- \\
        python -m tfascl.train --model_dir={out} --epochs=2 ...

A checkout is a folder holding a ``tfascl`` package, e.g. ``git worktree add --detach
/tmp/cmp-c214606 c214606``. Every process of a checkout runs with ``PYTHONPATH=<checkout>``
and the checkout as its working directory, so it imports that checkout's ``tfascl`` (each
record says which file it imported and which commit the checkout is at).

``step`` starts one long-lived worker per checkout. A worker builds the training step the way
``benchmarks.train_step`` does (its ``build`` and window timer, loaded from this file's folder
so both checkouts run the same benchmark code), warms it up (one window: tracing, optimizer
slots) and then waits; the controller asks the workers for one window each, in turn. ``run``
starts one fresh process per checkout and round and reads one number from the record the
process leaves (``--metric_file`` in ``{out}``, key ``--metric_key``).

Order: round r runs the checkouts in the given order when r is even and reversed when r is
odd (A B, B A, A B, ...): each checkout is as often first as second, so load that drifts over
the measurement falls on both alike. Only one process works at a time; the idle worker waits
on its stdin. ``/proc/loadavg`` is read before and after every window.

The result gives, per checkout, the median of its windows, min–max and the quartiles, and the
ratio of each checkout's median to the first checkout's. On a shared machine read the ratio
against the spread: a difference smaller than the windows' spread is not a measured one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

HERE = Path(__file__).resolve().parent
TRAIN_STEP = HERE / "train_step.py"  # the one benchmark file both checkouts run


def read_loadavg() -> list[float]:
    """The 1-, 5- and 15-minute load averages (``/proc/loadavg``, else ``os.getloadavg``)."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return [round(x, 2) for x in os.getloadavg()]


def round_order(labels: Sequence[str], rounds: int) -> list[list[str]]:
    """The checkouts' order in each round: as given in even rounds, reversed in odd ones.

    Args:
        labels: The checkouts' names, e.g. ``["main", "c214606"]``.
        rounds: How many rounds.

    Returns:
        ``rounds`` lists, each a permutation of ``labels``.
    """
    return [list(labels) if r % 2 == 0 else list(reversed(labels)) for r in range(rounds)]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and quartiles (``statistics.quantiles``, inclusive) of ``values``."""
    if not values:
        raise ValueError("no values")
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "q1": q1,
        "q3": q3,
        "n": len(values),
    }


def summarize(
    windows: Sequence[dict[str, Any]], labels: Sequence[str], key: str = "pairs_per_sec"
) -> dict[str, Any]:
    """Per checkout: the spread of ``key`` over its windows; ratios of medians to the first.

    Args:
        windows: One record per window: ``label`` and ``key`` at least.
        labels: The checkouts, the first being the reference of the ratios.
        key: The measured value (higher is faster).

    Returns:
        ``{"per_tree": {label: spread}, "paired_ratio_to_first": paired_ratios(...),
        "ratio_to_first": {label: median / first median}, "overlap": {label: whether its
        [min, max] overlaps the first's}}``.
    """
    per_tree = {label: spread([w[key] for w in windows if w["label"] == label]) for label in labels}
    first = per_tree[labels[0]]
    return {
        "per_tree": per_tree,
        "paired_ratio_to_first": paired_ratios(windows, labels, key),
        "ratio_to_first": {
            label: round(stats["median"] / first["median"], 4) for label, stats in per_tree.items()
        },
        "overlap": {
            label: stats["min"] <= first["max"] and first["min"] <= stats["max"]
            for label, stats in per_tree.items()
        },
    }


def paired_ratios(
    windows: Sequence[dict[str, Any]], labels: Sequence[str], key: str = "pairs_per_sec"
) -> dict[str, dict[str, float]]:
    """Per checkout after the first: ``key`` over the first's in the same round.

    Load that changes between rounds moves both windows of a round together, so these ratios
    vary less than the windows themselves. Needs ``round`` in every window.

    Returns:
        ``{label: spread of the per-round ratios, plus "rounds_faster": in how many rounds
        the checkout's window was faster than the first's}``.
    """
    by_round: dict[int, dict[str, float]] = {}
    for w in windows:
        by_round.setdefault(w["round"], {})[w["label"]] = w[key]
    result = {}
    for label in labels[1:]:
        ratios = [
            values[label] / values[labels[0]]
            for values in by_round.values()
            if label in values and labels[0] in values
        ]
        if ratios:
            result[label] = spread(ratios) | {"rounds_faster": sum(r > 1 for r in ratios)}
    return result


class Worker(Protocol):
    """Something that runs one measured window and says how it went."""

    def window(self) -> dict[str, Any]: ...


def alternate(
    workers: dict[str, Worker],
    rounds: int,
    loadavg: Callable[[], list[float]] = read_loadavg,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> list[dict[str, Any]]:
    """Runs ``rounds`` rounds of one window per worker in ``round_order``.

    Returns:
        One record per window: the worker's record plus ``label``, ``round``, ``position``
        (0 = first in its round), ``loadavg_before``/``loadavg_after`` and ``wall_s``.
    """
    records = []
    for r, order in enumerate(round_order(list(workers), rounds)):
        for position, label in enumerate(order):
            before = loadavg()
            started = time.perf_counter()
            record = dict(workers[label].window())
            record.update(
                label=label,
                round=r,
                position=position,
                wall_s=round(time.perf_counter() - started, 3),
                loadavg_before=before,
                loadavg_after=loadavg(),
            )
            records.append(record)
            log(json.dumps(record))
    return records


def tree_env(tree: str | Path) -> dict[str, str]:
    """The environment of a checkout's processes: only its own folder on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(tree).resolve())
    return env


def tree_commit(tree: str | Path) -> str:
    """The checkout's commit (short hash), ``+dirty`` when tracked files differ from it (a
    patch being measured), or "unknown" when it is not a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- step: a long-lived worker per checkout --------------------------------------------------


class StepWorker:
    """A worker process in one checkout, driven over its stdin and stdout (one JSON a line)."""

    def __init__(self, tree: str | Path, worker_args: list[str], python: str = sys.executable):
        self.tree = Path(tree).resolve()
        self.process = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "_worker", *worker_args],
            cwd=self.tree,
            env=tree_env(self.tree),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = self._read()  # after the build and the warm-up window

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker in {self.tree} ended (exit {self.process.wait()})")
        return json.loads(line)

    def window(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("window\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.stdin is not None and self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
        self.process.wait(timeout=120)


def _load_train_step() -> Any:
    """benchmarks/train_step.py of this tree, by file: the checkouts' own may differ or lack it."""
    spec = importlib.util.spec_from_file_location("_compare_train_step", TRAIN_STEP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def worker_main(argv: list[str]) -> None:
    """The worker: builds and warms up the step, then times one window per ``window`` line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="train_step.Config fields as JSON")
    parser.add_argument("--steps", type=int, required=True)
    args = parser.parse_args(argv)
    # Python put this file's folder first on sys.path; the checkout's modules come first.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    import tfascl  # from PYTHONPATH: this worker's checkout

    train_step = _load_train_step()
    config = train_step.Config(**json.loads(args.config))
    measurement = train_step.build(config, args.steps)
    started = time.perf_counter()
    train_step._run_window(measurement, args.steps)
    ready = {
        "ready": True,
        "tfascl_file": tfascl.__file__,
        "commit": tree_commit(Path(tfascl.__file__).parent),
        "warmup_s": round(time.perf_counter() - started, 3),
        "device": train_step.device_name(),
        "train_step_file": str(TRAIN_STEP),
    }
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        if line.strip() != "window":
            break
        seconds = train_step._run_window(measurement, args.steps)
        record = {
            "seconds": round(seconds, 4),
            "pairs_per_sec": round(args.steps * config.batch_size / seconds, 3),
        }
        print(json.dumps(record), flush=True)


# --- ops: what each checkout's traced train step computes ----------------------------------


def op_histogram(graph_def: Any) -> dict[str, int]:
    """Op type → count over a GraphDef's nodes and every function of its library."""
    counts: dict[str, int] = {}
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes += list(function.node_def)
    for node in nodes:
        counts[node.op] = counts.get(node.op, 0) + 1
    return dict(sorted(counts.items()))


def ops_worker_main(argv: list[str]) -> dict[str, Any]:
    """Traces ``model.train_step`` of the configured model once; returns its op histogram."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="train_step.Config fields as JSON")
    args = parser.parse_args(argv)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    import tensorflow as tf

    import tfascl  # from PYTHONPATH: this worker's checkout

    train_step = _load_train_step()
    config = train_step.Config(**json.loads(args.config))
    measurement = train_step.build(config, 1)
    batch = train_step.synthetic_batch(config)
    model = measurement.model
    model.optimizer.build(model.trainable_variables)
    graph = tf.function(model.train_step).get_concrete_function(batch).graph
    histogram = op_histogram(graph.as_graph_def())
    return {
        "tfascl_file": tfascl.__file__,
        "commit": tree_commit(Path(tfascl.__file__).parent),
        "ops": sum(histogram.values()),
        "histogram": histogram,
    }


def diff_histograms(histograms: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The op types whose counts differ between the checkouts: ``{op: {label: count}}``."""
    ops = sorted(set().union(*histograms.values()))
    table = {op: {label: h.get(op, 0) for label, h in histograms.items()} for op in ops}
    return {op: counts for op, counts in table.items() if len(set(counts.values())) > 1}


# --- run: a fresh process per checkout and round ---------------------------------------------


class RunWorker:
    """One fresh process per window: ``command`` in the checkout, a number from its record."""

    def __init__(
        self,
        tree: str | Path,
        command: list[str],
        metric_file: str,
        metric_key: str,
        scratch: str | Path,
        label: str,
        log_dir: str | Path | None = None,
    ):
        self.tree = Path(tree).resolve()
        self.command = command
        self.metric_file = metric_file
        self.metric_key = metric_key
        self.scratch = Path(scratch)
        self.label = label
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.runs = 0

    def window(self) -> dict[str, Any]:
        out = self.scratch / f"{self.label}_{self.runs}"
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.runs += 1
        command = [
            part.replace("{out}", str(out)).replace("{tree}", str(self.tree))
            for part in self.command
        ]
        started = time.perf_counter()
        done = subprocess.run(
            command, cwd=self.tree, env=tree_env(self.tree), capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"{out.name}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(command)} in {self.tree} exited {done.returncode}:\n"
                + (done.stdout + done.stderr)[-3000:]
            )
        record = json.loads((out / self.metric_file).read_text())
        return {
            self.metric_key: record[self.metric_key],
            "process_s": round(seconds, 3),
            "record": record,
        }


# --- the command line ------------------------------------------------------------------------


def parse_trees(specs: Sequence[str]) -> dict[str, Path]:
    """``["main=/tmp/a", "old=/tmp/b"]`` → ``{"main": Path("/tmp/a"), "old": Path("/tmp/b")}``."""
    trees: dict[str, Path] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"--tree wants LABEL=PATH, got {spec!r}")
        if label in trees:
            raise ValueError(f"two trees called {label!r}")
        trees[label] = Path(path)
    if len(trees) < 2:
        raise ValueError("give at least two --tree")
    return trees


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("step", "run", "ops"))
    parser.add_argument("--tree", action="append", default=[], help="LABEL=PATH, two or more")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--output", default=None, help="write the result to this JSON")
    parser.add_argument("--python", default=sys.executable)
    # step
    parser.add_argument("--steps", type=int, default=3, help="train steps per window")
    parser.add_argument("--method", default="ascl")
    parser.add_argument("--backbone_width", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--queue_size", type=int, default=4096)
    # run
    parser.add_argument("--metric_file", default="summary.json")
    parser.add_argument("--metric_key", default="pairs_per_second")
    parser.add_argument("--log_dir", default=None, help="run: each process's output here")
    parser.add_argument("--scratch", default=None, help="run: the {out} folders go here")
    argv = list(sys.argv[1:] if argv is None else argv)
    # run's command is everything after the first "--", passed on untouched.
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.command = command
    if args.mode == "run" and not args.command:
        parser.error("run needs a command after --")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        worker_main(argv[1:])
        return {}
    if argv and argv[0] == "_ops":
        print(json.dumps(ops_worker_main(argv[1:])), flush=True)
        return {}
    args = parse_args(argv)
    trees = parse_trees(args.tree)
    commits = {label: tree_commit(tree) for label, tree in trees.items()}
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    result: dict[str, Any] = {
        "kind": f"compare_{args.mode}",
        "trees": {label: str(tree) for label, tree in trees.items()},
        "commits": commits,
        "rounds": args.rounds,
        "order": "round r: the trees as given when r is even, reversed when r is odd",
        "command": "python -m benchmarks.compare_commits " + shlex.join(argv),
        "started": started,
        "cpu_count": os.cpu_count(),
    }
    if args.mode == "step":
        config = {
            "method": args.method,
            "backbone_width": args.backbone_width,
            "batch_size": args.batch_size,
            "queue_size": args.queue_size,
        }
        worker_args = ["--config", json.dumps(config), "--steps", str(args.steps)]
        workers: dict[str, Any] = {}
        try:
            # One after the other: two warm-ups at once would share the cores.
            for label, tree in trees.items():
                workers[label] = StepWorker(tree, worker_args, args.python)
                print(json.dumps({"label": label, **workers[label].ready}), file=sys.stderr)
            result["config"] = config | {"steps_per_window": args.steps}
            result["workers"] = {label: w.ready for label, w in workers.items()}
            windows = alternate(workers, args.rounds)
        finally:
            for worker in workers.values():
                worker.close()
        key = "pairs_per_sec"
    elif args.mode == "ops":
        config = {
            "method": args.method,
            "backbone_width": args.backbone_width,
            "batch_size": args.batch_size,
            "queue_size": args.queue_size,
        }
        traced = {}
        for label, tree in trees.items():
            done = subprocess.run(
                [args.python, str(Path(__file__).resolve()), "_ops", "--config",
                 json.dumps(config)],
                cwd=tree, env=tree_env(tree), capture_output=True, text=True, check=True,
            )  # fmt: skip
            traced[label] = json.loads(done.stdout.strip().splitlines()[-1])
        result["config"] = config
        result["traced"] = traced
        result["differences"] = diff_histograms({k: v["histogram"] for k, v in traced.items()})
        result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({"ops": {k: v["ops"] for k, v in traced.items()},
                          "differences": result["differences"]}, indent=2))  # fmt: skip
        return result
    else:
        scratch = args.scratch or tempfile.mkdtemp(prefix="compare_commits_")
        runners = {
            label: RunWorker(
                tree,
                args.command,
                args.metric_file,
                args.metric_key,
                scratch,
                label,
                args.log_dir,
            )
            for label, tree in trees.items()
        }
        result["run_command"] = shlex.join(args.command)
        windows = alternate(runners, args.rounds)
        key = args.metric_key
    result["windows"] = windows
    result["metric"] = key
    result |= summarize(windows, list(trees), key)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    text = json.dumps(result, indent=2) + "\n"
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    keys = ("per_tree", "ratio_to_first", "paired_ratio_to_first", "overlap")
    print(json.dumps({k: result[k] for k in keys}, indent=2))
    return result


if __name__ == "__main__":
    main()
