"""docs/RESULTS.md is generated from the results files: the numbers in it are computed."""

import importlib.util
import json

from helpers import REPO

spec = importlib.util.spec_from_file_location(
    "make_results", REPO / "benchmarks" / "make_results.py"
)
make_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_results)


def write(path, payload):
    path.write_text(json.dumps(payload))


def learning_run(method, seed, top1):
    history = {"confidence": [0.1, 0.2 + seed / 5], "purity": [0.1, 0.15 + seed / 10]}
    return {
        "history": history if method == "ascl" else {"loss": [5.0, 4.0]},
        "kind": "learning",
        "method": method,
        "seed": seed,
        "knn_top1": top1,
        "knn_curve": [[6, top1]],
        "settings": {
            "backbone_width": 16,
            "data": "cifar10",
            "subset_seed": 0,
            "epochs": 6,
            "batch_size": 128,
            "queue_size": 1024,
            "learning_rate": 0.06,
            "warmup_epochs": 1,
            "weight_decay": 5e-4,
        },
        "train_examples": 4000,
        "test_examples": 10000,
        "command": f"python -m benchmarks.learning --method={method} --seed={seed}",
        "seconds": 600.0,
        "device": "CPU test",
        "load_average_end": [1.0, 1.0, 1.0],
        "git_commit": "abc1234",
        "date": "2026-01-01 00:00:00 UTC",
    }


def test_learning_table_and_paired_differences(tmp_path):
    for method, tops in (("random", (20.0, 22.0)), ("moco", (30.0, 31.0)), ("ascl", (31.0, 33.0))):
        for seed, top1 in enumerate(tops):
            write(tmp_path / f"learning_{method}_seed{seed}.json", learning_run(method, seed, top1))
    page = make_results.render(tmp_path)
    # Means and sample standard deviations: (30, 31) -> 30.50 ± 0.71, (31, 33) -> 32.00 ± 1.41.
    # Paired by seed: MoCo − random (10, 9) -> +9.50 ± 0.71; ASCL − random (11, 11) -> +11.00
    # ± 0.00; ASCL − MoCo (1, 2) -> +1.50 ± 0.71, and MoCo − ASCL its negative.
    assert "| moco | weak | 2 | 30.50 ± 0.71 | +9.50 ± 0.71 |  | -1.50 ± 0.71 |" in page
    assert "| ascl | weak | 2 | 32.00 ± 1.41 | +11.00 ± 0.00 | +1.50 ± 0.71 |  |" in page
    assert "| random |  | 2 | 21.00 ± 1.41 |  |  |  | 20.00, 22.00 |" in page
    # The last epoch's relabelling monitors of the ASCL runs: c (0.2, 0.4), purity (0.15, 0.25).
    assert "(ascl, mean over 2 runs): confidence c 0.30, purity 0.200" in page


def test_loss_head_share_of_the_measured_moco_step(tmp_path):
    step = {
        "backbone_width": 64,
        "precision": "float32",
        "jit_compile": False,
        "augment_on": "host",
        "device": "CPU test",
        "pairs_per_sec": 10.0,
        "peak_memory_mb": 1.0,
        "window_s": [1.0, 1.0],
        "steps_per_window": 1,
        "gflop_per_pair": 4.454,
        "batch_size": 256,
    }
    records = [
        {**step, "method": "moco", "queue_size": 4096, "step_ms": 20000.0},
        {
            **step,
            "method": "ascl",
            "queue_size": 4096,
            "step_ms": 20100.0,
            "overhead_vs_moco": 0.005,
        },
    ]
    write(tmp_path / "speed_overhead.json", {"command": "x", "date": "d", "records": records})
    head = {"batch_size": 256, "queue_size": 4096, "device": "CPU test", "calls": 30}
    heads = [
        {**head, "method": "moco", "loss_head_ms": 10.0, "extra_ms_vs_moco": 0.0},
        {**head, "method": "ascl", "loss_head_ms": 15.0, "extra_ms_vs_moco": 5.0},
    ]
    write(tmp_path / "speed_loss_head.json", {"command": "y", "date": "d", "records": heads})
    page = make_results.render(tmp_path)
    assert "| ascl | 64 | 256 | 4096 | float32 | False | host | 10.0 | 20100.0 |" in page
    assert "queue 4096: +0.5% meets the ≤ 5% target" in page  # the whole-step overhead
    # 5 ms of extra head time against MoCo's 20 s step is 0.025%.
    assert "| ascl | 256 | 4096 | 15.0 | +5.00 | +0.025% |" in page


