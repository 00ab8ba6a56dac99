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

import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..engine import speculative as spec
from ..engine.engine import Engine, Proposer
from ..engine.request import Cancel, RequestHandle
from ..engine.results import Completion, EngineMetrics
from ..objects.chain import SamplerChain, chain_for
from ..objects.context import Context
from ..objects.model import Model
from ..objects.params import (
    ContextParams,
    ModelParams,
    SamplingParams,
    SpeculativeParams,
    split_kwargs,
)
from . import multimodal as _mm
from . import processors as _proc
from . import prompts as _prompts
from . import state as _state
from . import tool_choice as _tools
from .embedding import Embedder
from .prompt_cache import EngineCache, PromptCache
from .state import LLMState

DEFAULT_N_CTX = 4096
DEFAULT_SAMPLING = SamplingParams(max_tokens=256)
"""What a call samples with unless told otherwise: llama.cpp's defaults, at
most 256 new tokens."""


def build_chain(vocab_owner: Model, sp: SamplingParams) -> SamplerChain:
    """The sampler chain llama.cpp's tools build for ``sp`` (grammar or JSON schema included)."""
    return chain_for(vocab_owner, sp)


class Stream:
    """Iterator over the text pieces of a generation; ``completion`` is set at the end.

    The generation runs on the engine thread whether or not the pieces are
    read; closing the stream early (``break`` out of the loop, or ``close()``)
    cancels it (finish_reason ``"cancelled"``) and frees its slot.
    """

    def __init__(self, handle: RequestHandle) -> None:
        self.handle = handle
        self._pieces = handle.pieces()

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Cancel the generation (if still running) and wait until its slot is free."""
        self._pieces.close()
        self.handle.cancel()
        self.handle.wait()

    @property
    def completion(self) -> Completion | None:
        return self.handle.completion


class ChatStream(Stream):
    """A :class:`Stream` of a chat reply: its ``completion`` carries ``content``
    and the parsed ``tool_calls``."""

    def __init__(self, handle: RequestHandle, family: str | None) -> None:
        super().__init__(handle)
        self._family = family
        self._finished: Completion | None = None

    @property
    def completion(self) -> Completion | None:
        done = self.handle.completion
        if done is not None and self._finished is None:
            self._finished = _tools.finish_chat(done, self._family)
        return self._finished


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
    max_queue: requests that may wait for a free slot before a call raises
        :class:`~llama_cffi.errors.EngineBusyError`.
    mmproj: a multimodal projector GGUF (``--mmproj``): chat messages may then
        hold images/audio (see :mod:`~llama_cffi.api.multimodal`);
        ``mmproj_params`` are :class:`~llama_cffi.MultimodalProjector` keywords.
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
                 max_queue: int = 256, mmproj: str | os.PathLike[str] | None = None,
                 mmproj_params: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self.projector: _mm.MultimodalProjector | None = None
        """The multimodal projector (``mmproj=``), or None."""
        self.allow_media_files = True
        """Whether chat image/audio parts may name local files (a server sets False)."""
        model_kw, ctx_kw, spec_kw, sampling_kw = split_kwargs(kwargs)
        mp = ModelParams.from_kwargs(model_params, **model_kw)
        cp = ContextParams.from_kwargs(context_params, **ctx_kw)
        if cp.n_ctx is None:
            cp = cp.replace(n_ctx=DEFAULT_N_CTX)
        self.sampling = SamplingParams.from_kwargs(sampling or DEFAULT_SAMPLING, **sampling_kw)
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
        self._embedder: Embedder | None = None
        self._embedder_key: tuple[Any, ...] | None = None
        self.spec: Proposer | None = None
        try:
            if mmproj is not None:
                self.projector = _mm.load_projector(self.model, mmproj, mmproj_params,
                                                    self.ctx.n_threads_batch)
            self.spec = proposer or self._make_proposer(
                sp_params, draft_model if isinstance(draft_model, Model) else None,
                dict(draft_params or {}), dict(draft_context_params or {}))
            self.engine = Engine(self.ctx, lambda p: build_chain(self.model, p),
                                 proposer=self.spec, max_queue=max_queue)
            """The engine thread that runs every generation of this LLM."""
        except BaseException:
            if self.spec is not None:
                self.spec.close()
            if self.projector is not None:
                self.projector.close()
            self.ctx.close()
            if self._owns_model:
                self.model.close()
            raise

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
        draft_ctx.setdefault("n_seq_max", self.ctx.n_seq_max)  # one draft sequence per slot
        for key in ("n_threads", "n_threads_batch", "flash_attn"):
            value = getattr(self.context_params, key)
            if value is not None:
                draft_ctx.setdefault(key, value)
        return spec.DraftModel(self.model, source, n_max=p.draft_n_max, n_min=p.draft_n_min,
                               p_min=p.draft_p_min, model_params=draft_params, **draft_ctx)

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Cancel running requests, stop the engine, free the context (and the
        model, if this LLM loaded it)."""
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()  # also closes the speculative proposer
        self.spec = None
        if self.projector is not None:
            self.projector.close()
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        self.ctx.close()
        if self._owns_model:
            self.model.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- prompts ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str = "*.gguf", **kwargs: Any) -> LLM:
        """An LLM on a GGUF from the Hugging Face Hub (``filename``: a glob; split
        GGUFs are fetched whole). Needs the ``hf`` extra (huggingface_hub);
        ``kwargs`` are :class:`LLM`'s."""
        from ..objects import hub

        return cls(hub.download(repo_id, filename), **kwargs)

    def tokenize(self, prompt: str | bytes | Sequence[int], *,
                 add_special: bool = True) -> list[int]:
        """Token ids of ``prompt``: text, UTF-8 bytes (text, as
        llama-cpp-python's ``tokenize(b"...")``), or ids (checked). Special-token
        text is parsed; ``add_special`` adds the model's BOS unless the text
        starts with it."""
        return _prompts.tokenize(self.vocab, prompt, add_special=add_special)

    @property
    def sampling(self) -> SamplingParams:
        """Default sampling of every call (a call's own settings override it per
        field). Settable: ``llm.sampling = SamplingParams(temperature=0.2)`` or a
        mapping of fields applied on top of the library defaults
        (``llm.sampling = {"temperature": 0.2, "max_tokens": 512}``)."""
        return self._sampling

    @sampling.setter
    def sampling(self, value: SamplingParams | Mapping[str, Any]) -> None:
        if isinstance(value, Mapping):
            value = SamplingParams.from_kwargs(DEFAULT_SAMPLING, **value)
        if not isinstance(value, SamplingParams):
            raise TypeError(f"sampling must be a SamplingParams (or a mapping of its fields), "
                            f"got {type(value).__name__}")
        self._sampling = value

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *,
                            template: str | None = None, add_generation_prompt: bool = True,
                            tools: Sequence[Mapping[str, Any]] | None = None,
                            tool_choice: Any = None, **template_kwargs: Any) -> str:
        """The prompt text the model's chat template makes of ``messages`` (the
        prompt :meth:`chat` sends with the same arguments).

        template: Jinja text, a llama.cpp format name (``"chatml"``) or a
            llama-cpp-python ``chat_format`` name (``"llama-2"``); default the
            model's own (``--chat-template``). An unknown name raises
            TemplateError listing the known ones.
        template_kwargs: extra template variables (``--chat-template-kwargs``,
            e.g. ``enable_thinking=False``).
        """
        return _tools.prepare_chat(self.model, messages, template=template, tools=tools,
                                   tool_choice=tool_choice,
                                   add_generation_prompt=add_generation_prompt,
                                   **template_kwargs).prompt

    def sampling_for(self, sampling: SamplingParams | None = None,
                     **overrides: Any) -> SamplingParams:
        """The settings a call uses: ``sampling`` (default: this LLM's), then ``overrides``."""
        return SamplingParams.from_kwargs(sampling or self.sampling, **overrides)

    # -- generation --------------------------------------------------------------------------

    def submit(self, prompt: str | bytes | Sequence[int], sampling: SamplingParams | None = None,
               *, cancel: Cancel | None = None, timeout: float | None = None,
               context_shift: bool = False, add_special: bool = True,
               sampler: SamplerChain | None = None, echo: bool = False,
               suffix: str | None = None, logits_processors: Any = None,
               stopping_criteria: Any = None, media: Sequence[Any] = (),
               **overrides: Any) -> RequestHandle:
        """Queue a generation on the engine and return its handle at once.

        The handle iterates text pieces (also with ``async for``), gives the
        :class:`Completion` (``handle.result()``, or ``await handle``), and
        cancels (``handle.cancel()``). Every other generation call is built on
        this one.

        sampling: a :class:`SamplingParams` (default: the LLM's); ``overrides``
            are SamplingParams fields applied on top (``max_tokens``, ``stop``,
            ``temperature``, ``seed``, ``grammar``, ``json_schema``,
            ``logprobs``, ``ignore_eos`` ...).
        cancel: a callable or threading.Event checked before each step.
        timeout: seconds after which the request is cancelled.
        context_shift: when the slot's context is full, drop the older half
            (after the first 4 tokens) and go on, as llama.cpp's
            ``--context-shift``; otherwise a too long prompt raises
            ContextFullError and a full context ends with ``"length"``.
        sampler: your own :class:`SamplerChain` (Python samplers included)
            instead of the one ``sampling`` describes; the request takes it
            over and closes it at the end. Stopping (``max_tokens``, ``stop``,
            ``ignore_eos``, ``logprobs``) still comes from ``sampling``.
        echo: the output starts with the prompt (OpenAI's ``echo``): the first
            piece, and the start of ``Completion.text``; with ``logprobs`` the
            prompt's tokens get theirs too (``Completion.prompt_logprobs``).
        suffix: fill in the middle: ``prompt`` is the text before the gap,
            ``suffix`` the text after it; the prompt is built with the model's
            FIM tokens as llama-server's ``/infill`` does (ValueError if the
            model has none).
        logits_processors: ``fn(input_ids, scores) -> scores`` callables
            (llama-cpp-python's), run on the full logits before the samplers.
        stopping_criteria: ``fn(input_ids, logits) -> bool`` callables
            (llama-cpp-python's), after each sampled token; True ends the
            request (``"stop"``) without that token.
        media: images/audio (paths, bytes, arrays, Bitmaps) for a text prompt
            holding ``llm.projector.marker`` once per medium (needs ``mmproj``).
        ``max_tokens=None`` generates until end of generation or a full context,
        ``max_tokens=0`` nothing (finish_reason ``"length"``); ``ignore_eos=True``
        bans the end-of-generation tokens (llama.cpp's ``--ignore-eos``).
        """
        sp = _proc.ban_eog(self.sampling_for(sampling, **overrides), self.vocab)
        prefill = _mm.prefill_for(self, prompt, media, add_special) if media else None
        if prefill is not None:
            tokens = prefill.tokens
        elif suffix is not None:
            tokens = _prompts.infill(self.vocab, prompt, suffix, n_batch=self.ctx.n_batch,
                                     n_predict=sp.max_tokens, n_ctx=self.ctx.n_ctx_seq)
        else:
            tokens = self.tokenize(prompt, add_special=add_special)
        procs = _proc.as_list(logits_processors, "logits_processors")
        stops = _proc.as_list(stopping_criteria, "stopping_criteria")
        made = None
        if procs:
            if sampler is not None:
                raise ValueError("give either sampler= or logits_processors=, not both (add a "
                                 "PythonSampler to your chain instead)")
            stage = _proc.LogitsProcessorStage(procs, tokens, self.vocab.n_tokens)
            sampler = made = chain_for(self.model, sp, first=[stage])
        try:
            return self.engine.submit(
                tokens, sp, cancel=cancel, timeout=timeout, context_shift=context_shift,
                sampler=sampler, echo=_prompts.echo_text(self.vocab, prompt) if echo else "",
                prompt_logprobs=sp.logprobs if echo else None,
                stopping=_proc.stopping_check(stops) if stops else None, media=prefill)
        except BaseException:
            if made is not None:
                made.close()
            if prefill is not None:
                prefill.close()
            raise

    def stream(self, prompt: str | bytes | Sequence[int], sampling: SamplingParams | None = None,
               **kw: Any) -> Stream:
        """Generate after ``prompt`` and yield text pieces as they come
        (:meth:`submit`'s parameters)."""
        return Stream(self.submit(prompt, sampling, **kw))

    def complete(self, prompt: str | bytes | Sequence[int],
                 sampling: SamplingParams | None = None, **kw: Any) -> Completion:
        """The whole :class:`Completion` of ``prompt`` (:meth:`submit`'s parameters)."""
        return self.submit(prompt, sampling, **kw).result()

    def chat_stream(self, messages: Sequence[Mapping[str, Any]],
                    sampling: SamplingParams | None = None, *, template: str | None = None,
                    tools: Sequence[Mapping[str, Any]] | None = None, tool_choice: Any = None,
                    chat_template_kwargs: Mapping[str, Any] | None = None,
                    **kw: Any) -> Stream:
        """Stream the assistant's reply to ``messages`` (:meth:`chat`'s parameters);
        the raw text streams, and ``stream.completion`` has ``content`` and
        ``tool_calls`` parsed at the end."""
        messages, media = _mm.split(self, messages)  # images/audio -> markers
        if media:
            kw["media"] = media
        prep, kw = _tools.chat_overrides(self.model, messages, sampling or self.sampling, kw,
                                         template=template, tools=tools,
                                         tool_choice=tool_choice,
                                         template_kwargs=chat_template_kwargs)
        return ChatStream(self.submit(prep.prompt, sampling, **kw), prep.family)

    def chat(self, messages: Sequence[Mapping[str, Any]],
             sampling: SamplingParams | None = None, *, template: str | None = None,
             tools: Sequence[Mapping[str, Any]] | None = None, tool_choice: Any = None,
             chat_template_kwargs: Mapping[str, Any] | None = None,
             **kw: Any) -> Completion:
        """The assistant's reply to ``messages`` (OpenAI-shaped: text or text-part
        content, assistant ``tool_calls``, ``tool`` results); accepts
        :meth:`submit`'s parameters.

        template: see :meth:`apply_chat_template`.
        tools: OpenAI-shaped function tools (llama-server's ``tools``).
        tool_choice: ``"auto"`` (default with tools), ``"none"``, ``"required"``
            or ``{"type": "function", "function": {"name": ...}}``; required and
            named calls are enforced with a grammar (see
            :mod:`~llama_cffi.api.tool_choice`). With a ``json_schema`` too,
            ``"auto"`` allows a call or a reply that follows the schema (one
            grammar: ``content`` is then the schema's JSON), a forced call
            ignores the schema, and ``"none"`` follows the schema alone.
        chat_template_kwargs: extra template variables (``--chat-template-kwargs``).

        The Completion's ``text`` is the raw reply, ``content`` the text without
        tool-call markup, ``tool_calls`` the parsed calls (:class:`ToolCall`).
        """
        messages, media = _mm.split(self, messages)  # images/audio -> markers
        if media:
            kw["media"] = media
        prep, kw = _tools.chat_overrides(self.model, messages, sampling or self.sampling, kw,
                                         template=template, tools=tools,
                                         tool_choice=tool_choice,
                                         template_kwargs=chat_template_kwargs)
        handle = self.submit(prep.prompt, sampling, **kw)
        return _tools.finish_chat(handle.result(), prep.family)

    def generate_batch(self, prompts: Sequence[str | Sequence[int]],
                       sampling: SamplingParams | None = None,
                       **overrides: Any) -> list[Completion]:
        """Several prompts at once, as requests to the engine: up to ``n_seq_max``
        (``n_parallel``) run together, the rest wait for a free slot. With
        greedy sampling each result equals running its prompt alone."""
        handles = [self.submit(p, sampling, **overrides) for p in prompts]
        try:
            return [h.result() for h in handles]
        finally:
            for h in handles:
                h.cancel()

    @property
    def metrics(self) -> EngineMetrics:
        """The engine's counters (requests, tokens, cache hits, KV cells used)."""
        return self.engine.metrics

    def embed(self, texts: str | Sequence[str], *, normalize: bool = True,
              pooling: str | None = None, truncate: bool = False,
              n_batch: int | None = None) -> np.ndarray | list[np.ndarray]:
        """Embeddings of ``texts`` (a str gives one row), batched over sequences.

        pooling: ``"mean"``, ``"cls"``, ``"last"`` or ``"none"`` (token
            vectors); default the model's own. Works for embedding models and,
            with a pooling type, for generative models.
        normalize: L2-normalise (llama.cpp's ``--embd-normalize 2``).
        """
        single = isinstance(texts, (str, bytes))
        items = [texts] if isinstance(texts, (str, bytes)) else list(texts)
        key = (pooling, n_batch)

        def run() -> np.ndarray | list[np.ndarray]:  # on the engine thread: one thread pool per model
            if self._embedder is None or self._embedder_key != key:
                if self._embedder is not None:
                    self._embedder.close()
                self._embedder = Embedder(self.model, pooling=pooling,
                                          n_batch=n_batch or max(512, self.ctx.n_batch),
                                          n_threads=self.ctx.n_threads)
                self._embedder_key = key
            return self._embedder.embed(items, normalize=normalize, truncate=truncate)

        result = self.engine.call(run)
        if single:
            return result[0]
        return result

    # -- state, prompt cache, adapters ---------------------------------------------------------

    def save_state(self) -> LLMState:
        """The KV cache of the slot used last and the tokens it holds (taken on
        the engine thread between steps); :meth:`load_state` puts it back."""
        return _state.save(self.engine, self.model)

    def load_state(self, state: LLMState) -> None:
        """Load a :meth:`save_state` state into a free slot: the next prompt that
        starts with its tokens evaluates only the rest (a greedy continuation is
        the same as before saving). LlamaError for a state of another model."""
        _state.load(self.engine, self.model, state)

    @property
    def cache(self) -> PromptCache | None:
        """The prompt cache set with :meth:`set_cache`, or None."""
        return self._cache

    _cache: PromptCache | None = None

    def set_cache(self, cache: PromptCache | None) -> None:
        """Use a prompt cache (:class:`~llama_cffi.api.prompt_cache.RamPromptCache`,
        :class:`~llama_cffi.api.prompt_cache.DiskPromptCache`) for later requests,
        or None for none: each request's state is stored at its end, and a
        request starts from the cached state sharing the longest prefix with
        its prompt when that beats what the slots hold."""
        if cache is not None and not isinstance(cache, PromptCache):
            raise TypeError(f"cache must be a PromptCache or None, got {type(cache).__name__}")
        bridge = None if cache is None else EngineCache(cache, _state.model_key(self.model))

        def run() -> None:
            self.engine.prompt_cache = bridge

        self.engine.call(run)
        self._cache = cache

    def set_loras(self, adapters: Mapping[Any, float]) -> None:
        """``ctx.set_loras`` on the engine thread, between requests' steps; the
        slots forget their cached prefixes (computed without these adapters)."""
        self.engine.call(lambda: self.ctx.set_loras(adapters))

    def set_control_vector(self, data: np.ndarray | None, il_start: int = 1,
                           il_end: int | None = None) -> None:
        """``ctx.set_control_vector`` on the engine thread (see :meth:`set_loras`)."""
        self.engine.call(lambda: self.ctx.set_control_vector(data, il_start, il_end))

    # -- asyncio ---------------------------------------------------------------------------------
    # The engine thread does the work; these only wait for its events.

    async def acomplete(self, prompt: str | bytes | Sequence[int],
                        sampling: SamplingParams | None = None, **kw: Any) -> Completion:
        """:meth:`complete` without blocking the event loop; cancelling the task
        cancels the request."""
        return await self.submit(prompt, sampling, **kw)

    async def achat(self, messages: Sequence[Mapping[str, Any]],
                    sampling: SamplingParams | None = None, *, template: str | None = None,
                    tools: Sequence[Mapping[str, Any]] | None = None, tool_choice: Any = None,
                    chat_template_kwargs: Mapping[str, Any] | None = None,
                    **kw: Any) -> Completion:
        """:meth:`chat` without blocking the event loop."""
        messages, media = _mm.split(self, messages)  # images/audio -> markers
        if media:
            kw["media"] = media
        prep, kw = _tools.chat_overrides(self.model, messages, sampling or self.sampling, kw,
                                         template=template, tools=tools,
                                         tool_choice=tool_choice,
                                         template_kwargs=chat_template_kwargs)
        completion = await self.submit(prep.prompt, sampling, **kw)
        return _tools.finish_chat(completion, prep.family)

    async def astream(self, prompt: str | bytes | Sequence[int],
                      sampling: SamplingParams | None = None,
                      **kw: Any) -> AsyncIterator[str]:
        """:meth:`stream` as an async iterator."""
        async for piece in self.submit(prompt, sampling, **kw):
            yield piece

    def __repr__(self) -> str:
        return f"<LLM {self.model!r} n_ctx={self.ctx.n_ctx}>"

