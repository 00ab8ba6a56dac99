"""``llama_batch``: allocation and the numpy views of its arrays."""

from __future__ import annotations

import numpy as np

from .raw import CData, ffi, lib


def init(capacity: int, embd: int, n_seq_max: int) -> CData:
    """A ``llama_batch *`` holder owning arrays for ``capacity`` entries."""
    holder = ffi.new("llama_batch *")
    holder[0] = lib.llama_batch_init(int(capacity), int(embd), int(n_seq_max))
    return holder


def free(holder: CData) -> None:
    lib.llama_batch_free(holder[0])


def int32_view(ptr: CData, n: int) -> np.ndarray:
    """A numpy view (no copy) of ``n`` int32 values at ``ptr``."""
    return np.frombuffer(ffi.buffer(ptr, n * 4), dtype=np.int32)


def float32_view(ptr: CData, n: int) -> np.ndarray:
    return np.frombuffer(ffi.buffer(ptr, n * 4), dtype=np.float32)


def int8_view(ptr: CData, n: int) -> np.ndarray:
    return np.frombuffer(ffi.buffer(ptr, n), dtype=np.int8)
