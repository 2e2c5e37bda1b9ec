"""What the three commands (tfascl-train, tfascl-eval, tfascl-export) share.

Exit statuses, one-line usage errors, flag parsing with nested flagfiles, and the cheap
checks every command runs on its flags before any real work (dataset, run folder).

A usage error (a bad flag value, a missing run folder, an unprepared dataset: found before
the work starts) ends the program with ``EXIT_USAGE`` and one line on stderr naming the
flag: ``tfascl-eval: error: --knn_k=-1: must be >= 1``. A failure during the work (a
non-finite loss, a converter that fails, a full disk) ends it with ``EXIT_FAILED``.

This module imports only absl at import time: TensorFlow and TFDS are imported inside the
checks that need them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging as python_logging
import os
import sys
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from absl import flags
from absl import logging as absl_logging

EXIT_FAILED = 1  # the work started and failed (non-finite loss, a failed write, ...)
EXIT_USAGE = 2  # a bad flag, dataset or model_dir: nothing was done
EXIT_INTERRUPTED = 130  # Ctrl-C, after saving a checkpoint
EXIT_PREEMPTED = 143  # SIGTERM (128 + 15, as a shell reports it), after saving a checkpoint


class FlagError(ValueError):
    """A bad flag value; its message is one line that names the flag."""


def require(condition: bool, message: str) -> None:
    """Raises ``FlagError(message)`` unless ``condition``."""
    if not condition:
        raise FlagError(message)


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an error's message (its type when it has none)."""
    text = str(error).strip()
    if not text and isinstance(error, BaseException):
        return type(error).__name__
    return text.splitlines()[0] if text else ""


