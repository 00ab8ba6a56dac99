"""Tensor placement overrides: ``-ot``, ``--cpu-moe``, ``--n-cpu-moe``, ``--n-cpu-ffn``.

llama.cpp decides per weight tensor which buffer type (device memory) holds
it; a list of ``(regex, buffer type)`` overrides, searched in order with the
first match winning, changes that. The patterns and the order are exactly
those of llama.cpp's ``common/arg.cpp``: the user's ``-ot`` entries first, then
``--cpu-moe``, ``--n-cpu-moe N`` and ``--n-cpu-ffn N``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ._ffi import ffi, lib

# common/common.h: LLM_FFN_EXPS_REGEX, LLM_FFN_DENSE_REGEX, llm_ffn_block_regex
FFN_EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
FFN_DENSE_REGEX = r"\.ffn_(up|down|gate)\."


def block_regex(layer: int, ffn_regex: str) -> str:
    return rf"blk\.{layer}{ffn_regex}"


def buffer_types() -> dict[str, Any]:
    """Buffer type name -> ``ggml_backend_buffer_type_t`` of every device.

    The names are those ``-ot`` accepts (``CPU``, ``CUDA0``, ``RPC0[host:port]``
    ...); device names (``RPC0``) are accepted as well.
    """
    out: dict[str, Any] = {}
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        buft = lib.ggml_backend_dev_buffer_type(dev)
        if buft != ffi.NULL:
            out[ffi.string(lib.ggml_backend_buft_name(buft)).decode()] = buft
            out.setdefault(ffi.string(lib.ggml_backend_dev_name(dev)).decode(), buft)
    return out


def override_list(
    tensor_overrides: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    cpu_moe: bool,
    n_cpu_moe: int,
    n_cpu_ffn: int,
) -> list[tuple[str, Any]]:
    """The ordered (pattern, buffer type) list for ``llama_model_params``."""
    entries: list[tuple[str, Any]] = []
    if tensor_overrides:
        items = (tensor_overrides.items() if isinstance(tensor_overrides, Mapping)
                 else tensor_overrides)
        known = buffer_types()
        for pattern, target in items:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"tensor override pattern {pattern!r} is not a regex: {exc}") \
                    from None
            buft = known.get(target)
            if buft is None:
                raise ValueError(
                    f"unknown buffer type {target!r} in tensor override {pattern!r}; "
                    f"available: {', '.join(sorted(known))}")
            entries.append((pattern, buft))
    cpu = lib.ggml_backend_cpu_buffer_type()
    if cpu_moe:
        entries.append((FFN_EXPS_REGEX, cpu))
    for count, regex, flag in ((n_cpu_moe, FFN_EXPS_REGEX, "n_cpu_moe"),
                               (n_cpu_ffn, FFN_DENSE_REGEX, "n_cpu_ffn")):
        if count < 0:
            raise ValueError(f"{flag} must be >= 0, got {count}")
        entries.extend((block_regex(i, regex), cpu) for i in range(count))
    return entries


def to_c(entries: list[tuple[str, Any]], keep: list[Any]) -> Any:
    """A NULL-terminated ``llama_model_tensor_buft_override`` array.

    The pattern strings are appended to ``keep``, which must outlive the model.
    """
    arr = ffi.new("struct llama_model_tensor_buft_override[]", len(entries) + 1)
    for i, (pattern, buft) in enumerate(entries):
        s = ffi.new("char[]", pattern.encode())
        keep.append(s)
        arr[i].pattern = s
        arr[i].buft = buft
    keep.append(arr)
    return arr


def kv_overrides_to_c(values: Mapping[str, Any], keep: list[Any]) -> Any:
    """A ``llama_model_kv_override`` array (``--override-kv KEY=TYPE:VALUE``)."""
    arr = ffi.new("struct llama_model_kv_override[]", len(values) + 1)
    for i, (key, value) in enumerate(values.items()):
        k = key.encode()
        if not 0 < len(k) < 128:
            raise ValueError(f"metadata key {key!r} must be 1..127 bytes")
        item = arr[i]
        ffi.memmove(item.key, k, len(k))
        if isinstance(value, bool):
            item.tag = lib.LLAMA_KV_OVERRIDE_TYPE_BOOL
            item.val_bool = value
        elif isinstance(value, int):
            item.tag = lib.LLAMA_KV_OVERRIDE_TYPE_INT
            item.val_i64 = value
        elif isinstance(value, float):
            item.tag = lib.LLAMA_KV_OVERRIDE_TYPE_FLOAT
            item.val_f64 = value
        elif isinstance(value, str):
            v = value.encode()
            if len(v) >= 128:
                raise ValueError(f"metadata override {key!r}: strings are limited to 127 bytes")
            item.tag = lib.LLAMA_KV_OVERRIDE_TYPE_STR
            ffi.memmove(item.val_str, v, len(v))
        else:
            raise TypeError(f"metadata override {key!r}: use int, float, bool or str, "
                            f"not {type(value).__name__}")
    keep.append(arr)
    return arr
