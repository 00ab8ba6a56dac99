"""Chat templates: turning messages into the prompt text a model was trained on.

A GGUF usually carries its chat template as Jinja2 text. That text comes with
a downloaded file, so it is untrusted: it is rendered in Jinja2's sandbox (no
access to Python internals such as ``__class__``/``__globals__``, no file
system, no loader), and the caller's data is handed over as read-only copies
(a template may build and append to its own lists, as real templates do, but
cannot change the messages). Templates get what llama.cpp's chat layer gives
them: ``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``,
``tools`` (only when tools are given: undefined otherwise),
``raise_exception``, ``strftime_now``, ``datetime``, ``date_string``,
``tojson`` with Python's arguments (``indent``,
``ensure_ascii``, ``separators``, ``sort_keys``), ``{% break %}`` /
``{% continue %}`` and ``{% generation %}`` blocks.

What a template cannot show is found once per template by rendering probes
(:class:`~llama_cffi.api.chat_messages.Caps`) and rewritten as llama.cpp does
(a system message it refuses or drops is merged into the first user message;
see :mod:`~llama_cffi.api.chat_messages`).

Models without a Jinja template, llama.cpp's built-in format names
(``"chatml"``, ``"gemma"``, ``"llama3"``, see :func:`builtin_templates`) and
llama-cpp-python's ``chat_format`` names where llama.cpp has the format
(``"llama-2"``, ``"mistral-instruct"``, ``"chatml-function-calling"``...,
see :data:`TEMPLATE_ALIASES`) are rendered by llama.cpp's C implementation
(``llama_chat_apply_template``). Any other name raises :class:`TemplateError`
listing the known names.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .._bindings import chat
from . import chat_messages as _msgs
from .chat_messages import Caps, TemplateError

if TYPE_CHECKING:
    from ..objects.model import Model

__all__ = ["TEMPLATE_ALIASES", "Caps", "ChatTemplate", "TemplateError", "builtin_templates",
           "is_template_name", "render_builtin", "render_for_model", "resolve_name"]

Message = Mapping[str, Any]

TEMPLATE_ALIASES = {
    "llama-2": "llama2-sys",
    "llama-3": "llama3",
    "mistral-instruct": "mistral-v1",
    "mistral": "mistral-v1",
    "chatml-function-calling": "chatml",
    "qwen": "chatml",
    "phi-3": "phi3",
    "phi-4": "phi4",
}
"""llama-cpp-python ``chat_format`` names -> the llama.cpp built-in format that
renders the same conversation layout."""


def builtin_templates() -> list[str]:
    """Names of llama.cpp's built-in chat formats (``llama_chat_builtin_templates``)."""
    return chat.builtin_templates()


def is_template_name(text: str) -> bool:
    """True for a format name (one short line, no Jinja markup), False for template text."""
    return "{{" not in text and "{%" not in text and "\n" not in text and len(text) <= 64


def resolve_name(name: str) -> str:
    """The llama.cpp built-in format for ``name`` (a built-in name or an alias);
    raises TemplateError listing the known names otherwise."""
    names = builtin_templates()
    if name in names:
        return name
    if name in TEMPLATE_ALIASES:
        return TEMPLATE_ALIASES[name]
    raise TemplateError(
        f"unknown chat template name {name!r}: give Jinja template text, one of llama.cpp's "
        f"formats ({', '.join(names)}) or one of llama-cpp-python's names it has "
        f"({', '.join(sorted(TEMPLATE_ALIASES))})")


def render_builtin(name_or_template: str, messages: Sequence[Message],
                   add_generation_prompt: bool = True) -> str:
    """Render with llama.cpp's C implementation (``llama_chat_apply_template``).

    Tool calls are shown as JSON in the assistant's content (the built-in
    formats only know roles and text)."""
    msgs = _msgs.adapt(_msgs.normalize(messages), Caps(tool_role=True))
    text = chat.apply_template(name_or_template, [(m["role"], m["content"]) for m in msgs],
                               add_generation_prompt)
    if text is None:
        raise TemplateError(f"llama.cpp does not know the chat template {name_or_template[:60]!r}"
                            f" (built-in names: {', '.join(builtin_templates())})")
    return text


