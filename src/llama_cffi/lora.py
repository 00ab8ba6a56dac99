"""LoRA adapters (``llama_adapter_lora``), applied per context with a scale."""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

from . import _log
from ._cstr import metadata_dict
from ._ffi import ffi, lib
from ._handle import Handle
from .errors import ModelLoadError
from .model import Model


def _free_adapter(ptr: Any, model: Model) -> None:
    # ``model`` rides along: an adapter must be freed before its model.
    lib.llama_adapter_lora_free(ptr)


class LoraAdapter(Handle):
    """A LoRA adapter GGUF loaded for ``model`` (``--lora``).

    Apply it to a context with ``ctx.set_loras({adapter: scale})``; change the
    scale or remove it later without reloading anything. Closing the model
    closes its adapters.
    """

    def __init__(self, model: Model, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if not p.is_file():
            raise ModelLoadError(f"LoRA adapter file not found: {p}")
        mark = _log.mark()
        ptr = lib.llama_adapter_lora_init(model.ptr, os.fsencode(p))
        if ptr == ffi.NULL:
            raise ModelLoadError(f"failed to load LoRA adapter {p}", log=_log.problems_since(mark))
        self._own(ptr, _free_adapter, model)
        model._adopt(self)
        self.model = model
        self.path = p
        self._users: weakref.WeakSet[Any] = weakref.WeakSet()  # contexts applying it

    def close(self) -> None:
        """Free the adapter, first removing it from every context that applies it."""
        for ctx in list(self._users):
            if not ctx.closed and self in ctx.loras:
                ctx.set_loras({a: s for a, s in ctx.loras.items() if a is not self})
        super().close()

    @property
    def metadata(self) -> dict[str, str]:
        return metadata_dict(self.ptr, lib.llama_adapter_meta_count,
                             lib.llama_adapter_meta_key_by_index,
                             lib.llama_adapter_meta_val_str_by_index)

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"<LoraAdapter {self.path.name}{' (closed)' if self.closed else ''}>"