def fail_usage(program: str, message: str) -> NoReturn:
    """Ends the program with ``EXIT_USAGE`` and ``program: error: message`` (one line)."""
    print(f"{program}: error: {first_line(message)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USAGE)


def fail_run(program: str, message: str) -> NoReturn:
    """Ends the program with ``EXIT_FAILED`` and one line: the work started and failed."""
    print(f"{program}: error: {first_line(message)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_FAILED)


# --- Flags ----------------------------------------------------------------------------------


def expand_flagfiles(argv: Sequence[str], base: str | None = None, seen: tuple = ()) -> list[str]:
    """Inlines ``--flagfile=F`` arguments, reading F relative to the file that names it.

    (absl reads a nested one relative to the working directory: recipes could then not
    share base files from anywhere.) ``#`` and ``//`` lines are comments, as in absl.

    Raises:
        FlagError: a flagfile that cannot be read or includes itself.
    """
    expanded: list[str] = []
    args = iter(argv)
    for arg in args:
        name, equals, value = arg.partition("=")
        if name not in ("--flagfile", "-flagfile"):
            expanded.append(arg)
            continue
        if not equals:
            value = next(args, "")
        path = os.path.expanduser(value)
        if base and not os.path.isabs(path):
            path = os.path.join(base, path)
        path = os.path.normpath(path)
        if path in seen:
            raise FlagError(f"--flagfile={value}: includes itself")
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as error:
            raise FlagError(f"--flagfile={value}: cannot read ({error.strerror})") from None
        lines = [line.strip() for line in lines]
        lines = [line for line in lines if line and not line.startswith(("#", "//"))]
        expanded += expand_flagfiles(lines, os.path.dirname(path), (*seen, path))
    return expanded


def flags_parser(program: str) -> Callable[[list[str]], list[str]]:
    """A ``flags_parser`` for ``absl.app.run``: nested flagfiles, one-line errors, exit 2.

    absl's own parser prints several lines and exits 1 on a bad flag.
    """

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(expand_flagfiles(argv[:1]) + expand_flagfiles(argv[1:]))
        except (flags.Error, FlagError) as error:
            fail_usage(program, str(error))

    return parse


def no_arguments(program: str, argv: Sequence[str]) -> None:
    """Refuses positional arguments (a flag without ``--``, a space instead of ``=``)."""
    if len(argv) > 1:
        fail_usage(program, f"unexpected arguments {list(argv[1:])} (flags are --name=value)")


class ReadableWarnings(python_logging.Formatter):
    """The commands' format of absl log records: a warning or an error is one plain line,
    ``warning: <message>``; other records (``--verbosity`` above 0) keep absl's format,
    with its time, thread and source line."""

    def __init__(self, fallback: python_logging.Formatter | None) -> None:
        super().__init__()
        self.fallback = fallback or python_logging.Formatter()

    def format(self, record: python_logging.LogRecord) -> str:
        if record.levelno >= python_logging.WARNING:
            return f"{record.levelname.lower()}: {record.getMessage()}"
        return self.fallback.format(record)


def readable_warnings() -> None:
    """Makes absl's handler write warnings as ``ReadableWarnings`` does (idempotent)."""
    handler = absl_logging.get_absl_handler().python_handler
    if not isinstance(handler.formatter, ReadableWarnings):
        handler.setFormatter(ReadableWarnings(handler.formatter))


def run_app(
    program: str,
    define: Callable[[], None],
    main: Callable[[list[str]], None],
) -> None:
    """Defines the command's flags (now, not at import) and runs ``main`` under absl, its
    warnings written as plain lines (``readable_warnings``)."""
    from absl import app

    readable_warnings()
    before = set(flags.FLAGS)
    define()
    # --help lists the key flags of the program absl takes as main (sys.argv[0], here a
    # console-script wrapper that defines none): the command's own flags are its keys.
    for name in sorted(set(flags.FLAGS) - before):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
    app.run(main, flags_parser=flags_parser(program))


def profile_range(text: str | None) -> tuple[int, int] | None:
    """``--profile_steps`` as ``(first, last)`` global steps to profile.

    Args:
        text: ``"A,B"`` (steps A to B), ``"A"`` (step A alone) or empty (no profile).

    Returns:
        ``(A, B)`` with ``1 <= A <= B``; ``(0, 0)`` for an empty text; None if malformed.
    """
    if not text:
        return (0, 0)
    try:
        steps = [int(part) for part in str(text).split(",")]
    except ValueError:
        return None
    if len(steps) == 1:
        steps *= 2
    if len(steps) != 2 or not 1 <= steps[0] <= steps[1]:
        return None
    return steps[0], steps[1]


def defined(flag_values: flags.FlagValues, names: Sequence[str]) -> bool:
    """Whether all of ``names`` are already flags of ``flag_values`` (defining twice fails)."""
    return all(name in flag_values for name in names)


# --- Flags from dataclass fields ------------------------------------------------------------
#
# The one way the three commands define their flags: each flag is a field of a dataclass
# (TrainConfig, EvalConfig, ExportFlags, ...) whose type, default and help it takes.

# absl's definer of each field type (the type's first word: ``int | None`` is an int flag).
DEFINERS: dict[str, Callable[..., Any]] = {
    "bool": flags.DEFINE_boolean,
    "int": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "str": flags.DEFINE_string,
}
# Field types defined as comma-separated lists (``--crop_scale=0.2,1``).
LIST_TYPES = ("tuple", "list")


def flag_field(default: Any, help_text: str) -> Any:
    """A dataclass field that is a command-line flag: its default and ``--help`` text."""
    return dataclasses.field(default=default, metadata={"help": help_text})


def field_kind(field: dataclasses.Field) -> str:
    """The first word of a field's type: ``int`` for ``int | None``, ``tuple`` for
    ``tuple[float, float]`` (an annotation read as text or as the type itself).

    Raises:
        ValueError: a type no flag has (not a key of ``DEFINERS`` or ``LIST_TYPES``).
    """
    annotation = field.type
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        annotation = annotation.__name__
    kind = str(annotation).split(" ")[0].split("[")[0]
    if kind not in (*DEFINERS, *LIST_TYPES):
        raise ValueError(f"{field.name}: {field.type} is not a flag's type")
    return kind


def flag_fields(
    config_type: type, renames: Mapping[str, str] | None = None, skip: Sequence[str] = ()
) -> dict[str, dataclasses.Field]:
    """``{flag name: field}`` of the fields of ``config_type`` that are flags.

    Args:
        config_type: a dataclass.
        renames: ``{field: flag}`` for a field whose flag has another name.
        skip: fields that are not flags (a nested config, ...).
    """
    renames = renames or {}
    return {
        renames.get(field.name, field.name): field
        for field in dataclasses.fields(config_type)
        if field.name not in skip
    }


def define_flags_from(
    config_type: type,
    flag_values: flags.FlagValues,
    *,
    enums: Mapping[str, Sequence[str]] | None = None,
    renames: Mapping[str, str] | None = None,
    helps: Mapping[str, str] | None = None,
    skip: Sequence[str] = (),
    aliases: Mapping[str, str] | None = None,
    module_name: str | None = None,
) -> flags.FlagValues:
    """One absl flag per field of the dataclass ``config_type``, in ``flag_values``.

    A flag takes its field's default and type: ``bool``, ``int``, ``float`` and ``str``
    (``int | None`` too: None is the unset default) are absl's flags of that type, a
    ``tuple``/``list`` a comma-separated list (its default as strings), a field named in
    ``enums`` an enum of those choices. Its help is the field's ``metadata["help"]``
    (``flag_field``), else ``helps[field]``. Defining the same flags twice in one
    ``flag_values`` does nothing the second time (absl would refuse).

    Args:
        config_type: a dataclass whose fields are the flags.
        flag_values: where to define them.
        enums: ``{field: choices}``.
        renames: ``{field: flag name}`` for a field whose flag has another name.
        helps: ``{field: help}`` for fields without ``metadata["help"]``.
        skip: fields that are not flags.
        aliases: ``{alias: flag}``: a second spelling of a flag (absl's ``DEFINE_alias``).
        module_name: the module absl lists the flags under in ``--helpfull``; default the
            caller's.

    Returns:
        ``flag_values``.
    """
    enums, helps, aliases = enums or {}, helps or {}, aliases or {}
    fields = flag_fields(config_type, renames, skip)
    if defined(flag_values, [*fields, *aliases]):
        return flag_values
    module_name = module_name or sys._getframe(1).f_globals["__name__"]
    where = {"flag_values": flag_values, "module_name": module_name}
    for name, field in fields.items():
        default, kind = field.default, field_kind(field)
        help_text = field.metadata.get("help") or helps[field.name]
        if field.name in enums:
            flags.DEFINE_enum(name, default, list(enums[field.name]), help_text, **where)
        elif kind in LIST_TYPES:
            values = None if default is None else [str(value) for value in default]
            flags.DEFINE_list(name, values, help_text, **where)
        else:
            DEFINERS[kind](name, default, help_text, **where)
    for alias, name in aliases.items():
        flags.DEFINE_alias(alias, name, **where)
    return flag_values


def values_from_flags(
    config_type: type,
    flag_values: flags.FlagValues,
    *,
    renames: Mapping[str, str] | None = None,
    skip: Sequence[str] = (),
) -> dict[str, Any]:
    """``{field: value}`` of the parsed flags of ``define_flags_from(config_type, ...)``.

    List flags stay lists of strings: the caller converts and checks them (one
    ``FlagError`` line naming the flag).
    """
    fields = flag_fields(config_type, renames, skip)
    return {field.name: flag_values[name].value for name, field in fields.items()}


# --- Checks ---------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Silences absl and Python logging for a check whose outcome is the only message.

    TFDS logs a warning ("Variant folder ... has no dataset_info.json") while it looks
    for an unprepared dataset, before the check's own one-line error.
    """
    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.FATAL)
    python_logging.disable(python_logging.CRITICAL)
    try:
        yield
    finally:
        python_logging.disable(python_logging.NOTSET)
        absl_logging.set_verbosity(level)


def dataset_problem(dataset: str, data_dir: str | None) -> str | None:
    """What is wrong with an image source, by the loader's own rule; None when usable.

    ``digits``; an existing folder; a path that does not exist (an error); anything else
    is a TFDS name, configs included (``imagenette/160px-v2``), which must be prepared
    under ``data_dir`` (nothing is downloaded). A TFDS error other than an unknown name
    is reported as TFDS gives it.
    """
    from tfascl.data.sources import source_kind

    try:
        if source_kind(dataset) != "tfds":
            return None
    except ValueError as error:
        return first_line(error)
    import tensorflow_datasets as tfds

    with quiet_logging():
        try:
            builder = tfds.builder(dataset, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as error:
            return f"not 'digits', an existing folder or a TFDS name (TFDS: {first_line(error)})"
        except Exception as error:  # a bad config or version, an unreadable data_dir, ...
            return f"TFDS cannot open it ({type(error).__name__}: {first_line(error)})"
        try:
            prepared = builder.is_prepared()
        except Exception as error:  # e.g. a data_dir without permission
            return f"TFDS cannot read {builder.data_dir} ({type(error).__name__}: {error})"
    if not prepared:
        return (
            f"TFDS dataset not prepared (looked for {builder.data_dir}); run `tfds build "
            f"{dataset} --data_dir=DIR` where there is internet, then pass --data_dir=DIR"
        )
    return None


def check_dataset(dataset: str, data_dir: str | None, flag: str = "dataset") -> None:
    """Raises ``FlagError`` naming ``--dataset`` when ``dataset_problem`` finds one."""
    problem = dataset_problem(dataset, data_dir)
    require(problem is None, f"--{flag}={dataset}: {problem}")


def check_run_dir(model_dir: str, flag: str = "model_dir") -> None:
    """Raises ``FlagError`` unless ``model_dir`` is a training run's folder (run.json)."""
    from tfascl import runs  # any file system tf.io.gfile knows (gs://, ...)

    path = Path(model_dir).expanduser() if runs.is_local(model_dir) else model_dir
    try:
        found, folder = runs.exists(path), runs.is_dir(path)
        spec = runs.is_file(runs.join(path, runs.SPEC_FILE))
    except OSError as error:  # a remote file system that cannot be reached
        raise FlagError(f"--{flag}={model_dir}: cannot be read ({error.strerror})") from None
    require(found, f"--{flag}={model_dir}: not a tfascl run (no such folder)")
    require(folder, f"--{flag}={model_dir}: not a tfascl run (not a folder)")
    require(spec, f"--{flag}={model_dir}: not a tfascl run (no {runs.SPEC_FILE})")
