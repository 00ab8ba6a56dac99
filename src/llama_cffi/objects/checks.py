"""Argument checks shared by the handle classes.

Each raises a TypeError or ValueError that names the argument, where cffi or
``int()``/``float()``/``bytes()`` would raise a bare error, or worse, accept
the value (``bytes(123)`` is 123 NUL bytes, ``int(1.5)`` is 1).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np

from .._bindings.raw import ffi
from .handle import Handle

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1


def int_arg(value: Any, name: str, lo: int = INT32_MIN, hi: int = INT32_MAX) -> int:
    """``value`` checked to be an integer in [lo, hi] (the C parameter's range)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {v}")
    return v


def number_arg(value: Any, name: str) -> float:
    """``value`` checked to be a real number, not NaN."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if v != v:
        raise ValueError(f"{name} must not be NaN")
    return v


def seed_arg(value: Any) -> int:
    """A seed: any integer (llama.cpp keeps its low 32 bits)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"seed must be an integer, got {value!r}")
    return int(value)


def bytes_arg(value: Any, name: str) -> bytes:
    """Bytes-like ``value`` (bytes, bytearray, memoryview, numpy array) as bytes."""
    if isinstance(value, (bytes, bytearray, memoryview, np.ndarray)):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, got {type(value).__name__}")


_LORA_PTR = ffi.typeof("struct llama_adapter_lora *")


def check_adapter(obj: object) -> None:
    """TypeError unless ``obj`` is a LoraAdapter (known by its C pointer's type:
    the context cannot import the class, which imports the model); ClosedError
    if it is closed."""
    if isinstance(obj, Handle):
        ptr = obj.ptr  # ClosedError for a closed one
        if ffi.typeof(ptr) is _LORA_PTR:
            return
    raise TypeError(f"set_loras takes LoraAdapter keys (mapped to scales), got {obj!r}")
