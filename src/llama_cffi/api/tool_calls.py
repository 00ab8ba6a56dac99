"""Tool calls in a model's reply: which format a chat template speaks, and
the calls parsed out of generated text.

Formats ("families"), as llama.cpp's chat layer knows them
(``common/chat*.cpp``), each with an example reply:

``hermes``            Hermes 2/3, Qwen 2.5/3, MiMo, Granite 4:
                      ``<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>``
``qwen3_coder``       Qwen3-Coder, Qwen 3.5, Nemotron 3: ``<tool_call>\\n<function=f>\\n
                      <parameter=a>\\n1\\n</parameter>\\n</function>\\n</tool_call>``
``llama3``            Llama 3.1-3.3: ``{"name": "f", "parameters": {...}}``, or
                      ``<|python_tag|>`` followed by such JSON or ``tool.call(a=1)``
``mistral``           Mistral Nemo: ``[TOOL_CALLS][{"name": "f", "arguments": {...},
                      "id": "..."}]``; Small 3.2 / Devstral / Ministral:
                      ``[TOOL_CALLS]f[CALL_ID]id[ARGS]{...}`` / ``[TOOL_CALLS]f[ARGS]{...}``
``functionary_v3_1``  ``<function=f>{...}</function>``, ``<|python_tag|>code``
``functionary_v3_2``  ``>>>f\\n{...}`` / ``>>>all\\ntext`` (the first ``>>>`` is
                      in the prompt)
``deepseek``          R1: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f
                      \\n```json\\n{...}\\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>``;
                      V3.1: ``...<｜tool▁call▁begin｜>f<｜tool▁sep｜>{...}<｜tool▁call▁end｜>...``
``firefunction``      `` functools[{"name": "f", "arguments": {...}}]``
``command_r``         Command R7B: ``<|START_ACTION|>[{"tool_call_id": "0", "tool_name":
                      "f", "parameters": {...}}]<|END_ACTION|>``; R+:
                      ``Action: ```json [...] ``` ``
``granite``           Granite 3.x: ``<|tool_call|>[{"name": "f", "arguments": {...}}]``
``generic``           any template (llama.cpp's generic JSON format):
                      ``{"tool_call": {"name": "f", "arguments": {...}}}``,
                      ``{"tool_calls": [...]}`` or ``{"response": "text"}``
``generic_json``      the generic format whose ``response`` follows a JSON schema
                      (tools and a schema together): the content is the
                      response's JSON text, whatever its type

:func:`parse_tool_calls` never raises on model output: text that is not a
well-formed call stays in the content.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..engine.results import ToolCall

__all__ = ["FAMILIES", "ToolCall", "detect_family", "new_call_id", "parse_tool_calls",
           "tool_call_dict"]

_DECODER = json.JSONDecoder()

# (family, markers that must all be in the template text), first match wins
_DETECT: list[tuple[str, tuple[str, ...]]] = [
    ("mistral", ("[TOOL_CALLS]",)),
    ("functionary_v3_2", (">>>all",)),
    ("functionary_v3_1", ("<function=", "python_tag")),
    ("qwen3_coder", ("<tool_call>", "<function=", "<parameter=")),
    ("deepseek", ("tool▁calls▁begin",)),
    ("hermes", ("<tool_call>",)),
    ("firefunction", ("functools[",)),
    ("command_r", ("<|START_ACTION|>",)),
    ("command_r", ("Action:", "tool_name")),
    ("granite", ("<|tool_call|>",)),
    ("llama3", ("<|start_header_id|>", '"parameters": ')),
    ("llama3", ("<|python_tag|>",)),
]


def detect_family(template_text: str | None) -> str:
    """The tool-call format a chat template's model writes (see the module
    docstring); ``"generic"`` for a template without a native format."""
    if not template_text:
        return "generic"
    for family, markers in _DETECT:
        if all(m in template_text for m in markers):
            return family
    return "generic"


def new_call_id() -> str:
    """A fresh OpenAI-style call id (``call_`` and 24 hex digits)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _call(name: Any, args: Any, call_id: Any = None) -> ToolCall | None:
    """A ToolCall, or None when ``name``/``args`` are not a call's."""
    if not isinstance(name, str) or not name:
        return None
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None
    cid = str(call_id) if call_id not in (None, "") else new_call_id()
    return ToolCall(id=cid, name=name, arguments=json.dumps(args, ensure_ascii=False))


