"""``llama_cffi_run`` (``cdef/run.h``): several decode-and-sample steps of the
generating sequences in one C call.

:class:`RunMemory` owns the C memory a run reads and writes: one
``llama_cffi_run_slot`` per slot, each slot's output array, the interrupt
flag, the result and the room for log-probabilities. Whatever a slot points
at (logit-bias arrays, stop strings) is kept referenced by the slot's entry
in ``RunMemory.keep`` until the slot is set again, so C never reads freed
memory.

A streamed slot's tokens are published while the run goes on: C stores the
count of tokens written (``n_pub``) after writing them, so another thread
may read ``published`` and then those tokens (:func:`read`) during the run;
C writes one byte to ``notify_fd`` after each step that published tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .raw import NULL, CData, ffi, lib

MAX_STOP = int(lib.LLAMA_CFFI_RUN_MAX_STOP)
"""Longest stop string (bytes) a run looks for; longer ones keep Python's step."""
MAX_PROBS = int(lib.LLAMA_CFFI_RUN_MAX_PROBS)
"""Most top log-probabilities per token a run computes; more keep Python's step."""
NO_BUDGET = 2**62
"""A time budget (µs) that never ends a run."""


class RunMemory:
    """The C memory of runs over at most ``capacity`` slots of ``max_steps`` steps."""

    __slots__ = ("capacity", "flag", "keep", "lp_ids", "lp_out", "max_steps", "outs", "result",
                 "slots")

    def __init__(self, capacity: int, max_steps: int) -> None:
        if capacity < 1 or max_steps < 1:
            raise ValueError("a run needs at least one slot and one step")
        self.capacity = capacity
        self.max_steps = max_steps
        self.slots = ffi.new("llama_cffi_run_slot[]", capacity)
        self.outs = [ffi.new("llama_token[]", max_steps) for _ in range(capacity)]
        self.lp_out = [ffi.new("double[]", max_steps * (1 + MAX_PROBS)) for _ in range(capacity)]
        self.lp_ids = [ffi.new("int32_t[]", max_steps * MAX_PROBS) for _ in range(capacity)]
        for i, out in enumerate(self.outs):
            self.slots[i].out = out
            self.slots[i].lp_out = self.lp_out[i]
            self.slots[i].lp_ids = self.lp_ids[i]
            self.slots[i].n_probs = -1
        self.keep: list[tuple[object, ...]] = [()] * capacity
        self.flag = ffi.new("int32_t *")
        self.result = ffi.new("llama_cffi_run_result *")
        self.result.cpu = -1


def set_slot(mem: RunMemory, i: int, where: tuple[int, int, int], limits: tuple[int, bool],
             next_token: int, chain: CData, argmax: bool,
             bias: tuple[np.ndarray, np.ndarray] | None, stops: Sequence[bytes],
             tail: bytes, n_vocab: int, n_probs: int = -1, stream: bool = False,
             llg: CData | None = None) -> None:
    """Fill slot ``i``: ``where`` (seq_id, tokens in its KV, tokens it may hold),
    ``limits`` (tokens it may still generate or -1, whether end of generation
    is ignored), the token to decode next, its chain (``argmax``: the chain
    picks the arg-max after ``bias``, ids and values, each id below the
    context's ``n_vocab``: C adds the values to a copy of the logits), its
    stop strings and the last bytes of its text; ``n_probs``: the chosen
    tokens' log-probabilities with the ``n_probs`` best (0..MAX_PROBS; -1:
    none); ``stream``: publish each token as soon as it is chosen; ``llg``:
    the request's llguidance matcher (``cdef/llg.h``), which constrains the
    chain's choice and advances in C (kept alive by its owner)."""
    if not -1 <= n_probs <= MAX_PROBS:
        raise ValueError(f"a run gives 0..{MAX_PROBS} top log-probabilities, not {n_probs}")
    s = mem.slots[i]
    s.n_probs = n_probs
    s.stream = int(stream)
    s.n_pub = 0
    s.seq_id, s.n_past, s.n_limit = where
    s.remaining, ignore_eos = limits
    s.ignore_eos = int(ignore_eos)
    s.next = next_token
    s.chain = chain
    s.argmax = int(argmax)
    s.llg = NULL if llg is None else llg
    s.err = NULL
    keep: list[object] = []
    if bias is not None and argmax:
        ids = np.ascontiguousarray(bias[0], dtype=np.int32)
        values = np.ascontiguousarray(bias[1], dtype=np.float32)
        if len(ids) != len(values) or (len(ids) and not 0 <= int(ids.min()) <= int(ids.max())
                                       < n_vocab):
            raise ValueError(f"a logit bias for a run needs token ids in 0..{n_vocab - 1}, "
                             "one value each")
        s.bias_ids = ffi.cast("const int32_t *", ffi.from_buffer(ids))
        s.bias_values = ffi.cast("const float *", ffi.from_buffer(values))
        s.n_bias = len(ids)
        keep += [ids, values]
    else:
        s.bias_ids = NULL
        s.bias_values = NULL
        s.n_bias = 0
    if stops:
        if any(not 0 < len(b) <= MAX_STOP for b in stops):
            raise ValueError(f"stop strings for a run must be 1..{MAX_STOP} bytes")
        data = ffi.new("char[]", b"".join(stops))
        lens = ffi.new("int32_t[]", [len(b) for b in stops])
        s.stops, s.stop_lens, s.n_stops = data, lens, len(stops)
        keep += [data, lens]
        tail = tail[-(MAX_STOP - 1):] if MAX_STOP > 1 else b""
        ffi.memmove(s.tail, tail, len(tail))
        s.n_tail = len(tail)
    else:
        s.stops, s.stop_lens, s.n_stops, s.n_tail = NULL, NULL, 0, 0
    mem.keep[i] = tuple(keep)


