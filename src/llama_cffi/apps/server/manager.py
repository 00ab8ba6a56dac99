"""Loading and unloading models on demand (llama-swap's job, in-process).

A model is loaded by the first request that names it; requests for it that
arrive meanwhile wait for that load, requests for models already loaded are
not held up (loading runs on a worker thread). A model nobody has used for
its ``ttl`` seconds is unloaded; when ``max_loaded`` models are loaded, the
least recently used idle one is unloaded to make room. A model is never
unloaded while a request is using it.

Thread safety: a ModelManager belongs to one asyncio event loop (the
server's); its methods must be called from that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ...api.llm import LLM
from ...errors import LlamaError
from ...objects import registry, rpc
from .config import ModelEntry, ServerConfig

log = logging.getLogger("llama_cffi.server")

Loader = Callable[[ModelEntry], LLM]


class UnknownModelError(LlamaError, LookupError):
    """The request names a model that is not configured."""


class ModelUnavailableError(LlamaError):
    """The model could not be loaded (or no room could be made in time)."""


def load_entry(entry: ModelEntry) -> LLM:
    """Load ``entry`` as the server does (blocking: call it on a worker thread)."""
    for endpoint in entry.rpc:
        rpc.add_server(endpoint)
    path = registry.resolve(entry.model)
    spec = entry.speculative
    if spec.draft_model is not None:
        spec = spec.replace(draft_model=str(registry.resolve(spec.draft_model)))
    return LLM(path, model_params=entry.model_params, context_params=entry.context_params,
               speculative=spec, sampling=entry.sampling, mmproj=entry.mmproj)


@dataclass
class LoadedModel:
    """A loaded model and its bookkeeping."""

    entry: ModelEntry
    llm: LLM
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    keep_alive: float | None = None
    """Seconds to stay loaded when idle, set by a request (Ollama's
    ``keep_alive``); None: the entry's ttl. Negative: forever."""

    @property
    def ttl(self) -> float:
        return self.entry.ttl if self.keep_alive is None else self.keep_alive

    def expires_at(self) -> float | None:
        """time.monotonic() when this idle model is to be unloaded (None: never)."""
        ttl = self.ttl
        if ttl < 0 or (ttl == 0 and self.keep_alive is None):
            return None  # ttl 0 in the config means never; keep_alive 0 means now
        return self.last_used + ttl


