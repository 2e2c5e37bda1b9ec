"""``tfascl-eval``: kNN and linear evaluation of a pretrained encoder, and its pictures.

Examples::

    tfascl-eval --protocol=knn --model_dir=runs/ascl --checkpoint=best
    tfascl-eval --protocol=linear --model_dir=runs/ascl              # the ASCL protocol
    tfascl-eval --protocol=linear --linear_fast --model_dir=runs/ascl  # cached features
    tfascl-eval --protocol=knn --saved_model=runs/ascl/export/1
    tfascl-eval --protocol=neighbors --model_dir=runs/ascl   # runs/ascl/plots/neighbors.png
    tfascl-eval --protocol=plots --model_dir=runs/ascl --compare_model_dir=runs/moco \\
        --plots_dir=docs/images

Results go to stdout (a small table) and into ``results.json`` beside the model (see
``tfascl.evaluation.results``). Bad input ends with one line on stderr and exit status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

PROGRAM = "tfascl-eval"


def _define_flags(flag_values=None) -> None:  # noqa: ANN001
    """Defines the app's flags in ``flag_values`` (default: absl's global ``FLAGS``).

    Called when the app starts, not at import, so importing this module next to another
    tfascl app (tfascl.train defines --model_dir at import) cannot clash; tests pass their
    own ``flags.FlagValues()``.
    """
    from absl import flags as absl_flags

    flag_values = absl_flags.FLAGS if flag_values is None else flag_values
    flags = _Definer(absl_flags, flag_values)

    flags.DEFINE_enum("protocol", "knn", ["knn", "linear", "neighbors", "plots"], "What to run.")
    flags.DEFINE_string("model_dir", None, "A training run's directory (run.json, checkpoints/).")
    flags.DEFINE_string("saved_model", None, "Or: an exported SavedModel (export_dir/<version>).")
    flags.DEFINE_string("checkpoint", "latest", "latest, best, or a checkpoint name (model_dir).")
    flags.DEFINE_string(
        "compare_model_dir",
        None,
        "plots: a second model_dir or SavedModel, drawn beside the first.",
    )
    flags.DEFINE_string(
        "dataset", None, "digits, a TFDS name or an image folder; default the model's own."
    )
    flags.DEFINE_string("data_dir", None, "TFDS data directory.")
    flags.DEFINE_string("train_split", "train", "Labelled split: kNN bank / linear training set.")
    flags.DEFINE_string("test_split", "test", "Split the accuracy is reported on.")
    flags.DEFINE_integer("max_train_examples", None, "Stratified subset of the train split.")
    flags.DEFINE_integer("max_test_examples", None, "Stratified subset of the test split.")
    flags.DEFINE_integer("seed", 0, "Seed of subsets, linear init/shuffling/augmentation, t-SNE.")
    flags.DEFINE_integer(
        "image_size", None, "Input size, only for SavedModels that do not record it."
    )
    flags.DEFINE_integer("batch_size", 256, "Images per forward pass when computing features.")
    flags.DEFINE_integer("knn_k", 200, "kNN: neighbours.")
    flags.DEFINE_float("knn_temperature", 0.1, "kNN: vote weights exp(sim / temperature).")
    flags.DEFINE_integer("knn_chunk_size", 1024, "kNN: test rows per similarity block.")
    flags.DEFINE_integer("linear_epochs", 100, "linear: epochs.")
    flags.DEFINE_integer("linear_batch_size", 256, "linear: batch size.")
    flags.DEFINE_float("linear_lr", None, "linear: base lr; default 10 (step) or 1 (cosine).")
    flags.DEFINE_enum("linear_schedule", "step", ["step", "cosine"], "linear: lr schedule.")
    flags.DEFINE_list("linear_milestones", ["60", "80"], "linear: epochs of the x0.1 steps.")
    flags.DEFINE_integer("linear_eval_every", 1, "linear: test every N epochs (and the last).")
    flags.DEFINE_bool(
        "linear_fast",
        False,
        "linear: train on cached features without augmentation (recorded as linear_fast).",
    )
    flags.DEFINE_bool("linear_jit", True, "linear: XLA-compile the augmentation.")
    flags.DEFINE_bool("write_results", True, "Merge the result into results.json.")
    flags.DEFINE_string(
        "plots_dir", None, "plots, neighbors: output folder; default <model_dir>/plots."
    )
    flags.DEFINE_integer(
        "neighbor_queries", 8, "neighbors: test images pictured (drawn with --seed)."
    )
    flags.DEFINE_integer("neighbor_k", 5, "neighbors: nearest training images per test image.")
    flags.DEFINE_list("plots", ["curves", "map"], "plots: which pictures (curves, map).")
    flags.DEFINE_integer("map_points", 10_000, "plots: test images in the t-SNE map.")
    flags.DEFINE_string("plots_note", None, "plots: second title line (e.g. the run length).")


class _Definer:
    """``flags.DEFINE_*`` bound to one ``FlagValues``."""

    def __init__(self, module, flag_values) -> None:  # noqa: ANN001
        self._module, self._flag_values = module, flag_values

    def __getattr__(self, name: str):
        define = getattr(self._module, name)
        return lambda *args, **kwargs: define(*args, flag_values=self._flag_values, **kwargs)


def _linear_config(values) -> object:  # noqa: ANN001
    from tfascl.evaluation import EvalInputError, LinearConfig

    try:
        milestones = tuple(int(m) for m in values.linear_milestones)
    except ValueError:
        raise EvalInputError(
            f"--linear_milestones must be integers, got {values.linear_milestones}"
        ) from None
    return LinearConfig(
        epochs=values.linear_epochs,
        batch_size=values.linear_batch_size,
        learning_rate=values.linear_lr,
        schedule=values.linear_schedule,
        milestones=milestones,
        eval_every=values.linear_eval_every,
        fast=values.linear_fast,
        seed=values.seed,
        jit_compile=values.linear_jit,
    )


def _plots(values, log) -> None:  # noqa: ANN001
    from tfascl.evaluation import EvalInputError
    from tfascl.evaluation.api import make_plots

    first = values.model_dir or values.saved_model
    if (values.model_dir is None) == (values.saved_model is None):
        raise EvalInputError("give exactly one of --model_dir and --saved_model")
    unknown = sorted(set(values.plots) - {"curves", "map"})
    if unknown:
        raise EvalInputError(f"--plots takes curves and/or map, got {', '.join(unknown)}")
    sources = [first] + ([values.compare_model_dir] if values.compare_model_dir else [])
    out_dir = values.plots_dir or str(Path(first) / "plots")
    written = make_plots(
        sources,
        out_dir,
        checkpoint=values.checkpoint,
        dataset=values.dataset,
        data_dir=values.data_dir,
        test_split=values.test_split,
        map_points=values.map_points,
        batch_size=values.batch_size,
        seed=values.seed,
        curves="curves" in values.plots,
        embedding_map="map" in values.plots,
        note=values.plots_note,
        log=log,
    )
    for kind, path in written.items():
        print(f"{kind:<6}  {path}")


def main(argv: Sequence[str]) -> None:
    """The app: runs one protocol, prints a table and records the result."""
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    run_with(flags.FLAGS)


def run_with(values) -> None:  # noqa: ANN001
    """The app's work on parsed flag values (``absl.flags.FlagValues``)."""
    from absl import logging

    from tfascl.evaluation import EvalInputError, evaluate, format_table

    try:
        if values.protocol == "plots":
            _plots(values, logging.info)
            return
        if values.compare_model_dir:
            raise EvalInputError("--compare_model_dir is for --protocol=plots")
        entry = evaluate(
            values.protocol,
            model_dir=values.model_dir,
            saved_model=values.saved_model,
            checkpoint=values.checkpoint,
            dataset=values.dataset,
            data_dir=values.data_dir,
            train_split=values.train_split,
            test_split=values.test_split,
            max_train_examples=values.max_train_examples,
            max_test_examples=values.max_test_examples,
            image_size=values.image_size,
            batch_size=values.batch_size,
            knn_k=values.knn_k,
            knn_temperature=values.knn_temperature,
            knn_chunk_size=values.knn_chunk_size,
            linear=_linear_config(values),
            neighbor_queries=values.neighbor_queries,
            neighbor_k=values.neighbor_k,
            plots_dir=values.plots_dir,
            seed=values.seed,
            write=values.write_results,
            log=logging.info,
        )
    except EvalInputError as error:
        # One line, no traceback: the user's to fix.
        sys.exit(f"{PROGRAM}: error: {error}")
    print(format_table(entry))
    for note in entry["notes"]:
        print(f"note: {note}")
    if "picture" in entry:
        print(f"picture: {entry['picture']}")
    if "results_file" in entry:
        print(f"results: {entry['results_file']} [{entry['results_key']}]")


def run() -> None:
    """Console-script entry point."""
    from absl import app

    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