def run(mem: RunMemory, ctx: CData, batch: CData, n_slots: int, max_steps: int,
        budget_us: int, notify_fd: int = -1) -> tuple[int, int, int, int]:
    """Run the first ``n_slots`` slots for at most ``max_steps`` steps on ``ctx``
    with ``batch`` (a ``llama_batch *`` of at least ``n_slots`` token rows);
    (llama_decode's code or 0, steps done, µs inside llama_decode, µs choosing
    and checking the tokens). ``notify_fd``: a file descriptor (a pipe's
    non-blocking write end) that gets a byte after each step that published
    a streamed slot's tokens; -1: none."""
    if not 0 < n_slots <= mem.capacity:
        raise ValueError(f"{n_slots} slots for a run over {mem.capacity}")
    if not 0 < max_steps <= mem.max_steps:
        raise ValueError(f"{max_steps} steps for a run of at most {mem.max_steps}")
    res = mem.result
    lib.llama_cffi_run(ctx, batch, mem.slots, n_slots, max_steps, mem.flag, budget_us,
                       notify_fd, res)
    return int(res.status), int(res.steps), int(res.t_decode_us), int(res.t_sample_us)


def run_cpu(mem: RunMemory) -> int:
    """The CPU the thread of the run in progress was on at its last step
    (Linux; -1 elsewhere or before a run; any thread)."""
    return int(lib.llama_cffi_run_cpu(mem.result))


def tokens(mem: RunMemory, i: int) -> list[int]:
    """The tokens slot ``i`` sampled in the last run."""
    return ffi.unpack(mem.outs[i], int(mem.slots[i].n_out))  # type: ignore[no-any-return]


def error(mem: RunMemory, i: int) -> str | None:
    """Why slot ``i``'s grammar failed in the last run (its last step chose no
    token), or None."""
    s = mem.slots[i]
    if int(s.why) != 5:
        return None
    return "the grammar failed" if s.err == NULL else ffi.string(s.err).decode("utf-8", "replace")


def published(mem: RunMemory, i: int) -> int:
    """Tokens of slot ``i`` the run in progress (or the last one) has published
    (streamed slots; any thread)."""
    return int(lib.llama_cffi_run_published(mem.slots, i))  # (an acquiring load)


def read(mem: RunMemory, i: int, start: int, stop: int
         ) -> tuple[list[int], list[tuple[float, list[tuple[int, float]]]] | None]:
    """Tokens ``start:stop`` of slot ``i`` (at most what it has published or
    sampled) and, when it computed them, their log-probabilities: (the
    chosen token's, [(id, value) of the best, best first])."""
    s = mem.slots[i]
    stop = min(stop, mem.max_steps)
    toks: list[int] = ffi.unpack(mem.outs[i] + start, max(0, stop - start))
    n = int(s.n_probs)
    if n < 0:
        return toks, None
    w = 1 + n
    lp, ids = mem.lp_out[i], mem.lp_ids[i]
    rows = []
    for k in range(start, stop):
        vals = ffi.unpack(lp + k * w, w)
        best = ffi.unpack(ids + k * n, n) if n else []
        rows.append((vals[0], [(t, v) for t, v in zip(best, vals[1:]) if t >= 0]))
    return toks, rows


def argmax(row: np.ndarray) -> int:
    """llama.cpp's greedy choice over one row of float32 logits (the run's arg-max)."""
    x = np.ascontiguousarray(row, dtype=np.float32)
    return int(lib.llama_cffi_argmax(ffi.cast("const float *", ffi.from_buffer(x)), len(x)))


def logprobs(row: np.ndarray, token: int, n_top: int) -> tuple[float, list[tuple[int, float]]]:
    """The run's log-probabilities over one row of float32 logits: ``token``'s
    and the ``n_top`` best (0..MAX_PROBS) as [(id, value)], best first."""
    if not 0 <= n_top <= MAX_PROBS:
        raise ValueError(f"0..{MAX_PROBS} top log-probabilities, not {n_top}")
    x = np.ascontiguousarray(row, dtype=np.float32)
    lp = ffi.new("double[]", 1 + n_top)
    ids = ffi.new("int32_t[]", max(1, n_top))
    lib.llama_cffi_logprobs(ffi.cast("const float *", ffi.from_buffer(x)), len(x), token, n_top,
                            lp, ids)
    return float(lp[0]), [(int(ids[k]), float(lp[1 + k])) for k in range(n_top) if ids[k] >= 0]
