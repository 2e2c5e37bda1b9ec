"""Files and folders on any file system: local paths, or whatever ``tf.io.gfile`` knows.

The file layer of run folders (``tfascl.runs``) and of the serving export
(``tfascl.serving``): a leaf that imports nothing of tfascl but the plain-Python
``_lazy``, so any layer may use it.
``tfascl.runs`` re-exports every name (``runs.join``, ``runs.exists``, ...), and run
files are written through ``runs.atomic_write_text``, which is built on these.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from tfascl._lazy import LazyModule

# TensorFlow loads when a remote (gfile) path is first used: local paths and the flag
# checks of the commands never start it.
tf = LazyModule("tensorflow")


def error_line(error: BaseException) -> str:
    """An error's message on one line, without TensorFlow's op decorations.

    ``{{function_node ...}}`` and ``[Op:SaveV2]`` go; an empty message becomes the
    error's type.
    """
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(error)).strip()
    text = re.sub(r"\s*\[Op:\w+\]$", "", text.splitlines()[0] if text else "")
    return text[:300] or type(error).__name__


# --- Run folders on any file system ---------------------------------------------------------
# A run folder is local (a ``Path``: ``os`` and ``pathlib`` as always, atomic ``os.replace``)
# or on another file system that ``tf.io.gfile`` knows (``gs://``, ``s3://``, ``hdfs://``,
# TensorFlow's in-memory ``ram://``): a ``str`` then, since pathlib folds ``gs://b`` into
# ``gs:/b``. Every module reads and writes run files through these few functions, so the
# choice is made here once. gfile's errors are raised as the ``OSError`` s the local calls
# raise, so callers catch one kind. On an object store a rename is a copy and a delete: a
# reader may see both names for a moment, never half a file (an object appears whole).

RunPath = Path | str  # a local Path, or a remote URL as a str


def is_local(path: str | Path) -> bool:
    """True for a path of this machine's file system (no ``scheme://``)."""
    return "://" not in str(path)


def run_path(path: str | Path) -> RunPath:
    """``path`` as this module's functions take it: a ``Path`` when local, else the URL."""
    return Path(path) if is_local(path) else str(path).rstrip("/")


def join(path: str | Path, *names: str) -> RunPath:
    """``path/name/...``: a ``Path`` when local, a ``str`` for a remote folder."""
    if is_local(path):
        return Path(path).joinpath(*names)
    return posixpath.join(str(path).rstrip("/"), *names)


def parent(path: str | Path) -> RunPath:
    """The folder holding ``path``."""
    return Path(path).parent if is_local(path) else posixpath.dirname(str(path).rstrip("/"))


def base_name(path: str | Path) -> str:
    """The last component of ``path`` (``Path.name``)."""
    return Path(path).name if is_local(path) else posixpath.basename(str(path).rstrip("/"))


# gfile's errors by name (``tf.errors.<name>``), read when one is raised: TensorFlow is
# loaded by then.
_GFILE_ERRORS: tuple[tuple[str, type, int], ...] = (
    ("NotFoundError", FileNotFoundError, errno.ENOENT),
    ("AlreadyExistsError", FileExistsError, errno.EEXIST),
    ("PermissionDeniedError", PermissionError, errno.EACCES),
)


@contextlib.contextmanager
def _gfile_errors(path: str | Path) -> Iterator[None]:
    """gfile's ``OpError`` s as the ``OSError`` s of the local calls (one line each)."""
    try:
        yield
    except tf.errors.OpError as error:
        kind, code = next(
            (
                (kind, code)
                for op, kind, code in _GFILE_ERRORS
                if isinstance(error, getattr(tf.errors, op))
            ),
            (OSError, errno.EIO),
        )
        raise kind(code, error_line(error), str(path)) from None


def exists(path: str | Path) -> bool:
    """Whether ``path`` exists (a file or a folder)."""
    if is_local(path):
        return os.path.exists(path)
    with _gfile_errors(path):
        return tf.io.gfile.exists(str(path))


