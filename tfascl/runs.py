"""A run on disk: what defines its model, and how to get the model back.

``model_dir/run.json`` holds a ``RunSpec`` (everything needed to rebuild the
model, plus the data statistics it was trained with); ``model_dir/checkpoints/``
holds ``tf.train.Checkpoint`` s of ``model.checkpoint()``. Training, evaluation
and export all go through this module, so they agree on the layout.

``model_dir`` may be local or on any file system ``tf.io.gfile`` knows (``gs://``,
``ram://``, ...): every run file is read and written through the path and file
functions of ``tfascl.files`` (re-exported here: ``runs.join``, ``runs.exists``, ...)
and ``atomic_write_text``. A checkpoint folder's own work (which checkpoint reads back
whole, damaged ones set aside, whether a checkpoint holds a model) is
``tfascl.checkpoints``', re-exported here; this module says which checkpoint of a run
(``find_checkpoint``: latest, best or named) and restores a run's model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfascl._lazy import LazyModule
from tfascl.checkpoints import (  # noqa: F401 (re-exported: runs.find_checkpoint's helpers, ...)
    BEST_PREFIX,
    CHECKPOINT_NAME,
    CHECKPOINT_SUBDIR,
    DAMAGED,
    STATE_FILE,
    checkpoint_dir,
    checkpoint_problem,
    checkpoint_reader,
    checkpoint_step,
    newest_readable_checkpoint,
    restore_problem,
    set_aside,
    shape_mismatches,
    write_checkpoint_state,
)
from tfascl.files import (  # noqa: F401 (re-exported: runs.join, runs.exists, ...)
    RunPath,
    append_text,
    base_name,
    copy_tree,
    error_line,
    exists,
    gfile_replace,
    glob,
    is_dir,
    is_file,
    is_local,
    join,
    makedirs,
    move,
    parent,
    read_bytes,
    read_text,
    remove,
    remove_tree,
    run_path,
    write_bytes,
)
from tfascl.options import OPTIONS, MethodOptions, model_keywords

# TensorFlow, Keras and the model registry load on first use: RunSpec, the file names and
# the path helpers serve tfascl-train's flag definitions before TensorFlow starts.
keras = LazyModule("keras")
tf = LazyModule("tensorflow")


def build_backbone(*args: Any, **kwargs: Any) -> Any:
    """``tfascl.models.registry.build_backbone`` (imported when first called)."""
    from tfascl.models.registry import build_backbone

    return build_backbone(*args, **kwargs)


def build_model(*args: Any, **kwargs: Any) -> Any:
    """``tfascl.models.registry.build_model`` (imported when first called)."""
    from tfascl.models.registry import build_model

    return build_model(*args, **kwargs)


def method_spec(*args: Any, **kwargs: Any) -> Any:
    """``tfascl.models.registry.method_spec`` (imported when first called)."""
    from tfascl.models.registry import method_spec

    return method_spec(*args, **kwargs)


# The names of a run folder (``model_dir``), here only: every module takes them from here
# (those inside its checkpoint folder are tfascl.checkpoints', re-exported above).
SPEC_FILE = "run.json"  # the RunSpec: what rebuilds the model
FLAGS_FILE = "flags.json"  # the TrainConfig, compared with the flags of a resume
FLAGS_TEXT_FILE = "flags.txt"  # the same as a flagfile that replays the run
SUMMARY_FILE = "summary.json"  # how the last training process ended
METRICS_FILE = "metrics.jsonl"  # one JSON record a line, at the global step
METRICS_CSV_FILE = "metrics.csv"  # another program's metrics, which the plots read too
BEST_FILE = "best_checkpoint.txt"  # the name of the best kNN checkpoint
BEST_INFO_FILE = "best_knn.json"  # its kNN record
RESULTS_FILE = "results.json"  # evaluation results (also beside a SavedModel)
EXPORT_SUBDIR = "export"  # the default export folder (TF Serving's base path)
TENSORBOARD_SUBDIR = "tensorboard"
PLOTS_SUBDIR = "plots"  # the default folder of tfascl-eval's pictures


class RunFileError(ValueError):
    """A file of a run that cannot be read (truncated, not JSON, ...): one line naming it."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- Run files on any file system ---------------------------------------------------------
# The path and file functions (``is_local``, ``join``, ``glob``, ``read_bytes``, ...) are
# tfascl.files', imported above; run files are written through ``atomic_write_text``.


