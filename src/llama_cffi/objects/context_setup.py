"""How a Context is set up: its C parameters, thread count, and the two
decorators its methods share (one thread at a time; counting changes)."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from .._bindings import context as _C
from .._bindings.raw import CData
from ..errors import LlamaError
from .params import ContextParams

_F = TypeVar("_F", bound=Callable[..., Any])


def exclusive(method: _F) -> _F:
    """Run a Context method only while no other thread uses the context
    (decode, memory, state and outputs all touch the same C object)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._guard.release()

    return wrapper  # type: ignore[return-value]


def default_threads() -> int:
    """Threads llama_cffi uses by default: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def c_params(p: ContextParams) -> CData:
    """``llama_context_params`` for ``p`` (None fields keep llama.cpp's defaults)."""
    c = _C.default_params()
    for name in ("n_ctx", "n_batch", "n_ubatch", "n_seq_max", "rope_freq_base",
                 "rope_freq_scale", "yarn_ext_factor", "yarn_attn_factor", "yarn_beta_fast",
                 "yarn_beta_slow", "yarn_orig_ctx", "embeddings", "offload_kqv", "op_offload",
                 "swa_full", "kv_unified", "no_perf"):
        value = getattr(p, name)
        if value is not None:
            setattr(c, name, value)
    if c.n_seq_max > _C.max_parallel_sequences():
        raise ValueError(f"n_seq_max is at most {_C.max_parallel_sequences()}")
    threads = default_threads() if p.n_threads is None else p.n_threads
    c.n_threads = threads
    c.n_threads_batch = threads if p.n_threads_batch is None else p.n_threads_batch
    if p.flash_attn is not None:
        c.flash_attn_type = int(p.flash_attn)
    if p.type_k is not None:
        c.type_k = int(p.type_k)
    if p.type_v is not None:
        c.type_v = int(p.type_v)
    if p.rope_scaling is not None:
        c.rope_scaling_type = int(p.rope_scaling)
    if p.pooling is not None:
        c.pooling_type = int(p.pooling)
    if p.attention is not None:
        c.attention_type = _C.ATTENTION_TYPES[p.attention]
    return c



def counted(method: _F) -> _F:
    """Count a call of ``method`` in :attr:`Context.changes` (at its start, so a
    call that fails midway counts too)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != self._quiet_thread:
            self._changes += 1
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def sampled_snapshot(batch: Any, n: int, samplers: Mapping[int, object]) -> tuple[Any, ...]:
    """What :func:`sampled_outputs` needs of a decoded batch, copied (the batch
    may be refilled before the outputs are read): a few small copies per decode."""
    return (batch.output[:n].copy(), batch._seq.reshape(-1, batch.n_seq_max)[:n].copy(),
            batch.n_seq_ids[:n].copy(), tuple(samplers))


def sampled_outputs(snapshot: tuple[Any, ...]) -> tuple[np.ndarray, frozenset[int]]:
    """(the batch indices of the outputs of a decode, those among them whose
    sequence had a backend sampler) from :func:`sampled_snapshot`."""
    output, seqs, counts, attached = snapshot
    outputs = np.flatnonzero(output)
    seqs, counts = seqs[outputs], counts[outputs]
    ids = np.array(attached, dtype=np.int32)
    hit = np.zeros(len(outputs), dtype=bool)
    for k in range(int(counts.max(initial=0))):
        hit |= (counts > k) & np.isin(seqs[:, k], ids)
    return outputs, frozenset(outputs[hit].tolist())


def refuse_sampled(snapshot: tuple[Any, ...], i: int) -> None:
    """LlamaError if output ``i`` of the decode in ``snapshot`` was sampled inside
    the graph (llama.cpp keeps no logits for it)."""
    outputs, sampled = sampled_outputs(snapshot)
    row = int(outputs[i]) if -len(outputs) <= i < 0 else i
    if row in sampled:
        raise LlamaError(f"output {i} was sampled inside the graph (backend sampling): "
                         "llama.cpp keeps no logits for it")

