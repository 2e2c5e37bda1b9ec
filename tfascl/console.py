"""What tfascl writes to the console while a run trains: each report on a line of its own.

Keras's progress bar redraws one line of stdout (``\\r``, no line break) until the epoch
ends. Anything else written meanwhile (a skipped file, the kNN monitor's progress, a
warning) would land in the middle of that line. ``tfascl.callbacks.ProgressBar`` marks
the line open while it is being redrawn; ``report`` (and every absl log record and Python
warning once ``keep_reports_on_their_own_lines`` is installed) first ends an open line,
so each report starts a line and the bar goes on below it.

Plain Python, no TensorFlow: the command-line modules use it before TensorFlow starts.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, TextIO

_state = {"open": False}


def set_progress_line_open(is_open: bool) -> None:
    """Called by the progress bar: True after it drew an unfinished line, False once the
    line ended."""
    _state["open"] = is_open


def progress_line_open() -> bool:
    return _state["open"]


def end_progress_line() -> None:
    """Ends the progress bar's open line, if any, so that what follows starts a line."""
    if _state["open"]:
        _state["open"] = False
        try:
            sys.stdout.write("\n")
            sys.stdout.flush()
        except (OSError, ValueError):  # a closed stdout: nothing to end
            pass


def report(message: str, file: TextIO | None = None) -> None:
    """Prints ``message`` on a line of its own (stdout by default), flushed."""
    end_progress_line()
    stream = sys.stdout if file is None else file
    print(message, file=stream, flush=True)


def warn(message: str) -> None:
    """A warning of tfascl's own, on stderr: ``warning: <message>``, on a line of its own."""
    report(f"warning: {message}", file=sys.stderr)


class _OwnLine(logging.Filter):
    """Ends an open progress line before a log record is written (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        end_progress_line()
        return True


_FILTER = _OwnLine()
_installed: dict[str, Any] = {}


def keep_reports_on_their_own_lines() -> None:
    """Makes absl log records (TensorFlow's Python logs included) and Python warnings end
    an open progress line before they are written. Idempotent."""
    if _installed:
        return
    try:
        from absl import logging as absl_logging

        handlers = [absl_logging.get_absl_handler()]
    except ImportError:  # absl-py is a dependency; without it only Python's handlers
        handlers = []
    handlers += list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(_FILTER)
    show = warnings.showwarning

    def showwarning(*args: Any, **kwargs: Any) -> None:
        end_progress_line()
        show(*args, **kwargs)

    warnings.showwarning = showwarning
    _installed.update(handlers=handlers, showwarning=show)


def restore() -> None:
    """Undoes ``keep_reports_on_their_own_lines`` (for tests)."""
    if not _installed:
        return
    for handler in _installed["handlers"]:
        handler.removeFilter(_FILTER)
    warnings.showwarning = _installed["showwarning"]
    _installed.clear()
    _state["open"] = False
