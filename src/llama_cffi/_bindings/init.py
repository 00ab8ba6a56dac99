"""One-time initialisation of llama.cpp: log routing and backends."""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path

from . import loader, log
from .raw import BUILD_OPTIONS, lib

_init_lock = threading.Lock()
_initialised = threading.Event()


def ensure_initialised() -> None:
    """Route llama.cpp's log to :mod:`logging` and initialise its backends, once.

    Every binding that creates a C object calls this first; it costs one
    global read after the first call.
    """
    if _initialised.is_set():
        return
    with _init_lock:
        if _initialised.is_set():
            return
        log.install()
        if "GGML_BACKEND_DL" in BUILD_OPTIONS:
            # Backends are separate modules installed next to the libraries
            # (the best CPU variant of the portable profile) and in plugins.
            loader.load_backends(Path(os.path.dirname(os.path.dirname(__file__))))
        else:
            loader.ignored_plugins()  # compiled-in backends: warn about plugins once
        lib.llama_backend_init()
        atexit.register(log.uninstall)
        _initialised.set()
