"""Request bodies (pydantic models) and how their fields become SamplingParams.

Known OpenAI fields are typed; llama.cpp's own request fields (every field of
:class:`~llama_cffi.SamplingParams` and llama-server's names for them:
``repeat_penalty``, ``grammar``, ``json_schema``, ``ignore_eos``,
``n_probs``, ``samplers``, ``mirostat`` ...) are accepted as extra fields; a
field that is neither is refused with a 400 naming it, rather than ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (BaseModel, ConfigDict, Field, TypeAdapter, ValidationError,
                      ValidatorFunctionWrapHandler, WrapValidator)

from ...objects.params import SamplingParams
from .errors import ApiError, bad_request, validation_message

_M = TypeVar("_M", bound="_Body")

SAMPLING_NAMES = SamplingParams.field_names() | frozenset(SamplingParams.ALIASES)
# Fields clients send that change nothing here (OpenAI bookkeeping, llama-server
# scheduling hints that the engine decides by itself).
IGNORED = frozenset({"user", "store", "metadata", "service_tier", "parallel_tool_calls",
                     "cache_prompt", "id_slot", "n_keep", "t_max_predict_ms",
                     "t_max_prompt_ms", "return_tokens", "timings_per_token", "prediction",
                     "modalities", "reasoning_effort", "keep_alive",
                     "post_sampling_probs", "response_fields", "lora", "n_cmpl",
                     "n_indent", "typical"})


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None

    @classmethod
    def parse(cls: type[_M], data: Any) -> _M:
        if not isinstance(data, dict):
            raise bad_request(f"the request body must be a JSON object, not "
                              f"{type(data).__name__}")
        try:
            body = cls.model_validate(data)
        except ValidationError as exc:
            message, field = validation_message(exc.errors())
            raise bad_request(message, field) from None
        for key in body.model_extra or {}:
            if key not in SAMPLING_NAMES and key not in IGNORED:
                raise bad_request(f"unrecognized request argument {key!r}", key)
        return body

    def sampling_extras(self) -> dict[str, Any]:
        """llama.cpp sampling fields given as extra fields (None values dropped)."""
        return {k: v for k, v in (self.model_extra or {}).items()
                if k in SAMPLING_NAMES and v is not None}


MAX_TOOLS = 1024
"""Most tools one request may declare (OpenAI allows 128)."""

_BY_FIRST_ITEM: dict[type, TypeAdapter[Any]] = {
    str: TypeAdapter(list[str]), int: TypeAdapter(list[int]),
    list: TypeAdapter(list[list[int]])}


def _by_first_item(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A list of prompts validated as the type its first item says: the plain
    union would try every member on every item (seconds for millions of ids)."""
    if isinstance(value, list) and value:
        adapter = _BY_FIRST_ITEM.get(type(value[0]))
        if adapter is not None:
            return adapter.validate_python(value)
    return handler(value)


PromptLike = Annotated[str | list[str] | list[int] | list[list[int]],
                       WrapValidator(_by_first_item)]
"""A text, texts, token ids, or lists of token ids (OpenAI's ``prompt``/``input``)."""


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Generation(_Body):
    """Fields shared by chat and text completions."""

    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=-1)
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = None
    min_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    n: int = Field(default=1, ge=1, le=16)


class FunctionDef(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    name: str


class ToolChoiceFunction(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")  # llama-server's form


class ChatRequest(_Generation):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=-1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceFunction | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    """Extra variables for the chat template (llama-server's field)."""


class CompletionRequest(_Generation):
    prompt: PromptLike
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=1)


class EmbeddingRequest(_Body):
    input: PromptLike
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)


class TokenizeRequest(_Body):
    content: str
    add_special: bool = False
    with_pieces: bool = False


class DetokenizeRequest(_Body):
    tokens: list[int]


class TemplateRequest(_Body):
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)


ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def check_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as the chat template takes them (``developer`` is ``system``);
    a 400 naming the message for a bad one."""
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = m.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}",
                              f"{where}.role")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise bad_request(f"{where}.content must be a string or a list of content parts",
                              f"{where}.content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or "type" not in part:
                    raise bad_request(f"{where}.content[{j}] must be an object with a 'type'",
                                      f"{where}.content")
                if part["type"] == "text" and not isinstance(part.get("text"), str):
                    raise bad_request(f"{where}.content[{j}].text must be a string",
                                      f"{where}.content")
                if part["type"] not in ("text", "image_url", "input_audio"):
                    raise bad_request(f"{where}.content[{j}].type {part['type']!r} is not "
                                      "supported (text, image_url, input_audio)",
                                      f"{where}.content")
        if content is None and role != "assistant":
            raise bad_request(f"{where}.content is required for role {role!r}",
                              f"{where}.content")
        msg = dict(m)
        if role == "developer":
            msg["role"] = "system"
        out.append(msg)
    return out


def sampling_kwargs(body: _Generation, *, cap: int, default_max: int) -> dict[str, Any]:
    """SamplingParams fields of a chat or completion request."""
    kw: dict[str, Any] = body.sampling_extras()
    for name in ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
                 "frequency_penalty"):
        value = getattr(body, name)
        if value is not None:
            kw[name] = value
    max_tokens = getattr(body, "max_completion_tokens", None)
    if max_tokens is None:
        max_tokens = body.max_tokens
    if max_tokens is None:
        max_tokens = kw.pop("max_tokens", kw.pop("n_predict", None))
    if max_tokens is None or max_tokens < 0:
        max_tokens = cap if default_max < 0 else min(default_max, cap)
    kw["max_tokens"] = min(int(max_tokens), cap)
    kw.pop("n_predict", None)
    if body.stop is not None:
        kw["stop"] = body.stop
    if body.logit_bias:
        bias = []
        for key, value in body.logit_bias.items():
            try:
                bias.append((int(key), float(value)))
            except ValueError:
                raise bad_request(f"logit_bias keys must be token ids, got {key!r}",
                                  "logit_bias") from None
        kw["logit_bias"] = bias
    return kw


def response_schema(fmt: ResponseFormat | None) -> Any:
    """The JSON schema a response_format asks for (None: free text)."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return fmt.schema_ if fmt.schema_ is not None else {"type": "object"}
    schema = fmt.json_schema.schema_ if fmt.json_schema is not None else fmt.schema_
    if schema is None:
        raise bad_request("response_format.json_schema.schema is required for type "
                          "'json_schema'", "response_format.json_schema.schema")
    return schema


def make_sampling(base: SamplingParams, kw: dict[str, Any]) -> SamplingParams:
    """``base`` with the request's fields; a 400 naming the field for a bad value."""
    try:
        return SamplingParams.from_kwargs(base, **kw)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        field = next((k for k in kw if message.startswith(k) or f"'{k}'" in message), None)
        raise ApiError(400, message, param=field) from None
