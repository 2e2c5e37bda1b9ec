"""``tfascl-export``: a run's online encoder as a versioned SavedModel, for TF Serving and transfer.

``export_backbone(model_dir, export_dir)`` restores the run's checkpoint and writes
the TF Serving layout::

    export_dir/
      1/                          <- one version; TF Serving serves the highest
        saved_model.pb
        variables/
        assets.extra/
          backbone.keras          <- the backbone alone, for Keras fine-tuning
          metadata.json           <- method, data statistics, dimensions, steps, run, ...

The SavedModel itself (its signatures, the ONNX and LiteRT files, the metadata) is
``tfascl.serving``'s, the writer ``model.export(path)`` uses too; its names are
importable from here as before (``tfascl.export.EmbeddingModule``, ...). This module
is the command: flags, the run and its checkpoint, version folders.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m tfascl.export: TensorFlow without its start-up lines
    import tfascl_launch  # the launcher above the package (see tfascl.train)

    tfascl_launch.quiet_tensorflow_import()

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from tfascl import cli, runs

# The serving library's names, importable from tfascl.export as before the split.
from tfascl.serving import (  # noqa: F401 (re-exported)
    BYTES_SIGNATURE,
    DEFAULT_SIGNATURE,
    EXTRA_DIR,
    FORMATS,
    IMAGE_MAGIC,
    KERAS_FILE,
    METADATA_FILE,
    ONNX_OPSET,
    PORTABLE_FILES,
    PREPROCESSED_SIGNATURE,
    SAVED_MODEL_FILE,
    EmbeddingModule,
    check_formats,
    check_images,
    decode_images,
    export_model,
    plain_batchnorm,
    preprocess,
    write_in_place,
    write_litert,
    write_onnx,
    write_serving_model,
)

# Where Keras 3 optimizers keep their step counter in a tf.train.Checkpoint of
# ``model.checkpoint()`` (the optimizer is the checkpoint's "optimizer" child).
ITERATIONS_KEY = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def next_version(export_dir: str | Path) -> int:
    """1, or one more than the highest integer-named directory in ``export_dir``."""
    directory = runs.run_path(export_dir)
    versions = (
        [int(runs.base_name(p)) for p in runs.glob(directory, "*") if _is_version(p)]
        if runs.is_dir(directory)
        else []
    )
    return max(versions, default=0) + 1


def _is_version(path: runs.RunPath) -> bool:
    return runs.base_name(path).isdigit() and runs.is_dir(path)


def training_steps(checkpoint_path: str) -> int | None:
    """The optimizer's step counter stored in a checkpoint; ``None`` if it has none."""
    reader = runs.checkpoint_reader(checkpoint_path)
    if not reader.has_tensor(ITERATIONS_KEY):
        return None
    return int(reader.get_tensor(ITERATIONS_KEY))


