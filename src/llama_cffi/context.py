"""An inference context on a model (``llama_context``): KV cache, decode, logits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _log
from ._ffi import ffi, lib
from ._handle import Handle
from .batch import Batch
from .enums import KV_CACHE_TYPES, EnumLike, FlashAttn, GGMLType, PoolingType, parse_enum
from .errors import (
    ContextError,
    DecodeAbortedError,
    DecodeError,
    InvalidBatchError,
    LlamaError,
    NoKvSlotError,
)
from .model import Model


def _free_context(ptr: Any, model: Model) -> None:
    # ``model`` rides along so the Model is freed only after its contexts.
    lib.llama_free(ptr)


def default_threads() -> int:
    """Threads llama_cffi uses by default: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _kv_type(value: EnumLike, what: str) -> GGMLType:
    t = parse_enum(GGMLType, value, what)
    if t not in KV_CACHE_TYPES:  # pragma: no cover - GGMLType only lists allowed ones
        raise ValueError(f"{what} {value!r} is not a KV cache type")
    return t


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
    type_k, type_v: KV cache data types (``"f16"``, ``"q8_0"``, ...)
        [``-ctk``, ``-ctv``].
    embeddings: also extract embeddings [``--embeddings``].
    pooling: embedding pooling, ``"none"``, ``"mean"``, ``"cls"``, ``"last"``,
        ``"rank"`` [``--pooling``].
    offload_kqv: keep the KV cache and attention on the device [``--no-kv-offload`` to disable].
    op_offload: offload host tensor operations to the device [``--no-op-offload`` to disable].
    swa_full: full-size cache for sliding-window attention [``--swa-full``].
    kv_unified: one KV buffer shared by all sequences [``--kv-unified``].
    no_perf: do not measure performance timings.
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
        embeddings: bool | None = None,
        pooling: EnumLike | None = None,
        offload_kqv: bool | None = None,
        op_offload: bool | None = None,
        swa_full: bool | None = None,
        kv_unified: bool | None = None,
        no_perf: bool | None = None,
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
            p.type_k = _kv_type(type_k, "type_k")
        if type_v is not None:
            p.type_v = _kv_type(type_v, "type_v")
        if embeddings is not None:
            p.embeddings = bool(embeddings)
        if pooling is not None:
            p.pooling_type = parse_enum(PoolingType, pooling, "pooling")
        for name, flag in (("offload_kqv", offload_kqv), ("op_offload", op_offload),
                           ("swa_full", swa_full), ("kv_unified", kv_unified),
                           ("no_perf", no_perf)):
            if flag is not None:
                setattr(p, name, bool(flag))

        mark = _log.mark()
        ptr = lib.llama_init_from_model(model.ptr, p)
        if ptr == ffi.NULL:
            raise ContextError("failed to create the context", log=_log.problems_since(mark))
        self._own(ptr, _free_context, model)
        self.model = model
        self.vocab = model.vocab
        self._n_vocab = model.vocab.n_tokens
        self._batch: Batch | None = None

    # -- sizes ---------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return int(lib.llama_n_ctx(self.ptr))

    @property
    def n_batch(self) -> int:
        return int(lib.llama_n_batch(self.ptr))

    @property
    def n_ubatch(self) -> int:
        return int(lib.llama_n_ubatch(self.ptr))

    @property
    def n_seq_max(self) -> int:
        return int(lib.llama_n_seq_max(self.ptr))

    @property
    def n_threads(self) -> int:
        return int(lib.llama_n_threads(self.ptr))

    # -- evaluation -----------------------------------------------------------

    def decode(self, batch: Batch) -> None:
        """Run the model on ``batch`` (``llama_decode``).

        Raises NoKvSlotError (code 1, recoverable), DecodeAbortedError (2),
        InvalidBatchError (-1) or DecodeError (other codes).
        """
        ctx = self.ptr
        if batch.n_tokens == 0:
            raise InvalidBatchError("cannot decode an empty batch", code=-1)
        mark = _log.mark()
        rc = lib.llama_decode(ctx, batch.struct)
        if rc != 0:
            self._raise_decode(rc, "decode", batch, _log.problems_since(mark))

    def _raise_decode(self, rc: int, what: str, batch: Batch, log: str) -> None:
        if rc == 1:
            raise NoKvSlotError(
                f"{what}: no KV cache slot for a batch of {batch.n_tokens} tokens "
                f"(context size {self.n_ctx}); free space or use a larger n_ctx",
                code=rc, log=log)
        if rc == 2:
            raise DecodeAbortedError(f"{what}: aborted by the abort callback", code=rc, log=log)
        if rc == -1:
            raise InvalidBatchError(
                f"{what}: invalid batch (token ids, positions or sequence ids out of range)",
                code=rc, log=log)
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
        if start_pos + n > self.n_ctx:
            from .errors import ContextFullError

            raise ContextFullError(
                f"{start_pos + n} tokens do not fit the context of {self.n_ctx} tokens; "
                "create the context with a larger n_ctx")
        batch = self._scratch_batch()
        step = batch.capacity
        for i in range(0, n, step):
            chunk = tokens[i:i + step]
            batch.set_tokens(chunk, start_pos + i, seq_id=seq_id, output_last=(i + step >= n))
            self.decode(batch)

    def logits(self, i: int = -1) -> np.ndarray:
        """Logits of output ``i`` of the last batch (negative counts from the end).

        A numpy view on llama.cpp's buffer, no copy: valid until the next
        decode on this context or its close. Copy it to keep it.
        """
        ptr = lib.llama_get_logits_ith(self.ptr, i)
        if ptr == ffi.NULL:
            raise LlamaError(f"no logits for output {i}: was it marked as output in the batch?")
        return np.frombuffer(ffi.buffer(ptr, self._n_vocab * 4), dtype=np.float32)

    # -- memory ---------------------------------------------------------------

    def clear(self) -> None:
        """Forget all tokens of all sequences (``llama_memory_clear``)."""
        lib.llama_memory_clear(lib.llama_get_memory(self.ptr), True)

    def seq_pos_max(self, seq_id: int = 0) -> int:
        """Largest position stored for ``seq_id``, -1 if none."""
        return int(lib.llama_memory_seq_pos_max(lib.llama_get_memory(self.ptr), seq_id))

    def seq_rm(self, seq_id: int = -1, p0: int = -1, p1: int = -1) -> bool:
        """Remove positions [p0, p1) of ``seq_id`` (-1: any). False if not possible."""
        return bool(lib.llama_memory_seq_rm(lib.llama_get_memory(self.ptr), seq_id, p0, p1))

    # -- performance ------------------------------------------------------------

    def perf(self) -> dict[str, float]:
        """llama.cpp's own timings (``llama_perf_context``)."""
        d = lib.llama_perf_context(self.ptr)
        return {"t_load_ms": d.t_load_ms, "t_p_eval_ms": d.t_p_eval_ms,
                "t_eval_ms": d.t_eval_ms, "n_p_eval": d.n_p_eval, "n_eval": d.n_eval}

    def perf_reset(self) -> None:
        lib.llama_perf_context_reset(self.ptr)

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        super().close()

    def __repr__(self) -> str:
        if self.closed:
            return "<Context (closed)>"
        return f"<Context n_ctx={self.n_ctx} n_batch={self.n_batch} on {self.model!r}>"
