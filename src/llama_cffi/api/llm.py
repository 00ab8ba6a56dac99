"""The high-level API: ``LLM`` = a model, a context and per-call sampling, with prompt reuse.

>>> llm = LLM("smollm2-135m", n_ctx=4096)                # doctest: +SKIP
>>> llm.complete("Once upon a time", max_tokens=32, temperature=0).text
>>> llm.complete("Once upon a time", SamplingParams(temperature=0.7, seed=1))
>>> for piece in llm.stream("Tell me a story"): print(piece, end="")
>>> llm.chat([{"role": "user", "content": "Hi"}]).text

Construction takes :class:`~llama_cffi.ModelParams` and
:class:`~llama_cffi.ContextParams` (or their fields as keywords, mapped in
:func:`~llama_cffi.objects.params.split_kwargs`); every call takes a
:class:`~llama_cffi.SamplingParams` (or its fields as keywords), as vLLM
does. Calls on one LLM are serialised (one context, one KV cache); the KV
cache is reused across calls: a prompt that starts like the previous prompt
plus its output only evaluates the new part (``usage.cached_tokens``).

Thread safety: an LLM may be shared across threads; its calls run one at a
time. Async calls run on the LLM's own engine thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from typing import Any

import numpy as np

from ..engine import speculative as spec
from ..engine.batched import generate_batch
from ..engine.results import Completion
from ..engine.sequence import Cancel, Proposer, SequenceRunner
from ..objects.chain import SamplerChain
from ..objects.context import Context
from ..objects.grammar import Grammar
from ..objects.model import Model
from ..objects.params import ContextParams, ModelParams, SamplingParams, SpeculativeParams
from ..objects.params import split_kwargs
from . import chat_template as _chat
from .embedding import Embedder

DEFAULT_N_CTX = 4096
DEFAULT_SAMPLING = SamplingParams(max_tokens=256)
"""What a call samples with unless told otherwise: llama.cpp's defaults, at
most 256 new tokens."""


def build_chain(vocab_owner: Model, sp: SamplingParams) -> SamplerChain:
    """The sampler chain llama.cpp's tools build for ``sp`` (grammar or JSON schema included)."""
    grammar: Grammar | None = None
    if sp.json_schema is not None:
        grammar = Grammar.from_json_schema(sp.json_schema)
    elif isinstance(sp.grammar, str):
        grammar = Grammar(sp.grammar)
    elif sp.grammar is not None:
        grammar = sp.grammar
    return SamplerChain.from_params(
        vocab_owner, temperature=sp.temperature, top_k=sp.top_k, top_p=sp.top_p,
        min_p=sp.min_p, typical_p=sp.typical_p, xtc_probability=sp.xtc_probability,
        xtc_threshold=sp.xtc_threshold, top_n_sigma=sp.top_n_sigma,
        repeat_penalty=sp.repeat_penalty, repeat_last_n=sp.repeat_last_n,
        frequency_penalty=sp.frequency_penalty, presence_penalty=sp.presence_penalty,
        dry_multiplier=sp.dry_multiplier, dry_base=sp.dry_base,
        dry_allowed_length=sp.dry_allowed_length, dry_penalty_last_n=sp.dry_penalty_last_n,
        dry_sequence_breakers=list(sp.dry_sequence_breakers),
        dynatemp_range=sp.dynatemp_range, dynatemp_exponent=sp.dynatemp_exponent,
        mirostat=sp.mirostat, mirostat_tau=sp.mirostat_tau, mirostat_eta=sp.mirostat_eta,
        seed=sp.seed, min_keep=sp.min_keep, logit_bias=dict(sp.logit_bias) or None,
        grammar=grammar, samplers=list(sp.samplers), adaptive_target=sp.adaptive_target,
        adaptive_decay=sp.adaptive_decay)


class Stream:
    """Iterator over the text pieces of a generation; ``completion`` is set at the end.

    Closing it early (``break`` out of the loop, or ``close()``) ends the
    generation with finish_reason ``"cancelled"``; the LLM stays usable. An LLM
    runs one generation at a time: starting another call while a stream is
    left unfinished cancels that stream (instead of waiting for it forever).
    """

    def __init__(self, gen: Generator[str, None, None], holder: list[Completion]) -> None:
        self._gen = gen
        self._holder = holder

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    @property
    def completion(self) -> Completion | None:
        return self._holder[0] if self._holder else None


