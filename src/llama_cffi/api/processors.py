"""Python logits processors and stopping criteria, with llama-cpp-python's signatures.

``logits_processors=[fn]``: ``fn(input_ids, scores) -> scores`` with
``input_ids`` an ``np.intc`` array of the tokens so far (prompt and output)
and ``scores`` an ``np.single`` array of the next token's logits over the
whole vocabulary; the returned array (the same one changed in place, or a
new one) replaces the logits. They run as the first stage of the request's
sampler chain (:class:`LogitsProcessorStage`, a
:class:`~llama_cffi.PythonSampler`), before penalties, grammar and the
other samplers, as in llama-cpp-python.

``stopping_criteria=[fn]``: ``fn(input_ids, logits) -> bool`` after every
sampled token, with the tokens before it and the logits it was sampled
from; True ends the request (finish reason ``"stop"``) without that token.

An exception raised by a processor or criterion ends the request with that
exception. Both run on the engine thread.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..objects.params import SamplingParams
from ..objects.samplers import Candidates, PythonSampler
from ..objects.vocab import Vocab

LogitsProcessor = Callable[[np.ndarray, np.ndarray], np.ndarray]
StoppingCriterion = Callable[[np.ndarray, np.ndarray], bool]


def as_list(value: Any, name: str) -> list[Callable[..., Any]]:
    """A list of callables from a list/tuple of them (llama-cpp-python's
    ``LogitsProcessorList`` is one) or a single callable."""
    if value is None:
        return []
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for fn in items:
        if not callable(fn):
            raise TypeError(f"{name} must be callables (or a list of them), got {fn!r}")
    return items


class LogitsProcessorStage(PythonSampler):
    """A chain stage running ``processors`` on the full logits vector.

    prompt: the prompt's tokens (the start of ``input_ids``); tokens the
    chain accepts are appended.
    """

    name = "logits_processors"

    def __init__(self, processors: Sequence[LogitsProcessor], prompt: Sequence[int],
                 n_vocab: int) -> None:
        self.processors = list(processors)
        self.prompt = [int(t) for t in prompt]
        self.ids = list(self.prompt)
        self.n_vocab = n_vocab
        self._arange = np.arange(n_vocab, dtype=np.int32)

    def apply(self, candidates: Candidates) -> None:
        ids = candidates.ids
        view = candidates.logits
        full = len(ids) == self.n_vocab and np.array_equal(ids, self._arange)
        if full:
            scores = np.array(view, dtype=np.single)
        else:  # after another stage: scatter into a full vector, -inf elsewhere
            scores = np.full(self.n_vocab, -np.inf, dtype=np.single)
            scores[ids] = view
        input_ids = np.asarray(self.ids, dtype=np.intc)
        for fn in self.processors:
            out: Any = fn(input_ids, scores)
            if out is None:  # changed in place and returned nothing
                continue
            arr = np.asarray(out, dtype=np.single)
            if arr.shape != (self.n_vocab,):
                raise ValueError(f"logits processor {fn!r} returned shape {arr.shape}; "
                                 f"expected ({self.n_vocab},)")
            scores = arr
        view[:] = scores if full else scores[ids]

    def accept(self, token: int) -> None:
        self.ids.append(int(token))

    def reset(self) -> None:
        self.ids = list(self.prompt)


def stopping_check(criteria: Sequence[StoppingCriterion]
                   ) -> Callable[[list[int], np.ndarray], bool]:
    """The engine's per-token check for llama-cpp-python style criteria."""
    fns = list(criteria)

    def check(tokens: list[int], logits: np.ndarray) -> bool:
        input_ids = np.asarray(tokens, dtype=np.intc)
        return any([bool(fn(input_ids, logits)) for fn in fns])

    return check


_EOG: weakref.WeakKeyDictionary[Vocab, tuple[int, ...]] = weakref.WeakKeyDictionary()


def eog_tokens(vocab: Vocab) -> tuple[int, ...]:
    """Every end-of-generation token of ``vocab`` (``llama_vocab_is_eog``), found once."""
    found = _EOG.get(vocab)
    if found is None:
        found = _EOG[vocab] = tuple(t for t in range(vocab.n_tokens) if vocab.is_eog(t))
    return found


def ban_eog(sp: SamplingParams, vocab: Vocab) -> SamplingParams:
    """``sp`` with every end-of-generation token biased to -inf when it asks for
    ``ignore_eos``, as llama.cpp's ``--ignore-eos`` does (the output never holds
    one, rather than holding them and going on)."""
    if not sp.ignore_eos:
        return sp
    bias = dict(sp.logit_bias)
    for t in eog_tokens(vocab):
        bias[t] = float("-inf")
    return sp.replace(logit_bias=tuple(bias.items()))
