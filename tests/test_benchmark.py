"""Smoke tests of the throughput benchmark: it runs and prints valid JSON (never timings)."""

import json

import pytest

from tfascl import benchmark


def test_one_tiny_config_prints_json_and_a_table(capsys, tmp_path):
    output = tmp_path / "speed.json"
    records = benchmark.main(
        [
            "--method=ascl",
            "--backbone_width=4",
            "--batch_size=8",
            "--queue_size=32",
            "--steps=1",
            "--windows=1",
            f"--output={output}",
        ]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == len(records) == 1
    record = json.loads(lines[0])
    for field in (
        "method",
        "backbone",
        "backbone_width",
        "batch_size",
        "queue_size",
        "precision",
        "jit_compile",
        "augment_on",
        "device",
        "pairs_per_sec",
        "step_ms",
        "peak_memory_mb",
    ):
        assert field in record
    assert (record["method"], record["batch_size"], record["queue_size"]) == ("ascl", 8, 32)
    assert record["pairs_per_sec"] > 0 and record["step_ms"] > 0
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
