"""Prompt caches of llama-cpp-python: states saved after a completion, keyed by tokens.

``Llama.set_cache(LlamaRAMCache())``: after each completion the Llama saves
its state under the prompt + completion tokens; a later prompt that shares a
longer prefix with a saved key than with what the context holds loads that
state first, so only the rest of the prompt is evaluated.
:class:`LlamaDiskCache` keeps the states in a folder (``.npz`` files, no
pickle), so they survive the process.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .state import LlamaState, common_prefix


class BaseLlamaCache(ABC):
    """A mapping from token sequences to :class:`LlamaState`, looked up by longest prefix."""

    def __init__(self, capacity_bytes: int = (2 << 30)) -> None:
        if not isinstance(capacity_bytes, int) or capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be a positive int, got {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes

    @property
    @abstractmethod
    def cache_size(self) -> int:
        """Bytes of state held."""

    @abstractmethod
    def _keys(self) -> list[tuple[int, ...]]: ...

    def _find_longest_prefix_key(self, key: tuple[int, ...]) -> tuple[int, ...] | None:
        best, best_len = None, 0
        for k in self._keys():
            n = common_prefix(k, key)
            if n > best_len:
                best, best_len = k, n
        return best

    def __contains__(self, key: Sequence[int]) -> bool:
        return self._find_longest_prefix_key(tuple(key)) is not None

    @abstractmethod
    def __getitem__(self, key: Sequence[int]) -> LlamaState: ...

    @abstractmethod
    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None: ...

    def __len__(self) -> int:
        return len(self._keys())


class LlamaRAMCache(BaseLlamaCache):
    """States in memory, least recently used dropped first beyond ``capacity_bytes``."""

    def __init__(self, capacity_bytes: int = (2 << 30)) -> None:
        super().__init__(capacity_bytes)
        self.cache_state: OrderedDict[tuple[int, ...], LlamaState] = OrderedDict()

    @property
    def cache_size(self) -> int:
        return sum(s.llama_state_size for s in self.cache_state.values())

    def _keys(self) -> list[tuple[int, ...]]:
        return list(self.cache_state)

    def __getitem__(self, key: Sequence[int]) -> LlamaState:
        k = self._find_longest_prefix_key(tuple(key))
        if k is None:
            raise KeyError("no cached state shares a prefix with these tokens")
        self.cache_state.move_to_end(k)
        return self.cache_state[k]

    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None:
        k = tuple(int(t) for t in key)
        self.cache_state.pop(k, None)
        self.cache_state[k] = value
        while self.cache_size > self.capacity_bytes and len(self.cache_state) > 1:
            self.cache_state.popitem(last=False)


LlamaCache = LlamaRAMCache


class LlamaDiskCache(BaseLlamaCache):
    """States in ``cache_dir`` as ``.npz`` files (arrays only, loaded without pickle);
    the oldest files are removed beyond ``capacity_bytes``."""

    def __init__(self, cache_dir: str | os.PathLike[str] = ".cache/llama_cache",
                 capacity_bytes: int = (2 << 30)) -> None:
        super().__init__(capacity_bytes)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[tuple[int, ...], Path] = {}
        for path in sorted(self.cache_dir.glob("*.npz"), key=lambda p: p.stat().st_mtime):
            try:
                with np.load(path, allow_pickle=False) as data:
                    self._index[tuple(int(t) for t in data["key"])] = path
            except (OSError, ValueError, KeyError):
                continue  # not one of ours, or a partial write: ignore it

    @property
    def cache_size(self) -> int:
        return sum(p.stat().st_size for p in self._index.values() if p.exists())

    def _keys(self) -> list[tuple[int, ...]]:
        return list(self._index)

    @staticmethod
    def _name(key: tuple[int, ...]) -> str:
        return hashlib.sha256(np.asarray(key, dtype=np.int64).tobytes()).hexdigest()[:32]

    def __getitem__(self, key: Sequence[int]) -> LlamaState:
        k = self._find_longest_prefix_key(tuple(key))
        if k is None:
            raise KeyError("no cached state shares a prefix with these tokens")
        path = self._index[k]
        with np.load(path, allow_pickle=False) as data:
            blob = data["llama_state"].tobytes()
            state = LlamaState(input_ids=data["input_ids"].astype(np.intc),
                               scores=data["scores"].astype(np.single),
                               n_tokens=int(data["n_tokens"]), llama_state=blob,
                               llama_state_size=len(blob), seed=int(data["seed"]))
        os.utime(path)  # recently used
        self._index[k] = self._index.pop(k)
        return state

    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None:
        k = tuple(int(t) for t in key)
        path = self.cache_dir / f"{self._name(k)}.npz"
        tmp = path.with_suffix(".partial.npz")
        np.savez(tmp, key=np.asarray(k, dtype=np.int64),
                 input_ids=np.asarray(value.input_ids, dtype=np.intc),
                 scores=np.asarray(value.scores, dtype=np.single),
                 n_tokens=np.int64(value.n_tokens), seed=np.int64(value.seed),
                 llama_state=np.frombuffer(bytes(value.llama_state), dtype=np.uint8))
        tmp.replace(path)
        self._index.pop(k, None)
        self._index[k] = path
        while self.cache_size > self.capacity_bytes and len(self._index) > 1:
            oldest = next(iter(self._index))
            self._index.pop(oldest).unlink(missing_ok=True)
