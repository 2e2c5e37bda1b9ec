"""``tfascl-eval``: kNN and linear evaluation of a pretrained encoder, and its pictures.

Examples::

    tfascl-eval --protocol=knn --model_dir=runs/ascl                 # the final encoder
    tfascl-eval --protocol=linear --model_dir=runs/ascl              # the ASCL protocol
    tfascl-eval --protocol=linear --linear_fast --model_dir=runs/ascl  # cached features
    tfascl-eval --protocol=knn --saved_model=runs/ascl/export/1
    tfascl-eval --protocol=knn --model_dir=runs/in1k --dataset=/data/imagenet \\
        --input=stream     # any size: files decoded as needed; ImageNet's crop 0.875
    tfascl-eval --protocol=neighbors --model_dir=runs/ascl   # runs/ascl/plots/neighbors.png
    tfascl-eval --protocol=plots --model_dir=runs/ascl --compare_model_dir=runs/moco \\
        --plots_dir=docs/images

Results go to stdout (a small table) and into ``results.json`` beside the model (see
``tfascl.evaluation.results``). A usage error (a bad flag value, a missing run, an
unprepared dataset: found before any image is decoded) ends with one line on stderr and
exit status 2 (``tfascl.cli``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from absl import flags
from absl import logging as absl_logging

from tfascl import cli
from tfascl.choices import INPUT_MODES

PROGRAM = "tfascl-eval"
PLOTS = ("curves", "map")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagValues:
    """Defines tfascl-eval's flags in ``flag_values`` (once; again does nothing).

    Called when the command starts, never at import, so importing this module next to
    another absl program cannot clash; tests pass their own ``flags.FlagValues()``.

    Returns:
        ``flag_values``.
    """
    if cli.defined(flag_values, ["protocol", "knn_temperature", "plots_note"]):
        return flag_values
    f = _Definer(flag_values)
    f.DEFINE_enum("protocol", "knn", ["knn", "linear", "neighbors", "plots"], "What to run.")
    f.DEFINE_string("model_dir", None, "A training run's directory (run.json, checkpoints/).")
    f.DEFINE_string("saved_model", None, "Or: an exported SavedModel (export_dir/<version>).")
    f.DEFINE_string("checkpoint", "latest", "latest, best, or a checkpoint name (model_dir).")
    f.DEFINE_string(
        "compare_model_dir",
        None,
        "plots: a second model_dir or SavedModel, beside the first.",
    )
    f.DEFINE_string(
        "dataset", None, "digits, a TFDS name or an image folder; default the model's own."
    )
    f.DEFINE_string("data_dir", None, "TFDS data directory.")
    f.DEFINE_string("train_split", "train", "Labelled split: kNN bank / linear training set.")
    f.DEFINE_string("test_split", "test", "Split the accuracy is reported on.")
    f.DEFINE_integer("max_train_examples", None, "Stratified subset of the train split.")
    f.DEFINE_integer("max_test_examples", None, "Stratified subset of the test split.")
    f.DEFINE_enum(
        "input",
        "auto",
        list(INPUT_MODES),
        "memory: decode both splits into RAM; stream: read and decode the files as they are "
        "needed (knn, linear: memory flat in the number of images); auto: memory when the "
        "decoded splits fit --memory_budget_gb and share one size.",
    )
    f.DEFINE_float(
        "memory_budget_gb",
        None,
        "RAM the decoded images may take with --input=auto; memory mode holds about twice "
        "the decoded size. Default: half of this machine's RAM.",
    )
    f.DEFINE_float(
        "eval_crop",
        None,
        "Eval transform: the central square of this fraction of the shorter side, resized "
        "(0.875: ImageNet's Resize(256) + CenterCrop(224)). Default: the run's --eval_crop "
        "on its own data set, else the data set's protocol's (ImageNet 0.875, others 1).",
    )
    f.DEFINE_integer("seed", 0, "Seed of subsets, linear init/shuffling/augmentation, t-SNE.")
    f.DEFINE_integer("image_size", None, "Input size, only for SavedModels that do not record it.")
    f.DEFINE_integer("batch_size", 256, "Images per forward pass when computing features.")
    f.DEFINE_integer("knn_k", 200, "kNN: neighbours.")
    f.DEFINE_float("knn_temperature", 0.1, "kNN: vote weights exp(sim / temperature).")
    f.DEFINE_integer("knn_chunk_size", 1024, "kNN: test rows per similarity block.")
    f.DEFINE_integer("linear_epochs", 100, "linear: epochs.")
    f.DEFINE_integer("linear_batch_size", 256, "linear: batch size.")
    f.DEFINE_float("linear_lr", None, "linear: base lr; default 10 (step) or 1 (cosine).")
    f.DEFINE_enum("linear_schedule", "step", ["step", "cosine"], "linear: lr schedule.")
    f.DEFINE_list("linear_milestones", ["60", "80"], "linear: epochs of the x0.1 steps.")
    f.DEFINE_integer("linear_eval_every", 1, "linear: test every N epochs (and the last).")
    f.DEFINE_bool(
        "linear_fast",
        False,
        "linear: train on cached features without augmentation (recorded as linear_fast).",
    )
    f.DEFINE_bool("linear_jit", True, "linear: XLA-compile the augmentation.")
    f.DEFINE_bool("write_results", True, "Merge the result into results.json.")
    f.DEFINE_string("plots_dir", None, "plots, neighbors: folder; default <model_dir>/plots.")
    f.DEFINE_integer("neighbor_queries", 8, "neighbors: test images pictured (drawn with --seed).")
    f.DEFINE_integer("neighbor_k", 5, "neighbors: nearest training images per test image.")
    f.DEFINE_list("plots", list(PLOTS), "plots: which pictures (curves, map).")
    f.DEFINE_integer("map_points", 10_000, "plots: test images in the t-SNE map.")
    f.DEFINE_string("plots_note", None, "plots: second title line (e.g. the run length).")
    return flag_values


class _Definer:
    """``flags.DEFINE_*`` bound to one ``FlagValues``."""

    def __init__(self, flag_values: flags.FlagValues) -> None:
        self._flag_values = flag_values

    def __getattr__(self, name: str) -> Callable[..., object]:
        define = getattr(flags, name)
        return lambda *args, **kwargs: define(*args, flag_values=self._flag_values, **kwargs)


# --- From flags to configs, checked -----------------------------------------------------------


def linear_config(values: flags.FlagValues) -> object:
    """The ``LinearConfig`` of the ``--linear_*`` flags (and ``--seed``)."""
    from tfascl.evaluation import EvalInputError, LinearConfig

    try:
        milestones = tuple(int(m) for m in values.linear_milestones)
    except ValueError:
        raise EvalInputError(
            f"--linear_milestones={','.join(values.linear_milestones)}: give integer epochs"
        ) from None
    for name in ("linear_epochs", "linear_batch_size", "linear_eval_every"):
        if values[name].value < 1:
            raise EvalInputError(f"--{name}={values[name].value}: must be >= 1")
    if values.linear_lr is not None and not values.linear_lr > 0:
        raise EvalInputError(f"--linear_lr={values.linear_lr}: must be > 0")
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


def eval_config(values: flags.FlagValues) -> object:
    """The ``EvalConfig`` of the parsed flags, validated (no file is read).

    Raises:
        EvalInputError: one line naming the flag.
    """
    from tfascl.evaluation.api import EvalConfig

    names = ("protocol", "model_dir", "saved_model", "checkpoint", "dataset", "data_dir",
             "train_split", "test_split", "max_train_examples", "max_test_examples",
             "input", "memory_budget_gb", "eval_crop", "image_size", "batch_size", "knn_k",
             "knn_temperature", "knn_chunk_size",
             "neighbor_queries", "neighbor_k", "plots_dir", "seed")  # fmt: skip
    config = EvalConfig(
        **{name: values[name].value for name in names},
        linear=linear_config(values),
        write=values.write_results,
    )
    config.validate()
    return config


def check_sources(values: flags.FlagValues) -> None:
    """Cheap checks of the folders and dataset the flags name, before anything is loaded.

    Raises:
        EvalInputError: one line naming the flag.
    """
    from tfascl import runs
    from tfascl.evaluation import EvalInputError

    try:
        if values.model_dir is not None:
            cli.check_run_dir(values.model_dir)
        if values.saved_model is not None:
            path = values.saved_model
            cli.require(runs.is_dir(path), f"--saved_model={path}: no such folder")
        if values.dataset is not None:
            cli.check_dataset(values.dataset, values.data_dir)
    except cli.FlagError as error:
        raise EvalInputError(str(error)) from None


def check_plots(values: flags.FlagValues) -> None:
    """The flags of ``--protocol=plots`` (and ``--compare_model_dir`` only with it)."""
    from tfascl import runs
    from tfascl.evaluation import EvalInputError

    if values.protocol != "plots":
        if values.compare_model_dir:
            raise EvalInputError("--compare_model_dir is for --protocol=plots")
        return
    if values.input == "stream":
        raise EvalInputError(
            "--input=stream: --protocol=plots decodes its --map_points test images in memory"
        )
    if (values.model_dir is None) == (values.saved_model is None):
        raise EvalInputError("give exactly one of --model_dir and --saved_model")
    unknown = sorted(set(values.plots) - set(PLOTS))
    if unknown:
        raise EvalInputError(f"--plots={','.join(values.plots)}: takes curves and/or map")
    for name in ("batch_size", "map_points"):
        if values[name].value < 1:
            raise EvalInputError(f"--{name}={values[name].value}: must be >= 1")
    other = values.compare_model_dir
    if other and not runs.is_dir(other):
        raise EvalInputError(f"--compare_model_dir={other}: no such folder")


# --- The work ---------------------------------------------------------------------------------


def plots(values: flags.FlagValues, log: Callable[[str], None]) -> None:
    """``--protocol=plots``: training curves and t-SNE maps, one or two models side by side."""
    from tfascl import runs
    from tfascl.evaluation.api import make_plots
    from tfascl.runs import PLOTS_SUBDIR

    first = values.model_dir or values.saved_model
    sources = [first] + ([values.compare_model_dir] if values.compare_model_dir else [])
    written = make_plots(
        sources,
        values.plots_dir or str(runs.join(first, PLOTS_SUBDIR)),
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


def run_with(values: flags.FlagValues) -> None:
    """The command's work on parsed flag values: checks, one protocol, its table.

    Raises:
        EvalInputError: a usage error (one line naming the flag), before images are decoded.
    """
    from tfascl.evaluation import evaluate, format_table

    check_plots(values)
    config = None if values.protocol == "plots" else eval_config(values)
    check_sources(values)
    if config is None:
        plots(values, absl_logging.info)
        return
    entry = evaluate(config, log=absl_logging.info)
    print(format_table(entry))
    print(f"input: {entry['input']['mode']} ({entry['input']['why']})")
    print(f"eval crop: {entry['eval_crop']['value']:g} ({entry['eval_crop']['source']})")
    for note in entry["notes"]:
        print(f"note: {note}")
    if "picture" in entry:
        print(f"picture: {entry['picture']}")
    if "results_file" in entry:
        print(f"results: {entry['results_file']} [{entry['results_key']}]")


def main(argv: Sequence[str]) -> None:
    """absl main: a usage error is one line and exit status 2."""
    from tfascl.evaluation import EvalInputError

    cli.no_arguments(PROGRAM, argv)
    try:
        run_with(flags.FLAGS)
    except EvalInputError as error:
        cli.fail_usage(PROGRAM, str(error))


def run() -> None:
    """``tfascl-eval``: flags parsed before TensorFlow starts, which then starts quietly
    (``tfascl._startup.evaluate`` through the launcher, what the console script runs)."""
    import tfascl_launch  # the launcher above the package (see tfascl.train)

    tfascl_launch.evaluate()


if __name__ == "__main__":
    run()
