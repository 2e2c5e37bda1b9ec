"""The tfascl-train command line: ``TrainConfig``, its absl flags, flagfiles and validation.

Every flag is generated from one ``TrainConfig`` field (default and help in one place).
This module and ``tfascl.train`` are the only ones that read flags: ``config_from_flags``
turns them into a ``TrainConfig`` and everything after takes plain arguments. Validation
runs before anything is built and raises ``FlagError`` with one line naming the flag.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from absl import flags

# Nothing here starts TensorFlow (tfascl.choices, tfascl.data.recipe, tfascl.runs' lazy
# imports): tfascl-train defines and parses its flags, answering --help or a bad value,
# before TensorFlow loads. The registry is imported where a method's spec is needed.
from tfascl import cli, runs
from tfascl.choices import (
    AUGMENT_ON,
    CLUSTERS,
    INPUT_MODES,
    KEY_AUGMENTS,
    METHOD_NAMES,
    NORMS,
    OPTIMIZER_NAMES,
    SLURM_PORT,
    STRATEGIES,
    default_stem,
)
from tfascl.cli import (
    EXIT_FAILED,
    FlagError,
    expand_flagfiles,
    flag_field,
    profile_range,
    require,
)
from tfascl.data.recipe import STANDARD_RECIPE, AugmentRecipe
from tfascl.options import FLAG_NAMES, METHOD, OPTIONS, MethodOptions, flag_name
from tfascl.runs import FLAGS_FILE, RunFileError, RunSpec, read_json_file

if TYPE_CHECKING:
    from tfascl.models.registry import MethodSpec

FLAGS = flags.FLAGS
PROGRAM = "tfascl-train"

EXIT_SAVE_FAILED = EXIT_FAILED  # a checkpoint could not be written (full disk); earlier ones kept

# Flags that define the model or the data stream: resuming with other values is
# refused (unless --force), since it would not continue the same run.
KEY_FLAGS = (
    "method",
    "dataset",
    "train_split",
    "backbone",
    "backbone_width",
    "projector_dims",
    "stem",
    "image_size",
    "batch_size",
    "queue_size",
)
# Total downsampling of the backbone for each stem: the image side must be a multiple.
STEM_STRIDES = {"cifar": 8, "cifar_pool": 16, "imagenet": 32}
# Most steps per execution chosen by default on an accelerator: beyond this the host's
# per-call work (a few hundred microseconds) is already under 1% of a GPU step.
MAX_AUTO_STEPS_PER_EXECUTION = 32
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


_flag = flag_field  # a TrainConfig field: its flag's default and help


@dataclasses.dataclass
class TrainConfig(MethodOptions):
    """Everything a run needs: each field is a flag, with its default and help.

    The model's options (backbone, projector, τ, τ′, K, queue, momentum, relabel, ...)
    are the fields of ``MethodOptions``, declared once in ``tfascl.options`` with their
    flag, help and validation; a field's flag has its name, except those
    ``tfascl.options.flag_name`` renames (``target_temperature``: ``--relabel_temperature``).
    """

    method: str = _flag(RunSpec.method, "Self-supervised method.")
    dataset: str = _flag(
        RunSpec.dataset,
        "'digits', a TFDS name prepared under --data_dir, a folder root/<split>/<class>/, or "
        "a folder of TFRecord shards (root/<split>-*-of-*, root/<split>/*.tfrecord).",
    )
    tfrecord_image_key: str | None = _flag(
        None,
        "TFRecord shards: the feature holding the encoded image. Default: the one the "
        "shards' index names, else Model Garden's image/encoded.",
    )
    tfrecord_label_key: str | None = _flag(
        None,
        "TFRecord shards: the int64 label feature ('' for none). Default: the index's, else "
        "Model Garden's image/class/label.",
    )
    data_dir: str | None = _flag(None, "TFDS data directory (default: TFDS's own).")
    input: str = _flag(
        "auto",
        "memory: decode the images once into RAM; stream: read and decode files as batches "
        "are needed; auto: memory when the decoded set fits --memory_budget_gb.",
    )
    memory_budget_gb: float | None = _flag(
        None,
        "RAM the decoded images may take with --input=auto; memory mode holds about twice "
        "the decoded size. Default: half of this machine's RAM.",
    )
    train_split: str = _flag(
        "train", "Split to pretrain on; folders also take 'a+b' (STL-10: train+unlabelled)."
    )
    knn_bank_split: str | None = _flag(
        None, "Labelled split of the kNN bank. Default: train (TFDS stl10: train_labelled)."
    )
    knn_bank_size: int | None = _flag(
        None,
        "kNN monitor on a fixed stratified subset of this many bank images. Default: the "
        "whole bank split, or with --max_train_examples (bank = training split) the "
        "training subset.",
    )
    max_train_examples: int | None = _flag(
        None,
        "Use at most this many training images (a fixed stratified subset); the kNN bank, "
        "when it is the training split, is the same subset unless --knn_bank_size is set.",
    )
    test_split: str = _flag("test", "Split the kNN monitor evaluates on.")
    load_size: int | None = _flag(
        None, "Resize images to this side when loading (default: as stored)."
    )
    augment_on: str = _flag(
        "host", "Augment in the tf.data pipeline (host) or inside the train step (device)."
    )
    key_augment: str = _flag(
        "weak", "Key view: weak (crop, flip: ASCL, SCE, ReSSL) or strong (MoCo v2 aug+)."
    )
    crop_scale: tuple[float, float] = _flag(
        STANDARD_RECIPE.crop_scale,
        "RandomResizedCrop's range of crop area over image area, low,high (both views).",
    )
    flip_prob: float = _flag(STANDARD_RECIPE.flip_prob, "Probability of a horizontal flip.")
    jitter_prob: float = _flag(
        STANDARD_RECIPE.jitter_prob, "Probability of colour jitter (strong view; 0: off)."
    )
    grayscale_prob: float = _flag(
        STANDARD_RECIPE.gray_prob, "Probability of grayscale (strong view; 0: off)."
    )
    blur_prob: float = _flag(
        STANDARD_RECIPE.blur_prob, "Probability of Gaussian blur (strong view; 0: off)."
    )
    eval_crop: float = _flag(
        1.0,
        "Evaluation crop: the central square of this fraction of the shorter side, resized "
        "(0.875: ImageNet's Resize(256) + CenterCrop(224)).",
    )
    jit_augment: bool = _flag(
        True, "XLA-compile the host augmentation (faster after a few seconds' compile)."
    )
    seed: int = _flag(0, "Seed of the data order, the augmentations and the weights.")
    norm: str | None = _flag(
        None,
        "Normalisation. Default: split on one device; with several replicas shuffle "
        "(per-replica BN, keys shuffled across replicas) for queue methods, sync for BYOL.",
    )
    batch_size: int = _flag(128, "Global batch size (all replicas together).")
    epochs: int = _flag(5, "Training epochs.")
    optimizer: str = _flag("sgd", "Optimizer (sgd: PyTorch-exact coupled weight decay).")
    learning_rate: float = _flag(0.06, "Peak learning rate (for batch 256 with --scale_lr).")
    scale_lr: bool = _flag(False, "Scale the learning rate by batch_size/256.")
    weight_decay: float = _flag(5e-4, "Weight decay.")
    exclude_bn_bias: bool = _flag(
        True, "Exempt BN parameters and biases from weight decay (and LARS)."
    )
    warmup_epochs: float = _flag(1, "Linear warm-up epochs (may be fractional).")
    schedule: str = _flag("cosine", "Learning rate after the warm-up.")
    schedule_per: str = _flag(
        "step",
        "Step the learning rate every step, or once per epoch at the epoch's first step's "
        "value (MoCo main_moco.py's adjust_learning_rate; needs --warmup_epochs=0).",
    )
    model_dir: str | None = _flag(None, "Run folder (default runs/<method>_<dataset>).")
    checkpoint_every: int = _flag(500, "Save every N steps (0: at epoch ends only).")
    keep_checkpoints: int = _flag(3, "Recent checkpoints kept (plus the best).")
    log_every: int = _flag(50, "Write metrics every N steps.")
    profile_steps: str = _flag(
        "",
        "Profile global steps A to B (e.g. 10,15) with the TensorFlow profiler into "
        "tensorboard/train/plugins/profile (TensorBoard's Profile tab). Empty: off.",
    )
    knn_every: int = _flag(1, "kNN monitor every N epochs and at the last (0: the last only).")
    knn_at_start: bool = _flag(
        True,
        "kNN monitor of the randomly initialised encoder before the first step: the "
        "baseline the run's last line compares the final accuracy with.",
    )
    knn_k: int = _flag(200, "Neighbours of the kNN monitor.")
    knn_t: float = _flag(0.1, "Temperature of the kNN monitor.")
    strategy: str = _flag(
        "auto",
        "tf.distribute strategy; auto: multi_worker when --cluster finds several workers, "
        "else every local GPU.",
    )
    cluster: str = _flag(
        "auto",
        "How multi_worker finds its workers: slurm (the srun job step's tasks), tf_config "
        "(TF_CONFIG), auto (SLURM inside a job step, else TF_CONFIG, else one machine).",
    )
    cluster_port: int = _flag(
        SLURM_PORT, "Under SLURM, the port of a node's first worker (its i-th: port + i)."
    )
    precision: str = _flag("float32", "Keras dtype policy.")
    jit_compile: bool | None = _flag(
        None, "XLA-compile the train step. Default: on with one GPU, off on CPU (docs/CLI.md)."
    )
    steps_per_execution: int | None = _flag(
        None,
        "Train steps per tf.function call (Keras compile(steps_per_execution)): the host "
        "acts once per call. Must divide --log_every and --checkpoint_every. Default: 1 on "
        "CPU; on an accelerator the largest divisor of both up to 32 (docs/CLI.md).",
    )
    force: bool = _flag(False, "Resume even if key flags differ from the saved run.")
    export: bool = _flag(True, "Export the backbone at the end (if tfascl.export is installed).")
    export_dir: str | None = _flag(None, "Export folder (default <model_dir>/export).")
    progress_bar: bool = _flag(True, "Show Keras's progress bar (off: one line per epoch).")

    @property
    def method_spec(self) -> MethodSpec:
        """The registry's ``MethodSpec`` of ``--method`` (after ``validate``)."""
        from tfascl.models.registry import METHODS

        return METHODS[self.method]

    @property
    def augment_recipe(self) -> AugmentRecipe:
        """The augmentation knobs of ``--crop_scale``, ``--flip_prob``, ... (after ``validate``)."""
        return AugmentRecipe(
            crop_scale=tuple(self.crop_scale),
            flip_prob=self.flip_prob,
            jitter_prob=self.jitter_prob,
            gray_prob=self.grayscale_prob,
            blur_prob=self.blur_prob,
        )

    @property
    def is_queue_method(self) -> bool:
        return self.method_spec.uses_queue

    @property
    def uses_symmetric_loss(self) -> bool:
        if self.symmetric is not None:
            return self.symmetric
        return self.method_spec.symmetric

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ENUMS = {
    "method": list(METHOD_NAMES),
    # The options' choices (relabel, momentum_schedule, backbone, stem, key_norm).
    **{option.name: list(option.choices) for option in OPTIONS if option.choices},
    "augment_on": list(AUGMENT_ON),
    "input": list(INPUT_MODES),
    "key_augment": list(KEY_AUGMENTS),
    "norm": list(NORMS),
    "optimizer": list(OPTIMIZER_NAMES),
    "schedule": ["cosine", "constant"],
    "schedule_per": ["step", "epoch"],
    "strategy": list(STRATEGIES),
    "cluster": list(CLUSTERS),
    "precision": list(PRECISIONS),
}