class ModelManager:
    """The configured models and the loaded ones (see the module docstring)."""

    def __init__(self, config: ServerConfig, *, loader: Loader = load_entry) -> None:
        self.config = config
        self.loader = loader
        self.loaded: dict[str, LoadedModel] = {}
        self._loading: set[str] = set()
        self._cond = asyncio.Condition()
        self._reaper: asyncio.Task[None] | None = None
        self.loads = Counter[str]()
        """Successful loads by model name."""
        self.load_failures = Counter[str]()
        self.unloads = Counter[tuple[str, str]]()
        """Unloads by (model name, reason: ttl, lru, keep_alive, shutdown, request)."""
        self.load_seconds: dict[str, float] = {}
        self.retired: dict[str, Counter[str]] = {}
        """Engine counters of unloaded instances, by model name (so /metrics
        counters do not go back when a model is unloaded)."""

    # -- lifetime ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def stop(self) -> None:
        """Stop the TTL task and unload every model (running requests are cancelled)."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        async with self._cond:
            victims = list(self.loaded.values())
            self.loaded.clear()
        for lm in victims:
            await self._close(lm, "shutdown")

    # -- lookup -------------------------------------------------------------------------

    def entry(self, name: str | None) -> ModelEntry:
        """The configured model ``name`` (None or "": the only/first one)."""
        if not name:
            if len(self.config.models) == 1 or self.loaded:
                if len(self.config.models) == 1:
                    return self.config.models[0]
                latest = max(self.loaded.values(), key=lambda lm: lm.last_used)
                return latest.entry
            return self.config.models[0]
        found = self.config.resolve(name)
        if found is None:
            known = ", ".join(n for e in self.config.models for n in e.names)
            raise UnknownModelError(f"model {name!r} is not served here; known models: {known}")
        return found

    def is_loaded(self, name: str) -> bool:
        return name in self.loaded

    # -- use ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(self, name: str | None, *,
                  keep_alive: float | None = None) -> AsyncIterator[LoadedModel]:
        """Hold model ``name`` for one request, loading it first if needed.

        keep_alive: after this request, keep the model loaded this many
            seconds when idle (0 = unload as soon as it is idle, < 0 = forever).
        """
        entry = self.entry(name)
        lm = await self._acquire(entry)
        try:
            yield lm
        finally:
            async with self._cond:
                lm.in_flight -= 1
                lm.last_used = time.monotonic()
                if keep_alive is not None:
                    lm.keep_alive = keep_alive
                unload_now = (lm.in_flight == 0 and lm.keep_alive == 0
                              and self.loaded.get(entry.name) is lm)
                if unload_now:
                    del self.loaded[entry.name]
                self._cond.notify_all()
            if unload_now:
                await self._close(lm, "keep_alive")

    async def unload(self, name: str, reason: str = "request") -> bool:
        """Unload ``name`` now if it is loaded and idle; True if it was unloaded."""
        entry = self.entry(name)
        async with self._cond:
            lm = self.loaded.get(entry.name)
            if lm is None or lm.in_flight:
                return False
            del self.loaded[entry.name]
            self._cond.notify_all()
        await self._close(lm, reason)
        return True

    async def _acquire(self, entry: ModelEntry) -> LoadedModel:
        deadline = time.monotonic() + self.config.load_timeout
        victim: LoadedModel | None = None
        async with self._cond:
            while True:
                lm = self.loaded.get(entry.name)
                if lm is not None:
                    lm.in_flight += 1
                    lm.last_used = time.monotonic()
                    return lm
                if entry.name not in self._loading:
                    limit = self.config.max_loaded
                    if not limit or len(self.loaded) + len(self._loading) < limit:
                        break
                    idle = [m for m in self.loaded.values() if m.in_flight == 0]
                    if idle:
                        victim = min(idle, key=lambda m: m.last_used)
                        del self.loaded[victim.entry.name]
                        break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ModelUnavailableError(
                        f"model {entry.name!r} could not be loaded within "
                        f"{self.config.load_timeout:g} s: the other loaded models stayed busy "
                        f"(max_loaded={self.config.max_loaded})")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), timeout=min(left, 1.0))
            self._loading.add(entry.name)
        try:
            if victim is not None:
                await self._close(victim, "lru")
            log.info("loading model %s (%s)", entry.name, entry.model)
            start = time.monotonic()
            try:
                llm = await asyncio.to_thread(self.loader, entry)
            except Exception as exc:
                self.load_failures[entry.name] += 1
                log.error("loading model %s failed: %s", entry.name, exc)
                raise ModelUnavailableError(f"model {entry.name!r} failed to load: {exc}") \
                    from exc
            self.load_seconds[entry.name] = time.monotonic() - start
            self.loads[entry.name] += 1
            log.info("loaded model %s in %.2f s", entry.name, self.load_seconds[entry.name])
            lm = LoadedModel(entry, llm, in_flight=1)
            async with self._cond:
                self.loaded[entry.name] = lm
            return lm
        finally:
            async with self._cond:
                self._loading.discard(entry.name)
                self._cond.notify_all()

    async def _close(self, lm: LoadedModel, reason: str) -> None:
        log.info("unloading model %s (%s)", lm.entry.name, reason)
        self.unloads[(lm.entry.name, reason)] += 1
        await asyncio.to_thread(lm.llm.close)
        totals = self.retired.setdefault(lm.entry.name, Counter())
        for key, value in vars(lm.llm.engine.metrics).items():
            if key.endswith(("_total", "_failed", "_cancelled", "_evaluated", "_copies",
                             "_calls")) and isinstance(value, int):
                totals[key] += value

    # -- time to live ----------------------------------------------------------------------

    async def reap(self) -> None:
        """Unload every idle model whose time to live has passed."""
        now = time.monotonic()
        async with self._cond:
            expired = [lm for lm in self.loaded.values()
                       if lm.in_flight == 0 and (t := lm.expires_at()) is not None and t <= now]
            for lm in expired:
                del self.loaded[lm.entry.name]
            if expired:
                self._cond.notify_all()
        for lm in expired:
            await self._close(lm, "ttl")

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            try:
                await self.reap()
            except Exception:  # pragma: no cover - never let the task die silently
                log.exception("unloading idle models failed")
