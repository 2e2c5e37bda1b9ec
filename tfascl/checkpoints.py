"""A checkpoint folder: which checkpoint reads back whole, the damaged ones set aside,
and whether a checkpoint holds a model's variables.

The folder is a ``tf.train.CheckpointManager``'s (``ckpt-<step>`` prefixes and its
``checkpoint`` state file) and may be local or on any file system ``tf.io.gfile`` knows;
every path goes through ``tfascl.files``. Nothing here knows a run: ``tfascl.runs``
(which re-exports these names) says which folder is a run's, which checkpoint is its
best, and which run a checkpoint belongs to.

A checkpoint is read whole once per process: ``checkpoint_problem`` reads every tensor
(checking each one's CRC32C) and remembers a checkpoint that read back whole by the
size and times of each of its files; the next check of the same unchanged files reads
nothing (a command resolves a checkpoint when it checks its flags and again when it
restores it). Only files last changed some seconds before the check are remembered: a
change within the file system's timestamp granularity (a byte rewritten in place right
after a save) could otherwise leave every time unchanged. Readers are not kept: one
holds its data files open, and a kept one would hold the disk space of a checkpoint the
manager deletes later.
"""

from __future__ import annotations

import gc
import os
import posixpath
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfascl._lazy import LazyModule
from tfascl.files import (
    RunPath,
    base_name,
    error_line,
    glob,
    is_dir,
    is_file,
    is_local,
    join,
    makedirs,
    move,
    parent,
    remove,
    run_path,
)

tf = LazyModule("tensorflow")
trackable_object_graph_pb2 = LazyModule("tensorflow.core.protobuf.trackable_object_graph_pb2")

# The names of a checkpoint folder (re-exported by tfascl.runs, where the run's own are).
CHECKPOINT_SUBDIR = "checkpoints"
CHECKPOINT_NAME = "ckpt"  # checkpoints/ckpt-<step> (tf.train.CheckpointManager's default)
BEST_PREFIX = "best"  # checkpoints/best-<step>, the best kNN checkpoint's copy
STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's record of its checkpoints
DAMAGED = "damaged"  # damaged files are moved into damaged/<time>/ beside them
_MANAGED = re.compile(rf"^{CHECKPOINT_NAME}-(\d+)\.index$")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def checkpoint_dir(model_dir: str | Path) -> RunPath:
    """A run's checkpoint folder, ``model_dir/checkpoints``."""
    return join(model_dir, CHECKPOINT_SUBDIR)