# The other spelling of a flag, as tfascl-eval names it: both work in both commands.
ALIASES = {"knn_temperature": "knn_t"}


def define_flags(flag_values: flags.FlagValues = FLAGS) -> flags.FlagValues:
    """One absl flag per ``TrainConfig`` field, with the field's default and type (named
    by ``flag_name``: ``--relabel_temperature`` for ``target_temperature``), and the
    ``ALIASES`` (``--knn_temperature``, tfascl-eval's name of ``--knn_t``).

    Called by ``run`` (and by whoever parses tfascl-train's flags), never at import: a
    program that imports tfascl keeps its own flags. Defining them twice in the same
    ``flag_values`` does nothing the second time.

    Returns:
        ``flag_values``.
    """
    return cli.define_flags_from(
        TrainConfig, flag_values, enums=ENUMS, renames=FLAG_NAMES, aliases=ALIASES
    )


def config_from_args(args: Sequence[str]) -> TrainConfig:
    """The ``TrainConfig`` of tfascl-train's command-line arguments (no program name).

    Parsed by absl on flags of their own (the global ``FLAGS`` are left alone), with
    nested flagfiles as the command reads them.

    Raises:
        FlagError: an unknown flag, a bad value or an unreadable flagfile (one line).
    """
    flag_values = define_flags(flags.FlagValues())
    try:
        flag_values([PROGRAM, *expand_flagfiles(args)])
    except flags.Error as error:
        raise FlagError(cli.first_line(error)) from None
    return config_from_flags(flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> TrainConfig:
    """The ``TrainConfig`` of the parsed flags (projector_dims checked here)."""
    values = cli.values_from_flags(TrainConfig, flag_values, renames=FLAG_NAMES)
    try:
        dims = tuple(int(d) for d in values["projector_dims"])
    except ValueError:
        dims = ()
    if len(dims) != 2 or min(dims) < 1:
        raise FlagError(
            f"--projector_dims={','.join(values['projector_dims'])}: "
            "give two positive sizes, hidden,output (e.g. 2048,128)"
        )
    values["projector_dims"] = dims
    try:
        scale = tuple(float(v) for v in values["crop_scale"])
    except ValueError:
        scale = ()
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise FlagError(
            f"--crop_scale={','.join(map(str, values['crop_scale']))}: give low,high with "
            "0 < low <= high <= 1 (e.g. 0.2,1)"
        )
    values["crop_scale"] = scale
    return TrainConfig(**values)


# --- Validation ---------------------------------------------------------------------------


def validate(config: TrainConfig) -> None:
    """Checks every flag before anything is built; raises ``FlagError`` (one line)."""
    from tfascl.models.registry import METHODS  # TensorFlow: the flags are parsed by now

    c = config
    require(c.method in METHODS, f"--method={c.method}: must be one of {', '.join(METHODS)}")
    validate_options(c)
    for name in ("knn_t", "learning_rate"):
        value = getattr(c, name)
        require(value > 0, f"--{name}={value}: must be > 0")
    require(c.weight_decay >= 0, f"--weight_decay={c.weight_decay}: must be >= 0")
    for name in ("batch_size", "epochs", "knn_k", "keep_checkpoints", "log_every"):
        value = getattr(c, name)
        require(value >= 1, f"--{name}={value}: must be >= 1")
    require(
        c.key_norm is None or c.method_spec.has_momentum_encoder,
        f"--key_norm={c.key_norm}: --method={c.method} has no momentum encoder",
    )
    require(0 < c.eval_crop <= 1, f"--eval_crop={c.eval_crop}: must be in (0, 1]")
    for name in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob"):
        value = getattr(c, name)
        require(0 <= value <= 1, f"--{name}={value}: must be in [0, 1]")
    low, high = (*tuple(c.crop_scale), 0.0, 0.0)[:2]
    require(
        len(c.crop_scale) == 2 and 0 < low <= high <= 1,
        f"--crop_scale={','.join(map(str, c.crop_scale))}: give low,high with 0 < low <= high <= 1",
    )
    for name in ("memory_budget_gb", "knn_bank_size"):
        value = getattr(c, name)
        require(value is None or value > 0, f"--{name}={value}: must be > 0")
    require(
        not (c.input == "stream" and c.augment_on == "device"),
        "--augment_on=device: needs --input=memory (streamed files of any size are "
        "augmented on the host)",
    )
    for name in ("knn_every", "checkpoint_every"):
        require(getattr(c, name) >= 0, f"--{name}={getattr(c, name)}: must be >= 0")
    if c.steps_per_execution is not None:
        spe = c.steps_per_execution
        require(spe >= 1, f"--steps_per_execution={spe}: must be >= 1")
        for name in ("log_every", "checkpoint_every"):
            every = getattr(c, name)
            require(
                every % spe == 0,
                f"--steps_per_execution={spe}: must divide --{name}={every} (the host "
                "writes and saves only between executions)",
            )
    require(profile_range(c.profile_steps), f"--profile_steps={c.profile_steps}: give A,B, 1<=A<=B")
    require(
        c.cluster == "auto" or c.strategy in ("auto", "multi_worker"),
        f"--cluster={c.cluster}: finds the workers of --strategy=auto or multi_worker, "
        f"not of {c.strategy}",
    )
    require(0 < c.cluster_port < 65536, f"--cluster_port={c.cluster_port}: must be a port")
    require(
        0 <= c.warmup_epochs <= c.epochs,
        f"--warmup_epochs={c.warmup_epochs}: must be in [0, --epochs={c.epochs}]",
    )
    require(
        c.schedule_per == "step" or c.warmup_epochs == 0,
        f"--warmup_epochs={c.warmup_epochs}: --schedule_per=epoch holds each epoch's first "
        "rate, 0 for a warm-up's first epoch; use --warmup_epochs=0 (MoCo has none)",
    )
    if c.max_train_examples is not None:
        require(
            c.max_train_examples >= c.batch_size,
            f"--max_train_examples={c.max_train_examples}: must be >= --batch_size="
            f"{c.batch_size} (incomplete batches are dropped)",
        )
    if c.is_queue_method:
        both_views = c.method_spec.queue_keys(c.uses_symmetric_loss) == 2
        keys = c.batch_size * (2 if both_views else 1)
        require(
            c.queue_size >= keys and c.queue_size % keys == 0,
            f"--queue_size={c.queue_size}: must be a multiple of the keys enqueued per step, "
            f"{keys} (--batch_size{' x2 for --symmetric' if both_views else ''})",
        )
        # Targets on the top-K keys of the queue (AHCL, hard), MSF's k nearest bank rows.
        from tfascl.models.registry import relabel_kind

        top_k = relabel_kind(c.method_spec.relabel_mode(c.relabel)) == "hard" or c.method == "msf"
        k = c.num_neighbors or c.method_spec.defaults.get("num_neighbors", 1)
        if top_k:
            require(
                k <= c.queue_size,
                f"--num_neighbors={k}: must be <= --queue_size={c.queue_size}",
            )
    validate_image_size(c.image_size, c.stem)
    require(
        c.load_size is None or c.load_size >= c.image_size,
        f"--load_size={c.load_size}: must be >= --image_size={c.image_size}",
    )
    check_dataset(c.dataset, c.data_dir)
    check_writable(resolve_model_dir(c))


def validate_options(config: TrainConfig) -> None:
    """The options (``tfascl.options.OPTIONS``) a run sets: each value by its option's
    rules, and only the method options its method takes."""
    from tfascl.models.registry import METHODS

    spec = config.method_spec
    for option in OPTIONS:
        value = getattr(config, option.name)
        if value is None:
            continue
        flag = option.flag_name
        problem = option.problem(value)
        require(problem is None, f"--{flag}={value}: {problem}")
        if option.group != METHOD:
            continue
        takers = [name for name, other in METHODS.items() if other.takes(option.name)]
        require(
            spec.takes(option.name),
            f"--{flag}={value}: --method={config.method} does not use it ({', '.join(takers)} do)",
        )
    if config.relabel is not None:
        require(
            config.relabel in spec.relabels,
            f"--relabel={config.relabel}: --method={config.method} takes "
            f"{', '.join(spec.relabels)}",
        )


def validate_image_size(image_size: int, stem: str | None) -> None:
    """The backbone halves the image ``log2(stride)`` times: the side must be a multiple."""
    stem = stem or default_stem(image_size)
    stride = STEM_STRIDES[stem]
    require(
        image_size >= stride and image_size % stride == 0,
        f"--image_size={image_size}: the {stem} stem downsamples by {stride}; "
        f"use a multiple of {stride}",
    )


def check_dataset(dataset: str, data_dir: str | None) -> None:
    """A cheap existence check, by the loader's own rule (``tfascl.cli.dataset_problem``):
    digits, an existing folder, or a prepared TFDS dataset (TFDS's own error otherwise)."""
    cli.check_dataset(dataset, data_dir)


def resolve_model_dir(config: TrainConfig) -> runs.RunPath:
    """``--model_dir`` (a ``Path``, or the URL of another file system), or
    runs/<method>_<dataset name>."""
    if config.model_dir:
        if not runs.is_local(config.model_dir):
            return runs.run_path(config.model_dir)
        return Path(config.model_dir).expanduser()
    name = os.path.basename(os.path.normpath(os.path.expanduser(config.dataset)))
    return Path("runs") / f"{config.method}_{name}"


def check_writable(model_dir: runs.RunPath) -> None:
    """Raises ``FlagError`` unless a file can be written in ``model_dir`` (made if missing)."""
    try:
        if runs.is_local(model_dir):
            Path(model_dir).mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=model_dir, prefix=".write_test")
            probe.close()
        else:  # gfile has no temporary files: write one and delete it
            runs.makedirs(model_dir)
            probe = runs.join(model_dir, f".write_test-{os.getpid()}")
            runs.write_bytes(probe, b"")
            runs.remove(probe)
    except OSError as error:
        raise FlagError(f"--model_dir={model_dir}: not writable ({error.strerror})") from None


