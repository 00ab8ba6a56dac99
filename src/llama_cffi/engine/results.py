"""What a generation returns (text, tokens, usage, timings, log-probabilities)
and the engine's counters."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV cache was reused

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Timings:
    """Seconds and tokens/s, as llama.cpp's tools report them."""

    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    prompt_tokens_evaluated: int = 0
    generated_tokens: int = 0
    drafted_tokens: int = 0  # speculative decoding: proposed by the draft
    accepted_tokens: int = 0  # ... and kept by the target
    target_passes: int = 0  # forward passes of the model during generation
    time_to_first_token: float = 0.0  # seconds from submission to the first token

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else 0.0

    @property
    def prompt_tokens_per_second(self) -> float:
        s = self.prompt_seconds
        return self.prompt_tokens_evaluated / s if s > 0 else 0.0

    @property
    def generation_tokens_per_second(self) -> float:
        s = self.generation_seconds
        return self.generated_tokens / s if s > 0 else 0.0


@dataclass
class TokenLogprob:
    token: int
    text: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)


@dataclass
class ToolCall:
    """One function call the model asked for (OpenAI's ``tool_calls[i]``).

    id: the call's id (the model's own where its format has one, else a
        generated ``call_...``); name: the function's name; arguments: the
        JSON text of an object (OpenAI's ``function.arguments``).
    """

    id: str
    name: str
    arguments: str


@dataclass
class Completion:
    """The result of a call.

    finish_reason: ``"stop"`` (end-of-generation token or a stop string),
    ``"length"`` (max_tokens or a full context), ``"grammar"`` (the grammar
    was complete), ``"cancelled"``.
    text: the raw generated text (tool-call markup included).
    tool_calls: the tool calls parsed out of ``text`` by a chat call with
        ``tools`` (None otherwise, or when the reply called nothing).
    content: set by chat calls: the assistant's text with tool-call markup
        removed (None when the reply is only tool calls; None for
        ``complete``/``stream``).
    prompt_logprobs: with ``echo=True`` and ``logprobs=N`` (OpenAI's echo with
        logprobs), one entry per prompt token: its log-probability given the
        tokens before it and the N best alternatives there; the first entry is
        None (nothing precedes the first token). None otherwise.
    prompt_tokens: the prompt's token ids the entries belong to (set with
        ``prompt_logprobs``).
    """

    text: str
    tokens: list[int]
    finish_reason: str
    usage: Usage
    timings: Timings
    logprobs: list[TokenLogprob] | None = None
    stop_string: str | None = None
    tool_calls: list[ToolCall] | None = None
    content: str | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None
    prompt_tokens: list[int] | None = None


@dataclass(init=False)
class EngineMetrics:
    """Counters since the engine started (the server's ``/metrics``); each
    starts at zero and only the engine thread changes them."""

    requests_total: int = 0
    requests_failed: int = 0
    requests_cancelled: int = 0
    prompt_tokens_total: int = 0  # prompt tokens of finished requests
    prompt_tokens_evaluated: int = 0  # ... of which evaluated (not reused)
    cached_tokens_total: int = 0  # prompt tokens reused from a slot's cache
    prefix_copies: int = 0  # prefixes copied from another slot
    generated_tokens_total: int = 0
    decode_calls: int = 0
    decode_seconds: float = 0.0  # inside llama_decode
    run_decode_calls: int = 0  # ... of the decode calls, those made by generation runs in C
    requests_running: int = 0
    requests_queued: int = 0
    kv_cells_used: int = 0
    last_time_to_first_token: float = 0.0
    last_tokens_per_second: float = 0.0

    def __init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default)
