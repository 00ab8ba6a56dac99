"""OpenAI's Responses API requests, turned into chat completion requests.

A ``POST /v1/responses`` body is checked here (a 400 naming the field for
anything wrong or not supported) and rewritten as the chat request the chat
completions route runs: ``instructions`` and the ``input`` items become chat
messages (``function_call`` items an assistant message's ``tool_calls``,
``function_call_output`` items ``tool`` messages), the flat function tools
OpenAI's chat shape, ``text.format`` a ``response_format``,
``max_output_tokens`` ``max_tokens``. Hosted tools (web search, file search,
computer use, code interpreter ...) need OpenAI's own services and are refused.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ApiError, bad_request
from .schemas import ChatRequest, _Body

HOSTED_TOOLS = ("web_search", "web_search_preview", "file_search", "computer_use",
                "computer_use_preview", "code_interpreter", "image_generation", "mcp",
                "local_shell", "shell", "apply_patch", "custom")
"""Tool types of OpenAI's hosted services (and dated variants: ``web_search_2025_08_26``)."""

ROLES = ("user", "system", "developer", "assistant")
LOGPROBS_INCLUDE = "message.output_text.logprobs"
INCLUDES = frozenset({LOGPROBS_INCLUDE, "reasoning.encrypted_content", "file_search_call.results",
                      "web_search_call.action.sources", "web_search_call.results",
                      "code_interpreter_call.outputs", "computer_call_output.output.image_url",
                      "message.input_image.image_url"})
"""``include`` values OpenAI documents; only the log-probabilities add anything here
(the others ask for parts of hosted tools' or reasoning output, which never occur)."""
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesRequest(_Body):
    """A ``POST /v1/responses`` body; llama.cpp sampling fields (``top_k``,
    ``seed``, ``repeat_penalty`` ...) are accepted as extra fields as in chat."""

    input: str | list[Any] | None = None
    instructions: str | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: TextConfig | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    include: list[str] | None = None
    previous_response_id: str | None = None
    store: bool = True
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: dict[str, Any] | None = None
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    user: str | None = None

    def refuse_unsupported(self) -> None:
        """400s for the fields only OpenAI's hosted platform can honour."""
        if self.background:
            raise bad_request("background responses are not supported by this server",
                              "background")
        if self.conversation is not None:
            raise bad_request("conversation objects are not supported by this server: send "
                              "previous_response_id or the earlier items in input",
                              "conversation")
        if self.prompt is not None:
            raise bad_request("stored prompt templates ('prompt') are not supported by this "
                              "server: send instructions and input", "prompt")
        for i, item in enumerate(self.include or []):
            if item not in INCLUDES:
                raise bad_request(f"include[{i}] {item!r} is not a known include value "
                                  f"({', '.join(sorted(INCLUDES))})", "include")


def _where_type(value: Any, where: str, kind: type, what: str) -> None:
    if not isinstance(value, kind):
        raise bad_request(f"{where} must be {what}, not {type(value).__name__}", where)


def check_tools(tools: list[Any] | None) -> list[dict[str, Any]] | None:
    """The request's function tools in the chat shape; a 400 naming a hosted tool."""
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        _where_type(tool, where, dict, "an object")
        kind = tool.get("type")
        if kind != "function":
            if isinstance(kind, str) and any(kind == h or kind.startswith(h + "_")
                                             for h in HOSTED_TOOLS):
                raise bad_request(f"{where}: the hosted tool {kind!r} is not supported by this "
                                  "server (only function tools run here)", "tools")
            raise bad_request(f"{where}.type must be 'function', got {kind!r}", f"{where}.type")
        fn = tool["function"] if isinstance(tool.get("function"), dict) else tool
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise bad_request(f"{where}.name must be 1-64 letters, digits, '_', '.' or '-', "
                              f"got {name!r}", f"{where}.name")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise bad_request(f"{where}.parameters must be a JSON schema object",
                              f"{where}.parameters")
        desc = fn.get("description")
        if desc is not None and not isinstance(desc, str):
            raise bad_request(f"{where}.description must be a string", f"{where}.description")
        chat_fn: dict[str, Any] = {"name": name}
        if desc:
            chat_fn["description"] = desc
        if params is not None:
            chat_fn["parameters"] = params
        out.append({"type": "function", "function": chat_fn})
    return out


def check_tool_choice(choice: Any, tools: list[dict[str, Any]] | None) -> Any:
    """``tool_choice`` in the chat shape (None: not given)."""
    if choice is None or choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, str):
        raise bad_request(f"tool_choice must be 'none', 'auto', 'required' or "
                          f"{{'type': 'function', 'name': ...}}, got {choice!r}", "tool_choice")
    kind = choice.get("type")
    if kind != "function":
        what = "allowed_tools lists" if kind == "allowed_tools" else f"type {kind!r}"
        raise bad_request(f"tool_choice {what} are not supported by this server (only 'none', "
                          "'auto', 'required' or a function)", "tool_choice")
    name = choice.get("name")
    if name is None and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")  # the chat shape
    if not isinstance(name, str):
        raise bad_request("tool_choice.name must name a function", "tool_choice.name")
    if not any(t["function"]["name"] == name for t in tools or []):
        raise bad_request(f"tool_choice names function {name!r}, which is not in tools",
                          "tool_choice")
    return {"type": "function", "function": {"name": name}}


