"""Smoke tests of the throughput benchmarks: they run and print valid JSON (never timings)."""

import json
import shlex
import sys

import keras
import numpy as np
import pytest
from helpers import REPO

from benchmarks import compare_commits
from benchmarks import train_step as benchmark


def test_one_tiny_config_prints_json_and_a_table(capsys, tmp_path):
    output = tmp_path / "speed.json"
    records = benchmark.main(
        [
            "--method=ascl",
            "--backbone_width=4",
            "--batch_size=8",
            "--queue_size=32",
            "--steps=1",
            "--windows=3",
            f"--output={output}",
        ]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == len(records) == 1
    record = json.loads(lines[0])
    assert record == json.loads(json.dumps(records[0]))  # the printed line is the record
    assert (record["method"], record["batch_size"], record["queue_size"]) == ("ascl", 8, 32)
    assert (record["backbone_width"], record["steps_per_window"]) == (4, 1)
    # The timings are consistent with the windows they come from: the median window's
    # seconds over its steps, and its image pairs (batch x steps) per second.
    windows = record["window_s"]
    assert len(windows) == 3 and min(windows) > 0
    median = sorted(windows)[1]  # rounded to 1 ms / 2 in the record
    rounding = 0.0005 / median + 1e-3
    assert record["step_ms"] == pytest.approx(1000 * median / 1, rel=rounding, abs=0.05)
    assert record["pairs_per_sec"] == pytest.approx(8 * 1 / median, rel=rounding)
    assert record["pairs_per_sec"] == pytest.approx(8 * 1000 / record["step_ms"], rel=rounding)
    assert record["gflop_per_pair"] > 0
    # achieved = GFLOP/pair x pairs/s, up to the record's rounding: 0.05 on the product,
    # and GFLOP/pair to 3 decimals (its error of up to 0.0005 is multiplied by pairs/s).
    assert record["achieved_gflops"] == pytest.approx(
        record["gflop_per_pair"] * record["pairs_per_sec"],
        abs=0.05 + 0.0005 * record["pairs_per_sec"] + 1e-6,
    )
    assert json.loads(output.read_text())["records"][0]["method"] == "ascl"


def test_overhead_table_pairs_each_ascl_with_moco():
    configs = benchmark.table_configs("overhead", benchmark.Config())
    assert [(c.method, c.queue_size) for c in configs] == [
        ("moco", 4096),
        ("ascl", 4096),
        ("moco", 65536),
        ("ascl", 65536),
    ]
    records = [
        {**vars(c), "step_ms": 100.0 if c.method == "moco" else 104.0, "pairs_per_sec": 1.0}
        for c in configs
    ]
    benchmark.add_overheads(records)
    assert records[1]["overhead_vs_moco"] == pytest.approx(0.04)
    assert "overhead_vs_moco" not in records[0]
    assert "+4.0%" in benchmark.markdown_table(records)


def test_unknown_table_is_a_clear_error():
    with pytest.raises(ValueError, match="table must be one of"):
        benchmark.table_configs("nope", benchmark.Config())


def test_loss_head_times_each_call_and_compares_with_moco(monkeypatch):
    median, calls = benchmark.loss_head_ms("ascl", batch_size=4, queue_size=16, dim=8, repeats=3)
    assert len(calls) == 3 and median == sorted(calls)[1] and min(calls) > 0
    # Every method's head runs (its loss and the query's gradient).
    for method in benchmark.LOSS_HEAD_METHODS:
        assert benchmark.loss_head_ms(method, 4, 16, dim=8, repeats=1)[0] > 0

    # The table: every relabelling at both queue sizes, extra time relative to MoCo's median.
    fake = {m: [2.0] for m in benchmark.LOSS_HEAD_METHODS}
    fake.update({"none": [1.0, 2.0, 3.0], "ascl": [2.5], "ahcl": [4.0]})
    monkeypatch.setattr(benchmark, "loss_head_ms", lambda method, *a, **k: (0.0, fake[method][:]))
    records = benchmark.loss_head_table(batch_size=4)
    methods = ("moco", "ascl", "ahcl", "hard", "co2", "moco_dcl", "msf", "nnclr", "simclr")
    assert [(r["method"], r["queue_size"]) for r in records] == [
        (m, q) for q in (4096, 65536) for m in methods
    ]
    by_method = {r["method"]: r for r in records if r["queue_size"] == 4096}
    assert by_method["moco"]["loss_head_ms"] == 2.0 and by_method["moco"]["calls"] == 9
    assert by_method["ascl"]["extra_ms_vs_moco"] == 0.5
    assert by_method["ahcl"]["extra_ms_vs_moco"] == 2.0
    header = benchmark.markdown_table(records).splitlines()[0]
    assert "loss_head_ms" in header and "extra_ms_vs_moco" in header
    assert "backbone_width" not in header  # only the columns the records have


# --- benchmarks.compare_commits: two checkouts, the same command, alternating ---------------


def test_rounds_alternate_which_checkout_goes_first():
    order = compare_commits.round_order(["main", "old", "older"], 4)
    assert order == [
        ["main", "old", "older"],
        ["older", "old", "main"],
        ["main", "old", "older"],
        ["older", "old", "main"],
    ]
    # Two checkouts over an even number of rounds: each is first as often as second.
    firsts = [r[0] for r in compare_commits.round_order(["a", "b"], 6)]
    assert firsts.count("a") == firsts.count("b") == 3


def test_summary_is_median_spread_and_ratio_of_medians():
    windows = [
        {"label": "a", "rate": v, "round": i} for i, v in enumerate((10.0, 12.0, 11.0, 30.0))
    ]
    windows += [{"label": "b", "rate": v, "round": i} for i, v in enumerate((5.0, 6.0, 7.0))]
    summary = compare_commits.summarize(windows, ["a", "b"], key="rate")
    a, b = summary["per_tree"]["a"], summary["per_tree"]["b"]
    # The median resists the one disturbed window (30): (11 + 12) / 2, not the mean 15.75.
    assert (a["median"], a["min"], a["max"], a["n"]) == (11.5, 10.0, 30.0, 4)
    assert (a["q1"], a["q3"]) == (10.75, 16.5)  # inclusive quartiles of 10, 11, 12, 30
    assert (b["median"], b["min"], b["max"]) == (6.0, 5.0, 7.0)
    assert summary["ratio_to_first"] == {"a": 1.0, "b": round(6.0 / 11.5, 4)}
    assert summary["overlap"] == {"a": True, "b": False}  # [5, 7] lies below [10, 30]
    # Round by round: 5/10, 6/12, 7/11 (a's round 3 has no partner).
    assert summary["paired_ratio_to_first"]["b"]["median"] == 0.5


def test_paired_ratios_compare_windows_of_the_same_round():
    # Load halves from round 0 to round 1: b is 0.8 of a in both rounds, though b's
    # round-1 window is faster than a's round-0 one; in round 2 b is faster (1.2).
    windows = [
        {"label": "a", "round": 0, "rate": 10.0},
        {"label": "b", "round": 0, "rate": 8.0},
        {"label": "b", "round": 1, "rate": 16.0},
        {"label": "a", "round": 1, "rate": 20.0},
        {"label": "b", "round": 2, "rate": 12.0},
        {"label": "a", "round": 2, "rate": 10.0},
    ]
    paired = compare_commits.paired_ratios(windows, ["a", "b"], key="rate")
    assert paired["b"]["median"] == 0.8
    assert (paired["b"]["min"], paired["b"]["max"]) == (0.8, 1.2)
    assert (paired["b"]["n"], paired["b"]["rounds_faster"]) == (3, 1)
    assert list(paired) == ["b"]  # the first is the reference


def test_summary_overlap_turns_true_when_the_ranges_meet():
    windows = [{"label": "a", "rate": v} for v in (10.0, 12.0, 11.0, 30.0)]
    windows += [{"label": "b", "rate": v} for v in (5.0, 6.0, 7.0)]
    for i, w in enumerate(windows):
        w["round"] = i % 3
    assert not compare_commits.summarize(windows, ["a", "b"], key="rate")["overlap"]["b"]
    windows.append({"label": "b", "rate": 10.0, "round": 3})
    assert compare_commits.summarize(windows, ["a", "b"], key="rate")["overlap"]["b"]


def test_alternate_asks_each_worker_in_round_order_and_records_the_load():
    calls = []

    class Stub:
        def __init__(self, name, rate):
            self.name, self.rate = name, rate

        def window(self):
            calls.append(self.name)
            return {"pairs_per_sec": self.rate}

    loads = iter(range(100))
    records = compare_commits.alternate(
        {"new": Stub("new", 2.0), "old": Stub("old", 4.0)},
        rounds=3,
        loadavg=lambda: [float(next(loads)), 0.0, 0.0],
        log=lambda line: None,
    )
    assert calls == ["new", "old", "old", "new", "new", "old"]
    assert [(r["label"], r["round"], r["position"]) for r in records] == [
        ("new", 0, 0), ("old", 0, 1), ("old", 1, 0), ("new", 1, 1), ("new", 2, 0), ("old", 2, 1)
    ]  # fmt: skip
    # The load is read right before and right after each window, in turn.
    assert [(r["loadavg_before"][0], r["loadavg_after"][0]) for r in records[:2]] == [
        (0.0, 1.0),
        (2.0, 3.0),
    ]
    assert [r["pairs_per_sec"] for r in records] == [2.0, 4.0, 4.0, 2.0, 2.0, 4.0]


def fake_checkout(root, rate):
    """A folder with a ``tfascl`` package whose RATE is what the stub command reports."""
    (root / "tfascl").mkdir(parents=True)
    (root / "tfascl" / "__init__.py").write_text(f"RATE = {rate}\n")
    return root


def test_run_mode_runs_the_command_in_each_checkout_with_its_own_package(tmp_path, capsys):
    a = fake_checkout(tmp_path / "a", 30.0)
    b = fake_checkout(tmp_path / "b", 20.0)
    # The stub "run": imports tfascl (from PYTHONPATH) and leaves summary.json in {out}.
    stub = (
        "import json, pathlib, sys, tfascl; out = pathlib.Path(sys.argv[1]); out.mkdir(); "
        "(out / 'summary.json').write_text(json.dumps("
        "{'pairs_per_second': tfascl.RATE, 'file': tfascl.__file__}))"
    )
    output = tmp_path / "compare.json"
    result = compare_commits.main(
        ["run", f"--tree=new={a}", f"--tree=old={b}", "--rounds=3", f"--output={output}",
         f"--scratch={tmp_path / 'runs'}", "--", sys.executable, "-c", stub, "{out}"]
    )  # fmt: skip
    assert json.loads(output.read_text()) == json.loads(json.dumps(result))
    labels = [w["label"] for w in result["windows"]]
    assert labels == ["new", "old", "old", "new", "new", "old"]
    for window in result["windows"]:
        tree = a if window["label"] == "new" else b
        assert window["record"]["file"] == str(tree / "tfascl" / "__init__.py")
    assert result["per_tree"]["new"]["median"] == 30.0
    assert result["per_tree"]["old"]["median"] == 20.0
    assert result["ratio_to_first"]["old"] == round(20.0 / 30.0, 4)
    assert shlex.split(result["run_command"])[-1] == "{out}"  # recorded as given


def test_tree_arguments_are_checked():
    with pytest.raises(ValueError, match="LABEL=PATH"):
        compare_commits.parse_trees(["main", "old=/tmp/x"])
    with pytest.raises(ValueError, match="two --tree"):
        compare_commits.parse_trees(["main=/tmp/x"])
    with pytest.raises(ValueError, match="two trees called"):
        compare_commits.parse_trees(["a=/tmp/x", "a=/tmp/y"])


@pytest.mark.slow
def test_step_mode_times_each_checkout_in_its_own_worker(tmp_path):
    output = tmp_path / "step.json"
    # The same checkout twice under two names: both workers must build, warm up and answer.
    result = compare_commits.main(
        ["step", f"--tree=x={REPO}", f"--tree=y={REPO}", "--rounds=2", "--steps=1",
         "--backbone_width=4", "--batch_size=8", "--queue_size=32", f"--output={output}"]
    )  # fmt: skip
    assert [w["label"] for w in result["windows"]] == ["x", "y", "y", "x"]
    for ready in result["workers"].values():
        assert ready["tfascl_file"] == str(REPO / "tfascl" / "__init__.py")
        assert ready["train_step_file"] == str(REPO / "benchmarks" / "train_step.py")
    for window in result["windows"]:
        assert window["pairs_per_sec"] == pytest.approx(8 / window["seconds"], rel=1e-2)


def test_padding_variant_has_the_backbones_weights_and_outputs():
    from benchmarks import padding_cost

    models = padding_cost.build_pair(width=4)
    explicit, same = models["explicit"], models["same_stride1"]
    count = {
        label: sum(isinstance(layer, keras.layers.ZeroPadding2D) for layer in model.layers)
        for label, model in models.items()
    }
    # 17 3×3 convs in the CIFAR ResNet-18; 3 of them (stage 2-4's first conv) have stride 2.
    assert count == {"explicit": 17, "same_stride1": 3}
    assert padding_cost.backbones._conv is padding_cost.ORIGINAL_CONV  # restored
    images = np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        same(images, training=True), explicit(images, training=True), rtol=1e-5, atol=1e-5
    )


