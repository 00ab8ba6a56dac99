"""Generation runs: several decode-and-sample steps of the generating
sequences of a context in one C call (``llama_cffi_run``, ``cdef/run.h``).

Between two decodes a Python token loop runs its code with the caches the
decode has just emptied: each step costs several times its warm price. A run
keeps the loop in C while nothing needs Python between tokens: every step
decodes the next token of each sequence in one batch, picks each sequence's
token (the arg-max of its logits after its logit bias for a greedy chain,
``llama_sampler_sample`` with its chain otherwise) and stops at the first
sequence that reaches an end-of-generation token, its last allowed token, a
possible stop string or the end of its context. The caller then hands the
tokens to its usual per-token code, warm, in one go.

A run also computes the chosen tokens' log-probabilities with the best
``logprobs`` alternatives (:attr:`RunSlot.logprobs`), and publishes a
streamed slot's tokens as they are chosen (:attr:`RunSlot.stream`): another
thread reads them during the run (:meth:`GenerationRun.published`,
:meth:`GenerationRun.read`), woken after each step by :meth:`GenerationRun.wait`.

A chain with an llguidance constraint (JSON schema, regex, Lark, GBNF on
llguidance) runs too: C masks its choice with the matcher and advances it
(``cdef/run.h``), as :meth:`SamplerChain.sample` does step by step; a
grammar error ends that sequence's run with :attr:`RunOutcome.errors`.

What a run leaves to the caller: text, stop strings on the decoded text (the
run only finds where one may be) and Python samplers or llama.cpp grammars
(such chains cannot run: :meth:`GenerationRun.can_run`).
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .._bindings import run as _run
from .context_setup import sampled_snapshot

if TYPE_CHECKING:
    from .batch import Batch
    from .chain import SamplerChain
    from .context import Context

__all__ = ["GenerationRun", "RunOutcome", "RunSlot"]

MAX_STOP_BYTES = _run.MAX_STOP
MAX_LOGPROBS = _run.MAX_PROBS
"""Most top log-probabilities per token a run computes."""

TokenLogprobs = tuple[float, list[tuple[int, float]]]
"""A chosen token's log-probability and the best ones: [(token, value)], best first."""


class RunSlot(NamedTuple):
    """One sequence of a run."""

    seq_id: int
    n_past: int
    """Tokens in the sequence's KV: the position of ``next_token``."""
    n_limit: int
    """Tokens the sequence may hold (the run ends before it would exceed them)."""
    remaining: int
    """Tokens it may still generate (-1: no limit)."""
    ignore_eos: bool
    next_token: int
    """The sampled token to decode first."""
    chain: SamplerChain
    stops: tuple[bytes, ...] = ()
    """Stop strings (UTF-8, at most :data:`MAX_STOP_BYTES` each)."""
    tail: bytes = b""
    """The end of the text generated so far (for a stop string across tokens)."""
    logprobs: int = -1
    """The chosen tokens' log-probabilities with this many best ones
    (0..:data:`MAX_LOGPROBS`; -1: none)."""
    stream: bool = False
    """Publish each token as soon as it is chosen (read with :meth:`GenerationRun.read`)."""


class RunOutcome(NamedTuple):
    """What a run did."""

    status: int
    """llama_decode's code if a decode failed (that step changed nothing), else 0."""
    steps: int
    """Decodes done; each sequence sampled this many tokens."""
    decode_seconds: float
    """Time inside llama_decode."""
    sample_seconds: float
    """Time choosing the tokens and checking them for an end (llama.cpp's
    sampling time)."""
    tokens: list[list[int]]
    """Each sequence's sampled tokens, in the order of the slots given."""
    logprobs: list[list[TokenLogprobs] | None]
    """Each sequence's log-probabilities of its tokens (None: not asked for)."""
    errors: list[str | None]
    """Why a sequence's grammar (llguidance) failed, or None: such a sequence
    chose no token in the run's last step (its tokens were all decoded)."""


