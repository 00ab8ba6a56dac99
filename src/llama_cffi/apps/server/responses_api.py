"""OpenAI's Responses API (``POST /v1/responses``) over the chat completions route.

A request is checked and rewritten as a chat request
(:mod:`.responses_schemas`), run by :meth:`OpenAIRoutes.start_chat` (the same
prompt, tools, grammar and sampling as ``/v1/chat/completions``), and its
completion reshaped into a Response object: a ``message`` output item with
the text, a ``function_call`` item per tool call, ``usage`` in input/output
tokens, status ``incomplete`` (reason ``max_output_tokens``) when the reply
was cut by length. Streamed, it is the Responses event sequence, each event
numbered by ``sequence_number``.

Responses are kept in memory (:class:`ResponseStore`, the last 256 and at
most 64 MiB) for ``previous_response_id`` and ``GET /v1/responses/{id}``;
``store: false`` ones are not kept.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...engine.results import Completion
from .errors import ApiError, bad_request, from_exception, parse_body
from .openai_api import ChatRun, OpenAIRoutes, chat_logprobs
from .responses_schemas import (ResponsesRequest, chat_body, check_tool_choice, check_tools,
                                input_messages, renamed)
from .state import ServerState
from .streaming import HeldStreamingResponse, results


@dataclass
class Stored:
    """A kept response: its object and the conversation it ends (chat messages,
    without the instructions, which a follow-up does not inherit)."""

    response: dict[str, Any]
    history: list[dict[str, Any]]
    size: int


class ResponseStore:
    """The last responses, bounded by count and by their JSON size (oldest out first)."""

    def __init__(self, max_entries: int = 256, max_bytes: int = 64 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.items: OrderedDict[str, Stored] = OrderedDict()
        self.bytes = 0

    def put(self, rid: str, response: dict[str, Any], history: list[dict[str, Any]]) -> None:
        size = len(json.dumps(response)) + len(json.dumps(history))
        if size > self.max_bytes:
            return  # larger than the whole store: not kept (a follow-up gets the 400)
        self.items[rid] = Stored(response, history, size)
        self.bytes += size
        while len(self.items) > self.max_entries or self.bytes > self.max_bytes:
            _, old = self.items.popitem(last=False)
            self.bytes -= old.size

    def get(self, rid: str) -> Stored | None:
        stored = self.items.get(rid)
        if stored is not None:
            self.items.move_to_end(rid)
        return stored

    def delete(self, rid: str) -> bool:
        stored = self.items.pop(rid, None)
        if stored is None:
            return False
        self.bytes -= stored.size
        return True


@dataclass
class Turn:
    """One Responses request on its way: the request and what it became."""

    body: ResponsesRequest
    history: list[dict[str, Any]]
    """The conversation before this reply (previous response's and this input)."""
    rid: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    message_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    model: str = ""
    temperature: float = 1.0
    top_p: float = 1.0

    def response(self, status: str, output: list[dict[str, Any]],
                 usage: dict[str, Any] | None, *, error: dict[str, Any] | None = None,
                 incomplete: str | None = None) -> dict[str, Any]:
        """The Response object in state ``status``."""
        b = self.body
        fmt = b.text.format if b.text is not None and b.text.format is not None \
            else {"type": "text"}
        return {
            "id": self.rid, "object": "response", "created_at": self.created,
            "status": status, "background": False, "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": b.instructions, "max_output_tokens": b.max_output_tokens,
            "max_tool_calls": b.max_tool_calls, "model": self.model, "output": output,
            "parallel_tool_calls": True if b.parallel_tool_calls is None
            else b.parallel_tool_calls,
            "previous_response_id": b.previous_response_id,
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default",
            "store": b.store, "temperature": self.temperature,
            "text": {"format": fmt, "verbosity": "medium"},
            "tool_choice": b.tool_choice if b.tool_choice is not None else "auto",
            "tools": b.tools or [], "top_logprobs": b.top_logprobs or 0, "top_p": self.top_p,
            "truncation": b.truncation or "disabled", "usage": usage, "user": b.user,
            "metadata": b.metadata or {},
        }


def usage_of(c: Completion) -> dict[str, Any]:
    """``usage`` as the Responses API counts it."""
    u = c.usage
    return {"input_tokens": u.prompt_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_tokens},
            "output_tokens": u.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.prompt_tokens + u.completion_tokens}


