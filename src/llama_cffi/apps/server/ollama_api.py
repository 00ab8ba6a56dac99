"""Ollama's API, so that clients configured for Ollama work unchanged.

``GET /api/version``, ``/api/tags`` (configured models), ``/api/ps`` (loaded
models); ``POST /api/show``, ``/api/chat``, ``/api/generate``, ``/api/embed``
and the older ``/api/embeddings``, on the same models, manager and engine as
the OpenAI endpoints. ``keep_alive`` maps onto the manager's time to live
(:meth:`ModelManager.use`); a chat without messages or a generate without a
prompt loads the model (``done_reason: "load"``), or with ``keep_alive: 0``
unloads it (``"unload"``), as Ollama does.

Responses stream by default, as NDJSON (``application/x-ndjson``): one JSON
object a line, the last one with ``done: true``, the ``done_reason`` and
the timings in nanoseconds. Errors are Ollama's ``{"error": "..."}`` with a
4xx status (an unknown model is a 404); an error after the stream started is
sent as a last ``{"error": ...}`` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..._bindings.enums import PoolingType
from ..._version import __version__
from ...api import fim
from ...api import multimodal as _mm
from ...api.llm import LLM
from ...engine.request import RequestHandle
from ...engine.results import Completion
from ...objects import registry
from ...objects.params import SamplingParams
from . import ollama_info as info
from . import tools as chat_tools
from .config import ModelEntry
from .errors import (ApiError, bad_request, from_exception, off_loop, parse_body,
                     validation_message)
from .manager import LoadedModel
from .ollama_media import image_parts, with_images
from .ollama_schemas import (ChatBody, EmbedBody, EmbeddingsBody, GenerateBody, ShowBody,
                             check_think, format_schema, make_sampling, parse_keep_alive,
                             render_go_template, sampling_overrides)
from .schemas import Tool, check_messages
from .state import ServerState
from .streaming import HeldStreamingResponse, results

log = logging.getLogger("llama_cffi.server")

OLLAMA_API_VERSION = "0.9.0"
"""The Ollama version whose API these endpoints follow (what /api/version
answers; clients check it before using newer features)."""

NDJSON = "application/x-ndjson"
_FOREVER = dt.timedelta(days=365 * 100)

Handler = Callable[[Request], Awaitable[Response]]


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


def _now() -> str:
    return info.rfc3339(dt.datetime.now(dt.timezone.utc))


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def error_response(error: ApiError) -> JSONResponse:
    """An error answer in Ollama's shape: ``{"error": "message"}``."""
    return JSONResponse({"error": error.message}, status_code=error.status)


def done_reason(c: Completion) -> str:
    return "length" if c.finish_reason == "length" else "stop"


def _ollama_errors(handler: Handler) -> Handler:
    """``handler`` with every error answered in Ollama's shape."""

    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            error = from_exception(exc)
            if error.status >= 500:
                log.error("%s %s -> %d: %s", request.method, request.url.path, error.status,
                          error.message)
            return error_response(error)

    return answer


@dataclass
class _Run:
    """A generation in progress: the held model and the engine request."""

    stack: contextlib.AsyncExitStack
    lm: LoadedModel
    handle: RequestHandle
    prompt_tokens: list[int]
    plan: chat_tools.ChatPlan | None
    started: float
    load_seconds: float

    def stats(self, c: Completion) -> dict[str, Any]:
        """The final object's done_reason and timings (nanoseconds)."""
        return {"done_reason": done_reason(c),
                "total_duration": _ns(time.monotonic() - self.started),
                "load_duration": _ns(self.load_seconds),
                "prompt_eval_count": c.usage.prompt_tokens,
                "prompt_eval_duration": _ns(c.timings.prompt_seconds),
                "eval_count": c.usage.completion_tokens,
                "eval_duration": _ns(c.timings.generation_seconds)}


def _tool_calls(plan: chat_tools.ChatPlan | None,
                c: Completion) -> tuple[str, list[dict[str, Any]]]:
    """(content, tool calls in Ollama's shape: arguments as an object)."""
    if plan is None:
        return c.text, []
    content, calls = plan.parse(c)
    out = []
    for i, call in enumerate(calls):
        fn = call["function"]
        try:
            args = json.loads(fn["arguments"])
        except (TypeError, ValueError):
            args = {}
        if not isinstance(args, dict):
            args = {"value": args}
        out.append({"id": call["id"], "function": {"index": i, "name": fn["name"],
                                                   "arguments": args}})
    return content or "", out


