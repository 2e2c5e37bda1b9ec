"""A run on disk: what defines its model, and how to get the model back.

``model_dir/run.json`` holds a ``RunSpec`` (everything needed to rebuild the
model, plus the data statistics it was trained with); ``model_dir/checkpoints/``
holds ``tf.train.Checkpoint`` s of ``model.checkpoint()``. Training, evaluation
and export all go through this module, so they agree on the layout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfascl.models.registry import METHODS, build_backbone, build_model

SPEC_FILE = "run.json"
CHECKPOINT_SUBDIR = "checkpoints"
BEST_FILE = "best_checkpoint.txt"
BEST_INFO_FILE = "best_knn.json"
FLAGS_TEXT_FILE = "flags.txt"  # the run's flags as a flagfile: tfascl-train --flagfile=it
STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's record of its checkpoints
DAMAGED = "damaged"  # damaged files are moved into damaged/<time>/ beside them
_MANAGED = re.compile(r"^ckpt-(\d+)\.index$")


class RunFileError(ValueError):
    """A file of a run that cannot be read (truncated, not JSON, ...): one line naming it."""


def error_line(error: BaseException) -> str:
    """An error's message on one line, without TensorFlow's op decorations.

    ``{{function_node ...}}`` and ``[Op:SaveV2]`` go; an empty message becomes the
    error's type.
    """
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(error)).strip()
    text = re.sub(r"\s*\[Op:\w+\]$", "", text.splitlines()[0] if text else "")
    return text[:300] or type(error).__name__


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` to ``path`` through a temporary file in the same folder.

    A kill or a full disk leaves either the old file or the new one, never half of
    one: ``os.replace`` is atomic, and the temporary file is removed on failure.
    """
    path = Path(path)
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


def read_json_file(path: str | Path) -> Any:
    """The JSON content of ``path``.

    Raises:
        FileNotFoundError: no such file.
        RunFileError: one line naming the file, when it is not valid JSON (a kill or a
            full disk mid-write, an edit gone wrong).
    """
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFileError(f"{path} is damaged ({error_line(error)})") from None


