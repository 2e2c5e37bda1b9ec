"""A run on disk: what defines its model, and how to get the model back.

``model_dir/run.json`` holds a ``RunSpec`` (everything needed to rebuild the
model, plus the data statistics it was trained with); ``model_dir/checkpoints/``
holds ``tf.train.Checkpoint`` s of ``model.checkpoint()``. Training, evaluation
and export all go through this module, so they agree on the layout.

``model_dir`` may be local or on any file system ``tf.io.gfile`` knows (``gs://``,
``ram://``, ...): every run file is read and written through the path and file
functions of ``tfascl.files`` (re-exported here: ``runs.join``, ``runs.exists``, ...)
and ``atomic_write_text``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import posixpath
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfascl._lazy import LazyModule
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
trackable_object_graph_pb2 = LazyModule("tensorflow.core.protobuf.trackable_object_graph_pb2")


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


# The names of a run folder (``model_dir``), here only: every module takes them from here.
SPEC_FILE = "run.json"  # the RunSpec: what rebuilds the model
FLAGS_FILE = "flags.json"  # the TrainConfig, compared with the flags of a resume
FLAGS_TEXT_FILE = "flags.txt"  # the same as a flagfile that replays the run
SUMMARY_FILE = "summary.json"  # how the last training process ended
METRICS_FILE = "metrics.jsonl"  # one JSON record a line, at the global step
METRICS_CSV_FILE = "metrics.csv"  # another program's metrics, which the plots read too
BEST_FILE = "best_checkpoint.txt"  # the name of the best kNN checkpoint
BEST_INFO_FILE = "best_knn.json"  # its kNN record
RESULTS_FILE = "results.json"  # evaluation results (also beside a SavedModel)
CHECKPOINT_SUBDIR = "checkpoints"
CHECKPOINT_NAME = "ckpt"  # checkpoints/ckpt-<step> (tf.train.CheckpointManager's default)
BEST_PREFIX = "best"  # checkpoints/best-<step>, the best kNN checkpoint's copy
STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's record of its checkpoints
EXPORT_SUBDIR = "export"  # the default export folder (TF Serving's base path)
TENSORBOARD_SUBDIR = "tensorboard"
PLOTS_SUBDIR = "plots"  # the default folder of tfascl-eval's pictures
DAMAGED = "damaged"  # damaged files are moved into damaged/<time>/ beside them
_MANAGED = re.compile(rf"^{CHECKPOINT_NAME}-(\d+)\.index$")


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


def checkpoint_dir(model_dir: str | Path) -> RunPath:
    return join(model_dir, CHECKPOINT_SUBDIR)


def checkpoint_step(prefix: str | Path | None) -> int | None:
    """The number in a checkpoint's name (``ckpt-<step>``: the global step), or None."""
    if not prefix:
        return None
    try:
        return int(str(prefix).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def checkpoint_reader(prefix: str | Path) -> Any:
    """The ``CheckpointReader`` of the checkpoint at ``prefix`` (a prefix, not a folder).

    Not ``tf.train.load_checkpoint``: it reads a folder's latest checkpoint when
    ``gfile.isdir(prefix)``, and ``ram://`` answers True for any prefix of a file name.
    """
    return tf.compat.v1.train.NewCheckpointReader(str(prefix))


def checkpoint_problem(prefix: str | Path) -> str | None:
    """Why the checkpoint at ``prefix`` cannot be read, or None when it reads back whole.

    Every tensor is read (the reader checks each one's CRC32C), so a truncated or
    corrupted data file or index is found before a restore half-applies it; the
    cost is one read of the checkpoint.
    """
    prefix = str(prefix)
    if not is_file(f"{prefix}.index"):
        return "its .index file is missing"
    try:
        reader = checkpoint_reader(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, OSError, RuntimeError) as error:
        return error_line(error)
    return None


def set_aside(path: str | Path) -> str | None:
    """Moves a damaged checkpoint (or run file) into ``damaged/<time>/`` beside it, kept.

    For a checkpoint prefix its ``.index`` and ``.data-*`` files move; another path
    moves as it is. Names are unchanged (``tf.train.load_checkpoint`` still opens the
    copy), and no pattern of the manager or of the best-copy cleanup reaches into the
    folder, so nothing deletes or restores them.

    Returns:
        The new prefix (or path), or None when there was nothing to move or the folder
        is read-only.
    """
    path, name = run_path(path), base_name(path)
    try:
        parts = [path] if is_file(path) else glob(parent(path), f"{name}.index")
        parts += glob(parent(path), f"{name}.data-?????-of-?????")
        if not parts:
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder, count = join(parent(path), DAMAGED, stamp), 1
        while glob(folder, f"{name}*"):  # the same name set aside twice this second
            count += 1
            folder = join(parent(path), DAMAGED, f"{stamp}-{count}")
        makedirs(folder)
        for part in parts:
            move(part, join(folder, base_name(part)))
    except OSError:
        return None
    return str(join(folder, name))


def _write_checkpoint_state(directory: RunPath, kept: list[str], old: Any) -> None:
    """Rewrites the manager's ``checkpoint`` file to list ``kept`` (oldest first)."""
    times = dict(zip(old.all_model_checkpoint_paths, old.all_model_checkpoint_timestamps))
    lines = [f'model_checkpoint_path: "{os.path.basename(kept[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(path)}"' for path in kept]
    if all(path in times for path in kept):
        lines += [f"all_model_checkpoint_timestamps: {times[path]!r}" for path in kept]
    if old.last_preserved_timestamp:
        lines.append(f"last_preserved_timestamp: {old.last_preserved_timestamp!r}")
    atomic_write_text(join(directory, STATE_FILE), "\n".join(lines) + "\n")


def newest_readable_checkpoint(
    directory: str | Path,
    *,
    move_aside: bool = True,
    report: Callable[[str], None] = _stderr,
) -> str | None:
    """The newest checkpoint of a ``CheckpointManager`` folder that reads back whole.

    Checkpoints are tried newest (highest step) first, among those the manager's
    ``checkpoint`` file lists (all ``ckpt-<step>`` files when that file is missing or
    damaged). Each unreadable one is reported in one line and, with ``move_aside``,
    moved into ``damaged/<time>/`` (kept, not deleted) and dropped from the
    ``checkpoint`` file, so the manager and ``tf.train.latest_checkpoint`` agree.

    Args:
        directory: the checkpoint folder.
        move_aside: rename damaged checkpoints (only the process that writes the run).
        report: takes each one-line report (default: stderr).

    Returns:
        The prefix, or None when there is no readable checkpoint.
    """
    directory = run_path(directory)
    state = tf.train.get_checkpoint_state(str(directory))  # None when missing or damaged
    if state is not None and state.all_model_checkpoint_paths:
        listed = [str(join(directory, base_name(p))) for p in state.all_model_checkpoint_paths]
    else:
        indexes = glob(directory, f"{CHECKPOINT_NAME}-*.index") if is_dir(directory) else []
        found = (_MANAGED.match(base_name(p)) for p in indexes)
        listed = [str(join(directory, f"{CHECKPOINT_NAME}-{match[1]}")) for match in found if match]
    listed.sort(key=lambda path: (checkpoint_step(path) is not None, checkpoint_step(path) or 0))
    chosen, damaged = None, []
    for prefix in reversed(listed):
        problem = checkpoint_problem(prefix)
        if problem is None:
            chosen = prefix
            break
        damaged.append((prefix, problem))
    for prefix, problem in damaged:
        moved = set_aside(prefix) if move_aside else None
        relpath = os.path.relpath if is_local(directory) else posixpath.relpath
        where = relpath(parent(moved), directory) if moved else None
        what = f"moved aside to {where}/" if moved else "left in place"
        using = f"using {base_name(chosen)}" if chosen else "no readable checkpoint left"
        name = base_name(prefix)
        report(f"{directory}: {name} is unreadable ({problem}); {what}; {using}")
    if damaged and move_aside and chosen is not None and state is not None:
        bad = {prefix for prefix, _ in damaged}
        _write_checkpoint_state(directory, [p for p in listed if p not in bad], state)
    return chosen


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


_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"  # the object graph a tf.train.Checkpoint saves
_UNMATCHED_COUNT = re.compile(r"Found (\d+) Python objects that were not bound")
_UNMATCHED_NAME = re.compile(r"path=([^,>\s]+)")


def _shape_mismatches(
    checkpoint: tf.train.Checkpoint, path: str | Path
) -> list[tuple[str, tuple, tuple]]:
    """``(variable, shape in the checkpoint, shape in the model)`` of each variable that
    both hold with different shapes, found before anything is restored.

    Walks the checkpoint's object graph beside the Python objects' (as a restore pairs
    them); empty when the checkpoint has no object graph (then the restore checks).
    """
    try:
        reader = checkpoint_reader(path)
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH))
        stored = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError):
        return []
    view = tf.train.TrackableView(checkpoint)
    found, seen = [], {id(checkpoint)}
    pending = [(checkpoint, 0)]
    for trackable, node_id in pending:  # breadth first: the first layers' variables first
        node = graph.nodes[node_id]
        for attribute in node.attributes:
            shape = stored.get(attribute.checkpoint_key)
            if attribute.name == "VARIABLE_VALUE" and shape is not None:
                mine = tuple(trackable.shape)
                if tuple(shape) != mine:
                    name = getattr(trackable, "path", None) or attribute.full_name
                    found.append((name, tuple(shape), mine))
        children = view.children(trackable)
        for child in node.children:
            python_child = children.get(child.local_name)
            if python_child is not None and id(python_child) not in seen:
                seen.add(id(python_child))
                pending.append((python_child, child.node_id))
    return found


def _mismatch_detail(error: BaseException) -> str:
    """What a failed restore found, in a few words (the model's variables it lacks)."""
    text = str(error)
    count = _UNMATCHED_COUNT.search(text)
    if count:
        names = sorted(set(_UNMATCHED_NAME.findall(text)))[:3]
        shown = f" ({', '.join(names)}, ...)" if names else ""
        return f"{count[1]} of the model's variables are not in it{shown}"
    return error_line(error)


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
    the objects may be partly restored then: discard them after the error.

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
    mismatches = [] if problem else _shape_mismatches(checkpoint, path)
    if mismatches:
        name, stored, mine = mismatches[0]
        more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        problem = f"{name} is {stored} in the checkpoint, {mine} in the model{more}"
    if problem is None:
        logger = tf.get_logger()
        level = logger.level
        try:
            status = checkpoint.restore(str(path))
            status.expect_partial()  # e.g. the optimizer's slots, for a model alone
            status.assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.OpError) as error:
            # A restore that raised warns about its unrestored values when collected:
            # not news after this error.
            logger.setLevel("ERROR")
            problem = _mismatch_detail(error)
        if problem is not None:
            try:
                gc.collect()
            finally:
                logger.setLevel(level)
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
