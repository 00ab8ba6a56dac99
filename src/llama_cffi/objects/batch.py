"""Input batches for ``llama_decode``/``llama_encode`` (``llama_batch``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._bindings import batch as _B
from .._bindings.raw import CData
from ..errors import ClosedError
from .handle import Handle, UseGuard

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1


def _int32(value: object, what: str) -> int:
    """``value`` checked to be an integer that fits llama.cpp's int32 fields
    (cffi would raise a bare ``OverflowError``/``TypeError`` without the name)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    if not INT32_MIN <= value <= INT32_MAX:
        raise ValueError(f"{what} {value} does not fit a 32-bit integer")
    return int(value)


def _int32_array(values: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    """``values`` as an int32 array, refusing non-integers and values out of range
    (numpy would truncate 1.5 to 1, or raise without naming the argument)."""
    arr = np.asarray(values)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got an array of {arr.dtype}")
    if arr.size and (arr.min() < INT32_MIN or arr.max() > INT32_MAX):
        raise ValueError(f"{what} must fit 32-bit integers")
    return arr.astype(np.int32, copy=False)


class Batch(Handle):
    """A reusable batch of up to ``capacity`` tokens (or embedding rows).

    capacity: the most tokens the batch can hold (usually the context's n_batch).
    n_seq_max: the most sequence ids one token may belong to.
    embd: if > 0, the batch carries embedding vectors of this size instead of
        token ids.

    ``tokens`` (or ``embeddings``), ``positions`` and ``output`` are writable
    numpy views of the batch's arrays (no copies); ``n_seq_ids`` is a
    read-only view (set sequence ids with :meth:`add`, :meth:`set_seq_ids` or
    :meth:`set_tokens`, which check them against ``n_seq_max``). The arrays
    are owned by Python (cffi), not malloc'ed by llama.cpp: a view keeps its
    array alive, so a view kept after :meth:`close` still reads and writes
    valid memory (the values it held), while the batch itself raises
    ClosedError.

    Thread safety: one thread at a time. A thread calling a method (or
    decoding the batch) while another is inside one gets a LlamaError;
    ``close()`` waits for a decode of the batch running on another thread.
    """

    _FACTS = ("tokens", "embeddings", "positions", "n_seq_ids", "output")

    def __init__(self, capacity: int, *, n_seq_max: int = 1, embd: int = 0) -> None:
        capacity = _int32(capacity, "batch capacity")
        n_seq_max = _int32(n_seq_max, "n_seq_max")
        embd = _int32(embd, "embd")
        if capacity < 1:
            raise ValueError("batch capacity must be at least 1")
        if n_seq_max < 1:
            raise ValueError("n_seq_max must be at least 1")
        if embd < 0:
            raise ValueError("embd must be >= 0")
        mem = _B.BatchArrays(int(capacity), int(embd), int(n_seq_max))
        # No finalizer and no ResourceWarning: cffi frees the arrays with the
        # last reference to them (the batch's, or a view's).
        self._ptr = mem.holder
        self._mem = mem
        self._guard = UseGuard("batch")
        self.capacity = int(capacity)
        self.n_seq_max = int(n_seq_max)
        self.embd = int(embd)
        if embd:
            self.embeddings: np.ndarray = _B.view(mem.embd_data, np.float32).reshape(
                capacity, embd)
        else:
            self.tokens: np.ndarray = _B.view(mem.token, np.int32)
        self.positions: np.ndarray = _B.view(mem.pos, np.int32)[:capacity]
        self._counts = _B.view(mem.n_seq_id, np.int32)  # written only with checked counts
        n_seq_ids = self._counts.view()
        n_seq_ids.flags.writeable = False
        self.n_seq_ids: np.ndarray = n_seq_ids
        self.output: np.ndarray = _B.view(mem.logits, np.int8)
        self._seq = _B.view(mem.seq_id_data, np.int32)

    def _memory(self) -> _B.BatchArrays:
        """The batch's C memory; ClosedError once closed."""
        mem: _B.BatchArrays | None = self.__dict__.get("_mem")
        if mem is None:
            raise ClosedError("Batch is closed")
        return mem

    def _take(self) -> _B.BatchArrays:
        """Start exclusive use (end it with ``self._guard.release()``); the memory."""
        self._guard.acquire()
        try:
            return self._memory()
        except ClosedError:
            self._guard.release()
            raise

    @property
    def struct(self) -> CData:
        """The ``llama_batch`` struct to pass to C yourself (raises once closed).

        A raw C value like every handle's ``ptr``: it points into memory this
        batch keeps alive, so it is valid only while the batch is open (the
        numpy views are the safe way to keep the arrays)."""
        return self._memory().struct

    @property
    def n_tokens(self) -> int:
        """Entries in use; set it after filling the numpy views directly."""
        return int(self._memory().holder[0].n_tokens)

    @n_tokens.setter
    def n_tokens(self, n: int) -> None:
        if not 0 <= n <= self.capacity:
            raise OverflowError(f"{n} entries do not fit a batch of {self.capacity}")
        mem = self._take()
        try:
            mem.holder[0].n_tokens = n
        finally:
            self._guard.release()

    def __len__(self) -> int:
        return self.n_tokens

    def clear(self) -> None:
        """Empty the batch (its memory is kept for reuse)."""
        self.n_tokens = 0

    def close(self) -> None:
        """Drop the batch's arrays (waiting for a decode of it on another thread).

        The batch raises ClosedError afterwards; numpy views taken before stay
        valid (they keep their arrays alive).
        """
        if self._ptr is None:
            return
        self._guard.wait()
        try:
            super().close()  # drops the views (facts) and the pointer
            for name in ("_mem", "_seq", "_counts"):
                self.__dict__.pop(name, None)
        finally:
            self._guard.release()

    def add(self, token: int, pos: int, seq_ids: Sequence[int] = (0,), output: bool = False) -> None:
        """Append one token at position ``pos`` belonging to ``seq_ids``.

        output: whether logits (or embeddings) are computed for this token.
        """
        if self.embd:
            raise TypeError("this batch carries embeddings, not tokens")
        n = len(seq_ids)
        if not 1 <= n <= self.n_seq_max:
            raise ValueError(f"a token needs 1..{self.n_seq_max} sequence ids, got {n}")
        token = _int32(token, "token")
        pos = _int32(pos, "position")
        seq_ids = [_int32(s, "sequence id") for s in seq_ids]
        mem = self._take()
        try:
            b = mem.holder[0]
            i = b.n_tokens
            if i >= self.capacity:
                raise OverflowError(f"batch is full ({self.capacity} tokens)")
            mem.token[i] = token
            mem.pos[i] = pos
            mem.n_seq_id[i] = n
            row = i * self.n_seq_max
            data = mem.seq_id_data
            for k, s in enumerate(seq_ids):
                data[row + k] = s
            mem.logits[i] = output
            b.n_tokens = i + 1
        finally:
            self._guard.release()

    def set_rows(self, tokens: Sequence[int], positions: Sequence[int], seq_ids: Sequence[int],
                 outputs: Sequence[bool]) -> None:
        """Replace the batch's content: entry ``i`` is token ``tokens[i]`` at
        position ``positions[i]`` of sequence ``seq_ids[i]`` (one sequence per
        token), with logits if ``outputs[i]``.

        One call for a whole batch (the engine's step) instead of one
        :meth:`add` per token: the values are written straight into the C
        arrays, which refuse non-integers and values outside 32 bits.
        """
        if self.embd:
            raise TypeError("this batch carries embeddings, not tokens")
        n = len(tokens)
        if not len(positions) == len(seq_ids) == len(outputs) == n:
            raise ValueError("tokens, positions, seq_ids and outputs must have the same length "
                             f"(got {n}, {len(positions)}, {len(seq_ids)}, {len(outputs)})")
        if n > self.capacity:
            raise OverflowError(f"{n} tokens do not fit a batch of {self.capacity}")
        mem = self._take()
        try:
            tok, pos, count, seq, out = mem.token, mem.pos, mem.n_seq_id, mem.seq_id_data, \
                mem.logits
            stride = self.n_seq_max
            try:
                for i in range(n):
                    tok[i] = tokens[i]
                    pos[i] = positions[i]
                    count[i] = 1
                    seq[i * stride] = seq_ids[i]
                    out[i] = 1 if outputs[i] else 0
            except (TypeError, OverflowError):
                mem.holder[0].n_tokens = 0
                for what, values in (("token", tokens), ("position", positions),
                                     ("sequence id", seq_ids)):
                    for v in values:
                        _int32(v, what)  # raises naming the argument
                raise
            mem.holder[0].n_tokens = n
        finally:
            self._guard.release()

    def set_seq_ids(self, n: int, seq_id: int = 0) -> None:
        """Make the first ``n`` entries belong to sequence ``seq_id`` only
        (for batches filled through the numpy views)."""
        if not 0 <= n <= self.capacity:
            raise OverflowError(f"{n} entries do not fit a batch of {self.capacity}")
        seq_id = _int32(seq_id, "sequence id")
        self._take()
        try:
            self._set_seq_ids(n, seq_id)
        finally:
            self._guard.release()

    def _set_seq_ids(self, n: int, seq_id: int) -> None:
        self._counts[:n] = 1
        self._seq[0:n * self.n_seq_max:self.n_seq_max] = seq_id

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
        tokens = _int32_array(tokens, "tokens")
        seq_id = _int32(seq_id, "sequence id")
        if _int32(start_pos, "start_pos") + n - 1 > INT32_MAX:
            raise ValueError(f"positions {start_pos}..{start_pos + n - 1} do not fit 32 bits")
        mem = self._take()
        try:
            self.tokens[:n] = tokens
            self.positions[:n] = np.arange(start_pos, start_pos + n, dtype=np.int32)
            self._set_seq_ids(n, seq_id)
            self.output[:n] = 0
            if output_last and n:
                self.output[n - 1] = 1
            mem.holder[0].n_tokens = n
        finally:
            self._guard.release()
