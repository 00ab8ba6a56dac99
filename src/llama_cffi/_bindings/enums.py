"""llama.cpp's enumerations, with values taken from the compiled library.

Every parameter that takes one of these also accepts the string llama.cpp's
command-line flags use (``split_mode="layer"``, ``type_k="q8_0"``,
``flash_attn="auto"``, ``load_mode="mmap"``).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import TypeVar, Union

from .raw import lib


class SplitMode(IntEnum):
    """How a model is split across devices (``-sm/--split-mode``)."""

    NONE = lib.LLAMA_SPLIT_MODE_NONE
    LAYER = lib.LLAMA_SPLIT_MODE_LAYER
    ROW = lib.LLAMA_SPLIT_MODE_ROW
    TENSOR = lib.LLAMA_SPLIT_MODE_TENSOR


class LoadMode(IntEnum):
    """How the weights are read (``llama_load_mode``; ``--mmap``/``--mlock``/``--direct-io``)."""

    AUTO = lib.LLAMA_LOAD_MODE_AUTO
    NONE = lib.LLAMA_LOAD_MODE_NONE
    MMAP = lib.LLAMA_LOAD_MODE_MMAP
    MLOCK = lib.LLAMA_LOAD_MODE_MLOCK
    MMAP_MLOCK = lib.LLAMA_LOAD_MODE_MMAP_MLOCK
    DIRECT_IO = lib.LLAMA_LOAD_MODE_DIRECT_IO


class FlashAttn(IntEnum):
    """When to use Flash Attention (``-fa on|off|auto``)."""

    AUTO = lib.LLAMA_FLASH_ATTN_TYPE_AUTO
    OFF = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ON = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED


class PoolingType(IntEnum):
    """How embeddings are pooled per sequence (``--pooling``)."""

    UNSPECIFIED = lib.LLAMA_POOLING_TYPE_UNSPECIFIED
    NONE = lib.LLAMA_POOLING_TYPE_NONE
    MEAN = lib.LLAMA_POOLING_TYPE_MEAN
    CLS = lib.LLAMA_POOLING_TYPE_CLS
    LAST = lib.LLAMA_POOLING_TYPE_LAST
    RANK = lib.LLAMA_POOLING_TYPE_RANK


class RopeType(IntEnum):
    NONE = lib.LLAMA_ROPE_TYPE_NONE
    NORM = lib.LLAMA_ROPE_TYPE_NORM
    NEOX = lib.LLAMA_ROPE_TYPE_NEOX
    MROPE = lib.LLAMA_ROPE_TYPE_MROPE
    IMROPE = lib.LLAMA_ROPE_TYPE_IMROPE
    VISION = lib.LLAMA_ROPE_TYPE_VISION


class GGMLType(IntEnum):
    """ggml tensor types accepted for the KV cache by ``-ctk/-ctv``."""

    F32 = lib.GGML_TYPE_F32
    F16 = lib.GGML_TYPE_F16
    BF16 = lib.GGML_TYPE_BF16
    Q8_0 = lib.GGML_TYPE_Q8_0
    Q4_0 = lib.GGML_TYPE_Q4_0
    Q4_1 = lib.GGML_TYPE_Q4_1
    IQ4_NL = lib.GGML_TYPE_IQ4_NL
    Q5_0 = lib.GGML_TYPE_Q5_0
    Q5_1 = lib.GGML_TYPE_Q5_1



_E = TypeVar("_E", bound=IntEnum)
EnumLike = Union[str, int, IntEnum]

_ALIASES = {
    LoadMode: {"mmap+mlock": "MMAP_MLOCK", "dio": "DIRECT_IO", "direct-io": "DIRECT_IO"},
    FlashAttn: {"enabled": "ON", "disabled": "OFF", "true": "ON", "false": "OFF",
                "1": "ON", "0": "OFF"},
}


def parse_enum(enum: type[_E], value: EnumLike, what: str) -> _E:
    """Accept an enum member, its int value or llama.cpp's flag spelling."""
    if isinstance(value, enum):
        return value
    if isinstance(value, bool):
        if enum is FlashAttn:
            return enum[("ON" if value else "OFF")]
    elif isinstance(value, int):
        try:
            return enum(value)
        except ValueError:
            pass
    elif isinstance(value, str):
        key = value.strip().lower()
        key = _ALIASES.get(enum, {}).get(key, key)
        try:
            return enum[key.upper().replace("-", "_")]
        except KeyError:
            pass
    choices = ", ".join(m.name.lower() for m in enum)
    raise ValueError(f"invalid {what} {value!r}: expected one of {choices}")


class RopeScaling(IntEnum):
    """RoPE frequency scaling (``--rope-scaling``)."""

    UNSPECIFIED = lib.LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED
    NONE = lib.LLAMA_ROPE_SCALING_TYPE_NONE
    LINEAR = lib.LLAMA_ROPE_SCALING_TYPE_LINEAR
    YARN = lib.LLAMA_ROPE_SCALING_TYPE_YARN
    LONGROPE = lib.LLAMA_ROPE_SCALING_TYPE_LONGROPE


class TokenAttr(IntFlag):
    """Attributes of a vocabulary token (``llama_token_attr``)."""

    UNDEFINED = lib.LLAMA_TOKEN_ATTR_UNDEFINED
    UNKNOWN = lib.LLAMA_TOKEN_ATTR_UNKNOWN
    UNUSED = lib.LLAMA_TOKEN_ATTR_UNUSED
    NORMAL = lib.LLAMA_TOKEN_ATTR_NORMAL
    CONTROL = lib.LLAMA_TOKEN_ATTR_CONTROL
    USER_DEFINED = lib.LLAMA_TOKEN_ATTR_USER_DEFINED
    BYTE = lib.LLAMA_TOKEN_ATTR_BYTE
    NORMALIZED = lib.LLAMA_TOKEN_ATTR_NORMALIZED
    LSTRIP = lib.LLAMA_TOKEN_ATTR_LSTRIP
    RSTRIP = lib.LLAMA_TOKEN_ATTR_RSTRIP
    SINGLE_WORD = lib.LLAMA_TOKEN_ATTR_SINGLE_WORD
