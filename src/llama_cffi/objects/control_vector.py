"""Control vector files (llama.cpp's ``--control-vector`` GGUF format).

A control vector file holds one F32 tensor ``direction.<layer>`` of
``n_embd`` values per layer (layer numbers start at 1). Several files can be
combined with scales, as ``--control-vector-scaled FILE SCALE`` does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .._bindings import adapter
from ..errors import LlamaError

_DIRECTION = re.compile(r"^direction\.(\d+)$")


def load(path: str | os.PathLike[str]) -> np.ndarray:
    """The vectors of one file as an array of shape (layers, n_embd); row i is layer i+1."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"control vector file not found: {p}")
    rows: dict[int, np.ndarray] = {}
    n_embd = -1
    for name, vec in adapter.read_f32_vectors(p).items():
        m = _DIRECTION.match(name)
        if not m or int(m.group(1)) == 0:
            raise LlamaError(f"{p}: tensor {name!r} is not direction.<layer >= 1>")
        if vec is None:
            raise LlamaError(f"{p}: tensor {name!r} must be a 1-D F32 tensor")
        n = int(vec.size)
        if n_embd not in (-1, n):
            raise LlamaError(f"{p}: direction tensors have different sizes ({n_embd}, {n})")
        n_embd = n
        rows[int(m.group(1))] = vec
    if not rows:
        raise LlamaError(f"{p} holds no direction tensors")
    out = np.zeros((max(rows), n_embd), dtype=np.float32)
    for layer, vec in rows.items():
        out[layer - 1] = vec
    return out


def combine(files: Iterable[tuple[str | os.PathLike[str], float]]) -> np.ndarray:
    """Sum of several files' vectors, each multiplied by its scale."""
    total: np.ndarray | None = None
    for path, scale in files:
        vec = load(path) * np.float32(scale)
        if total is None:
            total = vec
        else:
            if vec.shape[1] != total.shape[1]:
                raise LlamaError(f"{path}: n_embd {vec.shape[1]} differs from {total.shape[1]}")
            if vec.shape[0] > total.shape[0]:
                total = np.pad(total, ((0, vec.shape[0] - total.shape[0]), (0, 0)))
            total[:vec.shape[0]] += vec
    if total is None:
        raise ValueError("no control vector files given")
    return total