def _chat_messages(raw: list[Any]) -> list[dict[str, Any]]:
    """Ollama's messages as the chat layer takes them (images as content parts)."""
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise bad_request(f"messages[{i}] must be an object with 'role' and 'content'",
                              f"messages[{i}]")
        msg = {k: v for k, v in m.items() if k != "thinking"}
        if msg.get("content") is None:
            msg["content"] = ""  # Ollama's default
        msg = with_images(msg, f"messages[{i}]")
        if msg.get("role") == "tool" and isinstance(msg.get("tool_name"), str):
            msg.setdefault("name", msg["tool_name"])
        out.append(msg)
    return check_messages(out)


def _checked_tools(raw: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not raw:
        return None
    out = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise bad_request(f"tools[{i}] must be an object", f"tools[{i}]")
        try:
            tool = Tool.model_validate({"type": "function", **t})
        except ValidationError as exc:
            message, _ = validation_message(exc.errors())
            raise bad_request(f"tools[{i}]: {message}", f"tools[{i}]") from None
        out.append(tool.model_dump(exclude_none=True))
    return out


class OllamaRoutes:
    """The handlers, bound to the server's state."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        e = _ollama_errors
        return [
            Route("/api/version", e(self.version), methods=["GET"]),
            Route("/api/tags", e(self.tags), methods=["GET"]),
            Route("/api/ps", e(self.ps), methods=["GET"]),
            Route("/api/show", e(self.show), methods=["POST"]),
            Route("/api/chat", e(self.chat), methods=["POST"]),
            Route("/api/generate", e(self.generate), methods=["POST"]),
            Route("/api/embed", e(self.embed), methods=["POST"]),
            Route("/api/embeddings", e(self.embeddings), methods=["POST"]),
            Route("/", self.root, methods=["GET", "HEAD"]),
        ]

    # -- models --------------------------------------------------------------------------

    def _entry(self, name: str) -> ModelEntry:
        """The configured model ``name`` (``name:latest`` too); a 404 otherwise."""
        entry = self.state.config.find(name)
        if entry is None and name.endswith(":latest"):
            entry = self.state.config.find(name[:-len(":latest")])
        if entry is None:
            entry = self.state.config.resolve(name)
        if entry is None:
            raise ApiError(404, f"model '{name}' not found", param="model",
                           code="model_not_found")
        return entry

    def _path(self, entry: ModelEntry) -> Path | None:
        """The model's file, without downloading anything (None if not there yet)."""
        lm = self.state.manager.loaded.get(entry.name)
        if lm is not None:
            return Path(lm.llm.model.path)
        path = Path(entry.model).expanduser()
        if path.is_file():
            return path
        if entry.model in registry.REGISTRY:
            return registry.cached_path(entry.model)
        return None

    def _describe(self, entry: ModelEntry) -> dict[str, Any]:
        """name, model, modified_at, size, digest, details (blocking: file reads)."""
        path = self._path(entry)
        card: dict[str, Any] = {"name": entry.name, "model": entry.name}
        summary = None
        if path is not None:
            try:
                size, digest, modified = info.file_facts(path)
                summary = info.gguf_summary(path)
            except (OSError, ValueError) as exc:
                log.warning("cannot read %s for /api/tags: %s", path, exc)
                path = None
        if path is None:
            size, digest, modified = 0, "", _now()
        card.update(modified_at=modified, size=size, digest=digest,
                    details=info.details(summary) if summary is not None
                    else {"parent_model": "", "format": "gguf", "family": "", "families": None,
                          "parameter_size": "", "quantization_level": ""})
        return card

    async def root(self, request: Request) -> Response:
        """What clients that probe an Ollama server's root expect: a 200."""
        return PlainTextResponse("llama-cffi is running (OpenAI and Ollama APIs)")

    async def _require(self, entry: ModelEntry, capability: str, name: str) -> None:
        """A 400 if the model's file says it cannot do ``capability``
        (``completion``: chat and generate on an embedding model)."""
        path = await asyncio.to_thread(self._path, entry)
        if path is None:
            return
        summary = await asyncio.to_thread(info.gguf_summary, path)
        if capability not in info.capabilities(summary):
            raise bad_request(f"\"{name}\" does not support {capability} (it is an embedding "
                              "model: use /api/embed)", "model")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": OLLAMA_API_VERSION, "llama_cffi": __version__})

    async def tags(self, request: Request) -> Response:
        entries = list(self.state.config.models)
        cards = await asyncio.to_thread(lambda: [self._describe(e) for e in entries])
        return JSONResponse({"models": cards})

    async def ps(self, request: Request) -> Response:
        loaded = list(self.state.manager.loaded.values())
        cards = await asyncio.to_thread(lambda: [self._describe(lm.entry) for lm in loaded])
        out = []
        now_wall, now_mono = time.time(), time.monotonic()
        for lm, card in zip(loaded, cards):
            expires = lm.expires_at()
            when = (dt.datetime.now(dt.timezone.utc) + _FOREVER if expires is None
                    else dt.datetime.fromtimestamp(now_wall + (expires - now_mono),
                                                   dt.timezone.utc))
            model = lm.llm.model
            vram = sum(n for buf, n in model.buffers.items()  # device buffers, not host ones
                       if not buf.upper().startswith("CPU") and not buf.endswith("_Host"))
            card.update(size=model.size, size_vram=vram, expires_at=info.rfc3339(when),
                        context_length=lm.llm.ctx.n_ctx)
            del card["modified_at"]
            out.append(card)
        return JSONResponse({"models": out})

    async def show(self, request: Request) -> Response:
        body = await parse_body(request, ShowBody.parse)
        entry = self._entry(body.model_name)
        path = await asyncio.to_thread(self._path, entry)
        if path is None:
            raise ApiError(404, f"model '{body.model_name}' has no file here yet (a registry "
                                "model is fetched on its first request)", param="model")
        summary = await asyncio.to_thread(info.gguf_summary, path)
        _, _, modified = info.file_facts(path)
        template = summary.metadata.get("tokenizer.chat_template")
        params = self._parameters(entry)
        lines = [f"# Modelfile of {entry.name}, served by llama-cffi {__version__}",
                 f"FROM {path}"]
        if isinstance(template, str):
            lines.append(f'TEMPLATE """{template}"""')
        lines += [f"PARAMETER {k} {v}" for k, v in params]
        return JSONResponse({
            "modelfile": "\n".join(lines) + "\n",
            "parameters": "\n".join(f"{k:<30} {v}" for k, v in params),
            "template": template if isinstance(template, str) else "",
            "license": str(summary.metadata.get("general.license", "")),
            "details": info.details(summary),
            "model_info": info.model_info(summary),
            "capabilities": info.capabilities(summary),
            "modified_at": modified,
        })

    @staticmethod
    def _parameters(entry: ModelEntry) -> list[tuple[str, str]]:
        """The model's settings as Ollama PARAMETER lines (name, value)."""
        out = [("num_ctx", str(entry.context_params.n_ctx))]
        names = {"max_tokens": "num_predict"}
        for key, value in entry.sampling.to_dict(only_changed=True).items():
            if key == "stop":
                out += [("stop", json.dumps(s)) for s in value]
            elif isinstance(value, (int, float, str, bool)):
                out.append((names.get(key, key), json.dumps(value) if isinstance(value, str)
                            else str(value)))
        return out

    # -- load / unload requests --------------------------------------------------------

    async def _load_or_unload(self, name: str, entry: ModelEntry, keep: float | None,
                              shape: dict[str, Any]) -> Response:
        """A chat without messages / generate without prompt: load (or unload) only."""
        manager = self.state.manager
        if keep == 0:
            lm = manager.loaded.get(entry.name)
            if lm is not None and not await manager.unload(entry.name, "keep_alive"):
                lm.keep_alive = 0  # busy: unloaded when its last request ends
            reason = "unload"
        else:
            async with manager.use(entry.name, keep_alive=keep):
                pass
            reason = "load"
        return JSONResponse({"model": name, "created_at": _now(), **shape, "done": True,
                             "done_reason": reason})

    # -- generation ------------------------------------------------------------------------

    def _sampling(self, llm: LLM, options: dict[str, Any] | None,
                  schema: Any) -> SamplingParams:
        kw = sampling_overrides(options, cap=self.state.config.max_tokens_cap,
                                default_max=llm.sampling.max_tokens)
        if schema is not None:
            kw["json_schema"] = schema
        return make_sampling(llm.sampling, kw)

    async def _start(self, entry: ModelEntry, keep: float | None, started: float,
                     prepare: Callable[[LLM], tuple[list[int] | str, SamplingParams,
                                                    chat_tools.ChatPlan | None]]) -> _Run:
        """Hold the model (loading it if needed) and submit the request."""
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            t = time.monotonic()
            lm = await stack.enter_async_context(
                self.state.manager.use(entry.name, keep_alive=keep))
            load = time.monotonic() - t
            prompt, sp, plan = await off_loop(lambda: prepare(lm.llm))
            handle = await off_loop(lambda: lm.llm.submit(
                prompt, sp, timeout=self.state.config.request_timeout,
                **(plan.submit_kwargs() if plan is not None else {})))
            tokens = prompt if isinstance(prompt, list) else []
        except BaseException:
            await stack.aclose()
            raise
        return _Run(stack, lm, handle, tokens, plan, started, load)

    async def chat(self, request: Request) -> Response:
        started = time.monotonic()
        body = await parse_body(request, ChatBody.parse)
        name = body.model_name
        entry = self._entry(name)
        keep = parse_keep_alive(body.keep_alive)
        check_think(body.think)
        if not body.messages:
            return await self._load_or_unload(
                name, entry, keep, {"message": {"role": "assistant", "content": ""}})
        await self._require(entry, "completion", name)
        messages = _chat_messages(body.messages)
        tools = _checked_tools(body.tools)
        schema = format_schema(body.format)
        # a schema with tools: a call, or a reply that follows the schema (one grammar)

        def prepare(llm: LLM) -> tuple[list[int] | str, SamplingParams, chat_tools.ChatPlan]:
            sp = self._sampling(llm, body.options, schema)
            plan = chat_tools.plan(llm, messages, sp, tools, "auto" if tools else None)
            # with images the prompt stays text: its projector markers become the media
            prompt = plan.prompt if plan.media else llm.tokenize(plan.prompt)
            return prompt, plan.sampling, plan

        run = await self._start(entry, keep, started, prepare)
        if body.stream is not False:
            return HeldStreamingResponse(self._chat_lines(name, run), media_type=NDJSON,
                                         cleanup=run.stack, handles=[run.handle])
        async with run.stack:
            c = (await results([run.handle], request))[0]
            content, calls = _tool_calls(run.plan, c)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = calls
            answer = {"model": name, "created_at": _now(), "message": message, "done": True,
                      **run.stats(c)}
        return JSONResponse(answer)

    async def _chat_lines(self, name: str, run: _Run) -> AsyncIterator[str]:
        buffered = run.plan is not None and run.plan.buffers_text
        try:
            async for piece in run.handle:
                if not buffered and piece:
                    yield _line({"model": name, "created_at": _now(),
                                 "message": {"role": "assistant", "content": piece},
                                 "done": False})
            c = run.handle.completion
            if c is None:  # pragma: no cover - a finished handle has its completion
                raise RuntimeError("the request ended without a result")
            content, calls = _tool_calls(run.plan, c)
            message: dict[str, Any] = {"role": "assistant",
                                       "content": content if buffered else ""}
            if calls:
                message["tool_calls"] = calls
            yield _line({"model": name, "created_at": _now(), "message": message,
                         "done": True, **run.stats(c)})
        except Exception as exc:  # the status line has gone: report it in the stream
            yield _line({"error": from_exception(exc).message})

    async def generate(self, request: Request) -> Response:
        started = time.monotonic()
        body = await parse_body(request, GenerateBody.parse)
        name = body.model_name
        entry = self._entry(name)
        keep = parse_keep_alive(body.keep_alive)
        check_think(body.think)
        if body.images and (body.suffix or body.context):
            raise bad_request("images cannot be combined with suffix or context", "images")
        if not body.prompt and not body.suffix and not body.context and not body.images:
            return await self._load_or_unload(name, entry, keep, {"response": ""})
        await self._require(entry, "completion", name)
        schema = format_schema(body.format)

        def prepare(llm: LLM) -> tuple[list[int] | str, SamplingParams,
                                       chat_tools.ChatPlan | None]:
            sp = self._sampling(llm, body.options, schema)
            prompt, media = self._generate_prompt(llm, body, sp)
            if not media:
                return prompt, sp, None
            return prompt, sp, chat_tools.ChatPlan(str(prompt), sp, None, media)

        run = await self._start(entry, keep, started, prepare)
        if body.stream is not False:
            return HeldStreamingResponse(self._generate_lines(name, run), media_type=NDJSON,
                                         cleanup=run.stack, handles=[run.handle])
        async with run.stack:
            c = (await results([run.handle], request))[0]
        answer = {"model": name, "created_at": _now(), "response": c.text, "done": True,
                  **run.stats(c)}
        if not body.images:  # images are not tokens: no context to hand back
            answer["context"] = [*run.prompt_tokens, *c.tokens]
        return JSONResponse(answer)

    @staticmethod
    def _generate_prompt(llm: LLM, body: GenerateBody,
                         sp: SamplingParams) -> tuple[list[int] | str, list[Any]]:
        """The prompt of /api/generate: raw, through a Go template, the model's chat
        template, or fill-in-the-middle with ``suffix``; after ``context``. With
        ``images``: the text with one projector marker per image before the prompt
        (tokenized with the images by the engine), and the images."""
        prompt = body.prompt or ""
        if body.suffix:
            return fim.format_infill(llm.vocab, prompt, body.suffix, n_batch=llm.ctx.n_batch,
                                     n_predict=sp.max_tokens, n_ctx=llm.ctx.n_ctx_seq), []
        media: list[Any] = []
        if body.images:
            parts = [*image_parts(body.images, "images"), {"type": "text", "text": prompt}]
            (message,), media = _mm.split(llm, [{"role": "user", "content": parts}],
                                          allow_files=False)
            prompt = str(message["content"])
        if body.raw:
            text = prompt
        elif body.template:
            text = render_go_template(body.template, {"System": body.system or "",
                                                      "Prompt": prompt, "Response": ""})
        elif llm.model.chat_template() is None:  # no template: the prompt as it is
            text = f"{body.system}\n\n{prompt}" if body.system else prompt
        else:
            messages = [{"role": "system", "content": body.system}] if body.system else []
            messages.append({"role": "user", "content": prompt})
            text = llm.apply_chat_template(messages)
        if media:
            return text, media
        if body.context:
            return [*llm.tokenize(body.context), *llm.tokenize(text, add_special=False)], []
        return llm.tokenize(text), []

    async def _generate_lines(self, name: str, run: _Run) -> AsyncIterator[str]:
        try:
            async for piece in run.handle:
                if piece:
                    yield _line({"model": name, "created_at": _now(), "response": piece,
                                 "done": False})
            c = run.handle.completion
            if c is None:  # pragma: no cover - a finished handle has its completion
                raise RuntimeError("the request ended without a result")
            last = {"model": name, "created_at": _now(), "response": "", "done": True,
                    **run.stats(c)}
            if run.plan is None:  # a plan here holds images: no context to hand back
                last["context"] = [*run.prompt_tokens, *c.tokens]
            yield _line(last)
        except Exception as exc:
            yield _line({"error": from_exception(exc).message})

    # -- embeddings ------------------------------------------------------------------------

    async def _embed(self, name: str, keep: float | None, texts: list[str], *,
                     normalize: bool, truncate: bool) -> tuple[list[np.ndarray], int, float]:
        """(vectors, prompt tokens, load seconds) of ``texts`` (none: load only)."""
        entry = self._entry(name)
        t = time.monotonic()
        async with self.state.manager.use(entry.name, keep_alive=keep) as lm:
            load = time.monotonic() - t
            if not texts:
                return [], 0, load
            llm = lm.llm
            # a model without pooling of its own (a generative one): one vector per
            # input all the same, the mean of its tokens' (never token vectors)
            pooling = "mean" if llm.ctx.pooling == PoolingType.NONE else None
            try:
                count = await off_loop(lambda: sum(len(llm.tokenize(x)) for x in texts))
                vectors = await asyncio.to_thread(
                    lambda: llm.embed(texts, normalize=normalize, truncate=truncate,
                                      pooling=pooling))
            except Exception as exc:
                raise from_exception(exc, "input") from exc
        return [np.asarray(v, dtype=np.float32) for v in vectors], count, load

    async def embed(self, request: Request) -> Response:
        started = time.monotonic()
        body = await parse_body(request, EmbedBody.parse)
        raw = body.input
        texts = [raw] if isinstance(raw, str) else list(raw or [])
        if body.dimensions is not None and body.dimensions < 1:
            raise bad_request("dimensions must be >= 1", "dimensions")
        vectors, count, load = await self._embed(body.model_name,
                                                 parse_keep_alive(body.keep_alive), texts,
                                                 normalize=True, truncate=body.truncate)
        out = []
        for v in vectors:
            if body.dimensions is not None:
                if body.dimensions > v.shape[-1]:
                    raise bad_request(f"dimensions must be at most {v.shape[-1]} (the model's "
                                      "embedding size)", "dimensions")
                v = v[..., :body.dimensions]
                norm = float(np.linalg.norm(v))
                v = v / norm if norm > 0 else v
            out.append(v.tolist())
        return JSONResponse({"model": body.model_name, "embeddings": out,
                             "total_duration": _ns(time.monotonic() - started),
                             "load_duration": _ns(load), "prompt_eval_count": count})

    async def embeddings(self, request: Request) -> Response:
        body = await parse_body(request, EmbeddingsBody.parse)
        texts = [body.prompt] if body.prompt else []
        vectors, _, _ = await self._embed(body.model_name, parse_keep_alive(body.keep_alive),
                                          texts, normalize=False, truncate=True)
        return JSONResponse({"embedding": vectors[0].tolist() if vectors else []})
