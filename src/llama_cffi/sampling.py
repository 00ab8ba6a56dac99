"""Samplers and sampler chains (``llama_sampler``).

A :class:`SamplerChain` runs its samplers in order on the candidates of one
output and picks a token. Samplers are made with the functions of this module
(``top_k(40)``, ``temp(0.8)``, ``dist(seed=1)``, ``grammar(vocab, gbnf)``, ...)
or written in Python (:class:`PythonSampler`); adding one to a chain hands its
C object to the chain, which frees it.

Parameter names and defaults are those of llama.cpp's ``common/common.h`` and
its command-line flags. :meth:`SamplerChain.from_params` builds the chain
llama.cpp's tools build from the same settings.

Safety: the last sampler of a chain must select a token (``greedy``, ``dist``,
``mirostat``, ``mirostat_v2``, ``adaptive_p``); chains with a grammar or a
Python sampler are run step by step from Python so that a grammar that
rejects every token, or a Python sampler that raises, becomes an exception
(llama.cpp would abort the process).

Grammars are applied as llama.cpp's tools apply them: the token is first
sampled without the grammar and kept if the grammar allows it; otherwise the
grammar constrains all candidates and the chain samples again. Under greedy
decoding this is exactly the constrained arg-max; under random sampling it is
llama.cpp's distribution, which favours the unconstrained choice when valid.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _log
from ._ffi import ensure_initialised, ffi, lib
from ._handle import Handle
from .errors import GrammarError, LlamaError

if TYPE_CHECKING:
    from .context import Context
    from .model import Model
    from .vocab import Vocab

DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: a random seed
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
assert TOKEN_DATA.itemsize == ffi.sizeof("llama_token_data")


def _free_sampler(ptr: Any) -> None:
    lib.llama_sampler_free(ptr)


def _vocab_of(source: Vocab | Model) -> Vocab:
    from .model import Model

    return source.vocab if isinstance(source, Model) else source


class Sampler(Handle):
    """One sampler.

    selects: whether it picks the final token.
    kind: ``"grammar"`` and ``"python"`` samplers make a chain run step by step.
    """

    def __init__(self, ptr: Any, name: str, *, selects: bool = False, kind: str = "builtin",
                 vocab: Vocab | None = None, keep: Sequence[Any] = ()) -> None:
        if ptr == ffi.NULL:
            raise LlamaError(f"llama.cpp could not create the {name} sampler")
        self._own(ptr, _free_sampler)
        self.name = name
        self.selects = selects
        self.kind = kind
        self.vocab = vocab  # keeps the model alive while C points at its vocab
        self._keep = tuple(keep)  # C memory the sampler may point into
        if vocab is not None:
            vocab._model._adopt(self)  # closing the model closes this sampler first

    def apply(self, candidates: Candidates) -> None:
        """Run this (not yet chained) sampler on ``candidates``."""
        lib.llama_sampler_apply(self.ptr, candidates.struct)

    def __repr__(self) -> str:
        return f"<Sampler {self.name}{' (in a chain)' if self.closed else ''}>"


# -- built-in samplers ------------------------------------------------------------


def _make(ptr_fn: Any, name: str, *args: Any, **kw: Any) -> Sampler:
    ensure_initialised()
    return Sampler(ptr_fn(*args), name, **kw)


def greedy() -> Sampler:
    """Pick the most likely token (temperature 0)."""
    return _make(lib.llama_sampler_init_greedy, "greedy", selects=True)


def dist(seed: int = DEFAULT_SEED) -> Sampler:
    """Draw a token from the distribution; ``seed`` as ``-s/--seed``."""
    return _make(lib.llama_sampler_init_dist, "dist", int(seed) & 0xFFFFFFFF, selects=True)


def top_k(k: int = 40) -> Sampler:
    """Keep the ``k`` most likely tokens (``--top-k``; <= 0 keeps all)."""
    return _make(lib.llama_sampler_init_top_k, "top-k", int(k))


def top_p(p: float = 0.95, min_keep: int = 1) -> Sampler:
    """Keep the smallest set with probability mass >= p (``--top-p``; 1.0 = off)."""
    return _make(lib.llama_sampler_init_top_p, "top-p", float(p), int(min_keep))


def min_p(p: float = 0.05, min_keep: int = 1) -> Sampler:
    """Drop tokens less likely than ``p`` times the most likely one (``--min-p``; 0 = off)."""
    return _make(lib.llama_sampler_init_min_p, "min-p", float(p), int(min_keep))


def typical(p: float = 1.0, min_keep: int = 1) -> Sampler:
    """Locally typical sampling (``--typical``; 1.0 = off)."""
    return _make(lib.llama_sampler_init_typical, "typical", float(p), int(min_keep))


def temp(t: float = 0.8) -> Sampler:
    """Divide the logits by the temperature (``--temp``; <= 0 keeps only the most likely)."""
    return _make(lib.llama_sampler_init_temp, "temp", float(t))


def temp_ext(t: float = 0.8, delta: float = 0.0, exponent: float = 1.0) -> Sampler:
    """Dynamic temperature in [t - delta, t + delta] by entropy
    (``--dynatemp-range``, ``--dynatemp-exp``)."""
    return _make(lib.llama_sampler_init_temp_ext, "temp-ext", float(t), float(delta),
                 float(exponent))


def xtc(probability: float = 0.0, threshold: float = 0.1, min_keep: int = 1,
        seed: int = DEFAULT_SEED) -> Sampler:
    """Exclude Top Choices (``--xtc-probability``, ``--xtc-threshold``)."""
    return _make(lib.llama_sampler_init_xtc, "xtc", float(probability), float(threshold),
                 int(min_keep), int(seed) & 0xFFFFFFFF)


def top_n_sigma(n: float = -1.0) -> Sampler:
    """Keep tokens within n standard deviations of the top logit (``--top-n-sigma``; -1 = off)."""
    return _make(lib.llama_sampler_init_top_n_sigma, "top-n-sigma", float(n))


def mirostat(vocab: Vocab | Model, tau: float = 5.0, eta: float = 0.1, m: int = 100,
             seed: int = DEFAULT_SEED) -> Sampler:
    """Mirostat 1.0 (``--mirostat 1``, ``--mirostat-ent``, ``--mirostat-lr``); selects."""
    v = _vocab_of(vocab)
    return _make(lib.llama_sampler_init_mirostat, "mirostat", v.n_tokens,
                 int(seed) & 0xFFFFFFFF, float(tau), float(eta), int(m), selects=True, vocab=v)


def mirostat_v2(tau: float = 5.0, eta: float = 0.1, seed: int = DEFAULT_SEED) -> Sampler:
    """Mirostat 2.0 (``--mirostat 2``); selects."""
    return _make(lib.llama_sampler_init_mirostat_v2, "mirostat-v2", int(seed) & 0xFFFFFFFF,
                 float(tau), float(eta), selects=True)


def adaptive_p(target: float, decay: float = 0.9, seed: int = DEFAULT_SEED) -> Sampler:
    """Select tokens near a target probability (``--adaptive-target``, ``--adaptive-decay``)."""
    return _make(lib.llama_sampler_init_adaptive_p, "adaptive-p", float(target), float(decay),
                 int(seed) & 0xFFFFFFFF, selects=True)


def penalties(last_n: int = 64, repeat: float = 1.0, frequency: float = 0.0,
              presence: float = 0.0, *, n_vocab: int = 0) -> Sampler:
    """Repetition penalties over the last ``last_n`` tokens (``--repeat-last-n``,
    ``--repeat-penalty``, ``--frequency-penalty``, ``--presence-penalty``)."""
    if repeat <= 0:
        raise ValueError("repeat penalty must be > 0 (1.0 disables it)")
    return _make(lib.llama_sampler_init_penalties, "penalties", int(n_vocab), int(last_n),
                 float(repeat), float(frequency), float(presence))


DRY_SEQUENCE_BREAKERS = ("\n", ":", '"', "*")


def dry(vocab: Vocab | Model, multiplier: float = 0.0, base: float = 1.75,
        allowed_length: int = 2, penalty_last_n: int = 64,
        sequence_breakers: Sequence[str] = DRY_SEQUENCE_BREAKERS) -> Sampler:
    """DRY repetition penalty (``--dry-multiplier``, ``--dry-base``,
    ``--dry-allowed-length``, ``--dry-penalty-last-n``, ``--dry-sequence-breaker``)."""
    v = _vocab_of(vocab)
    strings = [ffi.new("char[]", s.encode()) for s in sequence_breakers]
    arr = ffi.new("const char *[]", strings or [ffi.NULL])
    return _make(lib.llama_sampler_init_dry, "dry", v.ptr, float(multiplier), float(base),
                 int(allowed_length), int(penalty_last_n), arr, len(strings), vocab=v,
                 keep=(strings, arr))


def logit_bias(vocab: Vocab | Model, biases: Mapping[int, float]) -> Sampler:
    """Add ``bias`` to the logits of the given token ids (``--logit-bias ID(+/-)BIAS``;
    ``float('-inf')`` forbids a token)."""
    v = _vocab_of(vocab)
    items = [(v.check_token(t), float(b)) for t, b in biases.items()]
    arr = ffi.new("llama_logit_bias[]", max(1, len(items)))
    for i, (t, b) in enumerate(items):
        arr[i].token = t
        arr[i].bias = b
    return _make(lib.llama_sampler_init_logit_bias, "logit-bias", v.n_tokens, len(items), arr,
                 vocab=v, keep=(arr,))


def infill(vocab: Vocab | Model) -> Sampler:
    """Fill-in-the-middle sampler: prefers end-of-generation and merges equal prefixes."""
    v = _vocab_of(vocab)
    return _make(lib.llama_sampler_init_infill, "infill", v.ptr, vocab=v)


def grammar(vocab: Vocab | Model, gbnf: str | Any, root: str = "root") -> Sampler:
    """Constrain output to a GBNF grammar (``--grammar``); ``gbnf`` is a string
    or a :class:`~llama_cffi.Grammar`."""
    from .grammar import Grammar

    g = gbnf if isinstance(gbnf, Grammar) else Grammar(gbnf, root=root)
    return g.sampler(vocab)


# -- candidates and Python samplers ----------------------------------------------------


class Candidates:
    """The candidate tokens a sampler works on (``llama_token_data_array``).

    ``ids``, ``logits`` and ``p`` are numpy views of the first ``size``
    entries: modify them in place. Shrink ``size`` to drop the tail (sort
    first), set ``selected`` to pick one. After a Python sampler's ``apply``
    the array counts as unsorted unless it sets ``sorted = True`` itself
    (llama.cpp's samplers trust that flag). Views are valid only during the
    call that received them.
    """

    def __init__(self, struct: Any) -> None:
        self.struct = struct
        self._sorted_set = False

    @classmethod
    def from_logits(cls, logits: np.ndarray) -> Candidates:
        """Candidates for every token from a logits vector (for testing samplers)."""
        if len(logits) == 0:
            raise ValueError("candidates need at least one token")
        data = ffi.new("llama_token_data[]", len(logits))
        view = np.frombuffer(ffi.buffer(data), dtype=TOKEN_DATA)
        view["id"] = np.arange(len(logits), dtype=np.int32)
        view["logit"] = logits
        view["p"] = 0
        struct = ffi.new("llama_token_data_array *")
        struct.data = data
        struct.size = len(logits)
        struct.selected = -1
        struct.sorted = False
        c = cls(struct)
        c._keep = data
        return c

    def _view(self) -> np.ndarray:
        s = self.struct
        return np.frombuffer(ffi.buffer(s.data, s.size * TOKEN_DATA.itemsize), dtype=TOKEN_DATA)

    @property
    def size(self) -> int:
        return int(self.struct.size)

    @size.setter
    def size(self, n: int) -> None:
        if not 0 < n <= self.struct.size:
            raise ValueError(f"size can only shrink, to 1..{self.struct.size}")
        self.struct.size = n

    @property
    def ids(self) -> np.ndarray:
        return self._view()["id"]

    @property
    def logits(self) -> np.ndarray:
        return self._view()["logit"]

    @property
    def p(self) -> np.ndarray:
        return self._view()["p"]

    @property
    def selected(self) -> int:
        return int(self.struct.selected)

    @selected.setter
    def selected(self, i: int) -> None:
        if not -1 <= i < self.struct.size:
            raise IndexError(f"selected must be -1..{self.struct.size - 1}")
        self.struct.selected = i

    @property
    def sorted(self) -> bool:
        return bool(self.struct.sorted)

    @sorted.setter
    def sorted(self, value: bool) -> None:
        self._sorted_set = True
        self.struct.sorted = bool(value)

    def selected_token(self) -> int:
        s = self.struct
        if not 0 <= s.selected < s.size:
            raise LlamaError("no token was selected")
        return int(s.data[s.selected].id)


class PythonSampler:
    """Base class for samplers written in Python.

    Override :meth:`apply` (required; works on a :class:`Candidates`), and
    optionally :meth:`accept` and :meth:`reset`. Set ``selects = True`` if
    ``apply`` sets ``candidates.selected``. Use :meth:`to_sampler` (or pass
    the object to ``SamplerChain.add``) to take part in a chain like a
    built-in sampler. If a method raises, the chain's ``sample`` raises the
    same exception.
    """

    name = "python"
    selects = False

    def apply(self, candidates: Candidates) -> None:
        raise NotImplementedError

    def accept(self, token: int) -> None:
        """Called with every token the chain accepts."""

    def reset(self) -> None:
        """Called when the chain is reset."""

    def to_sampler(self) -> Sampler:
        ensure_initialised()
        state = _PyState(self)
        ptr = lib.llama_sampler_init(_py_iface(), state.handle)
        _live_states.add(state)  # until llama.cpp calls iface.free
        return Sampler(ptr, self.name, selects=self.selects, kind="python", keep=(state,))


class _PyState:
    def __init__(self, obj: PythonSampler) -> None:
        self.obj = obj
        self.name = ffi.new("char[]", obj.name.encode())
        self.error: BaseException | None = None
        self.handle = ffi.new_handle(self)


_live_states: set[_PyState] = set()
_iface: Any = None


def _py_iface() -> Any:
    global _iface
    if _iface is None:
        iface = ffi.new("struct llama_sampler_i *")
        iface.name = lib._llama_cffi_smpl_name
        iface.accept = lib._llama_cffi_smpl_accept
        iface.apply = lib._llama_cffi_smpl_apply
        iface.reset = lib._llama_cffi_smpl_reset
        iface.free = lib._llama_cffi_smpl_free
        _iface = iface  # lives for the whole process, like llama.cpp's static ifaces
    return _iface


def _state(smpl: Any) -> _PyState:
    return ffi.from_handle(smpl.ctx)


@ffi.def_extern()
def _llama_cffi_smpl_name(smpl):  # type: ignore[no-untyped-def]
    return _state(smpl).name


@ffi.def_extern()
def _llama_cffi_smpl_accept(smpl, token):  # type: ignore[no-untyped-def]
    st = _state(smpl)
    try:
        st.obj.accept(int(token))
    except BaseException as exc:  # noqa: BLE001 - re-raised by SamplerChain
        st.error = st.error or exc


@ffi.def_extern()
def _llama_cffi_smpl_apply(smpl, cur_p):  # type: ignore[no-untyped-def]
    st = _state(smpl)
    cands = Candidates(cur_p)
    try:
        st.obj.apply(cands)
    except BaseException as exc:  # noqa: BLE001 - re-raised by SamplerChain
        st.error = st.error or exc
    if not cands._sorted_set:
        cur_p.sorted = False


@ffi.def_extern()
def _llama_cffi_smpl_reset(smpl):  # type: ignore[no-untyped-def]
    st = _state(smpl)
    try:
        st.obj.reset()
    except BaseException as exc:  # noqa: BLE001 - re-raised by SamplerChain
        st.error = st.error or exc


@ffi.def_extern()
def _llama_cffi_smpl_free(smpl):  # type: ignore[no-untyped-def]
    _live_states.discard(_state(smpl))


# -- chains ---------------------------------------------------------------------------


def _free_chain(ptr: Any, keep: Any) -> None:
    # ``keep`` (vocabularies, C buffers, Python sampler states) outlives the chain.
    lib.llama_sampler_free(ptr)


class SamplerChain(Handle):
    """An ordered chain of samplers that picks one token per call to :meth:`sample`.

    no_perf: skip llama.cpp's timing of the chain (``perf()``).
    """

    def __init__(self, samplers: Iterable[Sampler | PythonSampler] = (), *,
                 no_perf: bool = True) -> None:
        ensure_initialised()
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = bool(no_perf)
        self._keep: list[Any] = []
        self._own(lib.llama_sampler_chain_init(params), _free_chain, self._keep)
        self._names: list[str] = []
        self._kinds: list[str] = []
        self._py_states: list[_PyState] = []
        self._selects = False
        self._lock = threading.Lock()
        self._cands: tuple[Any, Any, np.ndarray, np.ndarray] | None = None
        self._one: Candidates | None = None
        for s in samplers:
            self.add(s)

    def add(self, sampler: Sampler | PythonSampler) -> SamplerChain:
        """Append ``sampler``; the chain takes ownership of it."""
        if isinstance(sampler, PythonSampler):
            sampler = sampler.to_sampler()
        chain = self.ptr
        if sampler.closed:
            raise LlamaError(f"{sampler.name} sampler is closed or already in a chain")
        if sampler.vocab is not None:
            sampler.vocab._model._adopt(self)  # closing the model closes this chain first
        self._keep.append((sampler.vocab, sampler._keep))
        self._py_states.extend(k for k in sampler._keep if isinstance(k, _PyState))
        lib.llama_sampler_chain_add(chain, sampler._release())
        self._names.append(sampler.name)
        self._kinds.append(sampler.kind)
        self._selects = sampler.selects
        return self

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return int(lib.llama_sampler_chain_n(self.ptr))

    def _stepwise(self) -> bool:
        return "grammar" in self._kinds or "python" in self._kinds

    def _raise_python_error(self) -> None:
        for st in self._py_states:
            if st.error is not None:
                err, st.error = st.error, None
                raise err

    def sample(self, ctx: Context, idx: int = -1) -> int:
        """Pick a token from the output at batch index ``idx`` of ``ctx``'s last
        decode, and accept it (stateful samplers and grammars advance)."""
        chain = self.ptr
        if not self._selects:
            raise LlamaError(
                "the sampler chain does not end with a selecting sampler "
                "(add greedy(), dist(), mirostat() or adaptive_p())")
        if not self._lock.acquire(False):
            raise LlamaError("this sampler chain is being used by another thread")
        try:
            c = ctx._enter()  # sampling reads the context's outputs: no decode meanwhile
            try:
                logits_ptr = lib.llama_get_logits_ith(c, idx)
                if logits_ptr == ffi.NULL:
                    raise LlamaError(
                        f"no logits for output {idx}: decode a batch with that output first")
                if not self._stepwise():
                    return int(lib.llama_sampler_sample(chain, c, idx))
                return self._sample_stepwise(chain, logits_ptr, ctx.vocab.n_tokens)
            finally:
                ctx._lock.release()
        finally:
            self._lock.release()

    def _fill(self, logits_ptr: Any, n_vocab: int) -> Candidates:
        """Candidates for every token from the context's logits, in a reused buffer."""
        if self._cands is None or len(self._cands[2]) != n_vocab:
            data = ffi.new("llama_token_data[]", n_vocab)
            view = np.frombuffer(ffi.buffer(data), dtype=TOKEN_DATA)
            self._cands = (data, ffi.new("llama_token_data_array *"), view,
                           np.arange(n_vocab, dtype=np.int32))
        data, cur, view, ids = self._cands
        view["id"] = ids
        view["logit"] = np.frombuffer(ffi.buffer(logits_ptr, n_vocab * 4), dtype=np.float32)
        view["p"] = 0.0
        cur.data, cur.size, cur.selected, cur.sorted = data, n_vocab, -1, False
        return Candidates(cur)

    def _grammar_allows(self, chain: Any, token: int) -> bool:
        one = self._one
        if one is None:
            one = self._one = Candidates.from_logits(np.zeros(1, dtype=np.float32))
        for i, kind in enumerate(self._kinds):
            if kind == "grammar":
                one.struct.size = 1
                one.ids[0] = token
                one.logits[0] = 0.0
                lib.llama_sampler_apply(lib.llama_sampler_chain_get(chain, i), one.struct)
                if not np.isfinite(one.logits[0]):
                    return False
        return True

    def _sample_stepwise(self, chain: Any, logits_ptr: Any, n_vocab: int) -> int:
        has_grammar = "grammar" in self._kinds
        if has_grammar:
            # llama.cpp's own shortcut (common_sampler_sample): sample without the
            # grammar, keep the token if the grammar allows it; only otherwise pay
            # for constraining the whole vocabulary and sample again.
            cands = self._fill(logits_ptr, n_vocab)
            for i, kind in enumerate(self._kinds):
                if kind != "grammar":
                    lib.llama_sampler_apply(lib.llama_sampler_chain_get(chain, i), cands.struct)
                    if kind == "python":
                        self._raise_python_error()
            token = cands.selected_token()
            if self._grammar_allows(chain, token):
                lib.llama_sampler_accept(chain, token)
                self._raise_python_error()
                return token
        cands = self._fill(logits_ptr, n_vocab)
        cur = cands.struct
        for i, kind in enumerate(self._kinds):
            lib.llama_sampler_apply(lib.llama_sampler_chain_get(chain, i), cur)
            if kind == "python":
                self._raise_python_error()
            elif kind == "grammar" and not np.isfinite(cands.logits).any():
                raise GrammarError(
                    "the grammar allows no token here: the output so far cannot be continued "
                    "(the grammar may need an end-of-generation token the model cannot produce, "
                    "or the sampler state was not reset between outputs)")
        token = cands.selected_token()
        if has_grammar and not np.isfinite(cur.data[cur.selected].logit):
            raise GrammarError("the chain selected a token the grammar forbids")
        lib.llama_sampler_accept(chain, token)
        self._raise_python_error()
        return token

    def accept(self, token: int) -> None:
        """Tell stateful samplers (penalties, grammar) that ``token`` was chosen.

        A token the chain's grammar forbids raises GrammarError (llama.cpp
        would abort the process).
        """
        chain = self.ptr
        t = int(token)
        if "grammar" in self._kinds and not self._grammar_allows(chain, t):
            raise GrammarError(f"token {t} is not allowed by the grammar here")
        lib.llama_sampler_accept(chain, t)
        self._raise_python_error()

    def apply(self, candidates: Candidates) -> None:
        """Run the whole chain on ``candidates`` without accepting (for testing)."""
        lib.llama_sampler_apply(self.ptr, candidates.struct)
        self._raise_python_error()

    def reset(self) -> None:
        """Reset every sampler's state (penalty history, grammar position, RNG stays seeded)."""
        lib.llama_sampler_reset(self.ptr)
        self._raise_python_error()

    @property
    def seed(self) -> int | None:
        """The seed of the chain's random sampler, or None."""
        s = int(lib.llama_sampler_get_seed(self.ptr))
        return None if s == DEFAULT_SEED else s

    def perf(self) -> dict[str, float]:
        """llama.cpp's counters for the chain (needs ``no_perf=False``)."""
        d = lib.llama_perf_sampler(self.ptr)
        return {"t_sample_ms": d.t_sample_ms, "n_sample": d.n_sample}

    def perf_reset(self) -> None:
        lib.llama_perf_sampler_reset(self.ptr)

    def __repr__(self) -> str:
        return f"<SamplerChain {' -> '.join(self._names) or '(empty)'}>"

    # -- construction from settings ---------------------------------------------------

    @classmethod
    def from_params(cls, vocab: Vocab | Model, **params: Any) -> SamplerChain:
        """The chain llama.cpp's tools build from these settings (``common_sampler_init``).

        Accepts the names of llama-server's request fields: ``temperature``
        (or ``temp``), ``top_k``, ``top_p``, ``min_p``, ``typical_p``,
        ``xtc_probability``, ``xtc_threshold``, ``top_n_sigma``,
        ``repeat_penalty``, ``repeat_last_n``, ``frequency_penalty``,
        ``presence_penalty``, ``dry_multiplier``, ``dry_base``,
        ``dry_allowed_length``, ``dry_penalty_last_n``,
        ``dry_sequence_breakers``, ``dynatemp_range``, ``dynatemp_exponent``,
        ``mirostat`` (0/1/2), ``mirostat_tau``, ``mirostat_eta``, ``seed``,
        ``min_keep``, ``logit_bias`` ({token: bias}), ``grammar`` (GBNF or
        :class:`~llama_cffi.Grammar`), ``samplers`` (order, e.g.
        ``["top_k", "top_p", "min_p", "temperature"]``), ``adaptive_target``,
        ``adaptive_decay``. Unset values take llama.cpp's defaults; a
        temperature <= 0 gives greedy decoding.
        """
        return build_chain(_vocab_of(vocab), dict(params))

    @classmethod
    def from_model_defaults(cls, model: Model, **overrides: Any) -> SamplerChain:
        """A chain from the sampling settings stored in the GGUF
        (``general.sampling.*``), then ``overrides``."""
        return build_chain(model.vocab, {**model_sampling_defaults(model), **overrides})


# -- settings -> chain (common/sampling.cpp's order) -----------------------------------

DEFAULTS: dict[str, Any] = {
    "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "typical_p": 1.0,
    "xtc_probability": 0.0, "xtc_threshold": 0.1, "top_n_sigma": -1.0,
    "repeat_penalty": 1.0, "repeat_last_n": 64, "frequency_penalty": 0.0,
    "presence_penalty": 0.0, "dry_multiplier": 0.0, "dry_base": 1.75,
    "dry_allowed_length": 2, "dry_penalty_last_n": 64,
    "dry_sequence_breakers": list(DRY_SEQUENCE_BREAKERS), "dynatemp_range": 0.0,
    "dynatemp_exponent": 1.0, "mirostat": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1,
    "seed": DEFAULT_SEED, "min_keep": 0, "logit_bias": None, "grammar": None,
    "adaptive_target": -1.0, "adaptive_decay": 0.9,
    "samplers": ["penalties", "dry", "top_n_sigma", "top_k", "typical_p", "top_p", "min_p",
                 "xtc", "temperature"],
}
_ALIASES = {"temp": "temperature", "typ_p": "typical_p", "penalty_repeat": "repeat_penalty",
            "penalty_last_n": "repeat_last_n", "penalty_freq": "frequency_penalty",
            "penalty_present": "presence_penalty", "dynatemp_exp": "dynatemp_exponent",
            "mirostat_ent": "mirostat_tau", "mirostat_lr": "mirostat_eta",
            "typical": "typical_p"}
_SAMPLER_NAMES = {"penalties": "penalties", "dry": "dry", "top_n_sigma": "top_n_sigma",
                  "top_k": "top_k", "typical_p": "typical_p", "typ_p": "typical_p",
                  "top_p": "top_p", "min_p": "min_p", "xtc": "xtc",
                  "temperature": "temperature", "temp": "temperature", "infill": "infill",
                  "adaptive_p": "adaptive_p",
                  # llama.cpp's one-letter --sampling-seq names
                  "e": "penalties", "d": "dry", "s": "top_n_sigma", "k": "top_k",
                  "y": "typical_p", "p": "top_p", "m": "min_p", "x": "xtc",
                  "t": "temperature", "i": "infill", "a": "adaptive_p"}


def _normalise(params: dict[str, Any]) -> dict[str, Any]:
    out = dict(DEFAULTS)
    for key, value in params.items():
        key = _ALIASES.get(key, key)
        if key not in DEFAULTS:
            raise TypeError(f"unknown sampling parameter {key!r}; known: {', '.join(DEFAULTS)}")
        if value is not None:
            out[key] = value
    seq = out["samplers"]
    if isinstance(seq, str):
        seq = list(seq) if ";" not in seq and len(seq) <= 12 and seq.isalpha() \
            and all(c in _SAMPLER_NAMES for c in seq) else seq.split(";")
    try:
        out["samplers"] = [_SAMPLER_NAMES[s.strip().lower().replace("-", "_")] for s in seq]
    except KeyError as exc:
        raise ValueError(f"unknown sampler {exc.args[0]!r} in samplers") from None
    return out


def build_chain(vocab: Vocab, params: dict[str, Any]) -> SamplerChain:
    p = _normalise(params)
    seed = int(p["seed"])
    mk = int(p["min_keep"])
    chain = SamplerChain()
    try:
        if p["grammar"] is not None:
            chain.add(grammar(vocab, p["grammar"]))
        if p["logit_bias"]:
            chain.add(logit_bias(vocab, p["logit_bias"]))
        if p["temperature"] <= 0 and p["mirostat"] == 0:
            # llama.cpp runs its whole chain with temperature 0, which keeps only
            # the arg-max of the penalised logits; the filters in between (top-k,
            # top-p, min-p, ...) cannot change the arg-max. Same token, at the
            # cost of the penalties and one scan instead of a chain of sorts.
            if "penalties" in p["samplers"] and (p["repeat_penalty"] != 1.0 or
                                                 p["frequency_penalty"] or p["presence_penalty"]):
                chain.add(penalties(p["repeat_last_n"], p["repeat_penalty"],
                                    p["frequency_penalty"], p["presence_penalty"]))
            if "dry" in p["samplers"] and p["dry_multiplier"] > 0:
                chain.add(dry(vocab, p["dry_multiplier"], p["dry_base"], p["dry_allowed_length"],
                              p["dry_penalty_last_n"], p["dry_sequence_breakers"]))
            chain.add(greedy())
            return chain
        if p["mirostat"] == 1:
            chain.add(temp(p["temperature"]))
            chain.add(mirostat(vocab, p["mirostat_tau"], p["mirostat_eta"], 100, seed))
            return chain
        if p["mirostat"] == 2:
            chain.add(temp(p["temperature"]))
            chain.add(mirostat_v2(p["mirostat_tau"], p["mirostat_eta"], seed))
            return chain
        if p["mirostat"] not in (0, 1, 2):
            raise ValueError("mirostat must be 0, 1 or 2")
        use_adaptive = False
        for name in p["samplers"]:
            if name == "penalties":
                chain.add(penalties(p["repeat_last_n"], p["repeat_penalty"],
                                    p["frequency_penalty"], p["presence_penalty"]))
            elif name == "dry":
                chain.add(dry(vocab, p["dry_multiplier"], p["dry_base"], p["dry_allowed_length"],
                              p["dry_penalty_last_n"], p["dry_sequence_breakers"]))
            elif name == "top_n_sigma":
                chain.add(top_n_sigma(p["top_n_sigma"]))
            elif name == "top_k":
                chain.add(top_k(p["top_k"]))
            elif name == "typical_p":
                chain.add(typical(p["typical_p"], mk))
            elif name == "top_p":
                chain.add(top_p(p["top_p"], mk))
            elif name == "min_p":
                chain.add(min_p(p["min_p"], mk))
            elif name == "xtc":
                chain.add(xtc(p["xtc_probability"], p["xtc_threshold"], mk, seed))
            elif name == "temperature":
                chain.add(temp_ext(p["temperature"], p["dynatemp_range"], p["dynatemp_exponent"]))
            elif name == "infill":
                chain.add(infill(vocab))
            elif name == "adaptive_p":
                use_adaptive = True
        if use_adaptive:
            chain.add(adaptive_p(p["adaptive_target"], p["adaptive_decay"], seed))
        else:
            chain.add(dist(seed))
    except BaseException:
        chain.close()
        raise
    return chain


_META_KEYS = {
    "top_k": ("LLAMA_MODEL_META_KEY_SAMPLING_TOP_K", int),
    "top_p": ("LLAMA_MODEL_META_KEY_SAMPLING_TOP_P", float),
    "min_p": ("LLAMA_MODEL_META_KEY_SAMPLING_MIN_P", float),
    "xtc_probability": ("LLAMA_MODEL_META_KEY_SAMPLING_XTC_PROBABILITY", float),
    "xtc_threshold": ("LLAMA_MODEL_META_KEY_SAMPLING_XTC_THRESHOLD", float),
    "temperature": ("LLAMA_MODEL_META_KEY_SAMPLING_TEMP", float),
    "repeat_last_n": ("LLAMA_MODEL_META_KEY_SAMPLING_PENALTY_LAST_N", int),
    "repeat_penalty": ("LLAMA_MODEL_META_KEY_SAMPLING_PENALTY_REPEAT", float),
    "mirostat": ("LLAMA_MODEL_META_KEY_SAMPLING_MIROSTAT", int),
    "mirostat_tau": ("LLAMA_MODEL_META_KEY_SAMPLING_MIROSTAT_TAU", float),
    "mirostat_eta": ("LLAMA_MODEL_META_KEY_SAMPLING_MIROSTAT_ETA", float),
    "samplers": ("LLAMA_MODEL_META_KEY_SAMPLING_SEQUENCE", str),
}


def model_sampling_defaults(model: Model) -> dict[str, Any]:
    """The ``general.sampling.*`` settings a GGUF carries (only those present)."""
    out: dict[str, Any] = {}
    for name, (enum_name, conv) in _META_KEYS.items():
        key = ffi.string(lib.llama_model_meta_key_str(getattr(lib, enum_name))).decode()
        value = model.meta(key)
        if value is not None:
            try:
                out[name] = conv(value)
            except ValueError:
                _log.logger.warning("ignoring malformed %s = %r in the model", key, value)
    return out
