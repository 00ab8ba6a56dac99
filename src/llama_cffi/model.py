"""A loaded GGUF model (``llama_model``)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _log, placement
from ._callbacks import CallbackState
from ._cstr import metadata_dict, sized_string
from ._ffi import ensure_initialised, ffi, lib
from ._handle import Handle
from .enums import EnumLike, LoadMode, RopeType, SplitMode, parse_enum
from .errors import LoadCancelledError, ModelLoadError, ModelNotFoundError
from .vocab import Vocab

if TYPE_CHECKING:
    from .context import Context

ProgressCallback = Callable[[float], "bool | None"]

GGUF_MAGIC = b"GGUF"


def _free_model(ptr: Any) -> None:
    lib.llama_model_free(ptr)


def _check_gguf_file(path: Path) -> None:
    """Fail early and clearly for paths llama.cpp would only log about."""
    if not path.exists():
        raise ModelNotFoundError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise ModelLoadError(
            f"{path} is not a GGUF file (it starts with {magic!r}, a GGUF file starts "
            f"with {GGUF_MAGIC!r}); convert the model with llama.cpp's convert_hf_to_gguf.py")


class Model(Handle):
    """A model loaded from a GGUF file.

    Parameters are those of ``llama_model_params``; ``None`` keeps llama.cpp's
    default. The llama.cpp flag each corresponds to is given in brackets.

    path: the GGUF file, or a registry short name such as ``"smollm2-135m"``
        (fetched into the cache on first use; see :mod:`llama_cffi.models`)
        [``-m``].
    n_gpu_layers: how many layers to store on GPU/other devices; negative
        means all [``-ngl``].
    split_mode: ``"none"``, ``"layer"``, ``"row"`` or ``"tensor"`` [``-sm``].
    main_gpu: the device used for the whole model with ``split_mode="none"``
        [``-mg``].
    tensor_split: proportion of the model per device, e.g. ``[3, 1]`` [``-ts``].
    devices: names of the devices to offload to (see :func:`llama_cffi.devices`),
        default all [``-dev``].
    tensor_overrides: ``{regex: buffer type}`` (or a list of pairs), e.g.
        ``{r"\.ffn_(up|down)_exps\.": "CPU"}``; the first matching pattern
        decides where a weight tensor goes [``-ot``].
    cpu_moe: keep all MoE expert weights in host memory [``--cpu-moe``].
    n_cpu_moe: keep the expert weights of the first N layers in host memory
        [``--n-cpu-moe``].
    n_cpu_ffn: keep the dense FFN weights of the first N layers in host memory
        [``--n-cpu-ffn``].
    kv_overrides: metadata values to override, ``{"key": int|float|bool|str}``
        [``--override-kv``].
    load_mode: ``"auto"``, ``"none"``, ``"mmap"``, ``"mlock"``,
        ``"mmap+mlock"`` or ``"dio"`` (direct I/O) [``--mmap``, ``--mlock``,
        ``--direct-io``]. ``use_mmap``/``use_mlock`` are accepted as aliases.
    vocab_only: load only the vocabulary, no weights.
    check_tensors: validate the tensor data while loading [``--check-tensors``].
    no_alloc: read the metadata and plan the placement without allocating
        weight memory (facts such as ``n_params`` and ``size`` are available,
        ``buffers`` are all zero); for inspecting a model cheaply.
    progress: called with a float in [0, 1] while loading; returning ``False``
        (or raising) cancels the load.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_gpu_layers: int | None = None,
        split_mode: EnumLike | None = None,
        main_gpu: int | None = None,
        tensor_split: Sequence[float] | None = None,
        devices: Sequence[str] | None = None,
        tensor_overrides: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        cpu_moe: bool = False,
        n_cpu_moe: int = 0,
        n_cpu_ffn: int = 0,
        kv_overrides: Mapping[str, int | float | bool | str] | None = None,
        load_mode: EnumLike | None = None,
        use_mmap: bool | None = None,
        use_mlock: bool | None = None,
        vocab_only: bool = False,
        check_tensors: bool = False,
        use_extra_bufts: bool | None = None,
        no_host: bool | None = None,
        no_alloc: bool = False,
        progress: ProgressCallback | None = None,
    ) -> None:
        ensure_initialised()
        self.path = self._resolve(path)
        _check_gguf_file(self.path)

        params = lib.llama_model_default_params()
        keep: list[Any] = []  # C memory params point into; alive until the load returns
        if n_gpu_layers is not None:
            params.n_gpu_layers = int(n_gpu_layers)
        if split_mode is not None:
            params.split_mode = parse_enum(SplitMode, split_mode, "split_mode")
        if main_gpu is not None:
            params.main_gpu = int(main_gpu)
        if tensor_split is not None:
            max_dev = int(lib.llama_max_devices())
            if len(tensor_split) > max_dev:
                raise ValueError(f"tensor_split has {len(tensor_split)} entries; at most {max_dev}")
            if any(float(x) < 0 for x in tensor_split):
                raise ValueError("tensor_split proportions must be >= 0")
            arr = ffi.new("float[]", max_dev)
            for i, x in enumerate(tensor_split):
                arr[i] = float(x)
            keep.append(arr)
            params.tensor_split = arr
        from .system import check_rpc_devices, find_device

        if devices is not None:
            devs = [find_device(name) for name in devices]
            arr = ffi.new("ggml_backend_dev_t[]", devs + [ffi.NULL])
            keep.append(arr)
            params.devices = arr
            check_rpc_devices(devs)
        else:
            check_rpc_devices(None)
        overrides = placement.override_list(tensor_overrides, cpu_moe, int(n_cpu_moe),
                                             int(n_cpu_ffn))
        if overrides:
            params.tensor_buft_overrides = placement.to_c(overrides, keep)
        if kv_overrides:
            params.kv_overrides = placement.kv_overrides_to_c(kv_overrides, keep)
        params.load_mode = self._load_mode(load_mode, use_mmap, use_mlock, params.load_mode)
        params.vocab_only = bool(vocab_only)
        params.check_tensors = bool(check_tensors)
        if use_extra_bufts is not None:
            params.use_extra_bufts = bool(use_extra_bufts)
        if no_host is not None:
            params.no_host = bool(no_host)
        params.no_alloc = bool(no_alloc)
        state = None
        if progress is not None:
            state = CallbackState(progress)
            params.progress_callback = lib._llama_cffi_progress
            params.progress_callback_user_data = state.handle

        mark = _log.mark()
        with _log.collect() as lines:
            ptr = lib.llama_model_load_from_file(os.fsencode(self.path), params)
        if state is not None:
            err = state.error
            if ptr == ffi.NULL and err is not None:
                raise LoadCancelledError(
                    f"loading {self.path} was cancelled: the progress callback raised "
                    f"{type(err).__name__}: {err}") from err
        if ptr == ffi.NULL:
            detail = _log.problems_since(mark)
            if state is not None and state.stopped:
                raise LoadCancelledError(
                    f"loading {self.path} was cancelled by the progress callback")
            raise ModelLoadError(f"failed to load model from {self.path}", log=detail)
        self._own(ptr, _free_model)
        self._keep = keep  # override strings/arrays: alive as long as the model
        self.buffers: dict[str, int] = _log.buffer_sizes(lines, "model")
        """Bytes of weights per buffer type (``CPU_Mapped``, ``CUDA0``,
        ``RPC0[host:port]`` ...), as llama.cpp reported them while loading."""
        self.vocab_only = bool(vocab_only)
        self._vocab_ref: weakref.ref[Vocab] | None = None

    @property
    def vocab(self) -> Vocab:
        """The model's vocabulary (it keeps the model alive, not the reverse)."""
        vocab = self._vocab_ref() if self._vocab_ref is not None else None
        if vocab is None:
            self.ptr  # raise ClosedError if closed
            vocab = Vocab(self)
            self._vocab_ref = weakref.ref(vocab)
        return vocab

    @staticmethod
    def _resolve(path: str | os.PathLike[str]) -> Path:
        p = Path(path).expanduser()
        if not p.exists() and isinstance(path, str):
            from . import models

            if path in models.REGISTRY:
                return models.fetch(path)
        return p

    @staticmethod
    def _load_mode(load_mode: EnumLike | None, use_mmap: bool | None,
                   use_mlock: bool | None, default: int) -> int:
        if load_mode is not None:
            if use_mmap is not None or use_mlock is not None:
                raise ValueError("give either load_mode or use_mmap/use_mlock, not both")
            return parse_enum(LoadMode, load_mode, "load_mode")
        if use_mmap is None and use_mlock is None:
            return default
        mmap = True if use_mmap is None else use_mmap
        mlock = bool(use_mlock)
        if mmap and mlock:
            return LoadMode.MMAP_MLOCK
        if mmap:
            return LoadMode.MMAP
        return LoadMode.MLOCK if mlock else LoadMode.NONE

    # -- contexts ----------------------------------------------------------

    def context(self, **params: Any) -> Context:
        """Create a :class:`~llama_cffi.Context` on this model (see its parameters)."""
        from .context import Context

        return Context(self, **params)

    # -- facts ---------------------------------------------------------------

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return int(lib.llama_model_n_params(self.ptr))

    @property
    def size(self) -> int:
        """Total size of all tensors in bytes."""
        return int(lib.llama_model_size(self.ptr))

    @property
    def n_layer(self) -> int:
        return int(lib.llama_model_n_layer(self.ptr))

    @property
    def n_embd(self) -> int:
        return int(lib.llama_model_n_embd(self.ptr))

    @property
    def n_head(self) -> int:
        return int(lib.llama_model_n_head(self.ptr))

    @property
    def n_head_kv(self) -> int:
        return int(lib.llama_model_n_head_kv(self.ptr))

    @property
    def n_ctx_train(self) -> int:
        """Context length the model was trained with."""
        return int(lib.llama_model_n_ctx_train(self.ptr))

    @property
    def n_swa(self) -> int:
        """Sliding-window attention size (0 if the model has none)."""
        return int(lib.llama_model_n_swa(self.ptr))

    @property
    def rope_type(self) -> RopeType:
        return RopeType(lib.llama_model_rope_type(self.ptr))

    @property
    def description(self) -> str:
        """Short description, e.g. ``"llama 135M Q4_1"``."""
        buf = ffi.new("char[]", 256)
        n = lib.llama_model_desc(self.ptr, buf, len(buf))
        return ffi.unpack(buf, min(max(n, 0), len(buf) - 1)).decode("utf-8", "replace")

    @property
    def metadata(self) -> dict[str, str]:
        """All GGUF metadata key/value pairs, values rendered as strings by llama.cpp."""
        return metadata_dict(self.ptr, lib.llama_model_meta_count,
                             lib.llama_model_meta_key_by_index,
                             lib.llama_model_meta_val_str_by_index)

    def meta(self, key: str) -> str | None:
        """One metadata value, or None if the key is absent."""
        ptr = self.ptr
        k = key.encode()
        return sized_string(lambda b, n: lib.llama_model_meta_val_str(ptr, k, b, n))

    @property
    def architecture(self) -> str | None:
        return self.meta("general.architecture")

    def chat_template(self, name: str | None = None) -> str | None:
        """The chat template stored in the GGUF (``name`` picks a named one)."""
        ptr = lib.llama_model_chat_template(self.ptr, name.encode() if name else ffi.NULL)
        return None if ptr == ffi.NULL else ffi.string(ptr).decode("utf-8", "replace")

    @property
    def n_expert(self) -> int:
        """Number of experts per MoE layer (0 for dense models)."""
        value = self.meta(f"{self.architecture}.expert_count")
        return int(value) if value and value.isdigit() else 0

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0

    @property
    def has_encoder(self) -> bool:
        return bool(lib.llama_model_has_encoder(self.ptr))

    @property
    def has_decoder(self) -> bool:
        return bool(lib.llama_model_has_decoder(self.ptr))

    @property
    def is_recurrent(self) -> bool:
        return bool(lib.llama_model_is_recurrent(self.ptr))

    @property
    def is_hybrid(self) -> bool:
        return bool(lib.llama_model_is_hybrid(self.ptr))

    def __repr__(self) -> str:
        if self.closed:
            return f"<Model {self.path} (closed)>"
        return f"<Model {self.path.name}: {self.description}>"

