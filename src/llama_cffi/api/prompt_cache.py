"""Prompt caches: the KV states of earlier requests, in RAM or on disk, for many prompts.

An LLM's slots already reuse the prefix each one holds; a prompt cache keeps
more: after every request the state of its sequence (prompt and output) is
stored, keyed by its tokens, and before a request the entry sharing the
longest prefix with the new prompt is loaded into the slot when that beats
what the slot holds (llama-cpp-python's ``LlamaRAMCache``/``LlamaDiskCache``,
llama-server's ``--cache-ram``). Entries are evicted least recently used
first once their bytes exceed ``capacity_bytes``.

>>> llm.set_cache(RamPromptCache(2 << 30))            # doctest: +SKIP
>>> llm.set_cache(DiskPromptCache("~/.cache/prompts", 10 << 30))

Entries remember the model they were made with (:func:`~.state.model_key`);
a cache shared by several LLMs of different models never hands one model
another's state.

Thread safety: the engine thread uses a cache; the mapping methods may be
called from other threads too (a lock guards the entries).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..engine.slot import common_prefix
from .state import _MAGIC, LLMState


def _key(tokens: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(t) for t in tokens)


def _capacity(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"capacity_bytes must be an integer >= 0, got {value!r}")
    return value


class PromptCache:
    """Base class: an LRU map ``tokens -> LLMState`` bounded by bytes.

    ``cache[tokens]`` returns the entry whose tokens share the longest
    non-empty prefix with ``tokens`` (KeyError if none), as llama-cpp-python's
    caches do; ``cache[tokens] = state`` stores one; :meth:`find` is the same
    lookup restricted to one model.
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = _capacity(capacity_bytes)
        self._lock = threading.RLock()
        self._sizes: OrderedDict[tuple[int, ...], tuple[int, str]] = OrderedDict()
        """key -> (bytes, model), least recently used first."""

    # -- storage (subclasses) -------------------------------------------------------

    def _read(self, key: tuple[int, ...]) -> LLMState | None:
        raise NotImplementedError

    def _write(self, key: tuple[int, ...], state: LLMState) -> None:
        raise NotImplementedError

    def _delete(self, key: tuple[int, ...]) -> None:
        raise NotImplementedError

    # -- the map ------------------------------------------------------------------------

    @property
    def cache_size(self) -> int:
        """Bytes held."""
        with self._lock:
            return sum(n for n, _ in self._sizes.values())

    def __len__(self) -> int:
        return len(self._sizes)

    def keys(self) -> list[tuple[int, ...]]:
        """The entries' tokens, least recently used first."""
        with self._lock:
            return list(self._sizes)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        return iter(self.keys())

    def _longest(self, tokens: Sequence[int], model: str | None) -> tuple[int, ...] | None:
        best, best_n = None, 0
        for key, (_, m) in self._sizes.items():
            if model is not None and m and m != model:
                continue
            n = common_prefix(key, tokens)
            if n > best_n:
                best, best_n = key, n
        return best

    def find(self, tokens: Sequence[int], model: str | None = None) -> LLMState | None:
        """The entry sharing the longest non-empty prefix with ``tokens`` (made
        with ``model``, if given), now the most recently used; or None."""
        with self._lock:
            key = self._longest(tokens, model)
            if key is None:
                return None
            state = self._read(key)
            if state is None:  # gone from the disk meanwhile
                self._sizes.pop(key, None)
                return None
            self._sizes.move_to_end(key)
            return state

    def put(self, state: LLMState) -> None:
        """Store ``state`` under its tokens, then evict the least recently used
        entries until the cache fits ``capacity_bytes`` (a state larger than the
        whole capacity is not kept)."""
        if not isinstance(state, LLMState):
            raise TypeError(f"a prompt cache stores LLMState objects, got {type(state).__name__}")
        key = _key(state.tokens)
        if not key or state.nbytes > self.capacity_bytes:
            return
        with self._lock:
            if key in self._sizes:
                self._delete(key)
                del self._sizes[key]
            self._write(key, state)
            self._sizes[key] = (state.nbytes, state.model)
            total = self.cache_size
            while total > self.capacity_bytes and len(self._sizes) > 1:
                old, (n, _) = next(iter(self._sizes.items()))
                self._delete(old)
                del self._sizes[old]
                total -= n

    def __getitem__(self, tokens: Sequence[int]) -> LLMState:
        state = self.find(tokens)
        if state is None:
            raise KeyError("no cached state shares a prefix with these tokens")
        return state

    def __setitem__(self, tokens: Sequence[int], state: LLMState) -> None:
        if _key(tokens) != _key(state.tokens):
            state = LLMState(_key(tokens), state.data, state.model)
        self.put(state)

    def __contains__(self, tokens: object) -> bool:
        if not isinstance(tokens, Sequence):
            return False
        with self._lock:
            return self._longest(tokens, None) is not None

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock:
            for key in list(self._sizes):
                self._delete(key)
            self._sizes.clear()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {len(self)} entries, {self.cache_size} of "
                f"{self.capacity_bytes} bytes>")


