"""Log-probabilities of the prompt's own tokens (OpenAI's ``echo`` with ``logprobs``).

Evaluation harnesses (lm-eval-harness) score a text by the log-probability
the model gives each of its tokens. A request that asks for them
(``Engine.submit(prompt_logprobs=N)``) is evaluated from the start (no cached
prefix: a reused position has no logits), with every prompt position marked
as output, in the engine's ordinary prompt chunks (at most ``n_batch`` tokens
per step, beside the other slots' work). After each decode :func:`collect`
turns the chunk's logits into entries: the logits at position ``i - 1``
give prompt token ``i`` its log-probability and the ``N`` best alternatives.
The first prompt token has no entry (None): nothing precedes it.

Log-softmax is computed in float64 (``x - max - log(sum(exp(x - max)))``), a
block of rows at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ContextFullError
from .results import TokenLogprob

if TYPE_CHECKING:
    from ..objects.context import Context
    from .engine import Engine

BLOCK_ROWS = 32
"""Rows of logits turned into log-probabilities at a time (32 x a 49k vocabulary
in float64: 12.6 MB)."""


def check(top_n: int | None, n_tokens: int, n_ctx_seq: int, has_media: bool) -> None:
    """Refuse what prompt log-probabilities cannot be computed for (on submit)."""
    if top_n is None:
        return
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0:
        raise ValueError(f"prompt_logprobs must be None or an int >= 0, got {top_n!r}")
    if has_media:
        raise ValueError("prompt log-probabilities (echo with logprobs) cannot be computed "
                         "for a prompt with images or audio")
    if n_tokens >= n_ctx_seq:
        raise ContextFullError(
            f"the prompt has {n_tokens} tokens but a slot holds {n_ctx_seq}; prompt "
            "log-probabilities need the whole prompt in the context (no context shift)")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of a 2-D array of logits, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    z: np.ndarray = x - m
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


def entries(logits: np.ndarray, tokens: Sequence[int], top_n: int,
            piece: Callable[[int], str]) -> list[TokenLogprob]:
    """One :class:`TokenLogprob` per row of ``logits``: ``tokens[r]`` under row
    ``r``, and the ``top_n`` most likely tokens of that row, best first."""
    lp = log_softmax(logits)
    rows = np.arange(lp.shape[0])
    own = lp[rows, np.asarray(tokens, dtype=np.int64)]
    n_vocab = lp.shape[1]
    k = min(top_n, n_vocab)
    best: np.ndarray | None = None
    if k > 0:
        best = np.argpartition(-lp, k - 1, axis=1)[:, :k] if k < n_vocab \
            else np.tile(np.arange(n_vocab), (lp.shape[0], 1))
        order = np.argsort(-np.take_along_axis(lp, best, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(best, order, axis=1)
    out = []
    for r, tok in enumerate(tokens):
        top = [] if best is None else \
            [(int(i), piece(int(i)), float(lp[r, i])) for i in best[r]]
        out.append(TokenLogprob(int(tok), piece(int(tok)), float(own[r]), top))
    return out


def chunk_entries(ctx: Context, first_row: int, first_pos: int, n: int,
                  prompt: Sequence[int], top_n: int,
                  piece: Callable[[int], str]) -> list[TokenLogprob]:
    """The entries a decoded prompt chunk gives: batch rows ``first_row ..
    first_row + n`` hold positions ``first_pos ..``; each row scores the next
    prompt token (the chunk's last row scores none when it ends the prompt)."""
    n = min(n, len(prompt) - 1 - first_pos)
    out: list[TokenLogprob] = []
    for start in range(0, max(n, 0), BLOCK_ROWS):
        stop = min(n, start + BLOCK_ROWS)
        block = np.stack([ctx.logits(first_row + r) for r in range(start, stop)])
        nxt = prompt[first_pos + start + 1:first_pos + stop + 1]
        out += entries(block, nxt, top_n, piece)
    return out


def collect(engine: Engine) -> None:
    """After a decode: the entries of every slot whose prompt chunk in this batch
    asked for them (``slot.chunk``), appended to ``slot.prompt_logprobs``."""
    for slot in engine.slots:
        chunk, slot.chunk = slot.chunk, None
        req = slot.req
        if chunk is None or req is None or slot.prompt_logprobs is None:
            continue
        top_n = req.prompt_logprobs or 0
        try:
            slot.prompt_logprobs += chunk_entries(engine.ctx, *chunk, req.tokens, top_n,
                                                  engine.facts.text)
        except BaseException as exc:  # noqa: BLE001 - ends this request only
            engine._finish(slot, "error", exc)