def check_replicas(config: TrainConfig, replicas: int) -> TrainConfig:
    """Device-dependent checks and defaults (norm, jit), once the strategy is known."""
    c = config
    require(
        c.batch_size % replicas == 0,
        f"--batch_size={c.batch_size}: must be divisible by the {replicas} replicas",
    )
    # MoCo's shuffle BN for the queue methods; BYOL has no negatives to cheat with.
    shuffles = c.method_spec.shuffles_keys
    norm = c.norm or ("split" if replicas == 1 else "shuffle" if shuffles else "sync")
    require(
        norm != "shuffle" or (shuffles and replicas > 1),
        f"--norm=shuffle: shuffles the keys of queue methods across replicas, here "
        f"{replicas} replica(s) of --method={c.method}; use split on one device",
    )
    per_replica = c.batch_size // replicas
    if "split" in (norm, c.key_norm):
        # Split BN needs whole groups on each replica.
        require(
            per_replica % c.num_splits == 0,
            f"--num_splits={c.num_splits}: must divide the per-replica batch {per_replica}",
        )
    import tensorflow as tf

    jit = c.jit_compile
    if jit is None:
        jit = replicas == 1 and bool(tf.config.list_logical_devices("GPU"))
    spe = c.steps_per_execution
    if spe is None:
        accelerator = any(tf.config.list_logical_devices(kind) for kind in ("GPU", "TPU"))
        spe = auto_steps_per_execution(c.log_every, c.checkpoint_every) if accelerator else 1
    return dataclasses.replace(c, norm=norm, jit_compile=jit, steps_per_execution=spe)


