"""What every handler shares: the configuration, the model manager, counters."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from ..._version import __version__
from ...objects.system import system_info
from .config import ServerConfig
from .errors import ApiError
from .manager import LoadedModel, ModelManager, UnknownModelError
from .ollama_info import EMBEDDING_ARCHS


class ServerState:
    """The server's shared state (one per app; used from the event loop only)."""

    def __init__(self, config: ServerConfig, manager: ModelManager) -> None:
        self.config = config
        self.manager = manager
        self.started = int(time.time())
        self.info = system_info()
        self.fingerprint = f"llama-cffi-{__version__}-{self.info.llama_commit[:10]}"
        self.http_requests = Counter[tuple[str, str, int]]()
        """(method, route, status) -> answers whose status line was sent."""
        self.http_disconnects = Counter[tuple[str, str, str]]()
        """(method, route, phase) -> clients gone before their answer was complete
        (phase ``request``: before its status line, ``response``: during its body)."""
        self.bad_requests = Counter[str]()
        """4xx answers by route."""

    def model_card(self, name: str) -> dict[str, Any]:
        """One entry of /v1/models: configured, and loaded or not."""
        entry = self.manager.entry(name)
        lm = self.manager.loaded.get(entry.name)
        card: dict[str, Any] = {
            "id": entry.name, "object": "model", "created": self.started,
            "owned_by": "llama-cffi", "aliases": list(entry.aliases),
            "status": {"value": "loaded" if lm is not None else "unloaded",
                       "ttl": entry.ttl},
        }
        if lm is not None:
            m = lm.llm.model
            card["meta"] = {"n_ctx_train": m.n_ctx_train, "n_embd": m.n_embd,
                            "n_params": m.n_params, "size": m.size,
                            "n_ctx": lm.llm.ctx.n_ctx, "n_parallel": lm.llm.ctx.n_seq_max}
            card["status"]["loaded_at"] = int(lm.loaded_at)
        return card

    def check_generates(self, lm: LoadedModel) -> None:
        """A 400 for generation requests to an embedding model (BERT and the like,
        or any model whose GGUF declares a pooling type)."""
        model = lm.llm.model
        arch = model.architecture or ""
        pooling = model.meta(f"{arch}.pooling_type")
        if arch in EMBEDDING_ARCHS or pooling not in (None, "0"):
            raise ApiError(400, f"model {lm.entry.name!r} is an embedding model ({arch}): use "
                                "/v1/embeddings", param="model", code="model_not_generative")

    def manager_lookup_error(self, name: str) -> UnknownModelError:
        known = ", ".join(n for e in self.config.models for n in e.names)
        return UnknownModelError(f"model {name!r} is not served here; known models: {known}")
