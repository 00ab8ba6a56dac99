"""The logit bias of a ``logit-bias -> greedy`` chain, kept for the arg-max fast
path (:func:`llama_cffi._bindings.context.argmax_rows` reads llama.cpp's logits
in place)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Bias"]


class Bias(NamedTuple):
    """A logit bias for the arg-max path: token ids (int32), values (float32),
    whether any value is positive (a bias that only lowers tokens cannot change
    an arg-max it does not touch) and the ids as a set."""

    ids: np.ndarray
    values: np.ndarray
    raises: bool
    members: frozenset[int]

    @classmethod
    def of(cls, biases: dict[int, float], n_vocab: int) -> Bias:
        """``biases`` for a vocabulary of ``n_vocab`` tokens (ids outside it raise)."""
        ids, values = zip(*biases.items())
        arr = np.array(ids, dtype=np.int32)
        if arr.min() < 0 or arr.max() >= n_vocab:
            raise ValueError(f"logit_bias token ids must be in 0..{n_vocab - 1}")
        vals = np.array(values, dtype=np.float32)
        return cls(arr, vals, bool((vals > 0).any()), frozenset(int(i) for i in ids))
