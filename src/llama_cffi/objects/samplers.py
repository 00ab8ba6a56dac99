"""Samplers (``llama_sampler``): the built-in ones, candidates, Python samplers.

Each function here makes one llama.cpp sampler (``top_k(40)``, ``temp(0.8)``,
``dist(seed=1)``, ...); :class:`PythonSampler` is the base class of samplers
written in Python. Chains are in :mod:`.chain`; users import all of it from
:mod:`llama_cffi.sampling`.

Parameter names and defaults are those of llama.cpp's ``common/common.h`` and
its command-line flags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._bindings import sampler as _sampler
from .._bindings.callbacks import SamplerState
from .._bindings.raw import NULL, CData
from .._bindings.sampler import TOKEN_DATA
from ..errors import LlamaError
from .checks import int_arg as _int
from .checks import number_arg as _num
from .checks import seed_arg as _seed
from .handle import Handle, UseGuard
from .vocab import Vocab

if TYPE_CHECKING:
    from .model import Model

__all__ = ["DEFAULT_SEED", "DRY_SEQUENCE_BREAKERS", "TOKEN_DATA", "Candidates", "PythonSampler",
           "Sampler", "adaptive_p", "dist", "dry", "greedy", "infill", "logit_bias", "min_p",
           "mirostat", "mirostat_v2", "penalties", "temp", "temp_ext", "top_k", "top_n_sigma",
           "top_p", "typical", "xtc"]

DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: a random seed


def vocab_of(source: Vocab | Model) -> Vocab:
    """The vocabulary of ``source`` (a Vocab, or a Model)."""
    return source if isinstance(source, Vocab) else source.vocab


class Sampler(Handle):
    """One sampler.

    selects: whether it picks the final token.
    kind: ``"grammar"`` and ``"python"`` samplers make a chain run step by step.

    Thread safety: one thread at a time (a second thread calling :meth:`apply`
    meanwhile gets a LlamaError; ``close()`` waits for it). Adding the sampler
    to a chain hands it over to the chain.
    """

    def __init__(self, ptr: CData, name: str, *, selects: bool = False, kind: str = "builtin",
                 vocab: Vocab | None = None, keep: Sequence[object] = ()) -> None:
        if ptr == NULL:
            raise LlamaError(f"llama.cpp could not create the {name} sampler")
        self._own(ptr, _sampler.free)
        self._guard = UseGuard("sampler")
        self.name = name
        self.selects = selects
        self.kind = kind
        self.vocab = vocab  # keeps the model alive while C points at its vocab
        self._keep = tuple(keep)  # what the sampler needs alive (Python sampler states)
        # Python samplers C calls back into: their exceptions are re-raised after each call.
        self._python = tuple(k for k in self._keep if isinstance(k, SamplerState))
        if vocab is not None:
            vocab.owner._adopt(self)  # closing the model closes this sampler first

    def apply(self, candidates: Candidates) -> None:
        """Run this (not yet chained) sampler on ``candidates``."""
        with self._guard:
            _sampler.apply(self.ptr, candidates.struct, self._python, candidates._owner)

    def _release(self) -> Any:
        with self._guard:
            return super()._release()

    def close(self) -> None:
        """Free the sampler (after an ``apply`` running on another thread). Idempotent."""
        if self._ptr is None:
            return
        self._guard.wait()
        try:
            super().close()
        finally:
            self._guard.release()

    def __repr__(self) -> str:
        return f"<Sampler {self.name}{' (in a chain)' if self.closed else ''}>"


# -- built-in samplers ------------------------------------------------------------

def greedy() -> Sampler:
    """Pick the most likely token (temperature 0)."""
    return Sampler(_sampler.greedy(), "greedy", selects=True)


def dist(seed: int = DEFAULT_SEED) -> Sampler:
    """Draw a token from the distribution; ``seed`` as ``-s/--seed``."""
    return Sampler(_sampler.dist(_seed(seed)), "dist", selects=True)


def top_k(k: int = 40) -> Sampler:
    """Keep the ``k`` most likely tokens (``--top-k``; <= 0 keeps all)."""
    return Sampler(_sampler.top_k(_int(k, "k")), "top-k")


def top_p(p: float = 0.95, min_keep: int = 1) -> Sampler:
    """Keep the smallest set with probability mass >= p (``--top-p``; 1.0 = off)."""
    return Sampler(_sampler.top_p(_num(p, "p"), _int(min_keep, "min_keep", 0)), "top-p")


def min_p(p: float = 0.05, min_keep: int = 1) -> Sampler:
    """Drop tokens less likely than ``p`` times the most likely one (``--min-p``; 0 = off)."""
    return Sampler(_sampler.min_p(_num(p, "p"), _int(min_keep, "min_keep", 0)), "min-p")


def typical(p: float = 1.0, min_keep: int = 1) -> Sampler:
    """Locally typical sampling (``--typical``; 1.0 = off)."""
    return Sampler(_sampler.typical(_num(p, "p"), _int(min_keep, "min_keep", 0)), "typical")


def temp(t: float = 0.8) -> Sampler:
    """Divide the logits by the temperature (``--temp``; <= 0 keeps only the most likely)."""
    return Sampler(_sampler.temp(_num(t, "t")), "temp")


def temp_ext(t: float = 0.8, delta: float = 0.0, exponent: float = 1.0) -> Sampler:
    """Dynamic temperature in [t - delta, t + delta] by entropy
    (``--dynatemp-range``, ``--dynatemp-exp``)."""
    return Sampler(_sampler.temp_ext(_num(t, "t"), _num(delta, "delta"),
                                     _num(exponent, "exponent")), "temp-ext")


def xtc(probability: float = 0.0, threshold: float = 0.1, min_keep: int = 1,
        seed: int = DEFAULT_SEED) -> Sampler:
    """Exclude Top Choices (``--xtc-probability``, ``--xtc-threshold``)."""
    return Sampler(_sampler.xtc(_num(probability, "probability"), _num(threshold, "threshold"),
                                _int(min_keep, "min_keep", 0), _seed(seed)), "xtc")


def top_n_sigma(n: float = -1.0) -> Sampler:
    """Keep tokens within n standard deviations of the top logit (``--top-n-sigma``; -1 = off)."""
    return Sampler(_sampler.top_n_sigma(_num(n, "n")), "top-n-sigma")


def mirostat(vocab: Vocab | Model, tau: float = 5.0, eta: float = 0.1, m: int = 100,
             seed: int = DEFAULT_SEED) -> Sampler:
    """Mirostat 1.0 (``--mirostat 1``, ``--mirostat-ent``, ``--mirostat-lr``); selects."""
    v = vocab_of(vocab)
    args = (_seed(seed), _num(tau, "tau"), _num(eta, "eta"), _int(m, "m"))
    return Sampler(_sampler.mirostat(v.n_tokens, *args), "mirostat", selects=True, vocab=v)


def mirostat_v2(tau: float = 5.0, eta: float = 0.1, seed: int = DEFAULT_SEED) -> Sampler:
    """Mirostat 2.0 (``--mirostat 2``); selects."""
    return Sampler(_sampler.mirostat_v2(_seed(seed), _num(tau, "tau"), _num(eta, "eta")),
                   "mirostat-v2", selects=True)


def adaptive_p(target: float, decay: float = 0.9, seed: int = DEFAULT_SEED) -> Sampler:
    """Select tokens near a target probability (``--adaptive-target``, ``--adaptive-decay``)."""
    return Sampler(_sampler.adaptive_p(_num(target, "target"), _num(decay, "decay"),
                                       _seed(seed)), "adaptive-p", selects=True)


def penalties(last_n: int = 64, repeat: float = 1.0, frequency: float = 0.0,
              presence: float = 0.0, *, n_vocab: int = 0) -> Sampler:
    """Repetition penalties over the last ``last_n`` tokens (``--repeat-last-n``,
    ``--repeat-penalty``, ``--frequency-penalty``, ``--presence-penalty``)."""
    args = (_int(n_vocab, "n_vocab", 0), _int(last_n, "last_n"), _num(repeat, "repeat"),
            _num(frequency, "frequency"), _num(presence, "presence"))
    if args[2] <= 0:
        raise ValueError("repeat penalty must be > 0 (1.0 disables it)")
    return Sampler(_sampler.penalties(*args), "penalties")


DRY_SEQUENCE_BREAKERS = ("\n", ":", '"', "*")


def dry(vocab: Vocab | Model, multiplier: float = 0.0, base: float = 1.75,
        allowed_length: int = 2, penalty_last_n: int = 64,
        sequence_breakers: Sequence[str] = DRY_SEQUENCE_BREAKERS) -> Sampler:
    """DRY repetition penalty (``--dry-multiplier``, ``--dry-base``,
    ``--dry-allowed-length``, ``--dry-penalty-last-n``, ``--dry-sequence-breaker``)."""
    v = vocab_of(vocab)
    if isinstance(sequence_breakers, str) or \
            not all(isinstance(b, str) for b in sequence_breakers):
        raise TypeError(f"sequence_breakers must be a sequence of strings, "
                        f"got {sequence_breakers!r}")
    args = (_num(multiplier, "multiplier"), _num(base, "base"),
            _int(allowed_length, "allowed_length"), _int(penalty_last_n, "penalty_last_n"))
    v.require_tokenizer("make a DRY sampler")
    with v.borrow() as vp:
        return Sampler(_sampler.dry(vp, *args, list(sequence_breakers)), "dry", vocab=v)


def logit_bias(vocab: Vocab | Model, biases: Mapping[int, float]) -> Sampler:
    """Add ``bias`` to the logits of the given token ids (``--logit-bias ID(+/-)BIAS``;
    ``float('-inf')`` forbids a token)."""
    v = vocab_of(vocab)
    items = []
    for t, b in biases.items():
        token = v.check_token(t, "logit_bias token")
        try:
            bias = float(b)
        except (TypeError, ValueError):
            raise ValueError(f"logit_bias value for token {token} must be a number, "
                             f"got {b!r}") from None
        items.append((token, bias))
    return Sampler(_sampler.logit_bias(v.n_tokens, items), "logit-bias", vocab=v)


def infill(vocab: Vocab | Model) -> Sampler:
    """Fill-in-the-middle sampler: prefers end-of-generation and merges equal prefixes."""
    v = vocab_of(vocab)
    v.require_tokenizer("make an infill sampler")
    with v.borrow() as vp:
        return Sampler(_sampler.infill(vp), "infill", vocab=v)


# -- candidates and Python samplers ----------------------------------------------------


class Candidates:
    """The candidate tokens a sampler works on (``llama_token_data_array``).

    ``ids``, ``logits`` and ``p`` are numpy views of the first ``size``
    entries: modify them in place. Shrink ``size`` to drop the tail (sort
    first), set ``selected`` to pick one. After a Python sampler's ``apply``
    the array counts as unsorted unless it sets ``sorted = True`` itself
    (llama.cpp's samplers trust that flag).

    Memory: the views are views of Python-owned token data that they keep
    alive (never of memory C could free under them). The Candidates object
    a Python sampler's ``apply`` receives is valid only during that call:
    using it afterwards raises a LlamaError; views taken from it stay
    readable memory but are overwritten by the next sampling. A Candidates
    made from a raw ``struct`` (``owner`` None) has borrowed views, valid
    only as long as the caller keeps that memory.

    Thread safety: one thread at a time (plain memory, no lock: two threads
    changing the same candidates race on their values).
    """

    def __init__(self, struct: CData, owner: CData | None = None) -> None:
        """struct: a ``llama_token_data_array *``; owner: the ``ffi.new`` token
        data array its ``data`` points into, if Python owns it."""
        self._struct: CData | None = struct
        self._owner = owner
        self._sorted_set = False

    @property
    def struct(self) -> CData:
        """The ``llama_token_data_array *`` (LlamaError once no longer valid)."""
        s = self._struct
        if s is None:
            raise LlamaError("these candidates were passed to a Python sampler's apply() and "
                             "are not valid after it returned: copy what you need inside apply()")
        return s

    @classmethod
    def from_logits(cls, logits: np.ndarray) -> Candidates:
        """Candidates for every token from a logits vector (for testing samplers)."""
        if len(logits) == 0:
            raise ValueError("candidates need at least one token")
        data, struct, view = _sampler.new_candidates(len(logits))
        view["id"] = np.arange(len(logits), dtype=np.int32)
        view["logit"] = logits
        view["p"] = 0
        return cls(struct, data)

    def _view(self) -> np.ndarray:
        s = self.struct
        owner = self._owner
        # samplers may move ``data`` forward (XTC drops the head): find it again
        offset = None if owner is None else _sampler.offset_in(owner, s)
        if owner is None or offset is None:
            return _sampler.candidates_view(s)
        return _sampler.owned_view(owner, offset, int(s.size))

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
    built-in sampler. If a method raises, the call that ran it (the chain's
    ``sample``, ``accept``, ``reset``, ``apply``, or the sampler's own
    ``apply``) raises the same exception.

    Thread safety: its methods run on the thread that samples with the chain
    holding it (one at a time per chain); state shared between several chains
    is the subclass's to protect.
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
        state = SamplerState(self.name, apply=self._apply_struct,
                             accept=lambda token: self.accept(token),
                             reset=lambda: self.reset())
        return Sampler(_sampler.python(state), self.name, selects=self.selects, kind="python",
                       keep=(state,))

    def _apply_struct(self, cur_p: CData) -> None:
        """``apply`` on the ``llama_token_data_array *`` C passes.

        When ``cur_p`` points into Python-owned token data (every chain and
        Candidates of this package), the sampler gets views of it; otherwise it
        works on a Python-owned copy written back afterwards, so that no view
        it keeps can reach memory C frees. Either way the Candidates object is
        invalidated when ``apply`` returns.
        """
        owner = _sampler.lent_token_data()
        offset = None if owner is None else _sampler.offset_in(owner, cur_p)
        copy: CData | None = None
        if owner is not None and offset is not None:
            cands = Candidates(cur_p, owner)
        else:
            owner, copy = _sampler.copy_candidates(cur_p)
            cands = Candidates(copy, owner)
        try:
            self.apply(cands)
        finally:
            cands._struct = None
            if copy is not None:
                _sampler.copy_candidates_back(copy, cur_p)
            if not cands._sorted_set:
                cur_p.sorted = False
