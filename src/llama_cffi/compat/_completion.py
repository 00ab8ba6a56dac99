"""``Llama.create_completion``: llama-cpp-python's call and its OpenAI-shaped results,
made from one request to the LLM's engine.

Every generation is :meth:`llama_cffi.LLM.submit`; this module only maps the
keywords onto :class:`~llama_cffi.SamplingParams` fields and turns the
:class:`~llama_cffi.Completion` (or the streamed pieces) into dicts.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ..api.completion_logprobs import openai_logprobs
from ..engine.results import Completion
from ..objects.grammar import Grammar
from .llama_grammar import LlamaGrammar

if TYPE_CHECKING:
    from ..engine.request import RequestHandle
    from .llama import Llama

FINISH = {"stop": "stop", "grammar": "stop", "length": "length", "cancelled": "stop"}


@dataclass(kw_only=True)
class SamplingOptions:
    """The sampling keywords shared by completions and chat (llama-cpp-python's names)."""

    temperature: float = 0.8
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    top_k: int = 40
    stop: str | Sequence[str] | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repeat_penalty: float = 1.0
    stream: bool = False
    seed: int | None = None
    tfs_z: float = 1.0  # removed from llama.cpp; accepted and ignored, as llama-cpp-python does
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    model: str | None = None
    logits_processor: Callable[[Any, Any], Any] | None = None
    stopping_criteria: Callable[[Any, Any], bool] | None = None
    grammar: LlamaGrammar | Grammar | str | None = None
    logit_bias: Mapping[int | str, float] | None = None


@dataclass(kw_only=True)
class CompletionOptions(SamplingOptions):
    """``create_completion``'s keywords besides prompt, suffix and max_tokens."""

    logprobs: int | None = None
    echo: bool = False


def options(cls: type[Any], kwargs: Mapping[str, Any], what: str) -> Any:
    names = {f.name for f in fields(cls)}
    for key in kwargs:
        if key not in names:
            raise TypeError(f"{what}() got an unexpected keyword argument {key!r}")
    return cls(**kwargs)


def next_seed(llama: Llama, seed: int | None) -> int:
    """llama-cpp-python's seed rule: a given seed is used and kept; otherwise the
    next seed is drawn from a generator seeded with the Llama's current one."""
    if seed is None:
        seed = random.Random(llama._seed).randint(0, 2**32)
    llama._seed = int(seed) & 0xFFFFFFFF
    return llama._seed


def sampling_overrides(llama: Llama, o: SamplingOptions, max_tokens: int | None) -> dict[str, Any]:
    """The :meth:`LLM.submit` keywords for ``o`` (SamplingParams fields and hooks)."""
    kw: dict[str, Any] = dict(
        temperature=o.temperature, top_p=o.top_p, min_p=o.min_p, typical_p=o.typical_p,
        top_k=o.top_k, repeat_penalty=o.repeat_penalty, frequency_penalty=o.frequency_penalty,
        presence_penalty=o.presence_penalty, mirostat=o.mirostat_mode,
        mirostat_tau=o.mirostat_tau, mirostat_eta=o.mirostat_eta,
        max_tokens=-1 if max_tokens is None or max_tokens <= 0 else max_tokens,
        stop=() if o.stop is None else o.stop, seed=next_seed(llama, o.seed))
    if o.logit_bias:
        kw["logit_bias"] = {int(k): float(v) for k, v in o.logit_bias.items()}
    if o.grammar is not None:
        kw["grammar"] = o.grammar._grammar if isinstance(o.grammar, LlamaGrammar) else o.grammar
    if o.logits_processor is not None:
        kw["logits_processors"] = [o.logits_processor]
    if o.stopping_criteria is not None:
        kw["stopping_criteria"] = [o.stopping_criteria]
    return kw


def _ids() -> tuple[str, int]:
    return f"cmpl-{uuid.uuid4()}", int(time.time())


def _chunk(cid: str, created: int, model: str, text: str, logprobs: Any,
           finish: str | None) -> dict[str, Any]:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": logprobs,
                         "finish_reason": finish}]}


