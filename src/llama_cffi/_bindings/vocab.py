"""``llama_vocab`` functions: facts, special tokens, tokenizing, detokenizing.

Token ids are not checked here: the caller (``objects/vocab.py``) checks
them against the vocabulary size before they reach C.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..errors import TokenError
from .raw import CData, ffi, lib

_TYPE_NAMES = {int(lib.LLAMA_VOCAB_TYPE_NONE): "none", int(lib.LLAMA_VOCAB_TYPE_SPM): "spm",
               int(lib.LLAMA_VOCAB_TYPE_BPE): "bpe", int(lib.LLAMA_VOCAB_TYPE_WPM): "wpm",
               int(lib.LLAMA_VOCAB_TYPE_UGM): "ugm", int(lib.LLAMA_VOCAB_TYPE_RWKV): "rwkv",
               int(lib.LLAMA_VOCAB_TYPE_PLAMO2): "plamo2"}

_SPECIAL = {"bos": lib.llama_vocab_bos, "eos": lib.llama_vocab_eos,
            "eot": lib.llama_vocab_eot, "sep": lib.llama_vocab_sep,
            "nl": lib.llama_vocab_nl, "pad": lib.llama_vocab_pad,
            "mask": lib.llama_vocab_mask, "fim_pre": lib.llama_vocab_fim_pre,
            "fim_suf": lib.llama_vocab_fim_suf, "fim_mid": lib.llama_vocab_fim_mid,
            "fim_pad": lib.llama_vocab_fim_pad, "fim_rep": lib.llama_vocab_fim_rep,
            "fim_sep": lib.llama_vocab_fim_sep}

_scratch = threading.local()  # per-thread buffer for token_to_piece


# -- facts ------------------------------------------------------------------------------


def n_tokens(ptr: CData) -> int:
    return int(lib.llama_vocab_n_tokens(ptr))


def type_name(ptr: CData) -> str:
    """``llama_vocab_type`` as ``spm``, ``bpe``, ``wpm``, ``ugm``, ``rwkv``,
    ``plamo2`` or ``none`` (the number as text for a kind this build does not name)."""
    t = int(lib.llama_vocab_type(ptr))
    return _TYPE_NAMES.get(t, str(t))


def special_tokens(ptr: CData) -> dict[str, int | None]:
    """The special token ids (``bos``, ``eos``, ``eot``, ``sep``, ``nl``, ``pad``,
    ``mask``, ``fim_pre`` ... ``fim_sep``); None where the vocabulary has none."""
    out: dict[str, int | None] = {}
    for name, fn in _SPECIAL.items():
        tok = int(fn(ptr))
        out[name] = None if tok < 0 else tok
    return out


def add_bos(ptr: CData) -> bool:
    return bool(lib.llama_vocab_get_add_bos(ptr))


def add_eos(ptr: CData) -> bool:
    return bool(lib.llama_vocab_get_add_eos(ptr))


# -- per token ----------------------------------------------------------------------------


def attr(ptr: CData, token: int) -> int:
    return int(lib.llama_vocab_get_attr(ptr, token))


def score(ptr: CData, token: int) -> float:
    return float(lib.llama_vocab_get_score(ptr, token))


def is_eog(ptr: CData, token: int) -> bool:
    return bool(lib.llama_vocab_is_eog(ptr, token))


def is_control(ptr: CData, token: int) -> bool:
    return bool(lib.llama_vocab_is_control(ptr, token))


def text(ptr: CData, token: int) -> str:
    """The token's text as stored in the vocabulary."""
    return str(ffi.string(lib.llama_vocab_get_text(ptr, token)).decode("utf-8", "replace"))


# -- tokenizing and detokenizing ----------------------------------------------------------


def tokenize(ptr: CData, data: bytes, add_special: bool, parse_special: bool) -> list[int]:
    """``llama_tokenize`` of UTF-8 ``data``, growing the buffer when C asks for more."""
    capacity = len(data) + 8
    while True:
        buf = ffi.new("llama_token[]", capacity)
        n = int(lib.llama_tokenize(ptr, data, len(data), buf, capacity, add_special,
                                   parse_special))
        if n >= 0:
            return list(ffi.unpack(buf, n))
        if n == -2147483648 or -n <= capacity:
            raise TokenError(f"could not tokenize a text of {len(data)} bytes")
        capacity = -n


def token_to_piece(ptr: CData, token: int, special: bool, lstrip: int) -> bytes:
    """``llama_token_to_piece``: the bytes of one token (in a reused per-thread buffer)."""
    buf = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = ffi.new("char[]", 256)
    n = int(lib.llama_token_to_piece(ptr, token, buf, len(buf), lstrip, special))
    if n < 0:
        buf = _scratch.buf = ffi.new("char[]", -n)
        n = int(lib.llama_token_to_piece(ptr, token, buf, len(buf), lstrip, special))
    return bytes(ffi.unpack(buf, n))


def detokenize(ptr: CData, tokens: Sequence[int], remove_special: bool,
               unparse_special: bool) -> str:
    """``llama_detokenize``, growing the buffer when C asks for more."""
    arr = ffi.new("llama_token[]", list(tokens))
    capacity = max(16, 8 * len(tokens))
    while True:
        buf = ffi.new("char[]", capacity)
        n = int(lib.llama_detokenize(ptr, arr, len(tokens), buf, capacity, remove_special,
                                     unparse_special))
        if n >= 0:
            return str(ffi.unpack(buf, n).decode("utf-8", "replace"))
        capacity = -n
