"""Sampler chains: run samplers in order and pick a token; chains from settings.

A :class:`SamplerChain` runs its samplers in order on the candidates of one
output and picks a token. Adding a sampler (see :mod:`.samplers`) or a
:class:`~.samplers.PythonSampler` to a chain hands its C object to the chain,
which frees it. :func:`build_chain` (``SamplerChain.from_params``) builds the
chain llama.cpp's tools build from the same settings. Users import all of it
from :mod:`llama_cffi.sampling`.

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

from collections.abc import Iterable, Sequence
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np

from .._bindings import context as _context
from .._bindings import sampler as _sampler
from .._bindings.callbacks import SamplerState
from .._bindings.raw import CData
from ..errors import GrammarError, LlamaError, TokenError
from .argmax import Bias
from .constraints import GuidanceConstraint, choose
from .context_setup import refuse_sampled
from .grammar import Grammar
from .handle import Handle, UseGuard
from .model_sampling import model_sampling_defaults
from .params import SamplingParams
from .samplers import (
    DEFAULT_SEED,
    Candidates,
    PythonSampler,
    Sampler,
    adaptive_p,
    dist,
    dry,
    greedy,
    infill,
    logit_bias,
    min_p,
    mirostat,
    mirostat_v2,
    penalties,
    temp,
    temp_ext,
    top_k,
    top_n_sigma,
    top_p,
    typical,
    vocab_of,
    xtc,
)

if TYPE_CHECKING:
    from .context import Context
    from .model import Model
    from .vocab import Vocab

__all__ = ["DEFAULTS", "SamplerChain", "build_chain", "chain_for", "grammar",
           "model_sampling_defaults"]


def grammar(vocab: Vocab | Model, gbnf: str | Grammar, root: str = "root") -> Sampler:
    """Constrain output to a GBNF grammar (``--grammar``); ``gbnf`` is a string
    or a :class:`~llama_cffi.Grammar`."""
    g = gbnf if isinstance(gbnf, Grammar) else Grammar(gbnf, root=root)
    return g.sampler(vocab)


# -- chains ---------------------------------------------------------------------------


def _free_chain(ptr: CData, keep: object) -> None:
    # ``keep`` (vocabularies, Python sampler states) outlives the chain.
    _sampler.free(ptr)


class SamplerChain(Handle):
    """An ordered chain of samplers that picks one token per call to :meth:`sample`.

    no_perf: skip llama.cpp's timing of the chain (``perf()``).
    vocab: the vocabulary (or Model) the chain samples for, so that
        :meth:`accept` can refuse ids outside it. Without it the chain learns
        it from its samplers that know it (grammar, logit bias, DRY ...) or
        from the first context it samples.

    Thread safety: one thread at a time. A second thread calling any method
    (``sample``, ``accept``, ``add`` ...) while another is inside one gets a
    LlamaError, and so does a Python sampler of the chain calling back into
    it; ``close()`` (and ``model.close()``) waits for a ``sample`` running on
    another thread to finish.
    """

    def __init__(self, samplers: Iterable[Sampler | PythonSampler] = (), *,
                 no_perf: bool = True, vocab: Vocab | Model | None = None) -> None:
        self._keep: list[object] = []
        self._n_vocab: int | None = None if vocab is None else vocab_of(vocab).n_tokens
        self._own(_sampler.chain_init(bool(no_perf)), _free_chain, self._keep)
        self._names: list[str] = []
        self._kinds: list[str] = []
        self._py_states: list[SamplerState] = []
        self._selects = False
        self._guard = UseGuard("sampler chain")
        self._cands: tuple[CData, CData, np.ndarray, np.ndarray] | None = None
        self._one: Candidates | None = None
        # the biases of a chain that build_chain made as logit-bias -> greedy
        self._bias: Bias | None = None
        self._argmax: bool | None = None  # is_argmax, worked out once per change
        self._constraint: GuidanceConstraint | None = None  # llguidance, before the samplers
        # backend sampling: (context, seq_id) once attached; (None, seq_id) once
        # detached (llama.cpp set the chain up for a graph: it cannot sample alone)
        self._backend: tuple[Context | None, int] | None = None
        try:
            for s in samplers:
                self.add(s)
        except BaseException:
            self.close()  # frees the samplers already added
            raise

    def add(self, sampler: Sampler | PythonSampler) -> SamplerChain:
        """Append ``sampler``; the chain takes ownership of it."""
        if isinstance(sampler, PythonSampler):
            sampler = sampler.to_sampler()
        if not isinstance(sampler, Sampler):
            raise TypeError(f"a chain takes Sampler or PythonSampler objects, not "
                            f"{type(sampler).__name__}")
        with self._guard:
            self._add(self.ptr, sampler)
        return self

    def _add(self, chain: CData, sampler: Sampler) -> None:
        if sampler.closed:
            raise LlamaError(f"{sampler.name} sampler is closed or already in a chain")
        if sampler.vocab is not None:
            sampler.vocab.owner._adopt(self)  # closing the model closes this chain first
            if self._n_vocab is None:
                self._n_vocab = sampler.vocab.n_tokens
        self._keep.append((sampler.vocab, sampler._keep))
        self._py_states.extend(sampler._python)
        _sampler.chain_add(chain, sampler._release())
        self._names.append(sampler.name)
        self._kinds.append(sampler.kind)
        self._selects = sampler.selects
        self._argmax = None

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        with self._guard:
            return _sampler.chain_n(self.ptr)

    def _stepwise(self) -> bool:
        return "grammar" in self._kinds or "python" in self._kinds or \
            self._constraint is not None

    @property
    def is_argmax(self) -> bool:
        """Whether the chain picks the arg-max of the logits: ``greedy`` alone,
        or after the logit bias :func:`build_chain` adds (``logit_bias``,
        ``ignore_eos``). Such a chain reads the logits in place instead of
        filling an n_vocab candidate array as ``llama_sampler_sample`` does
        (about 15 µs instead of 200 µs a token for a 49k vocabulary), with the
        same result (see :func:`~llama_cffi.objects.argmax.sample_argmax`)."""
        if self._argmax is None:
            names = self._names
            self._argmax = (names == ["greedy"] or (names == ["logit-bias", "greedy"] and
                                                    self._bias is not None)) \
                and not self._stepwise() and self._backend is None
        return self._argmax

    def _argmax_bias(self) -> tuple[np.ndarray, np.ndarray, bool, frozenset[int]] | None:
        """The bias an :attr:`is_argmax` chain adds before its arg-max."""
        bias = self._bias
        return None if bias is None or len(self._names) != 2 else bias

    def sample(self, ctx: Context, idx: int = -1) -> int:
        """Pick a token from the output at batch index ``idx`` of ``ctx``'s last
        decode, and accept it (stateful samplers and grammars advance)."""
        if not self._selects:
            self.ptr  # a closed chain raises ClosedError first
            raise LlamaError(
                "the sampler chain does not end with a selecting sampler "
                "(add greedy(), dist(), mirostat() or adaptive_p())")
        with self._guard:
            chain = self.ptr
            c = ctx._enter()  # sampling reads the context's outputs: no decode meanwhile
            try:
                if self._n_vocab is None:
                    self._n_vocab = ctx.vocab.n_tokens
                if self._backend is not None:
                    return self._sample_backend(ctx, chain, c, idx)
                if ctx._sampled is not None:  # the graph sampled that output: no logits
                    refuse_sampled(ctx._sampled, idx)
                if self.is_argmax:  # read in place (see sample_argmax)
                    return _context.argmax_rows(c, [idx], [chain], [self._argmax_bias()],
                                                ctx.vocab.n_tokens)[0]
                if not self._stepwise():
                    if not _context.has_logits(c, idx):
                        raise _no_logits(idx)
                    return _sampler.sample(chain, c, idx, self._py_states)
                # a view of llama.cpp's buffer, used only while the context is held
                logits = _context.logits_view(c, idx, ctx.vocab.n_tokens)
                if logits is None:
                    raise _no_logits(idx)
                if self._constraint is not None:
                    return self._constraint.sample(logits, self._pick, self._names == ["greedy"])
                return self._sample_stepwise(chain, logits)
            finally:
                ctx._leave()

    def _sample_backend(self, ctx: Context, chain: CData, c: CData, idx: int) -> int:
        """sample() of a chain attached for backend sampling (chain and context held)."""
        owner, seq_id = self._backend  # type: ignore[misc]
        if owner is None:
            raise LlamaError("this chain was detached from backend sampling; llama.cpp set "
                             "it up for the graph, so it cannot sample on its own: build a "
                             "new chain")
        if owner is not ctx:
            raise LlamaError("this chain samples inside the graph of the context it is "
                             "attached to, not another one")
        token, rest = _context.backend_output(c, idx)
        if token < 0 and not rest:
            raise LlamaError(f"output {idx} was not sampled by this chain: it is not an "
                             f"output of sequence {seq_id}")
        if token >= 0:  # selected in the graph: accept it (llama.cpp's sample() would)
            _sampler.accept(chain, token, self._py_states)
            return token
        # the chain's remaining samplers run on the candidates the graph left
        return _sampler.sample(chain, c, idx, self._py_states)

    def attach(self, ctx: Context, seq_id: int = 0) -> bool:
        """Sample the outputs of sequence ``seq_id`` of ``ctx`` inside the model's
        graph (llama.cpp's backend sampling: ``-bs``/``--backend-sampling``,
        llama-server's ``backend_sampling`` field; ``llama_set_sampler``).

        The samplers llama.cpp can run in the graph (greedy, dist, top-k,
        top-p, min-p, temperature, penalties, logit bias), from the start of
        the chain, run there: a chain made only of them selects the token in
        the graph, and llama.cpp keeps no logits for those outputs
        (:meth:`Context.logits` refuses them). The rest of the chain runs on
        the CPU over the candidates the graph left. :meth:`sample` with
        ``ctx`` then reads the result. Grammar and Python samplers cannot run
        in the graph (LlamaError, as llama.cpp turns backend sampling off for
        a grammar).

        A chain is attached once in its life: llama.cpp sets it up for the
        context's graph, after which it cannot sample on its own.
        :meth:`detach` (or closing the chain) ends it. Returns False when
        llama.cpp cannot offload the chain (it says why in its log); the chain
        is then unchanged and samples on the CPU.
        """
        with self._guard:
            chain = self.ptr
            if self._backend is not None:
                raise LlamaError("a chain is attached for backend sampling once; build a "
                                 "new chain")
            if self._stepwise():
                raise LlamaError("grammar and Python samplers cannot run inside the graph "
                                 "(backend sampling)")
            if not self._selects:
                raise LlamaError("the sampler chain does not end with a selecting sampler")
            if self._n_vocab is not None and self._n_vocab != ctx.vocab.n_tokens:
                raise LlamaError("the chain was made for another vocabulary")
            if not ctx._set_sampler(seq_id, self, chain):
                return False
            self._backend = (ctx, seq_id)
            self._argmax = False
            return True

    @property
    def attached(self) -> bool:
        """Whether the chain is attached to a context for backend sampling."""
        return self._backend is not None and self._backend[0] is not None

    def detach(self) -> None:
        """End backend sampling (:meth:`attach`); the chain can no longer sample."""
        with self._guard:
            self._detach()

    def _detach(self) -> None:
        if self._backend is None:
            return
        ctx, seq_id = self._backend
        if ctx is None:
            return
        if not ctx.closed:  # a closed context forgot it with everything else
            ctx._set_sampler(seq_id, None, None)
        self._backend = (None, seq_id)

    def _fill(self, logits: np.ndarray, only: np.ndarray | None = None) -> Candidates:
        """Candidates for every token (or the tokens ``only``) from the context's
        logits, in a reused buffer."""
        n_vocab = len(logits)
        if self._cands is None or len(self._cands[2]) != n_vocab:
            data, cur, view = _sampler.new_candidates(n_vocab)
            self._cands = (data, cur, view, np.arange(n_vocab, dtype=np.int32))
        data, cur, view, ids = self._cands
        n = n_vocab if only is None else len(only)
        view = view[:n]
        view["id"] = ids if only is None else only
        view["logit"] = logits if only is None else logits[only]
        view["p"] = 0.0
        cur.data, cur.size, cur.selected, cur.sorted = data, n, -1, False
        return Candidates(cur, data)

    def _pick(self, logits: np.ndarray, only: np.ndarray) -> int:
        """The chain's choice among the tokens ``only`` (a constraint's), accepted."""
        cands = self._fill(logits, only)
        _sampler.apply(self.ptr, cands.struct, self._py_states, cands._owner)
        token = cands.selected_token()
        _sampler.accept(self.ptr, token, self._py_states)
        return token

    def _grammar_allows(self, chain: CData, token: int) -> bool:
        one = self._one
        if one is None:
            one = self._one = Candidates.from_logits(np.zeros(1, dtype=np.float32))
        for i, kind in enumerate(self._kinds):
            if kind == "grammar":
                one.struct.size = 1
                one.ids[0] = token
                one.logits[0] = 0.0
                _sampler.apply(_sampler.chain_get(chain, i), one.struct)
                if not np.isfinite(one.logits[0]):
                    return False
        return True

    def _sample_stepwise(self, chain: CData, logits: np.ndarray) -> int:
        py = self._py_states
        has_grammar = "grammar" in self._kinds
        if has_grammar:
            # llama.cpp's own shortcut (common_sampler_sample): sample without the
            # grammar, keep the token if the grammar allows it; only otherwise pay
            # for constraining the whole vocabulary and sample again.
            cands = self._fill(logits)
            for i, kind in enumerate(self._kinds):
                if kind != "grammar":
                    _sampler.apply(_sampler.chain_get(chain, i), cands.struct, py, cands._owner)
            token = cands.selected_token()
            if self._grammar_allows(chain, token):
                _sampler.accept(chain, token, py)
                return token
        cands = self._fill(logits)
        cur = cands.struct
        for i, kind in enumerate(self._kinds):
            _sampler.apply(_sampler.chain_get(chain, i), cur, py, cands._owner)
            if kind == "grammar" and not np.isfinite(cands.logits).any():
                raise GrammarError(
                    "the grammar allows no token here: the output so far cannot be continued "
                    "(the grammar may need an end-of-generation token the model cannot produce, "
                    "or the sampler state was not reset between outputs)")
        token = cands.selected_token()
        if has_grammar and not np.isfinite(cur.data[cur.selected].logit):
            raise GrammarError("the chain selected a token the grammar forbids")
        _sampler.accept(chain, token, py)
        return token

    def accept(self, token: int) -> None:
        """Tell stateful samplers (penalties, grammar) that ``token`` was chosen.

        A token the chain's grammar forbids raises GrammarError (llama.cpp
        would abort the process).
        """
        t = _check_token(token, self._n_vocab)
        with self._guard:
            chain = self.ptr
            if "grammar" in self._kinds and not self._grammar_allows(chain, t):
                raise GrammarError(f"token {t} is not allowed by the grammar here")
            if self._constraint is not None:
                self._constraint.consume(t)
            _sampler.accept(chain, t, self._py_states)

    def apply(self, candidates: Candidates) -> None:
        """Run the whole chain on ``candidates`` without accepting (for testing)."""
        with self._guard:
            _sampler.apply(self.ptr, candidates.struct, self._py_states, candidates._owner)

    def reset(self) -> None:
        """Reset every sampler's state (penalty history, grammar position, RNG stays seeded)."""
        with self._guard:
            _sampler.reset(self.ptr, self._py_states)
            if self._constraint is not None:
                self._constraint.reset()

    @property
    def seed(self) -> int | None:
        """The seed of the chain's random sampler, or None."""
        with self._guard:
            s = _sampler.get_seed(self.ptr)
        return None if s == DEFAULT_SEED else s

    def perf(self) -> dict[str, float]:
        """llama.cpp's counters for the chain (needs ``no_perf=False``)."""
        with self._guard:
            return _sampler.perf(self.ptr)

    def perf_reset(self) -> None:
        with self._guard:
            _sampler.perf_reset(self.ptr)

    def close(self) -> None:
        """Free the chain and its samplers, after a ``sample`` running on another
        thread has ended (LlamaError from inside one of the chain's own calls,
        such as a Python sampler's ``apply``). Idempotent."""
        if self._ptr is None:
            return
        self._guard.wait()
        try:
            self._detach()  # the context must not keep a pointer to a freed chain
            if self._constraint is not None:
                self._constraint.close()
            super().close()
        finally:
            self._guard.release()

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
        return build_chain(vocab_of(vocab), dict(params))

    @classmethod
    def from_model_defaults(cls, model: Model, **overrides: Any) -> SamplerChain:
        """A chain from the sampling settings stored in the GGUF
        (``general.sampling.*``), then ``overrides``."""
        return build_chain(model.vocab, {**model_sampling_defaults(model), **overrides})