def test_op_histogram_counts_the_graph_and_its_functions():
    import tensorflow as tf

    @tf.function
    def inner(x):
        return tf.pad(x, [[1, 1]]) * 2.0

    @tf.function
    def outer(x):
        return inner(x) + tf.pad(x, [[1, 1]])

    graph_def = outer.get_concrete_function(tf.TensorSpec([3])).graph.as_graph_def()
    histogram = compare_commits.op_histogram(graph_def)
    assert histogram["Pad"] == 2  # one in outer's graph, one in inner's library function
    assert histogram["Mul"] == 1 and histogram["AddV2"] == 1
    differences = compare_commits.diff_histograms(
        {"a": {"Pad": 2, "Mul": 1}, "b": {"Mul": 1, "Slice": 3}}
    )
    assert differences == {"Pad": {"a": 2, "b": 0}, "Slice": {"a": 0, "b": 3}}


def test_tree_commit_marks_a_patched_checkout(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
    clean = compare_commits.tree_commit(tmp_path)
    assert len(clean) >= 7 and "+" not in clean
    (tmp_path / "a.py").write_text("x = 2\n")  # the patch under measurement
    assert compare_commits.tree_commit(tmp_path) == clean + "+dirty"
    assert compare_commits.tree_commit(tmp_path / "missing") == "unknown"
