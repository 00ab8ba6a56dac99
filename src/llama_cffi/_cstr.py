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


def metadata_dict(ptr: Any, count: Any, key_by_index: Any, val_by_index: Any) -> dict[str, str]:
    """All key/value pairs of a GGUF-backed object (model or adapter) as strings."""
    out: dict[str, str] = {}
    for i in range(count(ptr)):
        key = sized_string(lambda b, n: key_by_index(ptr, i, b, n))
        val = sized_string(lambda b, n: val_by_index(ptr, i, b, n))
        out[key or ""] = val or ""
    return out