def _check_token(token: object, n_vocab: int | None) -> int:
    """``token`` as an int id of a vocabulary of ``n_vocab`` tokens (None: not
    known yet: only the sign and the 32-bit range are checked)."""
    if isinstance(token, bool) or not isinstance(token, Integral):
        raise TypeError(f"token must be an integer token id, got {token!r}")
    t = int(token)
    hi = (2**31 if n_vocab is None else n_vocab) - 1
    if not 0 <= t <= hi:
        raise TokenError(f"token id {t} is out of range: "
                         + ("ids are >= 0" if n_vocab is None and t < 0 else
                            f"this vocabulary has ids 0..{hi}"))
    return t


def _no_logits(idx: int) -> LlamaError:
    return LlamaError(f"no logits for output {idx}: decode a batch with that output first")


# -- settings -> chain (common/sampling.cpp's order) -----------------------------------

# The settings a chain is built from are SamplingParams' fields (the single
# source of their names, aliases, validation and defaults) minus the ones that
# only decide when a request stops.
_NOT_CHAIN = ("max_tokens", "stop", "ignore_eos", "logprobs", "json_schema",
              "backend_sampling", "grammar_engine")
DEFAULTS: dict[str, Any] = {
    name: value for name, value in SamplingParams().to_dict().items() if name not in _NOT_CHAIN}


