"""Samplers and sampler chains (``llama_sampler``).

A :class:`SamplerChain` runs its samplers in order on the logits of one
output and picks a token. Samplers are built with the functions of this module
(``top_k(40)``, ``temp(0.8)``, ``dist(seed=1)``, ...); adding one to a chain
hands its C object to the chain, after which the chain frees it.

The last sampler of a chain must select a token (``greedy`` or ``dist``);
llama.cpp aborts the process otherwise, so the chain checks this first.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._ffi import ensure_initialised, ffi, lib
from ._handle import Handle
from .errors import LlamaError

if TYPE_CHECKING:
    from .context import Context

DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: a random seed


def _free_sampler(ptr: Any) -> None:
    lib.llama_sampler_free(ptr)


class Sampler(Handle):
    """One sampler. ``selects`` tells whether it picks the final token."""

    def __init__(self, ptr: Any, name: str, *, selects: bool = False) -> None:
        if ptr == ffi.NULL:
            raise LlamaError(f"llama.cpp could not create the {name} sampler")
        self._own(ptr, _free_sampler)
        self.name = name
        self.selects = selects

    def __repr__(self) -> str:
        return f"<Sampler {self.name}{' (in a chain)' if self.closed else ''}>"


def greedy() -> Sampler:
    """Pick the most likely token (temperature 0)."""
    ensure_initialised()
    return Sampler(lib.llama_sampler_init_greedy(), "greedy", selects=True)


def dist(seed: int = DEFAULT_SEED) -> Sampler:
    """Draw a token from the distribution; ``seed`` as llama.cpp's ``-s/--seed``."""
    ensure_initialised()
    return Sampler(lib.llama_sampler_init_dist(int(seed) & 0xFFFFFFFF), "dist", selects=True)


def top_k(k: int) -> Sampler:
    """Keep the ``k`` most likely tokens (``--top-k``; <= 0 keeps all)."""
    ensure_initialised()
    return Sampler(lib.llama_sampler_init_top_k(int(k)), "top-k")


def top_p(p: float, min_keep: int = 1) -> Sampler:
    """Nucleus sampling: keep the smallest set with probability mass >= p (``--top-p``)."""
    ensure_initialised()
    return Sampler(lib.llama_sampler_init_top_p(float(p), int(min_keep)), "top-p")


def min_p(p: float, min_keep: int = 1) -> Sampler:
    """Drop tokens less likely than ``p`` times the most likely one (``--min-p``)."""
    ensure_initialised()
    return Sampler(lib.llama_sampler_init_min_p(float(p), int(min_keep)), "min-p")


def temp(t: float) -> Sampler:
    """Divide the logits by the temperature ``t`` (``--temp``)."""
    ensure_initialised()
    return Sampler(lib.llama_sampler_init_temp(float(t)), "temp")


def _free_chain(ptr: Any) -> None:
    lib.llama_sampler_free(ptr)


class SamplerChain(Handle):
    """An ordered chain of samplers that picks one token per call to :meth:`sample`.

    no_perf: skip llama.cpp's timing of the chain.
    """

    def __init__(self, samplers: Iterable[Sampler] = (), *, no_perf: bool = True) -> None:
        ensure_initialised()
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = bool(no_perf)
        self._own(lib.llama_sampler_chain_init(params), _free_chain)
        self._names: list[str] = []
        self._selects = False
        self._lock = threading.Lock()
        for s in samplers:
            self.add(s)

    def add(self, sampler: Sampler) -> SamplerChain:
        """Append ``sampler``; the chain takes ownership of it."""
        chain = self.ptr
        if sampler.closed:
            raise LlamaError(f"{sampler.name} sampler is closed or already in a chain")
        lib.llama_sampler_chain_add(chain, sampler._release())
        self._names.append(sampler.name)
        self._selects = sampler.selects
        return self

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return int(lib.llama_sampler_chain_n(self.ptr))

    def sample(self, ctx: Context, idx: int = -1) -> int:
        """Pick a token from output ``idx`` of ``ctx``'s last decode and accept it."""
        chain = self.ptr
        if not self._selects:
            raise LlamaError(
                "the sampler chain does not end with a selecting sampler "
                "(add greedy() or dist())")
        if not self._lock.acquire(False):
            raise LlamaError("this sampler chain is being used by another thread")
        try:
            c = ctx._enter()  # sampling reads the context's outputs: no decode meanwhile
            try:
                if lib.llama_get_logits_ith(c, idx) == ffi.NULL:
                    raise LlamaError(
                        f"no logits for output {idx}: decode a batch with that output first")
                return int(lib.llama_sampler_sample(chain, c, idx))
            finally:
                ctx._lock.release()
        finally:
            self._lock.release()

    def accept(self, token: int) -> None:
        """Tell stateful samplers (penalties, grammar) that ``token`` was chosen."""
        lib.llama_sampler_accept(self.ptr, int(token))

    def reset(self) -> None:
        lib.llama_sampler_reset(self.ptr)

    def __repr__(self) -> str:
        return f"<SamplerChain {' -> '.join(self._names) or '(empty)'}>"


def default_chain(*, temperature: float = 0.8, top_k_: int = 40, top_p_: float = 0.95,
                  min_p_: float = 0.05, seed: int = DEFAULT_SEED) -> SamplerChain:
    """llama.cpp's default chain for the given values; ``temperature <= 0`` is greedy."""
    if temperature <= 0:
        return SamplerChain([greedy()])
    return SamplerChain([top_k(top_k_), top_p(top_p_), min_p(min_p_), temp(temperature),
                         dist(seed)])
