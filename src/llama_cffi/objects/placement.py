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

from .._bindings import backend
from .._bindings.raw import CData

# common/common.h: LLM_FFN_EXPS_REGEX, LLM_FFN_DENSE_REGEX, llm_ffn_block_regex
FFN_EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
FFN_DENSE_REGEX = r"\.ffn_(up|down|gate)\."


def block_regex(layer: int, ffn_regex: str) -> str:
    return rf"blk\.{layer}{ffn_regex}"


def buffer_types() -> dict[str, CData]:
    """Buffer type name -> ``ggml_backend_buffer_type_t`` of every device.

    The names are those ``-ot`` accepts (``CPU``, ``CUDA0``, ``RPC0[host:port]``
    ...); device names (``RPC0``) are accepted as well.
    """
    out: dict[str, CData] = {}
    for dev in backend.all_devices():
        buft = backend.device_buffer_type(dev)
        if buft is not None:
            out[backend.buffer_type_name(buft)] = buft
            out.setdefault(backend.device_name(dev), buft)
    return out


def override_list(
    tensor_overrides: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    cpu_moe: bool,
    n_cpu_moe: int,
    n_cpu_ffn: int,
) -> list[tuple[str, CData]]:
    """The ordered (pattern, buffer type) list for ``llama_model_params``."""
    entries: list[tuple[str, CData]] = []
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
    cpu = backend.cpu_buffer_type()
    if cpu_moe:
        entries.append((FFN_EXPS_REGEX, cpu))
    for count, regex, flag in ((n_cpu_moe, FFN_EXPS_REGEX, "n_cpu_moe"),
                               (n_cpu_ffn, FFN_DENSE_REGEX, "n_cpu_ffn")):
        if count < 0:
            raise ValueError(f"{flag} must be >= 0, got {count}")
        entries.extend((block_regex(i, regex), cpu) for i in range(count))
    return entries


def to_c(entries: list[tuple[str, CData]], keep: list[CData]) -> CData:
    """A NULL-terminated ``llama_model_tensor_buft_override`` array.

    The pattern strings are appended to ``keep``, which must outlive the model.
    """
    return backend.tensor_buft_overrides(entries, keep)


def kv_overrides_to_c(values: Mapping[str, int | float | bool | str],
                      keep: list[CData]) -> CData:
    """A ``llama_model_kv_override`` array (``--override-kv KEY=TYPE:VALUE``)."""
    return backend.kv_overrides(values, keep)