def auto_steps_per_execution(log_every: int, checkpoint_every: int) -> int:
    """The default on an accelerator: the largest divisor of ``log_every`` and
    ``checkpoint_every`` (0: epoch ends only) up to ``MAX_AUTO_STEPS_PER_EXECUTION``."""
    common = math.gcd(log_every, checkpoint_every) if checkpoint_every else log_every
    return max(d for d in range(1, MAX_AUTO_STEPS_PER_EXECUTION + 1) if common % d == 0)


def check_previous_run(model_dir: runs.RunPath, config: TrainConfig) -> dict[str, Any] | None:
    """The saved flags of a run in ``model_dir``, after checking its key flags match.

    Returns:
        The saved flags, or None for a new run.
    """
    path = runs.join(model_dir, FLAGS_FILE)
    if not runs.is_file(path):
        return None
    try:
        saved = read_json_file(path)
    except RunFileError as error:
        if config.force:
            return None  # rewritten at the start of the run
        raise FlagError(f"{error}; fix or delete it, or pass --force to resume anyway") from None
    current = config.to_json()
    changed = [
        name
        for name in KEY_FLAGS
        if name in saved and _normal(saved[name]) != _normal(current[name])
    ]
    if changed and not config.force:
        first = changed[0]
        raise FlagError(
            f"--{first}={_text(current[first])}: {model_dir} holds a run with "
            f"--{first}={_text(saved[first])} (changed: {', '.join(changed)}); "
            "use another --model_dir, or --force to resume it anyway"
        )
    return saved


