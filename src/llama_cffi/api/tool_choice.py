"""A chat request with tools: the prompt, the grammar and the parser to use.

``tools`` are OpenAI's (``{"type": "function", "function": {"name",
"description", "parameters"}}``); ``tool_choice`` is OpenAI's (llama-server's
field of the same name):

``"auto"`` (default with tools)
    the template describes the tools in its own way (or, where it only writes
    calls, as DeepSeek R1's does, a system message lists them); the reply is
    parsed in the model's native format
    (:func:`~llama_cffi.api.tool_calls.detect_family`). A template that knows
    nothing about tools gets them described in a system message and the reply
    constrained to llama.cpp's generic JSON (``{"tool_call": ...}`` or
    ``{"response": ...}``).
``"required"`` / ``{"type": "function", "function": {"name": ...}}``
    the reply is forced, by a GBNF grammar built from the tools' parameter
    schemas (:func:`~llama_cffi.objects.json_schema.to_gbnf`), to be one call
    (of that function): in the model's own markup where it is plain text
    (Hermes/Qwen ``<tool_call>``, Llama 3.x JSON), else generic JSON.
``"none"``
    the tools are not shown and nothing is parsed.

With a JSON schema (``json_schema``, a server's ``response_format`` or
Ollama's ``format``) the reply is one grammar: for ``"auto"`` a tool call or
a reply that matches the schema (a Hermes/Qwen ``<tool_call>`` block or the
schema's JSON; on other templates llama.cpp's generic JSON, ``{"tool_call":
...}`` or ``{"response": <the schema's JSON>}``, whose ``response`` becomes
the content as JSON text); for ``"required"`` or a named function a call
only; for ``"none"`` the schema only. (llama-server from the same llama.cpp
lets the schema win: its grammar is the schema alone and no call is parsed.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..objects.json_schema import to_gbnf
from . import chat_messages as _msgs
from . import chat_template as _chat
from .tool_calls import detect_family, parse_tool_calls

if TYPE_CHECKING:
    from ..engine.results import Completion
    from ..objects.model import Model
    from ..objects.params import SamplingParams

__all__ = ["PreparedChat", "chat_overrides", "check_tool_choice", "check_tools", "finish_chat",
           "prepare_chat", "tool_grammar", "with_grammar"]

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class PreparedChat:
    """What a chat call sends: the prompt, the grammar (None: unconstrained) and
    the family whose parser reads the reply (None: no tool parsing)."""

    prompt: str
    grammar: str | None
    family: str | None
    replaces_schema: bool = False
    """Whether ``grammar`` takes the place of the request's JSON schema (it
    holds it, or a forced call leaves no room for it)."""


def check_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """OpenAI-shaped tools, checked; a missing ``parameters`` is an empty object."""
    if tools is None:
        return []
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise TypeError("tools must be a list of {'type': 'function', 'function': {...}}")
    out, seen = [], set()
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function" \
                or not isinstance(fn, Mapping):
            raise ValueError(f"tools[{i}] must be {{'type': 'function', 'function': "
                             f"{{'name': ..., 'parameters': {{...}}}}}}")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"tools[{i}].function.name must be 1-64 letters, digits, "
                             f"'_', '-', '.' or ':', got {name!r}")
        if name in seen:
            raise ValueError(f"tools[{i}]: a second tool named {name!r}")
        seen.add(name)
        params = fn.get("parameters")
        if params is None or params == {}:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, Mapping):
            raise ValueError(f"tools[{i}].function.parameters must be a JSON schema object")
        out.append({"type": "function", "function": {**fn, "parameters": dict(params)}})
    return out


def check_tool_choice(tool_choice: Any, tools: list[dict[str, Any]]) -> str:
    """``tool_choice`` as ``"auto"``, ``"none"``, ``"required"`` or ``"name:<function>"``."""
    if tool_choice is None:
        return "auto" if tools else "none"
    if isinstance(tool_choice, str):
        if tool_choice not in ("auto", "none", "required"):
            raise ValueError(f"tool_choice must be 'auto', 'none', 'required' or "
                             f"{{'type': 'function', 'function': {{'name': ...}}}}, "
                             f"not {tool_choice!r}")
        if tool_choice == "required" and not tools:
            raise ValueError("tool_choice='required' needs tools")
        return tool_choice if tools else "none"
    fn = tool_choice.get("function") if isinstance(tool_choice, Mapping) else None
    name = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(name, str):
        raise ValueError("tool_choice must be 'auto', 'none', 'required' or "
                         "{'type': 'function', 'function': {'name': ...}}")
    names = [t["function"]["name"] for t in tools]
    if name not in names:
        raise ValueError(f"tool_choice names {name!r}, which is not among the tools "
                         f"({', '.join(names) or 'none given'})")
    return f"name:{name}"


_LITERAL = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]')


def _rename_root(gbnf: str, new: str) -> str:
    """``gbnf`` with its rule ``root`` renamed (quoted literals and classes untouched)."""
    out, pos = [], 0
    for m in _LITERAL.finditer(gbnf):
        out.append(re.sub(r"(?<![\w-])root(?![\w-])", new, gbnf[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(re.sub(r"(?<![\w-])root(?![\w-])", new, gbnf[pos:]))
    return "".join(out)


_DEFINED = re.compile(r"^([A-Za-z0-9_-]+) ::=", re.M)
_WORD = re.compile(r"(?<![\w-])[A-Za-z0-9_-]+(?![\w-])")


def _prefix_rules(gbnf: str, prefix: str) -> str:
    """``gbnf`` with every rule it defines renamed ``prefix + name``."""
    names = set(_DEFINED.findall(gbnf))

    def rename(text: str) -> str:
        return _WORD.sub(lambda m: prefix + m.group(0) if m.group(0) in names else m.group(0),
                         text)
    out, pos = [], 0
    for m in _LITERAL.finditer(gbnf):
        out += [rename(gbnf[pos:m.start()]), m.group(0)]
        pos = m.end()
    out.append(rename(gbnf[pos:]))
    return "".join(out)


def _slot(i: int) -> dict[str, Any]:
    """A stand-in schema that :func:`_compose` replaces with the grammar of ``subs[i]``."""
    return {"const": f"@@llama-cffi-slot-{i}@@"}


def _compose(schema: dict[str, Any], subs: Sequence[str]) -> str:
    """GBNF for ``schema`` in which ``_slot(i)`` stands for the grammar ``subs[i]``
    (each schema converted on its own, so that its local ``$ref`` s resolve)."""
    gbnf = to_gbnf(schema)
    for i in range(len(subs)):
        lit = '"\\"' + _slot(i)["const"] + '\\""'
        gbnf = gbnf.replace(lit, f"s{i}-root")
    return gbnf + "".join(_prefix_rules(sub, f"s{i}-") for i, sub in enumerate(subs))


def _lit(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _call_schema(tool: Mapping[str, Any], args_key: str, slot: int) -> dict[str, Any]:
    fn = tool["function"]
    return {"type": "object", "properties": {"name": {"const": fn["name"]},
                                             args_key: _slot(slot)},
            "required": ["name", args_key]}


# family -> (prefix, suffix, arguments key) of a forced call in the model's own markup
_NATIVE_FORCED = {
    "hermes": ("<tool_call>\n", "\n</tool_call>", "arguments"),
    "llama3": ("", "", "parameters"),
}


def tool_grammar(tools: list[dict[str, Any]], choice: str, family: str,
                 schema: Any = None) -> tuple[str, str]:
    """The GBNF grammar for a reply under ``choice`` (``"auto"`` on the generic
    family or with a ``schema``, ``"required"``, ``"name:<f>"``) and the family
    that parses it (see the module docstring for ``schema``)."""
    if choice.startswith("name:"):
        tools = [t for t in tools if t["function"]["name"] == choice[5:]]
    forced = choice != "auto"
    answer = to_gbnf(schema) if schema is not None and not forced else None
    try:
        subs = [to_gbnf(t["function"]["parameters"]) for t in tools]
    except ValueError as exc:  # SchemaError is a ValueError
        raise type(exc)(f"a tool's parameters cannot be turned into a grammar: {exc}") \
            from None
    n = len(subs)
    if family in _NATIVE_FORCED and (forced or family == "hermes"):
        prefix, suffix, key = _NATIVE_FORCED[family]
        calls = [_call_schema(t, key, i) for i, t in enumerate(tools)]
        root = " ".join(p for p in (_lit(prefix) if prefix else "", "tool-call",
                                    _lit(suffix) if suffix else "") if p)
        body = _compose(calls[0] if len(calls) == 1 else {"anyOf": calls}, subs)
        if answer is not None:  # hermes: a <tool_call> block or the schema's JSON
            root += f" | s{n}-root"
            body += _prefix_rules(answer, f"s{n}-")
        return f"root ::= {root}\n" + _rename_root(body, "tool-call"), family
    calls = [_call_schema(t, "arguments", i) for i, t in enumerate(tools)]
    call = calls[0] if len(calls) == 1 else {"anyOf": calls}
    options: list[dict[str, Any]] = [
        {"type": "object", "properties": {"tool_call": call}, "required": ["tool_call"]}]
    if forced:
        return _compose(options[0], subs), "generic"
    options.append({"type": "object", "properties": {
        "response": {"type": "string"} if answer is None else _slot(n)},
        "required": ["response"]})
    if answer is None:
        return _compose({"anyOf": options}, subs), "generic"
    return _compose({"anyOf": options}, [*subs, answer]), "generic_json"


def _schema_of(value: Any) -> Any:
    """A request's JSON schema as a dict or bool (``True``: any JSON object), or None."""
    if value is True:
        return {"type": "object"}
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"json_schema is not valid JSON: {exc}") from None
    return value