def is_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder."""
    if is_local(path):
        return os.path.isdir(path)
    with _gfile_errors(path):
        return tf.io.gfile.isdir(str(path))


def is_file(path: str | Path) -> bool:
    """Whether ``path`` is a file (not a folder)."""
    if is_local(path):
        return os.path.isfile(path)
    with _gfile_errors(path):
        return tf.io.gfile.exists(str(path)) and not tf.io.gfile.isdir(str(path))


def makedirs(path: str | Path) -> None:
    """Creates the folder ``path`` and its parents; nothing when it exists."""
    if is_local(path):
        Path(path).mkdir(parents=True, exist_ok=True)
        return
    with _gfile_errors(path):
        tf.io.gfile.makedirs(str(path))


def glob(folder: str | Path, pattern: str) -> list[RunPath]:
    """The paths in ``folder`` that match ``pattern`` (``*``, ``?``, ``[...]``), sorted."""
    if is_local(folder):
        return sorted(Path(folder).glob(pattern))
    with _gfile_errors(folder):
        return sorted(tf.io.gfile.glob(join(folder, pattern)))


def remove(path: str | Path) -> None:
    """Deletes the file ``path``; nothing when there is none."""
    if is_local(path):
        Path(path).unlink(missing_ok=True)
        return
    with contextlib.suppress(FileNotFoundError), _gfile_errors(path):
        tf.io.gfile.remove(str(path))


def remove_tree(path: str | Path) -> None:
    """Deletes the folder ``path`` and everything in it, ignoring errors (a cleanup)."""
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(tf.errors.OpError):
        if tf.io.gfile.isdir(str(path)):
            tf.io.gfile.rmtree(str(path))


def move(source: str | Path, target: str | Path) -> None:
    """Renames the file ``source`` to ``target`` (its folder must exist locally).

    Raises:
        OSError: the move failed (``FileExistsError`` when a remote ``target`` exists).
    """
    if is_local(source) and is_local(target):
        os.rename(source, target)
        return
    with _gfile_errors(source):
        tf.io.gfile.rename(str(source), str(target))


def read_bytes(path: str | Path) -> bytes:
    """The content of the file ``path``."""
    if is_local(path):
        return Path(path).read_bytes()
    with _gfile_errors(path), tf.io.gfile.GFile(str(path), "rb") as stream:
        return stream.read()


def read_text(path: str | Path) -> str:
    """The content of the file ``path`` as UTF-8 text."""
    return read_bytes(path).decode("utf-8")


def append_text(path: str | Path, text: str) -> None:
    """Adds ``text`` at the end of ``path`` (created when missing).

    On an object store an append rewrites the whole object (gfile's appendable file).
    """
    if is_local(path):
        with open(path, "a") as stream:
            stream.write(text)
        return
    with _gfile_errors(path), tf.io.gfile.GFile(str(path), "a") as stream:
        stream.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to ``path``: locally as it is (for files nobody reads mid-write),
    elsewhere through a temporary file (``atomic_write_text``)."""
    if is_local(path):
        Path(path).write_bytes(data)
        return
    gfile_replace(path, data)


def gfile_replace(path: str, data: bytes) -> None:
    """Writes a temporary file beside ``path`` and renames it over ``path``.

    Also what a new file needs on ``ram://``, whose writable files append to an old one.
    """
    temporary = join(parent(path), f".{base_name(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with _gfile_errors(path):
            with tf.io.gfile.GFile(temporary, "wb") as stream:
                stream.write(data)
            tf.io.gfile.rename(temporary, str(path), overwrite=True)
    except BaseException:
        with contextlib.suppress(OSError):
            remove(temporary)
        raise


def copy_tree(source: str | Path, target: str | Path, last: str | None = None) -> None:
    """Copies the folder ``source`` into ``target`` (any file systems), file by file.

    Args:
        source: the folder to copy.
        target: the new folder (created).
        last: a file name copied after every other file (e.g. ``saved_model.pb``, so a
            reader that waits for it never sees the folder half copied).
    """
    files = []
    for folder, _, names in tf.io.gfile.walk(str(source)):
        relative = (os.path if is_local(source) else posixpath).relpath(folder, str(source))
        for name in names:
            files.append(name if relative == "." else posixpath.join(relative, name))
    files.sort(key=lambda name: name == last)
    with _gfile_errors(target):
        for name in files:
            destination = join(target, name)
            tf.io.gfile.makedirs(str(parent(destination)))
            tf.io.gfile.copy(str(join(source, name)), str(destination), overwrite=True)
