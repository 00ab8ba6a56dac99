"""llama.cpp's log, routed to the ``llama_cffi`` logger.

llama.cpp (and ggml) report through one global callback. We install a cffi
``extern "Python"`` callback that

* assembles the fragments llama.cpp emits into whole lines (``CONT`` level
  continues the previous line),
* sends each line to ``logging.getLogger("llama_cffi")`` at the matching level
  (quiet by default: the logger has a ``NullHandler``; set
  ``LLAMA_CFFI_LOG=debug|info|warning|error`` or configure :mod:`logging` to
  see them),
* and remembers the last warning/error lines of each thread, so that a failing
  C call can put llama.cpp's own message into the exception it raises:
  ``m = mark()`` before the call, ``problems_since(m)`` after it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections import deque
from collections.abc import Iterator

from .raw import ffi, lib

logger = logging.getLogger("llama_cffi")
logger.addHandler(logging.NullHandler())

_LEVELS = {
    int(lib.GGML_LOG_LEVEL_DEBUG): logging.DEBUG,
    int(lib.GGML_LOG_LEVEL_INFO): logging.INFO,
    int(lib.GGML_LOG_LEVEL_WARN): logging.WARNING,
    int(lib.GGML_LOG_LEVEL_ERROR): logging.ERROR,
    int(lib.GGML_LOG_LEVEL_NONE): logging.INFO,
}
_CONT = int(lib.GGML_LOG_LEVEL_CONT)


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.pending: list[str] = []
        self.level: int = logging.INFO
        self.serial = 0  # lines emitted on this thread so far
        self.recent: deque[tuple[int, str]] = deque(maxlen=32)  # (serial, warning/error line)
        self.collectors: list[list[tuple[int, str]]] = []


_state = _ThreadState()


def _emit(level: int, line: str) -> None:
    _state.serial += 1
    if level >= logging.WARNING and line.strip():
        _state.recent.append((_state.serial, line.strip()))
    for collector in _state.collectors:
        collector.append((level, line))
    if logger.isEnabledFor(level):
        logger.log(level, "%s", line)


@ffi.def_extern()
def _llama_cffi_log(level, text, user_data):  # type: ignore[no-untyped-def]
    try:
        if text == ffi.NULL:
            return
        chunk = ffi.string(text).decode("utf-8", "replace")
        lvl = int(level)
        if lvl != _CONT:
            if _state.pending:  # a new message starts: flush an unterminated one
                _emit(_state.level, "".join(_state.pending))
                _state.pending.clear()
            _state.level = _LEVELS.get(lvl, logging.INFO)
        parts = chunk.split("\n")
        _state.pending.append(parts[0])
        for part in parts[1:]:
            _emit(_state.level, "".join(_state.pending))
            _state.pending.clear()
            if part:
                _state.pending.append(part)
    except Exception:  # pragma: no cover - never let logging break a C call
        pass


def mark() -> int:
    """A position in this thread's log, for :func:`problems_since`."""
    return _state.serial


def problems_since(position: int, limit: int = 6) -> str:
    """The warning/error lines llama.cpp logged on this thread after ``position``."""
    if _state.pending:  # flush an unterminated last line
        _emit(_state.level, "".join(_state.pending))
        _state.pending.clear()
    picked = [text for serial, text in _state.recent if serial > position]
    return "\n".join(picked[-limit:])


@contextlib.contextmanager
def collect() -> Iterator[list[tuple[int, str]]]:
    """Every (level, line) llama.cpp logs on this thread meanwhile (for reports
    such as buffer sizes that llama.cpp only gives in its log)."""
    lines: list[tuple[int, str]] = []
    _state.collectors.append(lines)
    try:
        yield lines
    finally:
        if _state.pending:
            _emit(_state.level, "".join(_state.pending))
            _state.pending.clear()
        _state.collectors.remove(lines)


_BUFFER_LINE = re.compile(
    r"^\s*(?P<who>[\w.:-]+):\s+(?P<buft>\S.*?)\s+(?P<kind>model|KV|output|compute|RS)"
    r" buffer size =\s+(?P<mib>[0-9.]+) MiB")


def buffer_sizes(lines: list[tuple[int, str]], kind: str) -> dict[str, int]:
    """Bytes per buffer type from llama.cpp's "<buft> <kind> buffer size = N MiB" lines."""
    out: dict[str, int] = {}
    for _, text in lines:
        m = _BUFFER_LINE.match(text)
        if m and m.group("kind") == kind:
            name = m.group("buft").strip()
            out[name] = out.get(name, 0) + int(float(m.group("mib")) * 2**20)
    return out


def _configure_from_env() -> None:
    value = os.environ.get("LLAMA_CFFI_LOG", "").strip().lower()
    if not value:
        return
    level = logging.getLevelName(value.upper())
    if not isinstance(level, int):
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


def install() -> None:
    _configure_from_env()
    lib.llama_log_set(lib._llama_cffi_log, ffi.NULL)
    lib.ggml_log_set(lib._llama_cffi_log, ffi.NULL)


def uninstall() -> None:
    """At interpreter exit: stop calling into Python from C."""
    lib.llama_log_set(ffi.addressof(lib, "llama_cffi_log_discard"), ffi.NULL)
    lib.ggml_log_set(ffi.addressof(lib, "llama_cffi_log_discard"), ffi.NULL)