def prepare_chat(model: Model, messages: Sequence[Mapping[str, Any]], *,
                 template: str | None = None, tools: Sequence[Mapping[str, Any]] | None = None,
                 tool_choice: Any = None, add_generation_prompt: bool = True,
                 json_schema: Any = None, **extra: Any) -> PreparedChat:
    """The prompt, grammar and parser family of a chat request (see the module
    docstring); ``json_schema`` is the schema the request's text reply must follow."""
    checked = check_tools(tools)
    choice = check_tool_choice(tool_choice, checked)
    schema = _schema_of(json_schema)
    tmpl = _chat.template_for_model(model, template)
    caps = None if isinstance(tmpl, str) else tmpl.caps
    family = detect_family(tmpl.source) if not isinstance(tmpl, str) else "generic"
    describes = caps is not None and caps.tools
    # the model has a native format of its own where its template writes or describes calls
    native = family != "generic" and caps is not None and (caps.tools or caps.tool_calls)
    msgs: Sequence[Mapping[str, Any]] = messages
    grammar: str | None = None
    parse: str | None = None
    if choice != "none":
        forced = choice != "auto"
        # with a schema, "auto" is a grammar too: native only where a call cannot be
        # mistaken for the schema's JSON (Hermes' <tool_call> block)
        constrained = forced or schema is not None
        prompt: str | None = None
        if native and (not constrained or family in _NATIVE_FORCED) \
                and (forced or schema is None or family == "hermes"):
            if not describes:
                prompt = _msgs.tools_system_prompt(checked, mode="list")
            if constrained:
                grammar, family = tool_grammar(checked, choice, family, schema)
        elif describes and not constrained:
            family = "generic"  # a format we cannot write: its calls stay in the content
        else:
            prompt = _msgs.tools_system_prompt(checked, mode="forced" if forced else "auto",
                                               schema=None if forced else schema)
            grammar, family = tool_grammar(checked, choice, "generic", schema)
        if prompt is not None:
            msgs = _msgs.with_system(_msgs.normalize(messages), prompt)
        parse = family
    render_tools = checked if choice != "none" and describes else None
    if isinstance(tmpl, str):
        prompt = _chat.render_builtin(tmpl, msgs, add_generation_prompt)
    else:
        prompt = tmpl.render(msgs, add_generation_prompt=add_generation_prompt,
                             tools=render_tools, **extra)
    return PreparedChat(prompt, grammar, parse, grammar is not None and schema is not None)


