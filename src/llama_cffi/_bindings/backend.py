"""ggml backends: registries, devices, buffer types, RPC, and llama.cpp's
``llama_supports_*`` / system facts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from ..errors import LlamaError
from . import checked
from .raw import NULL, CData, ffi, lib

DEVICE_TYPE_CPU = int(lib.GGML_BACKEND_DEVICE_TYPE_CPU)
DEVICE_TYPE_GPU = int(lib.GGML_BACKEND_DEVICE_TYPE_GPU)
DEVICE_TYPE_IGPU = int(lib.GGML_BACKEND_DEVICE_TYPE_IGPU)
DEVICE_TYPE_ACCEL = int(lib.GGML_BACKEND_DEVICE_TYPE_ACCEL)

DEVICE_TYPE_NAMES = {
    DEVICE_TYPE_CPU: "cpu",
    DEVICE_TYPE_GPU: "gpu",
    DEVICE_TYPE_IGPU: "igpu",
    DEVICE_TYPE_ACCEL: "accel",
}
"""``enum ggml_backend_dev_type`` value -> the name :class:`Device` reports."""

KV_OVERRIDE_INT = int(lib.LLAMA_KV_OVERRIDE_TYPE_INT)
KV_OVERRIDE_FLOAT = int(lib.LLAMA_KV_OVERRIDE_TYPE_FLOAT)
KV_OVERRIDE_BOOL = int(lib.LLAMA_KV_OVERRIDE_TYPE_BOOL)
KV_OVERRIDE_STR = int(lib.LLAMA_KV_OVERRIDE_TYPE_STR)


# -- devices ------------------------------------------------------------------------


def device_count() -> int:
    return int(lib.ggml_backend_dev_count())


def device_get(index: int) -> CData:
    """``ggml_backend_dev_get``: the ``ggml_backend_dev_t`` at ``index``."""
    return lib.ggml_backend_dev_get(index)


def all_devices() -> list[CData]:
    """Every ``ggml_backend_dev_t``, in llama.cpp's order."""
    return [lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count())]


def device_by_name(name: str) -> CData | None:
    """``ggml_backend_dev_by_name`` (case-insensitive); None if there is none."""
    dev = lib.ggml_backend_dev_by_name(name.encode())
    return None if dev == NULL else dev


def device_by_type(type_: int) -> CData | None:
    """The first device of a ``DEVICE_TYPE_*``; None if there is none."""
    dev = lib.ggml_backend_dev_by_type(type_)
    return None if dev == NULL else dev


def device_name(dev: CData) -> str:
    return checked.string(lib.ggml_backend_dev_name(dev))


def device_description(dev: CData) -> str:
    return checked.string(lib.ggml_backend_dev_description(dev))


def device_type(dev: CData) -> int:
    """One of the ``DEVICE_TYPE_*`` values."""
    return int(lib.ggml_backend_dev_type(dev))


class DeviceProps(NamedTuple):
    """``struct ggml_backend_dev_props`` as Python values."""

    name: str
    description: str
    type: int
    """One of the ``DEVICE_TYPE_*`` values."""
    memory_free: int
    memory_total: int
    device_id: str
    """``""`` when the device reports none."""


def device_props(dev: CData) -> DeviceProps:
    """``ggml_backend_dev_get_props``."""
    props = ffi.new("struct ggml_backend_dev_props *")
    lib.ggml_backend_dev_get_props(dev, props)
    return DeviceProps(
        name=checked.string(props.name),
        description=checked.string(props.description),
        type=int(props.type),
        memory_free=int(props.memory_free),
        memory_total=int(props.memory_total),
        device_id=checked.string(props.device_id),
    )


def device_backend_name(dev: CData) -> str:
    """The name of the backend a device belongs to (``CPU``, ``RPC`` ...); ``""`` if none."""
    reg = lib.ggml_backend_dev_backend_reg(dev)
    return "" if reg == NULL else checked.string(lib.ggml_backend_reg_name(reg))


def device_buffer_type(dev: CData) -> CData | None:
    """``ggml_backend_dev_buffer_type``, or None."""
    buft = lib.ggml_backend_dev_buffer_type(dev)
    return None if buft == NULL else buft


def device_array(devs: Sequence[CData], null_terminated: bool = False) -> CData:
    """A ``ggml_backend_dev_t[]`` of ``devs`` (NULL-terminated on request, as
    ``llama_model_params.devices`` wants)."""
    items = list(devs) + ([NULL] if null_terminated else [])
    return ffi.new("ggml_backend_dev_t[]", items)


# -- buffer types -----------------------------------------------------------------------


def buffer_type_name(buft: CData) -> str:
    return checked.string(lib.ggml_backend_buft_name(buft))


def cpu_buffer_type() -> CData:
    """``ggml_backend_cpu_buffer_type``: host memory."""
    return lib.ggml_backend_cpu_buffer_type()


