"""An inference context on a model (``llama_context``): KV cache, decode, logits."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from . import _log
from ._callbacks import CallbackState
from ._ffi import ffi, lib
from ._handle import Handle
from .batch import Batch
from .enums import EnumLike, FlashAttn, GGMLType, PoolingType, RopeScaling, parse_enum
from .errors import (
    ContextError,
    ContextFullError,
    DecodeAbortedError,
    DecodeError,
    InvalidBatchError,
    LlamaError,
    NoKvSlotError,
)
from .model import Model

if TYPE_CHECKING:
    from .lora import LoraAdapter

_QUANTIZED_KV = {GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.IQ4_NL,
                 GGMLType.Q5_0, GGMLType.Q5_1}


def _free_context(ptr: Any, model: Model) -> None:
    # ``model`` rides along so the Model is freed only after its contexts.
    lib.llama_free(ptr)


_F = TypeVar("_F", bound=Callable[..., Any])


def _exclusive(method: _F) -> _F:
    """Run a Context method only while no other thread uses the context
    (decode, memory, state and outputs all touch the same C object)."""

    @functools.wraps(method)
    def wrapper(self: Context, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._lock.release()

    return wrapper  # type: ignore[return-value]


def default_threads() -> int:
    """Threads llama_cffi uses by default: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class Context(Handle):
    """A context: the KV cache and compute buffers for running a model.

    Parameters are those of ``llama_context_params``; ``None`` keeps
    llama.cpp's default. The llama.cpp flag is in brackets.

    n_ctx: context size in tokens, 0 = the model's training context [``-c``].
    n_batch: most tokens one ``decode`` call may submit [``-b``].
    n_ubatch: physical batch size, the tokens computed at once [``-ub``].
    n_seq_max: number of distinct sequences (parallel streams) [``-np``].
    n_threads: threads for generation; default: the CPUs available [``-t``].
    n_threads_batch: threads for prompt processing; default n_threads [``-tb``].
    flash_attn: ``"auto"``, ``"on"`` or ``"off"`` [``-fa``].
    type_k, type_v: KV cache data types: ``f32``, ``f16``, ``bf16``, ``q8_0``,
        ``q4_0``, ``q4_1``, ``iq4_nl``, ``q5_0``, ``q5_1`` [``-ctk``, ``-ctv``].
        A quantized V cache needs Flash Attention.
    rope_scaling: ``"none"``, ``"linear"``, ``"yarn"``, ``"longrope"`` [``--rope-scaling``].
    rope_freq_base, rope_freq_scale: RoPE base frequency and scale factor,
        0 = from the model [``--rope-freq-base``, ``--rope-freq-scale``].
    yarn_ext_factor, yarn_attn_factor, yarn_beta_fast, yarn_beta_slow,
        yarn_orig_ctx: YaRN parameters [``--yarn-*``].
    embeddings: also extract embeddings [``--embeddings``].
    pooling: embedding pooling, ``"none"``, ``"mean"``, ``"cls"``, ``"last"``,
        ``"rank"`` [``--pooling``].
    attention: ``"causal"`` or ``"non_causal"`` for embeddings [``--attention``].
    offload_kqv: keep the KV cache and attention on the device
        [``--no-kv-offload`` turns it off].
    op_offload: offload host tensor operations to the device
        [``--no-op-offload`` turns it off].
    swa_full: full-size cache for sliding-window attention [``--swa-full``].
    kv_unified: one KV buffer shared by all sequences [``--kv-unified``].
    no_perf: do not measure performance timings.
    abort_callback: called during computation; returning True aborts the
        current decode (which then raises DecodeAbortedError).

    A context is used by one thread at a time: a second thread calling
    ``decode`` (or any memory, state or output method) while another is busy
    with it gets a LlamaError instead of racing it.
    """

    def __init__(
        self,
        model: Model,
        *,
        n_ctx: int | None = None,
        n_batch: int | None = None,
        n_ubatch: int | None = None,
        n_seq_max: int | None = None,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        flash_attn: EnumLike | bool | None = None,
        type_k: EnumLike | None = None,
        type_v: EnumLike | None = None,
        rope_scaling: EnumLike | None = None,
        rope_freq_base: float | None = None,
        rope_freq_scale: float | None = None,
        yarn_ext_factor: float | None = None,
        yarn_attn_factor: float | None = None,
        yarn_beta_fast: float | None = None,
        yarn_beta_slow: float | None = None,
        yarn_orig_ctx: int | None = None,
        embeddings: bool | None = None,
        pooling: EnumLike | None = None,
        attention: str | None = None,
        offload_kqv: bool | None = None,
        op_offload: bool | None = None,
        swa_full: bool | None = None,
        kv_unified: bool | None = None,
        no_perf: bool | None = None,
        abort_callback: Callable[[], bool] | None = None,
    ) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"model must be a llama_cffi.Model, not {type(model).__name__}")
        if model.vocab_only:
            raise ContextError("cannot create a context on a vocab_only model: it has no weights")
        p = lib.llama_context_default_params()
        for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_ubatch", n_ubatch),
                            ("n_seq_max", n_seq_max)):
            if value is not None:
                if int(value) < 0 or (name != "n_ctx" and int(value) < 1):
                    raise ValueError(f"{name} must be positive, got {value}")
                setattr(p, name, int(value))
        if p.n_seq_max > lib.llama_max_parallel_sequences():
            raise ValueError(f"n_seq_max is at most {lib.llama_max_parallel_sequences()}")
        threads = default_threads() if n_threads is None else int(n_threads)
        if threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        threads_batch = threads if n_threads_batch is None else int(n_threads_batch)
        if threads_batch < 1:
            raise ValueError(f"n_threads_batch must be >= 1, got {n_threads_batch}")
        p.n_threads = threads
        p.n_threads_batch = threads_batch
        if flash_attn is not None:
            p.flash_attn_type = parse_enum(FlashAttn, flash_attn, "flash_attn")
        if type_k is not None:
            p.type_k = parse_enum(GGMLType, type_k, "type_k")
        if type_v is not None:
            p.type_v = parse_enum(GGMLType, type_v, "type_v")
            if (p.type_v in _QUANTIZED_KV
                    and p.flash_attn_type == lib.LLAMA_FLASH_ATTN_TYPE_DISABLED):
                raise ValueError(
                    f"a quantized V cache (type_v={GGMLType(p.type_v).name.lower()}) needs "
                    "Flash Attention: use flash_attn='auto' or 'on', or an f16 V cache")
        if rope_scaling is not None:
            p.rope_scaling_type = parse_enum(RopeScaling, rope_scaling, "rope_scaling")
        for name, fvalue in (("rope_freq_base", rope_freq_base),
                             ("rope_freq_scale", rope_freq_scale),
                             ("yarn_ext_factor", yarn_ext_factor),
                             ("yarn_attn_factor", yarn_attn_factor),
                             ("yarn_beta_fast", yarn_beta_fast),
                             ("yarn_beta_slow", yarn_beta_slow)):
            if fvalue is not None:
                setattr(p, name, float(fvalue))
        if yarn_orig_ctx is not None:
            p.yarn_orig_ctx = int(yarn_orig_ctx)
        if embeddings is not None:
            p.embeddings = bool(embeddings)
        if pooling is not None:
            p.pooling_type = parse_enum(PoolingType, pooling, "pooling")
        if attention is not None:
            kinds = {"causal": lib.LLAMA_ATTENTION_TYPE_CAUSAL,
                     "non_causal": lib.LLAMA_ATTENTION_TYPE_NON_CAUSAL,
                     "non-causal": lib.LLAMA_ATTENTION_TYPE_NON_CAUSAL}
            if attention not in kinds:
                raise ValueError(f"attention must be 'causal' or 'non_causal', got {attention!r}")
            p.attention_type = kinds[attention]
        for name, flag in (("offload_kqv", offload_kqv), ("op_offload", op_offload),
                           ("swa_full", swa_full), ("kv_unified", kv_unified),
                           ("no_perf", no_perf)):
            if flag is not None:
                setattr(p, name, bool(flag))
        self._abort: CallbackState | None = None
        if abort_callback is not None:
            self._abort = CallbackState(abort_callback)
            p.abort_callback = lib._llama_cffi_abort
            p.abort_callback_data = self._abort.handle

        mark = _log.mark()
        with _log.collect() as lines:
            ptr = lib.llama_init_from_model(model.ptr, p)
        if ptr == ffi.NULL:
            raise ContextError("failed to create the context", log=_log.problems_since(mark))
        self._own(ptr, _free_context, model)
        model._adopt(self)
        self.model = model
        self.vocab = model.vocab
        self._n_vocab = model.vocab.n_tokens
        self._n_embd = model.n_embd
        self._batch: Batch | None = None
        self._lock = threading.RLock()  # reentrant: shift() calls seq_rm()
        self._loras: dict[LoraAdapter, float] = {}
        self.buffers: dict[str, dict[str, int]] = {
            kind: _log.buffer_sizes(lines, kind) for kind in ("KV", "RS", "compute", "output")}
        """Bytes per buffer type of the KV cache, recurrent state, compute and
        output buffers, as llama.cpp reported them when creating the context."""

    # -- sizes ---------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return lib.llama_n_ctx(self.ptr)

    @property
    def n_ctx_seq(self) -> int:
        """Context size available to one sequence."""
        return lib.llama_n_ctx_seq(self.ptr)

    @property
    def n_batch(self) -> int:
        return lib.llama_n_batch(self.ptr)

    @property
    def n_ubatch(self) -> int:
        return lib.llama_n_ubatch(self.ptr)

    @property
    def n_seq_max(self) -> int:
        return lib.llama_n_seq_max(self.ptr)

    @property
    def n_threads(self) -> int:
        return int(lib.llama_n_threads(self.ptr))

    @property
    def n_threads_batch(self) -> int:
        return int(lib.llama_n_threads_batch(self.ptr))

    @_exclusive
    def set_threads(self, n_threads: int, n_threads_batch: int | None = None) -> None:
        if n_threads < 1 or (n_threads_batch is not None and n_threads_batch < 1):
            raise ValueError("thread counts must be >= 1")
        lib.llama_set_n_threads(self.ptr, n_threads,
                                n_threads if n_threads_batch is None else n_threads_batch)

    @property
    def kv_cache_size(self) -> int:
        """Bytes of the KV cache over all devices."""
        return sum(self.buffers["KV"].values())

    @property
    def pooling(self) -> PoolingType:
        return PoolingType(lib.llama_pooling_type(self.ptr))

    # -- evaluation -----------------------------------------------------------

    def _enter(self) -> Any:
        ctx = self.ptr
        if not self._lock.acquire(False):
            raise LlamaError("this context is being used by another thread; "
                             "use one context per thread or serialise the calls")
        return ctx

    def decode(self, batch: Batch) -> None:
        """Run the model on ``batch`` (``llama_decode``).

        Raises NoKvSlotError (code 1, recoverable), DecodeAbortedError (2),
        InvalidBatchError (-1) or DecodeError (other codes).
        """
        self._run(lib.llama_decode, "decode", batch)

    def encode(self, batch: Batch) -> None:
        """Run the encoder on ``batch`` (``llama_encode``; encoder-decoder and
        embedding models)."""
        self._run(lib.llama_encode, "encode", batch)

    def _run(self, fn: Any, what: str, batch: Batch) -> None:
        struct = batch.struct  # raises ClosedError for a closed batch
        if struct.n_tokens == 0:
            raise InvalidBatchError(f"cannot {what} an empty batch", code=-1)
        ctx = self._enter()
        try:
            mark = _log.mark()
            rc = fn(ctx, struct)
        finally:
            self._lock.release()
        if rc != 0:
            self._raise_decode(rc, what, batch, _log.problems_since(mark))

    def _raise_decode(self, rc: int, what: str, batch: Batch, log: str) -> None:
        abort = self._abort
        if rc == 2 and abort is not None and abort.error is not None:
            err = abort.error
            abort.error = None
            raise DecodeAbortedError(
                f"{what}: aborted because the abort callback raised {type(err).__name__}: {err}",
                code=rc, log=log) from err
        if rc == 1:
            raise NoKvSlotError(
                f"{what}: no KV cache slot for a batch of {batch.n_tokens} tokens "
                f"(context size {self.n_ctx}); free space or use a larger n_ctx",
                code=rc, log=log)
        if rc == 2:
            raise DecodeAbortedError(f"{what}: aborted by the abort callback", code=rc, log=log)
        if rc == -1:
            raise InvalidBatchError(
                f"{what}: invalid batch (token ids, positions or sequence ids out of range, "
                "or positions not following the sequence)", code=rc, log=log)
        raise DecodeError(f"{what}: llama.cpp failed with code {rc}", code=rc, log=log)

    def _scratch_batch(self) -> Batch:
        b = self._batch
        if b is None or b.closed:
            b = self._batch = Batch(self.n_batch)
        return b

    def eval_tokens(self, tokens: Sequence[int], start_pos: int, *, seq_id: int = 0) -> None:
        """Evaluate a token list in chunks of n_batch; logits of the last token are kept."""
        n = len(tokens)
        if n == 0:
            return
        check = self.vocab.check_token
        for t in tokens:
            check(t)
        if not 0 <= seq_id < self.n_seq_max:
            raise ValueError(f"seq_id {seq_id} is outside 0..{self.n_seq_max - 1}")
        if start_pos + n > self.n_ctx_seq:
            raise ContextFullError(
                f"{start_pos + n} tokens do not fit the context of {self.n_ctx_seq} tokens "
                "per sequence; create the context with a larger n_ctx")
        batch = self._scratch_batch()
        step = batch.capacity
        for i in range(0, n, step):
            chunk = tokens[i:i + step]
            batch.set_tokens(chunk, start_pos + i, seq_id=seq_id, output_last=(i + step >= n))
            self.decode(batch)

    @_exclusive
    def logits(self, i: int = -1) -> np.ndarray:
        """Logits for the token at index ``i`` of the last batch (it must have
        been marked as output); negative ``i`` counts the outputs from the end.

        A numpy view on llama.cpp's buffer, no copy: valid until the next
        decode on this context or its close. Copy it to keep it.
        """
        ptr = lib.llama_get_logits_ith(self.ptr, i)
        if ptr == ffi.NULL:
            raise LlamaError(f"no logits for output {i}: was it marked as output in the batch?")
        return np.frombuffer(ffi.buffer(ptr, self._n_vocab * 4), dtype=np.float32)

    @_exclusive
    def embeddings(self, i: int = -1) -> np.ndarray:
        """Embedding for the token at batch index ``i`` (context created with
        ``embeddings=True``); negative ``i`` counts the outputs from the end.

        A view without copy, valid until the next decode (see :meth:`logits`).
        """
        ptr = lib.llama_get_embeddings_ith(self.ptr, i)
        if ptr == ffi.NULL:
            raise LlamaError(f"no embedding for output {i}: create the context with "
                             "embeddings=True and mark the token as output")
        return np.frombuffer(ffi.buffer(ptr, self._n_embd * 4), dtype=np.float32)

    @_exclusive
    def seq_embeddings(self, seq_id: int = 0) -> np.ndarray:
        """Pooled embedding of sequence ``seq_id`` (pooling other than ``none``)."""
        ptr = lib.llama_get_embeddings_seq(self.ptr, seq_id)
        if ptr == ffi.NULL:
            raise LlamaError(f"no pooled embedding for sequence {seq_id} (is pooling 'none'?)")
        n = self._n_embd if self.pooling != PoolingType.RANK else \
            max(1, int(lib.llama_model_n_cls_out(self.model.ptr)))
        return np.frombuffer(ffi.buffer(ptr, n * 4), dtype=np.float32)

    # -- memory (KV cache) ----------------------------------------------------

    def _mem(self) -> Any:
        return lib.llama_get_memory(self.ptr)

    @_exclusive
    def clear(self, data: bool = True) -> None:
        """Forget all tokens of all sequences (``llama_memory_clear``)."""
        lib.llama_memory_clear(self._mem(), data)

    def _check_seq(self, seq_id: int, allow_all: bool = False) -> None:
        if allow_all and seq_id == -1:
            return
        if not 0 <= seq_id < self.n_seq_max:
            raise ValueError(f"seq_id {seq_id} is outside 0..{self.n_seq_max - 1}")

    @_exclusive
    def seq_rm(self, seq_id: int = -1, p0: int = -1, p1: int = -1) -> bool:
        """Remove positions [p0, p1) of ``seq_id`` (-1: all sequences / open ends).

        Returns False when the memory cannot remove a part of a sequence
        (recurrent models); removing whole sequences always works.
        """
        self._check_seq(seq_id, allow_all=True)
        return bool(lib.llama_memory_seq_rm(self._mem(), seq_id, p0, p1))

    @_exclusive
    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Make positions [p0, p1) of ``src`` also belong to ``dst`` (shares cells)."""
        self._check_seq(src)
        self._check_seq(dst)
        lib.llama_memory_seq_cp(self._mem(), src, dst, p0, p1)

    @_exclusive
    def seq_keep(self, seq_id: int) -> None:
        """Remove every sequence except ``seq_id``."""
        self._check_seq(seq_id)
        lib.llama_memory_seq_keep(self._mem(), seq_id)

    @_exclusive
    def seq_add(self, seq_id: int, p0: int, p1: int, delta: int) -> None:
        """Shift positions [p0, p1) of ``seq_id`` by ``delta`` (RoPE is updated)."""
        self._check_seq(seq_id, allow_all=True)
        if not self.can_shift:
            raise LlamaError("this model's memory cannot shift positions")
        lib.llama_memory_seq_add(self._mem(), seq_id, p0, p1, delta)

    @_exclusive
    def seq_div(self, seq_id: int, p0: int, p1: int, d: int) -> None:
        """Divide positions [p0, p1) of ``seq_id`` by ``d`` (self-extend)."""
        self._check_seq(seq_id, allow_all=True)
        if d < 1:
            raise ValueError("d must be >= 1")
        if not self.can_shift:
            raise LlamaError("this model's memory cannot shift positions")
        lib.llama_memory_seq_div(self._mem(), seq_id, p0, p1, d)

    @_exclusive
    def seq_pos_min(self, seq_id: int = 0) -> int:
        """Smallest position stored for ``seq_id``, -1 if none."""
        self._check_seq(seq_id)
        return int(lib.llama_memory_seq_pos_min(self._mem(), seq_id))

    @_exclusive
    def seq_pos_max(self, seq_id: int = 0) -> int:
        """Largest position stored for ``seq_id``, -1 if none."""
        self._check_seq(seq_id)
        return int(lib.llama_memory_seq_pos_max(self._mem(), seq_id))

    @property
    def can_shift(self) -> bool:
        return bool(lib.llama_memory_can_shift(self._mem()))

    @_exclusive
    def shift(self, seq_id: int, n_keep: int, n_discard: int) -> int:
        """Context shift as llama.cpp does it: drop ``n_discard`` tokens after the
        first ``n_keep`` and move the rest back. Returns the new next position."""
        end = self.seq_pos_max(seq_id) + 1
        if n_keep < 0 or n_discard < 1 or n_keep + n_discard > end:
            raise ValueError(f"cannot discard {n_discard} tokens after {n_keep} "
                             f"from a sequence of {end}")
        if not self.seq_rm(seq_id, n_keep, n_keep + n_discard):
            raise LlamaError("this model's memory cannot remove part of a sequence")
        self.seq_add(seq_id, n_keep + n_discard, end, -n_discard)
        return end - n_discard

    # -- state -------------------------------------------------------------------

    @_exclusive
    def state_get(self) -> bytes:
        """The state of the context's memory (KV cache of all sequences) as bytes.

        At this llama.cpp the state holds the memory only, not the logits of
        the last decode: after restoring, evaluate the next token (keep the
        last prompt token out of the saved state and decode it afterwards).
        """
        ctx = self.ptr
        size = lib.llama_state_get_size(ctx)
        buf = ffi.new("uint8_t[]", size)
        n = lib.llama_state_get_data(ctx, buf, size)
        return ffi.unpack(ffi.cast("char *", buf), n)

    @_exclusive
    def state_set(self, data: bytes) -> None:
        """Restore a state from :meth:`state_get` (same model and context size)."""
        mark = _log.mark()
        n = lib.llama_state_set_data(self.ptr, data, len(data))
        if n == 0:
            raise LlamaError("could not restore the state (different model or context?)",
                             log=_log.problems_since(mark))

    @_exclusive
    def save_state(self, path: str | os.PathLike[str], tokens: Sequence[int] = ()) -> None:
        """Write the state and ``tokens`` (the prompt it holds) to a file."""
        arr = ffi.new("llama_token[]", list(tokens))
        mark = _log.mark()
        if not lib.llama_state_save_file(self.ptr, os.fsencode(path), arr, len(tokens)):
            raise LlamaError(f"could not save the state to {path}", log=_log.problems_since(mark))

    @_exclusive
    def load_state(self, path: str | os.PathLike[str], max_tokens: int | None = None) -> list[int]:
        """Restore a state file; returns the tokens saved with it."""
        cap = self.n_ctx if max_tokens is None else max_tokens
        if not Path(path).is_file():
            raise FileNotFoundError(f"state file not found: {path}")
        arr = ffi.new("llama_token[]", cap)
        count = ffi.new("size_t *")
        mark = _log.mark()
        if not lib.llama_state_load_file(self.ptr, os.fsencode(path), arr, cap, count):
            raise LlamaError(f"could not load the state from {path}",
                             log=_log.problems_since(mark))
        return ffi.unpack(arr, count[0])

    @_exclusive
    def seq_state_get(self, seq_id: int = 0) -> bytes:
        """The memory of one sequence as bytes."""
        self._check_seq(seq_id)
        ctx = self.ptr
        size = lib.llama_state_seq_get_size(ctx, seq_id)
        buf = ffi.new("uint8_t[]", size)
        n = lib.llama_state_seq_get_data(ctx, buf, size, seq_id)
        return ffi.unpack(ffi.cast("char *", buf), n)

    @_exclusive
    def seq_state_set(self, data: bytes, seq_id: int = 0) -> None:
        """Load :meth:`seq_state_get` bytes into sequence ``seq_id``."""
        self._check_seq(seq_id)
        mark = _log.mark()
        if lib.llama_state_seq_set_data(self.ptr, data, len(data), seq_id) == 0:
            raise LlamaError(f"could not restore sequence {seq_id} (no room, or other model?)",
                             log=_log.problems_since(mark))

    @_exclusive
    def save_seq_state(self, path: str | os.PathLike[str], seq_id: int = 0,
                       tokens: Sequence[int] = ()) -> None:
        self._check_seq(seq_id)
        arr = ffi.new("llama_token[]", list(tokens))
        mark = _log.mark()
        if lib.llama_state_seq_save_file(self.ptr, os.fsencode(path), seq_id, arr,
                                         len(tokens)) == 0:
            raise LlamaError(f"could not save sequence {seq_id} to {path}",
                             log=_log.problems_since(mark))

    @_exclusive
    def load_seq_state(self, path: str | os.PathLike[str], seq_id: int = 0,
                       max_tokens: int | None = None) -> list[int]:
        self._check_seq(seq_id)
        if not Path(path).is_file():
            raise FileNotFoundError(f"state file not found: {path}")
        cap = self.n_ctx if max_tokens is None else max_tokens
        arr = ffi.new("llama_token[]", cap)
        count = ffi.new("size_t *")
        mark = _log.mark()
        if lib.llama_state_seq_load_file(self.ptr, os.fsencode(path), seq_id, arr, cap,
                                         count) == 0:
            raise LlamaError(f"could not load sequence {seq_id} from {path}",
                             log=_log.problems_since(mark))
        return ffi.unpack(arr, count[0])

    # -- LoRA --------------------------------------------------------------------

    @_exclusive
    def set_loras(self, adapters: Mapping[LoraAdapter, float]) -> None:
        """Use exactly these LoRA adapters with these scales (``--lora-scaled``).

        Call again with other scales, or ``{}`` to remove them all: no model
        reload (as llama-server's ``/lora-adapters``).
        """
        items = list(adapters.items())
        for adapter, _ in items:
            if adapter.model is not self.model:
                raise ValueError("a LoRA adapter belongs to the model it was loaded for")
        ptrs = ffi.new("struct llama_adapter_lora *[]", [a.ptr for a, _ in items] or 1)
        scales = ffi.new("float[]", [float(s) for _, s in items] or 1)
        mark = _log.mark()
        rc = lib.llama_set_adapters_lora(self.ptr, ptrs, len(items), scales)
        if rc != 0:
            raise LlamaError("could not apply the LoRA adapters", log=_log.problems_since(mark))
        for adapter, _ in items:
            adapter._users.add(self)
        self._loras = dict(items)  # keep them alive while in use

    @property
    def loras(self) -> dict[LoraAdapter, float]:
        return dict(self._loras)

    @_exclusive
    def set_control_vector(self, data: np.ndarray | None, il_start: int = 1,
                           il_end: int | None = None) -> None:
        """Add a control vector to layers [il_start, il_end] (``--control-vector``).

        data: array of shape (n_layer, n_embd); row i is added to layer i+1's
            output (llama.cpp's convention: layer 0 has no vector). ``None``
            removes the control vector.
        """
        ctx = self.ptr
        if data is None:
            rc = lib.llama_set_adapter_cvec(ctx, ffi.NULL, 0, self._n_embd, -1, -1)
        else:
            arr = np.ascontiguousarray(data, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[1] != self._n_embd:
                raise ValueError(f"control vector must have shape (n_layer, {self._n_embd})")
            end = arr.shape[0] if il_end is None else il_end
            rc = lib.llama_set_adapter_cvec(ctx, ffi.from_buffer("float[]", arr), arr.size,
                                            self._n_embd, il_start, end)
        if rc != 0:
            raise LlamaError("could not apply the control vector")

    def load_control_vectors(self, files: Sequence[tuple[str | os.PathLike[str], float]]
                             | Sequence[str | os.PathLike[str]], il_start: int = 1,
                             il_end: int | None = None) -> None:
        """Apply control vector files (``--control-vector FILE`` /
        ``--control-vector-scaled FILE SCALE``, ``--control-vector-layer-range``)."""
        from . import control_vector

        pairs = [(f, 1.0) if isinstance(f, (str, os.PathLike)) else (f[0], float(f[1]))
                 for f in files]
        data = control_vector.combine(pairs)
        if data.shape[1] != self._n_embd:
            raise LlamaError(f"the control vectors have n_embd {data.shape[1]}, the model "
                             f"{self._n_embd}")
        self.set_control_vector(data, il_start, il_end if il_end is not None else data.shape[0])

    # -- performance ------------------------------------------------------------

    def perf(self) -> dict[str, float]:
        """llama.cpp's own timings (``llama_perf_context``)."""
        d = lib.llama_perf_context(self.ptr)
        return {"t_load_ms": d.t_load_ms, "t_p_eval_ms": d.t_p_eval_ms,
                "t_eval_ms": d.t_eval_ms, "n_p_eval": d.n_p_eval, "n_eval": d.n_eval,
                "n_reused": d.n_reused}

    @_exclusive
    def perf_reset(self) -> None:
        lib.llama_perf_context_reset(self.ptr)

    def close(self) -> None:
        if self._ptr is None:
            return
        with self._lock:  # wait for a decode running on another thread
            if self._batch is not None:
                self._batch.close()
                self._batch = None
            self._loras = {}
            super().close()

    def __repr__(self) -> str:
        if self.closed:
            return "<Context (closed)>"
        return f"<Context n_ctx={self.n_ctx} n_batch={self.n_batch} on {self.model!r}>"