class GenerationRun:
    """Runs over at most ``capacity`` sequences of at most ``max_steps`` steps.

    Used by one thread at a time (the engine thread); :meth:`interrupt` may be
    called from any thread: the run then ends after the decode in progress.
    """

    def __init__(self, capacity: int, max_steps: int) -> None:
        self._mem = _run.RunMemory(capacity, max_steps)
        self.max_steps = max_steps
        self._pipe: tuple[int, int] | None = None  # (read, write): C's wake-up after a step

    def published(self, i: int) -> int:
        """Tokens the run in progress has published for its ``i``-th slot, a
        streamed one (any thread; read them with :meth:`read`)."""
        return _run.published(self._mem, i)

    def cpu(self) -> int:
        """The CPU the run's thread was on at its last step (Linux; -1 elsewhere
        or before a run; any thread)."""
        return _run.run_cpu(self._mem)

    def read(self, i: int, start: int, stop: int
             ) -> tuple[list[int], list[TokenLogprobs] | None]:
        """Tokens ``start:stop`` of the ``i``-th slot, published or sampled, with
        their log-probabilities when the slot asked for them."""
        return _run.read(self._mem, i, start, stop)

    def wait(self, timeout: float) -> None:
        """Wait until a step of the run publishes a streamed slot's tokens,
        :meth:`poke` is called, or ``timeout`` seconds pass (any thread but the
        one running)."""
        pipe = self._pipe
        if pipe is None:  # no pipe (Windows): poll
            time.sleep(min(timeout, 0.001))
            return
        ready, _, _ = select.select([pipe[0]], [], [], timeout)
        if ready:
            try:
                os.read(pipe[0], 4096)
            except BlockingIOError:
                pass

    def poke(self) -> None:
        """Wake a :meth:`wait` (any thread)."""
        if self._pipe is not None:
            try:
                os.write(self._pipe[1], b"\1")
            except (BlockingIOError, OSError):  # full: a wake-up is pending anyway
                pass

    def _notify_fd(self) -> int:
        if self._pipe is None and os.name != "nt":
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)  # C never waits for a slow reader
            self._pipe = (r, w)
        return -1 if self._pipe is None else self._pipe[1]

    def close(self) -> None:
        """Close the wake-up pipe (no run may be in progress)."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            os.close(pipe[0])
            os.close(pipe[1])

    @staticmethod
    def can_run(chain: SamplerChain) -> bool:
        """Whether a run can sample with ``chain``: it selects a token and has no
        Python sampler or llama.cpp grammar (those need Python between tokens;
        an llguidance constraint runs in C)."""
        kinds = chain._kinds
        return chain._selects and "grammar" not in kinds and "python" not in kinds \
            and not chain.closed and (chain._constraint is None or not chain._constraint.closed)

    def interrupt(self) -> None:
        """End the current run after its decode in progress (any thread)."""
        self._mem.flag[0] = 1

    def clear(self) -> None:
        """Forget earlier interrupts (before looking at what could interrupt a run)."""
        self._mem.flag[0] = 0

    def run(self, ctx: Context, batch: Batch, slots: Sequence[RunSlot],
            budget: float | None = None, steps: int | None = None,
            started: Callable[[], None] | None = None) -> RunOutcome | None:
        """Run ``slots`` on ``ctx`` using ``batch``'s memory, for at most
        ``steps`` (default and most: ``max_steps``) steps or ``budget`` seconds
        (checked between steps; the first step always runs). ``started`` is
        called just before the run begins (the slots are set, nothing is
        published yet): a reader of streamed slots may start from there.
        None when these slots cannot run (more of them than the batch, the
        context's micro-batch or this run hold, or an abort callback set on
        the context, whose exceptions only a Python step can deliver, or a
        sequence sampled inside the graph by another chain than its slot's)."""
        n = len(slots)
        if not 0 < n <= min(self._mem.capacity, batch.capacity, ctx.n_ubatch) \
                or ctx._abort is not None:
            return None
        # a sequence sampled inside the graph has no logits: only its own chain
        # (which llama_sampler_sample lets take the graph's token) may sample it
        if any(ctx._samplers.get(s.seq_id) not in (None, s.chain) for s in slots):
            return None
        # ... and a chain attached for that is used only there (a detached one
        # cannot sample at all: its sample() raises)
        if any(s.chain._backend not in (None, (ctx, s.seq_id)) for s in slots):
            return None
        held: list[SamplerChain] = []
        n_vocab = ctx.vocab.n_tokens
        c = ctx._enter()
        try:
            mem = batch._take()
        except BaseException:
            ctx._leave()
            raise
        try:
            for i, s in enumerate(slots):
                ch = s.chain
                ch._guard.acquire()
                held.append(ch)
                if not self.can_run(ch):
                    raise ValueError(f"{ch!r} cannot be used in a generation run")
                llg = ch._constraint
                argmax = ch.is_argmax or (llg is not None and ch._names == ["greedy"])
                _run.set_slot(self._mem, i, (s.seq_id, s.n_past, s.n_limit),
                              (s.remaining, s.ignore_eos), s.next_token, ch.ptr, argmax,
                              _bias(ch), s.stops, s.tail, n_vocab, s.logprobs, s.stream,
                              None if llg is None else llg.ptr)
            ctx._sampled = None
            budget_us = _run.NO_BUDGET if budget is None else max(0, int(budget * 1e6))
            fd = self._notify_fd() if any(s.stream for s in slots) else -1
            if started is not None:
                started()
            status, done, decode_us, sample_us = _run.run(self._mem, c, mem.holder, n,
                                               min(steps or self.max_steps, self.max_steps),
                                               budget_us, fd)
            if done and ctx._samplers:  # outputs sampled inside the graph have no logits
                ctx._sampled = sampled_snapshot(batch, n, ctx._samplers)
            toks = [_run.tokens(self._mem, i) for i in range(n)]
            lps = [_run.read(self._mem, i, 0, len(toks[i]))[1] for i in range(n)]
            errors = [_run.error(self._mem, i) for i in range(n)]
        finally:
            for ch in held:
                ch._guard.release()
            batch._guard.release()
            ctx._leave()
        return RunOutcome(status, done, decode_us / 1e6, sample_us / 1e6, toks, lps, errors)


def _bias(chain: SamplerChain) -> tuple[np.ndarray, np.ndarray] | None:
    bias = chain._argmax_bias() if chain.is_argmax else None
    return None if bias is None else (bias[0], bias[1])