class RamPromptCache(PromptCache):
    """States kept in memory (``capacity_bytes``: the most bytes they may take)."""

    def __init__(self, capacity_bytes: int = 2 << 30) -> None:
        super().__init__(capacity_bytes)
        self._states: dict[tuple[int, ...], LLMState] = {}

    def _read(self, key: tuple[int, ...]) -> LLMState | None:
        return self._states.get(key)

    def _write(self, key: tuple[int, ...], state: LLMState) -> None:
        self._states[key] = state

    def _delete(self, key: tuple[int, ...]) -> None:
        self._states.pop(key, None)


class DiskPromptCache(PromptCache):
    """States kept as files in the folder ``path`` (created if missing), which
    outlive the process: a new cache on the same folder finds them again
    (least recently used order from the files' modification times).

    Each entry is one ``<sha256 of its tokens>.state`` file holding
    :meth:`LLMState.to_bytes`; files are written to a temporary name and
    renamed, so a crash never leaves half an entry under a real name.
    """

    SUFFIX = ".state"

    def __init__(self, path: str | os.PathLike[str], capacity_bytes: int = 10 << 30) -> None:
        super().__init__(capacity_bytes)
        self.path = Path(path).expanduser()
        self.path.mkdir(parents=True, exist_ok=True)
        found = []
        for f in self.path.glob("*" + self.SUFFIX):
            head = _read_head(f)
            if head is not None:
                found.append((f.stat().st_mtime, head[0], head[1], f.stat().st_size))
        for _, key, model, size in sorted(found, key=lambda x: x[0]):
            self._sizes[key] = (size, model)

    def _file(self, key: tuple[int, ...]) -> Path:
        digest = hashlib.sha256(np.asarray(key, dtype="<i4").tobytes()).hexdigest()[:40]
        return self.path / (digest + self.SUFFIX)

    def _read(self, key: tuple[int, ...]) -> LLMState | None:
        f = self._file(key)
        try:
            state = LLMState.from_bytes(f.read_bytes())
            os.utime(f)
        except (OSError, ValueError):
            return None
        return state if state.tokens == key else None

    def _write(self, key: tuple[int, ...], state: LLMState) -> None:
        f = self._file(key)
        tmp = f.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(state.to_bytes())
        os.replace(tmp, f)

    def _delete(self, key: tuple[int, ...]) -> None:
        try:
            self._file(key).unlink()
        except FileNotFoundError:
            pass


def _read_head(path: Path) -> tuple[tuple[int, ...], str] | None:
    """The tokens and model of a state file, reading only its head."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:8] != _MAGIC:
                return None
            (n_meta,) = struct.unpack("<I", head[8:12])
            meta = json.loads(fh.read(n_meta))
            n = int(meta["n_tokens"])
            raw = fh.read(4 * n)
            if len(raw) != 4 * n:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return tuple(int(t) for t in np.frombuffer(raw, dtype="<i4")), str(meta.get("model", ""))


class EngineCache:
    """The bridge between a :class:`PromptCache` and an engine (its
    ``lookup``/``store``), for one model."""

    def __init__(self, cache: PromptCache, model: str) -> None:
        self.cache = cache
        self.model = model

    def lookup(self, tokens: Sequence[int]) -> tuple[Sequence[int], bytes] | None:
        state = self.cache.find(tokens, self.model)
        return None if state is None else (state.tokens, state.data)

    def store(self, tokens: Sequence[int], data: bytes) -> None:
        self.cache.put(LLMState(_key(tokens), data, self.model))
