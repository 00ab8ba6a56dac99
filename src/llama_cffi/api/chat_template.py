"""Chat templates: turning messages into the prompt text a model was trained on.

A GGUF usually carries its chat template as Jinja2 text. That text comes with
a downloaded file, so it is untrusted: it is rendered in Jinja2's immutable
sandbox (no access to Python internals such as ``__class__``/``__globals__``,
no file system, no mutation of the caller's data), with the helpers such
templates expect (``raise_exception``, ``strftime_now``, ``bos_token``,
``eos_token``, ``add_generation_prompt``, ``tools``).

Models without a Jinja template (and names such as ``"chatml"``, ``"gemma"``,
``"llama3"``) are rendered by llama.cpp's own built-in formats
(``llama_chat_apply_template``).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._bindings import chat
from ..errors import LlamaError

if TYPE_CHECKING:
    from ..objects.model import Model

Message = Mapping[str, Any]


class TemplateError(LlamaError, ValueError):
    """A chat template that is malformed, unsafe, or that refused the messages."""


def builtin_templates() -> list[str]:
    """Names of llama.cpp's built-in chat formats."""
    return chat.builtin_templates()


def render_builtin(name_or_template: str, messages: Sequence[Message],
                   add_generation_prompt: bool = True) -> str:
    """Render with llama.cpp's C implementation (``llama_chat_apply_template``)."""
    text = chat.apply_template(
        name_or_template, [(str(m["role"]), str(m.get("content") or "")) for m in messages],
        add_generation_prompt)
    if text is None:
        raise TemplateError(f"llama.cpp does not know the chat template {name_or_template[:60]!r}"
                            f" (built-in names: {', '.join(builtin_templates())})")
    return text


def _undefined_class() -> type:
    """Jinja's lenient Undefined (templates test optional fields), except that an
    attribute the sandbox blocked fails on any use instead of printing ''."""
    from jinja2 import Undefined
    from jinja2.exceptions import SecurityError

    class SandboxUndefined(Undefined):
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

    return SandboxUndefined


def _raise_exception(message: str) -> None:
    raise TemplateError(f"the chat template refused the messages: {message}")


def _strftime_now(fmt: str) -> str:
    return _dt.datetime.now().strftime(fmt)


class ChatTemplate:
    """A Jinja2 chat template, compiled once in a sandbox.

    source: the template text (usually ``model.chat_template()``).
    bos_token, eos_token: the texts the template may insert.
    """

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        try:
            from jinja2 import TemplateSyntaxError
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError as exc:  # pragma: no cover - jinja2 is a dependency
            raise TemplateError("rendering chat templates needs jinja2") from exc
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            autoescape=False, undefined=_undefined_class())
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(source)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"the chat template does not parse: {exc}") from None
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
               tools: Sequence[Mapping[str, Any]] | None = None, **extra: Any) -> str:
        from jinja2.exceptions import SecurityError, TemplateError as JinjaError

        try:
            return self._template.render(
                messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token, eos_token=self.eos_token,
                tools=list(tools) if tools else None, **extra)
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


def _tojson(value: Any, indent: int | None = None) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, indent=indent)


def render_for_model(model: Model, messages: Sequence[Message], *,
                     template: str | None = None, add_generation_prompt: bool = True,
                     tools: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The prompt for ``messages``: ``template`` (Jinja text or a built-in name),
    else the model's own template, else llama.cpp's default (chatml)."""
    source = template if template is not None else model.chat_template()
    if source is None:
        return render_builtin("chatml", messages, add_generation_prompt)
    if source in builtin_templates():
        return render_builtin(source, messages, add_generation_prompt)
    vocab = model.vocab
    bos = vocab.token_to_piece(vocab.bos, special=True).decode() if vocab.bos is not None else ""
    eos = vocab.token_to_piece(vocab.eos, special=True).decode() if vocab.eos is not None else ""
    return ChatTemplate(source, bos_token=bos, eos_token=eos).render(
        messages, add_generation_prompt=add_generation_prompt, tools=tools)
