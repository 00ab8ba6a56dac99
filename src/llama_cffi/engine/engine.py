"""The engine: one thread per model that serves every request with continuous batching.

One :class:`~llama_cffi.Context` with ``n_seq_max`` sequences (slots) and one
thread, the only code that decodes on it (so two callers never start two
OpenMP thread teams at once). Requests come from any thread or from asyncio
(:meth:`Engine.submit`); each engine step

1. cancels requests that were cancelled, timed out or whose caller left,
2. admits queued requests into free slots, choosing the slot whose cached
   tokens share the longest prefix with the prompt; a longer prefix held by
   another slot (a shared system prompt) is copied with the KV memory's
   sequence copy instead of being evaluated again,
3. builds one batch: the next token of every generating slot (plus its
   speculative draft), then prompt chunks of slots in prefill, up to
   ``n_batch`` tokens (so a long prompt never stalls the others for more than
   one batch),
4. decodes once, and samples every slot with its own sampler chain, checking
   stop strings, max tokens and end of generation, streaming text to its
   caller, verifying drafts exactly.

While every busy slot generates and none needs Python between tokens, steps
3 and 4 run in C for up to ``run_steps`` tokens at a time (:mod:`.runs`).

An error in one request (a Python sampler raising, a grammar dead end, a
prompt too long for a slot) ends that request with the exception; the
others go on. If the engine thread itself fails, every waiting caller gets
:class:`~llama_cffi.errors.EngineDeadError` and the engine refuses new work.

Thread safety: ``submit``, ``call`` and ``close`` may be called from any
thread; everything else runs on the engine thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from .._bindings.log import logger
from ..errors import (
    ContextFullError,
    EngineBusyError,
    EngineDeadError,
    LlamaError,
    NoKvSlotError,
)
from ..objects.argmax import sample_argmax
from ..objects.batch import Batch
from ..objects.chain import SamplerChain
from ..objects.context import Context
from ..objects.params import SamplingParams
from ..objects.run import GenerationRun
from . import prompt_logprobs as prompt_lp, run_stream, runs, state_cache
from .generation import TokenFacts
from .media import MediaPrefill, prefill_media
from .request import _DONE, _ERROR, Cancel, Request, RequestHandle
from .request import cancelled_completion as _cancelled_completion
from .results import EngineMetrics
from .slot import Slot, common_prefix

_T = TypeVar("_T")

RUN_STEPS = 64
"""Most steps of one generation run in C (:mod:`.runs`)."""

MIN_SHARED_PREFIX = 32
"""A request whose first tokens (at least this many) are being evaluated for
another slot waits for them and copies them instead of evaluating them too."""


class Proposer(Protocol):
    """A speculative proposer (see :mod:`llama_cffi.engine.speculative`)."""

    name: str

    def propose(self, history: Sequence[int], last: int, seq_id: int = 0) -> list[int]: ...

    def close(self) -> None: ...


class Engine:
    """Continuous batching over the slots of ``ctx`` on one thread.

    ctx: the context (its ``n_seq_max`` is the number of slots); the engine
        uses it exclusively from now on.
    make_chain: builds a request's sampler chain from its SamplingParams.
    proposer: speculative proposer shared by all slots (or None).
    max_queue: requests waiting for a slot before ``submit`` raises
        :class:`EngineBusyError`.
    """

    def __init__(self, ctx: Context, make_chain: Callable[[SamplingParams], SamplerChain], *,
                 proposer: Proposer | None = None, max_queue: int = 256) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.ctx = ctx
        self.vocab = ctx.vocab
        self.facts = TokenFacts(self.vocab)
        self.make_chain = make_chain
        self.proposer = proposer
        self.max_queue = max_queue
        self.share_prefix = True
        """Copy a prefix another slot holds instead of evaluating it again."""
        self.slots = [Slot(i) for i in range(ctx.n_seq_max)]
        self.metrics = EngineMetrics()
        self._pending: deque[Request] = deque()
        self._calls: deque[tuple[Callable[[], Any], queue.SimpleQueue[tuple[bool, Any]]]] = \
            deque()
        self._cv = threading.Condition()
        self._closing = False  # the thread is to stop (or has stopped)
        self._closed = False  # close() was called
        self.broken: BaseException | None = None
        self._batch = Batch(max(ctx.n_batch, 1))
        self.run_steps = RUN_STEPS
        """Most steps run in C at a time (:mod:`.runs`); 0: one Python step per token."""
        self._run = GenerationRun(len(self.slots), RUN_STEPS)
        self._pump: run_stream.StreamPump | None = None  # streamed slots during runs (.run_stream)
        self._split_kv = ctx.n_seq_max > 1 and ctx.n_ctx_seq < ctx.n_ctx
        self.prompt_cache: state_cache.PromptStateCache | None = None
        """Earlier requests' states to restore (:mod:`.state_cache`); set on the engine thread."""
        self._changes_seen = ctx.changes  # Context.changes made outside the engine, as last seen
        self._thread = threading.Thread(target=self._main, name="llama-cffi-engine", daemon=True)
        self._thread.start()

    # -- public, any thread ---------------------------------------------------------------

    def submit(self, tokens: Sequence[int], sampling: SamplingParams, *,
               cancel: Cancel | None = None, timeout: float | None = None,
               context_shift: bool = False, prompt_logprobs: int | None = None,
               sampler: SamplerChain | None = None, echo: str = "",
               stopping: Callable[[list[int], Any], bool] | None = None,
               media: MediaPrefill | None = None) -> RequestHandle:
        """Queue a generation after ``tokens``; returns its handle at once.

        echo: text to put before the output (the first piece, and the start
            of ``Completion.text``).
        prompt_logprobs: N: also the prompt tokens' log-probabilities (:mod:`.prompt_logprobs`).
        stopping: called after each sampled token with the tokens so far
            (prompt and output, without the new one) and the new token's
            logits; True ends the request (``"stop"``) without that token.

        sampler: a sampler chain of the caller's (Python samplers included)
            to use instead of the one built from ``sampling``; the engine
            takes it over and closes it when the request ends.
        media: the images/audio of a prompt (``tokens`` are then its
            ``media.tokens``; see :mod:`llama_cffi.engine.media`).

        Raises EngineBusyError when ``max_queue`` requests are already waiting,
        EngineDeadError when the engine has failed or was closed, and
        ContextFullError when the prompt cannot fit a slot.
        """
        error = self._refusal()  # (checked again under the lock below)
        if error is not None:  # before the checks below, which need the open context
            raise error
        if media is not None and context_shift:
            raise ValueError("context_shift cannot be used with media in the prompt")
        toks = (media.check(tokens, self.vocab) if media is not None
                else [self.vocab.check_token(t) for t in tokens])
        if not toks:
            raise ValueError("the prompt is empty")
        prompt_lp.check(prompt_logprobs, len(toks), self.ctx.n_ctx_seq, media is not None)
        if len(toks) >= self.ctx.n_ctx_seq and not context_shift:
            raise ContextFullError(
                f"the prompt has {len(toks)} tokens but a slot holds {self.ctx.n_ctx_seq}; "
                "use a larger n_ctx, fewer slots, a shorter prompt, or context_shift=True")
        chain = sampler if sampler is not None else self.make_chain(sampling)
        handle = RequestHandle(self._run.interrupt)  # not the engine: a handle may outlive it
        req = Request(toks, sampling, chain, handle,
                      has_grammar=sampling.grammar is not None or sampling.json_schema is not None,
                      context_shift=context_shift, cancel=cancel, prompt_logprobs=prompt_logprobs,
                      deadline=None if timeout is None else time.monotonic() + timeout,
                      echo=echo, stopping=stopping, media=media)
        with self._cv:
            error = self._refusal()
            if error is None and len(self._pending) >= self.max_queue:
                error = EngineBusyError(
                    f"{len(self._pending)} requests are already waiting for a slot "
                    f"(max_queue={self.max_queue}); retry later")
            if error is None:
                self._pending.append(req)
                self.metrics.requests_queued = len(self._pending)
                self._cv.notify_all()
                self._run.interrupt()  # a run in C ends after its decode
        if error is not None:
            chain.close()
            raise error
        return handle

    def call(self, fn: Callable[[], _T], timeout: float | None = None) -> _T:
        """Run ``fn()`` on the engine thread between two steps; returns its result.

        For work that needs the context (state, adapters, embeddings on the
        same thread) while requests are being served.
        """
        if threading.current_thread() is self._thread:
            return fn()
        box: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        with self._cv:
            error = self._refusal()
            if error is not None:
                raise error
            self._calls.append((fn, box))
            self._cv.notify_all()
            self._run.interrupt()  # a run in C ends after its decode
        ok, value = box.get(timeout=timeout)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def idle(self) -> bool:
        with self._cv:
            return not self._pending and not any(s.busy for s in self.slots)

    def close(self) -> None:
        """Cancel everything, stop the thread (waits for the current step). Idempotent."""
        with self._cv:
            if self._closed:
                return
            self._closed = self._closing = True
            self._cv.notify_all()
            self._run.interrupt()  # a run in C ends after its decode
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self._batch.close()
        if self.proposer is not None:
            self.proposer.close()
            self.proposer = None

    def _refusal(self) -> BaseException | None:
        if self.broken is not None:
            err = EngineDeadError(f"the engine thread failed: {type(self.broken).__name__}: "
                                  f"{self.broken}")
            err.__cause__ = self.broken
            return err
        if self._closing:
            return EngineDeadError("the engine is closed")
        return None

    # -- the engine thread -----------------------------------------------------------------

    def _main(self) -> None:
        try:
            while True:
                with self._cv:
                    while not (self._closing or self._pending or self._calls
                               or any(s.busy for s in self.slots)):
                        self._cv.wait()
                    if self._closing:
                        break
                    calls = list(self._calls)
                    self._calls.clear()
                for fn, box in calls:
                    try:
                        box.put((True, fn()))
                    except BaseException as exc:  # noqa: BLE001 - delivered to the caller
                        box.put((False, exc))
                state_cache.check_outside_changes(self)
                self.ctx.ignore_changes_from(threading.get_ident())  # the engine's own calls
                try:
                    self._step()
                finally:
                    self.ctx.ignore_changes_from(None)
        except BaseException as exc:  # noqa: BLE001 - every waiting caller learns of it
            self.broken = exc
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        with self._cv:
            pending = list(self._pending)
            self._pending.clear()
            calls = list(self._calls)
            self._calls.clear()
            self._closing = True
        error = self._refusal() if self.broken is not None else None
        for slot in self.slots:
            if slot.busy:
                slot.finish("cancelled", error)
        for req in pending:
            req.chain.close()
            if error is not None:
                req.handle._push(_ERROR, error)
            else:
                req.handle.cancel()
                req.handle._push(_DONE, _cancelled_completion(req))
        for _, box in calls:
            box.put((False, error or EngineDeadError("the engine is closed")))
        runs.shutdown(self)

    def _step(self) -> None:
        self._reap()
        self._admit()
        if not any(s.busy for s in self.slots):
            self._update_gauges()  # the last requests were reaped: nothing is running now
            return
        if runs.try_run(self):
            return
        if self._build_batch() == 0:
            return
        t0 = time.perf_counter()
        try:
            self.ctx.decode(self._batch)
        except NoKvSlotError as exc:
            self._out_of_memory(exc)
            return
        finally:
            self.metrics.decode_seconds += time.perf_counter() - t0
        self.metrics.decode_calls += 1
        prompt_lp.collect(self)  # before sampling, which may end a request
        sampled = self._sample_argmax()
        for slot in self.slots:
            if slot.req is not None and slot.rows:
                self._sample(slot, sampled.get(slot.seq_id))
        self._update_gauges()

    def _reap(self) -> None:
        for slot in self.slots:
            if slot.busy and slot.req is not None and slot.req.should_stop():
                self._finish(slot, "cancelled")

    def _admit(self) -> None:
        if not self._pending:  # read without the lock: a request queued now is seen next step
            return
        free = [s for s in self.slots if not s.busy]
        deferred: list[Request] = []
        while free:
            with self._cv:
                if not self._pending:
                    break
                req = self._pending.popleft()
            if self.share_prefix and self._wait_for_prefix(req):
                deferred.append(req)
                continue
            if req.should_stop():
                req.chain.close()
                req.handle._push(_DONE, _cancelled_completion(req))
                self.metrics.requests_total += 1  # every request that ends is counted
                self.metrics.requests_cancelled += 1
                continue
            slot = max(free, key=lambda s: (common_prefix(s.cache, req.tokens), s.last_used))
            free.remove(slot)
            try:
                self._start(slot, req)
            except BaseException as exc:  # noqa: BLE001 - this request only
                slot.req = req
                self._finish(slot, "error", exc)
        with self._cv:
            self._pending.extendleft(reversed(deferred))
            self.metrics.requests_queued = len(self._pending)

    def _wait_for_prefix(self, req: Request) -> bool:
        """Whether ``req`` should wait for a slot that is still evaluating a prompt
        with the same beginning (a shared system prompt): once it is evaluated
        it is copied instead of evaluated again."""
        for slot in self.slots:
            other = slot.req
            if other is None or other is req or slot.next_token is not None:
                continue
            n = min(common_prefix(other.tokens, req.tokens), req.reuse_limit())
            if n >= MIN_SHARED_PREFIX and slot.n_prompt_done < n:
                return True
        return False

    def _start(self, slot: Slot, req: Request) -> None:
        ctx, tokens = self.ctx, req.tokens
        if len(tokens) >= ctx.n_ctx_seq:  # context_shift asked: keep the start and the end
            tokens[:] = tokens[:4] + tokens[-(ctx.n_ctx_seq // 2):]
        limit = req.reuse_limit()  # not the last token: its logits pick the first one
        own = min(common_prefix(slot.cache, tokens), limit) if self._reusable(slot) else 0
        donor, best = None, own
        for other in (self.slots if self.share_prefix else ()):
            if other is not slot:
                n = min(common_prefix(other.cache, tokens), limit)
                if n > best and self._reusable(other):
                    donor, best = other, n
        if self.prompt_cache is not None and limit and \
                state_cache.restore(self, slot, tokens, best):
            donor, own = None, min(common_prefix(slot.cache, tokens), limit)
        if donor is not None:
            self._copy_prefix(donor, slot, best)
            self.metrics.prefix_copies += 1
            reused = best
        else:
            reused = own
            if not ctx.seq_rm(slot.seq_id, reused, -1):
                ctx.seq_rm(slot.seq_id)
                reused = 0
            del slot.cache[reused:]
        slot.start(req, reused, self.facts)
        if req.sampling.backend_sampling:
            self._attach_backend(slot, req)

    def _attach_backend(self, slot: Slot, req: Request) -> None:
        """Sample this request inside the graph (llama.cpp's ``--backend-sampling``)
        where llama.cpp can; otherwise say why and sample on the CPU, as
        llama-server does."""
        if req.sampling.logprobs is not None or req.stopping is not None:
            why = "logprobs and stopping criteria need the logits"
        elif self.proposer is not None:
            why = "speculative drafts are verified on the CPU"
        else:
            try:
                if req.chain.attach(self.ctx, slot.seq_id):
                    return
                why = "llama.cpp cannot offload this chain"
            except LlamaError as exc:
                why = str(exc)
        logger.warning("backend sampling is off for this request: %s", why)

    def _reusable(self, slot: Slot) -> bool:
        """Whether the slot's KV still holds its whole cache: a sliding-window
        cache forgets old positions, which then cannot be reused."""
        return not slot.cache or self.ctx.seq_pos_min(slot.seq_id) <= 0

    def _copy_prefix(self, donor: Slot, slot: Slot, n: int) -> None:
        ctx = self.ctx
        if self._split_kv:  # one KV stream per sequence: copy the whole stream, cut the tail
            ctx.seq_cp(donor.seq_id, slot.seq_id)
        else:  # one shared stream: the cells are shared, nothing is copied
            ctx.seq_rm(slot.seq_id)
            ctx.seq_cp(donor.seq_id, slot.seq_id, 0, n)
        ctx.seq_rm(slot.seq_id, n, -1)
        slot.cache = donor.cache[:n]

    def _build_batch(self) -> int:
        """Fill the batch for this step; the number of tokens in it."""
        # gathered in lists and written with one set_rows() call: per-token
        # Batch.add() calls cost more than the rest of a step's Python work
        toks: list[int] = []
        poss: list[int] = []
        seqs: list[int] = []
        outs: list[bool] = []
        budget = self._batch.capacity
        for slot in self.slots:  # generating slots first: one token (+ drafts) each
            slot.rows = []
            req = slot.req
            if req is None or slot.next_token is None:
                continue
            tok = slot.next_token
            draft: list[int] = []
            if self.proposer is not None and req.media is None:  # no drafts over media
                draft = self.proposer.propose(slot.cache, tok, slot.seq_id)
                draft = draft[:max(0, budget - 1)]
            if not self._ensure_room(slot, 1 + len(draft)):
                draft = []
                if not self._ensure_room(slot, 1):
                    self._finish(slot, "length")
                    continue
            k = 1 + len(draft)
            if budget < k:
                continue  # no room in this batch; next step
            new = [tok, *draft] if draft else [tok]
            pos, row = len(slot.cache), len(toks)
            slot.rows = list(range(row, row + k))
            toks += new
            poss += range(pos, pos + k)
            seqs += [slot.seq_id] * k
            outs += [True] * k
            slot.cache += new
            slot.draft = draft
            budget -= k
            if draft:
                slot.timings.drafted_tokens += len(draft)
            slot.timings.target_passes += 1
        for slot in self.slots:  # then prompt chunks
            req = slot.req
            if req is None or slot.next_token is not None or budget <= 0:
                continue
            start, end = slot.n_prompt_done, slot.n_prompt_done + budget
            if req.media is not None:  # images/audio are evaluated now; text up to the next
                try:
                    start = prefill_media(self.ctx, slot)
                except BaseException as exc:  # noqa: BLE001 - ends this request only
                    self._finish(slot, "error", exc)
                    continue
                end = req.media.text_until(start, start + budget)
            chunk = req.tokens[start:end]
            k = len(chunk)
            toks += chunk
            poss += range(start, start + k)
            seqs += [slot.seq_id] * k
            outs += slot.prompt_outputs(len(toks) - k, start, k)  # logits: prompt_logprobs
            if start + k == len(req.tokens):  # the last prompt token: its logits
                outs[-1] = True
                slot.rows.append(len(toks) - 1)
            slot.cache += chunk
            slot.n_prompt_done += k
            budget -= k
        self._batch.set_rows(toks, poss, seqs, outs)
        return len(toks)

    def _ensure_room(self, slot: Slot, n: int) -> bool:
        ctx = self.ctx
        if len(slot.cache) + n <= ctx.n_ctx_seq:
            return True
        req = slot.req
        if req is None or not req.context_shift:
            return False
        n_keep = min(4, len(slot.cache))
        n_discard = max(n, (len(slot.cache) - n_keep) // 2)
        ctx.shift(slot.seq_id, n_keep, n_discard)
        del slot.cache[n_keep:n_keep + n_discard]
        return True

    def _sample_argmax(self) -> dict[int, int]:
        """{seq_id: token} for the slots whose chain picks the arg-max (greedy)
        and whose only output is this step's token, sampled in one call
        (:func:`sample_argmax`, one C arg-max call). Empty when there is no such slot,
        or when the call fails: each slot then samples alone and meets its own
        error (an arg-max chain has no state a second sample could disturb)."""
        slots = [s for s in self.slots if s.req is not None and len(s.rows) == 1
                 and s.req.chain.is_argmax]
        if not slots:
            return {}
        try:
            tokens = sample_argmax(self.ctx, [s.req.chain for s in slots],  # type: ignore[union-attr]
                                   [s.rows[0] for s in slots])
        except Exception:  # noqa: BLE001 - see above
            return {}
        return {s.seq_id: t for s, t in zip(slots, tokens)}

    def _sample(self, slot: Slot, first: int | None = None) -> None:
        """Sample the slot's outputs of this step (``first``: the token of the
        first one, already sampled) and hand the tokens to the slot."""
        req = slot.req
        assert req is not None
        ctx, is_eog = self.ctx, self.facts.is_eog
        want_logits = req.sampling.logprobs is not None or req.stopping is not None
        try:
            draft = slot.draft
            for i, row in enumerate(slot.rows):
                logits = ctx.logits(row) if want_logits else None  # a copy
                tok = first if i == 0 and first is not None else req.chain.sample(ctx, row)
                accepted = i < len(draft) and tok == draft[i]
                finish = slot.accept(tok, is_eog(tok), logits)
                if accepted:
                    slot.timings.accepted_tokens += 1
                if finish is not None or not accepted:
                    if i < len(draft):  # drop the rejected drafts from the KV cache
                        keep = len(slot.cache) - len(draft) + i
                        ctx.seq_rm(slot.seq_id, keep, -1)
                        del slot.cache[keep:]
                    if finish is not None:
                        self._finish(slot, finish)
                    return
        except BaseException as exc:  # noqa: BLE001 - ends this request only
            self._finish(slot, "error", exc)
        finally:
            slot.draft = []
            slot.rows = []

    def _finish(self, slot: Slot, reason: str, error: BaseException | None = None) -> None:
        if self.prompt_cache is not None and error is None and reason != "cancelled":
            state_cache.store(self, slot)  # before the caller hears of the end
        done = slot.finish(reason, error)
        m = self.metrics
        m.requests_total += 1
        if error is not None:
            m.requests_failed += 1
            return
        if reason == "cancelled":
            m.requests_cancelled += 1
        if done is not None:
            m.prompt_tokens_total += done.usage.prompt_tokens
            m.cached_tokens_total += done.usage.cached_tokens
            m.prompt_tokens_evaluated += done.timings.prompt_tokens_evaluated
            m.generated_tokens_total += done.usage.completion_tokens
            m.last_time_to_first_token = done.timings.time_to_first_token
            m.last_tokens_per_second = done.timings.generation_tokens_per_second

    def _out_of_memory(self, exc: NoKvSlotError) -> None:
        """The KV cache is full (shared cache): fail the prompts being evaluated, or
        end the longest generation, then go on."""
        victims = [s for s in self.slots if s.busy and s.next_token is None]
        if not victims:
            victims = [max((s for s in self.slots if s.busy), key=lambda s: len(s.cache))]
        for slot in self.slots:  # undo what this batch added for everyone else
            if slot.busy and slot not in victims and slot.rows:
                n = len(slot.rows) if slot.next_token is not None else 0
                if n:
                    del slot.cache[-n:]
                    self.ctx.seq_rm(slot.seq_id, len(slot.cache), -1)
            slot.rows = []
            slot.draft = []
        for slot in victims:
            if slot.next_token is None:
                self._finish(slot, "error", ContextFullError(
                    f"no room left in the KV cache for this prompt ({exc.args[0]})"))
            else:
                self._finish(slot, "length")
            self.ctx.seq_rm(slot.seq_id)
            slot.cache = []

    def _update_gauges(self) -> None:
        m = self.metrics
        m.requests_running = sum(1 for s in self.slots if s.busy)
        m.kv_cells_used = sum(len(s.cache) for s in self.slots)
