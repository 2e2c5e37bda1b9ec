"""Pictures of a run: training curves, a 2-D map of test embeddings, nearest neighbours.

* :func:`plot_training_curves`: small multiples of loss, kNN top-1, confidence, positive
  weight, purity and learning rate against epoch, read from ``model_dir/metrics.jsonl`` (or a
  CSV with the same columns); several runs are overlaid, one colour each.
* :func:`plot_embedding_maps`: t-SNE of L2-normalised test embeddings, coloured by class, one
  panel per model side by side (like the ASCL README's ASCL-vs-MoCo figure), one legend of
  class names.
* :func:`plot_neighbors`: test images and their nearest training images by the backbone's
  features, captioned with class and cosine similarity, framed by whether the class agrees.

t-SNE is openTSNE's FFT-accelerated implementation: on 10,000 CIFAR-10-like points it took
71 s on this project's 2-core CPU, against 282 s for scikit-learn's Barnes-Hut TSNE (see
docs/EVAL.md). scikit-learn is the fallback when openTSNE is not installed.

Figures are drawn with the object-oriented API (``matplotlib.figure.Figure``), never pyplot,
so no GUI backend or global state is involved; the PNG's pixel size is ``figsize × dpi``.
Each ``plot_*`` writes the figure its ``*_figure`` function draws (``training_curves_figure``,
``embedding_maps_figure``, ``neighbors_figure``), whose axes hold the plotted data.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tfascl import runs as run_files  # `runs` names the curves' runs here
from tfascl.runs import METRICS_CSV_FILE, METRICS_FILE

METRICS_FILES = (METRICS_FILE, METRICS_CSV_FILE)

# (record key, panel title, y-axis label, scale): scale 100 shows fractions as percent.
CURVES: tuple[tuple[str, str, str, float], ...] = (
    ("loss", "Training loss", "loss", 1.0),
    ("knn_top1", "kNN top-1 (test)", "accuracy (%)", 100.0),
    ("confidence", "Relabelling confidence", "confidence c", 1.0),
    ("positive_weight", "Target weight of the positive", "weight", 1.0),
    ("purity", "Neighbour purity", "same-class target mass", 1.0),
    ("learning_rate", "Learning rate", "learning rate", 1.0),
)
# Below this many points t-SNE uses Barnes-Hut gradients on one thread, above it FFT.
SMALL_TSNE = 5_000
CURVE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


# --------------------------------------------------------------------------------------
# Training curves


def find_metrics_file(model_dir: str | Path) -> run_files.RunPath | None:
    """``model_dir/metrics.jsonl`` (the training CLI's) or ``metrics.csv``, if present.

    ``model_dir`` may be on any file system ``tf.io.gfile`` knows (``tfascl.runs``).
    """
    for name in METRICS_FILES:
        path = run_files.join(model_dir, name)
        if run_files.is_file(path):
            return path
    return None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file: JSON lines, or CSV with a header row.

    Lines that do not parse (a write cut short by a kill) are skipped; CSV cells become
    floats where they can.

    Args:
        path: ``.jsonl`` (one JSON object a line) or ``.csv``.

    Returns:
        One dict per record, in file order.
    """
    text = run_files.read_text(path)
    if str(path).endswith(".csv"):
        return [
            {key: _number(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(io.StringIO(text, newline=""))
        ]
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def curve_series(records: Sequence[dict[str, Any]]) -> tuple[str, dict[str, np.ndarray]]:
    """The x axis and the per-metric series to plot.

    Epoch records (``"kind": "epoch"``, or any record with an ``epoch`` field) are preferred:
    they hold epoch means and the kNN accuracy. A run stopped inside its first epoch has only
    step records; then the x axis is the step.

    Returns:
        ``(x_label, {"x": [...], metric: [...]})``; metrics absent from a record are NaN.
    """
    epochs = [r for r in records if r.get("kind", "epoch") == "epoch" and "epoch" in r]
    if epochs:
        x_key, chosen = "epoch", epochs
    else:
        x_key, chosen = "step", [r for r in records if "step" in r]
    series = {"x": np.array([float(r[x_key]) for r in chosen])}
    for key, *_ in CURVES:
        values = [r.get(key) for r in chosen]
        series[key] = np.array(
            [float(v) if isinstance(v, (int, float)) else np.nan for v in values]
        )
    return x_key, series


@dataclasses.dataclass
class CurveRun:
    """One run's curves: its legend label and its metrics records."""

    label: str
    records: list[dict[str, Any]]


def plot_training_curves(
    runs: Sequence[CurveRun],
    path: str | Path,
    *,
    title: str | None = None,
    subtitle: str | None = None,
    figsize: tuple[float, float] = (13.0, 7.0),
    dpi: int = 100,
) -> run_files.RunPath:
    """Small multiples of the training metrics of one or more runs → PNG.

    A panel is drawn for each metric of :data:`CURVES` that at least one run logged (MoCo has
    no confidence, for instance); runs that lack it are absent from that panel.

    Args:
        runs: The runs to overlay.
        path: The PNG to write (parent folders are created).
        title: Figure title, e.g. "ASCL vs MoCo v2 on CIFAR-10".
        subtitle: A second, smaller title line (e.g. how long the runs were).
        figsize: Inches; the PNG is ``figsize × dpi`` pixels.
        dpi: Pixels per inch.

    Returns:
        ``path``.

    Raises:
        ValueError: No run has any plottable metric.
    """
    figure = training_curves_figure(runs, title=title, subtitle=subtitle, figsize=figsize, dpi=dpi)
    return _save(figure, path)


def training_curves_figure(
    runs: Sequence[CurveRun],
    *,
    title: str | None = None,
    subtitle: str | None = None,
    figsize: tuple[float, float] = (13.0, 7.0),
    dpi: int = 100,
) -> Figure:
    """The figure :func:`plot_training_curves` writes: one axes per plotted metric, titled
    as in :data:`CURVES`, holding one line per run that logged it (x: epoch or step; y: the
    metric times its scale), labelled with the run's label."""
    parsed = [(run.label, *curve_series(run.records)) for run in runs]
    panels = [
        curve
        for curve in CURVES
        if any(np.isfinite(series[curve[0]]).any() for _, _, series in parsed)
    ]
    if not panels:
        raise ValueError("no metrics to plot: the metrics records hold none of " + _names())
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, (key, panel_title, y_label, scale) in enumerate(panels):
        ax = axes[index // columns][index % columns]
        for run_index, (label, _, series) in enumerate(parsed):
            y = series[key] * scale
            keep = np.isfinite(y)
            if not keep.any():
                continue
            ax.plot(
                series["x"][keep],
                y[keep],
                marker="o" if keep.sum() <= 30 else None,
                markersize=3,
                linewidth=1.5,
                color=CURVE_COLORS[run_index % len(CURVE_COLORS)],
                label=label,
            )
        ax.set_title(panel_title, fontsize=11)
        ax.set_xlabel(parsed[0][1])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps are whole
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
        if key == "learning_rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    handles, labels = _unique_legend(axes)
    if len(handles) > 1 or title is None:
        figure.legend(handles, labels, loc="outside lower center", ncols=len(handles))
    _titles(figure, title, subtitle)
    return figure


def _titles(figure: Figure, title: str | None, subtitle: str | None) -> None:
    if title and subtitle:
        figure.suptitle(f"{title}\n{subtitle}", fontsize=13)
    elif title or subtitle:
        figure.suptitle(title or subtitle, fontsize=14)


def _names() -> str:
    return ", ".join(key for key, *_ in CURVES)


def _unique_legend(axes: np.ndarray) -> tuple[list, list[str]]:
    handles, labels = [], []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    return handles, labels


def _save(figure: Figure, path: str | Path) -> run_files.RunPath:
    path = run_files.run_path(path)
    run_files.makedirs(run_files.parent(path))
    if run_files.is_local(path):
        figure.savefig(path, dpi=figure.dpi)
    else:  # matplotlib writes local files: the PNG goes through tf.io.gfile (gs://, ...)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=figure.dpi)
        run_files.write_bytes(path, buffer.getvalue())
    return path


# --------------------------------------------------------------------------------------
# 2-D embedding maps


def tsne_2d(
    features: np.ndarray,
    *,
    perplexity: float = 30.0,
    seed: int = 0,
    n_jobs: int | None = None,
    pca_dims: int = 50,
) -> np.ndarray:
    """A 2-D t-SNE of L2-normalised features.

    Features are L2-normalised (so Euclidean distance orders pairs as cosine similarity, the
    kNN metric) and reduced to ``pca_dims`` principal components first, the usual speed-up;
    the perplexity is lowered for tiny inputs, which t-SNE requires.

    Args:
        features: ``[N, F]``.
        perplexity: t-SNE perplexity (clipped to ``(N - 1) / 3``).
        seed: Random state (PCA initialisation makes the layout stable across runs anyway).
        n_jobs: Threads; default all cores, at most 8.
        pca_dims: Components kept before t-SNE (no reduction when ``F`` is not larger).

    Returns:
        ``[N, 2]`` float32 coordinates.
    """
    x = np.asarray(features, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if x.shape[1] > pca_dims and x.shape[0] > pca_dims:
        from sklearn.decomposition import PCA

        x = PCA(pca_dims, random_state=seed).fit_transform(x)
    perplexity = float(max(1.0, min(perplexity, (len(x) - 1) / 3.0)))
    # FFT-interpolated gradients pay a fixed grid cost that dominates below a few thousand
    # points (30 s for 60 points, against 0.3 s with Barnes-Hut), and extra threads only
    # add contention at that size.
    small = len(x) < SMALL_TSNE
    n_jobs = n_jobs or (1 if small else min(8, os.cpu_count() or 1))
    try:
        from openTSNE import TSNE
    except ImportError:
        from sklearn.manifold import TSNE as SkTSNE

        coords = SkTSNE(
            2, perplexity=perplexity, init="pca", random_state=seed, n_jobs=n_jobs
        ).fit_transform(x)
    else:
        coords = np.asarray(
            TSNE(
                n_components=2,
                perplexity=perplexity,
                initialization="pca",
                random_state=seed,
                n_jobs=n_jobs,
                negative_gradient_method="bh" if small else "fft",
                verbose=False,
            ).fit(x)
        )
    return coords.astype(np.float32)


@dataclasses.dataclass
class MapPanel:
    """One model's map: a panel title, ``[N, 2]`` coordinates and ``[N]`` class labels."""

    title: str
    coords: np.ndarray
    labels: np.ndarray


def class_colors(num_classes: int) -> list:
    """Distinct colours: tab10 up to 10 classes, tab20 up to 20, else a hue wheel."""
    from matplotlib import colormaps

    if num_classes <= 10:
        return [colormaps["tab10"](i) for i in range(num_classes)]
    if num_classes <= 20:
        return [colormaps["tab20"](i) for i in range(num_classes)]
    return [colormaps["hsv"](i / num_classes) for i in range(num_classes)]


def plot_embedding_maps(
    panels: Sequence[MapPanel],
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
    subtitle: str | None = None,
    panel_size: float = 6.0,
    dpi: int = 100,
    method: str = "t-SNE",
) -> run_files.RunPath:
    """Side-by-side scatter plots of 2-D embeddings coloured by class → PNG.

    The PNG is ``(panel_size · len(panels) + 2) × (panel_size + 1)`` inches at ``dpi`` (the
    extra width holds the legend, the extra height the titles).

    Args:
        panels: One :class:`MapPanel` per model.
        class_names: Legend names in label order (the legend lists at most 20 classes).
        path: The PNG to write.
        title: Figure title.
        subtitle: A second, smaller title line.
        panel_size: Inches per panel side.
        dpi: Pixels per inch.
        method: Axis-label prefix ("t-SNE").

    Returns:
        ``path``.
    """
    figure = embedding_maps_figure(
        panels, class_names, title=title, subtitle=subtitle, panel_size=panel_size, dpi=dpi,
        method=method,
    )  # fmt: skip
    return _save(figure, path)


def embedding_maps_figure(
    panels: Sequence[MapPanel],
    class_names: Sequence[str],
    *,
    title: str | None = None,
    subtitle: str | None = None,
    panel_size: float = 6.0,
    dpi: int = 100,
    method: str = "t-SNE",
) -> Figure:
    """The figure :func:`plot_embedding_maps` writes: one axes per panel, titled with it,
    holding one scatter per class present (its points' coordinates, named by the class)."""
    num_classes = max(len(class_names), *(int(p.labels.max(initial=-1)) + 1 for p in panels))
    colors = class_colors(num_classes)
    figsize = (panel_size * len(panels) + 2.0, panel_size + 1.0)
    figure = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    # Few points get bigger markers; 10,000 points at size 3 still show the clusters.
    size = float(np.clip(4000.0 / max(len(panels[0].coords), 1), 3.0, 30.0))
    for ax, panel in zip(axes, panels):
        for label in range(num_classes):
            chosen = panel.labels == label
            if not chosen.any():
                continue
            name = class_names[label] if label < len(class_names) else str(label)
            ax.scatter(
                panel.coords[chosen, 0],
                panel.coords[chosen, 1],
                s=size,
                color=colors[label],
                alpha=0.7,
                linewidths=0,
                label=name,
                rasterized=True,
            )
        ax.set_title(panel.title, fontsize=12)
        ax.set_xlabel(f"{method} 1")
        ax.set_ylabel(f"{method} 2")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    if num_classes <= 20:
        handles, labels = _unique_legend(np.asarray(axes))
        order = np.argsort([_class_index(label, class_names) for label in labels], kind="stable")
        figure.legend(
            [handles[i] for i in order],
            [labels[i] for i in order],
            loc="outside right center",
            markerscale=max(1.0, 40.0 / size) ** 0.5,
            title="class",
            frameon=False,
        )
    _titles(figure, title, subtitle)
    return figure


def _class_index(label: str, class_names: Sequence[str]) -> int:
    if label in class_names:
        return list(class_names).index(label)
    return int(label) if label.isdigit() else len(class_names)


# --------------------------------------------------------------------------------------
# Nearest training neighbours of test images

SAME_CLASS_COLOR = "tab:blue"
OTHER_CLASS_COLOR = "tab:orange"


def plot_neighbors(
    query_images: np.ndarray,
    query_labels: np.ndarray,
    neighbor_images: np.ndarray,
    neighbor_labels: np.ndarray,
    similarities: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
    subtitle: str | None = None,
    cell_size: float = 1.5,
    dpi: int = 100,
) -> run_files.RunPath:
    """A grid of test images (first column) and their nearest training images → PNG.

    Each neighbour is captioned with its class and cosine similarity to the query and
    framed in ``SAME_CLASS_COLOR`` when it shares the query's class, else in
    ``OTHER_CLASS_COLOR``. The PNG is ``cell_size · (k + 1)`` inches wide and about
    ``cell_size · N`` high (plus titles) at ``dpi``.

    Args:
        query_images: [N, H, W, 3] uint8 test images.
        query_labels: [N] their classes.
        neighbor_images: [N, k, H', W', 3] uint8 training images, nearest first.
        neighbor_labels: [N, k] their classes.
        similarities: [N, k] cosine similarities.
        class_names: Names in label order (a label past the list is shown as a number).
        path: The PNG to write.
        title: Figure title.
        subtitle: A second, smaller title line.
        cell_size: Inches per image.
        dpi: Pixels per inch.

    Returns:
        ``path``.
    """
    figure = neighbors_figure(
        query_images, query_labels, neighbor_images, neighbor_labels, similarities,
        class_names, title=title, subtitle=subtitle, cell_size=cell_size, dpi=dpi,
    )  # fmt: skip
    return _save(figure, path)


def neighbors_figure(
    query_images: np.ndarray,
    query_labels: np.ndarray,
    neighbor_images: np.ndarray,
    neighbor_labels: np.ndarray,
    similarities: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str | None = None,
    subtitle: str | None = None,
    cell_size: float = 1.5,
    dpi: int = 100,
) -> Figure:
    """The figure :func:`plot_neighbors` writes: ``N × (k + 1)`` axes, row by row, each
    showing one image, captioned and framed as described there."""
    from matplotlib.patches import Patch

    rows, k = neighbor_labels.shape

    def name(label: int) -> str:
        return class_names[label] if 0 <= label < len(class_names) else str(label)

    figure = Figure(
        figsize=(cell_size * (k + 1), cell_size * rows + 1.0), dpi=dpi, layout="constrained"
    )
    axes = figure.subplots(rows, k + 1, squeeze=False)
    for row in range(rows):
        cells = [(query_images[row], f"query: {name(int(query_labels[row]))}", "black")]
        for column in range(k):
            label = int(neighbor_labels[row, column])
            same = label == int(query_labels[row])
            cells.append(
                (
                    neighbor_images[row, column],
                    f"{name(label)} {similarities[row, column]:.2f}",
                    SAME_CLASS_COLOR if same else OTHER_CLASS_COLOR,
                )
            )
        for ax, (image, caption, color) in zip(axes[row], cells):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(caption, fontsize=8, pad=2)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(color)
                # The query's frame is thin: it is not a neighbour.
                spine.set_linewidth(1.0 if color == "black" else 4.0)
    figure.legend(
        handles=[
            Patch(facecolor="white", edgecolor=SAME_CLASS_COLOR, linewidth=3, label="same class"),
            Patch(facecolor="white", edgecolor=OTHER_CLASS_COLOR, linewidth=3, label="other class"),
        ],
        loc="outside lower center",
        ncols=2,
        frameon=False,
        fontsize=9,
    )
    if title and subtitle:
        # Smaller than _titles' 13 pt: the grid is narrow and the subtitle has two lines.
        figure.suptitle(f"{title}\n{subtitle}", fontsize=10)
    else:
        _titles(figure, title, subtitle)
    return figure
