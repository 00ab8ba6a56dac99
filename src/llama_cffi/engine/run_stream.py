"""Streamed requests in the engine's generation runs (:mod:`.runs`).

The engine thread is inside C for the whole run, so the pieces of a
streamed request cannot come from it. C publishes each streamed slot's
token as soon as it has chosen it (a count stored after the token, see
``cdef/run.h``) and writes a byte into a pipe after the step; the
:class:`StreamPump` thread, blocked on that pipe, wakes, reads the new
tokens and hands them to the same :meth:`Slot.accept` a Python step calls
(text, UTF-8 safety, stop strings, max tokens, logprobs), which pushes the
pieces to the reader at once, while C decodes the next token.

While a run is going on only the pump touches its streamed slots; when the
run returns, the engine thread hands the pump the end, waits until it has
taken every published token, and then does what the per-step path does
after ``accept`` (the KV bookkeeping, ending a request). A request the pump
ends (a stop string found in the text, an error) interrupts the run.

Where it runs: during a run with one streamed slot, the pump keeps off the
CPU the run's thread is on (Linux: C notes that CPU at each step, the pump
narrows its own affinity to the other CPUs the process may use and follows
when the run's thread moves). Woken there by C's byte, the pump would
preempt the run's thread between two decodes, and the next decode would
wait for the pump's Python; on another CPU its short turn (one token)
displaces at most a decode worker waiting for the next decode. With
several streamed slots the pump's turn is longer than that wait, and
holding a decode worker back costs more than delaying the next decode: the
pump may run anywhere then (docs/performance.md, "Streams and logprobs:
figures").
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..objects.run import GenerationRun, TokenLogprobs
from .results import TokenLogprob
from .slot import Slot

WAIT_SECONDS = 0.05
"""Longest wait of the pump between two looks at the run (a lost wake-up costs no more)."""


def accept_tokens(slot: Slot, tokens: Sequence[int], lps: Sequence[TokenLogprobs] | None,
                  is_eog: Callable[[int], bool], text: Callable[[int], str]
                  ) -> tuple[int, str | None, BaseException | None]:
    """:meth:`Slot.accept` for each of ``tokens`` (with their log-probabilities
    from C) until the request ends: (tokens taken, finish reason or None, the
    exception that ended it)."""
    for k, tok in enumerate(tokens):
        lp = None
        if lps is not None:
            value, best = lps[k]
            lp = TokenLogprob(tok, text(tok), value, [(t, text(t), v) for t, v in best])
        try:
            finish = slot.accept(tok, is_eog(tok), None, lp)
        except BaseException as exc:  # noqa: BLE001 - ends this request only
            return k + 1, "error", exc
        if finish is not None:
            return k + 1, finish, None
    return len(tokens), None, None


@dataclass
class Entry:
    """A streamed slot of the run: its index in the run and what the pump took."""

    index: int
    slot: Slot
    taken: int = 0
    finish: str | None = None
    error: BaseException | None = None


@dataclass
class Job:
    """One run's streamed slots."""

    run: GenerationRun
    entries: list[Entry]
    is_eog: Callable[[int], bool]
    text: Callable[[int], str]
    started: bool = False  # handed to the pump: finish() must follow
    ended: bool = False  # the run has returned: take the rest and stop
    done: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None  # the pump's own failure (a bug): the engine's


class StreamPump:
    """A thread that hands streamed slots their tokens while a run goes on."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="llama-cffi-stream",
                                        daemon=True)
        self._thread.start()

    def start(self, job: Job) -> None:
        """Take ``job``'s published tokens from now on (the run is about to begin)."""
        job.started = True
        self._jobs.put(job)

    def finish(self, job: Job) -> None:
        """The run has returned: wait until the pump has taken all its tokens."""
        job.ended = True
        job.run.poke()
        job.done.wait()
        if job.failure is not None:
            raise job.failure

    def close(self) -> None:
        """Stop the thread (no job may be in progress)."""
        self._jobs.put(None)
        self._thread.join()

    def _main(self) -> None:
        place = _Placement()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                while True:
                    if len(job.entries) == 1:
                        place.keep_off(job.run.cpu())
                    else:
                        place.anywhere()
                    ended = job.ended  # before taking: all published by then is taken
                    _take_published(job)
                    if ended:
                        break
                    job.run.wait(WAIT_SECONDS)
            except BaseException as exc:  # noqa: BLE001 - the engine thread raises it
                job.failure = exc
            finally:
                job.done.set()


class _Placement:
    """The calling thread's CPU affinity: every CPU it started with but the
    run's (see the module). A no-op where affinity cannot be set, with one
    CPU, or when the run's CPU is unknown."""

    def __init__(self) -> None:
        self._cpus: set[int] = set()
        if hasattr(os, "sched_getaffinity"):
            try:
                self._cpus = set(os.sched_getaffinity(0))
            except OSError:
                pass
        self._off: int | None = None

    def keep_off(self, cpu: int) -> None:
        if cpu < 0 or cpu == self._off or len(self._cpus) < 2:
            return
        self._set(self._cpus - {cpu}, cpu)

    def anywhere(self) -> None:
        if self._off is not None:
            self._set(self._cpus, None)

    def _set(self, cpus: set[int], off: int | None) -> None:
        self._off = off
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:  # the process's CPUs changed since: leave the thread as it is
            self._cpus, self._off = set(), None


def _take_published(job: Job) -> None:
    run = job.run
    for e in job.entries:
        if e.finish is not None:
            continue
        n = run.published(e.index)
        if n <= e.taken:
            continue
        toks, lps = run.read(e.index, e.taken, n)
        k, e.finish, e.error = accept_tokens(e.slot, toks, lps, job.is_eog, job.text)
        e.taken += k
        if e.finish is not None:
            run.interrupt()  # the request ended before the run did