def read_json_record(path: str | Path, damaged_note: str = "ignored") -> dict[str, Any]:
    """A small JSON record of a run (summary, best kNN); missing or damaged reads as empty.

    A damaged one is noted on stderr as ``<file error>; <damaged_note>``: it is rewritten
    later, so it costs nothing but the note.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        values = read_json_file(path)
    except RunFileError as error:
        _stderr(f"{error}; {damaged_note}")
        return {}
    return values if isinstance(values, dict) else {}


@dataclasses.dataclass
class RunSpec:
    """The model-defining settings of a run (not the optimizer or the schedule).

    ``target_temperature``/``momentum_schedule`` of ``None`` take the method's
    defaults (see ``tfascl.models.METHODS``); ``key_norm`` of ``None`` gives the
    momentum backbone the same normalisation as the online one (``norm``).
    """

    method: str = "ascl"
    backbone: str = "resnet18"
    backbone_width: int = 64
    image_size: int = 32
    stem: str | None = None
    norm: str = "split"
    key_norm: str | None = None
    num_splits: int = 8
    projector_dims: tuple[int, int] = (2048, 128)
    projector_bn: bool | None = None
    queue_size: int = 4096
    temperature: float = 0.1
    target_temperature: float | None = None
    num_neighbors: int = 1
    sce_lambda: float = 0.5
    symmetric: bool = False
    momentum: float = 0.99
    momentum_schedule: str | None = None
    total_steps: int | None = None
    batch_size: int | None = None
    dataset: str = "digits"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    num_classes: int | None = None

    def model_options(self) -> dict[str, Any]:
        """Keyword arguments of ``build_model`` for this method."""
        model_class = METHODS[self.method][0].__name__
        options: dict[str, Any] = {
            "momentum": self.momentum,
            "total_steps": self.total_steps,
            # The training statistics: model.embed and model.export normalise with them.
            "normalization": (tuple(self.mean), tuple(self.std)),
        }
        if self.momentum_schedule is not None:
            options["momentum_schedule"] = self.momentum_schedule
        if self.target_temperature is not None:
            options["target_temperature"] = self.target_temperature
        if self.method in ("ascl", "ahcl", "hard", "byol_ascl"):
            options["num_neighbors"] = self.num_neighbors
        if model_class == "MomentumContrast":
            options.update(
                queue_size=self.queue_size,
                temperature=self.temperature,
                sce_lambda=self.sce_lambda,
                batch_size=self.batch_size,
                symmetric=self.symmetric,
                # Shuffle BN: across replicas ("shuffle"), or inside the batch for
                # split BN; it does nothing for BN over the whole (synced) batch.
                shuffle_keys=self.norm in ("split", "shuffle") or self.key_norm == "split",
            )
        else:
            options["symmetric"] = self.symmetric
        return options

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
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}")
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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown RunSpec fields {unknown}")
        values = dict(values)
        for name in ("projector_dims", "mean", "std"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def save_spec(spec: RunSpec, model_dir: str | Path) -> Path:
    """Writes ``model_dir/run.json`` and returns its path."""
    path = Path(model_dir) / SPEC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, spec.to_json() + "\n")


def load_spec(model_dir: str | Path) -> RunSpec:
    """Reads ``model_dir/run.json``; a clear error if it is not a tfascl run.

    Raises:
        FileNotFoundError: no run.json.
        RunFileError: one line naming run.json, when it is damaged or not a RunSpec.
    """
    path = Path(model_dir) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a tfascl model_dir: no {SPEC_FILE} in it")
    values = read_json_file(path)
    try:
        if not isinstance(values, dict):
            raise TypeError(f"a JSON object expected, got {type(values).__name__}")
        return RunSpec.from_dict(values)
    except (TypeError, ValueError) as error:
        raise RunFileError(f"{path} is damaged ({error_line(error)})") from None


def checkpoint_dir(model_dir: str | Path) -> Path:
    return Path(model_dir) / CHECKPOINT_SUBDIR


def checkpoint_step(prefix: str | Path) -> int | None:
    """The number in a checkpoint's name (``ckpt-<step>``: the global step), or None."""
    try:
        return int(str(prefix).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def checkpoint_problem(prefix: str | Path) -> str | None:
    """Why the checkpoint at ``prefix`` cannot be read, or None when it reads back whole.

    Every tensor is read (the reader checks each one's CRC32C), so a truncated or
    corrupted data file or index is found before a restore half-applies it; the
    cost is one read of the checkpoint.
    """
    prefix = str(prefix)
    if not os.path.isfile(f"{prefix}.index"):
        return "its .index file is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
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
    path = Path(path)
    parts = [path] if path.is_file() else sorted(path.parent.glob(f"{path.name}.index"))
    parts += sorted(path.parent.glob(f"{path.name}.data-?????-of-?????"))
    if not parts:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, count = path.parent / DAMAGED / stamp, 1
    while any(folder.glob(f"{path.name}*")):  # the same name set aside twice this second
        count += 1
        folder = path.parent / DAMAGED / f"{stamp}-{count}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for part in parts:
            os.rename(part, folder / part.name)
    except OSError:
        return None
    return str(folder / path.name)


def _write_checkpoint_state(directory: Path, kept: list[str], old: Any) -> None:
    """Rewrites the manager's ``checkpoint`` file to list ``kept`` (oldest first)."""
    times = dict(zip(old.all_model_checkpoint_paths, old.all_model_checkpoint_timestamps))
    lines = [f'model_checkpoint_path: "{os.path.basename(kept[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(path)}"' for path in kept]
    if all(path in times for path in kept):
        lines += [f"all_model_checkpoint_timestamps: {times[path]!r}" for path in kept]
    if old.last_preserved_timestamp:
        lines.append(f"last_preserved_timestamp: {old.last_preserved_timestamp!r}")
    atomic_write_text(directory / STATE_FILE, "\n".join(lines) + "\n")


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
    directory = Path(directory)
    state = tf.train.get_checkpoint_state(str(directory))  # None when missing or damaged
    if state is not None and state.all_model_checkpoint_paths:
        listed = [str(directory / os.path.basename(p)) for p in state.all_model_checkpoint_paths]
    else:
        found = (_MANAGED.match(path.name) for path in directory.glob("ckpt-*.index"))
        listed = [str(directory / f"ckpt-{match[1]}") for match in found if match]
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
        where = os.path.relpath(os.path.dirname(moved), directory) if moved else None
        what = f"moved aside to {where}/" if moved else "left in place"
        using = f"using {os.path.basename(chosen)}" if chosen else "no readable checkpoint left"
        name = os.path.basename(prefix)
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
    pointer = Path(model_dir) / BEST_FILE
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text().strip()
        problem = None if re.fullmatch(r"[\w.-]+", name) else "not a checkpoint name"
    except (OSError, UnicodeDecodeError) as error:
        name, problem = "?", error_line(error)
    prefix = checkpoint_dir(model_dir) / name
    problem = problem or checkpoint_problem(prefix)
    if problem is None:
        return str(prefix)
    what = "left in place"
    if move_aside:
        set_aside(prefix)
        set_aside(Path(model_dir) / BEST_INFO_FILE)
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
        damaged = (Path(model_dir) / BEST_FILE).is_file() or any(
            Path(model_dir).glob(f"{DAMAGED}/*/{BEST_FILE}")
        )
        if path is None and damaged:
            path = newest_readable_checkpoint(directory, report=report)
            if path:
                report(f"{model_dir}: no readable best checkpoint; using {Path(path).name}")
    else:
        # A path as given (absolute, or relative to here), else a name in the folder.
        given = Path(which).is_absolute() or os.path.isfile(f"{which}.index")
        candidate = Path(which) if given else directory / which
        path = str(candidate) if os.path.isfile(f"{candidate}.index") else None
        problem = checkpoint_problem(candidate) if path else None
        if problem:
            raise RunFileError(f"{candidate} is unreadable ({problem})")
    if not path:
        raise FileNotFoundError(f"no {which!r} checkpoint in {directory}")
    return path


def restore_model(model_dir: str | Path, which: str = "latest") -> tuple[keras.Model, RunSpec, str]:
    """Rebuilds a run's model and loads its weights (encoders and queue; not the optimizer).

    Returns:
        ``(model, spec, checkpoint_path)``.

    Raises:
        ValueError: one line, when the checkpoint lacks weights of this model (e.g. it
            was written by another program), rather than going on with random ones.
    """
    spec = load_spec(model_dir)
    path = find_checkpoint(model_dir, which)
    model = spec.build_model()
    status = tf.train.Checkpoint(model=model).restore(path)
    status.expect_partial()  # the optimizer's slots are not wanted here
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        summary = str(error).split(",")[0]
        raise ValueError(f"{path} does not hold this run's model ({summary})") from None
    return model, spec, path