class LLM:
    """A model with one context and the calls most scripts need.

    model: a GGUF path, a registry short name (``"smollm2-135m"``) or a
        loaded :class:`Model` (shared, not closed by this LLM).
    model_params, context_params: :class:`ModelParams`, :class:`ContextParams`
        (``n_ctx`` defaults to 4096 here).
    speculative: a :class:`SpeculativeParams`, a proposer object of your own
        (``propose(history, last) -> list[int]``, ``close()``, ``name``), or a
        ``--spec-type`` name.
    sampling: the default :class:`SamplingParams` of every call (calls
        override it per field); default llama.cpp's, at most 256 tokens.
    draft_model: a loaded draft :class:`Model` (or a path, as ``-md``).
    draft_params, draft_context_params: ModelParams/ContextParams fields for
        the draft model and its context.
    progress: load-progress callback of the model (see :class:`Model`).
    kwargs: any field of the four params classes, llama-cpp-python style
        (``n_ctx=8192, n_gpu_layers=-1, type_k="q8_0", temperature=0.2``).
    """

    def __init__(self, model: str | os.PathLike[str] | Model, *,
                 model_params: ModelParams | None = None,
                 context_params: ContextParams | None = None,
                 speculative: SpeculativeParams | Proposer | str | None = None,
                 sampling: SamplingParams | None = None,
                 draft_model: str | os.PathLike[str] | Model | None = None,
                 draft_params: Mapping[str, Any] | None = None,
                 draft_context_params: Mapping[str, Any] | None = None,
                 progress: Callable[[float], bool | None] | None = None,
                 **kwargs: Any) -> None:
        model_kw, ctx_kw, spec_kw, sampling_kw = split_kwargs(kwargs)
        mp = ModelParams.from_kwargs(model_params, **model_kw)
        cp = ContextParams.from_kwargs(context_params, **ctx_kw)
        if cp.n_ctx is None:
            cp = cp.replace(n_ctx=DEFAULT_N_CTX)
        self.sampling = SamplingParams.from_kwargs(sampling or DEFAULT_SAMPLING, **sampling_kw)
        """Default sampling of every call (a call's own settings override it)."""
        proposer: Proposer | None = None
        if isinstance(speculative, str):
            spec_kw.setdefault("spec_type", speculative)
        elif isinstance(speculative, SpeculativeParams):
            spec_kw = {**speculative.to_dict(only_changed=True), **spec_kw}
        elif speculative is not None:
            proposer = speculative
        if isinstance(draft_model, (str, os.PathLike)):
            spec_kw["draft_model"] = os.fspath(draft_model)
        sp_params = SpeculativeParams.from_kwargs(None, **spec_kw)
        if isinstance(model, Model):
            if model_kw or model_params is not None:
                raise TypeError("model parameters cannot be given with an already loaded Model")
            self.model, self._owns_model = model, False
        else:
            self.model, self._owns_model = Model(model, mp, progress=progress), True
        self.model_params = self.model.params
        try:
            self.ctx = Context(self.model, cp)
        except BaseException:
            if self._owns_model:
                self.model.close()
            raise
        self.context_params = self.ctx.params
        self.vocab = self.model.vocab
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._embedder: Embedder | None = None
        self._embedder_key: tuple[Any, ...] | None = None
        self._open_stream: weakref.ref[Generator[str, None, None]] | None = None
        self.spec: Proposer | None = None
        self._runner = SequenceRunner(self.ctx)
        try:
            self.spec = proposer or self._make_proposer(
                sp_params, draft_model if isinstance(draft_model, Model) else None,
                dict(draft_params or {}), dict(draft_context_params or {}))
        except BaseException:
            self.close()
            raise
        self._runner.spec = self.spec

    def _make_proposer(self, p: SpeculativeParams, draft: Model | None,
                       draft_params: dict[str, Any],
                       draft_ctx: dict[str, Any]) -> Proposer | None:
        if not p.enabled and draft is None:
            return None
        kind = p.spec_type or "draft-simple"
        if kind == "ngram-simple":
            return spec.NgramSimple(p.ngram_size_n, p.ngram_size_m)
        source = draft if draft is not None else p.draft_model
        if source is None:
            raise ValueError("speculative type 'draft-simple' needs a draft model "
                             "(draft_model= / -md)")
        if p.draft_n_gpu_layers is not None:
            draft_params.setdefault("n_gpu_layers", p.draft_n_gpu_layers)
        if p.draft_devices is not None:
            draft_params.setdefault("devices", p.draft_devices)
        if p.draft_type_k is not None:
            draft_ctx.setdefault("type_k", p.draft_type_k)
        if p.draft_type_v is not None:
            draft_ctx.setdefault("type_v", p.draft_type_v)
        draft_ctx.setdefault("n_ctx", self.ctx.n_ctx)
        for key in ("n_threads", "n_threads_batch", "flash_attn"):
            value = getattr(self.context_params, key)
            if value is not None:
                draft_ctx.setdefault(key, value)
        return spec.DraftModel(self.model, source, n_max=p.draft_n_max, n_min=p.draft_n_min,
                               p_min=p.draft_p_min, model_params=draft_params, **draft_ctx)

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        self._cancel_open_stream()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._runner.close()
        if self.spec is not None:
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

    def tokenize(self, prompt: str | bytes | Sequence[int], *,
                 add_special: bool = True) -> list[int]:
        """Token ids of ``prompt`` (text, UTF-8 bytes, or ids, which are checked)."""
        if isinstance(prompt, bytes):
            prompt = prompt.decode("utf-8")
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

    def sampling_for(self, sampling: SamplingParams | None = None,
                     **overrides: Any) -> SamplingParams:
        """The settings a call uses: ``sampling`` (default: this LLM's), then ``overrides``."""
        return SamplingParams.from_kwargs(sampling or self.sampling, **overrides)

    # -- generation --------------------------------------------------------------------------

    def _run(self, prompt: str | bytes | Sequence[int], sp: SamplingParams,
             cancel: Cancel | None, context_shift: bool, add_special: bool,
             holder: list[Completion]) -> Generator[str, None, None]:
        with self._lock:
            tokens = self.tokenize(prompt, add_special=add_special)
            if not tokens:
                raise ValueError("the prompt is empty")
            has_grammar = sp.grammar is not None or sp.json_schema is not None
            chain = build_chain(self.model, sp)
            try:
                yield from self._runner.run(tokens, chain, sp, cancel, context_shift,
                                            has_grammar, holder)
            finally:
                chain.close()

    def stream(self, prompt: str | bytes | Sequence[int], sampling: SamplingParams | None = None,
               *, cancel: Cancel | None = None, context_shift: bool = False,
               add_special: bool = True, **overrides: Any) -> Stream:
        """Generate after ``prompt`` and yield text pieces as they come.

        sampling: a :class:`SamplingParams` (default: the LLM's); ``overrides``
            are SamplingParams fields applied on top (``max_tokens``, ``stop``,
            ``temperature``, ``seed``, ``grammar``, ``json_schema``,
            ``logprobs``, ``ignore_eos`` ...).
        cancel: a callable or threading.Event checked before each token.
        context_shift: when the context is full, drop the older half (after the
            first 4 tokens) and go on, as llama.cpp's ``--context-shift``.
        """
        sp = self.sampling_for(sampling, **overrides)
        self._cancel_open_stream()
        holder: list[Completion] = []
        gen = self._run(prompt, sp, cancel, context_shift, add_special, holder)
        self._open_stream = weakref.ref(gen)
        return Stream(gen, holder)

    def _cancel_open_stream(self) -> None:
        """Close a stream that was left paused: it holds this LLM's lock."""
        ref = getattr(self, "_open_stream", None)
        gen = ref() if ref is not None else None
        if gen is not None and gen.gi_frame is not None and not gen.gi_running:
            gen.close()
        self._open_stream = None

    def complete(self, prompt: str | bytes | Sequence[int],
                 sampling: SamplingParams | None = None, **kw: Any) -> Completion:
        """Like :meth:`stream`, returning the whole :class:`Completion`."""
        s = self.stream(prompt, sampling, **kw)
        for _ in s:
            pass
        if s.completion is None:  # pragma: no cover - the loop always records one
            raise RuntimeError("the generation ended without a result")
        return s.completion

    def chat_stream(self, messages: Sequence[Mapping[str, Any]],
                    sampling: SamplingParams | None = None, *, template: str | None = None,
                    tools: Sequence[Mapping[str, Any]] | None = None, **kw: Any) -> Stream:
        """Stream the assistant's reply to ``messages`` (the model's chat template)."""
        prompt = self.apply_chat_template(messages, template=template, tools=tools)
        return self.stream(prompt, sampling, **kw)

    def chat(self, messages: Sequence[Mapping[str, Any]],
             sampling: SamplingParams | None = None, **kw: Any) -> Completion:
        """The assistant's reply to ``messages``; accepts :meth:`stream`'s parameters,
        ``template`` (Jinja text or a built-in name) and ``tools``."""
        s = self.chat_stream(messages, sampling, **kw)
        for _ in s:
            pass
        if s.completion is None:  # pragma: no cover
            raise RuntimeError("the generation ended without a result")
        return s.completion

    def generate_batch(self, prompts: Sequence[str | Sequence[int]],
                       sampling: SamplingParams | None = None,
                       **overrides: Any) -> list[Completion]:
        """Several prompts at once: one sequence each, decoded in the same batches.

        Needs ``n_seq_max >= len(prompts)`` when the LLM is created. With greedy
        sampling the results equal running each prompt alone.
        """
        sp = self.sampling_for(sampling, **overrides)
        self._cancel_open_stream()
        with self._lock:
            self._runner.forget()  # the batch uses every sequence
            tokens = [self.tokenize(p) for p in prompts]
            return generate_batch(self.ctx, tokens, max_tokens=sp.max_tokens,
                                  make_chain=lambda: build_chain(self.model, sp),
                                  ignore_eos=sp.ignore_eos)

    def embed(self, texts: str | Sequence[str], *, normalize: bool = True,
              pooling: str | None = None, truncate: bool = False,
              n_batch: int | None = None) -> np.ndarray | list[np.ndarray]:
        """Embeddings of ``texts`` (a str gives one row), batched over sequences.

        pooling: ``"mean"``, ``"cls"``, ``"last"`` or ``"none"`` (token
            vectors); default the model's own. Works for embedding models and,
            with a pooling type, for generative models.
        normalize: L2-normalise (llama.cpp's ``--embd-normalize 2``).
        """
        single = isinstance(texts, str)
        items = [texts] if isinstance(texts, str) else list(texts)
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
                yield str(piece)
        finally:
            await loop.run_in_executor(self._engine(), stream.close)

    def __repr__(self) -> str:
        return f"<LLM {self.model!r} n_ctx={self.ctx.n_ctx}>"

