"""Messages as chat templates want them: OpenAI-shaped input normalised, and
what a template cannot show rewritten the way llama.cpp's chat layer does.

Input (OpenAI's chat format): ``role``, ``content`` (a string, None, or a list
of ``{"type": "text", "text": ...}`` parts), assistant ``tool_calls``
(``{"id", "type": "function", "function": {"name", "arguments"}}``, arguments
a JSON string or an object), ``tool`` messages with ``tool_call_id`` and
``content``.

What a template was found not to support (:class:`Caps`) is rewritten:

* no system role: the first system message is merged into the next message
  (joined with a newline), as llama.cpp's ``system_message_not_supported``;
* no tool calls: an assistant message's calls are appended to its content as
  ``{"tool_calls": [{"name": ..., "arguments": {...}, "id": ...}]}``;
* no tool role: a tool result becomes a user message
  ``{"tool_response": {"tool": ..., "tool_call_id": ..., "content": ...}}``;
* only typed content: text becomes ``[{"type": "text", "text": ...}]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import LlamaError

log = logging.getLogger("llama_cffi")


class TemplateError(LlamaError, ValueError):
    """A chat template that is malformed, unsafe, unknown, or that refused the messages."""


@dataclass(frozen=True)
class Caps:
    """What a template shows of a conversation (found by rendering probes)."""

    system_role: bool = True
    tools: bool = False  # it describes the ``tools`` it is given
    tool_calls: bool = False  # it renders assistant ``tool_calls``
    tool_role: bool = False  # it renders ``tool`` messages
    object_arguments: bool = True  # tool-call arguments as objects (else JSON strings)
    string_content: bool = True  # content as a string (else only as typed parts)
    typed_content: bool = False  # it reads a list of text parts (given as such)
    thinking: bool = False  # ``enable_thinking`` toggles its reasoning (llama.cpp passes it)


def _text_of(content: Any, where: str) -> str:
    """A message's content as text: parts joined with newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, Mapping) or "type" not in part:
                raise TemplateError(f"{where}.content[{i}] must be a dict with a 'type'")
            if part["type"] != "text":
                raise TemplateError(f"{where}.content[{i}]: only 'text' parts can be "
                                    f"rendered, not {part['type']!r}")
            texts.append(str(part.get("text", "")))
        return "\n".join(texts)
    raise TemplateError(f"{where}.content must be a string, a list of text parts or None, "
                        f"not {type(content).__name__}")


def _arguments(args: Any, where: str) -> dict[str, Any]:
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise TemplateError(f"{where}.function.arguments is not valid JSON: {exc}") from None
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise TemplateError(f"{where}.function.arguments must be a JSON object "
                            f"(or its JSON text), not {type(args).__name__}")
    return dict(args)


def normalize(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Checked plain copies: content as text, tool-call arguments as dicts,
    ``developer`` as ``system``; other keys kept. A message needs a ``content``
    key (None or ``""`` allowed) or ``tool_calls``, as llama.cpp's chat layer."""
    given: object = messages
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
        raise TypeError("messages must be a list of dicts with 'role' and 'content'")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise TemplateError(f"{where} must be a dict, not {type(m).__name__}")
        if "role" not in m or not isinstance(m["role"], str):
            raise TemplateError(f"{where} has no 'role' (a string such as 'user')")
        if "content" not in m and "tool_calls" not in m:  # llama.cpp's chat layer refuses it too
            raise TemplateError(f"{where} has neither 'content' nor 'tool_calls' (give "
                                f"content '' or None for an empty message)")
        msg = {k: v for k, v in m.items() if k != "tool_calls"}
        if msg["role"] == "developer":
            msg["role"] = "system"
        msg["content"] = _text_of(m.get("content"), where)
        if isinstance(m.get("content"), list):  # text parts, for templates that read them
            msg["_parts"] = [{"type": "text", "text": str(p.get("text", ""))}
                             for p in m["content"]]
        calls = m.get("tool_calls")
        if calls:
            if not isinstance(calls, Sequence):
                raise TemplateError(f"{where}.tool_calls must be a list")
            norm = []
            for j, call in enumerate(calls):
                w = f"{where}.tool_calls[{j}]"
                fn = call.get("function") if isinstance(call, Mapping) else None
                if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                    raise TemplateError(f"{w} must be {{'type': 'function', 'function': "
                                        f"{{'name': ..., 'arguments': ...}}}}")
                norm.append({"id": str(call.get("id") or f"call_{i}_{j}"), "type": "function",
                             "function": {"name": fn["name"],
                                          "arguments": _arguments(fn.get("arguments"), w)}})
            msg["tool_calls"] = norm
        out.append(msg)
    return out


def _tool_calls_text(calls: Sequence[Mapping[str, Any]]) -> str:
    """Calls in llama.cpp's generic JSON (what the generic tools prompt asks for)."""
    items = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"],
              "id": c["id"]} for c in calls]
    value = {"tool_call": items[0]} if len(items) == 1 else {"tool_calls": items}
    return json.dumps(value, ensure_ascii=False)