def with_grammar(prepared: PreparedChat, overrides: dict[str, Any]) -> dict[str, Any]:
    """A call's sampling overrides plus the grammar ``prepared`` needs (which
    replaces the JSON schema it was prepared with)."""
    if prepared.grammar is None:
        return overrides
    if overrides.get("grammar") is not None or (overrides.get("json_schema") is not None
                                                and not prepared.replaces_schema):
        raise ValueError("tools constrain the reply with their own grammar: give a grammar "
                         "or tools (with tool_choice 'required', a named function, 'auto' "
                         "on a template without tools, or a json_schema), not both")
    return {**overrides, "grammar": prepared.grammar, "json_schema": None}


def chat_overrides(model: Model, messages: Sequence[Mapping[str, Any]],
                   sampling: SamplingParams, overrides: dict[str, Any], *,
                   template: str | None, tools: Sequence[Mapping[str, Any]] | None,
                   tool_choice: Any, template_kwargs: Mapping[str, Any] | None
                   ) -> tuple[PreparedChat, dict[str, Any]]:
    """What :meth:`LLM.chat` submits: the prepared chat and the overrides of
    ``sampling`` (the call's settings) with its grammar; the JSON schema (an
    override's or ``sampling``'s) goes into the tools' grammar, and a grammar
    of the call's beside the tools' is refused."""
    schema = overrides["json_schema"] if "json_schema" in overrides else sampling.json_schema
    prep = prepare_chat(model, messages, template=template, tools=tools,
                        tool_choice=tool_choice, json_schema=schema,
                        **dict(template_kwargs or {}))
    if prep.grammar is not None and overrides.get("grammar", sampling.grammar) is not None:
        raise ValueError("tools constrain the reply with their own grammar: give a grammar "
                         "or tools (with tool_choice 'required', a named function, 'auto' "
                         "on a template without tools, or a json_schema), not both")
    return prep, with_grammar(prep, {**overrides, "grammar": None}
                              if prep.grammar is not None else overrides)


def finish_chat(completion: Completion, family: str | None) -> Completion:
    """Set ``completion.content`` (and ``tool_calls`` when ``family`` parses calls)."""
    if family is None:
        completion.content = completion.text
        return completion
    content, calls = parse_tool_calls(completion.text, family)
    completion.content = content
    completion.tool_calls = calls or None
    return completion
