"""The ASGI application: routes, API key, body size limit, CORS, error shape."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .balancer import BalancerRoutes
from .config import ServerConfig
from .errors import ApiError, from_exception, is_disconnect
from .llama_api import LlamaRoutes
from .manager import Loader, ModelManager, load_entry
from .ollama_api import OllamaRoutes
from .openai_api import OpenAIRoutes
from .responses_api import ResponsesRoutes
from .state import ServerState

log = logging.getLogger("llama_cffi.server")

OPEN_PATHS = frozenset({"/health", "/v1/health"})


async def _send_error(send: Send, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Counting:
    """The outermost layer: counts the answers clients were sent (by method,
    route and status) and the clients that went away before their answer was
    complete; answers an exception no inner layer turned into a response (a
    bug: logged with its traceback) with a 500 that is counted as well."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        route = _route_label(scope["path"])
        sent = [0]  # the status of the answer's first line, once it has gone out
        complete = [False]
        gone = [False]  # the client disconnected before the answer was complete

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not complete[0]:
                gone[0] = True
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not gone[0]:
                sent[0] = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                complete[0] = True
            await send(message)

        try:
            await self.app(scope, watched_receive, counting_send)
        except Exception as exc:
            if gone[0] or is_disconnect(exc):
                gone[0] = True
            elif sent[0]:  # the answer has begun: it cannot become an error answer now
                raise  # (uvicorn logs it with its traceback and closes the connection)
            else:
                error = from_exception(exc)  # a bug: logged with its traceback
                await _send_error(counting_send, error)
        finally:
            if sent[0]:
                self.state.http_requests[(method, route, sent[0])] += 1
            if gone[0]:
                phase = "response" if sent[0] else "request"
                self.state.http_disconnects[(method, route, phase)] += 1
                log.info("%s %s: the client disconnected before the %s was complete", method,
                         scope["path"], phase)


class Guard:
    """API key check (constant-time) and body size limit."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        key = state.config.api_key
        self.key = key.encode() if key else None
        self.limit = state.config.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self._refusal(scope, scope["path"], scope["method"])
        if error is not None:
            await _send_error(send, error)
            return
        await self.app(scope, self._limited(receive), send)

    def _refusal(self, scope: Scope, path: str, method: str) -> ApiError | None:
        headers = dict(scope["headers"])
        if self.key is not None and path not in OPEN_PATHS and method != "OPTIONS":
            auth = headers.get(b"authorization", b"")
            scheme, _, given = auth.partition(b" ")
            if not given:
                given = headers.get(b"x-api-key", b"")
            elif scheme.lower() != b"bearer":
                given = b""
            if not hmac.compare_digest(given.strip(), self.key):
                message = ("missing API key: send 'Authorization: Bearer <key>'" if not given
                           else "invalid API key")
                return ApiError(401, message, type="authentication_error",
                                code="invalid_api_key")
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return ApiError(400, "Content-Length is not a number")
            if n > self.limit:
                return ApiError(413, f"the request body has {n} bytes; the limit is "
                                     f"{self.limit} (--max-body)", code="body_too_large")
        return None

    def _limited(self, receive: Receive) -> Receive:
        seen = [0]
        limit = self.limit

        async def limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise ApiError(413, f"the request body exceeds the limit of {limit} bytes "
                                        "(--max-body)", code="body_too_large")
            return message

        return limited


def _route_label(path: str) -> str:
    """A bounded label for /metrics (no per-model or unknown paths)."""
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"
    if path.startswith(("/v1/responses/", "/responses/")):
        return "/v1/responses/{id}"
    known = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
             "/chat/completions", "/completions", "/embeddings", "/models", "/health",
             "/v1/health", "/tokenize", "/detokenize", "/apply-template", "/props", "/slots",
             "/metrics", "/models/unload", "/api/tags", "/api/ps", "/api/show", "/api/chat",
             "/api/generate", "/api/embed", "/api/embeddings", "/api/version",
             "/v1/responses", "/responses")
    return path if path in known else "other"


async def _api_error(request: Request, exc: Exception) -> Response:
    error = from_exception(exc)
    if error.status >= 500:
        log.error("%s %s -> %d: %s", request.method, request.url.path, error.status,
                  error.message)
    return error.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
    message = (f"no endpoint {request.method} {request.url.path}" if exc.status_code in (404, 405)
               else str(exc.detail))
    return ApiError(exc.status_code, message, type=kind).response()


def create_app(config: ServerConfig, *, loader: Loader = load_entry) -> Starlette:
    """The server as an ASGI app (run it with uvicorn, or :func:`serve`)."""
    manager = ModelManager(config, loader=loader)
    state = ServerState(config, manager)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await manager.start()
        try:
            yield
        finally:
            await manager.stop()

    routes = [*BalancerRoutes(state).routes(), *OpenAIRoutes(state).routes(), *ResponsesRoutes(state).routes(),
              *LlamaRoutes(state).routes(), *OllamaRoutes(state).routes()]
    middleware = [Middleware(Guard, state=state)]
    if config.cors_origins:  # inside the counting, outside the key check (its 401s get CORS)
        middleware.insert(0, Middleware(
            CORSMiddleware, allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Api-Key"]))
    middleware.insert(0, Middleware(Counting, state=state))
    handlers: dict[Any, Any] = {ApiError: _api_error, HTTPException: _http_error,
                                Exception: _api_error}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers,
                    lifespan=lifespan)
    app.state.server = state
    return app
