"""The engine's generation runs (:mod:`llama_cffi.objects.run`).

When every busy slot is generating and none of them needs Python between two
tokens, the engine thread runs up to :attr:`Engine.run_steps` steps in one C
call and then hands each slot its tokens, as its per-step code would have:
text, stop strings, max tokens and end of generation are decided by the
same :meth:`Slot.accept` (or, for a request without stop strings,
:meth:`Slot.accept_run`, its loop over all of them), so the output is the
same token for token.

A slot keeps the per-step path while its request streams its pieces (each
piece is handed out as soon as it is decoded), asks for logprobs or a
stopping criterion, samples with Python samplers or a grammar, has a stop
string longer than the run follows, or needs its context shifted; and all
slots do while requests wait for a slot, engine calls are queued, a
speculative proposer is set or the context has an abort callback. Anything
that would interrupt a step (a new request, a cancel, a streaming reader,
an engine call, close) interrupts the run after its decode in progress; a
request's timeout or cancel callback is checked at least every
:data:`POLL_SECONDS`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..objects.run import MAX_STOP_BYTES, GenerationRun, RunSlot

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
    try:
        outcome = run.run(engine.ctx, engine._batch, specs, budget,  # type: ignore[arg-type]
                          engine.run_steps)
    except Exception:  # noqa: BLE001 - raised before C ran: the step meets the error itself
        return False
    if outcome is None or outcome.steps == 0:
        return False
    engine.metrics.decode_calls += outcome.steps
    engine.metrics.run_decode_calls += outcome.steps
    engine.metrics.decode_seconds += outcome.decode_seconds
    for slot, toks in zip(busy, outcome.tokens):
        _take(engine, slot, toks)
    engine._update_gauges()
    return True


def _spec(engine: Engine, slot: Slot) -> RunSlot | None:
    req = slot.req
    if req is None or slot.next_token is None:  # prefill is Python's
        return None
    sp = req.sampling
    if (req.stopping is not None or sp.logprobs is not None or req.handle._streaming
            or not GenerationRun.can_run(req.chain)
            or len(slot.cache) + 1 > engine.ctx.n_ctx_seq):
        return None
    stops = tuple(s.encode() for s in sp.stop) if sp.stop else ()
    if any(not 0 < len(b) <= MAX_STOP_BYTES for b in stops):
        return None
    longest = max((len(s) for s in sp.stop), default=0) if sp.stop else 0
    tail = slot.text[-(longest - 1):].encode() if longest > 1 else b""
    remaining = sp.max_tokens - len(slot.out) if sp.max_tokens >= 0 else -1
    if remaining == 0:
        return None
    return RunSlot(slot.seq_id, len(slot.cache), engine.ctx.n_ctx_seq, remaining,
                   sp.ignore_eos, slot.next_token, req.chain, stops, tail)


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


def _take(engine: Engine, slot: Slot, tokens: list[int]) -> None:
    """Hand the slot the tokens a run sampled for it, as the per-step path does."""
    is_eog = engine.facts.is_eog
    req = slot.req
    assert req is not None
    if not req.sampling.stop:  # nothing to find in the text: take the tokens at once
        decoded = slot.next_token
        assert decoded is not None
        try:
            n, finish = slot.accept_run(tokens, is_eog)
        except BaseException as exc:  # noqa: BLE001 - ends this request only
            engine._finish(slot, "error", exc)
            return
        slot.cache.append(decoded)
        slot.cache += tokens[:n - 1]
        slot.timings.target_passes += n
        if finish is not None:
            if n < len(tokens):  # the run decoded past the end: drop those tokens
                engine.ctx.seq_rm(slot.seq_id, len(slot.cache), -1)
            engine._finish(slot, finish)
        return
    for i, tok in enumerate(tokens):
        assert slot.next_token is not None
        slot.cache.append(slot.next_token)  # decoded by the run
        slot.timings.target_passes += 1
        error: BaseException | None = None
        try:
            finish = slot.accept(tok, is_eog(tok), None)
        except BaseException as exc:  # noqa: BLE001 - ends this request only
            finish, error = "error", exc
        if finish is not None:
            if i + 1 < len(tokens):  # the run decoded past the end: drop those tokens
                engine.ctx.seq_rm(slot.seq_id, len(slot.cache), -1)
            engine._finish(slot, finish, error)
            return
