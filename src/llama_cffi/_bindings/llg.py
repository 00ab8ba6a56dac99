"""llguidance's C API (``cdef/llg.h``): tokenizers and matchers for constrained output.

llguidance's functions are resolved at run time from the shared library of
its Python package (:func:`load`); the extension is built without it. A
tokenizer (``llama_cffi_llg_tok *``) is made from a model's token bytes and
tokenizes with ``llama_tokenize``; a matcher (``llama_cffi_llg_matcher *``)
is one grammar's state and holds its tokenizer, so the tokenizer's C memory
goes with the last of its matchers. Each pointer here is freed once by its
owner in :mod:`llama_cffi.objects.constraints`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import threading

import numpy as np

from .raw import NULL, CData, ffi, lib

_ERR = 1024
# cdef/llg.h declares llguidance's structs from its 1.x header (the
# constraint init and parser limits carry no size field): another major
# version may lay them out differently, so only 1.x (from 1.9) is loaded.
_TESTED_MAJOR = 1
_MIN_MINOR = 9
_lock = threading.Lock()
_loaded: list[str] = []  # the reason it failed, or "" once loaded


def library_path() -> str | None:
    """The path of the llguidance package's shared library (None: not installed)."""
    try:
        spec = importlib.util.find_spec("llguidance._lib")
    except (ImportError, ValueError):
        return None
    return None if spec is None or not spec.origin else spec.origin


def load() -> str:
    """Resolve llguidance's functions (once); "" when they are, else the reason."""
    with _lock:
        if not _loaded:
            path = library_path()
            if path is None:
                _loaded.append("the llguidance package is not installed")
            elif reason := _version_refused():
                _loaded.append(reason)
            else:
                err = ffi.new("char[]", _ERR)
                rc = lib.llama_cffi_llg_load(path.encode(), err, _ERR)
                _loaded.append("" if rc == 0 else
                               f"cannot load llguidance's library: {ffi.string(err).decode()}")
        return _loaded[0]


def _version_refused() -> str:
    """Why the installed llguidance's C API is not used ("" when it is)."""
    try:
        version = importlib.metadata.version("llguidance")
    except importlib.metadata.PackageNotFoundError:
        return ""  # importable but without metadata (a source tree): trust it
    m = re.match(r"(\d+)(?:\.(\d+))?", version)  # "1.10rc1", "1.9.2.post1", "2"
    if m is None:
        return f"llguidance {version}: cannot read its version"
    major, minor = int(m[1]), int(m[2] or 0)
    if major != _TESTED_MAJOR or minor < _MIN_MINOR:
        return (f"llguidance {version} is installed, but llama_cffi's declarations of its "
                f"C API are for {_TESTED_MAJOR}.x from {_TESTED_MAJOR}.{_MIN_MINOR}; "
                f"install 'llguidance>={_TESTED_MAJOR}.{_MIN_MINOR},<{_TESTED_MAJOR + 1}'")
    return ""


def tokenizer_new(vocab: CData, tokens: list[bytes], eos: list[int]) -> CData:
    """A tokenizer over ``tokens`` (one byte string per id) ending on ``eos``
    (ValueError with llguidance's reason when it refuses them)."""
    reason = load()
    if reason:
        raise ValueError(reason)
    lens = np.fromiter((len(t) for t in tokens), dtype=np.uint32, count=len(tokens))
    data = ffi.from_buffer(b"".join(tokens))
    ends = ffi.new("uint32_t[]", eos)
    err = ffi.new("char[]", _ERR)
    tok = lib.llama_cffi_llg_tokenizer_new(vocab, len(tokens), ends, len(eos),
                                           ffi.cast("const uint32_t *", ffi.from_buffer(lens)),
                                           ffi.cast("const uint8_t *", data), err, _ERR)
    if tok == NULL:
        raise ValueError(f"llguidance refuses the vocabulary: {ffi.string(err).decode()}")
    return tok


def tokenizer_close(tok: CData) -> None:
    """No more tokenizing (the model goes); the memory goes with the last matcher."""
    lib.llama_cffi_llg_tokenizer_close(tok)


def decode(tok: CData, ids: list[int]) -> bytes:
    """The bytes of ``ids`` (special tokens left out)."""
    arr = ffi.new("uint32_t[]", ids)
    n = int(lib.llama_cffi_llg_decode(tok, arr, len(ids), NULL, 0))  # with the NUL
    out = ffi.new("char[]", max(n, 1))
    lib.llama_cffi_llg_decode(tok, arr, len(ids), out, max(n, 1))
    data: bytes = ffi.buffer(out, max(n - 1, 0))[:]
    return data


def matcher_new(tok: CData, kind: str, data: str, step_max_items: int = 0,
                step_lexer_fuel: int = 0) -> CData:
    """A matcher for ``data`` of llguidance's ``kind`` ("llguidance", "json",
    "lark", "regex"); check :func:`error`. The limits: 0 is llguidance's default."""
    m = lib.llama_cffi_llg_matcher_new(tok, kind.encode(), data.encode(), step_max_items,
                                       step_lexer_fuel)
    if m == NULL:
        raise MemoryError("out of memory for an llguidance matcher")
    return m


def clone(m: CData) -> CData:
    """A copy of ``m`` in its current state."""
    c = lib.llama_cffi_llg_matcher_clone(m)
    if c == NULL:
        raise MemoryError("out of memory for an llguidance matcher")
    return c


def free(m: CData) -> None:
    lib.llama_cffi_llg_matcher_free(m)


def error(m: CData) -> str | None:
    """llguidance's error for ``m``, or None."""
    e = lib.llama_cffi_llg_error(m)
    return None if e == NULL else ffi.string(e).decode("utf-8", "replace")


def mask_words(m: CData) -> int:
    """32-bit words of ``m``'s token mask."""
    return int(lib.llama_cffi_llg_mask_bytes(m)) // 4


def mask(m: CData, out: np.ndarray) -> bool:
    """The allowed tokens, one bit each, into ``out`` (uint32/int32, :func:`mask_words`
    long); False on an error."""
    return bool(lib.llama_cffi_llg_mask(m, ffi.cast("uint32_t *", ffi.from_buffer(out)),
                                        out.nbytes) == 0)


def consume(m: CData, token: int) -> bool:
    return bool(lib.llama_cffi_llg_consume(m, token) == 0)


def validate(m: CData, token: int) -> bool:
    """Whether ``m`` would take ``token`` next."""
    one = ffi.new("uint32_t[1]", [token])
    return bool(lib.llama_cffi_llg_validate(m, one, 1) == 1)


def accepting(m: CData) -> bool:
    return bool(lib.llama_cffi_llg_accepting(m))


def stopped(m: CData) -> bool:
    return bool(lib.llama_cffi_llg_stopped(m))


def reset(m: CData) -> bool:
    return bool(lib.llama_cffi_llg_reset(m) == 0)