def _json_at(text: str, pos: int) -> tuple[Any, int] | None:
    """The JSON value starting at ``pos`` (after whitespace) and the position after it."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError:
        return None


def _from_object(obj: Any, name_key: str = "name",
                 arg_keys: tuple[str, ...] = ("arguments", "parameters")) -> ToolCall | None:
    if not isinstance(obj, dict):
        return None
    args: Any = {}
    for key in arg_keys:
        if key in obj:
            args = obj[key]
            break
    return _call(obj.get(name_key), args, obj.get("id") or obj.get("tool_call_id"))


def _from_list(value: Any, name_key: str = "name",
               arg_keys: tuple[str, ...] = ("arguments", "parameters")) -> list[ToolCall] | None:
    items = value if isinstance(value, list) else [value]
    calls = [_from_object(item, name_key, arg_keys) for item in items]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def _content(parts: list[str]) -> str | None:
    text = "".join(parts).strip()
    return text or None


def _blocks(text: str, start: str, end: str,
            body: Callable[[str], list[ToolCall] | None]) -> tuple[str | None, list[ToolCall]]:
    """Calls written as ``start body end`` blocks (the end may be cut off at the
    end of the text); the rest is content."""
    content, calls, pos = [], [], 0
    while True:
        i = text.find(start, pos)
        if i < 0:
            content.append(text[pos:])
            break
        j = text.find(end, i + len(start))
        stop = len(text) if j < 0 else j
        parsed = body(text[i + len(start):stop])
        if parsed is None:
            content.append(text[pos:stop + (0 if j < 0 else len(end))])
        else:
            content.append(text[pos:i])
            calls += parsed
        pos = len(text) if j < 0 else j + len(end)
    return _content(content), calls


def _json_body(body: str) -> Any:
    body = body.strip()
    if body.startswith("```"):
        body = re.sub(r"^```(?:json)?\s*|\s*```$", "", body)
    found = _json_at(body, 0)
    if found is None or body[found[1]:].strip():
        return None
    return found[0]


# -- one parser per family -------------------------------------------------------------------


def _hermes(text: str) -> tuple[str | None, list[ToolCall]]:
    return _blocks(text, "<tool_call>", "</tool_call>", lambda b: _from_list(_json_body(b)))


def _qwen3_coder_body(body: str) -> list[ToolCall] | None:
    m = re.match(r"\s*<function=([^>\s]+)>(.*?)(?:</function>\s*)?$", body, re.S)
    if m is None:
        return None
    args: dict[str, Any] = {}
    for p in re.finditer(r"<parameter=([^>\s]+)>\n?(.*?)\n?</parameter>", m.group(2), re.S):
        raw = p.group(2)
        try:
            args[p.group(1)] = json.loads(raw)
        except json.JSONDecodeError:
            args[p.group(1)] = raw
    call = _call(m.group(1), args)
    return None if call is None else [call]


def _qwen3_coder(text: str) -> tuple[str | None, list[ToolCall]]:
    return _blocks(text, "<tool_call>", "</tool_call>", _qwen3_coder_body)


def _python_call(code: str) -> ToolCall | None:
    """``tool.call(a=1, b="x")`` (Llama 3.1 built-in tools) as a call of ``tool``."""
    try:
        node = ast.parse(code.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "call" and isinstance(node.func.value, ast.Name)
            and not node.args):
        return None
    try:
        args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    except ValueError:
        return None
    return _call(node.func.value.id, args)


def _llama3(text: str) -> tuple[str | None, list[ToolCall]]:
    tag = "<|python_tag|>"
    if tag in text:
        before, _, code = text.partition(tag)
        calls = _from_list(_json_body(code.replace("<|eom_id|>", "")))
        if calls is None:
            call = _python_call(code.replace("<|eom_id|>", ""))
            calls = [call] if call else [c for c in [_call("python", {"code": code.strip()})] if c]
        return _content([before]), calls
    stripped = text.strip()
    calls = []
    pos = 0
    while pos < len(stripped):  # one JSON object, or several separated by ';'
        found = _json_at(stripped, pos)
        call = _from_object(found[0], arg_keys=("parameters", "arguments")) if found else None
        if found is None or call is None:
            return _content([text]), []
        calls.append(call)
        pos = found[1]
        while pos < len(stripped) and stripped[pos] in "; \n\t":
            pos += 1
    return None, calls


def _mistral(text: str) -> tuple[str | None, list[ToolCall]]:
    tag = "[TOOL_CALLS]"
    i = text.find(tag)
    if i < 0:
        return _content([text]), []
    content, calls = [text[:i]], []
    for chunk in text[i + len(tag):].split(tag):
        listed = _from_list(_json_body(chunk))
        if listed is not None:
            calls += listed
            continue
        m = re.match(r"\s*([^\[\s]+)(?:\[CALL_ID\]([^\[]*))?\[ARGS\](.*)$", chunk, re.S)
        args = _json_body(m.group(3)) if m else None
        call = _call(m.group(1), args, m.group(2)) if m and args is not None else None
        if call is None:
            content.append(tag + chunk)
        else:
            calls.append(call)
    return _content(content), calls


def _functionary_v3_1(text: str) -> tuple[str | None, list[ToolCall]]:
    content, calls = _blocks(text, "<function=", "</function>", _function_tag_body)
    if content and "<|python_tag|>" in content:
        before, _, code = content.partition("<|python_tag|>")
        call = _call("python", {"code": code.strip()})
        return _content([before]), calls + ([call] if call else [])
    return content, calls


def _function_tag_body(body: str) -> list[ToolCall] | None:
    name, sep, rest = body.partition(">")
    if not sep:
        return None
    call = _call(name.strip(), _json_body(rest))
    return None if call is None else [call]


def _functionary_v3_2(text: str) -> tuple[str | None, list[ToolCall]]:
    content, calls = [], []
    for n, seg in enumerate(text.split(">>>")):
        if n == 0 and not seg:
            continue
        recipient, nl, body = seg.partition("\n")
        if not nl:
            content.append(seg if n == 0 else ">>>" + seg)
            continue
        if recipient.strip() == "all":
            content.append(body)
            continue
        args = _json_body(body)
        if args is None and recipient.strip() == "python":
            args = {"code": body}
        ok = args is not None and re.match(r"^[\w.:-]+$", recipient.strip())
        call = _call(recipient.strip(), args) if ok else None
        if call is None:
            content.append(seg if n == 0 else ">>>" + seg)
        else:
            calls.append(call)
    return _content(content), calls


def _deepseek_body(body: str) -> list[ToolCall] | None:
    head, sep, rest = body.partition("<｜tool▁sep｜>")
    if not sep:
        return None
    if head.strip() == "function":  # R1: function<sep>name\n```json\n{...}\n```
        name, _, args = rest.partition("\n")
        call = _call(name.strip(), _json_body(args))
    else:  # V3.1: name<sep>{...}
        call = _call(head.strip(), _json_body(rest))
    return None if call is None else [call]


def _deepseek(text: str) -> tuple[str | None, list[ToolCall]]:
    start, end = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
    content: list[str] = []
    i = text.find(start)
    if i < 0:
        return _content([text]), []
    content.append(text[:i])
    j = text.find(end, i)
    inner = text[i + len(start):len(text) if j < 0 else j]
    rest, calls = _blocks(inner, "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", _deepseek_body)
    if rest:
        content.append(rest)
    if j >= 0:
        content.append(text[j + len(end):])
    return _content(content), calls


def _firefunction(text: str) -> tuple[str | None, list[ToolCall]]:
    i = text.find("functools[")
    if i < 0:
        return _content([text]), []
    calls = _from_list(_json_body(text[i + len("functools"):]))
    if calls is None:
        return _content([text]), []
    return _content([text[:i]]), calls


def _command_r(text: str) -> tuple[str | None, list[ToolCall]]:
    keys = ("parameters", "arguments")
    text = re.sub(r"<\|START_THINKING\|>.*?<\|END_THINKING\|>", "", text, flags=re.S)
    if "<|START_ACTION|>" in text:
        content, calls = _blocks(text, "<|START_ACTION|>", "<|END_ACTION|>",
                                 lambda b: _from_list(_json_body(b), "tool_name", keys))
    else:
        m = re.search(r"Action:\s*```(?:json)?\s*(.*?)\s*```", text, re.S)
        listed = _from_list(_json_body(m.group(1)), "tool_name", keys) if m else None
        if m is None or listed is None:
            content, calls = _content([text]), []
        else:
            content, calls = _content([text[:m.start()], text[m.end():]]), listed
    if content:
        content = re.sub(r"<\|(?:START|END)_RESPONSE\|>", "", content).strip() or None
    return content, calls


def _granite(text: str) -> tuple[str | None, list[ToolCall]]:
    i = text.find("<|tool_call|>")
    if i < 0:
        return _content([text]), []
    calls = _from_list(_json_body(text[i + len("<|tool_call|>"):]))
    if calls is None:
        return _content([text]), []
    return _content([text[:i]]), calls


def _generic(text: str, as_json: bool = False) -> tuple[str | None, list[ToolCall]]:
    value = _json_body(text)
    if isinstance(value, dict):
        if "tool_call" in value:
            calls = _from_list(value["tool_call"])
            if calls is not None:
                return None, calls
        if "tool_calls" in value:
            calls = _from_list(value["tool_calls"])
            if calls is not None:
                return None, calls
        if set(value) == {"response"}:
            resp = value["response"]
            if isinstance(resp, str) and not as_json:
                return resp, []
            return json.dumps(resp, ensure_ascii=False), []
    return _content([text]), []


def _generic_json(text: str) -> tuple[str | None, list[ToolCall]]:
    return _generic(text, as_json=True)


FAMILIES: dict[str, Callable[[str], tuple[str | None, list[ToolCall]]]] = {
    "hermes": _hermes, "qwen3_coder": _qwen3_coder, "llama3": _llama3, "mistral": _mistral,
    "functionary_v3_1": _functionary_v3_1, "functionary_v3_2": _functionary_v3_2,
    "deepseek": _deepseek, "firefunction": _firefunction, "command_r": _command_r,
    "granite": _granite, "generic": _generic, "generic_json": _generic_json,
}
"""Family name -> parser (text -> (content, calls))."""


def parse_tool_calls(text: str, family: str) -> tuple[str | None, list[ToolCall]]:
    """The assistant's content (None when the reply is only tool calls) and the
    tool calls in ``text``, a reply in ``family``'s format (:func:`detect_family`).

    Arguments come back as JSON text of an object. Markup that does not hold a
    well-formed call is left in the content; this never raises on model output.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    parser = FAMILIES.get(family)
    if parser is None:
        raise ValueError(f"unknown tool-call family {family!r} "
                         f"(known: {', '.join(FAMILIES)})")
    return parser(text)


def tool_call_dict(call: ToolCall) -> Mapping[str, Any]:
    """``call`` in OpenAI's message shape (for an assistant message sent back)."""
    return {"id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": call.arguments}}
