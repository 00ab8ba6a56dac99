"""Strings from C functions that fill a caller's buffer and return the length."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._ffi import ffi


def sized_string(fill: Callable[[Any, int], int]) -> str | None:
    """Call ``fill(buf, size)`` the llama.cpp way: first with a NULL buffer to
    learn the length (negative: absent), then with a buffer of that size."""
    n = fill(ffi.NULL, 0)
    if n < 0:
        return None
    buf = ffi.new("char[]", n + 1)
    fill(buf, n + 1)
    return ffi.unpack(buf, n).decode("utf-8", "replace")
