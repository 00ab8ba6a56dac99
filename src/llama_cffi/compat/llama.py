"""``Llama``: llama-cpp-python 0.3's ``Llama`` class on top of :class:`llama_cffi.LLM`.

>>> from llama_cffi.compat import Llama                          # doctest: +SKIP
>>> llm = Llama(model_path="model.gguf", n_ctx=2048, seed=1)
>>> llm("Q: Name the planets. A: ", max_tokens=32, stop=["Q:", "\\n"])["choices"][0]["text"]
>>> llm.create_chat_completion(messages=[{"role": "user", "content": "Hi"}])

Everything runs through one :class:`~llama_cffi.LLM` (``Llama.llm``) and its
engine thread: completions, chat, streaming, the low-level
``eval``/``sample``/``generate`` loop (one engine request per evaluated
batch, so the KV cache and prefix reuse are the engine's), states and prompt
caches. Results are the OpenAI-shaped dicts of llama-cpp-python
(:mod:`llama_cffi.compat.llama_types`).

Differences from llama-cpp-python, on purpose: unknown constructor or call
keywords raise TypeError (llama-cpp-python ignored them); ``logits_all`` is
not needed for ``logprobs``; ``chat_handler`` takes only the vision
handlers (``Llava15ChatHandler(clip_model_path=...)`` and its siblings in
:mod:`llama_cffi.compat.llama_chat_format`: the projector goes to llama.cpp's
libmtmd, the prompt comes from the model's template), and ``tokenizer`` is not
supported (ValueError); llama.cpp's log goes to the ``logging`` module;
``scores`` holds only the last evaluated logits. The object closes itself
when collected, as llama-cpp-python's does; ``close()`` or ``with`` frees
the model at a known time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..api.llm import LLM
from ..errors import LlamaError
from ..objects.lora import LoraAdapter
from ..objects.model import Model
from ..objects.params import ModelParams
from ._chat import ChatOptions, create_chat_completion
from ._completion import CompletionOptions, options
from ._completion import create_completion as _create_completion
from ._lowlevel import eval_tokens as _eval_tokens
from ._lowlevel import generate as _generate
from ._lowlevel import load_state as _load_state
from ._lowlevel import sample as _sample
from ._lowlevel import save_state as _save_state
from ._options import parse
from .llama_cache import BaseLlamaCache
from .state import LlamaState, as_int_array, common_prefix


class Llama:
    """llama-cpp-python's ``Llama`` (0.3): a model, one context and its calls.

    model_path: the GGUF file (the first part of a split GGUF), or a registry
        name of :mod:`llama_cffi.models`.
    kwargs: llama-cpp-python's constructor keywords (``n_ctx=512``,
        ``n_gpu_layers=0``, ``n_batch=512``, ``seed``, ``chat_format``,
        ``lora_path``, ``draft_model``, ``flash_attn``, ``type_k`` ...; see
        docs/migrating.md for where each goes) or any field of llama_cffi's
        parameter classes.
    """

    def __init__(self, model_path: str | os.PathLike[str], **kwargs: Any) -> None:
        self._llm: LLM | None = None
        self._vocab_model: Model | None = None
        self._lora: LoraAdapter | None = None
        opts = parse(kwargs)
        self.model_path = os.fspath(model_path)
        self.verbose = opts.verbose
        self.chat_format = opts.chat_format
        self.lora_path, self.lora_scale = opts.lora_path, opts.lora_scale
        self.draft_model = opts.draft_model
        self.spm_infill = opts.spm_infill
        self._logits_all = opts.logits_all
        self._seed = opts.seed
        self.cache: BaseLlamaCache | None = None
        self._history: list[int] = []
        self._scores: np.ndarray | None = None
        if opts.vocab_only:
            model_kw = {k: v for k, v in opts.llm_kwargs.items() if k in ModelParams.field_names()
                        or k in ("use_mmap", "use_mlock")}
            self._vocab_model = Model(self.model_path,
                                      ModelParams.from_kwargs(None, **model_kw))
            self._n_ctx = int(opts.llm_kwargs.get("n_ctx") or self._vocab_model.n_ctx_train)
            model = self._vocab_model
        else:
            llm_kw = dict(opts.llm_kwargs)
            draft = opts.draft_model
            if isinstance(draft, (str, os.PathLike)):
                llm_kw["draft_model"] = draft
            elif draft is not None:
                if not callable(getattr(draft, "propose", None)):
                    raise TypeError("draft_model must be a LlamaPromptLookupDecoding (or another "
                                    "object with propose(history, last)), or a GGUF path")
                llm_kw["speculative"] = draft
            if opts.mmproj is not None:
                llm_kw["mmproj"] = opts.mmproj
            self._llm = LLM(self.model_path, **llm_kw)
            model = self._llm.model
            self._n_ctx = self._llm.ctx.n_ctx
            if self.lora_path is not None:
                self._apply_lora(self.lora_path, self.lora_scale)
        self._model = model
        self.metadata: dict[str, str] = model.metadata
        self._is_recurrent = model.is_recurrent
        self._is_hybrid = bool(getattr(model, "is_hybrid", False))
        if self.chat_format is not None and self._llm is not None:
            try:  # an unknown format name raises now, not at the first chat
                self._llm.apply_chat_template([{"role": "user", "content": "x"}],
                                              template=self.chat_format)
            except BaseException:
                self.close()
                raise

    def _apply_lora(self, path: str, scale: float) -> None:
        llm = self._require_llm()
        try:
            self._lora = LoraAdapter(llm.model, path)
            llm.set_loras({self._lora: scale})
        except BaseException:
            self.close()
            raise

    # -- what it wraps -----------------------------------------------------------------

    @property
    def llm(self) -> LLM:
        """The :class:`llama_cffi.LLM` doing the work (for the native API)."""
        return self._require_llm()

    def _require_llm(self) -> LLM:
        if self._llm is None:
            raise LlamaError("this Llama was loaded with vocab_only=True (or is closed): it "
                             "can tokenize, not generate")
        return self._llm

    # -- tokens -------------------------------------------------------------------------------

    def tokenize(self, text: bytes | str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of ``text`` (UTF-8 bytes; a str is accepted too). add_bos: add
        the BOS token if the model uses one; special: parse special-token text."""
        return self._model.vocab.tokenize(text, add_special=add_bos, parse_special=special)

    def _piece(self, token: int, special: bool = False) -> str:
        return self._model.vocab.token_to_piece(token, special=special).decode("utf-8", "replace")

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        """The bytes of ``tokens``; with ``prev_tokens``, only the part after them."""
        vocab = self._model.vocab

        def raw(toks: Sequence[int]) -> bytes:
            out = b"".join(vocab.token_to_piece(t, special=special) for t in toks)
            if toks and toks[0] == vocab.bos and out[:1] == b" ":
                out = out[1:]  # the space SentencePiece puts before the first word
            return out

        if prev_tokens:
            whole, before = raw([*prev_tokens, *tokens]), raw(prev_tokens)
            return whole[len(before):]
        return raw(tokens)

    def n_ctx(self) -> int:
        """Context size in tokens."""
        return self._n_ctx

    def n_embd(self) -> int:
        return self._model.n_embd

    def n_vocab(self) -> int:
        return self._model.vocab.n_tokens

    def token_eos(self) -> int:
        return _id(self._model.vocab.eos)

    def token_bos(self) -> int:
        return _id(self._model.vocab.bos)

    def token_nl(self) -> int:
        return _id(self._model.vocab.nl)

    def pooling_type(self) -> str:
        return self._require_llm().ctx.pooling.name.lower()

    # -- generation ----------------------------------------------------------------------------

    def create_completion(self, prompt: str | bytes | Sequence[int], suffix: str | None = None,
                          max_tokens: int | None = 16,
                          **kwargs: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Generate after ``prompt``; a ``text_completion`` dict, or with
        ``stream=True`` an iterator of chunks.

        max_tokens: None or <= 0 = until the end of generation or a full
        context. kwargs: ``temperature`` (0.8), ``top_p`` (0.95), ``min_p``
        (0.05), ``typical_p``, ``top_k`` (40), ``stop`` (a str or a list),
        ``echo``, ``logprobs`` (top-N per token), ``repeat_penalty``,
        ``frequency_penalty``, ``presence_penalty``, ``seed``,
        ``mirostat_mode``/``mirostat_tau``/``mirostat_eta``, ``grammar``
        (:class:`LlamaGrammar`), ``logit_bias`` ({token: bias}),
        ``logits_processor``, ``stopping_criteria``, ``stream``, ``model``.
        """
        o = options(CompletionOptions, kwargs, "create_completion")
        return _create_completion(self, prompt, suffix, max_tokens, o)

    def __call__(self, prompt: str | bytes | Sequence[int], suffix: str | None = None,
                 max_tokens: int | None = 16,
                 **kwargs: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """:meth:`create_completion`."""
        o = options(CompletionOptions, kwargs, "__call__")
        return _create_completion(self, prompt, suffix, max_tokens, o)

    def create_chat_completion(self, messages: Sequence[dict[str, Any]],
                               **kwargs: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """The assistant's reply to ``messages``: a ``chat.completion`` dict, or
        with ``stream=True`` an iterator of ``chat.completion.chunk`` deltas.

        kwargs: the sampling keywords of :meth:`create_completion`
        (``temperature`` 0.2 here, ``max_tokens`` None), ``tools`` and
        ``tool_choice`` (``"auto"``, ``"none"``, ``"required"`` or a named
        function; calls come back in ``message["tool_calls"]``),
        ``functions``/``function_call`` (deprecated forms), ``response_format``
        (``{"type": "json_object"}`` with an optional ``"schema"``),
        ``logprobs`` (bool) and ``top_logprobs``.
        """
        o = options(ChatOptions, kwargs, "create_chat_completion")
        return create_chat_completion(self, messages, o)

    def create_embedding(self, input: str | Sequence[str],
                         model: str | None = None) -> dict[str, Any]:
        """OpenAI's embeddings response for one text or a list of texts."""
        texts = [input] if isinstance(input, str) else list(input)
        vectors = self.embed(texts)
        n = sum(len(self.tokenize(t.encode("utf-8"))) for t in texts)
        return {"object": "list", "model": model if model is not None else self.model_path,
                "data": [{"object": "embedding", "embedding": v, "index": i}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": n, "total_tokens": n}}

    def embed(self, input: str | Sequence[str], normalize: bool = False, truncate: bool = True,
              return_count: bool = False) -> Any:
        """Embeddings as lists of floats: one list for a str, a list of lists for
        a list (pooling ``none``: one list per token). With ``return_count``,
        also the number of tokens."""
        llm = self._require_llm()
        single = isinstance(input, str)
        texts = [input] if isinstance(input, str) else list(input)
        result = llm.embed(texts, normalize=normalize, truncate=truncate)
        rows = [np.asarray(r).tolist() for r in result]
        out: Any = rows[0] if single else rows
        if return_count:
            count = sum(len(self.tokenize(t.encode("utf-8"))) for t in texts)
            return out, count
        return out

    # -- low level (llama-cpp-python's eval/sample/generate) ------------------------------------

    @property
    def n_tokens(self) -> int:
        """How many tokens :meth:`eval` has put in the context."""
        return len(self._history)

    @property
    def input_ids(self) -> np.ndarray:
        """The evaluated tokens (int32)."""
        return as_int_array(self._history)

    @property
    def _input_ids(self) -> np.ndarray:
        return self.input_ids

    @property
    def scores(self) -> np.ndarray:
        """The logits of the last evaluated token, shape (1, n_vocab) (empty before any)."""
        if self._scores is None:
            return np.zeros((0, self.n_vocab()), dtype=np.single)
        return self._scores

    def reset(self) -> None:
        """Forget the evaluated tokens (the KV cache is reused by prefix anyway)."""
        self._history = []

    def set_seed(self, seed: int) -> None:
        self._seed = int(seed) & 0xFFFFFFFF

    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluate ``tokens`` after those already evaluated (one engine request)."""
        _eval_tokens(self, tokens)

    def sample(self, **kwargs: Any) -> int:
        """Pick the next token from the last evaluated logits (llama-cpp-python's
        keywords: ``temp``, ``top_k``, ``top_p``, ``min_p``, ``typical_p``,
        ``repeat_penalty``, ``frequency_penalty``, ``presence_penalty``,
        ``mirostat_mode``, ``logits_processor``, ``grammar``, ``idx``)."""
        return _sample(self, kwargs)

    def generate(self, tokens: Sequence[int], **kwargs: Any) -> Iterator[int]:
        """Yield tokens one by one after ``tokens`` (eval, sample, repeat); the
        keywords of :meth:`sample` plus ``reset``, ``stopping_criteria``."""
        return _generate(self, tokens, kwargs)

    # -- states and caches ----------------------------------------------------------------------

    def save_state(self) -> LlamaState:
        """The KV cache of the context, its tokens, the last logits and the seed."""
        return _save_state(self)

    def load_state(self, state: LlamaState) -> None:
        """Restore a :meth:`save_state` (same model and context size)."""
        _load_state(self, state)

    def set_cache(self, cache: BaseLlamaCache | None) -> None:
        """Save a state after every completion into ``cache`` and start from the
        cached state with the longest common prefix (:class:`LlamaRAMCache`,
        :class:`LlamaDiskCache`); None turns it off."""
        if cache is not None and not isinstance(cache, BaseLlamaCache):
            raise TypeError(f"cache must be a LlamaRAMCache or LlamaDiskCache, got "
                            f"{type(cache).__name__}")
        self.cache = cache

    def _use_cache(self, prompt_tokens: list[int]) -> None:
        if self.cache is None:
            return
        try:
            item = self.cache[prompt_tokens]
        except KeyError:
            return
        if common_prefix(item.tokens, prompt_tokens) > common_prefix(self._history,
                                                                     prompt_tokens):
            self.load_state(item)

    def _save_cache(self, key: list[int]) -> None:
        if self.cache is not None:
            self.cache[key] = self.save_state()

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the engine and free the context and the model (idempotent)."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()
        lora, self._lora = getattr(self, "_lora", None), None
        if lora is not None:
            lora.close()
        vm, self._vocab_model = getattr(self, "_vocab_model", None), None
        if vm is not None:
            vm.close()

    def __del__(self) -> None:
        # llama-cpp-python frees a Llama when it is collected; scripts rely on it
        self.close()

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def logits_to_logprobs(logits: Any, axis: int = -1) -> np.ndarray:
        """log-softmax of ``logits`` along ``axis``."""
        x = np.asarray(logits, dtype=np.single)
        m = np.amax(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        shifted = x - m
        with np.errstate(divide="ignore"):
            return np.asarray(shifted - np.log(np.sum(np.exp(shifted), axis=axis,
                                                      keepdims=True)), dtype=np.single)

    @staticmethod
    def longest_token_prefix(a: Sequence[int], b: Sequence[int]) -> int:
        return common_prefix(a, b)

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str | None,
                        additional_files: Sequence[str] | None = None,
                        local_dir: str | os.PathLike[str] | None = None,
                        cache_dir: str | os.PathLike[str] | None = None,
                        **kwargs: Any) -> Llama:
        """Download a GGUF from the Hugging Face Hub (``filename`` may be a glob;
        all parts of a split GGUF come too) and load it; needs ``huggingface_hub``
        (``pip install 'llama-cffi[hf]'``)."""
        from ..objects import hub

        kwargs.pop("local_dir_use_symlinks", None)  # no longer used by huggingface_hub
        path = hub.download(repo_id, filename or "*.gguf", additional_files=additional_files,
                            local_dir=local_dir, cache_dir=cache_dir)
        return cls(model_path=path, **kwargs)

    def __repr__(self) -> str:
        return f"<compat.Llama {self.model_path!r} n_ctx={self._n_ctx}>"


def _id(token: int | None) -> int:
    return -1 if token is None else int(token)
