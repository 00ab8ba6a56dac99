"""Chat formatters of llama-cpp-python (``llama_cpp.llama_chat_format``), on our sandboxed templates.

A chat formatter turns messages into a prompt: :class:`Jinja2ChatFormatter`
renders a Jinja2 chat template in :class:`~llama_cffi.ChatTemplate`'s
immutable sandbox, :func:`hf_tokenizer_config_to_chat_formatter` makes one
from a Hugging Face ``tokenizer_config.json``, and :func:`format_mistral_instruct`
is llama-cpp-python's hand-written Mistral format. ``Llama(chat_format=NAME)``
itself renders with llama.cpp's formats through :meth:`llama_cffi.LLM.chat`
(``template=NAME``), not with these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..api.chat_template import ChatTemplate
from .state import StoppingCriteriaList


@dataclass
class ChatFormatterResponse:
    """A formatted prompt: ``prompt``; ``stop``: strings that end the reply;
    ``added_special``: the prompt already holds the BOS text (do not add it again)."""

    prompt: str
    stop: str | list[str] | None = None
    stopping_criteria: StoppingCriteriaList | None = None
    added_special: bool = False


class ChatFormatter(Protocol):
    def __call__(self, *, messages: Sequence[Mapping[str, Any]],
                 **kwargs: Any) -> ChatFormatterResponse: ...


class Jinja2ChatFormatter:
    """Render ``template`` (Jinja2 text) in a sandbox with ``bos_token``/``eos_token``."""

    def __init__(self, template: str, eos_token: str, bos_token: str,
                 add_generation_prompt: bool = True,
                 stop_token_ids: Sequence[int] | None = None) -> None:
        self.template = template
        self.eos_token = eos_token
        self.bos_token = bos_token
        self.add_generation_prompt = add_generation_prompt
        self.stop_token_ids = set(stop_token_ids) if stop_token_ids is not None else None
        self._template = ChatTemplate(template, bos_token=bos_token, eos_token=eos_token)

    def __call__(self, *, messages: Sequence[Mapping[str, Any]],
                 functions: Sequence[Mapping[str, Any]] | None = None,
                 function_call: Any = None,
                 tools: Sequence[Mapping[str, Any]] | None = None,
                 tool_choice: Any = None, **kwargs: Any) -> ChatFormatterResponse:
        if tools is None and functions:
            tools = [{"type": "function", "function": f} for f in functions]
        prompt = self._template.render(messages, add_generation_prompt=self.add_generation_prompt,
                                       tools=tools, **kwargs)
        return ChatFormatterResponse(prompt=prompt, stop=[self.eos_token], added_special=True)


def hf_tokenizer_config_to_chat_formatter(tokenizer_config: Mapping[str, Any],
                                          add_generation_prompt: bool = True) -> ChatFormatter:
    """A formatter from a Hugging Face ``tokenizer_config.json`` (its ``chat_template``,
    ``bos_token`` and ``eos_token``). As llama-cpp-python does, the generation
    prompt is made by appending an empty assistant message."""
    for key in ("chat_template", "bos_token", "eos_token"):
        if not isinstance(tokenizer_config.get(key), str):
            raise ValueError(f"tokenizer_config needs a string {key!r}")
    template = ChatTemplate(str(tokenizer_config["chat_template"]),
                            bos_token=str(tokenizer_config["bos_token"]),
                            eos_token=str(tokenizer_config["eos_token"]))
    eos = str(tokenizer_config["eos_token"])

    def format_tokenizer_config(*, messages: Sequence[Mapping[str, Any]],
                                **kwargs: Any) -> ChatFormatterResponse:
        msgs = [*messages, {"role": "assistant", "content": ""}] if add_generation_prompt \
            else list(messages)
        kwargs.pop("tools", None)
        kwargs.pop("functions", None)
        prompt = template.render(msgs, add_generation_prompt=False, **kwargs)
        return ChatFormatterResponse(prompt=prompt, stop=eos)

    return format_tokenizer_config


def format_mistral_instruct(messages: Sequence[Mapping[str, Any]],
                            **kwargs: Any) -> ChatFormatterResponse:
    """``[INST] user [/INST]assistant</s>...`` without the leading ``<s>`` (which
    tokenizing adds)."""
    eos = "</s>"
    parts: list[str] = []
    for m in messages:
        content = m.get("content")
        if m["role"] == "user" and isinstance(content, str):
            parts.append("[INST] " + content)
        elif m["role"] == "assistant" and content is not None:
            parts.append(" [/INST]" + str(content) + eos)
    parts.append(" [/INST]")
    return ChatFormatterResponse(prompt="".join(parts), stop=eos)


class MultimodalChatHandler:
    """llama-cpp-python's vision chat handlers (``Llava15ChatHandler(clip_model_path=...)``
    and the like), here one class: it names the projector GGUF (llama.cpp's
    ``--mmproj``). ``Llama(chat_handler=...)`` loads it with the model; image
    parts of chat messages then go through llama.cpp's libmtmd, with the
    model's own chat template (the handler's hand-written prompt formats are
    not used: libmtmd knows each projector's image markers)."""

    def __init__(self, clip_model_path: str, verbose: bool = True) -> None:
        if not isinstance(clip_model_path, str) or not clip_model_path:
            raise TypeError("clip_model_path must be the path of a projector (mmproj) GGUF")
        self.clip_model_path = clip_model_path
        self.verbose = verbose


# llama-cpp-python's names for its vision handlers: all the same here
Llava15ChatHandler = MultimodalChatHandler
Llava16ChatHandler = MultimodalChatHandler
MoondreamChatHandler = MultimodalChatHandler
NanoLlavaChatHandler = MultimodalChatHandler
Llama3VisionAlphaChatHandler = MultimodalChatHandler
MiniCPMv26ChatHandler = MultimodalChatHandler
Qwen25VLChatHandler = MultimodalChatHandler
Gemma3ChatHandler = MultimodalChatHandler
