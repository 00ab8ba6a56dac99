"""OpenAI's endpoints: chat completions, completions, embeddings, models."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..._bindings.enums import PoolingType
from ...api.completion_logprobs import openai_logprobs
from ...engine.request import RequestHandle
from ...engine.results import Completion
from ...objects.params import SamplingParams
from ...objects.vocab import Vocab
from . import tools as chat_tools
from .errors import bad_request, from_exception, off_loop, parse_body
from .manager import LoadedModel
from .schemas import (ChatRequest, CompletionRequest, EmbeddingRequest, check_messages,
                      make_sampling, response_schema, sampling_kwargs)
from .state import ServerState
from .streaming import SSE_DONE, HeldStreamingResponse, merged, results, sse, submit_all


def _usage(completions: list[Completion]) -> dict[str, Any]:
    prompt = completions[0].usage.prompt_tokens if completions else 0
    cached = completions[0].usage.cached_tokens if completions else 0
    generated = sum(c.usage.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": generated,
            "total_tokens": prompt + generated,
            "prompt_tokens_details": {"cached_tokens": cached}}


def finish_reason(c: Completion) -> str:
    if c.finish_reason in ("stop", "grammar"):
        return "stop"
    if c.finish_reason == "cancelled":
        return "stop"
    return c.finish_reason  # "length"


def _seeded(sp: SamplingParams, i: int) -> SamplingParams:
    """Choice ``i`` of ``n``: a different seed for each choice when one is given."""
    if i == 0 or sp.seed == 0xFFFFFFFF:
        return sp
    return sp.replace(seed=(sp.seed + i) & 0xFFFFFFFF)


def chat_logprobs(c: Completion) -> dict[str, Any] | None:
    if c.logprobs is None:
        return None
    content = []
    for lp in c.logprobs:
        content.append({"token": lp.text, "logprob": lp.logprob,
                        "bytes": list(lp.text.encode("utf-8")),
                        "top_logprobs": [{"token": t, "logprob": p,
                                          "bytes": list(t.encode("utf-8"))}
                                         for _, t, p in lp.top]})
    return {"content": content}


def completion_logprobs(c: Completion, vocab: Vocab, echo: str,
                        prompt: Any) -> dict[str, Any] | None:
    """A completions choice's ``logprobs``: with echo the prompt's tokens first
    (a BOS added to a text prompt left out, the first listed one null), then
    the generated ones, whose ``text_offset`` starts after the echoed prompt."""
    return openai_logprobs(c, lambda t: vocab.token_to_piece(t).decode("utf-8", "replace"),
                           offset=len(echo), skip_bos=vocab.bos if isinstance(prompt, str)
                           else None)


class ChatRun(NamedTuple):
    """A chat request submitted: the model held until ``stack`` closes, its requests."""

    stack: contextlib.AsyncExitStack
    lm: LoadedModel
    handles: list[RequestHandle]
    plan: chat_tools.ChatPlan


class OpenAIRoutes:
    """The handlers, bound to the server's state."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/completions", self.completions, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/models", self.models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.model, methods=["GET"]),
        ]

    # -- chat ------------------------------------------------------------------------------

    async def start_chat(self, body: ChatRequest) -> ChatRun:
        """Check ``body``, hold its model and submit its ``n`` requests; the caller
        closes ``run.stack`` once the answer is done (the Responses API runs here too)."""
        messages = check_messages(body.messages)
        schema = response_schema(body.response_format)
        tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
        choice = body.tool_choice
        tool_choice: Any = choice if choice is None or isinstance(choice, str) \
            else choice.model_dump()
        if tool_choice not in (None, "none", "auto") and not tools:
            raise bad_request("tool_choice needs tools", "tool_choice")
        if isinstance(tool_choice, dict):
            name = tool_choice["function"]["name"]
            if not any(t["function"]["name"] == name for t in tools or []):
                raise bad_request(f"tool_choice names function {name!r}, which is not in tools",
                                  "tool_choice")
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            lm = await stack.enter_async_context(self.state.manager.use(body.model))
            self.state.check_generates(lm)
            kw = sampling_kwargs(body, cap=self.state.config.max_tokens_cap,
                                 default_max=lm.llm.sampling.max_tokens)
            if body.logprobs:
                kw["logprobs"] = body.top_logprobs or 0
            if schema is not None:
                kw["json_schema"] = schema
            sp = make_sampling(lm.llm.sampling, kw)
            plan = await off_loop(lambda: chat_tools.plan(lm.llm, messages, sp, tools,
                                                          tool_choice, body.chat_template_kwargs))
            handles = await off_loop(lambda: submit_all(body.n, lambda i: lm.llm.submit(
                plan.prompt, _seeded(plan.sampling, i), timeout=self.state.config.request_timeout,
                **plan.submit_kwargs())))
        except BaseException as exc:
            await stack.aclose()
            raise from_exception(exc) from exc
        return ChatRun(stack, lm, handles, plan)

    async def chat(self, request: Request) -> Response:
        body = await parse_body(request, ChatRequest.parse)
        stack, lm, handles, plan = await self.start_chat(body)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        name = body.model or lm.entry.name
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return HeldStreamingResponse(
                self._chat_events(rid, created, name, handles, plan, include_usage),
                media_type="text/event-stream", cleanup=stack, handles=handles)
        async with stack:
            try:
                done = await results(handles, request)
            except BaseException as exc:
                raise from_exception(exc) from exc
        choices = []
        for i, c in enumerate(done):
            content, calls = plan.parse(c)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = calls
            choices.append({"index": i, "message": message, "logprobs": chat_logprobs(c),
                            "finish_reason": "tool_calls" if calls else finish_reason(c)})
        return JSONResponse({"id": rid, "object": "chat.completion", "created": created,
                             "model": name, "system_fingerprint": self.state.fingerprint,
                             "choices": choices, "usage": _usage(done)})

    async def _chat_events(self, rid: str, created: int, name: str, handles: list[RequestHandle],
                           plan: chat_tools.ChatPlan, include_usage: bool) -> AsyncIterator[str]:
        def chunk(i: int, delta: dict[str, Any], finish: str | None = None,
                  logprobs: Any = None) -> str:
            return sse({"id": rid, "object": "chat.completion.chunk", "created": created,
                        "model": name, "system_fingerprint": self.state.fingerprint,
                        "choices": [{"index": i, "delta": delta, "logprobs": logprobs,
                                     "finish_reason": finish}]})

        for i in range(len(handles)):
            yield chunk(i, {"role": "assistant", "content": ""})
        try:
            async for i, piece in merged(handles):
                if piece is not None:
                    if not plan.buffers_text:
                        yield chunk(i, {"content": piece})
                    continue
                c = handles[i].completion
                if c is None:  # pragma: no cover - a finished handle has its completion
                    continue
                content, calls = plan.parse(c)
                if plan.buffers_text and content:
                    yield chunk(i, {"content": content})
                if calls:
                    yield chunk(i, {"tool_calls": [dict(call, index=k)
                                                   for k, call in enumerate(calls)]})
                if c.logprobs is not None:
                    yield chunk(i, {}, logprobs=chat_logprobs(c))
                yield chunk(i, {}, "tool_calls" if calls else finish_reason(c))
        except Exception as exc:  # the status line has gone: report the error in the stream
            yield sse(from_exception(exc).body())
            yield SSE_DONE
            return
        if include_usage:
            done = [h.completion for h in handles if h.completion is not None]
            yield sse({"id": rid, "object": "chat.completion.chunk", "created": created,
                       "model": name, "choices": [], "usage": _usage(done)})
        yield SSE_DONE

    # -- text completions ------------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        body = await parse_body(request, CompletionRequest.parse)
        prompts: list[Any]
        p = body.prompt
        if isinstance(p, str) or (isinstance(p, list) and p and isinstance(p[0], int)):
            prompts = [p]
        else:
            prompts = list(p)
        if not prompts or any(len(x) == 0 for x in prompts):
            raise bad_request("prompt must not be empty", "prompt")
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            lm = await stack.enter_async_context(self.state.manager.use(body.model))
            self.state.check_generates(lm)
            kw = sampling_kwargs(body, cap=self.state.config.max_tokens_cap,
                                 default_max=16 if lm.llm.sampling.max_tokens < 0
                                 else lm.llm.sampling.max_tokens)
            if body.logprobs is not None:
                kw["logprobs"] = body.logprobs
            sp = make_sampling(lm.llm.sampling, kw)
            jobs = [(k, i) for k in range(len(prompts)) for i in range(body.n)]
            extra: dict[str, Any] = {"suffix": body.suffix} if body.suffix is not None else {}
            handles = await off_loop(lambda: submit_all(len(jobs), lambda j: lm.llm.submit(
                prompts[jobs[j][0]], _seeded(sp, jobs[j][1]), echo=body.echo,
                timeout=self.state.config.request_timeout, **extra)))
            echoes = [self._prompt_text(lm, x) if body.echo else "" for x in prompts]

            def logprobs_of(j: int, c: Completion) -> dict[str, Any] | None:
                k = jobs[j][0]  # with echo, c has the prompt's entries too
                return completion_logprobs(c, lm.llm.vocab, echoes[k], prompts[k])
        except BaseException as exc:
            await stack.aclose()
            raise from_exception(exc, "prompt") from exc
        rid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        name = body.model or lm.entry.name
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return HeldStreamingResponse(
                self._completion_events(rid, created, name, handles, logprobs_of,
                                        include_usage),
                media_type="text/event-stream", cleanup=stack, handles=handles)
        async with stack:
            try:
                done = await results(handles, request)
            except BaseException as exc:
                raise from_exception(exc) from exc
        choices = []
        for j, c in enumerate(done):  # c.text starts with the echoed prompt
            choices.append({"index": j, "text": c.text, "logprobs": logprobs_of(j, c),
                            "finish_reason": finish_reason(c)})
        usage = {"prompt_tokens": sum(done[j].usage.prompt_tokens for j in range(len(done))
                                      if jobs[j][1] == 0),
                 "completion_tokens": sum(c.usage.completion_tokens for c in done)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse({"id": rid, "object": "text_completion", "created": created,
                             "model": name, "system_fingerprint": self.state.fingerprint,
                             "choices": choices, "usage": usage})

    @staticmethod
    def _prompt_text(lm: LoadedModel, prompt: Any) -> str:
        if isinstance(prompt, str):
            return prompt
        return lm.llm.vocab.detokenize(list(prompt))

    async def _completion_events(self, rid: str, created: int, name: str,
                                 handles: list[RequestHandle],
                                 logprobs_of: Callable[[int, Completion], Any],
                                 include_usage: bool) -> AsyncIterator[str]:
        def chunk(i: int, text: str, finish: str | None = None, logprobs: Any = None) -> str:
            return sse({"id": rid, "object": "text_completion", "created": created,
                        "model": name, "choices": [{"index": i, "text": text,
                                                    "logprobs": logprobs,
                                                    "finish_reason": finish}]})

        try:  # an echoed prompt is each handle's first piece
            async for i, piece in merged(handles):
                if piece is not None:
                    yield chunk(i, piece)
                    continue
                c = handles[i].completion
                if c is not None:
                    yield chunk(i, "", finish_reason(c), logprobs_of(i, c))
        except Exception as exc:
            yield sse(from_exception(exc).body())
            yield SSE_DONE
            return
        if include_usage:
            done = [h.completion for h in handles if h.completion is not None]
            yield sse({"id": rid, "object": "text_completion", "created": created,
                       "model": name, "choices": [], "usage": _usage(done)})
        yield SSE_DONE

    # -- embeddings ----------------------------------------------------------------------------

    async def embeddings(self, request: Request) -> Response:
        body = await parse_body(request, EmbeddingRequest.parse)
        raw = body.input
        items: list[Any]
        if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
            items = [raw]
        else:
            items = list(raw)
        if not items or any(len(x) == 0 for x in items):
            raise bad_request("input must not be empty", "input")
        async with self.state.manager.use(body.model) as lm:
            llm = lm.llm
            if body.dimensions is not None and body.dimensions != llm.model.n_embd:
                raise bad_request(f"dimensions must be {llm.model.n_embd} (the model's "
                                  "embedding size) or left out", "dimensions")
            try:
                texts = [x if isinstance(x, str) else llm.vocab.detokenize(list(x))
                         for x in items]
                counts = await off_loop(lambda: [len(llm.tokenize(t)) for t in texts])
                # a model without pooling of its own (a generative one): the mean of
                # its tokens' vectors, one vector per input as OpenAI's shape has it
                pooling = "mean" if llm.ctx.pooling == PoolingType.NONE else None
                vectors = await _in_thread(lambda: llm.embed(texts, truncate=False,
                                                             pooling=pooling))
            except BaseException as exc:
                raise from_exception(exc, "input") from exc
        data = []
        for i, v in enumerate(vectors):
            arr = np.asarray(v, dtype=np.float32)
            value: Any = (base64.b64encode(arr.astype("<f4").tobytes()).decode("ascii")
                          if body.encoding_format == "base64" else arr.tolist())
            data.append({"object": "embedding", "index": i, "embedding": value})
        total = sum(counts)
        return JSONResponse({"object": "list", "data": data, "model": body.model or lm.entry.name,
                             "usage": {"prompt_tokens": total, "total_tokens": total}})

    # -- models ----------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list",
                             "data": [self.state.model_card(e.name)
                                      for e in self.state.config.models]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        entry = self.state.config.resolve(name)
        if entry is None:
            raise from_exception(self.state.manager_lookup_error(name))
        return JSONResponse(self.state.model_card(entry.name))


async def _in_thread(fn: Any) -> Any:
    return await asyncio.to_thread(fn)