def export_backbone(
    model_dir: str | Path,
    export_dir: str | Path,
    *,
    checkpoint: str = "latest",
    version: int | None = None,
    overwrite: bool = False,
    formats: Sequence[str] = ("saved_model",),
) -> runs.RunPath:
    """Exports a run's online encoder as ``export_dir/<version>/`` (see the module doc).

    The version is written to a hidden directory beside it and renamed into place
    when complete, so a TF Serving instance watching ``export_dir`` never loads a
    half-written version.

    Args:
        model_dir: the run's directory (``run.json`` and ``checkpoints/``).
        export_dir: the model's base path for TF Serving.
        checkpoint: ``"latest"``, ``"best"`` or a checkpoint name/path.
        version: the version number; default one more than the highest present (1 at first).
        overwrite: replace an existing version instead of failing.
        formats: ``"saved_model"`` (always) and any of ``"onnx"``, ``"litert"``.

    Returns:
        The version directory (a ``Path``, or a URL for another file system).

    Raises:
        FileNotFoundError: no ``run.json`` or no such checkpoint.
        FileExistsError: the version exists and ``overwrite`` is off.
        ValueError: a negative or non-integer version, or an unknown format.
        runs.CheckpointMismatch: (a ValueError) the checkpoint does not hold this run's
            model: another run's, method or width.
    """
    # Everything that can fail cheaply is checked before the model is built.
    formats = check_formats(formats)
    spec = runs.load_spec(model_dir)
    checkpoint_path = runs.find_checkpoint(model_dir, checkpoint)
    export_dir = runs.run_path(export_dir)
    if version is None:
        version = next_version(export_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    target = runs.join(export_dir, str(version))
    if runs.exists(target) and not overwrite:
        raise FileExistsError(
            f"{target} already exists: choose another version or pass overwrite=True (--overwrite)"
        )

    # The whole model is restored, so a checkpoint of another run, method or width is
    # refused (one line) rather than exported with random or partly restored weights.
    model = runs.load_model(spec, checkpoint_path)
    metadata = {
        "method": spec.method,
        "dataset": spec.dataset,
        "backbone": spec.backbone,
        "training_steps": training_steps(checkpoint_path),
        "checkpoint": str(
            Path(checkpoint_path).resolve() if runs.is_local(checkpoint_path) else checkpoint_path
        ),
        "version": version,
        "run": json.loads(spec.to_json()),
    }
    write_in_place(
        target,
        lambda staging: write_serving_model(
            staging,
            model.backbone,
            model.projector,
            spec.image_size,
            spec.mean,
            spec.std,
            metadata,
            formats,
        ),
    )
    return target


PROGRAM = "tfascl-export"


@dataclasses.dataclass(frozen=True)
class ExportFlags:
    """tfascl-export's flags: each field is one, with its type, default and help."""

    model_dir: str | None = cli.flag_field(None, "The run's directory (run.json, checkpoints/).")
    export_dir: str | None = cli.flag_field(
        None,
        "Base path of the export (TF Serving's model_base_path); default <model_dir>/export.",
    )
    checkpoint: str = cli.flag_field("latest", "latest, best, or a checkpoint name/path.")
    version: int | None = cli.flag_field(None, "Version number; default the next free one.")
    overwrite: bool = cli.flag_field(False, "Replace an existing version.")
    formats: tuple[str, ...] = cli.flag_field(
        ("saved_model",),
        "What to write: saved_model (always), onnx (assets.extra/model.onnx, needs "
        "tfascl[onnx]), litert (assets.extra/model.tflite).",
    )


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagValues:
    """Defines tfascl-export's flags, one per ``ExportFlags`` field, in ``flag_values``
    (once; again does nothing).

    Called when the command starts, not at import: importing tfascl.export into another
    absl program must not clash with its flags.

    Returns:
        ``flag_values``.
    """
    return cli.define_flags_from(ExportFlags, flag_values)


# What each portable format needs installed, and the extra that brings it.
FORMAT_MODULES = {"onnx": ("tf2onnx", "tfascl[onnx]")}


def check_flags(values: flags.FlagValues) -> str:
    """Every flag checked before the model is built; the export directory.

    Raises:
        FlagError: one line naming the flag.
    """
    import importlib.util

    require = cli.require
    require(values.model_dir is not None, "--model_dir: required (a training run's folder)")
    version = values.version
    require(version is None or version >= 0, f"--version={version}: must be >= 0")
    try:
        formats = check_formats(values.formats)
    except ValueError as error:
        raise cli.FlagError(f"--formats={','.join(values.formats)}: {error}") from None
    for name in formats:
        module, extra = FORMAT_MODULES.get(name, (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise cli.FlagError(f"--formats={name}: needs {module}: pip install '{extra}'")
    # Then the files the flags name.
    cli.check_run_dir(values.model_dir)
    try:
        runs.load_spec(values.model_dir)
    except ValueError as error:  # a damaged run.json
        raise cli.FlagError(f"--model_dir={values.model_dir}: {error}") from None
    try:
        runs.find_checkpoint(values.model_dir, values.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        raise cli.FlagError(f"--checkpoint={values.checkpoint}: {error}") from None
    export_dir = values.export_dir or str(runs.join(values.model_dir, runs.EXPORT_SUBDIR))
    target = runs.join(export_dir, str(next_version(export_dir) if version is None else version))
    require(
        values.overwrite or not runs.exists(target),
        f"--version={runs.base_name(target)}: {target} already exists; choose another --version or "
        "pass --overwrite",
    )
    return export_dir


def main(argv: Sequence[str]) -> None:
    """The ``tfascl-export`` app: exports and prints the version directory.

    Exit status 2 and one line for a usage error (found before the model is built), 1
    and one line when the export itself fails (a converter, a full disk).
    """
    cli.no_arguments(PROGRAM, argv)
    values = flags.FLAGS
    try:
        export_dir = check_flags(values)
    except cli.FlagError as error:
        cli.fail_usage(PROGRAM, str(error))
    try:
        path = export_backbone(
            values.model_dir,
            export_dir,
            checkpoint=values.checkpoint,
            version=values.version,
            overwrite=values.overwrite,
            formats=values.formats,
        )
    except (OSError, ValueError, ImportError) as error:
        cli.fail_run(PROGRAM, runs.error_line(error))
    print(path)


def run() -> None:
    """Console script ``tfascl-export``."""
    cli.run_app(PROGRAM, define_flags, main)


if __name__ == "__main__":
    run()
