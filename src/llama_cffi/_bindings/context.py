"""``llama_context`` functions: creation, decode, outputs, memory, state, adapters."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import ContextError, InvalidBatchError, LlamaError
from . import checked, log
from .callbacks import CallbackState
from .model import meta
from .raw import NULL, CData, ffi, lib

ATTENTION_TYPES = {"causal": int(lib.LLAMA_ATTENTION_TYPE_CAUSAL),
                   "non_causal": int(lib.LLAMA_ATTENTION_TYPE_NON_CAUSAL),
                   "non-causal": int(lib.LLAMA_ATTENTION_TYPE_NON_CAUSAL)}
FLASH_ATTN_DISABLED = int(lib.LLAMA_FLASH_ATTN_TYPE_DISABLED)


def default_params() -> CData:
    return lib.llama_context_default_params()


def max_parallel_sequences() -> int:
    return int(lib.llama_max_parallel_sequences())


def set_abort(params: CData, state: CallbackState | None) -> None:
    if state is None:
        params.abort_callback = NULL
        params.abort_callback_data = NULL
    else:
        params.abort_callback = lib._llama_cffi_abort
        params.abort_callback_data = state.handle


def init(model: CData, params: CData) -> tuple[CData, list[tuple[int, str]]]:
    """``llama_init_from_model``; the pointer and the log lines (buffer sizes)."""
    with log.collect() as lines:
        ptr = checked.pointer(lib.llama_init_from_model, model, params, error=ContextError,
                              what="failed to create the context")
    return ptr, lines


def free(ptr: CData, *keep_alive: object) -> None:
    """``llama_free``; ``keep_alive`` (the model) is freed only after this."""
    lib.llama_free(ptr)


def sizes(ptr: CData) -> dict[str, int]:
    """Sizes fixed at creation."""
    return {"n_ctx": int(lib.llama_n_ctx(ptr)), "n_ctx_seq": int(lib.llama_n_ctx_seq(ptr)),
            "n_batch": int(lib.llama_n_batch(ptr)), "n_ubatch": int(lib.llama_n_ubatch(ptr)),
            "n_seq_max": int(lib.llama_n_seq_max(ptr)),
            "pooling_type": int(lib.llama_pooling_type(ptr))}


def threads(ptr: CData) -> tuple[int, int]:
    return int(lib.llama_n_threads(ptr)), int(lib.llama_n_threads_batch(ptr))


def set_threads(ptr: CData, n_threads: int, n_threads_batch: int) -> None:
    lib.llama_set_n_threads(ptr, n_threads, n_threads_batch)


def decode(ptr: CData, batch: CData, n_ctx: int, abort: CallbackState | None,
           causal: bool | None = None) -> None:
    """``llama_decode``; non-zero codes become their exceptions (checked.decode_status).

    causal: whether the context uses causal attention (``attention`` given at
    creation); None: the model's own (``<arch>.attention.causal``).
    """
    _check_batch_size(ptr, batch, "decode", causal)
    mark = log.mark()
    rc = lib.llama_decode(ptr, batch)
    if rc != 0:
        _raise(rc, "decode", batch, n_ctx, mark, abort)


def encode(ptr: CData, batch: CData, n_ctx: int, abort: CallbackState | None) -> None:
    _check_batch_size(ptr, batch, "encode", False)
    mark = log.mark()
    rc = lib.llama_encode(ptr, batch)
    if rc != 0:
        _raise(rc, "encode", batch, n_ctx, mark, abort)


def _model_is_causal(ptr: CData) -> bool:
    """The model's ``<arch>.attention.causal`` (llama.cpp's default: true)."""
    model = lib.llama_get_model(ptr)
    arch = meta(model, "general.architecture")
    return meta(model, f"{arch}.attention.causal") != "false"


def _check_batch_size(ptr: CData, batch: CData, what: str, causal: bool | None) -> None:
    """Refuse the batch sizes llama.cpp asserts on (ending the process) instead
    of returning an error: more tokens than ``n_batch`` in one decode, and more
    than ``n_ubatch`` where the batch is computed in one step (encode, and
    decode with non-causal attention or without memory)."""
    n = int(batch.n_tokens)
    n_ubatch = int(lib.llama_n_ubatch(ptr))
    if n <= n_ubatch:
        return
    n_batch = int(lib.llama_n_batch(ptr))
    if what == "decode" and n > n_batch:
        raise InvalidBatchError(
            f"a batch of {n} tokens is larger than the context's n_batch ({n_batch}): "
            f"split it, or create the context with a larger n_batch", code=-1)
    if what == "encode" or lib.llama_get_memory(ptr) == NULL or \
            not (_model_is_causal(ptr) if causal is None else causal):
        raise InvalidBatchError(
            f"cannot {what} {n} tokens at once: without causal attention llama.cpp computes "
            f"a batch in one step, which needs n_ubatch >= {n} (the context has {n_ubatch}); "
            f"create it with a larger n_ubatch", code=-1)


def _raise(rc: int, what: str, batch: CData, n_ctx: int, mark: int,
           abort: CallbackState | None) -> None:
    err = None
    if abort is not None:
        err, abort.error = abort.error, None
    checked.decode_status(rc, what, int(batch.n_tokens), n_ctx, mark, err)


def _copy(p: CData, n: int) -> np.ndarray:
    """A new float32 array (owning its memory) holding ``n`` floats from ``p``."""
    out = np.empty(n, dtype=np.float32)
    ffi.memmove(out, p, n * 4)
    return out


def logits(ptr: CData, i: int, n_vocab: int) -> np.ndarray | None:
    """A copy of the logits of output ``i`` (None if it has none)."""
    p = lib.llama_get_logits_ith(ptr, i)
    if p == NULL:
        return None
    return _copy(p, n_vocab)


def logits_view(ptr: CData, i: int, n_vocab: int) -> np.ndarray | None:
    """A view (no copy) of llama.cpp's logits of output ``i``, None if it has none.

    Borrowed memory: the caller must hold the context (no decode, no close) for
    as long as it uses the view, and must not hand it out.
    """
    p = lib.llama_get_logits_ith(ptr, i)
    if p == NULL:
        return None
    return np.frombuffer(ffi.buffer(p, n_vocab * 4), dtype=np.float32)


def has_logits(ptr: CData, i: int) -> bool:
    return bool(lib.llama_get_logits_ith(ptr, i) != NULL)


def argmax_rows(ptr: CData, rows: Sequence[int], chains: Sequence[CData],
                biases: Sequence[tuple[np.ndarray, np.ndarray, bool, frozenset[int]] | None],
                n_vocab: int) -> list[int]:
    """The greedy token of each output ``rows[r]`` of the last decode, after the
    row's logit bias (ids, values, whether a value is positive, the ids as a
    set), accepted by ``chains[r]`` (llama.cpp's logit-bias -> greedy chain).

    The logits are read in place by the C arg-max the engine's generation runs
    use (``llama_cffi_argmax_rows``, ``cdef/run.h``: llama.cpp's greedy rule,
    the rows' chunks shared among the context's threads). A bias is applied
    to a copy of the row, and only when it can change the choice (it raises a
    token, or lowers the arg-max).
    """
    k = len(rows)
    if k == 0:
        return []
    ptrs = ffi.new("const float *[]", k)
    for i, r in enumerate(rows):
        p = lib.llama_get_logits_ith(ptr, r)
        if p == NULL:
            raise LlamaError(f"no logits for output {r}: decode a batch with that output first")
        ptrs[i] = p
    picked = ffi.new("int32_t[]", k)
    lib.llama_cffi_argmax_rows(ptrs, k, n_vocab, lib.llama_n_threads(ptr), picked)
    out: list[int] = list(picked)
    for i in range(k):
        bias = biases[i]
        if bias is not None and (bias[2] or out[i] in bias[3]):
            x = np.frombuffer(ffi.buffer(ptrs[i], n_vocab * 4), dtype=np.float32).copy()
            x[bias[0]] += bias[1]  # ids outside the row raise IndexError here
            out[i] = int(lib.llama_cffi_argmax(ffi.cast("const float *", ffi.from_buffer(x)),
                                               n_vocab))
        lib.llama_sampler_accept(chains[i], out[i])
    return out


# -- backend sampling (llama.cpp's --backend-sampling) ------------------------------


def set_sampler(ptr: CData, seq_id: int, chain: CData | None) -> bool:
    """``llama_set_sampler``: run ``chain`` inside the model's graph for the
    outputs of ``seq_id`` (None detaches). False when llama.cpp cannot offload it
    (it then logs why and keeps sampling that sequence on the CPU)."""
    return bool(lib.llama_set_sampler(ptr, seq_id, NULL if chain is None else chain))


def backend_output(ptr: CData, i: int) -> tuple[int, bool]:
    """(the token a backend sampler selected for output ``i`` or -1, whether it
    left candidates for the rest of the chain to sample on the CPU)."""
    token = int(lib.llama_get_sampled_token_ith(ptr, i))
    if token >= 0:
        return token, False
    return -1, (lib.llama_get_sampled_probs_ith(ptr, i) != NULL
                or lib.llama_get_sampled_logits_ith(ptr, i) != NULL)


def embeddings(ptr: CData, i: int, n_embd: int) -> np.ndarray | None:
    """A copy of the embedding of output ``i`` (None if it has none)."""
    p = lib.llama_get_embeddings_ith(ptr, i)
    if p == NULL:
        return None
    return _copy(p, n_embd)


def seq_embeddings(ptr: CData, seq_id: int, n: int) -> np.ndarray | None:
    """A copy of the pooled embedding of ``seq_id`` (None if there is none)."""
    p = lib.llama_get_embeddings_seq(ptr, seq_id)
    if p == NULL:
        return None
    return _copy(p, n)


# -- memory ------------------------------------------------------------------------


def memory_clear(ptr: CData, data: bool) -> None:
    lib.llama_memory_clear(lib.llama_get_memory(ptr), data)


def seq_rm(ptr: CData, seq_id: int, p0: int, p1: int) -> bool:
    return bool(lib.llama_memory_seq_rm(lib.llama_get_memory(ptr), seq_id, p0, p1))


def seq_cp(ptr: CData, src: int, dst: int, p0: int, p1: int) -> None:
    lib.llama_memory_seq_cp(lib.llama_get_memory(ptr), src, dst, p0, p1)


def seq_keep(ptr: CData, seq_id: int) -> None:
    lib.llama_memory_seq_keep(lib.llama_get_memory(ptr), seq_id)


def seq_add(ptr: CData, seq_id: int, p0: int, p1: int, delta: int) -> None:
    lib.llama_memory_seq_add(lib.llama_get_memory(ptr), seq_id, p0, p1, delta)


def seq_div(ptr: CData, seq_id: int, p0: int, p1: int, d: int) -> None:
    lib.llama_memory_seq_div(lib.llama_get_memory(ptr), seq_id, p0, p1, d)


def seq_pos_min(ptr: CData, seq_id: int) -> int:
    return int(lib.llama_memory_seq_pos_min(lib.llama_get_memory(ptr), seq_id))


def seq_pos_max(ptr: CData, seq_id: int) -> int:
    return int(lib.llama_memory_seq_pos_max(lib.llama_get_memory(ptr), seq_id))


def can_shift(ptr: CData) -> bool:
    return bool(lib.llama_memory_can_shift(lib.llama_get_memory(ptr)))


# -- state ---------------------------------------------------------------------------


def state_get(ptr: CData) -> bytes:
    size = lib.llama_state_get_size(ptr)
    buf = ffi.new("uint8_t[]", size)
    n = lib.llama_state_get_data(ptr, buf, size)
    return bytes(ffi.buffer(buf, n))


def state_set(ptr: CData, data: bytes) -> None:
    checked.nonzero(lib.llama_state_set_data, ptr, data, len(data),
                    what="could not restore the state (different model or context?)")


def state_save_file(ptr: CData, path: str | os.PathLike[str], tokens: Sequence[int]) -> None:
    arr = ffi.new("llama_token[]", list(tokens))
    checked.success(lib.llama_state_save_file, ptr, os.fsencode(path), arr, len(tokens),
                    what=f"could not save the state to {path}")


def state_load_file(ptr: CData, path: str | os.PathLike[str], capacity: int) -> list[int]:
    arr = ffi.new("llama_token[]", capacity)
    count = ffi.new("size_t *")
    checked.success(lib.llama_state_load_file, ptr, os.fsencode(path), arr, capacity, count,
                    what=f"could not load the state from {path}")
    return list(ffi.unpack(arr, count[0]))


def seq_state_get(ptr: CData, seq_id: int) -> bytes:
    size = lib.llama_state_seq_get_size(ptr, seq_id)
    buf = ffi.new("uint8_t[]", size)
    n = lib.llama_state_seq_get_data(ptr, buf, size, seq_id)
    return bytes(ffi.buffer(buf, n))


def seq_state_set(ptr: CData, data: bytes, seq_id: int) -> None:
    checked.nonzero(lib.llama_state_seq_set_data, ptr, data, len(data), seq_id,
                    what=f"could not restore sequence {seq_id} (no room, or other model?)")


def seq_state_save_file(ptr: CData, path: str | os.PathLike[str], seq_id: int,
                        tokens: Sequence[int]) -> None:
    arr = ffi.new("llama_token[]", list(tokens))
    checked.nonzero(lib.llama_state_seq_save_file, ptr, os.fsencode(path), seq_id, arr,
                    len(tokens), what=f"could not save sequence {seq_id} to {path}")


def seq_state_load_file(ptr: CData, path: str | os.PathLike[str], seq_id: int,
                        capacity: int) -> list[int]:
    arr = ffi.new("llama_token[]", capacity)
    count = ffi.new("size_t *")
    checked.nonzero(lib.llama_state_seq_load_file, ptr, os.fsencode(path), seq_id, arr,
                    capacity, count, what=f"could not load sequence {seq_id} from {path}")
    return list(ffi.unpack(arr, count[0]))


# -- adapters ---------------------------------------------------------------------------


def set_loras(ptr: CData, adapters: Sequence[CData], scales: Sequence[float]) -> None:
    ptrs = ffi.new("struct llama_adapter_lora *[]", list(adapters) or 1)
    arr = ffi.new("float[]", [float(s) for s in scales] or 1)
    checked.status(lib.llama_set_adapters_lora, ptr, ptrs, len(adapters), arr,
                   what="could not apply the LoRA adapters")


def set_control_vector(ptr: CData, data: np.ndarray | None, n_embd: int, il_start: int,
                       il_end: int) -> None:
    """``llama_set_adapter_cvec``; ``data`` is a C-contiguous float32 (n_layer, n_embd)
    array, None removes the control vector."""
    if data is None:
        checked.status(lib.llama_set_adapter_cvec, ptr, NULL, 0, n_embd, -1, -1,
                       what="could not remove the control vector")
        return
    checked.status(lib.llama_set_adapter_cvec, ptr, ffi.from_buffer("float[]", data),
                   data.size, n_embd, il_start, il_end, error=LlamaError,
                   what="could not apply the control vector")


# -- performance ------------------------------------------------------------------------


def perf(ptr: CData) -> dict[str, float]:
    d = lib.llama_perf_context(ptr)
    return {"t_load_ms": d.t_load_ms, "t_p_eval_ms": d.t_p_eval_ms,
            "t_eval_ms": d.t_eval_ms, "n_p_eval": d.n_p_eval, "n_eval": d.n_eval,
            "n_reused": d.n_reused}


def perf_reset(ptr: CData) -> None:
    lib.llama_perf_context_reset(ptr)
