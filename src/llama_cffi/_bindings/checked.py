"""Checked calls: one function per C error convention.

llama.cpp reports failure in a handful of ways; each has one function here,
and every binding module uses these instead of testing results itself:

=====================  ==============================================  ======================
convention             examples                                        function
=====================  ==============================================  ======================
NULL pointer           ``llama_model_load_from_file``,                 :func:`pointer`
                       ``llama_init_from_model``, sampler constructors
status code, 0 = ok    ``llama_set_adapters_lora``,                    :func:`status`
                       ``llama_set_adapter_cvec``
``bool``, true = ok    ``llama_state_save_file``,                      :func:`success`
                       ``llama_state_load_file``
``size_t``, 0 = fail   ``llama_state_set_data``,                       :func:`nonzero`
                       ``llama_state_seq_set_data``
decode/encode codes    ``llama_decode`` (0 ok, 1 no KV slot, 2         :func:`decode_status`
                       aborted, -1 invalid batch, < -1 fatal)
length, buffer filled  ``llama_model_meta_val_str``,                   :func:`sized_string`
by the callee          ``llama_model_desc``
=====================  ==============================================  ======================

Each raises a :class:`~llama_cffi.errors.LlamaError` subclass chosen by the
caller, carrying the warning and error lines llama.cpp logged on this thread
during the call (its own explanation, which the return value never has).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import (
    DecodeAbortedError,
    DecodeError,
    InvalidBatchError,
    LlamaError,
    NoKvSlotError,
)
from . import log
from .raw import NULL, CData, ffi


def pointer(call: Callable[..., CData], *args: Any, error: type[LlamaError] = LlamaError,
            what: str) -> CData:
    """``call(*args)``, which returns a pointer; NULL raises ``error(what)``."""
    mark = log.mark()
    ptr = call(*args)
    if ptr == NULL:
        raise error(what, log=log.problems_since(mark))
    return ptr


def status(call: Callable[..., int], *args: Any, error: type[LlamaError] = LlamaError,
           what: str) -> None:
    """``call(*args)``, which returns 0 on success; anything else raises."""
    mark = log.mark()
    rc = call(*args)
    if rc != 0:
        raise error(f"{what} (code {rc})", log=log.problems_since(mark))


def success(call: Callable[..., bool], *args: Any, error: type[LlamaError] = LlamaError,
            what: str) -> None:
    """``call(*args)``, which returns true on success; false raises."""
    mark = log.mark()
    if not call(*args):
        raise error(what, log=log.problems_since(mark))


def nonzero(call: Callable[..., int], *args: Any, error: type[LlamaError] = LlamaError,
            what: str) -> int:
    """``call(*args)``, which returns a count where 0 means failure."""
    mark = log.mark()
    n = int(call(*args))
    if n == 0:
        raise error(what, log=log.problems_since(mark))
    return n


def decode_status(rc: int, what: str, n_tokens: int, n_ctx: int, mark: int,
                  abort_error: BaseException | None = None) -> None:
    """Turn a non-zero ``llama_decode``/``llama_encode`` code into its exception.

    ``abort_error`` is an exception the abort callback raised (it becomes the
    cause of the DecodeAbortedError).
    """
    log_text = log.problems_since(mark)
    if rc == 2 and abort_error is not None:
        raise DecodeAbortedError(
            f"{what}: aborted because the abort callback raised "
            f"{type(abort_error).__name__}: {abort_error}", code=rc,
            log=log_text) from abort_error
    if rc == 1:
        raise NoKvSlotError(
            f"{what}: no KV cache slot for a batch of {n_tokens} tokens "
            f"(context size {n_ctx}); free space or use a larger n_ctx", code=rc, log=log_text)
    if rc == 2:
        raise DecodeAbortedError(f"{what}: aborted by the abort callback", code=rc, log=log_text)
    if rc == -1:
        raise InvalidBatchError(
            f"{what}: invalid batch (token ids, positions or sequence ids out of range, "
            "or positions not following the sequence)", code=rc, log=log_text)
    raise DecodeError(f"{what}: llama.cpp failed with code {rc}", code=rc, log=log_text)


def sized_string(fill: Callable[[CData, int], int]) -> str | None:
    """Call ``fill(buf, size)`` the llama.cpp way: first with a NULL buffer to
    learn the length (negative: absent), then with a buffer of that size."""
    n = fill(NULL, 0)
    if n < 0:
        return None
    buf = ffi.new("char[]", n + 1)
    fill(buf, n + 1)
    return str(ffi.unpack(buf, n).decode("utf-8", "replace"))


def string(ptr: CData) -> str:
    """A C string (``const char *``) as str; NULL gives ``""``."""
    return "" if ptr == NULL else str(ffi.string(ptr).decode("utf-8", "replace"))


def metadata_dict(ptr: CData, count: Callable[[CData], int],
                  key_by_index: Callable[[CData, int, CData, int], int],
                  val_by_index: Callable[[CData, int, CData, int], int]) -> dict[str, str]:
    """All key/value pairs of a GGUF-backed object (model or adapter) as strings."""
    out: dict[str, str] = {}
    for i in range(count(ptr)):
        key = sized_string(lambda b, n: key_by_index(ptr, i, b, n))
        val = sized_string(lambda b, n: val_by_index(ptr, i, b, n))
        out[key or ""] = val or ""
    return out
