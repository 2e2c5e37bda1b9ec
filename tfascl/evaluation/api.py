"""One call from a model and a dataset to a recorded result: :func:`evaluate`.

``evaluate(EvalConfig(...))`` runs three steps: ``prepare`` (checks, then the encoder and
the decoded splits), ``run_protocol`` (kNN, linear or neighbours) and ``record`` (the
results entry, merged into results.json).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfascl import data, runs
from tfascl._version import __version__
from tfascl.choices import INPUT_MODES
from tfascl.evaluation import results
from tfascl.evaluation.datasets import (
    DatasetProtocol,
    check_labelled_source,
    dataset_protocol,
    embed_images,
    eval_image_size,
    load_labelled,
    num_classes_of,
    open_labelled,
    resize_note,
    timed,
)
from tfascl.evaluation.encoders import Encoder, EvalInputError, load_encoder
from tfascl.evaluation.knn import knn_protocol
from tfascl.evaluation.linear import LinearConfig, linear_protocol
from tfascl.evaluation.neighbors import NEIGHBORS_FILE, STREAMED_NEIGHBORS_ERROR, neighbors_protocol
from tfascl.models.registry import method_label
from tfascl.runs import PLOTS_SUBDIR

PROTOCOLS = ("knn", "linear", "neighbors")


def resolve_dataset(encoder: Encoder, dataset: str | None) -> str:
    """The evaluation dataset: the one given, else the one the model was pretrained on.

    Raises:
        EvalInputError: Neither is known.
    """
    if dataset:
        return dataset
    if encoder.dataset:
        return encoder.dataset
    raise EvalInputError(f"{encoder.source} does not record its dataset: pass --dataset")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What one evaluation does; each field is the ``tfascl-eval`` flag of the same name.

    Attributes:
        protocol: ``"knn"``, ``"linear"`` (``linear.fast`` selects "linear_fast") or
            ``"neighbors"`` (a picture of test images' nearest training images).
        model_dir: A training run's directory; or
        saved_model: an exported SavedModel directory.
        checkpoint: ``"latest"``, ``"best"`` or a checkpoint name (``model_dir`` only).
        dataset: ``"digits"``, a TFDS name or a folder; default the model's pretraining set.
        data_dir: TFDS data directory.
        train_split: The labelled split used as kNN bank / linear training set.
        test_split: The split reported on.
        max_train_examples: Stratified subset of the training split (quick looks).
        max_test_examples: Stratified subset of the test split.
        input: ``"memory"`` (decode both splits into RAM), ``"stream"`` (read and decode the
            files as they are needed: kNN and both linear probes on data sets of any size)
            or ``"auto"``: memory when twice the decoded splits fit ``memory_budget_gb``
            (``tfascl.data.choose_input``, the rule of ``tfascl-train``).
        memory_budget_gb: RAM the decoded images may take with ``input="auto"``; None:
            half of this machine's.
        eval_crop: The eval transform's central crop, as a fraction of the shorter side
            (1: the whole central square; ImageNet's Resize(256) + CenterCrop(224) is 0.875).
            ``None`` (the default): the run's own ``--eval_crop`` when it is evaluated on
            its pretraining data set, else the data set's protocol's (:func:`eval_crop`).
        image_size: Only for SavedModels that do not record their input size.
        batch_size: Images per forward pass when computing features.
        knn_k: kNN neighbours.
        knn_temperature: kNN vote temperature.
        knn_chunk_size: Test rows per similarity block.
        linear: Linear probe settings (default: the ASCL protocol); an unset learning
            rate and Nesterov flag take the dataset's reference values
            (``tfascl.evaluation.datasets.dataset_protocol``: ImageNet lr 30 without Nesterov).
        neighbor_queries: neighbors: test images in the picture, drawn with ``seed``.
        neighbor_k: neighbors: nearest training images per test image.
        plots_dir: neighbors: the picture's folder; default ``plots/`` beside the model.
        seed: Seed of the subsets (and of the pictured test images).
        write: Merge the entry into ``results.json`` beside the model.
    """

    protocol: str = "knn"
    model_dir: str | Path | None = None
    saved_model: str | Path | None = None
    checkpoint: str = "latest"
    dataset: str | None = None
    data_dir: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    max_train_examples: int | None = None
    max_test_examples: int | None = None
    input: str = "auto"
    memory_budget_gb: float | None = None
    eval_crop: float | None = None
    image_size: int | None = None
    batch_size: int = 256
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_chunk_size: int = 1024
    linear: LinearConfig = dataclasses.field(default_factory=LinearConfig)
    neighbor_queries: int = 8
    neighbor_k: int = 5
    plots_dir: str | Path | None = None
    seed: int = 0
    write: bool = True

    def validate(self) -> None:
        """Checks every value that needs no file; one line naming the flag.

        Raises:
            EvalInputError: ``--name=value: what is allowed``.
        """
        if self.protocol not in PROTOCOLS:
            raise EvalInputError(f"--protocol={self.protocol}: must be one of {PROTOCOLS}")
        if (self.model_dir is None) == (self.saved_model is None):
            raise EvalInputError("give exactly one of --model_dir and --saved_model")
        at_least_one = ["batch_size", "knn_k", "knn_chunk_size", "neighbor_queries", "neighbor_k"]
        at_least_one += ["max_train_examples", "max_test_examples", "image_size"]
        for name in at_least_one:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise EvalInputError(f"--{name}={value}: must be >= 1")
        if not self.knn_temperature > 0:
            raise EvalInputError(f"--knn_temperature={self.knn_temperature}: must be > 0")
        if self.input not in INPUT_MODES:
            raise EvalInputError(f"--input={self.input}: must be one of {INPUT_MODES}")
        if self.memory_budget_gb is not None and not self.memory_budget_gb > 0:
            raise EvalInputError(f"--memory_budget_gb={self.memory_budget_gb}: must be > 0")
        if self.eval_crop is not None and not 0 < self.eval_crop <= 1:
            raise EvalInputError(f"--eval_crop={self.eval_crop}: must be in (0, 1]")
        if self.input == "stream":
            check_streamable(self.protocol, self.linear.fast)


