"""The compiled cffi module: the raw layer.

This is the raw layer: ``ffi`` and ``lib`` straight from the extension that
the build generated from ``cdef/*.cdef`` and compiled against llama.cpp's real
headers. Nothing here checks arguments; calling ``lib`` functions directly
with bad pointers or out-of-range ids can crash the interpreter. Use the
objects in :mod:`llama_cffi` instead.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__

try:
    from .._llama import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "llama_cffi's compiled extension could not be loaded "
        f"({exc}). Install the package with `pip install .` (it compiles llama.cpp); "
        "importing from a source checkout without building does not work."
    ) from exc

__all__ = ["BUILD_BACKENDS", "BUILD_OPTIONS", "BUILD_VERSION", "CData", "HAVE_RPC",
           "LLAMA_COMMIT", "NULL", "ffi", "lib"]

BUILD_VERSION: str = ffi.string(lib.llama_cffi_build_version()).decode()
LLAMA_COMMIT: str = ffi.string(lib.llama_cffi_build_llama_commit()).decode()
BUILD_BACKENDS: tuple[str, ...] = tuple(
    b for b in ffi.string(lib.llama_cffi_build_backends()).decode().split(",") if b)
BUILD_OPTIONS: tuple[str, ...] = tuple(
    o for o in ffi.string(lib.llama_cffi_build_options()).decode().split(",") if o)
HAVE_RPC: bool = hasattr(lib, "ggml_backend_rpc_add_server")

if BUILD_VERSION != __version__:
    raise ImportError(
        f"llama_cffi's compiled extension was built for version {BUILD_VERSION} but the "
        f"Python package is {__version__}; reinstall the package so both match.")

CData = Any
"""A cffi pointer, array or struct (cffi values carry no static types)."""

NULL: Any = ffi.NULL
