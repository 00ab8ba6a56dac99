"""llama-cpp-python's low-level loop (``eval``, ``sample``, ``generate``) and states,
on the LLM's engine.

``eval(tokens)`` is one engine request that evaluates the tokens evaluated
so far plus ``tokens`` (the engine reuses the common prefix it holds, so
only the new tokens are computed) and records the logits of the last one
with a logits processor. ``sample()`` runs a sampler chain built from the
keywords on those logits. ``save_state``/``load_state`` are
:meth:`LLM.save_state`/:meth:`LLM.load_state`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from ..api.state import LLMState
from ..errors import LlamaError
from ..objects.chain import SamplerChain
from ..objects.samplers import Candidates
from .llama_grammar import LlamaGrammar
from .state import LlamaState, as_int_array, common_prefix

if TYPE_CHECKING:
    from .llama import Llama


class _Capture:
    """A logits processor that keeps a copy of the logits it is shown."""

    def __init__(self) -> None:
        self.logits: np.ndarray | None = None

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        self.logits = np.array(scores, dtype=np.single)
        return scores


def eval_tokens(llama: Llama, tokens: Sequence[int]) -> None:
    llm = llama._require_llm()
    new = [llm.vocab.check_token(t) for t in tokens]
    if not new:
        return
    toks = llama._history + new
    capture = _Capture()
    llm.submit(toks, max_tokens=1, ignore_eos=True, temperature=0.0,
               logits_processors=[capture]).result()
    if capture.logits is None:  # pragma: no cover - the request always samples once
        raise LlamaError("the evaluation produced no logits")
    llama._history = toks
    llama._scores = capture.logits[None, :]


@dataclass(kw_only=True)
class SampleOptions:
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    temp: float = 0.80
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    tfs_z: float = 1.0
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    penalize_nl: bool = True
    logits_processor: Any = None
    grammar: LlamaGrammar | None = None
    idx: int | None = None
    # generate() only
    reset: bool = True
    stopping_criteria: Any = None


def _opts(kwargs: Mapping[str, Any], what: str, allowed: set[str] | None = None) -> SampleOptions:
    names = {f.name for f in fields(SampleOptions)}
    if allowed is not None:
        names &= allowed
    for key in kwargs:
        if key not in names:
            raise TypeError(f"{what}() got an unexpected keyword argument {key!r}")
    return SampleOptions(**kwargs)


def _chain(llama: Llama, o: SampleOptions) -> SamplerChain:
    g = o.grammar._grammar if isinstance(o.grammar, LlamaGrammar) else o.grammar
    return SamplerChain.from_params(
        llama._model, temperature=o.temp, top_k=o.top_k, top_p=o.top_p, min_p=o.min_p,
        typical_p=o.typical_p, repeat_penalty=o.repeat_penalty,
        frequency_penalty=o.frequency_penalty, presence_penalty=o.presence_penalty,
        mirostat=o.mirostat_mode, mirostat_tau=o.mirostat_tau, mirostat_eta=o.mirostat_eta,
        seed=llama._seed, grammar=g)


def _pick(llama: Llama, chain: SamplerChain, o: SampleOptions) -> int:
    if llama._scores is None:
        raise LlamaError("nothing was evaluated yet: call eval() first")
    if o.idx is not None and o.idx != llama.n_tokens - 1:
        raise ValueError(f"idx={o.idx}: only the logits of the last evaluated token "
                         f"(idx={llama.n_tokens - 1}) are kept")
    logits = llama._scores[-1].copy()
    if o.logits_processor is not None:
        logits = np.asarray(o.logits_processor(llama.input_ids, logits), dtype=np.single)
    cands = Candidates.from_logits(logits)
    chain.apply(cands)
    token = cands.selected_token()
    chain.accept(token)
    return token


def sample(llama: Llama, kwargs: Mapping[str, Any]) -> int:
    o = _opts(kwargs, "sample", {f.name for f in fields(SampleOptions)}
              - {"reset", "stopping_criteria"})
    with _chain(llama, o) as chain:
        if o.grammar is None:  # penalties see the history, as a running chain would
            for t in llama._history[-64:]:
                chain.accept(t)
        return _pick(llama, chain, o)


def generate(llama: Llama, tokens: Sequence[int], kwargs: Mapping[str, Any]) -> Iterator[int]:
    o = _opts(kwargs, "generate")
    pending = list(tokens)
    if o.reset and llama._history:
        n = common_prefix(llama._history, pending[:-1])
        if n > 0:
            llama._history = llama._history[:n]
            pending = pending[n:]
        else:
            llama.reset()
    elif o.reset:
        llama.reset()
    return _loop(llama, pending, o)


def _loop(llama: Llama, pending: list[int], o: SampleOptions) -> Iterator[int]:
    with _chain(llama, o) as chain:
        while True:
            llama.eval(pending)
            token = _pick(llama, chain, o)
            if o.stopping_criteria is not None and \
                    o.stopping_criteria(llama.input_ids, llama.scores[-1]):
                return
            more = yield token
            pending = [token, *(more or [])]


def save_state(llama: Llama) -> LlamaState:
    """:meth:`LLM.save_state` (the KV cache and its tokens, as ``LLMState`` bytes in
    ``llama_state``) with the last logits and the seed."""
    native = llama._require_llm().save_state()
    blob = native.to_bytes()
    scores = llama._scores if llama._scores is not None else \
        np.zeros((0, llama.n_vocab()), dtype=np.single)
    return LlamaState(input_ids=as_int_array(native.tokens), scores=scores.copy(),
                      n_tokens=native.n_tokens, llama_state=blob, llama_state_size=len(blob),
                      seed=llama._seed)


def load_state(llama: Llama, state: LlamaState) -> None:
    """:meth:`LLM.load_state` of a :func:`save_state` state."""
    if not isinstance(state, LlamaState):
        raise TypeError(f"state must be a LlamaState, got {type(state).__name__}")
    native = LLMState.from_bytes(bytes(state.llama_state))
    llama._require_llm().load_state(native)
    llama._history = list(native.tokens)
    llama._scores = np.asarray(state.scores, dtype=np.single).copy() \
        if len(state.scores) else None
    llama._seed = int(state.seed)
