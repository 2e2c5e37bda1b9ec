"""Smoke tests of the throughput benchmark: it runs and prints valid JSON (never timings)."""

import json

import pytest

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
