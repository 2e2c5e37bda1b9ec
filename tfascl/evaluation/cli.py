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

import dataclasses
from collections.abc import Callable, Sequence

from absl import flags
from absl import logging as absl_logging

from tfascl import cli
from tfascl.choices import INPUT_MODES

PROGRAM = "tfascl-eval"
PLOTS = ("curves", "map")


_flag = cli.flag_field


@dataclasses.dataclass(frozen=True)
class EvalFlags:
    """tfascl-eval's flags: each field is one, with its type, default and help.

    The fields up to ``write_results`` are ``tfascl.evaluation.EvalConfig``'s (same name
    and default; ``write`` is ``--write_results``): ``eval_config`` builds it from them, and
    tests/test_cli.py checks that they agree. They are declared here rather than read from
    ``EvalConfig`` because its module imports TensorFlow, and the flags are defined and
    parsed (``--help``, a bad value) before TensorFlow starts. The ``linear_*`` fields make
    the ``LinearConfig`` (``linear_config``); the last four are ``--protocol=plots``'s.
    """

    protocol: str = _flag("knn", "What to run.")
    model_dir: str | None = _flag(None, "A training run's directory (run.json, checkpoints/).")
    saved_model: str | None = _flag(None, "Or: an exported SavedModel (export_dir/<version>).")
    checkpoint: str = _flag("latest", "latest, best, or a checkpoint name (model_dir).")
    dataset: str | None = _flag(
        None, "digits, a TFDS name or an image folder; default the model's own."
    )
    data_dir: str | None = _flag(None, "TFDS data directory.")
    train_split: str = _flag("train", "Labelled split: kNN bank / linear training set.")
    test_split: str = _flag("test", "Split the accuracy is reported on.")
    max_train_examples: int | None = _flag(None, "Stratified subset of the train split.")
    max_test_examples: int | None = _flag(None, "Stratified subset of the test split.")
    input: str = _flag(
        "auto",
        "memory: decode both splits into RAM; stream: read and decode the files as they are "
        "needed (knn, linear: memory flat in the number of images); auto: memory when the "
        "decoded splits fit --memory_budget_gb and share one size.",
    )
    memory_budget_gb: float | None = _flag(
        None,
        "RAM the decoded images may take with --input=auto; memory mode holds about twice "
        "the decoded size. Default: half of this machine's RAM.",
    )
    eval_crop: float | None = _flag(
        None,
        "Eval transform: the central square of this fraction of the shorter side, resized "
        "(0.875: ImageNet's Resize(256) + CenterCrop(224)). Default: the run's --eval_crop "
        "on its own data set, else the data set's protocol's (ImageNet 0.875, others 1).",
    )
    image_size: int | None = _flag(None, "Input size, only for SavedModels that do not record it.")
    batch_size: int = _flag(256, "Images per forward pass when computing features.")
    knn_k: int = _flag(200, "kNN: neighbours.")
    knn_temperature: float = _flag(0.1, "kNN: vote weights exp(sim / temperature).")
    knn_chunk_size: int = _flag(1024, "kNN: test rows per similarity block.")
    neighbor_queries: int = _flag(8, "neighbors: test images pictured (drawn with --seed).")
    neighbor_k: int = _flag(5, "neighbors: nearest training images per test image.")
    plots_dir: str | None = _flag(None, "plots, neighbors: folder; default <model_dir>/plots.")
    seed: int = _flag(0, "Seed of subsets, linear init/shuffling/augmentation, t-SNE.")
    write_results: bool = _flag(True, "Merge the result into results.json.")
    linear_epochs: int = _flag(100, "linear: epochs.")
    linear_batch_size: int = _flag(256, "linear: batch size.")
    linear_lr: float | None = _flag(None, "linear: base lr; default 10 (step) or 1 (cosine).")
    linear_schedule: str = _flag("step", "linear: lr schedule.")
    linear_milestones: tuple[int, ...] = _flag((60, 80), "linear: epochs of the x0.1 steps.")
    linear_eval_every: int = _flag(1, "linear: test every N epochs (and the last).")
    linear_fast: bool = _flag(
        False, "linear: train on cached features without augmentation (recorded as linear_fast)."
    )
    linear_jit: bool = _flag(True, "linear: XLA-compile the augmentation.")
    compare_model_dir: str | None = _flag(
        None, "plots: a second model_dir or SavedModel, beside the first."
    )
    plots: tuple[str, ...] = _flag(PLOTS, "plots: which pictures (curves, map).")
    map_points: int = _flag(10_000, "plots: test images in the t-SNE map.")
    plots_note: str | None = _flag(None, "plots: second title line (e.g. the run length).")


ENUMS = {
    "protocol": ["knn", "linear", "neighbors", "plots"],
    "input": list(INPUT_MODES),
    "linear_schedule": ["step", "cosine"],
}
# EvalConfig's field of each flag named otherwise (the other config flags: the same name).
CONFIG_FIELDS = {"write_results": "write"}
# The other spelling of a flag, as tfascl-train names it: both work in both commands.
ALIASES = {"knn_t": "knn_temperature"}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagValues:
    """Defines tfascl-eval's flags in ``flag_values`` (once; again does nothing): one per
    ``EvalFlags`` field, and the ``ALIASES`` (``--knn_t``, tfascl-train's name of
    ``--knn_temperature``).

    Called when the command starts, never at import, so importing this module next to
    another absl program cannot clash; tests pass their own ``flags.FlagValues()``.

    Returns:
        ``flag_values``.
    """
    return cli.define_flags_from(EvalFlags, flag_values, enums=ENUMS, aliases=ALIASES)


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

    flag_values = cli.values_from_flags(EvalFlags, values)
    fields = {CONFIG_FIELDS.get(name, name): value for name, value in flag_values.items()}
    config = EvalConfig(
        **{field.name: fields[field.name] for field in dataclasses.fields(EvalConfig)
           if field.name != "linear"},
        linear=linear_config(values),
    )  # fmt: skip
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