def same_dataset(a: str | None, b: str | None) -> bool:
    """Whether two ``--dataset`` values name the same data (a TFDS name, or one folder)."""
    if not a or not b:
        return False
    if a == b:
        return True
    paths = [os.path.realpath(os.path.expanduser(name)) for name in (a, b)]
    return os.path.isdir(paths[0]) and paths[0] == paths[1]


def eval_crop(
    given: float | None,
    encoder: Encoder,
    source: str,
    reference: DatasetProtocol,
) -> tuple[float, str, str | None]:
    """The evaluation crop, where it comes from, and a note when run and protocol disagree.

    ``--eval_crop`` when given; else the run's recorded crop (its ``flags.json``, an
    export's metadata) when the model is evaluated on its pretraining data set, which its
    kNN monitor used too; else the data set's protocol's (ImageNet: 0.875, MoCo
    ``main_lincls.py``'s Resize(256) + CenterCrop(224); the others: 1).

    Returns:
        ``(crop, source, note)``: ``source`` is ``"--eval_crop"``, ``"run"`` or
        ``"protocol <name>"``; ``note`` says when the run's crop is not its protocol's.
    """
    if given is not None:
        return float(given), "--eval_crop", None
    protocol_source = f"protocol {reference.name}"
    if encoder.eval_crop is not None and same_dataset(encoder.dataset, source):
        crop = encoder.eval_crop
        note = None
        if abs(crop - reference.eval_crop) > 1e-9:
            note = (
                f"eval crop {crop:g} from the run (its --eval_crop), not the {reference.name} "
                f"protocol's {reference.eval_crop:g}; pass --eval_crop to choose"
            )
        return crop, "run", note
    return reference.eval_crop, protocol_source, None


def check_streamable(protocol: str, fast: bool) -> None:
    """Refuses the protocols that need the images decoded in memory, when streamed.

    The linear probe streams, augmented or not
    (``tfascl.evaluation.linear_batches.streamed_linear_batches``).

    Raises:
        EvalInputError: Neighbours, streamed.
    """
    if protocol == "neighbors":
        raise EvalInputError(STREAMED_NEIGHBORS_ERROR)