# -- the Jinja environment -----------------------------------------------------------------


class _FrozenDict(dict):  # type: ignore[type-arg]
    """The caller's mappings as the template sees them (mutation is refused)."""

    __slots__ = ()


class _FrozenList(list):  # type: ignore[type-arg]
    __slots__ = ()


class _Arguments(_FrozenDict):
    """Tool-call arguments: an object that prints as its JSON text, so templates
    written for string arguments (``{{ call.arguments }}``) show JSON too."""

    __slots__ = ()

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)


def _freeze(value: Any, key: str = "") -> Any:
    if isinstance(value, Mapping):
        cls = _Arguments if key == "arguments" else _FrozenDict
        return cls((k, _freeze(v, k)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return _FrozenList(_freeze(v) for v in value)
    return value


def _json_default(value: Any) -> Any:
    from jinja2 import Undefined

    if isinstance(value, Undefined):
        return None
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False,
            separators: Sequence[str] | None = None, sort_keys: bool = False) -> str:
    seps = tuple(separators) if separators is not None else None
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                      separators=seps,  # type: ignore[arg-type]
                      sort_keys=sort_keys, default=_json_default)


def _raise_exception(message: str) -> None:
    raise TemplateError(f"the chat template refused the messages: {message}")


def _strftime_now(fmt: str) -> str:
    return _dt.datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment_classes() -> tuple[type, type, type]:
    """(environment class, Undefined class, generation-tag extension), built on first use."""
    from jinja2 import ChainableUndefined, nodes
    from jinja2.exceptions import SecurityError
    from jinja2.ext import Extension
    from jinja2.sandbox import SandboxedEnvironment, modifies_known_mutable

    class SandboxUndefined(ChainableUndefined):
        """Jinja's lenient, chainable Undefined (templates test optional fields,
        ``messages[0].role`` of no messages is undefined, as in llama.cpp's engine),
        except that an attribute the sandbox blocked fails on any use."""

        __slots__ = ()

        def _blocked(self) -> bool:
            return self._undefined_exception is SecurityError

        def __str__(self) -> str:
            if self._blocked():
                self._fail_with_undefined_error()
            return ""

        def __iter__(self):  # type: ignore[no-untyped-def]
            if self._blocked():
                self._fail_with_undefined_error()
            return iter(())

        def __bool__(self) -> bool:
            if self._blocked():
                self._fail_with_undefined_error()
            return False

        def __len__(self) -> int:
            if self._blocked():
                self._fail_with_undefined_error()
            return 0

    class Environment(SandboxedEnvironment):
        """The sandbox, refusing any change to the caller's (frozen) data."""

        def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
            if isinstance(obj, (_FrozenDict, _FrozenList)) and modifies_known_mutable(obj, attr):
                return False
            return bool(super().is_safe_attribute(obj, attr, value))

    class GenerationTag(Extension):
        """``{% generation %}...{% endgeneration %}`` (marks the assistant's part for
        training masks): renders its body."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    return Environment, SandboxUndefined, GenerationTag


_PROBE_TOOL = {"type": "function", "function": {
    "name": "probe_tool_x7", "description": "Tool description",
    "parameters": {"type": "object", "properties": {"arg": {"type": "string"}},
                   "required": ["arg"]}}}


class ChatTemplate:
    """A Jinja2 chat template, compiled once in a sandbox.

    source: the template text (usually ``model.chat_template()``).
    bos_token, eos_token: the texts the template may insert.
    """

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        if not isinstance(source, str):
            raise TypeError(f"source must be the template text (str), not "
                            f"{type(source).__name__}")
        try:
            from jinja2 import TemplateSyntaxError
        except ImportError as exc:  # pragma: no cover - jinja2 is a dependency
            raise TemplateError("rendering chat templates needs jinja2") from exc
        env_cls, undefined, generation = _environment_classes()
        env = env_cls(trim_blocks=True, lstrip_blocks=True, autoescape=False,
                      undefined=undefined, extensions=["jinja2.ext.loopcontrols", generation])
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.filters["tojson"] = _tojson
        env.filters["safe"] = str  # no escaping anywhere (HF's and llama.cpp's engines)
        try:
            self._template = env.from_string(source)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"the chat template does not parse: {exc}") from None
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._caps: Caps | None = None

    # -- rendering ----------------------------------------------------------------------

    def _raw(self, messages: Any, add_generation_prompt: bool,
             tools: Sequence[Mapping[str, Any]] | None, extra: Mapping[str, Any]) -> str:
        """Render prepared messages; every failure is a TemplateError."""
        from jinja2.exceptions import SecurityError, TemplateError as JinjaError

        now = _dt.datetime.now()
        context: dict[str, Any] = {
            "bos_token": self.bos_token, "eos_token": self.eos_token,
            "add_generation_prompt": add_generation_prompt,
            "datetime": now.strftime("%b %d %Y"), "date_string": now.strftime("%d %b %Y"),
        }
        if tools is not None:
            context["tools"] = tools
            if "functions" in self.source:  # FireFunction's template reads them as JSON text
                context["functions"] = json.dumps([t.get("function", t) for t in tools],
                                                  indent=2, ensure_ascii=False)
        elif "functions" in self.source:
            context["functions"] = ""
        context.update(extra)
        try:
            return str(self._template.render(messages=messages, **_freeze(context)))
        except SecurityError as exc:
            raise TemplateError(f"the chat template tried something unsafe and was stopped: "
                                f"{exc}") from None
        except TemplateError:
            raise
        except JinjaError as exc:
            raise TemplateError(f"the chat template failed: {exc}") from None
        except Exception as exc:  # e.g. {% include %}: there is no loader, by design
            raise TemplateError(f"the chat template failed: {type(exc).__name__}: {exc}") \
                from None

    def _probe(self, messages: list[dict[str, Any]],
               tools: Sequence[Mapping[str, Any]] | None = None,
               **extra: Any) -> str | None:
        try:
            return self._raw(_freeze(messages), True, _freeze(tools) if tools else None, extra)
        except TemplateError:
            return None

    @property
    def caps(self) -> Caps:
        """What this template shows (system role, tools, tool calls, tool results...)."""
        if self._caps is None:
            self._caps = self._find_caps()
        return self._caps

    def _find_caps(self) -> Caps:
        string_content = True
        out = self._probe([{"role": "user", "content": "probe_user_x7"}])
        if out is None or "probe_user_x7" not in out:
            typed = self._probe(_msgs.typed([{"role": "user", "content": "probe_user_x7"}]))
            string_content = not (typed is not None and "probe_user_x7" in typed)
        parts = self._probe([{"role": "user", "content": [
            {"type": "text", "text": "probe_a_x7"}, {"type": "text", "text": "probe_b_x7"}]}])
        typed_content = (parts is not None and "probe_a_x7" in parts and "probe_b_x7" in parts
                         and "'type'" not in parts and '"type"' not in parts)
        wrap = (lambda m: m) if string_content else _msgs.typed
        out = self._probe(wrap([{"role": "system", "content": "probe_system_x7"},
                                {"role": "user", "content": "probe_user_x7"}]))
        system_role = out is not None and "probe_system_x7" in out
        out = self._probe(wrap([{"role": "user", "content": "probe_user_x7"}]), [_PROBE_TOOL])
        tools = out is not None and "probe_tool_x7" in out
        tool_calls = tool_role = False
        object_arguments = True
        for object_arguments in (True, False):
            args: Any = {"arg": "probe_arg_x7"}
            conv = wrap([
                {"role": "user", "content": "probe_user_x7"},
                {"role": "assistant", "content": "", "tool_calls": [{
                    "id": "call00001", "type": "function", "function": {
                        "name": "probe_call_x7",
                        "arguments": args if object_arguments else json.dumps(args)}}]},
                {"role": "tool", "tool_call_id": "call00001", "name": "probe_call_x7",
                 "content": "probe_result_x7"},
                {"role": "assistant", "content": "probe_answer_x7"},
                {"role": "user", "content": "probe_user_x7"}])
            out = self._probe(conv, [_PROBE_TOOL])
            if out is not None and "probe_call_x7" in out:
                tool_calls = True
                tool_role = "probe_result_x7" in out
                break
        # llama-server passes enable_thinking=True where it finds the template's
        # reasoning markers, else False
        user = wrap([{"role": "user", "content": "probe_user_x7"}])
        on, off = self._probe(user, enable_thinking=True), self._probe(user, enable_thinking=False)
        thinking = False
        if on is not None and off is not None and on != off:
            n = 0
            while n < min(len(on), len(off)) and on[n] == off[n]:
                n += 1
            thinking = "think" in (on[n:] + off[n:]).lower()
        return Caps(system_role=system_role, tools=tools, tool_calls=tool_calls,
                    tool_role=tool_role, object_arguments=object_arguments if tool_calls
                    else True, string_content=string_content, typed_content=typed_content,
                    thinking=thinking)

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
               tools: Sequence[Mapping[str, Any]] | None = None, **extra: Any) -> str:
        """The prompt text for ``messages`` (OpenAI-shaped; see
        :mod:`~llama_cffi.api.chat_messages`).

        tools: OpenAI-shaped tool definitions, passed to the template as
            ``tools`` (left undefined when None or empty).
        extra: more template variables (llama.cpp's ``--chat-template-kwargs``,
            e.g. ``enable_thinking=False``).
        """
        msgs = _msgs.normalize(messages)
        caps = self.caps
        msgs = _msgs.adapt(msgs, caps)
        if not caps.object_arguments:
            for m in msgs:
                for call in m.get("tool_calls", ()):
                    fn = call["function"]
                    fn["arguments"] = json.dumps(fn["arguments"], ensure_ascii=False)
        msgs = _msgs.finish(msgs, caps)
        extra = {"enable_thinking": caps.thinking, **extra}
        return self._raw(_freeze(msgs), add_generation_prompt,
                         _freeze(list(tools)) if tools else None, extra)


def _special_text(model: Model, token: int | None) -> str:
    if token is None:
        return ""
    return model.vocab.token_to_piece(token, special=True).decode("utf-8", "replace")


def template_for_model(model: Model, template: str | None = None) -> ChatTemplate | str:
    """The template a chat with ``model`` uses: a :class:`ChatTemplate`, or the
    name of a llama.cpp built-in format. ``template`` is Jinja text or a
    name (built-in or alias); default the model's own, else chatml."""
    if template is not None and not isinstance(template, str):
        raise TypeError(f"template must be Jinja text or a format name (str), not "
                        f"{type(template).__name__}")
    source = template if template is not None else model.chat_template()
    if source is None:
        return "chatml"
    if is_template_name(source):
        return resolve_name(source)
    return _compiled(source, _special_text(model, model.vocab.bos),
                     _special_text(model, model.vocab.eos))


@lru_cache(maxsize=16)
def _compiled(source: str, bos: str, eos: str) -> ChatTemplate:
    return ChatTemplate(source, bos_token=bos, eos_token=eos)


def render_for_model(model: Model, messages: Sequence[Message], *,
                     template: str | None = None, add_generation_prompt: bool = True,
                     tools: Sequence[Mapping[str, Any]] | None = None,
                     **extra: Any) -> str:
    """The prompt for ``messages``: ``template`` (Jinja text, a built-in name or
    a llama-cpp-python alias), else the model's own template, else llama.cpp's
    default (chatml). Tools a template cannot describe are described in a
    system message (llama.cpp's generic format)."""
    tmpl = template_for_model(model, template)
    if tools and (isinstance(tmpl, str) or not tmpl.caps.tools):
        messages = _msgs.with_system(_msgs.normalize(messages), _msgs.tools_system_prompt(tools))
    if isinstance(tmpl, str):
        return render_builtin(tmpl, messages, add_generation_prompt)
    return tmpl.render(messages, add_generation_prompt=add_generation_prompt,
                       tools=tools if tools and tmpl.caps.tools else None, **extra)