def adapt(messages: list[dict[str, Any]], caps: Caps) -> list[dict[str, Any]]:
    """Rewrite what the template cannot show (see the module docstring)."""
    names = {c["id"]: c["function"]["name"] for m in messages for c in m.get("tool_calls", ())}
    out: list[dict[str, Any]] = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls") and not caps.tool_calls:
            text = _tool_calls_text(m.pop("tool_calls"))
            m["content"] = f"{m['content']}\n{text}" if m["content"] else text
        elif m.get("tool_calls"):
            m["content"] = m.get("content") or ""
        if m["role"] == "tool" and not caps.tool_role:
            response: dict[str, Any] = {}
            name = m.get("name") or names.get(m.get("tool_call_id", ""))
            if name:
                response["tool"] = name
            if m.get("tool_call_id"):
                response["tool_call_id"] = m["tool_call_id"]
            response["content"] = m["content"]
            m = {"role": "user",
                 "content": json.dumps({"tool_response": response}, ensure_ascii=False)}
        out.append(m)
    if not caps.system_role and out and out[0]["role"] == "system":
        first = out.pop(0)
        if out:
            out[0] = {**out[0], "content": f"{first['content']}\n{out[0]['content']}",
                      "_parts": None}
        else:
            log.warning("the chat template has no system role: the lone system message "
                        "was dropped")
    return out


def typed(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Content as a list of one text part (templates that only read typed content)."""
    return [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in messages]


def finish(messages: list[dict[str, Any]], caps: Caps) -> list[dict[str, Any]]:
    """The messages handed to the template: content as text, as the parts it was
    given in (templates that read parts), or as one part (templates that only
    read parts); llama.cpp's ``messages_inp_normalizer``."""
    out = []
    for m in messages:
        m = dict(m)
        parts = m.pop("_parts", None)
        if not caps.string_content:
            m["content"] = parts or [{"type": "text", "text": m["content"]}]
        elif caps.typed_content and parts:
            m["content"] = parts
        out.append(m)
    return out


def tools_system_prompt(tools: Sequence[Mapping[str, Any]], *, mode: str = "auto",
                        schema: Any = None) -> str:
    """A system message describing ``tools``, for templates that do not.

    mode: ``"auto"`` / ``"forced"``: with llama.cpp's generic JSON reply format
    (a call, or also ``{"response": ...}`` for auto, its value following
    ``schema`` when one is given); ``"list"``: only the tools (the model writes
    calls in its own format)."""
    specs = json.dumps([t["function"] for t in tools], indent=2, ensure_ascii=False)
    lines = ["You can call the following tools (JSON schemas of their parameters):", specs]
    if mode == "forced":
        lines += ["", 'Respond with a JSON object {"tool_call": {"name": <tool name>, '
                      '"arguments": <arguments object>}}.']
    elif mode == "auto" and schema is not None:
        lines += ["", 'To call a tool, respond with a JSON object {"tool_call": {"name": '
                      '<tool name>, "arguments": <arguments object>}}; to answer directly, '
                      'respond with {"response": <your answer as JSON following this '
                      'schema>}:', json.dumps(schema, ensure_ascii=False)]
    elif mode == "auto":
        lines += ["", 'To call a tool, respond with a JSON object {"tool_call": {"name": '
                      '<tool name>, "arguments": <arguments object>}}; to answer directly, '
                      'respond with {"response": <your answer as a string>}.']
    return "\n".join(lines)


def with_system(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """``text`` prepended to the system message (or as a new one)."""
    if messages and messages[0]["role"] == "system":
        first = messages[0]
        return [{**first, "content": f"{first['content']}\n\n{text}" if first["content"]
                 else text, "_parts": None}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]
