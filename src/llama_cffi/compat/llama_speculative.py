"""Prompt-lookup decoding (llama-cpp-python's ``LlamaPromptLookupDecoding``).

``Llama(path, draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10))``
proposes, at each step, the tokens that followed the latest earlier
occurrence of the last few tokens; the engine verifies the proposal exactly
(speculative decoding in the engine's slots), so output is unchanged and
repetitive text is faster. It is an engine proposer
(:class:`~llama_cffi.engine.engine.Proposer`), with llama-cpp-python's
``__call__`` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class LlamaDraftModel:
    """Base of draft models: ``__call__(input_ids) -> proposed token ids``."""

    name = "draft"

    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    def propose(self, history: Sequence[int], last: int, seq_id: int = 0) -> list[int]:
        """The engine's proposer call: ``history`` (tokens in the KV cache) then ``last``."""
        ids = np.asarray([*history, last], dtype=np.intc)
        return [int(t) for t in self(ids)]

    def close(self) -> None:
        """Nothing to free."""


class LlamaPromptLookupDecoding(LlamaDraftModel):
    """Propose up to ``num_pred_tokens`` tokens by looking up the last n-gram
    (``max_ngram_size`` down to 1 tokens) earlier in the context."""

    name = "prompt-lookup"

    def __init__(self, max_ngram_size: int = 2, num_pred_tokens: int = 10) -> None:
        for label, v in (("max_ngram_size", max_ngram_size), ("num_pred_tokens", num_pred_tokens)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{label} must be an int >= 1, got {v!r}")
        self.max_ngram_size = max_ngram_size
        self.num_pred_tokens = num_pred_tokens

    @staticmethod
    def find_candidate_pred_tokens(input_ids: np.ndarray, max_ngram_size: int,
                                   num_pred_tokens: int) -> np.ndarray:
        """The tokens after the first earlier occurrence of the longest matching
        tail n-gram, or an empty array."""
        ids = np.asarray(input_ids)
        n = len(ids)
        for size in range(min(max_ngram_size, n - 1), 0, -1):
            tail = ids[n - size:]
            windows = np.lib.stride_tricks.sliding_window_view(ids[:n - 1], size)
            hits = np.flatnonzero((windows == tail).all(axis=1))
            for start in hits:
                begin = int(start) + size
                end = min(begin + num_pred_tokens, n)
                if begin < end:
                    return ids[begin:end]
        return np.array([], dtype=ids.dtype if n else np.intc)

    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        return self.find_candidate_pred_tokens(input_ids, self.max_ngram_size,
                                               self.num_pred_tokens)