def _output(turn: Turn, run: ChatRun, c: Completion) -> tuple[list[dict[str, Any]],
                                                             dict[str, Any]]:
    """(output items, the assistant chat message) of a finished reply."""
    content, calls = run.plan.parse(c)
    status = "incomplete" if c.finish_reason == "length" else "completed"
    items: list[dict[str, Any]] = []
    if (content and content.strip()) or not calls:
        lps = chat_logprobs(c)
        part = {"type": "output_text", "text": content or "", "annotations": [],
                "logprobs": lps["content"] if lps is not None else []}
        items.append({"id": turn.message_id, "type": "message", "status": status,
                      "role": "assistant", "content": [part]})
    for call in calls:
        fn = call["function"]
        items.append({"id": f"fc_{uuid.uuid4().hex}", "type": "function_call",
                      "status": "completed", "call_id": call["id"], "name": fn["name"],
                      "arguments": fn["arguments"]})
    message: dict[str, Any] = {"role": "assistant",
                               "content": content if content or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return items, message


class ResponsesRoutes:
    """``/v1/responses`` (and ``/responses``): create, retrieve, delete."""

    def __init__(self, state: ServerState, store: ResponseStore | None = None) -> None:
        self.state = state
        self.chat = OpenAIRoutes(state)
        self.store = store if store is not None else ResponseStore()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/responses", self.create, methods=["POST"]),
            Route("/responses", self.create, methods=["POST"]),
            Route("/v1/responses/{rid}", self.retrieve, methods=["GET"]),
            Route("/responses/{rid}", self.retrieve, methods=["GET"]),
            Route("/v1/responses/{rid}", self.delete, methods=["DELETE"]),
            Route("/responses/{rid}", self.delete, methods=["DELETE"]),
        ]

    async def create(self, request: Request) -> Response:
        body = await parse_body(request, ResponsesRequest.parse)
        body.refuse_unsupported()
        tools = check_tools(body.tools)
        choice = check_tool_choice(body.tool_choice, tools)
        history: list[dict[str, Any]] = []
        if body.previous_response_id is not None:
            prev = self.store.get(body.previous_response_id)
            if prev is None:
                raise ApiError(400, f"previous_response_id {body.previous_response_id!r} is not "
                                    "a response kept by this server (unknown, stored with "
                                    "store: false, or evicted: the last "
                                    f"{self.store.max_entries} are kept)",
                               param="previous_response_id", code="previous_response_not_found")
            history = list(prev.history)
        history += input_messages(body.input)
        if not history:
            raise bad_request("input is required (a string or a list of items)", "input")
        system = [{"role": "system", "content": body.instructions}] if body.instructions else []
        chat = chat_body(body, system + history, tools, choice)
        try:
            run = await self.chat.start_chat(chat)
        except ApiError as exc:
            raise renamed(exc) from None
        sp = run.plan.sampling
        turn = Turn(body, history, model=body.model or run.lm.entry.name,
                    temperature=sp.temperature, top_p=sp.top_p)
        if body.stream:
            return HeldStreamingResponse(self._events(turn, run), media_type="text/event-stream",
                                         cleanup=run.stack, handles=run.handles)
        async with run.stack:
            try:
                done = await results(run.handles, request)
            except BaseException as exc:
                raise renamed(from_exception(exc)) from exc
        return JSONResponse(self._finish(turn, run, done[0]))

    def _finish(self, turn: Turn, run: ChatRun, c: Completion) -> dict[str, Any]:
        """The final Response object of ``c`` (kept unless ``store`` is false)."""
        items, message = _output(turn, run, c)
        length = c.finish_reason == "length"
        obj = turn.response("incomplete" if length else "completed", items, usage_of(c),
                            incomplete="max_output_tokens" if length else None)
        if turn.body.store:
            self.store.put(turn.rid, obj, [*turn.history, message])
        return obj

    async def _events(self, turn: Turn, run: ChatRun) -> AsyncIterator[str]:
        counter = itertools.count()

        def event(kind: str, **data: Any) -> str:
            data = {"type": kind, "sequence_number": next(counter), **data}
            return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

        mid = turn.message_id

        def text_at(**data: Any) -> dict[str, Any]:
            return {"item_id": mid, "output_index": 0, "content_index": 0, **data}

        def opening() -> list[str]:
            item = {"id": mid, "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            return [event("response.output_item.added", output_index=0, item=item),
                    event("response.content_part.added", **text_at(part=part))]

        start = turn.response("in_progress", [], None)
        yield event("response.created", response=start)
        yield event("response.in_progress", response=start)
        handle = run.handles[0]
        opened = False
        try:
            if not run.plan.buffers_text:
                async for piece in handle:
                    if not opened:
                        for e in opening():
                            yield e
                        opened = True
                    if piece:
                        yield event("response.output_text.delta", **text_at(delta=piece,
                                                                             logprobs=[]))
            c = await handle
            final = self._finish(turn, run, c)
        except Exception as exc:  # the status line has gone: report the error in the stream
            error = renamed(from_exception(exc))
            yield event("error", code=error.code or error.type, message=error.message,
                        param=error.param)
            failed = turn.response("failed", [], None, error={
                "code": "server_error" if error.status >= 500 else "invalid_prompt",
                "message": error.message})
            yield event("response.failed", response=failed)
            return
        for index, item in enumerate(final["output"]):
            if item["type"] == "message":
                part = item["content"][0]
                if not opened:
                    for e in opening():
                        yield e
                    if part["text"]:
                        yield event("response.output_text.delta",
                                    **text_at(delta=part["text"], logprobs=[]))
                yield event("response.output_text.done",
                            **text_at(text=part["text"], logprobs=part["logprobs"]))
                yield event("response.content_part.done", **text_at(part=part))
            else:
                yield event("response.output_item.added", output_index=index,
                            item=dict(item, arguments="", status="in_progress"))
                yield event("response.function_call_arguments.delta", item_id=item["id"],
                            output_index=index, delta=item["arguments"])
                yield event("response.function_call_arguments.done", item_id=item["id"],
                            output_index=index, name=item["name"], arguments=item["arguments"])
            yield event("response.output_item.done", output_index=index, item=item)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        yield event(kind, response=final)

    async def retrieve(self, request: Request) -> Response:
        rid = request.path_params["rid"]
        stored = self.store.get(rid)
        if stored is None:
            raise ApiError(404, f"no response {rid!r} is kept here (unknown, stored with "
                                "store: false, or evicted)", param="response_id",
                           code="not_found")
        return JSONResponse(stored.response)

    async def delete(self, request: Request) -> Response:
        rid = request.path_params["rid"]
        if not self.store.delete(rid):
            raise ApiError(404, f"no response {rid!r} is kept here", param="response_id",
                           code="not_found")
        return JSONResponse({"id": rid, "object": "response.deleted", "deleted": True})

