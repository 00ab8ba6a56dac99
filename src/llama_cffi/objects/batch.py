"""Input batches for ``llama_decode``/``llama_encode`` (``llama_batch``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._bindings import batch as _B
from .._bindings.raw import CData
from .handle import Handle


class Batch(Handle):
    """A reusable batch of up to ``capacity`` tokens (or embedding rows).

    capacity: the most tokens the batch can hold (usually the context's n_batch).
    n_seq_max: the most sequence ids one token may belong to.
    embd: if > 0, the batch carries embedding vectors of this size instead of
        token ids.

    ``tokens``, ``positions`` and ``output`` are numpy views of the C arrays
    (no copies); they stay valid as long as the batch is open.
    """

    def __init__(self, capacity: int, *, n_seq_max: int = 1, embd: int = 0) -> None:
        if capacity < 1:
            raise ValueError("batch capacity must be at least 1")
        if n_seq_max < 1:
            raise ValueError("n_seq_max must be at least 1")
        holder = _B.init(int(capacity), int(embd), int(n_seq_max))
        self._own(holder, _B.free)
        self.capacity = int(capacity)
        self.n_seq_max = int(n_seq_max)
        self.embd = int(embd)
        b = holder[0]
        self._b = b
        if embd:
            self.embeddings = _B.float32_view(b.embd, capacity * embd).reshape(capacity, embd)
        else:
            self.tokens = _B.int32_view(b.token, capacity)
        self.positions = _B.int32_view(b.pos, capacity)
        self.n_seq_ids = _B.int32_view(b.n_seq_id, capacity)
        self.output = _B.int8_view(b.logits, capacity)
        self._seq_id = b.seq_id

    @property
    def struct(self) -> CData:
        """The ``llama_batch`` struct to pass to C (raises once closed)."""
        return self.ptr[0]

    @property
    def n_tokens(self) -> int:
        """Entries in use; set it after filling the numpy views directly."""
        return int(self._b.n_tokens) if not self.closed else 0

    @n_tokens.setter
    def n_tokens(self, n: int) -> None:
        if not 0 <= n <= self.capacity:
            raise OverflowError(f"{n} entries do not fit a batch of {self.capacity}")
        self.ptr[0].n_tokens = n

    def __len__(self) -> int:
        return self.n_tokens

    def clear(self) -> None:
        """Empty the batch (its memory is kept for reuse)."""
        self.ptr[0].n_tokens = 0

    def close(self) -> None:
        """Free the C arrays; the numpy views of this batch become empty."""
        empty32 = np.zeros(0, dtype=np.int32)
        if self.embd:
            self.embeddings = np.zeros((0, self.embd), dtype=np.float32)
        else:
            self.tokens = empty32
        self.positions = self.n_seq_ids = empty32
        self.output = np.zeros(0, dtype=np.int8)
        super().close()

    def add(self, token: int, pos: int, seq_ids: Sequence[int] = (0,), output: bool = False) -> None:
        """Append one token at position ``pos`` belonging to ``seq_ids``.

        output: whether logits (or embeddings) are computed for this token.
        """
        b = self.ptr[0]
        i = b.n_tokens
        if i >= self.capacity:
            raise OverflowError(f"batch is full ({self.capacity} tokens)")
        if not 1 <= len(seq_ids) <= self.n_seq_max:
            raise ValueError(f"a token needs 1..{self.n_seq_max} sequence ids, got {len(seq_ids)}")
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = len(seq_ids)
        row = self._seq_id[i]
        for k, s in enumerate(seq_ids):
            row[k] = s
        b.logits[i] = output
        b.n_tokens = i + 1

    def set_seq_ids(self, n: int, seq_id: int = 0) -> None:
        """Make the first ``n`` entries belong to sequence ``seq_id`` only
        (for batches filled through the numpy views)."""
        if not 0 <= n <= self.capacity:
            raise OverflowError(f"{n} entries do not fit a batch of {self.capacity}")
        self.ptr  # raise if closed
        self.n_seq_ids[:n] = 1
        seq = self._seq_id
        for i in range(n):
            seq[i][0] = seq_id

    def set_tokens(self, tokens: Sequence[int] | np.ndarray, start_pos: int, *,
                   seq_id: int = 0, output_last: bool = True) -> None:
        """Fill the batch with consecutive tokens of one sequence.

        start_pos: position of the first token.
        output_last: compute logits for the last token only (prompt processing).
        """
        if self.embd:
            raise TypeError("this batch carries embeddings, not tokens")
        n = len(tokens)
        if n > self.capacity:
            raise OverflowError(f"{n} tokens do not fit a batch of {self.capacity}")
        b = self.ptr[0]
        self.tokens[:n] = tokens
        self.positions[:n] = np.arange(start_pos, start_pos + n, dtype=np.int32)
        self.set_seq_ids(n, seq_id)
        self.output[:n] = 0
        if output_last and n:
            self.output[n - 1] = 1
        b.n_tokens = n
