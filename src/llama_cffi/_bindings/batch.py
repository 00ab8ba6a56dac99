"""``llama_batch``: Python-owned arrays, the struct pointing at them, numpy views.

The arrays are allocated with ``ffi.new`` (cffi owns them and frees them when
the last reference goes) instead of ``llama_batch_init``, and the struct is
filled here with the layout ``llama_batch_init`` produces
(``src/llama-batch.cpp``): ``token`` *or* ``embd``, ``pos``, ``n_seq_id``,
``seq_id`` (``capacity + 1`` pointers, each to ``n_seq_max`` ids, then a NULL
sentinel) and ``logits``. A numpy view made by :func:`view` keeps its array
alive (``ffi.buffer`` of an owning cdata references it), so a view stays valid
memory however long it lives; nothing here is freed by hand.
"""

from __future__ import annotations

import numpy as np

from .raw import NULL, CData, ffi

MAX_POS_PER_EMBD = 4
"""Positions per token of an embedding batch for M-RoPE models (llama.cpp reads
``pos[j * n_tokens + i]`` for j < n_pos_per_embd <= 4): embedding batches get
room for that many, so such a read never leaves the array."""


class BatchArrays:
    """The C memory of one batch: the arrays and the ``llama_batch *`` holding them."""

    __slots__ = ("capacity", "n_seq_max", "embd", "token", "embd_data", "pos", "n_seq_id",
                 "seq_id_data", "seq_id", "logits", "holder")

    def __init__(self, capacity: int, embd: int, n_seq_max: int) -> None:
        self.capacity = capacity
        self.n_seq_max = n_seq_max
        self.embd = embd
        if embd:
            self.token = NULL
            self.embd_data = ffi.new("float[]", capacity * embd)
            self.pos = ffi.new("llama_pos[]", capacity * MAX_POS_PER_EMBD)
        else:
            self.token = ffi.new("llama_token[]", capacity)
            self.embd_data = NULL
            self.pos = ffi.new("llama_pos[]", capacity)
        self.n_seq_id = ffi.new("int32_t[]", capacity)
        self.seq_id_data = ffi.new("llama_seq_id[]", capacity * n_seq_max)
        self.seq_id = ffi.new("llama_seq_id *[]", capacity + 1)  # zeroed: NULL sentinel
        # seq_id[i] = &seq_id_data[i * n_seq_max], written as addresses in one numpy step
        rows = np.frombuffer(ffi.buffer(self.seq_id), dtype=np.uintp)
        base = int(ffi.cast("uintptr_t", self.seq_id_data))
        step = n_seq_max * ffi.sizeof("llama_seq_id")
        rows[:capacity] = base + np.arange(capacity, dtype=np.uintp) * step
        self.logits = ffi.new("int8_t[]", capacity)
        holder = ffi.new("llama_batch *")
        b = holder[0]
        b.n_tokens = 0
        b.token = self.token
        b.embd = self.embd_data
        b.pos = self.pos
        b.n_seq_id = self.n_seq_id
        b.seq_id = self.seq_id
        b.logits = self.logits
        self.holder = holder

    @property
    def struct(self) -> CData:
        """The ``llama_batch`` to pass to C (valid while this object lives)."""
        return self.holder[0]


def view(array: CData, dtype: type[np.generic]) -> np.ndarray:
    """A numpy view of a whole ``ffi.new`` array that keeps the array alive."""
    return np.frombuffer(ffi.buffer(array), dtype=dtype)
