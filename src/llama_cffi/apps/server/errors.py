"""Errors as HTTP answers, in OpenAI's error shape::

    {"error": {"message": "...", "type": "invalid_request_error",
               "param": "temperature", "code": null}}

Bad requests are 4xx with a message that names the field; a 500 only ever
means a bug here, and it is logged with its traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from ...api.chat_template import TemplateError
from ...errors import (ContextFullError, EngineBusyError, EngineDeadError, GrammarError,
                       LlamaError, MultimodalError, SchemaError, TokenError)
from .manager import ModelUnavailableError, UnknownModelError

log = logging.getLogger("llama_cffi.server")


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


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def from_exception(exc: BaseException, param: str | None = None) -> ApiError:
    """The answer for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
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


async def json_body(request: Request) -> Any:
    """The request's body as JSON, or a 400 that says why not."""
    raw = await request.body()
    if not raw:
        raise bad_request("the request body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
