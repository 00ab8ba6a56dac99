"""The arg-max fast path of greedy chains (``greedy``, or ``logit-bias ->
greedy``): :func:`sample_argmax` samples all of a step's greedy outputs at
once, reading llama.cpp's logits in place
(:func:`llama_cffi._bindings.context.argmax_rows`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .._bindings import context as _context
from .._bindings.raw import CData
from .context_setup import refuse_sampled

if TYPE_CHECKING:
    from .chain import SamplerChain
    from .context import Context

__all__ = ["Bias", "sample_argmax"]


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


def sample_argmax(ctx: Context, chains: Sequence[SamplerChain], rows: Sequence[int]) -> list[int]:
    """``[chain.sample(ctx, row) for chain, row in zip(chains, rows)]`` for chains
    that are :attr:`~SamplerChain.is_argmax` (ValueError otherwise), holding the
    context once and reading all their logits with one C arg-max call: the
    engine's step samples every greedy slot at once."""
    if len(chains) != len(rows):
        raise ValueError(f"{len(chains)} chains for {len(rows)} rows")
    held: list[SamplerChain] = []
    try:
        for ch in chains:
            if not ch.is_argmax:
                raise ValueError(f"{ch!r} does not pick the arg-max; use its sample()")
            ch._guard.acquire()
            held.append(ch)
        n_vocab = ctx.vocab.n_tokens
        ptrs: list[CData] = []
        biases: list[tuple[np.ndarray, np.ndarray, bool, frozenset[int]] | None] = []
        for ch in chains:
            ptrs.append(ch.ptr)
            biases.append(ch._argmax_bias())
            if ch._n_vocab is None:
                ch._n_vocab = n_vocab
        c = ctx._enter()
        try:
            if ctx._sampled is not None:
                for row in rows:
                    refuse_sampled(ctx._sampled, row)
            return _context.argmax_rows(c, rows, ptrs, biases, n_vocab)
        finally:
            ctx._leave()
    finally:
        for ch in held:
            ch._guard.release()
