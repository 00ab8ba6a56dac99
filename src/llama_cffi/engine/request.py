"""A request to the engine and the handle its caller holds.

The engine thread produces events (text pieces, then the final
:class:`Completion` or an exception); the caller consumes them from any
thread (iterate the handle, or :meth:`RequestHandle.result`) or from asyncio
(``async for``, ``await handle``). Events are buffered in the handle, so the
engine never waits for a slow consumer; closing the handle (or cancelling the
asyncio task that iterates it) cancels the request, which frees its slot at
the engine's next step.

Thread safety: a handle may be used from several threads; its events go to
whoever reads first.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import LlamaError
from ..objects.params import SamplingParams
from .results import Completion, Timings, Usage

if TYPE_CHECKING:
    from .media import MediaPrefill
    from ..objects.chain import SamplerChain

Cancel = Callable[[], bool] | threading.Event

_PIECE, _DONE, _ERROR = 0, 1, 2


class RequestHandle:
    """What :meth:`Engine.submit` returns: an iterator of text pieces, an async
    iterator, and a future of the :class:`Completion`."""

    def __init__(self, wake: Callable[[], None] | None = None) -> None:
        # wake: called when the engine should look at this handle again before
        # its next token (a cancel; a reader of pieces, who wants each piece
        # as soon as it is decoded, not after a generation run in C)
        self._wake = wake
        self._streaming = False
        self._events: deque[tuple[int, Any]] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._readers = 0  # threads waiting in _next_event for the next event
        # asyncio waiters: (loop, event, whether it wants every piece or only the end)
        self._loops: list[tuple[asyncio.AbstractEventLoop, asyncio.Event, bool]] = []
        self._cancelled = False
        self._finished = False
        self.completion: Completion | None = None
        """The result, once the request has finished (also after a cancel)."""
        self.error: BaseException | None = None
        """The exception that ended the request, if one did."""

    # -- producer side (engine thread) ---------------------------------------------

    def _push(self, kind: int, value: Any) -> None:
        # Only a consumer that reads pieces is woken for a piece: a caller
        # waiting for the whole result (result(), wait(), await) sleeps until
        # the end, so it neither takes the GIL nor a core from the decode on
        # every token.
        final = kind != _PIECE
        with self._cv:
            if kind == _DONE:
                self.completion = value
                self._finished = True
            elif kind == _ERROR:
                self.error = value
                self._finished = True
            self._events.append((kind, value))
            if final or self._readers:
                self._cv.notify_all()
            if not self._loops:
                return
            loops = [(lp, ev) for lp, ev, pieces in self._loops if final or pieces]
        for loop, event in loops:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop is closed: nobody is waiting there
                pass

    # -- consumer side ------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._finished

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Stop the request; its slot is freed at the engine's next step and its
        Completion ends with finish_reason ``"cancelled"``."""
        self._cancelled = True
        if self._wake is not None:
            self._wake()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the request has finished (discarding unread pieces);
        returns False if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not self._finished:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
            self._events.clear()
        return True

    def _next_event(self, timeout: float | None) -> tuple[int, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            if not self._events and self._finished:  # everything was read already
                return (_ERROR, self.error) if self.error is not None else (_DONE, None)
            while not self._events:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("the request did not produce output in time")
                self._readers += 1
                try:
                    self._cv.wait(left)
                finally:
                    self._readers -= 1
            return self._events.popleft()

    def __iter__(self) -> Iterator[str]:
        return self.pieces()

    def pieces(self, timeout: float | None = None) -> Generator[str, None, None]:
        """Text pieces as they are generated; closing the generator early
        cancels the request."""
        self._stream_now()  # now, not at the first next(): no run in C meanwhile
        return self._pieces(timeout)

    def _pieces(self, timeout: float | None) -> Generator[str, None, None]:
        try:
            while True:
                kind, value = self._next_event(timeout)
                if kind == _PIECE:
                    yield value
                elif kind == _DONE:
                    return
                else:
                    raise value
        finally:
            if not self._finished:
                self.cancel()

    def _stream_now(self) -> None:
        """A reader of pieces is here: each piece should come as it is decoded."""
        if not self._streaming:
            self._streaming = True
            if self._wake is not None and not self._finished:
                self._wake()

    def result(self, timeout: float | None = None) -> Completion:
        """Wait for the whole :class:`Completion` (raises what ended the request).

        timeout: seconds to wait for the end; past it the request is cancelled
        and TimeoutError raised. Unread pieces are discarded.
        """
        if not self.wait(timeout):
            self.cancel()
            raise TimeoutError("the request did not finish in time")
        return self._final()

    def _final(self) -> Completion:
        if self.error is not None:
            raise self.error
        if self.completion is None:  # pragma: no cover - _DONE always carries one
            raise LlamaError("the request ended without a result")
        return self.completion

    def apieces(self) -> AsyncIterator[str]:
        """The pieces as an async iterator; cancelling the task cancels the request."""
        self._stream_now()  # now, not at the first anext(): no run in C meanwhile
        return self._apieces()

    async def _apieces(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._cv:
            self._loops.append((loop, event, True))
        try:
            while True:
                with self._cv:
                    item = self._events.popleft() if self._events else None
                    if item is None and self._finished:
                        item = (_ERROR, self.error) if self.error is not None else (_DONE, None)
                    if item is None:
                        event.clear()
                if item is None:
                    await event.wait()
                    continue
                kind, value = item
                if kind == _PIECE:
                    yield value
                elif kind == _DONE:
                    return
                else:
                    raise value
        finally:
            with self._cv:
                self._loops = [w for w in self._loops if w[1] is not event]
            if not self._finished:
                self.cancel()

    def __aiter__(self) -> AsyncIterator[str]:
        return self.apieces()

    async def aresult(self) -> Completion:
        """Wait for the whole :class:`Completion` without reading the pieces;
        cancelling the task cancels the request."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._cv:
            self._loops.append((loop, event, False))
        try:
            while True:
                with self._cv:
                    if self._finished:
                        self._events.clear()
                        break
                    event.clear()
                await event.wait()
        finally:
            with self._cv:
                self._loops = [w for w in self._loops if w[1] is not event]
            if not self._finished:
                self.cancel()
        return self._final()

    def __await__(self) -> Generator[Any, None, Completion]:
        return self.aresult().__await__()


@dataclass
class Request:
    """One generation request, as the engine thread sees it."""

    tokens: list[int]
    sampling: SamplingParams
    chain: SamplerChain
    handle: RequestHandle
    has_grammar: bool = False
    context_shift: bool = False
    cancel: Cancel | None = None
    deadline: float | None = None  # time.monotonic() after which it is cancelled
    submitted: float = field(default_factory=time.perf_counter)
    echo: str = ""  # text put before the output (OpenAI's echo): first piece, start of .text
    # (prompt + output tokens so far, logits of the new token) -> True ends the request
    # before that token (llama-cpp-python's stopping_criteria); called on the engine thread
    stopping: Callable[[list[int], np.ndarray], bool] | None = None
    media: MediaPrefill | None = None  # images/audio evaluated when the prefill reaches them
    # the prompt tokens' log-probabilities with this many alternatives each
    # (engine/prompt_logprobs.py): every prompt position is evaluated with its logits
    prompt_logprobs: int | None = None

    def reuse_limit(self) -> int:
        """Most prompt tokens whose KV cache may come from a cache instead of
        being evaluated: all but the last (its logits pick the first token),
        none when every position's logits are wanted (``prompt_logprobs``)."""
        return len(self.tokens) - 1 if self.prompt_logprobs is None else 0

    def should_stop(self) -> bool:
        if self.handle.cancelled:
            return True
        c = self.cancel
        if c is not None and (c.is_set() if isinstance(c, threading.Event) else c()):
            return True
        return self.deadline is not None and time.monotonic() > self.deadline


def cancelled_completion(req: Request) -> Completion:
    """The Completion of a request cancelled before it reached a slot."""
    return Completion(text="", tokens=[], finish_reason="cancelled",
                      usage=Usage(prompt_tokens=len(req.tokens)), timings=Timings())