def evaluate(
    protocol: str | EvalConfig = "knn",
    *,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Evaluates a training run's checkpoint or an exported SavedModel with one protocol.

    Everything that can be wrong with the input (a bad value, no checkpoint, no
    signature, an unlabelled folder) is checked before the datasets are decoded or
    features computed.

    Args:
        protocol: An ``EvalConfig``, or the protocol's name with the other ``EvalConfig``
            fields as keywords: ``evaluate("knn", model_dir="runs/ascl", knn_k=20)``.
        log: Progress messages (e.g. ``absl.logging.info``).
        **settings: ``EvalConfig`` fields, when ``protocol`` is a name.

    Returns:
        The results entry: protocol, dataset, model, metrics (fractions), settings, sizes,
        notes, wall time, date, tfascl version, and ``results_file`` when written.

    Raises:
        EvalInputError: Bad input, with a one-line message.
    """
    if isinstance(protocol, EvalConfig):
        if settings:
            raise TypeError("evaluate(EvalConfig) takes no other settings")
        config = protocol
    else:
        config = EvalConfig(protocol=protocol, **settings)
    say = log or (lambda message: None)
    prepared = prepare(config, say)
    outcome = run_protocol(config, prepared, say)
    return record(config, prepared, outcome)


@dataclasses.dataclass
class Prepared:
    """What ``prepare`` loads: the encoder, the two splits and how they are fed to it."""

    encoder: Encoder
    source: str
    train: Any
    test: Any
    linear: LinearConfig
    reference: Any
    eval_size: int
    notes: list[str]
    protocol: str
    input_mode: str = "memory"
    input_why: str = ""
    eval_crop: float = 1.0
    eval_crop_source: str = "protocol"

    @property
    def name(self) -> str:
        """The recorded protocol name (``linear_fast`` for a fast linear probe)."""
        return self.linear.protocol if self.protocol == "linear" else self.protocol


def prepare(config: EvalConfig, say: Callable[[str], None]) -> Prepared:
    """Checks the input, then loads the encoder and both splits (decoded images)."""
    config.validate()
    encoder = load_encoder(
        config.model_dir, config.saved_model, checkpoint=config.checkpoint,
        image_size=config.image_size,
    )  # fmt: skip
    source = resolve_dataset(encoder, config.dataset)
    for split in (config.train_split, config.test_split):
        check_labelled_source(source, split)
    if config.write:
        results.read_results(encoder.results_dir)  # a broken results.json fails now, not later

    subsets = ((config.train_split, config.max_train_examples),
               (config.test_split, config.max_test_examples))  # fmt: skip
    try:
        mode, why = data.choose_input(
            source, subsets, mode=config.input, data_dir=config.data_dir,
            memory_budget_gb=config.memory_budget_gb, seed=config.seed, load_size_flag=False,
        )  # fmt: skip
    except ValueError as error:  # DatasetNotFoundError is a ValueError too
        raise EvalInputError(str(error).splitlines()[0]) from None
    if mode == "stream" and config.input == "auto":
        try:
            check_streamable(config.protocol, config.linear.fast)
        except EvalInputError:
            raise EvalInputError(
                f"--input=auto: {why}; --protocol={config.protocol} needs the images in "
                "memory: lower --max_train_examples, or force --input=memory"
            ) from None
    say(f"input: {mode} ({why})")
    load = open_labelled if mode == "stream" else load_labelled
    say(f"loading {source} {config.train_split}/{config.test_split}")
    train, test = (
        load(source, split, data_dir=config.data_dir, max_examples=limit, seed=config.seed)
        for split, limit in subsets
    )
    reference = dataset_protocol(train.name or source)
    linear = config.linear.for_dataset(reference)
    eval_size, size_note = eval_image_size(reference, encoder, test)
    crop, crop_source, crop_note = eval_crop(config.eval_crop, encoder, source, reference)
    notes = list(encoder.notes) + [note for note in (size_note, crop_note) if note]
    # The eval transform takes the test images, and kNN's bank or linear_fast's training
    # images, to eval_size; the augmented linear probe random-resized-crops its own.
    transformed = [train, test] if config.protocol != "linear" or linear.fast else [test]
    for split in transformed:
        note = resize_note(split, eval_size, crop)
        if note and note not in notes:
            notes.append(note)
    for note in notes:
        say(f"note: {note}")
    say(f"eval crop: {crop:g} ({crop_source})")
    return Prepared(
        encoder, source, train, test, linear, reference, eval_size, notes, config.protocol,
        mode, why, crop, crop_source,
    )  # fmt: skip


def run_protocol(config: EvalConfig, p: Prepared, say: Callable[[str], None]) -> dict[str, Any]:
    """Runs the protocol on the prepared splits; its timed outcome (metrics, settings)."""
    encoder, train, test = p.encoder, p.train, p.test
    say(f"{p.name}: {len(train)} train / {len(test)} test images, model {encoder.checkpoint}")
    common = {"eval_size": p.eval_size, "crop_fraction": p.eval_crop}
    if config.protocol == "knn":
        outcome = timed(
            knn_protocol, encoder, train, test, k=config.knn_k,
            temperature=config.knn_temperature, batch_size=config.batch_size,
            chunk_size=config.knn_chunk_size, **common,
        )  # fmt: skip
    elif config.protocol == "neighbors":
        folder = runs.run_path(config.plots_dir or runs.join(encoder.results_dir, PLOTS_SUBDIR))
        outcome = timed(
            neighbors_protocol, encoder, train, test,
            picture=runs.join(folder, NEIGHBORS_FILE),
            num_queries=config.neighbor_queries,
            k=config.neighbor_k, seed=config.seed, batch_size=config.batch_size,
            chunk_size=config.knn_chunk_size, **common,
            title=f"Nearest neighbours: {encoder.method} ({Path(encoder.checkpoint).name})",
        )  # fmt: skip
    else:
        outcome = timed(
            linear_protocol, encoder, train, test, p.linear,
            embed_batch_size=config.batch_size, log=say, **common,
        )  # fmt: skip
        outcome.pop("classifier")
    outcome["settings"]["reference_protocol"] = p.reference.source
    outcome["settings"]["input"] = p.input_mode
    return outcome


def record(config: EvalConfig, p: Prepared, outcome: dict[str, Any]) -> dict[str, Any]:
    """The results entry of an outcome, merged into results.json when ``config.write``."""
    skipped = outcome.get("skipped", {})
    entry: dict[str, Any] = {
        "protocol": p.name,
        "dataset": p.train.name,
        "dataset_source": p.source,
        "train_split": config.train_split,
        "test_split": config.test_split,
        "num_train": len(p.train) - len(skipped.get("train", ())),
        "num_test": len(p.test) - len(skipped.get("test", ())),
        "num_classes": num_classes_of(p.train, p.test),
        "subset": {
            "max_train_examples": config.max_train_examples,
            "max_test_examples": config.max_test_examples,
            "seed": config.seed,
        },
        "model": p.encoder.describe(),
        "normalisation": {"mean": list(p.encoder.mean), "std": list(p.encoder.std)},
        **outcome,
        "input": {"mode": p.input_mode, "why": p.input_why},
        "eval_crop": {"value": p.eval_crop, "source": p.eval_crop_source},
        "notes": p.notes,
        "date": results.now_iso(),
        "tfascl_version": __version__,
    }
    if config.write:
        key = results.result_key(p.name, p.train.name, p.encoder.dataset)
        entry["results_key"] = key
        entry["results_file"] = str(results.update_results(p.encoder.results_dir, key, entry))
    return entry


CURVES_FILE = "training_curves.png"
MAP_FILE = "tsne_map.png"


def open_model(path: str | Path, checkpoint: str = "latest") -> Encoder:
    """A model_dir or a SavedModel directory, told apart by ``saved_model.pb``."""
    from tfascl.evaluation.encoders import from_model_dir, from_saved_model, is_saved_model

    return from_saved_model(path) if is_saved_model(path) else from_model_dir(path, checkpoint)


def run_label(encoder: Encoder, others: list[Encoder]) -> str:
    """A legend label: the method's name, plus the folder name when two runs share a method."""
    label = method_label(encoder.method)
    if sum(other.method == encoder.method for other in others) > 1:
        label += f" ({Path(encoder.source).name})"
    return label


def _recorded_knn(encoder: Encoder) -> float | None:
    try:
        entry = results.read_results(encoder.results_dir).get("knn", {})
    except ValueError:
        return None
    return entry.get("metrics", {}).get("top1")


def make_plots(
    sources: list[str | Path],
    out_dir: str | Path,
    *,
    checkpoint: str = "latest",
    dataset: str | None = None,
    data_dir: str | None = None,
    test_split: str = "test",
    map_points: int = 10_000,
    batch_size: int = 256,
    seed: int = 0,
    curves: bool = True,
    embedding_map: bool = True,
    note: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Training curves and a side-by-side t-SNE map of one or more models → PNGs in ``out_dir``.

    Args:
        sources: model_dirs or SavedModel directories (a SavedModel has no curves).
        out_dir: Folder of the PNGs (``training_curves.png``, ``tsne_map.png``).
        checkpoint: Checkpoint of the model_dirs.
        dataset: Test data for the map; default the first model's pretraining dataset.
        data_dir: TFDS data directory.
        test_split: Split embedded for the map.
        map_points: Stratified subset size of the test split (10,000 = all of CIFAR-10's).
        batch_size: Images per forward pass.
        seed: Seed of the subset and of t-SNE.
        curves: Draw the training curves.
        embedding_map: Draw the t-SNE map.
        note: A second title line for both pictures (e.g. how long the runs were).
        log: Progress messages.

    Returns:
        ``{"curves": path, "map": path}`` for the pictures drawn.

    Raises:
        EvalInputError: Bad model or data (before any image is decoded).
    """
    say = log or (lambda message: None)
    encoders = [open_model(source, checkpoint) for source in sources]
    labels = [run_label(encoder, encoders) for encoder in encoders]
    source = resolve_dataset(encoders[0], dataset) if embedding_map else None
    if source is not None:
        check_labelled_source(source, test_split)
    out_dir = runs.run_path(out_dir)
    written: dict[str, str] = {}
    names = sorted({Path(str(e.dataset)).name for e in encoders if e.dataset})
    on = f" on {', '.join(names)}" if names else ""

    if curves:
        path = _draw_curves(encoders, labels, runs.join(out_dir, CURVES_FILE), on, note, say)
        if path is not None:
            written["curves"] = str(path)
    if embedding_map:
        test = load_labelled(
            source, test_split, data_dir=data_dir, max_examples=map_points, seed=seed
        )
        map_file = runs.join(out_dir, MAP_FILE)
        path = _draw_map(encoders, labels, test, test_split, map_file, note, say,
                         batch_size=batch_size, seed=seed)  # fmt: skip
        written["map"] = str(path)
    return written


def _draw_curves(
    encoders: list[Encoder],
    labels: list[str],
    path: Path,
    on: str,
    note: str | None,
    say: Callable[[str], None],
) -> Path | None:
    """The training curves of the runs that logged metrics; None when none did."""
    from tfascl import plots

    curve_runs = []
    for encoder, label in zip(encoders, labels):
        metrics = plots.find_metrics_file(encoder.source) if encoder.kind == "checkpoint" else None
        if metrics is None:
            say(f"no metrics file in {encoder.source}: no curves for {label}")
            continue
        curve_runs.append(plots.CurveRun(label, plots.read_metrics(metrics)))
    if not curve_runs:
        return None
    title = " vs ".join(run.label for run in curve_runs) + on
    path = plots.plot_training_curves(curve_runs, path, title=title, subtitle=note)
    say(f"wrote {path}")
    return path


def _draw_map(
    encoders: list[Encoder],
    labels: list[str],
    test: Any,
    test_split: str,
    path: Path,
    note: str | None,
    say: Callable[[str], None],
    *,
    batch_size: int,
    seed: int,
) -> Path:
    """Side-by-side t-SNE maps of each encoder's features of the ``test`` images."""
    from tfascl import plots

    panels = []
    for encoder, label in zip(encoders, labels):
        say(f"t-SNE of {len(test)} {test.name} {test_split} embeddings of {label}")
        features = embed_images(encoder, test.images, batch_size)
        knn_top1 = _recorded_knn(encoder)
        title = label if knn_top1 is None else f"{label} (kNN top-1 {100 * knn_top1:.1f}%)"
        panels.append(plots.MapPanel(title, plots.tsne_2d(features, seed=seed), test.labels))
    title = f"t-SNE of {len(test):,} {test.name} {test_split} images' backbone features"
    path = plots.plot_embedding_maps(panels, test.class_names, path, title=title, subtitle=note)
    say(f"wrote {path}")
    return path
