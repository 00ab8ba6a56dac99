"""A loaded GGUF model (``llama_model``)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._bindings import log as _log
from .._bindings import model as _M
from .._bindings.callbacks import CallbackState
from .._bindings.enums import RopeType
from .._bindings.raw import CData, ffi
from ..errors import ModelLoadError, ModelNotFoundError
from . import placement, registry
from .context import Context
from .gguf_check import check_gguf
from .handle import Handle, SharedUse
from .params import ContextParams, ModelParams
from .system import check_gpu_offload, check_rpc_devices, find_device
from .vocab import Vocab

ProgressCallback = Callable[[float], "bool | None"]

GGUF_MAGIC = b"GGUF"


def _check_gguf_file(path: Path, overrides: Any = ()) -> None:
    """Fail early and clearly for paths llama.cpp would only log about, and for
    metadata (with the ``kv_overrides`` applied) its loader would abort on."""
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
    check_gguf(path, overrides)  # what llama.cpp would crash on: see docs/safety.md


def _c_params(p: ModelParams, keep: list[Any]) -> CData:
    """``llama_model_params`` for ``p``; ``keep`` receives the C memory it points into."""
    params = _M.default_params()
    if p.n_gpu_layers is not None:
        params.n_gpu_layers = p.n_gpu_layers
    if p.split_mode is not None:
        params.split_mode = int(p.split_mode)
    if p.main_gpu is not None:
        params.main_gpu = p.main_gpu
    if p.tensor_split is not None:
        max_dev = _M.max_devices()
        if len(p.tensor_split) > max_dev:
            raise ValueError(f"tensor_split has {len(p.tensor_split)} entries; at most {max_dev}")
        arr = ffi.new("float[]", max_dev)
        for i, x in enumerate(p.tensor_split):
            arr[i] = x
        keep.append(arr)
        params.tensor_split = arr
    if p.devices is not None:
        devs = [find_device(name) for name in p.devices]
        arr = ffi.new("ggml_backend_dev_t[]", devs + [ffi.NULL])
        keep.append(arr)
        params.devices = arr
        check_rpc_devices(devs)
    else:
        check_rpc_devices(None)
        check_gpu_offload(p.n_gpu_layers, None)
    overrides = placement.override_list(p.tensor_overrides, p.cpu_moe, p.n_cpu_moe,
                                         p.n_cpu_ffn)
    if overrides:
        params.tensor_buft_overrides = placement.to_c(overrides, keep)
    if p.kv_overrides:
        params.kv_overrides = placement.kv_overrides_to_c(dict(p.kv_overrides), keep)
    if p.load_mode is not None:
        params.load_mode = int(p.load_mode)
    params.vocab_only = p.vocab_only
    params.check_tensors = p.check_tensors
    if p.use_extra_bufts is not None:
        params.use_extra_bufts = p.use_extra_bufts
    if p.no_host is not None:
        params.no_host = p.no_host
    params.no_alloc = p.no_alloc
    return params


class Model(Handle):
    """A model loaded from a GGUF file.

    path: the GGUF file, or a registry short name such as ``"smollm2-135m"``
        (fetched into the cache on first use; see :mod:`llama_cffi.models`)
        [``-m``].
    params: a :class:`~llama_cffi.ModelParams` (placement on devices, load
        mode, overrides; each field names its llama.cpp flag).
    progress: called with a float in [0, 1] while loading; returning ``False``
        (or raising) cancels the load (LoadCancelledError; an exception raised
        by the callback is its ``__cause__``).
    overrides: any :class:`~llama_cffi.ModelParams` field as a keyword
        (``n_gpu_layers=99``, ``tensor_split=[3, 1]``, ``use_mmap=False`` ...),
        applied on top of ``params``.

    Facts that never change (``n_params``, ``n_layer``, ``n_embd``,
    ``n_ctx_train`` ...) are read once, when the model is loaded.

    Thread safety: a Model (and its :class:`~llama_cffi.Vocab`) may be shared
    across threads; contexts on it may not (see :class:`~llama_cffi.Context`).
    ``close()`` waits until no other thread is inside a call on the model
    (tokenizing, creating a context ...) and makes new calls raise
    ClosedError; it closes the model's contexts first (each waits for a decode
    running on another thread), then its samplers and adapters, then frees
    the model.
    """

    _FACTS = ("n_params", "size", "n_layer", "n_embd", "n_embd_inp", "n_head", "n_head_kv", "n_ctx_train",
              "n_swa", "n_cls_out", "rope_type", "has_encoder", "has_decoder", "is_recurrent",
              "is_hybrid", "description")

    def __init__(self, path: str | os.PathLike[str], params: ModelParams | None = None, /, *,
                 progress: ProgressCallback | None = None, **overrides: Any) -> None:
        self.params = ModelParams.from_kwargs(params, **overrides)
        self.path = self._resolve(path)
        _check_gguf_file(self.path, self.params.kv_overrides or ())
        keep: list[Any] = []  # C memory params point into; alive as long as the model
        c_params = _c_params(self.params, keep)
        state = CallbackState(progress) if progress is not None else None
        _M.set_progress(c_params, state)
        ptr, lines = _M.load(self.path, c_params, state)
        self._own(ptr, _M.free)
        self._shared = SharedUse()  # calls in progress; close() waits for them
        self._keep = keep
        self.buffers: dict[str, int] = _log.buffer_sizes(lines, "model")
        """Bytes of weights per buffer type (``CPU_Mapped``, ``CUDA0``,
        ``RPC0[host:port]`` ...), as llama.cpp reported them while loading."""
        self.vocab_only = self.params.vocab_only
        self._vocab_ref: weakref.ref[Vocab] | None = None
        facts = _M.facts(ptr)
        self.n_params: int = facts["n_params"]
        """Number of parameters."""
        self.size: int = facts["size"]
        """Total size of all tensors in bytes."""
        self.n_layer: int = facts["n_layer"]
        self.n_embd: int = facts["n_embd"]
        self.n_embd_inp: int = facts["n_embd_inp"]
        """Size of an input embedding row (what an embedding Batch carries)."""
        self.n_head: int = facts["n_head"]
        self.n_head_kv: int = facts["n_head_kv"]
        self.n_ctx_train: int = facts["n_ctx_train"]
        """Context length the model was trained with."""
        self.n_swa: int = facts["n_swa"]
        """Sliding-window attention size (0 if the model has none)."""
        self.n_cls_out: int = facts["n_cls_out"]
        self.rope_type = RopeType(facts["rope_type"])
        self.has_encoder = bool(facts["has_encoder"])
        self.has_decoder = bool(facts["has_decoder"])
        self.is_recurrent = bool(facts["is_recurrent"])
        self.is_hybrid = bool(facts["is_hybrid"])
        self.description: str = _M.description(ptr)
        """Short description, e.g. ``"llama 135M Q4_1"``."""

    @property
    def vocab(self) -> Vocab:
        """The model's vocabulary (it keeps the model alive, not the reverse)."""
        vocab = self._vocab_ref() if self._vocab_ref is not None else None
        if vocab is None:
            with self._using():  # raises ClosedError if closed
                vocab = Vocab(self)
            self._vocab_ref = weakref.ref(vocab)
        return vocab

    def close(self) -> None:
        """Free the model once no other thread is inside a call on it; its
        contexts are closed first, then its other children. Idempotent."""
        if self._ptr is None:
            return
        shared = self._shared
        if shared is None:
            self._close_now()
        else:
            shared.close("model", self._close_now)

    def _close_now(self) -> None:
        # contexts first: a LoRA adapter's close() removes it from open contexts
        for child in sorted(self._child_list(), key=lambda c: not isinstance(c, Context)):
            child.close()
        super().close()

    @staticmethod
    def _resolve(path: str | os.PathLike[str]) -> Path:
        p = Path(path).expanduser()
        if not p.exists() and isinstance(path, str) and path in registry.REGISTRY:
            return registry.fetch(path)
        return p

    # -- contexts ----------------------------------------------------------

    def context(self, params: ContextParams | None = None, /, *,
                abort_callback: Callable[[], bool] | None = None, **overrides: Any) -> Context:
        """Create a :class:`~llama_cffi.Context` on this model (see its parameters)."""
        return Context(self, params, abort_callback=abort_callback, **overrides)

    # -- metadata ------------------------------------------------------------

    @property
    def metadata(self) -> dict[str, str]:
        """All GGUF metadata key/value pairs, values rendered as strings by llama.cpp."""
        with self._using() as ptr:
            return _M.metadata(ptr)

    def meta(self, key: str) -> str | None:
        """One metadata value, or None if the key is absent."""
        with self._using() as ptr:
            return _M.meta(ptr, key)

    @property
    def architecture(self) -> str | None:
        return self.meta("general.architecture")

    def chat_template(self, name: str | None = None) -> str | None:
        """The chat template stored in the GGUF (``name`` picks a named one)."""
        with self._using() as ptr:
            return _M.chat_template(ptr, name)

    @property
    def n_expert(self) -> int:
        """Number of experts per MoE layer (0 for dense models)."""
        value = self.meta(f"{self.architecture}.expert_count")
        return int(value) if value and value.isdigit() else 0

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0

    def __repr__(self) -> str:
        if self.closed:
            return f"<Model {self.path} (closed)>"
        return f"<Model {self.path.name}: {self.description}>"
