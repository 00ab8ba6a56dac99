"""The arg-max a greedy chain picks, read in place from llama.cpp's logits (the
engine's fast path for ``greedy`` and ``logit-bias -> greedy`` chains)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Bias", "argmax"]


class Bias(NamedTuple):
    """A logit bias for the arg-max path: ids, values, the ids as a set, the largest value."""

    ids: np.ndarray
    values: np.ndarray
    members: frozenset[int]
    top: float

    @classmethod
    def of(cls, biases: dict[int, float]) -> Bias:
        ids, values = zip(*biases.items())
        return cls(np.array(ids, dtype=np.int64), np.array(values, dtype=np.float32),
                   frozenset(int(i) for i in ids), max(values))


def argmax(view: np.ndarray, bias: Bias | None) -> int:
    """The token llama.cpp's greedy sampler picks from ``view`` (+ ``bias``
    added by a logit-bias sampler first): the first index of the largest
    value. ``view`` is not changed, nor copied unless the largest logit is a
    biased token."""
    best = int(view.argmax())  # the first of equal maxima, as llama.cpp's greedy
    if bias is None:
        return best
    if best in bias.members:
        x = view.copy()
        x[bias.ids] += bias.values
        return int(x.argmax())
    if bias.top <= 0:  # (banned end-of-generation tokens): lowered tokens cannot win
        return best
    # ``best`` is the first maximum of the unbiased tokens; a biased token wins
    # if it is larger, or equal and earlier
    biased = view[bias.ids] + bias.values
    top = biased.max()
    if not top >= view[best]:
        return best
    first = int(bias.ids[biased == top].min())
    return min(best, first) if top == view[best] else first
