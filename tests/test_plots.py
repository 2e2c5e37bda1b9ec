"""Pictures: training curves from metrics files and t-SNE maps, written as PNGs of set size."""

import json

import numpy as np
import pytest
from PIL import Image

from tfascl import plots


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"cut short')
    return path


def epoch_records(epochs, with_ascl=True):
    records = []
    for epoch in range(1, epochs + 1):
        records.append({"kind": "step", "step": 10 * epoch - 5, "loss": 9.0})  # not plotted
        record = {
            "kind": "epoch",
            "epoch": epoch,
            "step": 10 * epoch,
            "loss": 7.0 - 0.5 * epoch,
            "knn_top1": 0.1 + 0.04 * epoch,
            "learning_rate": 0.06 * (1 - epoch / (epochs + 1)),
            "momentum": 0.99,
        }
        if with_ascl:
            record.update(confidence=0.3 + 0.05 * epoch, positive_weight=1 - 0.05 * epoch)
            record["purity"] = 0.2 + 0.05 * epoch
        records.append(record)
    return records


def png_size_and_colours(path):
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
        return image.size, len(np.unique(pixels.reshape(-1, 3), axis=0))


def test_read_metrics_jsonl_and_csv(tmp_path):
    records = epoch_records(3)
    jsonl = write_jsonl(tmp_path / "metrics.jsonl", records)
    assert plots.read_metrics(jsonl) == records  # the cut-short last line is skipped
    assert plots.find_metrics_file(tmp_path) == jsonl

    csv_path = tmp_path / "other" / "metrics.csv"
    csv_path.parent.mkdir()
    csv_path.write_text("epoch,loss,knn_top1\n1,5.0,0.2\n2,4.5,\n")
    x_key, series = plots.curve_series(plots.read_metrics(csv_path))
    assert x_key == "epoch"
    np.testing.assert_array_equal(series["x"], [1, 2])
    np.testing.assert_array_equal(series["loss"], [5.0, 4.5])
    assert series["knn_top1"][0] == 0.2 and np.isnan(series["knn_top1"][1])
    assert np.isnan(series["confidence"]).all()


def test_curve_series_prefers_epoch_records_and_falls_back_to_steps():
    x_key, series = plots.curve_series(epoch_records(4))
    assert x_key == "epoch" and list(series["x"]) == [1, 2, 3, 4]
    steps_only = [{"kind": "step", "step": s, "loss": 1.0 / s} for s in (50, 100)]
    x_key, series = plots.curve_series(steps_only)
    assert x_key == "step" and list(series["x"]) == [50, 100]


def test_training_curves_png_has_the_requested_size(tmp_path):
    runs = [
        plots.CurveRun("ASCL", epoch_records(6)),
        plots.CurveRun("MoCo v2", epoch_records(6, with_ascl=False)),  # no confidence etc.
    ]
    path = plots.plot_training_curves(
        runs, tmp_path / "sub" / "curves.png", title="ASCL vs MoCo v2", figsize=(9, 5), dpi=80
    )
    size, colours = png_size_and_colours(path)
    assert size == (720, 400)
    assert colours > 50  # lines, text and antialiasing: not a blank canvas

    with pytest.raises(ValueError, match="no metrics to plot"):
        plots.plot_training_curves([plots.CurveRun("x", [{"epoch": 1}])], tmp_path / "no.png")


def test_tsne_map_side_by_side_png(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    centres = rng.normal(size=(3, 16)) * 4
    features = centres[labels] + rng.normal(size=(60, 16))
    coords = plots.tsne_2d(features, seed=0)
    assert coords.shape == (60, 2) and np.isfinite(coords).all()
    # Well separated classes stay separated: each point's nearest neighbour shares its class.
    distances = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    assert np.mean(labels[distances.argmin(axis=1)] == labels) > 0.9

    panels = [
        plots.MapPanel("ASCL", coords, labels),
        plots.MapPanel("MoCo v2", coords[::-1].copy(), labels),
    ]
    path = plots.plot_embedding_maps(
        panels, ["cat", "dog", "ship"], tmp_path / "map.png", title="t-SNE", panel_size=3, dpi=50
    )
    size, colours = png_size_and_colours(path)
    assert size == ((3 * 2 + 2) * 50, (3 + 1) * 50)
    assert colours > 20
