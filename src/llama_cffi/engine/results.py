"""What a generation returns: text, tokens, usage, timings, log-probabilities."""

from __future__ import annotations

from dataclasses import dataclass, field


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
class Completion:
    """The result of a call.

    finish_reason: ``"stop"`` (end-of-generation token or a stop string),
    ``"length"`` (max_tokens or a full context), ``"grammar"`` (the grammar
    was complete), ``"cancelled"``.
    """

    text: str
    tokens: list[int]
    finish_reason: str
    usage: Usage
    timings: Timings
    logprobs: list[TokenLogprob] | None = None
    stop_string: str | None = None
