"""llama.cpp's Vulkan backend as a plugin of the portable llama-cffi wheel.

This package holds only ``libggml-vulkan.so``. It is found through the entry
point ``llama_cffi.backends: vulkan``: the core package, built with backends as
loadable modules, imports this module and loads every ``libggml-*.so`` in its
folder with ``ggml_backend_load``. Nothing here is meant to be called.
"""

from __future__ import annotations

from pathlib import Path

#: the folder that holds the backend module(s)
LIBRARY_DIR = Path(__file__).resolve().parent
