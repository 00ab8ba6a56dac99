"""Holding a model for the length of a response, streamed or not, and
cancelling its requests when the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ...engine.request import RequestHandle
from ...engine.results import Completion


class HeldStreamingResponse(StreamingResponse):
    """A StreamingResponse that runs ``cleanup`` when the response ends for any
    reason: finished, failed, or the client disconnected (the stream's task is
    cancelled then; cleanup runs shielded from that cancellation)."""

    def __init__(self, content: AsyncIterator[str], *, media_type: str,
                 cleanup: contextlib.AsyncExitStack, handles: list[RequestHandle]) -> None:
        super().__init__(content, media_type=media_type,
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.cleanup = cleanup
        self.handles = handles

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for h in self.handles:
                h.cancel()  # a no-op for finished requests
            with anyio.CancelScope(shield=True):
                await self.cleanup.aclose()


def sse(data: Any) -> str:
    """One server-sent event carrying ``data`` as JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


async def merged(handles: list[RequestHandle]) -> AsyncIterator[tuple[int, str | None]]:
    """(index, piece) from several requests as they come; (index, None) when
    request ``index`` has finished. Raises the first request error."""
    if len(handles) == 1:
        async for text in handles[0]:
            yield 0, text
        yield 0, None
        return
    queue: asyncio.Queue[tuple[int, str | None, BaseException | None]] = asyncio.Queue()

    async def pump(i: int, h: RequestHandle) -> None:
        try:
            async for piece in h:
                await queue.put((i, piece, None))
            await queue.put((i, None, None))
        except BaseException as exc:  # delivered to the consumer below
            await queue.put((i, None, exc))

    tasks = [asyncio.ensure_future(pump(i, h)) for i, h in enumerate(handles)]
    try:
        left = len(handles)
        while left:
            i, piece, exc = await queue.get()
            if exc is not None:
                raise exc
            if piece is None:
                left -= 1
            yield i, piece
    finally:
        for t in tasks:
            t.cancel()


async def results(handles: list[RequestHandle], request: Request | None) -> list[Completion]:
    """The completions of ``handles``; if the client disconnects first, the
    requests are cancelled (their slots freed) and CancelledError is raised."""

    async def gather() -> list[Completion]:
        return [await h for h in handles]

    work = asyncio.ensure_future(gather())
    watch = asyncio.ensure_future(_disconnected(request)) if request is not None else None
    try:
        waiting: set[asyncio.Future[Any]] = {work} | ({watch} if watch else set())
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        for h in handles:
            h.cancel()
        raise asyncio.CancelledError("the client disconnected")
    finally:
        if watch is not None:
            watch.cancel()
        if not work.done():
            for h in handles:
                h.cancel()
            work.cancel()
            with contextlib.suppress(BaseException):
                await work


async def _disconnected(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.25)


def submit_all(n: int, submit: Callable[[int], RequestHandle]) -> list[RequestHandle]:
    """``n`` requests (``submit(i)``); if one cannot be submitted the others are cancelled."""
    handles: list[RequestHandle] = []
    try:
        for i in range(n):
            handles.append(submit(i))
    except BaseException:
        for h in handles:
            h.cancel()
        raise
    return handles
