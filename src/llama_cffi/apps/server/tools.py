"""A chat request's prompt, sampling and tool calls, from messages and tools.

The chat layer (:mod:`llama_cffi.api.tool_choice`) renders the tools with
the model's template, constrains the output with a grammar when a tool call
is required, and parses the calls out of the reply
(:mod:`llama_cffi.api.tool_calls`); this module only shapes them the OpenAI
way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...api import multimodal as _mm
from ...api import tool_calls as tc
from ...api import tool_choice as tchoice
from ...api.llm import LLM
from ...engine.results import Completion
from ...objects.params import SamplingParams
from .errors import bad_request


@dataclass
class ChatPlan:
    prompt: str
    sampling: SamplingParams
    family: str | None
    """The tool-call format of the model's template (None: no tools in play)."""
    media: list[Any]
    """Images/audio of the messages, in prompt order (their markers are in ``prompt``)."""

    def submit_kwargs(self) -> dict[str, Any]:
        return {"media": self.media} if self.media else {}

    @property
    def buffers_text(self) -> bool:
        """Whether streamed text is held back until the tool calls are parsed."""
        return self.family is not None

    def parse(self, c: Completion) -> tuple[str | None, list[dict[str, Any]]]:
        """(content, tool calls in OpenAI's shape) of a finished reply."""
        if self.family is None:
            return c.text, []
        content, calls = tc.parse_tool_calls(c.text, self.family)
        return content, [{"id": call.id, "type": "function",
                          "function": {"name": call.name, "arguments": call.arguments}}
                         for call in calls]


def plan(llm: LLM, messages: Sequence[Mapping[str, Any]], sp: SamplingParams,
         tools: list[dict[str, Any]] | None, tool_choice: Any,
         template_kwargs: Mapping[str, Any] | None = None) -> ChatPlan:
    """How to run a chat request (``tool_choice`` as OpenAI sends it). Media
    parts must be data URLs (a server does not read its own files for clients)."""
    messages, media = _mm.split(llm, messages, allow_files=False)
    prepared = tchoice.prepare_chat(llm.model, messages, tools=tools,
                                    tool_choice=tool_choice if tools else None,
                                    json_schema=sp.json_schema, **dict(template_kwargs or {}))
    if prepared.grammar is not None:  # it holds (or, for a forced call, overrides) the schema
        if sp.grammar is not None:
            raise bad_request("tools constrain the reply with their own grammar: give a "
                              "grammar or tools, not both (a json_schema/response_format/"
                              "format can go with tools)", "grammar")
        sp = sp.replace(grammar=prepared.grammar, json_schema=None)
    return ChatPlan(prepared.prompt, sp, prepared.family, list(media))
