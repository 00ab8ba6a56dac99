"""Errors as HTTP answers, in OpenAI's error shape::

    {"error": {"message": "...", "type": "invalid_request_error",
               "param": "temperature", "code": null}}

Bad requests are 4xx with a message that names the field; a 500 only ever
means a bug here, and it is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from ...api.chat_template import TemplateError
from ...errors import (ContextFullError, EngineBusyError, EngineDeadError, GrammarError,
                       LlamaError, MultimodalError, SchemaError, TokenError)
from .manager import ModelUnavailableError, UnknownModelError

log = logging.getLogger("llama_cffi.server")

_T = TypeVar("_T")


class ApiError(Exception):
    """An error answer: HTTP status, message, OpenAI error type, field, code."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


CLIENT_GONE = 499
"""The status (nginx's "client closed request") of an answer nobody receives:
the client went away while sending its body or waiting for the answer."""


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` means the client went away (its body cut short, or the
    request cancelled because it disconnected)."""
    return isinstance(exc, (ClientDisconnect, asyncio.CancelledError, anyio.ClosedResourceError,
                            anyio.BrokenResourceError, ConnectionError))


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def from_exception(exc: BaseException, param: str | None = None) -> ApiError:
    """The answer for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if is_disconnect(exc):  # nothing reaches the client: no log line worth a traceback
        return ApiError(CLIENT_GONE, "the client disconnected", code="client_disconnected")
    if isinstance(exc, UnknownModelError):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, ModelUnavailableError):
        return ApiError(503, str(exc), type="server_error", code="model_unavailable")
    if isinstance(exc, ContextFullError):
        return ApiError(400, str(exc), param=param or "messages", code="context_length_exceeded")
    if isinstance(exc, EngineBusyError):
        return ApiError(503, str(exc), type="server_error", code="server_busy")
    if isinstance(exc, EngineDeadError):
        return ApiError(503, str(exc), type="server_error", code="model_failed")
    if isinstance(exc, SchemaError):
        return ApiError(400, f"invalid JSON schema: {exc}", param=param or "response_format")
    if isinstance(exc, GrammarError):
        return ApiError(400, f"invalid grammar: {exc}", param=param or "grammar")
    if isinstance(exc, TemplateError):
        return ApiError(400, f"the chat template cannot render these messages: {exc}",
                        param=param or "messages")
    if isinstance(exc, MultimodalError):
        return ApiError(400, str(exc), param=param or "messages")
    if isinstance(exc, TokenError):
        return ApiError(400, str(exc), param=param)
    if isinstance(exc, (ValueError, TypeError)):
        return ApiError(400, str(exc), param=param or _field_named_in(str(exc)))
    if isinstance(exc, LlamaError):
        log.error("request failed: %s", exc)
        return ApiError(500, f"llama.cpp failed: {exc}", type="server_error")
    log.error("unexpected error while serving a request", exc_info=exc)
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error")


def _field_named_in(message: str) -> str | None:
    """The field a parameter object's message starts with (``top_p must be ...``)."""
    first = message.split(" ", 1)[0].strip("'\":")
    return first if first.isidentifier() else None


def validation_message(errors: list[Any]) -> tuple[str, str | None]:
    """A readable message (and the first field) for pydantic's error list."""
    parts = []
    first: str | None = None
    for e in errors[:5]:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body",)]
        where = ".".join(loc) or "body"
        first = first or (loc[0] if loc else None)
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts), first


MAX_DEPTH = 64
"""How deeply a request body may nest arrays and objects (a real request nests
a dozen levels; deeper ones would only exhaust the recursion of the code that
reads them)."""

_OFFLOAD_BYTES = 64 * 1024
"""Bodies larger than this are parsed and validated in a worker thread, so the
event loop keeps answering other requests meanwhile."""


class _NonFinite:
    """Where the body had ``NaN``, ``Infinity``, ``-Infinity`` or a number too
    large for a float (Python's json reads them; JSON has no such numbers)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _path(keys: tuple[Any, ...]) -> str:
    """``("options", "seed")`` -> ``options.seed``; ``("messages", 0)`` -> ``messages[0]``."""
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def _check_tree(data: Any) -> None:
    """A 400 for nesting deeper than MAX_DEPTH or a non-finite number (naming
    its field); iterative, so any depth is walked safely."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(data, 1, ())]
    while stack:
        obj, depth, keys = stack.pop()
        if depth > MAX_DEPTH:
            raise bad_request(f"the request body nests arrays/objects more than {MAX_DEPTH} "
                              f"levels deep (at {_path(keys)})", _path(keys))
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, value in items:
            if isinstance(value, (dict, list)):
                stack.append((value, depth + 1, (*keys, key)))
            elif value.__class__ is _NonFinite:
                where = _path((*keys, key))
                raise bad_request(f"{where} must be a finite number, not {value.text}", where)


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, or a 400 that says why not: not JSON, nested more than
    MAX_DEPTH levels, or holding a non-finite number (NaN, Infinity: the
    message names the field)."""
    if not raw:
        raise bad_request("the request body is empty; send a JSON object")
    found: list[bool] = []

    def constant(text: str) -> _NonFinite:
        found.append(True)
        return _NonFinite(text)

    def number(text: str) -> float | _NonFinite:
        value = float(text)
        return value if math.isfinite(value) else constant(text)

    try:
        data = json.loads(raw, parse_constant=constant, parse_float=number)
    except RecursionError:
        raise bad_request(f"the request body nests arrays/objects more than {MAX_DEPTH} levels "
                          "deep") from None
    except ValueError as exc:  # not JSON, not UTF-8, an integer of over 4300 digits
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    if isinstance(data, _NonFinite):
        raise bad_request(f"the request body must be a JSON object, not {data.text}")
    if isinstance(data, (dict, list)) and (
            found or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH):
        _check_tree(data)
    return data


async def json_body(request: Request) -> Any:
    """The request's body as JSON (:func:`parse_json`); a large body is parsed
    in a worker thread."""
    return await parse_body(request, lambda data: data)


async def parse_body(request: Request, parse: Callable[[Any], _T]) -> _T:
    """``parse(body as JSON)`` (a request model's ``parse``); for a large body
    both run in a worker thread, so the event loop is never held by them."""
    raw = await request.body()
    if len(raw) <= _OFFLOAD_BYTES:
        return parse(parse_json(raw))
    return await off_loop(lambda: parse(parse_json(raw)))


async def off_loop(fn: Callable[[], _T]) -> _T:
    """``fn()`` in a worker thread (templates, tokenization: work that grows with
    the request), so that the event loop answers other requests meanwhile."""
    return await anyio.to_thread.run_sync(fn)