def test_known_departures_table_is_in_the_page(tmp_path):
    page = make_results.render(tmp_path)
    section = page[page.index("## Known departures from the official code") :]
    header = "| what | official (file:line) | why tfascl differs | expected effect |"
    assert header in section and "### Matched to the official code (issue 23)" in section
    table = section[section.index(header) : section.index("### Matched")]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) >= 8
    for row in rows:  # four cells, none empty
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert len(cells) == 4 and all(cells), row


def test_two_commits_side_by_side_from_their_windows(tmp_path):
    rates = {"main": [9.0, 10.0, 11.0, 30.0], "old": [12.0, 13.0, 14.0, 15.0]}
    windows = [
        {"label": label, "round": i, "pairs_per_sec": rate, "loadavg_after": [2.0 + i, 0.0, 0.0]}
        for label, values in rates.items()
        for i, rate in enumerate(values)
    ]
    compare = {
        "kind": "compare_step",
        "trees": {"main": "/tmp/a", "old": "/tmp/b"},
        "commits": {"main": "aaa1111", "old": "bbb2222"},
        "rounds": 4,
        "command": "python -m benchmarks.compare_commits step ...",
        "started": "2026-01-01 00:00:00 UTC",
        "cpu_count": 2,
        "config": {"backbone_width": 64},
        "metric": "pairs_per_sec",
        "windows": windows,
        # What the tool summarised is not read back: the page recomputes from the windows.
        "per_tree": {},
    }
    write(tmp_path / "compare_step_w64.json", compare)
    page = make_results.render(tmp_path)
    # main: median (10 + 11) / 2 = 10.5, inclusive quartiles 9.75 and 15.75; old: 13.5.
    assert "| main | aaa1111 | 10.50 | 9.00–30.00 | 9.75–15.75 | 4 | 2.0–5.0 | 1.000 |" in page
    assert "| old | bbb2222 | 13.50 | 12.00–15.00 | 12.75–14.25 | 4 | 2.0–5.0 | 1.286 |" in page
    # main's windows reach into old's range: no measured difference.
    assert "main / old: 0.778 (ratio of medians); the windows' ranges overlap" in page
    # Rounds: 9/12, 10/13, 11/14, 30/15 -> sorted 0.750, 0.769, 0.786, 2.000.
    assert "median 0.777, range 0.750–2.000, main faster in 1 of 4 rounds." in page
    compare["windows"] = [w for w in windows if w["pairs_per_sec"] != 30.0] + [
        {"label": "main", "round": 3, "pairs_per_sec": 10.0, "loadavg_after": [1.0, 0.0, 0.0]}
    ]
    write(tmp_path / "compare_step_w64.json", compare)
    assert "the ranges do not overlap: a measured difference" in make_results.render(tmp_path)


def test_padding_cost_table(tmp_path):
    per = {
        "explicit": {"median": 200.0, "min": 190.0, "max": 260.0, "n": 8},
        "same_stride1": {"median": 180.0, "min": 170.0, "max": 240.0, "n": 8},
    }
    payload = {
        "command": "python -m benchmarks.padding_cost",
        "date": "d",
        "width": 64,
        "batch_size": 128,
        "median_loadavg": 3.0,
        "max_abs_feature_diff": 1e-6,
        "max_abs_gradient_diff": 2e-6,
        "zero_padding_layers": {"explicit": 17, "same_stride1": 3},
        "ms_per_call": per,
    }
    write(tmp_path / "padding_cost.json", payload)
    page = make_results.render(tmp_path)
    assert "| explicit | 17 | 200 | 190–260 | 8 |" in page
    assert "| same_stride1 | 3 | 180 | 170–240 | 8 |" in page
    assert '"same" at stride 1 / explicit: 0.900.' in page


def test_op_differences_of_two_traced_steps(tmp_path):
    ops = {
        "kind": "compare_ops",
        "trees": {"main": "/tmp/a", "old": "/tmp/b"},
        "command": "python -m benchmarks.compare_commits ops ...",
        "config": {"backbone_width": 4},
        "traced": {"main": {"ops": 110}, "old": {"ops": 100}},
        "differences": {"Pad": {"main": 10, "old": 0}},
        "note": "The pads are the backbone's.",
    }
    write(tmp_path / "compare_ops_w4.json", ops)
    page = make_results.render(tmp_path)
    assert "(all ops: main 110, old 100)" in page
    assert "| Pad | 10 | 0 |" in page
    assert "The pads are the backbone's." in page