def checkpoint_step(prefix: str | Path | None) -> int | None:
    """The number in a checkpoint's name (``ckpt-<step>``: the global step), or None."""
    if not prefix:
        return None
    try:
        return int(str(prefix).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


# --- Reading a checkpoint once ---------------------------------------------------------

# prefix -> the signature of its files when it read back whole. Bounded: a process
# resolves one or two checkpoints (a training run may also check its best copy).
_WHOLE: dict[str, tuple] = {}
_WHOLE_LIMIT = 8
_SETTLED_SECONDS = 2.0  # more than any file system's timestamp granularity (FAT: 2 s)


def _signature(prefix: str) -> tuple | None:
    """The name, size and times of each file of the checkpoint at ``prefix`` (the last
    item of each: its newest time, in ns), or None when they cannot be told apart from a
    rewrite (a file system without modification times)."""
    try:
        data = glob(parent(prefix), f"{base_name(prefix)}.data-?????-of-?????")
        parts = [f"{prefix}.index", *sorted(str(p) for p in data)]
        if is_local(prefix):
            stats = [os.stat(part) for part in parts]
            return tuple(
                (part, s.st_ino, s.st_size, s.st_mtime_ns, max(s.st_mtime_ns, s.st_ctime_ns))
                for part, s in zip(parts, stats)
            )
        remote = [tf.io.gfile.stat(part) for part in parts]
    except (OSError, tf.errors.OpError):
        return None
    if any(not s.mtime_nsec for s in remote):  # e.g. ram://: a rewrite would look the same
        return None
    return tuple((part, s.length, s.mtime_nsec) for part, s in zip(parts, remote))


def _read_whole_before(prefix: str) -> bool:
    """Whether ``prefix`` read back whole in this process and its files have not changed."""
    signature = _WHOLE.get(prefix)
    if signature is None:
        return False
    if signature != _signature(prefix):
        del _WHOLE[prefix]
        return False
    return True


def _remember(prefix: str, signature: tuple | None, checked_at: float) -> None:
    """Remembers that ``prefix``, whose files had ``signature`` when a check started at
    ``checked_at`` (``time.time()``), read back whole, unless its files changed shortly
    before."""
    if (
        signature is None
        or checked_at - max(part[-1] for part in signature) / 1e9 < _SETTLED_SECONDS
    ):
        return
    _WHOLE.pop(prefix, None)
    while len(_WHOLE) >= _WHOLE_LIMIT:
        del _WHOLE[next(iter(_WHOLE))]  # the oldest
    _WHOLE[prefix] = signature


def checkpoint_reader(prefix: str | Path) -> Any:
    """The ``CheckpointReader`` of the checkpoint at ``prefix`` (a prefix, not a folder).

    Opening one reads the index only; a tensor is read when asked for.

    Not ``tf.train.load_checkpoint``: it reads a folder's latest checkpoint when
    ``gfile.isdir(prefix)``, and ``ram://`` answers True for any prefix of a file name.
    """
    return tf.compat.v1.train.NewCheckpointReader(str(prefix))


def checkpoint_problem(prefix: str | Path) -> str | None:
    """Why the checkpoint at ``prefix`` cannot be read, or None when it reads back whole.

    Every tensor is read (the reader checks each one's CRC32C), so a truncated or
    corrupted data file or index is found before a restore half-applies it; the
    cost is one read of the checkpoint, once per process for the same unchanged files.
    """
    prefix = str(prefix)
    if not is_file(f"{prefix}.index"):
        return "its .index file is missing"
    if _read_whole_before(prefix):
        return None
    checked_at, signature = time.time(), _signature(prefix)
    try:
        reader = checkpoint_reader(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, OSError, RuntimeError) as error:
        return error_line(error)
    _remember(prefix, signature, checked_at)
    return None


# --- Damaged checkpoints ---------------------------------------------------------------


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
    _WHOLE.pop(str(path), None)
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


def write_checkpoint_state(directory: str | Path, kept: list[str], old: Any) -> None:
    """Rewrites the manager's ``checkpoint`` file to list ``kept`` (oldest first).

    Through ``tf.compat.v1.train.update_checkpoint_state``, the manager's own writer:
    the file is written to ``checkpoint.tmp<uuid>`` and renamed over the old one where
    the file system renames atomically (locally), so a kill leaves the old file or the
    new one; an object store (``gs://``) is written directly, and an object appears
    whole. A write that fails (a full disk) leaves the old file, and its temporary file
    is removed here (TensorFlow removes it only when the rename fails).

    Args:
        directory: the checkpoint folder.
        kept: the prefixes still listed, oldest first; the last is the latest.
        old: the folder's ``CheckpointState`` before (its timestamps are kept).
    """
    directory = run_path(directory)
    times = dict(zip(old.all_model_checkpoint_paths, old.all_model_checkpoint_timestamps))
    stamps = [times[path] for path in kept] if all(path in times for path in kept) else None
    # Names relative to the folder, as the manager writes them (a run folder can move):
    # TensorFlow makes a path relative only when the folder itself is given relative.
    relative = not os.path.isabs(str(directory))
    names = [str(join(directory, base_name(p))) if relative else base_name(p) for p in kept]
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the v1 function's deprecation notice: it is the manager's writer
    try:
        tf.compat.v1.train.update_checkpoint_state(
            str(directory),
            names[-1],
            names,
            all_model_checkpoint_timestamps=stamps,
            last_preserved_timestamp=old.last_preserved_timestamp or None,
        )
    except (tf.errors.OpError, OSError):
        for temporary in glob(directory, f"{STATE_FILE}.tmp*"):
            remove(temporary)
        raise
    finally:
        logger.setLevel(level)


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
        kept = [p for p in listed if p not in bad]
        # The state's own spelling of each kept path, for its timestamps.
        spelled = {str(join(directory, base_name(p))): p for p in state.all_model_checkpoint_paths}
        write_checkpoint_state(directory, [spelled.get(p, p) for p in kept], state)
    return chosen


# --- Whether a checkpoint holds a model ------------------------------------------------

_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"  # the object graph a tf.train.Checkpoint saves
_UNMATCHED_COUNT = re.compile(r"Found (\d+) Python objects that were not bound")
_UNMATCHED_NAME = re.compile(r"path=([^,>\s]+)")


def shape_mismatches(
    checkpoint: tf.train.Checkpoint, path: str | Path
) -> list[tuple[str, tuple, tuple]]:
    """``(variable, shape in the checkpoint, shape in the model)`` of each variable that
    both hold with different shapes, found before anything is restored.

    Walks the checkpoint's object graph beside the Python objects' (as a restore pairs
    them); empty when the checkpoint has no object graph (then the restore checks). Reads
    the index and the object graph only.
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


def restore_problem(checkpoint: tf.train.Checkpoint, path: str | Path) -> str | None:
    """Restores ``path`` into ``checkpoint``; why it does not hold ``checkpoint``'s objects,
    or None when every one of their variables was restored.

    Shapes are compared first (``shape_mismatches``), and nothing is restored when one
    differs; a checkpoint that lacks some of the variables is found by the restore
    (``assert_existing_objects_matched``), and the objects may be partly restored then:
    discard them. What ``path`` holds beyond the objects (the optimizer's slots, for a
    model alone) is not read.

    Returns:
        ``None``, or a few words: the first shape that differs (and how many more), or
        how many of the objects' variables the checkpoint lacks.
    """
    mismatches = shape_mismatches(checkpoint, path)
    if mismatches:
        name, stored, mine = mismatches[0]
        more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        return f"{name} is {stored} in the checkpoint, {mine} in the model{more}"
    logger = tf.get_logger()
    level = logger.level
    problem = None
    try:
        status = checkpoint.restore(str(path))
        status.expect_partial()  # e.g. the optimizer's slots, for a model alone
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as error:
        # A restore that raised warns about its unrestored values when collected: not news
        # after this error.
        logger.setLevel("ERROR")
        problem = _mismatch_detail(error)
    if problem is not None:
        try:
            gc.collect()
        finally:
            logger.setLevel(level)
    return problem
