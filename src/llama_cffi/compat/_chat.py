"""``Llama.create_chat_completion``: OpenAI-shaped chat results from :meth:`llama_cffi.LLM.chat`.

The prompt comes from the model's chat template (or ``chat_format``), tool
calls are parsed by the LLM's chat layer, and ``response_format`` becomes a
JSON schema the output is constrained to (with ``tools``: a tool call, or a
reply that follows the schema; see :mod:`llama_cffi.api.tool_choice`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..engine.results import Completion, TokenLogprob
from ._completion import FINISH, SamplingOptions, sampling_overrides

if TYPE_CHECKING:
    from ..api.llm import Stream
    from .llama import Llama


@dataclass(kw_only=True)
class ChatOptions(SamplingOptions):
    """``create_chat_completion``'s keywords besides ``messages``."""

    temperature: float = 0.2
    max_tokens: int | None = None
    functions: Sequence[Mapping[str, Any]] | None = None
    function_call: str | Mapping[str, Any] | None = None
    tools: Sequence[Mapping[str, Any]] | None = None
    tool_choice: str | Mapping[str, Any] | None = None
    response_format: Mapping[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


def _schema(fmt: Mapping[str, Any] | None) -> Any:
    """The JSON schema ``response_format`` asks for (True: any JSON object), or None."""
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        schema = fmt.get("schema")
        return True if schema is None else schema
    if kind == "json_schema":
        inner = fmt.get("json_schema") or {}
        return inner.get("schema", True) if isinstance(inner, Mapping) else True
    raise ValueError(f"response_format type must be 'text', 'json_object' or 'json_schema', "
                     f"got {kind!r}")


def _tools(o: ChatOptions) -> tuple[list[dict[str, Any]] | None, Any]:
    """``tools``/``tool_choice``, with the deprecated ``functions``/``function_call`` mapped."""
    tools = [dict(t) for t in o.tools] if o.tools else None
    choice: Any = o.tool_choice
    if tools is None and o.functions:
        tools = [{"type": "function", "function": dict(f)} for f in o.functions]
        fc = o.function_call
        if isinstance(fc, Mapping):
            choice = {"type": "function", "function": {"name": fc["name"]}}
        elif fc is not None:
            choice = fc
    return tools, choice


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """OpenAI's chat ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""
    def item(text: str, lp: float) -> dict[str, Any]:
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}
    content = [{**item(e.text, e.logprob),
                "top_logprobs": [item(t, lp) for _, t, lp in e.top]} for e in entries]
    return {"content": content, "refusal": None}


def _tool_calls(c: Completion) -> list[dict[str, Any]] | None:
    calls = getattr(c, "tool_calls", None)
    if not calls:
        return None
    return [{"id": t.id, "type": "function",
             "function": {"name": t.name, "arguments": t.arguments}} for t in calls]


def create_chat_completion(llama: Llama, messages: Sequence[Mapping[str, Any]],
                           o: ChatOptions) -> dict[str, Any] | Iterator[dict[str, Any]]:
    llm = llama._require_llm()
    msgs = list(messages)
    kw = sampling_overrides(llama, o, o.max_tokens)
    schema = _schema(o.response_format)
    if schema is not None:
        if o.grammar is not None:
            raise ValueError("give either grammar or response_format, not both")
        kw["json_schema"] = schema
    if o.logprobs:
        kw["logprobs"] = int(o.top_logprobs or 0)
    tools, choice = _tools(o)
    if tools is not None:
        kw["tools"] = tools
        if choice is not None:
            kw["tool_choice"] = choice
    if llama.chat_format is not None:
        kw["template"] = llama.chat_format
    cid, created = f"chatcmpl-{uuid.uuid4()}", int(time.time())
    model = o.model if o.model is not None else llama.model_path
    if o.stream:
        return _stream(llm.chat_stream(msgs, **kw), cid, created, model, buffered=bool(tools))
    c = llm.chat(msgs, **kw)
    calls = _tool_calls(c)
    message: dict[str, Any] = {"role": "assistant",
                               "content": c.content if getattr(c, "content", None) is not None
                               or calls else c.text}
    if calls:
        message["tool_calls"] = calls
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message,
                         "logprobs": chat_logprobs(c.logprobs) if o.logprobs and c.logprobs
                         is not None else None,
                         "finish_reason": "tool_calls" if calls
                         else FINISH.get(c.finish_reason, "stop")}],
            "usage": {"prompt_tokens": c.usage.prompt_tokens,
                      "completion_tokens": c.usage.completion_tokens,
                      "total_tokens": c.usage.prompt_tokens + c.usage.completion_tokens}}


def _delta(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None,
           logprobs: Any = None) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                         "finish_reason": finish}]}


def _stream(stream: Stream, cid: str, created: int, model: str, *,
            buffered: bool) -> Iterator[dict[str, Any]]:
    """Deltas: the role first, then content pieces, then an empty delta with
    finish_reason. With ``tools`` the reply is read whole first, since only
    its end tells whether it is a tool call; its calls then come as one delta."""
    try:
        yield _delta(cid, created, model, {"role": "assistant"}, None)
        pieces: list[str] | None = [] if buffered else None
        for piece in stream:
            if pieces is not None:
                pieces.append(piece)
            else:
                yield _delta(cid, created, model, {"content": piece}, None)
        c = stream.completion
        if c is None:
            c = stream.handle.result()
        calls = _tool_calls(c)
        if calls:
            yield _delta(cid, created, model, {"tool_calls": [
                {"index": i, **call} for i, call in enumerate(calls)]}, None)
            if c.content:
                yield _delta(cid, created, model, {"content": c.content}, None)
        elif pieces:  # the parsed content (a generic {"response": ...} reply unwrapped)
            content = c.content if c.content is not None else "".join(pieces)
            yield _delta(cid, created, model, {"content": content}, None)
        logprobs = chat_logprobs(c.logprobs) if c.logprobs is not None else None
        yield _delta(cid, created, model, {}, "tool_calls" if calls
                     else FINISH.get(c.finish_reason, "stop"), logprobs)
    finally:
        stream.close()
