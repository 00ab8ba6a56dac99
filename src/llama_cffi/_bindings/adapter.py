"""Adapters: LoRA (``llama_adapter_lora``) and control vector files (GGUF
tensors read with ggml)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import LlamaError, ModelLoadError
from . import checked
from .init import ensure_initialised
from .raw import NULL, CData, ffi, lib

# -- LoRA -------------------------------------------------------------------------------


def lora_init(model: CData, path: str | os.PathLike[str]) -> CData:
    """``llama_adapter_lora_init``; ModelLoadError (with llama.cpp's log) on failure."""
    return checked.pointer(lib.llama_adapter_lora_init, model, os.fsencode(path),
                           error=ModelLoadError, what=f"failed to load LoRA adapter {path}")


def lora_free(ptr: CData, *keep_alive: object) -> None:
    """``llama_adapter_lora_free``; ``keep_alive`` (the model) is freed only after this."""
    lib.llama_adapter_lora_free(ptr)


def lora_metadata(ptr: CData) -> dict[str, str]:
    """All GGUF key/value pairs of an adapter, as strings."""
    return checked.metadata_dict(ptr, lib.llama_adapter_meta_count,
                                 lib.llama_adapter_meta_key_by_index,
                                 lib.llama_adapter_meta_val_str_by_index)


def lora_meta(ptr: CData, key: str) -> str | None:
    """One metadata value of an adapter, None if absent."""
    k = key.encode()
    return checked.sized_string(lambda b, n: int(lib.llama_adapter_meta_val_str(ptr, k, b, n)))


# -- GGUF tensors (control vectors) -----------------------------------------------------


def read_f32_vectors(path: str | os.PathLike[str]) -> dict[str, np.ndarray | None]:
    """Every tensor of the GGUF file at ``path``, in the file's order: a copy
    of its values for a 1-D F32 tensor, None for any other tensor.

    Raises LlamaError (with llama.cpp's log) when the file is not a readable GGUF.
    """
    ensure_initialised()
    ggml_ctx = ffi.new("struct ggml_context **")
    params = ffi.new("struct gguf_init_params *")
    params.no_alloc = False
    params.ctx = ggml_ctx
    gguf = checked.pointer(lib.gguf_init_from_file, os.fsencode(path), params[0],
                           error=LlamaError, what=f"{path} is not a readable GGUF file")
    try:
        out: dict[str, np.ndarray | None] = {}
        for i in range(lib.gguf_get_n_tensors(gguf)):
            name = checked.string(lib.gguf_get_tensor_name(gguf, i))
            t = lib.ggml_get_tensor(ggml_ctx[0], name.encode())
            if t == NULL or t.type != lib.GGML_TYPE_F32 or lib.ggml_n_dims(t) != 1:
                out[name] = None
            else:
                n = int(lib.ggml_nelements(t))
                out[name] = np.frombuffer(ffi.buffer(t.data, n * 4), dtype=np.float32).copy()
        return out
    finally:
        lib.gguf_free(gguf)
        if ggml_ctx[0] != NULL:
            lib.ggml_free(ggml_ctx[0])
