"""``LlamaState`` and the logits-processor / stopping-criteria lists of llama-cpp-python."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..engine.slot import common_prefix as common_prefix  # compat modules import it here

LogitsProcessor = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``fn(input_ids, scores) -> scores``: input_ids are the prompt and the tokens
generated so far (int32), scores the logits of the next token (float32)."""

StoppingCriteria = Callable[[np.ndarray, np.ndarray], bool]
"""``fn(input_ids, scores) -> bool``: True ends the generation (finish_reason "stop")."""


class LogitsProcessorList(list):  # type: ignore[type-arg]
    """Processors applied in order: ``scores = p(input_ids, scores)``."""

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


class StoppingCriteriaList(list):  # type: ignore[type-arg]
    """True when any of its criteria is."""

    def __call__(self, input_ids: np.ndarray, logits: np.ndarray) -> bool:
        return any([bool(c(input_ids, logits)) for c in self])


class LlamaState:
    """A saved state of a :class:`~llama_cffi.compat.Llama` (``save_state()``).

    input_ids: the tokens whose KV cache the state holds; n_tokens: how many;
    scores: the last logits seen (1 x n_vocab, or 0 x n_vocab);
    llama_state: the KV cache of the sequence as bytes (llama.cpp's sequence
    state); seed: the Llama's seed at the time.
    """

    def __init__(self, input_ids: np.ndarray, scores: np.ndarray, n_tokens: int,
                 llama_state: bytes, llama_state_size: int, seed: int) -> None:
        self.input_ids = input_ids
        self.scores = scores
        self.n_tokens = n_tokens
        self.llama_state = llama_state
        self.llama_state_size = llama_state_size
        self.seed = seed

    @property
    def tokens(self) -> list[int]:
        return [int(t) for t in self.input_ids[: self.n_tokens]]

    def __repr__(self) -> str:
        return f"<LlamaState {self.n_tokens} tokens, {self.llama_state_size} bytes>"


def as_int_array(tokens: Sequence[int]) -> np.ndarray:
    return np.asarray(list(tokens), dtype=np.intc)


