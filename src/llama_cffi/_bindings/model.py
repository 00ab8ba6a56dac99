"""``llama_model`` functions: loading, facts, metadata, quantization."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import LlamaError, LoadCancelledError, ModelLoadError
from . import checked, log
from .callbacks import CallbackState
from .init import ensure_initialised
from .raw import NULL, CData, ffi, lib


def default_params() -> CData:
    """``llama_model_default_params()``: a struct the caller fills in."""
    ensure_initialised()
    return lib.llama_model_default_params()


def max_devices() -> int:
    return int(lib.llama_max_devices())


def set_progress(params: CData, state: CData | None) -> None:
    """Route the load progress to ``state`` (a CallbackState), or nowhere."""
    if state is None:
        params.progress_callback = NULL
        params.progress_callback_user_data = NULL
    else:
        params.progress_callback = lib._llama_cffi_progress
        params.progress_callback_user_data = state.handle


def load(path: str | os.PathLike[str], params: CData,
         progress: CallbackState | None) -> tuple[CData, list[tuple[int, str]]]:
    """``llama_model_load_from_file``; returns the pointer and the log lines of
    the load (llama.cpp reports buffer sizes only there).

    Raises LoadCancelledError when the progress callback stopped the load (or
    raised: that exception is the cause), ModelLoadError otherwise.
    """
    mark = log.mark()
    with log.collect() as lines:
        ptr = lib.llama_model_load_from_file(os.fsencode(path), params)
    if ptr != NULL:
        return ptr, lines
    if progress is not None and progress.error is not None:
        err = progress.error
        progress.error = None
        raise LoadCancelledError(
            f"loading {path} was cancelled: the progress callback raised "
            f"{type(err).__name__}: {err}") from err
    if progress is not None and progress.stopped:
        raise LoadCancelledError(f"loading {path} was cancelled by the progress callback")
    raise ModelLoadError(f"failed to load model from {path}", log=log.problems_since(mark))


def free(ptr: CData) -> None:
    lib.llama_model_free(ptr)


def is_model(ptr: object) -> bool:
    """Whether ``ptr`` is a ``struct llama_model *`` (for type checks without
    importing the Model class)."""
    try:
        return bool(ffi.typeof(ptr) is ffi.typeof("struct llama_model *"))
    except TypeError:
        return False


def facts(ptr: CData) -> dict[str, int]:
    """The numbers that never change once a model is loaded.

    A vocab_only model has no layers: llama.cpp aborts the process when asked
    for the head counts of layer 0 then, so they are reported as 0.
    """
    n_layer = int(lib.llama_model_n_layer(ptr))
    return {
        "n_params": int(lib.llama_model_n_params(ptr)),
        "size": int(lib.llama_model_size(ptr)),
        "n_layer": n_layer,
        "n_embd": int(lib.llama_model_n_embd(ptr)),
        "n_embd_inp": int(lib.llama_model_n_embd_inp(ptr)),
        "n_head": int(lib.llama_model_n_head(ptr)) if n_layer > 0 else 0,
        "n_head_kv": int(lib.llama_model_n_head_kv(ptr)) if n_layer > 0 else 0,
        "n_ctx_train": int(lib.llama_model_n_ctx_train(ptr)),
        "n_swa": int(lib.llama_model_n_swa(ptr)),
        "n_cls_out": int(lib.llama_model_n_cls_out(ptr)),
        "rope_type": int(lib.llama_model_rope_type(ptr)),
        "has_encoder": int(bool(lib.llama_model_has_encoder(ptr))),
        "has_decoder": int(bool(lib.llama_model_has_decoder(ptr))),
        "is_recurrent": int(bool(lib.llama_model_is_recurrent(ptr))),
        "is_hybrid": int(bool(lib.llama_model_is_hybrid(ptr))),
    }


def description(ptr: CData) -> str:
    """``llama_model_desc``, e.g. ``"llama 135M Q4_1"``."""
    buf = ffi.new("char[]", 256)
    n = lib.llama_model_desc(ptr, buf, len(buf))
    return str(ffi.unpack(buf, min(max(n, 0), len(buf) - 1)).decode("utf-8", "replace"))


def metadata(ptr: CData) -> dict[str, str]:
    return checked.metadata_dict(ptr, lib.llama_model_meta_count,
                                 lib.llama_model_meta_key_by_index,
                                 lib.llama_model_meta_val_str_by_index)


def meta(ptr: CData, key: str) -> str | None:
    k = key.encode()
    return checked.sized_string(lambda b, n: int(lib.llama_model_meta_val_str(ptr, k, b, n)))


def meta_key(name: str) -> str:
    """The GGUF key of a ``LLAMA_MODEL_META_KEY_*`` enum value, by its C name."""
    return checked.string(lib.llama_model_meta_key_str(getattr(lib, name)))


def chat_template(ptr: CData, name: str | None) -> str | None:
    t = lib.llama_model_chat_template(ptr, name.encode() if name else NULL)
    return None if t == NULL else checked.string(t)


def vocab(ptr: CData) -> CData:
    return checked.pointer(lib.llama_model_get_vocab, ptr, what="the model has no vocabulary")


def quantize_default_params() -> CData:
    """A ``llama_model_quantize_params *`` holding llama.cpp's defaults, for the
    caller to fill in and pass to :func:`quantize`."""
    ensure_initialised()
    return ffi.new("llama_model_quantize_params *", lib.llama_model_quantize_default_params())


def ftype(name: str) -> int:
    """The value of the ``llama_ftype`` called ``name`` (``"LLAMA_FTYPE_MOSTLY_Q8_0"``)."""
    return int(getattr(lib, name))


def quantize(src: str | os.PathLike[str], dst: str | os.PathLike[str], params: CData, *,
             what: str | None = None) -> None:
    """``llama_model_quantize`` (0 on success); failure raises LlamaError(``what``),
    by default "quantizing SRC to DST failed", with llama.cpp's log."""
    checked.status(lib.llama_model_quantize, os.fsencode(src), os.fsencode(dst), params,
                   error=LlamaError, what=what or f"quantizing {src} to {dst} failed")


ProgressCallback = Callable[[float], Any]
