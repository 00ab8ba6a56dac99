"""``ModelParams``: how a model is loaded and placed (``llama_model_params``)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..._bindings.enums import LoadMode, SplitMode, parse_enum
from ..gguf_check import value_problem
from .base import (
    INT32_MAX,
    _enum_parser,
    _enum_text,
    _float,
    _int,
    _opt_bool,
    _pairs,
    _Params,
)
from .fields import (
    document,
    format_floats,
    format_names,
    param,
    parse_floats,
    parse_names,
)

# -- model -------------------------------------------------------------------------------


def _parse_override(text: str) -> tuple[tuple[str, str], ...]:
    """``-ot PATTERN=BUFFER_TYPE[,PATTERN=BUFFER_TYPE...]``."""
    out = []
    for item in text.split(","):
        pattern, sep, target = item.rpartition("=")
        if not sep or not pattern or not target:
            raise ValueError(f"-ot expects PATTERN=BUFFER_TYPE, got {item!r}")
        out.append((pattern, target))
    return tuple(out)


def _parse_kv(text: str) -> tuple[tuple[str, int | float | bool | str]]:
    """``--override-kv KEY=TYPE:VALUE`` (TYPE: int, float, bool, str)."""
    key, sep, rest = text.partition("=")
    kind, sep2, value = rest.partition(":")
    if not sep or not sep2 or not key:
        raise ValueError(f"--override-kv expects KEY=TYPE:VALUE, got {text!r}")
    if kind == "int":
        return ((key, int(value)),)
    if kind == "float":
        return ((key, float(value)),)
    if kind == "bool":
        return ((key, value.lower() in ("1", "true", "yes", "on")),)
    if kind == "str":
        return ((key, value),)
    raise ValueError(f"--override-kv type must be int, float, bool or str, got {kind!r}")


def _format_kv(item: tuple[str, int | float | bool | str]) -> str:
    key, value = item
    kind = ("bool" if isinstance(value, bool) else "int" if isinstance(value, int)
            else "float" if isinstance(value, float) else "str")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"{key}={kind}:{text}"


@document
@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelParams(_Params):
    """How a model is loaded and placed on devices (``llama_model_params``)."""

    n_gpu_layers: int | None = param(
        None, "-ngl", "--n-gpu-layers", "--gpu-layers", parse=int, metavar="N",
        help="layers to store on GPU/other devices; negative: all")
    split_mode: SplitMode | str | None = param(
        None, "-sm", "--split-mode", parse=_enum_parser(SplitMode, "split_mode"),
        format=_enum_text, choices=("none", "layer", "row", "tensor"),
        help="how to split the model across devices")
    main_gpu: int | None = param(
        None, "-mg", "--main-gpu", parse=int, metavar="INDEX",
        help="device for the whole model with split_mode 'none'")
    tensor_split: Sequence[float] | None = param(
        None, "-ts", "--tensor-split", parse=parse_floats, format=format_floats,
        metavar="N0,N1,...", help="proportion of the model per device, e.g. 3,1")
    devices: Sequence[str] | None = param(
        None, "-dev", "--device", parse=parse_names, format=format_names, metavar="DEV,...",
        help="devices to offload to (names from llama_cffi.devices()); default all")
    tensor_overrides: Sequence[tuple[str, str]] | Mapping[str, str] = param(
        (), "-ot", "--override-tensor", parse=_parse_override, repeat=True,
        format=lambda pair: f"{pair[0]}={pair[1]}", metavar="PATTERN=BUFFER_TYPE",
        help="keep weight tensors matching PATTERN (a regex) in BUFFER_TYPE, e.g. "
             "'\\.ffn_.*_exps\\.=CPU'; the first match decides; repeatable")
    cpu_moe: bool = param(False, "-cmoe", "--cpu-moe",
                          help="keep all MoE expert weights in host memory")
    n_cpu_moe: int = param(0, "-ncmoe", "--n-cpu-moe", parse=int, metavar="N",
                           help="keep the MoE expert weights of the first N layers in host memory")
    n_cpu_ffn: int = param(0, "-ncffn", "--n-cpu-ffn", parse=int, metavar="N",
                           help="keep the dense FFN weights of the first N layers in host memory")
    kv_overrides: (Sequence[tuple[str, int | float | bool | str]]
                   | Mapping[str, int | float | bool | str]) = param(
        (), "--override-kv", parse=_parse_kv, format=_format_kv, repeat=True,
        metavar="KEY=TYPE:VALUE", help="override a metadata value (TYPE: int, float, bool, str)")
    load_mode: LoadMode | str | None = param(
        None, "-lm", "--load-mode", parse=_enum_parser(LoadMode, "load_mode"),
        format=_enum_text, choices=("auto", "none", "mmap", "mlock", "mmap+mlock", "dio"),
        help="how weights are read: memory-mapped, locked in RAM, direct I/O")
    vocab_only: bool = param(False, "--vocab-only",
                             help="load only the vocabulary, no weights (tokenizing)")
    check_tensors: bool = param(False, "--check-tensors",
                                help="validate the tensor data while loading")
    use_extra_bufts: bool | None = param(
        None, "--repack", negative=("-nr", "--no-repack"),
        help="repack weights into the CPU's faster layouts (extra buffer types)")
    no_host: bool | None = param(
        None, "--no-host", help="bypass host buffers for weights (llama.cpp's no_host)")
    no_alloc: bool = param(
        False, "--no-alloc",
        help="plan the placement without allocating weight memory (inspect a model cheaply)")

    ALIASES = {"gpu_layers": "n_gpu_layers", "ngl": "n_gpu_layers", "device": "devices",
               "override_tensor": "tensor_overrides", "override_kv": "kv_overrides"}

    def __post_init__(self) -> None:
        if self.n_gpu_layers is not None:  # int32_t in C
            self._set("n_gpu_layers", _int(self.n_gpu_layers, "n_gpu_layers",
                                           minimum=-INT32_MAX - 1, maximum=INT32_MAX))
        if self.split_mode is not None:
            self._set("split_mode", parse_enum(SplitMode, self.split_mode, "split_mode"))
        if self.main_gpu is not None:
            self._set("main_gpu", _int(self.main_gpu, "main_gpu", minimum=0, maximum=INT32_MAX))
        if self.tensor_split is not None:
            ts = tuple(_float(x, "tensor_split") for x in self.tensor_split)
            if any(x < 0 for x in ts):
                raise ValueError("tensor_split proportions must be >= 0")
            self._set("tensor_split", ts)
        if self.devices is not None:
            if isinstance(self.devices, str):
                self._set("devices", parse_names(self.devices))
            else:
                self._set("devices", tuple(str(d) for d in self.devices))
        overrides = _pairs(self.tensor_overrides, "tensor_overrides")
        for pattern, target in overrides:
            if not isinstance(pattern, str) or not isinstance(target, str):
                raise TypeError("tensor_overrides maps regex strings to buffer type names")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"tensor_overrides: pattern {pattern!r} is not a regex: {exc}") from None
        self._set("tensor_overrides", overrides)
        self._set("n_cpu_moe", _int(self.n_cpu_moe, "n_cpu_moe", minimum=0))
        self._set("n_cpu_ffn", _int(self.n_cpu_ffn, "n_cpu_ffn", minimum=0))
        kv = _pairs(self.kv_overrides, "kv_overrides")
        for key, value in kv:
            if not isinstance(key, str) or not isinstance(value, (int, float, bool, str)):
                raise TypeError("kv_overrides maps metadata keys to int, float, bool or str")
            if len(key.encode()) >= 128:
                raise ValueError(f"kv_overrides: key {key!r} is longer than 127 bytes")
            problem = value_problem(key, value)  # llama.cpp would abort on it
            if problem:
                raise ValueError(f"kv_overrides: {problem}")
        self._set("kv_overrides", kv)
        if self.load_mode is not None:
            self._set("load_mode", parse_enum(LoadMode, self.load_mode, "load_mode"))
        for name in ("cpu_moe", "vocab_only", "check_tensors", "no_alloc"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False")
        for name in ("use_extra_bufts", "no_host"):
            _opt_bool(getattr(self, name), name)

    @classmethod
    def normalise(cls, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Also maps llama-cpp-python's ``use_mmap``/``use_mlock`` onto ``load_mode``."""
        kw = dict(kwargs)
        use_mmap, use_mlock = kw.pop("use_mmap", None), kw.pop("use_mlock", None)
        if use_mmap is not None or use_mlock is not None:
            if kw.get("load_mode") is not None:
                raise ValueError("give either load_mode or use_mmap/use_mlock, not both")
            mmap = True if use_mmap is None else bool(use_mmap)
            mlock = bool(use_mlock)
            kw["load_mode"] = (LoadMode.MMAP_MLOCK if mmap and mlock else LoadMode.MMAP if mmap
                               else LoadMode.MLOCK if mlock else LoadMode.NONE)
        return super().normalise(kw)