def atomic_write_text(path: str | Path, text: str) -> RunPath:
    """Writes ``text`` to ``path`` through a temporary file in the same folder.

    A kill or a full disk leaves either the old file or the new one, never half of
    one: locally ``os.replace`` is atomic, and the temporary file is removed on
    failure. On another file system the temporary file is renamed over ``path``
    with ``tf.io.gfile.rename(overwrite=True)``: on an object store (``gs://``) that
    is a copy and a delete, still never half a file, since an object appears whole.
    """
    path = run_path(path)
    if not is_local(path):
        gfile_replace(path, text.encode("utf-8"))
        return path
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, values: Any) -> RunPath:
    """Writes ``values`` as indented JSON with sorted keys, atomically (``atomic_write_text``)."""
    return atomic_write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def read_json_file(path: str | Path) -> Any:
    """The JSON content of ``path``.

    Raises:
        FileNotFoundError: no such file.
        RunFileError: one line naming the file, when it is not valid JSON (a kill or a
            full disk mid-write, an edit gone wrong).
    """
    try:
        return json.loads(read_bytes(path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFileError(f"{path} is damaged ({error_line(error)})") from None


def read_json_record(path: str | Path, damaged_note: str = "ignored") -> dict[str, Any]:
    """A small JSON record of a run (summary, best kNN); missing or damaged reads as empty.

    A damaged one is noted on stderr as ``<file error>; <damaged_note>``: it is rewritten
    later, so it costs nothing but the note.
    """
    if not is_file(path):
        return {}
    try:
        values = read_json_file(path)
    except RunFileError as error:
        _stderr(f"{error}; {damaged_note}")
        return {}
    return values if isinstance(values, dict) else {}


@dataclasses.dataclass
class RunSpec(MethodOptions):
    """The model-defining settings of a run (not the optimizer or the schedule).

    The options (backbone, projector, τ, τ′, K, queue, momentum, relabel, ...) are the
    fields of ``MethodOptions``, declared once in ``tfascl.options`` with their defaults:
    None takes the method's (its ``tfascl.models.MethodSpec``). ``key_norm`` of None gives
    the momentum backbone the same normalisation as the online one. The fields declared
    here are the run's facts: what it measured or resolved.

    These defaults are also ``TrainConfig``'s, so ``RunSpec(method=m)`` builds the model
    ``tfascl-train --method=m`` builds on one device.
    """

    method: str = "ascl"
    # tfascl-train's --norm is None until the replicas are known (train_config.check_replicas).
    norm: str = "split"
    total_steps: int | None = None
    batch_size: int | None = None
    dataset: str = "digits"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    num_classes: int | None = None

    def model_options(self) -> dict[str, Any]:
        """Keyword arguments of ``build_model`` for this method (``build_model`` drops
        those its model class does not take): every model and method option set (see
        ``tfascl.options``), and what the run resolved."""
        method_spec(self.method)
        return {
            "total_steps": self.total_steps,
            # The training statistics: model.embed and model.export normalise with them.
            "normalization": (tuple(self.mean), tuple(self.std)),
            "batch_size": self.batch_size,
            # Shuffle BN: across replicas ("shuffle"), or inside the batch for
            # split BN; it does nothing for BN over the whole (synced) batch.
            "shuffle_keys": self.norm in ("split", "shuffle") or self.key_norm == "split",
            **model_keywords(self),
        }

    def build_backbone(self, norm: str | None = None) -> keras.Model:
        """The online backbone, or with ``norm`` another one of the same architecture."""
        return build_backbone(
            self.backbone,
            self.image_size,
            self.backbone_width,
            stem=self.stem,
            norm=norm or self.norm,
            num_splits=self.num_splits,
        )

    def build_model(self, **overrides: Any) -> keras.Model:
        """The uncompiled model; ``overrides`` go to the model class (e.g. ``views``)."""
        method_spec(self.method)  # a clear error for an unknown method, before any building
        if self.key_norm is not None and self.key_norm != self.norm:
            # e.g. SCE's CIFAR config: split BN in the momentum trunk only.
            overrides = {"key_backbone": self.build_backbone(self.key_norm), **overrides}
        return build_model(
            self.method,
            self.build_backbone(),
            projector_dims=tuple(self.projector_dims),
            projector_bn=self.projector_bn,
            norm=self.norm,
            num_splits=self.num_splits,
            **{**self.model_options(), **overrides},
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSpec:
        """The ``RunSpec`` of a run.json's object (JSON lists back to tuples).

        The run.json of every release so far has these field names (the options kept
        theirs when ``tfascl.options`` took over their declaration).

        Raises:
            ValueError: a field ``RunSpec`` does not have.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown RunSpec fields {unknown}")
        values = dict(values)
        pairs = [option.name for option in OPTIONS if option.kind == "pair"]
        for name in (*pairs, "mean", "std"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


def save_spec(spec: RunSpec, model_dir: str | Path) -> RunPath:
    """Writes ``model_dir/run.json`` and returns its path."""
    makedirs(model_dir)
    return atomic_write_text(join(model_dir, SPEC_FILE), spec.to_json() + "\n")


def load_spec(model_dir: str | Path) -> RunSpec:
    """Reads ``model_dir/run.json``; a clear error if it is not a tfascl run.

    Raises:
        FileNotFoundError: no run.json.
        RunFileError: one line naming run.json, when it is damaged or not a RunSpec.
    """
    path = join(model_dir, SPEC_FILE)
    if not is_file(path):
        raise FileNotFoundError(f"{model_dir} is not a tfascl model_dir: no {SPEC_FILE} in it")
    values = read_json_file(path)
    try:
        if not isinstance(values, dict):
            raise TypeError(f"a JSON object expected, got {type(values).__name__}")
        return RunSpec.from_dict(values)
    except (TypeError, ValueError) as error:
        raise RunFileError(f"{path} is damaged ({error_line(error)})") from None


def best_checkpoint(
    model_dir: str | Path,
    *,
    move_aside: bool = True,
    report: Callable[[str], None] = _stderr,
) -> str | None:
    """The checkpoint ``best_checkpoint.txt`` names, when it reads back whole.

    An unreadable best checkpoint is reported in one line and, with ``move_aside``,
    moved into ``damaged/<time>/`` together with ``best_checkpoint.txt`` and
    ``best_knn.json``: the run has no best any more, and training records a new one
    at its next kNN evaluation.

    Returns:
        The prefix, or None when there is no best checkpoint or it is damaged.
    """
    pointer = join(model_dir, BEST_FILE)
    if not is_file(pointer):
        return None
    try:
        name = read_text(pointer).strip()
        problem = None if re.fullmatch(r"[\w.-]+", name) else "not a checkpoint name"
    except (OSError, UnicodeDecodeError) as error:
        name, problem = "?", error_line(error)
    prefix = join(checkpoint_dir(model_dir), name)
    problem = problem or checkpoint_problem(prefix)
    if problem is None:
        return str(prefix)
    what = "left in place"
    if move_aside:
        set_aside(prefix)
        set_aside(join(model_dir, BEST_INFO_FILE))
        moved = set_aside(pointer)
        what = f"moved aside with {BEST_FILE} to {DAMAGED}/" if moved else what
    report(f"{model_dir}: the best checkpoint {name} is unreadable ({problem}); {what}")
    return None


def find_checkpoint(
    model_dir: str | Path, which: str = "latest", report: Callable[[str], None] = _stderr
) -> str:
    """The checkpoint prefix of ``which``: ``"latest"``, ``"best"`` or a name/path.

    ``latest`` is the newest checkpoint that reads back whole: damaged newer ones are
    reported and set aside (``newest_readable_checkpoint``). A damaged ``best`` is set
    aside too, and the newest readable checkpoint is used instead (reported).

    Raises:
        FileNotFoundError: one line naming the directory, when there is none.
        RunFileError: one line, when a checkpoint named explicitly is unreadable.
    """
    directory = checkpoint_dir(model_dir)
    if which == "latest":
        path = newest_readable_checkpoint(directory, report=report)
    elif which == "best":
        path = best_checkpoint(model_dir, report=report)
        # A pointer still there (read-only folder) or set aside: the best was damaged.
        damaged = is_file(join(model_dir, BEST_FILE)) or bool(
            glob(model_dir, f"{DAMAGED}/*/{BEST_FILE}")
        )
        if path is None and damaged:
            path = newest_readable_checkpoint(directory, report=report)
            if path:
                report(f"{model_dir}: no readable best checkpoint; using {base_name(path)}")
    else:
        # A path as given (absolute, or relative to here), else a name in the folder.
        given = not is_local(which) or Path(which).is_absolute() or is_file(f"{which}.index")
        candidate = run_path(which) if given else join(directory, which)
        path = str(candidate) if is_file(f"{candidate}.index") else None
        problem = checkpoint_problem(candidate) if path else None
        if problem:
            raise RunFileError(f"{candidate} is unreadable ({problem})")
    if not path:
        raise FileNotFoundError(f"no {which!r} checkpoint in {directory}")
    return path


class CheckpointMismatch(RunFileError):
    """A readable checkpoint that does not hold the run's model: one line naming both."""


def describe_model(spec: RunSpec) -> str:
    """The model of ``spec`` in a few words, for messages: ``ascl, resnet18 width 64, 32 px``."""
    return f"{spec.method}, {spec.backbone} width {spec.backbone_width}, {spec.image_size} px"


def _other_run(path: str | Path, spec: RunSpec) -> str | None:
    """A mismatch that the variables cannot show: the checkpoint is another run's, and
    that run's ``run.json`` names another method (ASCL and MoCo have the same weights)."""
    folder = parent(path)
    if base_name(folder) != CHECKPOINT_SUBDIR or not is_file(join(parent(folder), SPEC_FILE)):
        return None
    try:
        other = load_spec(parent(folder))
    except (OSError, RunFileError):
        return None  # not ours to judge: the variables are still checked
    if other.method == spec.method:
        return None
    return f"its run ({join(parent(folder), SPEC_FILE)}) is {other.method}, not {spec.method}"


def restore_checkpoint(
    checkpoint: tf.train.Checkpoint, path: str | Path, spec: RunSpec | None = None
) -> None:
    """Restores ``path`` into ``checkpoint``, after checking that it holds the same model.

    The one restore of training (the whole state), evaluation and export (the model).
    Every variable of ``checkpoint``'s objects must be in ``path`` with its shape; what
    ``path`` holds beyond them (the optimizer's slots, for a model alone) is not read.

    Shapes are compared before anything is restored; a checkpoint that lacks some of the
    model's variables is found by the restore (``assert_existing_objects_matched``), and
    the objects may be partly restored then: discard them after the error
    (``tfascl.checkpoints.restore_problem``).

    Args:
        checkpoint: the objects to fill, e.g. ``tf.train.Checkpoint(model=model)`` or
            ``model.checkpoint()``.
        path: a checkpoint prefix.
        spec: the run's spec, named in the error (and compared with the ``run.json`` of
            the checkpoint's own run, when it is another run's).

    Raises:
        CheckpointMismatch: one line naming the checkpoint, the model and the first
            difference found (a variable's shape, missing variables, another method).
    """
    what = f"this run's model ({describe_model(spec)})" if spec else "this model"
    problem = _other_run(path, spec) if spec else None
    problem = problem or restore_problem(checkpoint, path)
    if problem is not None:
        raise CheckpointMismatch(f"{path} does not hold {what}: {problem}")


def load_model(spec: RunSpec, path: str | Path) -> keras.Model:
    """``spec``'s model with the weights of checkpoint ``path`` (encoders and queue; not the
    optimizer). ``path`` is used as given: find it with ``find_checkpoint``.

    Raises:
        CheckpointMismatch: the checkpoint does not hold this model (``restore_checkpoint``).
    """
    model = spec.build_model()
    restore_checkpoint(tf.train.Checkpoint(model=model), path, spec)
    return model


def restore_model(model_dir: str | Path, which: str = "latest") -> tuple[keras.Model, RunSpec, str]:
    """Rebuilds a run's model and loads its weights (encoders and queue; not the optimizer).

    Args:
        model_dir: the run's folder.
        which: ``"latest"``, ``"best"`` or a checkpoint name/path (``find_checkpoint``).

    Returns:
        ``(model, spec, checkpoint_path)``.

    Raises:
        FileNotFoundError: no run.json, or no such checkpoint.
        RunFileError: a damaged run.json or named checkpoint.
        CheckpointMismatch: one line, when the checkpoint does not hold this run's model
            (another run's, another method or width, another program's), rather than
            going on with random or partly restored weights.
    """
    spec = load_spec(model_dir)
    path = find_checkpoint(model_dir, which)
    return load_model(spec, path), spec, path