def tensor_buft_overrides(entries: Sequence[tuple[str, CData]], keep: list[object]) -> CData:
    """A NULL-terminated ``llama_model_tensor_buft_override`` array of
    (pattern, buffer type); the C strings and the array are appended to
    ``keep``, which must outlive the model."""
    arr = ffi.new("struct llama_model_tensor_buft_override[]", len(entries) + 1)
    for i, (pattern, buft) in enumerate(entries):
        s = ffi.new("char[]", pattern.encode())
        keep.append(s)
        arr[i].pattern = s
        arr[i].buft = buft
    keep.append(arr)
    return arr


def kv_overrides(values: Mapping[str, int | float | bool | str], keep: list[object]) -> CData:
    """A ``llama_model_kv_override`` array ended by an empty key; appended to ``keep``."""
    arr = ffi.new("struct llama_model_kv_override[]", len(values) + 1)
    for i, (key, value) in enumerate(values.items()):
        k = key.encode()
        if not 0 < len(k) < 128:
            raise ValueError(f"metadata key {key!r} must be 1..127 bytes")
        item = arr[i]
        ffi.memmove(item.key, k, len(k))
        if isinstance(value, bool):
            item.tag = KV_OVERRIDE_BOOL
            item.val_bool = value
        elif isinstance(value, int):
            item.tag = KV_OVERRIDE_INT
            item.val_i64 = value
        elif isinstance(value, float):
            item.tag = KV_OVERRIDE_FLOAT
            item.val_f64 = value
        elif isinstance(value, str):
            v = value.encode()
            if len(v) >= 128:
                raise ValueError(f"metadata override {key!r}: strings are limited to 127 bytes")
            item.tag = KV_OVERRIDE_STR
            ffi.memmove(item.val_str, v, len(v))
        else:
            raise TypeError(f"metadata override {key!r}: use int, float, bool or str, "
                            f"not {type(value).__name__}")
    keep.append(arr)
    return arr


# -- registries ---------------------------------------------------------------------------


def reg_count() -> int:
    return int(lib.ggml_backend_reg_count())


def reg_get(index: int) -> CData:
    return lib.ggml_backend_reg_get(index)


def reg_name(reg: CData) -> str:
    return checked.string(lib.ggml_backend_reg_name(reg))


def reg_dev_count(reg: CData) -> int:
    return int(lib.ggml_backend_reg_dev_count(reg))


def reg_features(reg: CData) -> dict[str, str]:
    """The features a backend reports (``ggml_backend_get_features`` via
    ``ggml_backend_reg_get_proc_address``; CPU: AVX2 ...); empty if it has none."""
    fn = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
    if fn == NULL:
        return {}
    get = ffi.cast("ggml_backend_get_features_t", fn)
    feats = get(reg)
    out: dict[str, str] = {}
    i = 0
    while feats != NULL and feats[i].name != NULL:
        out[checked.string(feats[i].name)] = checked.string(feats[i].value)
        i += 1
    return out


# -- RPC ------------------------------------------------------------------------------------


def rpc_add_server(endpoint: str) -> None:
    """``ggml_backend_rpc_add_server`` + ``ggml_backend_register``: the server's
    devices join the device list."""
    reg = checked.pointer(lib.ggml_backend_rpc_add_server, endpoint.encode(), error=LlamaError,
                          what=f"could not connect to the RPC server at {endpoint}")
    lib.ggml_backend_register(reg)


def rpc_start_server(endpoint: str, cache_dir: str | None, n_threads: int,
                     devs: Sequence[CData]) -> None:
    """``ggml_backend_rpc_start_server``: serve ``devs``; never returns."""
    arr = ffi.new("ggml_backend_dev_t[]", list(devs))
    lib.ggml_backend_rpc_start_server(endpoint.encode(),
                                      cache_dir.encode() if cache_dir else NULL,
                                      n_threads, len(devs), arr)


# -- llama.cpp / ggml facts ------------------------------------------------------------------


def ggml_version() -> str:
    return checked.string(lib.ggml_version())


def supports() -> dict[str, bool]:
    """``llama_supports_mmap``/``_mlock``/``_gpu_offload``/``_rpc``, keyed
    ``mmap``, ``mlock``, ``gpu_offload``, ``rpc``."""
    return {"mmap": bool(lib.llama_supports_mmap()),
            "mlock": bool(lib.llama_supports_mlock()),
            "gpu_offload": bool(lib.llama_supports_gpu_offload()),
            "rpc": bool(lib.llama_supports_rpc())}


def system_info() -> str:
    """``llama_print_system_info``: llama.cpp's one-line summary."""
    return checked.string(lib.llama_print_system_info())


def build_patches() -> tuple[str, ...]:
    """The files of ``patches/`` applied to the llama.cpp source this build was
    compiled from (none for an unpatched ``-DLLAMA_CPP_DIR`` tree)."""
    return tuple(p for p in checked.string(lib.llama_cffi_build_patches()).split(",") if p)