def _normal(value: Any) -> Any:  # JSON turns tuples into lists
    return list(value) if isinstance(value, (tuple, list)) else value


def _text(value: Any) -> str:  # a value as a flag spells it
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


# --- Flag parsing and flagfiles -----------------------------------------------------------


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with nested flagfiles and one-line errors (exit code 2)."""
    return cli.flags_parser(PROGRAM)(argv)


def fail_usage(message: str) -> NoReturn:
    """Ends tfascl-train with ``EXIT_USAGE`` and one line naming the problem."""
    cli.fail_usage(PROGRAM, message)


def flagfile_text(config: TrainConfig) -> str:
    """``config`` as a flagfile: ``tfascl-train --flagfile=F`` parses back to ``config``.

    One ``--name=value`` line per field; booleans as ``--name``/``--noname``, lists
    comma-joined, floats by ``repr`` (exact). A field left unset (None: chosen at run time)
    has no line, so it stays unset on replay; a comment names it.
    """
    lines = [
        f"# tfascl-train flags of this run, written {datetime.date.today().isoformat()}.",
        "# Replay or resume it: tfascl-train --flagfile=<this file> (later flags override).",
        "# Values resolved at run time (norm, jit_compile, ...) are in flags.json.",
    ]
    for field in dataclasses.fields(TrainConfig):
        value, name = getattr(config, field.name), flag_name(field.name)
        if value is None:
            lines.append(f"# --{name}: unset (its default)")
        elif isinstance(value, bool):
            lines.append(f"--{'' if value else 'no'}{name}")
        elif isinstance(value, (tuple, list)):
            lines.append(f"--{name}={','.join(map(str, value))}")
        else:
            lines.append(f"--{name}={value!r}" if isinstance(value, float) else f"--{name}={value}")
    return "\n".join(lines) + "\n"