def response_format(text: TextConfig | None) -> dict[str, Any] | None:
    """``text.format`` as a chat ``response_format`` (None: free text)."""
    fmt = text.format if text is not None else None
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind != "json_schema":
        raise bad_request(f"text.format.type must be 'text', 'json_object' or 'json_schema', "
                          f"got {kind!r}", "text.format.type")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise bad_request("text.format.schema (a JSON schema object) is required for type "
                          "'json_schema'", "text.format.schema")
    name = fmt.get("name")
    if name is not None and not isinstance(name, str):
        raise bad_request("text.format.name must be a string", "text.format.name")
    return {"type": "json_schema", "json_schema": {"name": name or "response", "schema": schema}}


def _text_of(content: Any, where: str, *, assistant: bool) -> str | list[dict[str, Any]]:
    """A message item's content as chat content (a string or chat parts)."""
    if isinstance(content, str):
        return content
    _where_type(content, f"{where}.content", list, "a string or a list of content parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        _where_type(part, at, dict, "an object with a 'type'")
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            _where_type(part.get("text"), f"{at}.text", str, "a string")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            _where_type(part.get("refusal"), f"{at}.refusal", str, "a string")
            parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image" and not assistant:
            url = part.get("image_url")
            if not isinstance(url, str):
                what = "file_id references" if part.get("file_id") else "a missing image_url"
                raise bad_request(f"{at}: {what} cannot be used here; send the image as a "
                                  "data: URL in image_url", f"{at}.image_url")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            allowed = "output_text, refusal" if assistant else "input_text, input_image"
            raise bad_request(f"{at}.type {kind!r} is not supported here ({allowed})",
                              f"{at}.type")
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts) if parts else ""
    return parts


def _function_output(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    _where_type(value, f"{where}.output", list, "a string or a list of input_text parts")
    texts = []
    for j, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") != "input_text" \
                or not isinstance(part.get("text"), str):
            raise bad_request(f"{where}.output[{j}] must be an input_text part",
                              f"{where}.output")
        texts.append(part["text"])
    return "\n".join(texts)


def input_messages(value: str | list[Any] | None) -> list[dict[str, Any]]:
    """The chat messages of ``input`` (a string is one user message)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        _where_type(item, where, dict, "an object (a message or a function call item)")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise bad_request(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}",
                                  f"{where}.role")
            if "content" not in item:
                raise bad_request(f"{where}.content is required", f"{where}.content")
            content = _text_of(item["content"], where, assistant=role == "assistant")
            messages.append({"role": "system" if role == "developer" else role,
                             "content": content})
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                _where_type(item.get(key), f"{where}.{key}", str, "a string")
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" \
                    and isinstance(last.get("content"), (str, type(None))):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            _where_type(item.get("call_id"), f"{where}.call_id", str, "a string")
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": _function_output(item.get("output"), where)})
        elif kind == "reasoning":
            continue  # never produced here; a client may hand back another model's
        else:
            raise bad_request(f"{where}.type {kind!r} is not supported (message, function_call, "
                              "function_call_output)", f"{where}.type")
    return messages


def chat_body(body: ResponsesRequest, messages: list[dict[str, Any]],
              tools: list[dict[str, Any]] | None, tool_choice: Any) -> ChatRequest:
    """The chat completion request that answers ``body`` with ``messages``."""
    data: dict[str, Any] = dict(body.sampling_extras())
    data.update(messages=messages, n=1, stream=False)
    if body.model is not None:
        data["model"] = body.model
    if tools:
        data["tools"] = tools
    if tool_choice is not None:
        data["tool_choice"] = tool_choice
    fmt = response_format(body.text)
    if fmt is not None:
        data["response_format"] = fmt
    for name in ("temperature", "top_p"):
        if getattr(body, name) is not None:
            data[name] = getattr(body, name)
    if body.max_output_tokens is not None:
        data["max_tokens"] = body.max_output_tokens
    if LOGPROBS_INCLUDE in (body.include or []) or body.top_logprobs is not None:
        data["logprobs"] = True
        data["top_logprobs"] = body.top_logprobs or 0
    try:
        return ChatRequest.parse(data)
    except ApiError as exc:
        raise renamed(exc) from None


_FIELDS = {"messages": "input", "response_format": "text.format",
           "max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}


def renamed(error: ApiError) -> ApiError:
    """A chat route's error with the Responses field it concerns."""
    param = error.param
    if param is not None:
        head = re.split(r"[.\[]", param, maxsplit=1)[0]
        if head in _FIELDS:
            error.param = _FIELDS[head]
    return error
