"""The engine's generation runs (:mod:`llama_cffi.objects.run`).

When every busy slot is generating and none of them needs Python between two
tokens, the engine thread runs up to :attr:`Engine.run_steps` steps in one C
call and then hands each slot its tokens, as its per-step code would have:
text, stop strings, max tokens and end of generation are decided by the
same :meth:`Slot.accept` (or, for a request without stop strings,
:meth:`Slot.accept_run`, its loop over all of them), so the output is the
same token for token.

A streamed request (a reader of its pieces) runs too: C publishes each of
its tokens as it is chosen and the :class:`~.run_stream.StreamPump` thread
hands it to :meth:`Slot.accept` while C decodes the next one, so each piece
reaches the reader as soon as it is decoded (:mod:`.run_stream`). Logprobs
(up to :data:`MAX_LOGPROBS` alternatives) are computed in C during the run
from the same row of logits the per-step path reads.

A request constrained by llguidance (JSON schema, ``response_format``,
forced tool calls, regex, Lark, GBNF it reads) runs too: C masks and
advances its matcher; a grammar error ends it with a GrammarError, as the
per-step path does.

A slot keeps the per-step path while its request asks for a stopping
criterion or more than :data:`MAX_LOGPROBS` logprob alternatives, samples
with Python samplers or llama.cpp's grammar engine, has a stop string longer than the run
follows, or needs its context shifted; and all slots do while requests wait
for a slot, engine calls are queued, a speculative proposer is set or the
context has an abort callback. Anything that would interrupt a step (a new
request, a cancel, a reader starting to read pieces, an engine call, close)
interrupts the run after its decode in progress; a request's timeout or
cancel callback is checked at least every :data:`POLL_SECONDS`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import GrammarError
from ..objects.run import MAX_LOGPROBS, MAX_STOP_BYTES, GenerationRun, RunSlot, TokenLogprobs
from .run_stream import Entry, Job, StreamPump, accept_tokens

if TYPE_CHECKING:
    from .engine import Engine
    from .slot import Slot

POLL_SECONDS = 0.2
"""Longest run while a request has a timeout or a cancel callback (checked by Python)."""


def try_run(engine: Engine) -> bool:
    """Run the generating slots in C; False when this step must be Python's
    (nothing was decoded then)."""
    run = engine._run
    if engine.run_steps < 1:
        return False
    run.clear()  # before looking: whatever arrives from now on interrupts the run
    if engine._pending or engine._calls or engine.proposer is not None:
        return False
    busy = [s for s in engine.slots if s.req is not None]
    specs = [_spec(engine, s) for s in busy]
    if not specs or any(sp is None for sp in specs) \
            or len({id(sp.chain) for sp in specs if sp is not None}) < len(specs):
        return False  # (one chain given to two requests: the step raises for one of them)
    budget = _budget(busy)
    if budget is not None and budget <= 0:
        return False
    firsts = [s.next_token for s in busy]
    streamed = [Entry(i, slot) for i, (slot, sp) in enumerate(zip(busy, specs))
                if sp is not None and sp.stream]
    job = Job(run, streamed, engine.facts.is_eog, engine.facts.text) if streamed else None
    if job is not None and engine._pump is None:
        engine._pump = StreamPump()
    pump = engine._pump
    try:
        outcome = run.run(engine.ctx, engine._batch, specs, budget,  # type: ignore[arg-type]
                          engine.run_steps, None if job is None or pump is None
                          else lambda: pump.start(job))
    except Exception:  # noqa: BLE001 - raised before C ran: the step meets the error itself
        outcome = None
    finally:
        if job is not None and job.started and pump is not None:
            pump.finish(job)  # every published token taken
    if outcome is None or outcome.steps == 0:
        return False
    engine.metrics.decode_calls += outcome.steps
    engine.metrics.run_decode_calls += outcome.steps
    engine.metrics.decode_seconds += outcome.decode_seconds
    pumped = {e.index: e for e in streamed}
    for i, (slot, toks) in enumerate(zip(busy, outcome.tokens)):
        first = firsts[i]
        assert first is not None
        e = pumped.get(i)
        failed = outcome.errors[i]
        if e is not None:
            _settle(engine, slot, first, toks, (e.taken, e.finish, e.error), failed)
        else:
            _take(engine, slot, first, toks, outcome.logprobs[i], failed)
    engine._update_gauges()
    return True


def _spec(engine: Engine, slot: Slot) -> RunSlot | None:
    req = slot.req
    if req is None or slot.next_token is None:  # prefill is Python's
        return None
    sp = req.sampling
    if (req.stopping is not None or not GenerationRun.can_run(req.chain)
            or len(slot.cache) + 1 > engine.ctx.n_ctx_seq):
        return None
    n_probs = -1 if sp.logprobs is None else sp.logprobs
    if n_probs > MAX_LOGPROBS or (n_probs >= 0 and req.chain.attached):
        return None  # (a chain sampling in the graph leaves no logits)
    stops = tuple(s.encode() for s in sp.stop) if sp.stop else ()
    if any(not 0 < len(b) <= MAX_STOP_BYTES for b in stops):
        return None
    longest = max((len(s) for s in sp.stop), default=0) if sp.stop else 0
    tail = slot.text[-(longest - 1):].encode() if longest > 1 else b""
    remaining = sp.max_tokens - len(slot.out) if sp.max_tokens >= 0 else -1
    if remaining == 0:
        return None
    return RunSlot(slot.seq_id, len(slot.cache), engine.ctx.n_ctx_seq, remaining,
                   sp.ignore_eos, slot.next_token, req.chain, stops, tail, n_probs,
                   req.handle._streaming)


def _budget(busy: list[Slot]) -> float | None:
    """Seconds the run may take: bounded while Python must poll a request."""
    budget: float | None = None
    now = time.monotonic()
    for slot in busy:
        req = slot.req
        assert req is not None
        if req.deadline is not None:
            left = min(req.deadline - now, POLL_SECONDS)
            budget = left if budget is None else min(budget, left)
        if req.cancel is not None:
            budget = POLL_SECONDS if budget is None else min(budget, POLL_SECONDS)
    return budget


def _take(engine: Engine, slot: Slot, first: int, tokens: list[int],
          lps: list[TokenLogprobs] | None, failed: str | None) -> None:
    """Hand the slot the tokens a run sampled for it (``first``: the token the
    run decoded first), as the per-step path does; ``failed``: why its grammar
    failed after them."""
    req = slot.req
    assert req is not None
    taken: tuple[int, str | None, BaseException | None]
    if not req.sampling.stop and lps is None:  # nothing to find in the text: at once
        try:
            taken = (*slot.accept_run(tokens, engine.facts.is_eog), None)
        except BaseException as exc:  # noqa: BLE001 - ends this request only
            engine._finish(slot, "error", exc)
            return
    else:
        taken = accept_tokens(slot, tokens, lps, engine.facts.is_eog, engine.facts.text)
    _settle(engine, slot, first, tokens, taken, failed)


def _settle(engine: Engine, slot: Slot, first: int, tokens: list[int],
            taken: tuple[int, str | None, BaseException | None],
            failed: str | None = None) -> None:
    """After the slot took ``taken[0]`` of the run's ``tokens``: its KV
    bookkeeping, and the end of its request if it ended (the tokens the run
    decoded past that end are removed from the KV cache). ``failed``: the
    slot's grammar failed after its tokens (all of them decoded), which ends
    its request with a GrammarError unless it ended before."""
    n, finish, error = taken
    slot.cache.append(first)  # decoded by the run, as each token after it but the last
    if finish is None and failed is not None:
        slot.cache += tokens
        slot.timings.target_passes += n
        engine._finish(slot, "error", GrammarError(failed))
        return
    slot.cache += tokens[:n - 1]
    slot.timings.target_passes += n
    if finish is not None:
        if n < len(tokens):
            engine.ctx.seq_rm(slot.seq_id, len(slot.cache), -1)
        engine._finish(slot, finish, error)


def shutdown(engine: Engine) -> None:
    """Stop the stream pump and close the runs' wake-up pipe (the engine thread, at its end)."""
    if engine._pump is not None:
        engine._pump.close()
        engine._pump = None
    engine._run.close()
