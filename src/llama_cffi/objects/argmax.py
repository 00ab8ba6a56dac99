"""The logit bias of a ``logit-bias -> greedy`` chain, kept for the arg-max fast
path (``llama_cffi_argmax_rows`` in prelude.c reads llama.cpp's logits in place)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._bindings.raw import CData, ffi

__all__ = ["Bias"]


class Bias(NamedTuple):
    """A logit bias for the arg-max path: token ids (int32) and values (float32),
    and ``c``: C pointers into these arrays and their length, made once (the
    arrays live as long as the Bias)."""

    ids: np.ndarray
    values: np.ndarray
    c: tuple[CData, CData, int]

    @classmethod
    def of(cls, biases: dict[int, float], n_vocab: int) -> Bias:
        """``biases`` for a vocabulary of ``n_vocab`` tokens (ids outside it raise:
        the C arg-max writes at these indices)."""
        ids, values = zip(*biases.items())
        arr = np.array(ids, dtype=np.int32)
        if arr.min() < 0 or arr.max() >= n_vocab:
            raise ValueError(f"logit_bias token ids must be in 0..{n_vocab - 1}")
        vals = np.array(values, dtype=np.float32)
        return cls(arr, vals, (ffi.from_buffer("int32_t[]", arr),
                               ffi.from_buffer("float[]", vals), len(arr)))
