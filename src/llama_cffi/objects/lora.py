"""LoRA adapters (``llama_adapter_lora``), applied per context with a scale."""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from .._bindings import adapter
from ..errors import ModelLoadError
from .handle import Handle, SharedUse
from .model import Model

if TYPE_CHECKING:
    from .context import Context


class LoraAdapter(Handle):
    """A LoRA adapter GGUF loaded for ``model`` (``--lora``).

    Apply it to a context with ``ctx.set_loras({adapter: scale})``; change the
    scale or remove it later without reloading anything. Closing the model
    closes its adapters.

    Thread safety: may be shared across threads (contexts on several threads
    may apply it); ``close()`` waits for calls in progress on it, then
    removes it from the contexts applying it (a LlamaError if one of them is
    busy on another thread: close that context first).
    """

    def __init__(self, model: Model, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if not p.is_file():
            raise ModelLoadError(f"LoRA adapter file not found: {p}")
        with model._using() as model_ptr:  # the model is not freed meanwhile
            ptr = adapter.lora_init(model_ptr, p)
            # ``model`` rides along: an adapter must be freed before its model.
            self._own(ptr, adapter.lora_free, model)
            model._adopt(self)
        self._shared = SharedUse()
        self.model = model
        self.path = p
        self._users: weakref.WeakSet[Context] = weakref.WeakSet()  # contexts applying it

    def close(self) -> None:
        """Free the adapter, first removing it from every context that applies it."""
        if self._ptr is None:
            return
        shared = self._shared
        if shared is None:
            self._close_now()
        else:
            shared.close("LoRA adapter", self._close_now)

    def _close_now(self) -> None:
        for ctx in list(self._users):
            if not ctx.closed and self in ctx.loras:
                ctx.set_loras({a: s for a, s in ctx.loras.items() if a is not self})
        super().close()

    @property
    def metadata(self) -> dict[str, str]:
        with self._using() as ptr:
            return adapter.lora_metadata(ptr)

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"<LoraAdapter {self.path.name}{' (closed)' if self.closed else ''}>"

