"""``llama_sampler`` functions: constructors, chains, running samplers, candidates.

Every constructor returns a new ``struct llama_sampler *`` (the caller owns
it: :func:`free`, or hand it to a chain with :func:`chain_add`); a NULL
return raises a :class:`~llama_cffi.errors.LlamaError` (GrammarError for
grammars) carrying llama.cpp's log. Arrays passed to constructors (DRY
breakers, logit biases, grammar triggers) are copied by llama.cpp, so they
live only for the call.

The functions that run samplers (:func:`apply`, :func:`accept`,
:func:`reset`, :func:`sample`) take the :class:`~.callbacks.SamplerState`
of the Python samplers they may reach, and re-raise an exception stored on
one of them once C has returned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..errors import GrammarError, LlamaError
from . import callbacks, checked
from .callbacks import SamplerState
from .init import ensure_initialised
from .raw import NULL, CData, ffi, lib

TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
"""numpy dtype of ``llama_token_data``."""
assert TOKEN_DATA.itemsize == ffi.sizeof("llama_token_data")


def _new(call: Callable[..., CData], *args: object, name: str) -> CData:
    ensure_initialised()
    return checked.pointer(call, *args, error=LlamaError,
                           what=f"llama.cpp could not create the {name} sampler")


def _seed(seed: int) -> int:
    return int(seed) & 0xFFFFFFFF


# -- constructors of llama.cpp's samplers -------------------------------------------------


def greedy() -> CData:
    return _new(lib.llama_sampler_init_greedy, name="greedy")


def dist(seed: int) -> CData:
    return _new(lib.llama_sampler_init_dist, _seed(seed), name="dist")


def top_k(k: int) -> CData:
    return _new(lib.llama_sampler_init_top_k, int(k), name="top-k")


def top_p(p: float, min_keep: int) -> CData:
    return _new(lib.llama_sampler_init_top_p, float(p), int(min_keep), name="top-p")


def min_p(p: float, min_keep: int) -> CData:
    return _new(lib.llama_sampler_init_min_p, float(p), int(min_keep), name="min-p")


def typical(p: float, min_keep: int) -> CData:
    return _new(lib.llama_sampler_init_typical, float(p), int(min_keep), name="typical")


def temp(t: float) -> CData:
    return _new(lib.llama_sampler_init_temp, float(t), name="temp")


def temp_ext(t: float, delta: float, exponent: float) -> CData:
    return _new(lib.llama_sampler_init_temp_ext, float(t), float(delta), float(exponent),
                name="temp-ext")


def xtc(probability: float, threshold: float, min_keep: int, seed: int) -> CData:
    return _new(lib.llama_sampler_init_xtc, float(probability), float(threshold),
                int(min_keep), _seed(seed), name="xtc")


def top_n_sigma(n: float) -> CData:
    return _new(lib.llama_sampler_init_top_n_sigma, float(n), name="top-n-sigma")


def mirostat(n_vocab: int, seed: int, tau: float, eta: float, m: int) -> CData:
    return _new(lib.llama_sampler_init_mirostat, int(n_vocab), _seed(seed), float(tau),
                float(eta), int(m), name="mirostat")


def mirostat_v2(seed: int, tau: float, eta: float) -> CData:
    return _new(lib.llama_sampler_init_mirostat_v2, _seed(seed), float(tau), float(eta),
                name="mirostat-v2")


def adaptive_p(target: float, decay: float, seed: int) -> CData:
    return _new(lib.llama_sampler_init_adaptive_p, float(target), float(decay), _seed(seed),
                name="adaptive-p")


def penalties(n_vocab: int, last_n: int, repeat: float, frequency: float,
              presence: float) -> CData:
    return _new(lib.llama_sampler_init_penalties, int(n_vocab), int(last_n), float(repeat),
                float(frequency), float(presence), name="penalties")


def dry(vocab: CData, multiplier: float, base: float, allowed_length: int,
        penalty_last_n: int, sequence_breakers: Sequence[str]) -> CData:
    strings = [ffi.new("char[]", s.encode()) for s in sequence_breakers]
    arr = ffi.new("const char *[]", strings or [NULL])
    return _new(lib.llama_sampler_init_dry, vocab, float(multiplier), float(base),
                int(allowed_length), int(penalty_last_n), arr, len(strings), name="dry")


def logit_bias(n_vocab: int, biases: Iterable[tuple[int, float]]) -> CData:
    """``biases``: (token id, bias) pairs, ids already checked."""
    items = list(biases)
    arr = ffi.new("llama_logit_bias[]", max(1, len(items)))
    for i, (t, b) in enumerate(items):
        arr[i].token = int(t)
        arr[i].bias = float(b)
    return _new(lib.llama_sampler_init_logit_bias, int(n_vocab), len(items), arr,
                name="logit-bias")


def infill(vocab: CData) -> CData:
    return _new(lib.llama_sampler_init_infill, vocab, name="infill")


def grammar(vocab: CData, text: str, root: str) -> CData:
    """``llama_sampler_init_grammar``; a grammar llama.cpp rejects raises GrammarError."""
    ensure_initialised()
    return checked.pointer(lib.llama_sampler_init_grammar, vocab, text.encode(), root.encode(),
                           error=GrammarError, what="llama.cpp rejected the grammar")


def grammar_lazy(vocab: CData, text: str, root: str, trigger_patterns: Sequence[str],
                 trigger_tokens: Sequence[int]) -> CData:
    """``llama_sampler_init_grammar_lazy_patterns``: constrains only once a
    pattern matches the output or a trigger token is sampled."""
    ensure_initialised()
    pats = [ffi.new("char[]", p.encode()) for p in trigger_patterns]
    pat_arr = ffi.new("const char *[]", pats or [NULL])
    toks = ffi.new("llama_token[]", [int(t) for t in trigger_tokens] or [0])
    return checked.pointer(lib.llama_sampler_init_grammar_lazy_patterns, vocab, text.encode(),
                           root.encode(), pat_arr, len(pats), toks, len(trigger_tokens),
                           error=GrammarError, what="llama.cpp rejected the grammar")


def python(state: SamplerState) -> CData:
    """``llama_sampler_init`` with the Python sampler interface; ``state`` stays
    alive (in ``callbacks.live_sampler_states``) until llama.cpp frees the sampler."""
    ptr = _new(lib.llama_sampler_init, callbacks.SAMPLER_INTERFACE, state.handle,
               name=state.name)
    callbacks.register_sampler(state)
    return ptr


def free(ptr: CData) -> None:
    lib.llama_sampler_free(ptr)


# -- chains -------------------------------------------------------------------------------


def chain_init(no_perf: bool) -> CData:
    ensure_initialised()
    params = lib.llama_sampler_chain_default_params()
    params.no_perf = bool(no_perf)
    return checked.pointer(lib.llama_sampler_chain_init, params,
                           what="llama.cpp could not create a sampler chain")


def chain_add(chain: CData, smpl: CData) -> None:
    """Append ``smpl`` to ``chain``, which owns it from now on."""
    lib.llama_sampler_chain_add(chain, smpl)


def chain_get(chain: CData, i: int) -> CData:
    """The ``i``-th sampler of ``chain`` (borrowed: the chain still owns it)."""
    return lib.llama_sampler_chain_get(chain, int(i))


def chain_n(chain: CData) -> int:
    return int(lib.llama_sampler_chain_n(chain))


# -- running samplers ---------------------------------------------------------------------


def _reraise(python: Iterable[SamplerState]) -> None:
    for state in python:
        state.reraise()


_lent = threading.local()


def lent_token_data() -> CData | None:
    """The Python-owned ``llama_token_data[]`` that the :func:`apply` running on
    this thread works on (given as its ``owner``), or None."""
    owner: CData | None = getattr(_lent, "owner", None)
    return owner


def apply(smpl: CData, cur_p: CData, python: Iterable[SamplerState] = (),
          owner: CData | None = None) -> None:
    """``llama_sampler_apply`` on a ``llama_token_data_array *``.

    owner: the ``ffi.new`` array ``cur_p.data`` points into, if Python owns it;
        Python samplers reached by the call then get views that keep it alive
        (:func:`lent_token_data`) instead of working on a copy.
    """
    if owner is None or not python:
        lib.llama_sampler_apply(smpl, cur_p)
    else:
        before = getattr(_lent, "owner", None)
        _lent.owner = owner
        try:
            lib.llama_sampler_apply(smpl, cur_p)
        finally:
            _lent.owner = before
    _reraise(python)


def accept(smpl: CData, token: int, python: Iterable[SamplerState] = ()) -> None:
    lib.llama_sampler_accept(smpl, int(token))
    _reraise(python)


def reset(smpl: CData, python: Iterable[SamplerState] = ()) -> None:
    lib.llama_sampler_reset(smpl)
    _reraise(python)


def sample(smpl: CData, ctx: CData, idx: int, python: Iterable[SamplerState] = ()) -> int:
    """``llama_sampler_sample``: apply to the logits of output ``idx`` of ``ctx``,
    select, accept; the chosen token."""
    token = int(lib.llama_sampler_sample(smpl, ctx, int(idx)))
    _reraise(python)
    return token


def get_seed(smpl: CData) -> int:
    return int(lib.llama_sampler_get_seed(smpl))


def perf(chain: CData) -> dict[str, float]:
    d = lib.llama_perf_sampler(chain)
    return {"t_sample_ms": d.t_sample_ms, "n_sample": d.n_sample}


def perf_reset(chain: CData) -> None:
    lib.llama_perf_sampler_reset(chain)


# -- candidates (``llama_token_data_array``) ----------------------------------------------


def new_candidates(n: int) -> tuple[CData, CData, np.ndarray]:
    """A ``llama_token_data[n]`` buffer, a ``llama_token_data_array *`` pointing
    at it (size n, nothing selected, unsorted) and a numpy view (dtype
    :data:`TOKEN_DATA`) of the buffer. The caller keeps the buffer alive."""
    data = ffi.new("llama_token_data[]", n)
    view = np.frombuffer(ffi.buffer(data), dtype=TOKEN_DATA)
    cur = ffi.new("llama_token_data_array *")
    cur.data, cur.size, cur.selected, cur.sorted = data, n, -1, False
    return data, cur, view


def candidates_view(cur_p: CData) -> np.ndarray:
    """A numpy view (dtype :data:`TOKEN_DATA`) of the first ``size`` entries of
    a ``llama_token_data_array *``. Borrowed: it does not keep the memory alive."""
    return np.frombuffer(ffi.buffer(cur_p.data, cur_p.size * TOKEN_DATA.itemsize),
                         dtype=TOKEN_DATA)


def owned_view(owner: CData, offset: int, n: int) -> np.ndarray:
    """Entries ``offset .. offset + n`` of the ``ffi.new`` token data array
    ``owner``, as a numpy view that keeps ``owner`` alive."""
    return np.frombuffer(ffi.buffer(owner), dtype=TOKEN_DATA)[offset:offset + n]


def offset_in(owner: CData, cur_p: CData) -> int | None:
    """Index of ``cur_p.data`` in the array ``owner`` if its ``size`` entries lie
    inside it, else None."""
    base = int(ffi.cast("uintptr_t", owner))
    start = int(ffi.cast("uintptr_t", cur_p.data))
    item = TOKEN_DATA.itemsize
    if start < base or (start - base) % item:
        return None
    offset = (start - base) // item
    return offset if offset + int(cur_p.size) <= len(owner) else None


def copy_candidates(cur_p: CData) -> tuple[CData, CData]:
    """A Python-owned copy of ``cur_p``: its token data and the array struct."""
    n = int(cur_p.size)
    data = ffi.new("llama_token_data[]", max(n, 1))
    ffi.memmove(data, cur_p.data, n * TOKEN_DATA.itemsize)
    copy = ffi.new("llama_token_data_array *")
    copy.data, copy.size, copy.selected, copy.sorted = data, n, cur_p.selected, cur_p.sorted
    return data, copy


def copy_candidates_back(copy: CData, cur_p: CData) -> None:
    """Write a :func:`copy_candidates` copy back (its size can only have shrunk)."""
    n = min(int(copy.size), int(cur_p.size))
    ffi.memmove(cur_p.data, copy.data, n * TOKEN_DATA.itemsize)
    cur_p.size = n
    cur_p.selected = copy.selected if -1 <= copy.selected < n else -1
    cur_p.sorted = copy.sorted

