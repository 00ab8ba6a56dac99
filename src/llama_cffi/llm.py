"""The high-level API: ``LLM`` = a model, a context and sampling, with prompt reuse.

>>> llm = LLM("smollm2-135m", n_ctx=4096)                # doctest: +SKIP
>>> llm.complete("Once upon a time", max_tokens=32, temperature=0).text
>>> for piece in llm.stream("Tell me a story"): print(piece, end="")
>>> llm.chat([{"role": "user", "content": "Hi"}]).text

Every Model/Context parameter can be given to ``LLM(...)``; every sampling
parameter of :meth:`~llama_cffi.SamplerChain.from_params` to the calls.
Calls on one LLM are serialised (one context, one KV cache); the KV cache is
reused across calls: a prompt that starts like the previous prompt plus its
output only evaluates the new part (``usage.cached_tokens``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import chat_template as _chat
from .batch import Batch
from .context import Context
from .errors import ContextFullError
from .generation import TextStream
from .grammar import Grammar
from .model import Model
from .sampling import SamplerChain

_MODEL_PARAMS = set(inspect.signature(Model.__init__).parameters) - {"self", "path"}
_CONTEXT_PARAMS = set(inspect.signature(Context.__init__).parameters) - {"self", "model"}


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


class Stream:
    """Iterator over the text pieces of a generation; ``completion`` is set at the end.

    Closing it early (``break`` out of the loop, or ``close()``) ends the
    generation with finish_reason ``"cancelled"``; the LLM stays usable. An LLM
    runs one generation at a time: starting another call while a stream is
    left unfinished cancels that stream (instead of waiting for it forever).
    """

    def __init__(self, gen: Iterator[str], holder: list[Completion]) -> None:
        self._gen = gen
        self._holder = holder

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()  # type: ignore[attr-defined]

    @property
    def completion(self) -> Completion | None:
        return self._holder[0] if self._holder else None


def _stop_holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters could be the start of a stop string."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


class LLM:
    """A model with one context and the calls most scripts need.

    model: a GGUF path, a registry short name (``"smollm2-135m"``) or a
        loaded :class:`Model` (shared, not closed by this LLM).
    params: any :class:`Model` parameter (``n_gpu_layers``, ``tensor_split``,
        ``n_cpu_moe``, ...) and any :class:`Context` parameter (``n_ctx``,
        ``n_batch``, ``type_k``, ``flash_attn``, ``n_seq_max`` ...).
        ``n_ctx`` defaults to 4096.
    """

    def __init__(self, model: str | os.PathLike[str] | Model, *,
                 draft_model: str | os.PathLike[str] | Model | None = None,
                 speculative: str | Any | None = None,
                 draft_n_max: int | None = None, draft_n_min: int = 0,
                 draft_p_min: float = 0.0, draft_params: Mapping[str, Any] | None = None,
                 draft_context_params: Mapping[str, Any] | None = None,
                 ngram_size_n: int = 12, ngram_size_m: int = 48,
                 **params: Any) -> None:
        unknown = set(params) - _MODEL_PARAMS - _CONTEXT_PARAMS
        if unknown:
            raise TypeError(f"unknown parameter(s) {', '.join(sorted(unknown))}; LLM takes "
                            "Model and Context parameters")
        model_kw = {k: v for k, v in params.items() if k in _MODEL_PARAMS}
        ctx_kw = {k: v for k, v in params.items() if k in _CONTEXT_PARAMS}
        ctx_kw.setdefault("n_ctx", 4096)
        if isinstance(model, Model):
            if model_kw:
                raise TypeError("model parameters cannot be given with an already loaded Model")
            self.model, self._owns_model = model, False
        else:
            self.model, self._owns_model = Model(model, **model_kw), True
        try:
            self.ctx = Context(self.model, **ctx_kw)
        except BaseException:
            if self._owns_model:
                self.model.close()
            raise
        self.vocab = self.model.vocab
        self._cache: list[int] = []  # tokens whose KV is in sequence 0
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._step = Batch(1)
        self._embedder: Any = None
        self._embedder_key: tuple[Any, ...] | None = None
        self._open_stream: weakref.ref[Any] | None = None
        self.spec: Any = None
        try:
            self.spec = self._make_proposer(
                draft_model, speculative, draft_n_max, draft_n_min, draft_p_min,
                dict(draft_params or {}), dict(draft_context_params or {}), ngram_size_n,
                ngram_size_m, ctx_kw)
        except BaseException:
            self.close()
            raise

    def _make_proposer(self, draft_model: Any, kind: Any, n_max: int | None, n_min: int,
                       p_min: float, draft_params: dict[str, Any],
                       draft_ctx: dict[str, Any], size_n: int, size_m: int,
                       ctx_kw: dict[str, Any]) -> Any:
        from . import speculative as spec

        if kind is not None and not isinstance(kind, str):
            return kind  # a proposer object of the user's
        if kind is None and draft_model is None:
            return None
        kind = kind or "draft-simple"
        if kind in ("ngram", "ngram-simple"):
            return spec.NgramSimple(size_n, size_m)
        if kind in ("draft", "draft-simple"):
            if draft_model is None:
                raise ValueError("speculative='draft-simple' needs draft_model=")
            draft_ctx.setdefault("n_ctx", self.ctx.n_ctx)
            for key in ("n_threads", "n_threads_batch", "flash_attn"):
                if key in ctx_kw:
                    draft_ctx.setdefault(key, ctx_kw[key])
            return spec.DraftModel(self.model, draft_model, n_max=n_max or 3, n_min=n_min,
                                   p_min=p_min, model_params=draft_params, **draft_ctx)
        raise ValueError(f"unknown speculative type {kind!r}: use 'draft-simple' or "
                         "'ngram-simple' (MTP and EAGLE-3 need models that are not "
                         "supported here yet)")

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        self._cancel_open_stream()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._step.close()
        if getattr(self, "_vbatch", None) is not None:
            self._vbatch.close()
        if getattr(self, "spec", None) is not None:
            self.spec.close()
            self.spec = None
        if self._embedder is not None:
            self._embedder.close()
        self.ctx.close()
        if self._owns_model:
            self.model.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- prompts ------------------------------------------------------------------------

    def tokenize(self, prompt: str | Sequence[int], *, add_special: bool = True) -> list[int]:
        if isinstance(prompt, str):
            bos = self.vocab.bos
            if add_special and bos is not None and self.vocab.add_bos:
                bos_text = self.vocab.token_to_piece(bos, special=True).decode()
                if bos_text and prompt.startswith(bos_text):
                    add_special = False  # the text (a chat template) already has it
            return self.vocab.tokenize(prompt, add_special=add_special, parse_special=True)
        return [self.vocab.check_token(t) for t in prompt]

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *,
                            template: str | None = None, add_generation_prompt: bool = True,
                            tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        """The prompt text the model's chat template makes of ``messages``."""
        return _chat.render_for_model(self.model, messages, template=template,
                                      add_generation_prompt=add_generation_prompt, tools=tools)

    # -- the engine ------------------------------------------------------------------------

    def _chain(self, sampling: dict[str, Any]) -> SamplerChain:
        schema = sampling.pop("json_schema", None)
        if schema is not None:
            if sampling.get("grammar") is not None:
                raise ValueError("give either grammar or json_schema, not both")
            sampling["grammar"] = Grammar.from_json_schema(schema)
        elif isinstance(sampling.get("grammar"), str):
            sampling["grammar"] = Grammar(sampling["grammar"])
        return SamplerChain.from_params(self.model, **sampling)

    def _prepare(self, tokens: list[int], context_shift: bool) -> tuple[int, float]:
        """Make the KV cache hold ``tokens`` (reusing the common prefix); returns
        (reused token count, seconds spent evaluating)."""
        ctx = self.ctx
        n_ctx = ctx.n_ctx_seq
        if len(tokens) >= n_ctx:
            if not context_shift:
                raise ContextFullError(
                    f"the prompt has {len(tokens)} tokens but the context holds {n_ctx}; "
                    "use a larger n_ctx, a shorter prompt, or context_shift=True")
            tokens[:] = tokens[:4] + tokens[-(n_ctx // 2):]  # keep the start and the recent half
        common = 0
        for a, b in zip(self._cache, tokens):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # always evaluate the last prompt token
        if not ctx.seq_rm(0, common, -1):
            ctx.seq_rm(0)
            common = 0
        self._cache = tokens[:common]
        t0 = time.perf_counter()
        ctx.eval_tokens(tokens[common:], common, seq_id=0)
        self._cache = list(tokens)
        return common, time.perf_counter() - t0

    def _ensure_room(self, n: int, context_shift: bool) -> bool:
        """Room for ``n`` more tokens in the context, shifting if allowed."""
        ctx = self.ctx
        if len(self._cache) + n <= ctx.n_ctx_seq:
            return True
        if not context_shift:
            return False
        n_keep = min(4, len(self._cache))
        n_discard = max(n, (len(self._cache) - n_keep) // 2)
        ctx.shift(0, n_keep, n_discard)
        del self._cache[n_keep:n_keep + n_discard]
        return True

    def _tokens(self, chain: SamplerChain, timings: Timings, context_shift: bool,
                want_logits: bool = False) -> Iterator[int]:
        """Sampled tokens, one at a time; the memory always holds ``self._cache``.

        A token is fed back (decoded) only when the consumer asks for the next
        one, so the last token of an output is never decoded needlessly.
        """
        ctx, step, spec = self.ctx, self._step, self.spec

        def pick(i: int = -1) -> int:
            if want_logits:  # for logprobs: the distribution the token came from
                self._last_logits = ctx.logits(i).astype(np.float64)
            return chain.sample(ctx, i)

        tok = pick()
        while True:
            yield tok
            draft = spec.propose(self._cache, tok) if spec is not None else []
            if not self._ensure_room(1 + len(draft), context_shift):
                draft = []
                if not self._ensure_room(1, context_shift):
                    return
            pos = len(self._cache)
            if not draft:
                step.clear()
                step.add(tok, pos, (0,), True)
                ctx.decode(step)
                self._cache.append(tok)
                timings.target_passes += 1
                tok = pick()
                continue
            batch = self._verify_batch(len(draft) + 1)
            batch.clear()
            for i, t in enumerate([tok, *draft]):
                batch.add(t, pos + i, (0,), True)
            ctx.decode(batch)
            self._cache += [tok, *draft]
            timings.target_passes += 1
            timings.drafted_tokens += len(draft)
            for i in range(len(draft) + 1):
                t = pick(i)
                if i < len(draft) and t == draft[i]:
                    timings.accepted_tokens += 1
                    yield t
                    continue
                keep = pos + 1 + i  # tok and the accepted drafts
                ctx.seq_rm(0, keep, -1)
                del self._cache[keep:]
                tok = t
                break

    def _verify_batch(self, n: int) -> Batch:
        b = getattr(self, "_vbatch", None)
        if b is None or b.capacity < n:
            if b is not None:
                b.close()
            b = self._vbatch = Batch(max(n, 64))
        return b

    def _run(self, prompt: str | Sequence[int], max_tokens: int, stop: Sequence[str],
             logprobs: int | None, cancel: Callable[[], bool] | threading.Event | None,
             context_shift: bool, add_special: bool, sampling: dict[str, Any],
             holder: list[Completion]) -> Iterator[str]:
        with self._lock:
            tokens = self.tokenize(prompt, add_special=add_special)
            if not tokens:
                raise ValueError("the prompt is empty")
            has_grammar = sampling.get("grammar") is not None or \
                sampling.get("json_schema") is not None
            chain = self._chain(dict(sampling))
            stops = [s for s in (stop or []) if s]
            vocab = self.vocab
            usage = Usage(prompt_tokens=len(tokens))
            timings = Timings()
            out_tokens: list[int] = []
            pieces = TextStream(vocab)
            text = ""
            emitted = 0
            finish = "length"
            stop_hit: str | None = None
            lps: list[TokenLogprob] | None = [] if logprobs is not None else None
            is_cancelled = (cancel.is_set if isinstance(cancel, threading.Event)
                            else cancel) or (lambda: False)
            try:
                usage.cached_tokens, timings.prompt_seconds = self._prepare(tokens, context_shift)
                timings.prompt_tokens_evaluated = len(tokens) - usage.cached_tokens
                t_gen = time.perf_counter()
                source = self._tokens(chain, timings, context_shift, lps is not None)
                try:
                    for token in source:
                        if is_cancelled():
                            finish = "cancelled"
                            break
                        if vocab.is_eog(token):
                            finish = "grammar" if has_grammar else "stop"
                            break
                        out_tokens.append(token)
                        if lps is not None:
                            lps.append(self._logprob(self._last_logits, token, logprobs or 0))
                        text += pieces.add(token)
                        if stops:
                            search_from = max(0, emitted - max(map(len, stops)))
                            hits = [(text.find(s, search_from), s) for s in stops]
                            hits = [(i, s) for i, s in hits if i >= 0]
                            if hits:
                                at, stop_hit = min(hits)
                                text = text[:at]
                                finish = "stop"
                                if at > emitted:
                                    yield text[emitted:at]
                                emitted = at
                                break
                            safe = len(text) - _stop_holdback(text, stops)
                        else:
                            safe = len(text)
                        if safe > emitted:
                            yield text[emitted:safe]
                            emitted = safe
                        if 0 <= max_tokens <= len(out_tokens):
                            finish = "length"
                            break
                    else:
                        finish = "length"  # the context is full
                finally:
                    source.close()
                timings.generation_seconds = time.perf_counter() - t_gen
            except GeneratorExit:
                finish = "cancelled"
                raise
            finally:
                chain.close()
                if finish != "stop" or stop_hit is None:
                    tail = pieces.flush()
                    if finish not in ("cancelled",) and tail:
                        text += tail
                timings.generated_tokens = len(out_tokens)
                usage.completion_tokens = len(out_tokens)
                holder.append(Completion(text=text, tokens=out_tokens, finish_reason=finish,
                                         usage=usage, timings=timings, logprobs=lps,
                                         stop_string=stop_hit))
            if emitted < len(text):
                yield text[emitted:]

    def _logprob(self, logits: np.ndarray, token: int, top_n: int) -> TokenLogprob:
        m = logits.max()
        logz = m + np.log(np.exp(logits - m).sum())
        lp = logits - logz
        top: list[tuple[int, str, float]] = []
        if top_n > 0:
            idx = np.argpartition(-lp, top_n)[:top_n]
            idx = idx[np.argsort(-lp[idx])]
            top = [(int(i), self.vocab.token_to_piece(int(i)).decode("utf-8", "replace"),
                    float(lp[i])) for i in idx]
        return TokenLogprob(token, self.vocab.token_to_piece(token).decode("utf-8", "replace"),
                            float(lp[token]), top)

    # -- public calls ------------------------------------------------------------------------

    def stream(self, prompt: str | Sequence[int], *, max_tokens: int = 256,
               stop: Sequence[str] | None = None, logprobs: int | None = None,
               cancel: Callable[[], bool] | threading.Event | None = None,
               context_shift: bool = False, add_special: bool = True,
               **sampling: Any) -> Stream:
        """Generate after ``prompt`` and yield text pieces as they come.

        max_tokens: at most this many tokens (-1: until the end or a full context).
        stop: strings that end the output (not included, also found across tokens).
        logprobs: record each token's log-probability and the top-N alternatives.
        cancel: a callable or threading.Event checked before each token.
        context_shift: when the context is full, drop the older half (after the
            first 4 tokens) and go on, as llama.cpp's ``--context-shift``.
        sampling: SamplerChain.from_params parameters (temperature, top_k, seed,
            repeat_penalty, grammar, ...) plus ``json_schema``.
        """
        self._cancel_open_stream()
        holder: list[Completion] = []
        gen = self._run(prompt, max_tokens, stop or [], logprobs, cancel, context_shift,
                        add_special, sampling, holder)
        self._open_stream = weakref.ref(gen)
        return Stream(gen, holder)

    def _cancel_open_stream(self) -> None:
        """Close a stream that was left paused: it holds this LLM's lock."""
        ref = getattr(self, "_open_stream", None)
        gen = ref() if ref is not None else None
        if gen is not None and gen.gi_frame is not None and not gen.gi_running:
            gen.close()
        self._open_stream = None

    def complete(self, prompt: str | Sequence[int], **kw: Any) -> Completion:
        """Like :meth:`stream`, returning the whole :class:`Completion`."""
        s = self.stream(prompt, **kw)
        for _ in s:
            pass
        assert s.completion is not None
        return s.completion

    def chat_stream(self, messages: Sequence[Mapping[str, Any]], *, template: str | None = None,
                    tools: Sequence[Mapping[str, Any]] | None = None, **kw: Any) -> Stream:
        """Stream the assistant's reply to ``messages`` (the model's chat template)."""
        prompt = self.apply_chat_template(messages, template=template, tools=tools)
        kw.setdefault("add_special", True)
        return self.stream(prompt, **kw)

    def chat(self, messages: Sequence[Mapping[str, Any]], **kw: Any) -> Completion:
        """The assistant's reply to ``messages``; accepts :meth:`stream`'s parameters,
        ``template`` (Jinja text or a built-in name), ``tools`` and ``json_schema``."""
        s = self.chat_stream(messages, **kw)
        for _ in s:
            pass
        assert s.completion is not None
        return s.completion

    def generate_batch(self, prompts: Sequence[str | Sequence[int]], *, max_tokens: int = 256,
                       **sampling: Any) -> list[Completion]:
        """Several prompts at once: one sequence each, decoded in the same batches.

        Needs ``n_seq_max >= len(prompts)`` when the LLM is created. With greedy
        sampling the results equal running each prompt alone.
        """
        from .batched import generate_batch

        self._cancel_open_stream()
        with self._lock:
            self._cache = []  # the batch uses every sequence
            return generate_batch(self, prompts, max_tokens=max_tokens, sampling=sampling)

    def embed(self, texts: str | Sequence[str], *, normalize: bool = True,
              pooling: str | None = None, truncate: bool = False,
              n_batch: int | None = None) -> np.ndarray | list[np.ndarray]:
        """Embeddings of ``texts`` (a str gives one row), batched over sequences.

        pooling: ``"mean"``, ``"cls"``, ``"last"`` or ``"none"`` (token
            vectors); default the model's own. Works for embedding models and,
            with a pooling type, for generative models.
        normalize: L2-normalise (llama.cpp's ``--embd-normalize 2``).
        """
        from .embedding import Embedder

        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        key = (pooling, n_batch)
        self._cancel_open_stream()
        with self._lock:
            if self._embedder is None or self._embedder_key != key:
                if self._embedder is not None:
                    self._embedder.close()
                self._embedder = Embedder(self.model, pooling=pooling,
                                          n_batch=n_batch or max(512, self.ctx.n_batch),
                                          n_threads=self.ctx.n_threads)
                self._embedder_key = key
            result = self._embedder.embed(items, normalize=normalize, truncate=truncate)
        if single:
            return result[0]
        return result

    # -- asyncio ---------------------------------------------------------------------------------

    def _engine(self) -> concurrent.futures.ThreadPoolExecutor:
        # One dedicated thread runs all C work of this LLM: libgomp keeps one
        # thread team per calling thread, so hopping threads would slow decoding.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="llama-cffi-engine")
        return self._executor

    async def acomplete(self, prompt: str | Sequence[int], **kw: Any) -> Completion:
        """:meth:`complete` on the LLM's engine thread, without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._engine(), lambda: self.complete(prompt, **kw))

    async def achat(self, messages: Sequence[Mapping[str, Any]], **kw: Any) -> Completion:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._engine(), lambda: self.chat(messages, **kw))

    async def astream(self, prompt: str | Sequence[int], **kw: Any) -> AsyncIterator[str]:
        """:meth:`stream` as an async iterator; pieces are produced on the engine thread."""
        loop = asyncio.get_running_loop()
        stream = await loop.run_in_executor(self._engine(), lambda: self.stream(prompt, **kw))
        done = object()
        try:
            while True:
                piece = await loop.run_in_executor(self._engine(), next, stream, done)
                if piece is done:
                    return
                yield piece  # type: ignore[misc]
        finally:
            await loop.run_in_executor(self._engine(), stream.close)

    def __repr__(self) -> str:
        return f"<LLM {self.model!r} n_ctx={self.ctx.n_ctx}>"

