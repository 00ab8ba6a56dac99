"""llama.cpp's CUDA backend as a plugin of the portable llama-cffi wheel.

This package holds only ``libggml-cuda.so``. It is found through the entry
point ``llama_cffi.backends: cuda``: the core package, built with backends as
loadable modules, imports this module and then loads every ``libggml-*.so``
in its folder with ``ggml_backend_load``.

Importing it first checks that CUDA can run here, so that a machine without
one says why in words instead of a loader error:

- the NVIDIA driver's ``libcuda.so.1`` must be loadable (the backend links
  it; it comes with the driver, never with a wheel);
- the CUDA runtime (NVIDIA's ``nvidia-cuda-runtime`` wheel, the same
  ``libcudart.so.13`` the backend loads) must report at least one device.

Either failing raises :class:`CudaUnavailable` (an ImportError); the core's
loader then warns with its message and goes on without CUDA.
``LLAMA_CFFI_CUDA_NO_CHECK=1`` skips the check (the backend is then loaded
whatever it finds, and registers with zero devices where there are none).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

#: the folder that holds the backend module
LIBRARY_DIR = Path(__file__).resolve().parent
#: where NVIDIA's CUDA 13 runtime wheels put their libraries (the module's RPATH)
NVIDIA_LIB_DIR = LIBRARY_DIR.parent / "nvidia" / "cu13" / "lib"
ENV_NO_CHECK = "LLAMA_CFFI_CUDA_NO_CHECK"


class CudaUnavailable(ImportError):
    """CUDA cannot run on this machine: no NVIDIA driver, or no device."""


def _runtime() -> ctypes.CDLL:
    wheel_lib = NVIDIA_LIB_DIR / "libcudart.so.13"
    name = str(wheel_lib) if wheel_lib.is_file() else "libcudart.so.13"
    try:
        return ctypes.CDLL(name)
    except OSError as exc:
        raise CudaUnavailable(
            f"the CUDA runtime {name} cannot be loaded ({exc}); install it with "
            "pip install nvidia-cuda-runtime (a dependency of llama-cffi-cuda)") from exc


def device_count() -> int:
    """The number of CUDA devices the runtime sees; raises CudaUnavailable with
    the runtime's reason when it cannot tell (no driver, driver too old ...)."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise CudaUnavailable(
            "no NVIDIA driver on this machine (libcuda.so.1 cannot be loaded: "
            f"{exc}); the CUDA backend needs an NVIDIA GPU and its driver") from exc
    rt = _runtime()
    rt.cudaGetErrorString.restype = ctypes.c_char_p
    rt.cudaGetErrorString.argtypes = [ctypes.c_int]
    n = ctypes.c_int(0)
    err = int(rt.cudaGetDeviceCount(ctypes.byref(n)))
    if err != 0:
        reason = (rt.cudaGetErrorString(err) or b"unknown error").decode(errors="replace")
        raise CudaUnavailable(f"CUDA found no device: {reason} (cudaGetDeviceCount error {err})")
    return n.value


def _check() -> None:
    if os.environ.get(ENV_NO_CHECK) == "1":
        return
    if device_count() == 0:
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        extra = f" (CUDA_VISIBLE_DEVICES={hidden!r})" if hidden is not None else ""
        raise CudaUnavailable(f"CUDA found no device{extra}")


_check()