def _normalise(params: dict[str, Any]) -> dict[str, Any]:
    names = SamplingParams.field_names() | set(SamplingParams.ALIASES)
    unknown = [k for k in params if k not in names or
               SamplingParams.ALIASES.get(k, k) in _NOT_CHAIN]
    if unknown:
        raise TypeError(f"unknown sampling parameter {unknown[0]!r}; known: "
                        f"{', '.join(DEFAULTS)}")
    sp = SamplingParams.from_kwargs(None, **{k: v for k, v in params.items() if v is not None})
    out = {name: getattr(sp, name) for name in DEFAULTS}
    out["logit_bias"] = dict(sp.logit_bias) or None
    out["samplers"] = list(sp.samplers)
    out["dry_sequence_breakers"] = list(sp.dry_sequence_breakers)
    return out


def chain_for(vocab: Vocab | Model, sp: SamplingParams, *,
              first: Sequence[Sampler | PythonSampler] = ()) -> SamplerChain:
    """The chain for a request's :class:`SamplingParams` (grammar or JSON schema
    included, on the engine ``sp.grammar_engine`` picks: :mod:`.constraints`);
    ``first``: samplers to run before all others (Python logits processors)."""
    settings = {name: getattr(sp, name) for name in DEFAULTS}
    constraint, settings["grammar"] = choose(vocab_of(vocab), sp)
    try:
        chain = build_chain(vocab_of(vocab), settings, first=first)
    except BaseException:
        if constraint is not None:
            constraint.close()
        raise
    chain._constraint = constraint
    return chain


def build_chain(vocab: Vocab, params: dict[str, Any], *,
                first: Sequence[Sampler | PythonSampler] = ()) -> SamplerChain:
    p = _normalise(params)
    seed = int(p["seed"])
    mk = int(p["min_keep"])
    chain = SamplerChain(vocab=vocab)
    try:
        for stage in first:
            chain.add(stage)
        if p["grammar"] is not None:
            chain.add(grammar(vocab, p["grammar"]))
        if p["logit_bias"]:
            chain.add(logit_bias(vocab, p["logit_bias"]))
            chain._bias = Bias.of(p["logit_bias"], vocab.n_tokens)
            chain._argmax = None
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
