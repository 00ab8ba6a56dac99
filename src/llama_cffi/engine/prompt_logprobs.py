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

A log-probability is ``x[t] - max - log(sum(exp(x - max)))``: the
exponentials in float32, their sum and the rest in float64, a block of rows
at a time.
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
in float32: 6.3 MB)."""
TOP_WINDOWS = (4.0, 8.0, 16.0)
"""The top-N alternatives are looked for among the logits within the first of
these of the row's maximum that holds N of them (SmolLM2's rows hold a median
of 16 within 4, 283 within 8) ..."""
TOP_CANDIDATES = 4096
"""... and at most this many; otherwise in the whole row."""


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


def log_normalizers(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log(sum(exp(x)))`` of a 2-D array of logits, in float64: the
    exponentials of ``x - max`` in float32 (each within 1e-7 relative, none
    overflows), summed in float64. A log-probability is ``x[t] - this``."""
    x = np.asarray(logits, dtype=np.float32)
    m = x.max(axis=1, keepdims=True)
    sums = np.exp(x - m).sum(axis=1, dtype=np.float64)
    out: np.ndarray = m[:, 0].astype(np.float64) + np.log(sums)
    return out


def top_tokens(logits: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest entries of each row (token ids, best first; ties in
    id order, as a stable sort of the whole row gives them), shape (rows, k).

    The candidates are the entries within one of ``TOP_WINDOWS`` of the row's
    maximum, sorted alone; a flatter row falls back to a partition of the
    whole row."""
    x = np.asarray(logits, dtype=np.float32)
    if k == 1:
        return np.asarray(x.argmax(axis=1), dtype=np.int64)[:, None]
    out = np.empty((x.shape[0], k), dtype=np.int64)
    best = x.max(axis=1)
    for r in range(x.shape[0]):
        row = x[r]
        for window in TOP_WINDOWS:
            cand = np.flatnonzero(row >= best[r] - window)
            if len(cand) >= k:
                break
        if not k <= len(cand) <= TOP_CANDIDATES:
            kth = row[np.argpartition(row, -k)[-k:]].min()
            cand = np.flatnonzero(row >= kth)  # the k largest and all ties, in id order
        out[r] = cand[np.argsort(-row[cand], kind="stable")[:k]]
    return out


def entries(logits: np.ndarray, tokens: Sequence[int], top_n: int,
            piece: Callable[[int], str]) -> list[TokenLogprob]:
    """One :class:`TokenLogprob` per row of ``logits``: ``tokens[r]`` under row
    ``r``, and the ``top_n`` most likely tokens of that row, best first."""
    x = np.asarray(logits, dtype=np.float32)
    lse = log_normalizers(x)
    rows = np.arange(x.shape[0])
    own = x[rows, np.asarray(tokens, dtype=np.int64)].astype(np.float64) - lse
    k = min(top_n, x.shape[1])
    best = top_tokens(x, k) if k > 0 else None
    out = []
    for r, tok in enumerate(tokens):
        top = [] if best is None else \
            [(int(i), piece(int(i)), float(np.float64(x[r, i]) - lse[r])) for i in best[r]]
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
