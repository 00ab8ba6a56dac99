"""llama-server's own endpoints: /tokenize, /detokenize, /apply-template, /props,
/metrics (Prometheus), and model unloading (/health and /slots: balancer.py)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import bad_request, from_exception, parse_body
from .metrics import render_metrics
from .schemas import (DetokenizeRequest, TemplateRequest, TokenizeRequest, _Body,
                      check_messages)
from .state import ServerState


class LlamaRoutes:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        return [
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/detokenize", self.detokenize, methods=["POST"]),
            Route("/apply-template", self.apply_template, methods=["POST"]),
            Route("/props", self.props, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/models/unload", self.unload, methods=["POST"]),
        ]

    async def tokenize(self, request: Request) -> Response:
        body = await parse_body(request, TokenizeRequest.parse)
        async with self.state.manager.use(body.model) as lm:
            vocab = lm.llm.vocab

            def answer() -> bytes:  # in a worker thread: a long text takes a while
                try:
                    tokens = vocab.tokenize(body.content, add_special=body.add_special,
                                            parse_special=True)
                except Exception as exc:
                    raise from_exception(exc, "content") from exc
                if not body.with_pieces:
                    return _json_text({"tokens": tokens}).encode()
                # each distinct token converted (and written as JSON) once, the answer
                # joined from those: no object per token for a text of millions
                pieces: dict[int, str] = {}
                for t in set(tokens):
                    raw = vocab.token_to_piece(t, special=True)
                    try:
                        piece: Any = raw.decode("utf-8")
                    except UnicodeDecodeError:  # a partial character: its bytes, as llama-server
                        piece = list(raw)
                    pieces[t] = _json_text({"id": t, "piece": piece})
                return ('{"tokens":[' + ",".join([pieces[t] for t in tokens]) + "]}").encode()

            data = await anyio.to_thread.run_sync(answer)
        return Response(data, media_type="application/json")

    async def detokenize(self, request: Request) -> Response:
        body = await parse_body(request, DetokenizeRequest.parse)
        async with self.state.manager.use(body.model) as lm:
            try:
                text = await anyio.to_thread.run_sync(lm.llm.vocab.detokenize, body.tokens)
            except Exception as exc:
                raise from_exception(exc, "tokens") from exc
        return JSONResponse({"content": text})

    async def apply_template(self, request: Request) -> Response:
        body = await parse_body(request, TemplateRequest.parse)
        messages = check_messages(body.messages)
        tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
        async with self.state.manager.use(body.model) as lm:
            try:
                prompt = await anyio.to_thread.run_sync(
                    lambda: lm.llm.apply_chat_template(messages, tools=tools))
            except Exception as exc:
                raise from_exception(exc, "messages") from exc
        return JSONResponse({"prompt": prompt})

    def _model_name(self, request: Request) -> str | None:
        return request.query_params.get("model") or None

    async def props(self, request: Request) -> Response:
        async with self.state.manager.use(self._model_name(request)) as lm:
            llm = lm.llm
            sampling = {k: _jsonable(v) for k, v in llm.sampling.to_dict().items()}
            sampling["n_ctx"] = llm.ctx.n_ctx
            return JSONResponse({
                "default_generation_settings": {"n_ctx": llm.ctx.n_ctx, "params": sampling},
                "total_slots": llm.ctx.n_seq_max,
                "model_alias": lm.entry.name,
                "model_path": str(llm.model.path),
                "chat_template": llm.model.chat_template() or "",
                "modalities": {
                    "vision": bool(llm.projector and llm.projector.supports_vision),
                    "audio": bool(llm.projector and llm.projector.supports_audio)},
                "build_info": self.state.fingerprint,
            })

    async def metrics(self, request: Request) -> Response:
        data, content_type = render_metrics(self.state)
        return Response(data, media_type=content_type)

    async def unload(self, request: Request) -> Response:
        body = await parse_body(request, _Body.parse)
        if not body.model:
            raise bad_request("model is required", "model")
        unloaded = await self.state.manager.unload(body.model)
        return JSONResponse({"model": body.model, "unloaded": unloaded})


def _json_text(obj: Any) -> str:
    """``obj`` as JSONResponse writes it."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return str(value)
    text = getattr(value, "text", None)
    return text if isinstance(text, str) else str(value)