def completion_logprobs(llama: Llama, c: Completion, start: int) -> dict[str, Any]:
    """OpenAI's completion ``logprobs`` as llama-cpp-python gives them: with
    echo the prompt's tokens first (a leading BOS left out, the first listed
    token null; the others' log-probabilities computed from the prompt's
    logits), then the generated ones; each ``top_logprobs`` holds the chosen
    token too. ``start``: the generated tokens' first ``text_offset`` without
    echo (the prompt's length)."""
    out = openai_logprobs(c, llama._piece, offset=None if c.prompt_logprobs is not None
                          else start, skip_bos=llama._model.vocab.bos, with_chosen=True)
    if out is None:  # no logprobs were asked for (the caller checks first)
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    return out


def create_completion(llama: Llama, prompt: str | bytes | Sequence[int], suffix: str | None,
                      max_tokens: int | None, o: CompletionOptions
                      ) -> dict[str, Any] | Iterator[dict[str, Any]]:
    llm = llama._require_llm()
    if isinstance(prompt, bytes):
        prompt = prompt.decode("utf-8")
    if suffix is not None and not isinstance(suffix, str):
        raise TypeError(f"suffix must be a str, got {type(suffix).__name__}")
    prompt_tokens = llm.tokenize(prompt)
    if not prompt_tokens:
        bos = llm.vocab.bos
        if bos is None:
            raise ValueError("prompt is empty")
        prompt_tokens = [bos]
    prompt_text = prompt if isinstance(prompt, str) else \
        llama.detokenize(prompt_tokens).decode("utf-8", "replace")
    kw = sampling_overrides(llama, o, max_tokens)
    if o.logprobs is not None:
        kw["logprobs"] = int(o.logprobs)
    if o.echo:
        kw["echo"] = True
    if suffix is not None:  # fill in the middle: the LLM builds the prompt with FIM tokens
        kw["suffix"] = suffix
        handle = llm.submit(prompt_text, **kw)
    else:
        llama._use_cache(prompt_tokens)
        handle = llm.submit(prompt_tokens if not isinstance(prompt, str) else prompt, **kw)
    cid, created = _ids()
    model = o.model if o.model is not None else llama.model_path
    start = 0 if o.echo else len(prompt_text)

    def finish(c: Completion) -> None:
        llama._history = prompt_tokens + list(c.tokens)
        if suffix is None:
            llama._save_cache(prompt_tokens + list(c.tokens))

    if o.stream:
        return _stream(llama, handle, cid, created, model, start, finish)
    c = handle.result()
    finish(c)
    logprobs = completion_logprobs(llama, c, start) if o.logprobs is not None else None
    out = _chunk(cid, created, model, c.text, logprobs, FINISH.get(c.finish_reason, "stop"))
    out["usage"] = {"prompt_tokens": c.usage.prompt_tokens,
                    "completion_tokens": c.usage.completion_tokens,
                    "total_tokens": c.usage.prompt_tokens + c.usage.completion_tokens}
    return out


def _stream(llama: Llama, handle: RequestHandle, cid: str, created: int, model: str,
            start: int, finish: Callable[[Completion], None]) -> Iterator[dict[str, Any]]:
    """Chunks as the engine produces pieces (the echoed prompt first); the last
    one (empty text) carries finish_reason and, when asked for, the
    log-probabilities of the whole reply. Closing the iterator early cancels
    the request."""
    try:
        for piece in handle.pieces():
            yield _chunk(cid, created, model, piece, None, None)
        c = handle.result()
        finish(c)
        logprobs = completion_logprobs(llama, c, start) if c.logprobs is not None else None
        yield _chunk(cid, created, model, "", logprobs, FINISH.get(c.finish_reason, "stop"))
    finally:
        if not handle.done:
            handle.cancel()
            handle.wait()


__all__ = ["CompletionOptions", "SamplingOptions", "create_completion", "options",
           "sampling_overrides"]
