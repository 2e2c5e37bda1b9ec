"""Pictures: training curves, t-SNE maps and neighbour grids, their plotted data read back from
the figures (against the records and arrays drawn), and PNGs of the set size."""

import json

import numpy as np
import pytest
from matplotlib.colors import to_rgba
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


def test_training_curves_draw_each_runs_metrics_in_its_panel():
    ascl, moco = epoch_records(6), epoch_records(4, with_ascl=False)
    figure = plots.training_curves_figure(
        [plots.CurveRun("ASCL", ascl), plots.CurveRun("MoCo v2", moco)], title="t"
    )
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}
    assert list(panels) == [title for _, title, *_ in plots.CURVES]  # every metric, in order
    for key, title, y_label, scale in plots.CURVES:
        ax = panels[title]
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", y_label)
        lines = {line.get_label(): line for line in ax.get_lines()}
        for label, records in (("ASCL", ascl), ("MoCo v2", moco)):
            epochs = [r for r in records if r["kind"] == "epoch" and key in r]
            if not epochs:  # MoCo logs no confidence, weight or purity: no line
                assert label not in lines
                continue
            line = lines[label]
            np.testing.assert_array_equal(line.get_xdata(), [r["epoch"] for r in epochs])
            np.testing.assert_allclose(line.get_ydata(), [scale * r[key] for r in epochs])
        # One colour per run, the same run's in every panel.
        assert lines["ASCL"].get_color() == plots.CURVE_COLORS[0]
    assert {line.get_color() for ax in panels.values() for line in ax.get_lines()} == set(
        plots.CURVE_COLORS[:2]
    )


def test_embedding_maps_draw_each_class_at_its_coordinates():
    rng = np.random.default_rng(1)
    labels = np.array([0, 2, 1, 2, 0, 2])
    first, second = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    panels = [plots.MapPanel("ASCL", first, labels), plots.MapPanel("MoCo v2", second, labels)]
    figure = plots.embedding_maps_figure(panels, ["cat", "dog", "ship"])
    assert [ax.get_title() for ax in figure.axes] == ["ASCL", "MoCo v2"]
    for ax, panel in zip(figure.axes, panels):
        scatters = {c.get_label(): c.get_offsets() for c in ax.collections}
        assert sorted(scatters) == ["cat", "dog", "ship"]
        for label, name in enumerate(["cat", "dog", "ship"]):
            np.testing.assert_allclose(scatters[name], panel.coords[labels == label])


def test_neighbors_grid_shows_each_image_captioned_and_framed_by_class():
    rng = np.random.default_rng(2)
    queries = rng.integers(0, 255, (2, 4, 4, 3), dtype=np.uint8)
    neighbors = rng.integers(0, 255, (2, 3, 4, 4, 3), dtype=np.uint8)
    query_labels, neighbor_labels = np.array([0, 1]), np.array([[0, 1, 0], [1, 1, 0]])
    similarities = np.array([[0.9, 0.8, 0.7], [0.95, 0.5, 0.25]])
    figure = plots.neighbors_figure(
        queries, query_labels, neighbors, neighbor_labels, similarities, ["cat", "dog"]
    )
    axes = np.array(figure.axes).reshape(2, 4)
    for row in range(2):
        np.testing.assert_array_equal(axes[row, 0].images[0].get_array(), queries[row])
        assert axes[row, 0].get_title() == f"query: {['cat', 'dog'][query_labels[row]]}"
        for column in range(3):
            ax = axes[row, column + 1]
            np.testing.assert_array_equal(ax.images[0].get_array(), neighbors[row, column])
            label = neighbor_labels[row, column]
            name = ["cat", "dog"][label]
            assert ax.get_title() == f"{name} {similarities[row, column]:.2f}"
            same = label == query_labels[row]
            colour = plots.SAME_CLASS_COLOR if same else plots.OTHER_CLASS_COLOR
            assert ax.spines["top"].get_edgecolor() == to_rgba(colour)


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
