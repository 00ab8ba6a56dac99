"""An inference context on a model (``llama_context``): KV cache, decode, logits."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._bindings import context as _C
from .._bindings import log as _log
from .._bindings import model as _M
from .._bindings.callbacks import CallbackState
from .._bindings.enums import PoolingType
from .._bindings.raw import CData
from ..errors import (
    ClosedError,
    ContextError,
    ContextFullError,
    InvalidBatchError,
    LlamaError,
)
from . import control_vector
from .batch import Batch
from .checks import bytes_arg, check_adapter, number_arg
from .context_setup import (
    c_params,
    counted,
    default_threads,
    exclusive,
    refuse_sampled,
    sampled_snapshot,
)
from .handle import Handle, UseGuard
from .params import ContextParams

if TYPE_CHECKING:
    from .lora import LoraAdapter
    from .model import Model

__all__ = ["Context", "default_threads"]


class Context(Handle):
    """A context: the KV cache and compute buffers for running a model.

    model: the :class:`~llama_cffi.Model` (kept alive by the context).
    params: a :class:`~llama_cffi.ContextParams` (``n_ctx``, ``n_batch``,
        threads, flash attention, KV cache types, RoPE/YaRN, embeddings ...;
        each field names its llama.cpp flag).
    abort_callback: called during computation; returning True aborts the
        current decode (which then raises DecodeAbortedError; an exception
        raised by the callback aborts too and becomes the error's cause).
    overrides: any ContextParams field as a keyword (``n_ctx=4096``,
        ``type_k="q8_0"`` ...), applied on top of ``params``.

    Sizes fixed at creation (``n_ctx``, ``n_batch``, ``n_seq_max`` ...) are
    read once and served from Python attributes.

    Outputs: :meth:`logits`, :meth:`embeddings` and :meth:`seq_embeddings`
    return copies (numpy arrays owning their memory): llama.cpp overwrites its
    output buffer on the next decode and frees it on close, a copy stays valid.

    Thread safety: a context is used by one thread at a time. A second thread
    calling ``decode`` (or any other method that reaches C) while another is
    busy with it gets a LlamaError instead of racing it, and so does a call
    made from inside the context's own abort callback. ``close()`` (and
    ``model.close()``) waits for a call running on another thread to finish.
    """

    _FACTS = ("n_ctx", "n_ctx_seq", "n_batch", "n_ubatch", "n_seq_max", "pooling")

    def __init__(self, model: Model, params: ContextParams | None = None, /, *,
                 abort_callback: Callable[[], bool] | None = None, **overrides: Any) -> None:
        if not _M.is_model(getattr(model, "_ptr", None)) or not isinstance(model, Handle):
            if isinstance(model, Handle) and model.closed:
                model.ptr  # raises ClosedError
            raise TypeError(f"model must be a llama_cffi.Model, not {type(model).__name__}")
        self.params = ContextParams.from_kwargs(params, **overrides)
        if getattr(model, "vocab_only", False):
            raise ContextError("cannot create a context on a vocab_only model: it has no weights")
        c = c_params(self.params)
        self._abort: CallbackState | None = None
        if abort_callback is not None:
            self._abort = CallbackState(abort_callback)
        _C.set_abort(c, self._abort)
        with model._using() as model_ptr:  # the model is not freed meanwhile
            ptr, lines = _C.init(model_ptr, c)
            self._own(ptr, _C.free, model)
            model._adopt(self)
        self.model = model
        self.vocab = model.vocab
        self._n_vocab = self.vocab.n_tokens
        self._n_embd: int = model.n_embd
        self._n_embd_inp: int = model.n_embd_inp
        self._batch: Batch | None = None
        self._guard = UseGuard("context")  # one thread, one call at a time
        self._loras: dict[LoraAdapter, float] = {}
        # backend sampling: the chain object of each sequence that has one, and the
        # outputs of the last decode that such a chain sampled (no logits kept)
        self._samplers: dict[int, Handle] = {}
        self._sampled: tuple[Any, ...] | None = None
        sizes = _C.sizes(ptr)
        self._threads = _C.threads(ptr)
        self._can_shift = _C.can_shift(ptr)  # fixed by the model's memory type
        self.n_ctx: int = sizes["n_ctx"]
        """Context size in tokens (all sequences)."""
        self.n_ctx_seq: int = sizes["n_ctx_seq"]
        """Context size available to one sequence."""
        self.n_batch: int = sizes["n_batch"]
        self.n_ubatch: int = sizes["n_ubatch"]
        self.n_seq_max: int = sizes["n_seq_max"]
        self.pooling = PoolingType(sizes["pooling_type"])
        attention = self.params.attention
        self._causal: bool | None = None if attention is None else attention == "causal"
        """The attention the context was created with; None: the model's own."""
        self.buffers: dict[str, dict[str, int]] = {
            kind: _log.buffer_sizes(lines, kind) for kind in ("KV", "RS", "compute", "output")}
        """Bytes per buffer type of the KV cache, recurrent state, compute and
        output buffers, as llama.cpp reported them when creating the context."""

    # -- sizes ---------------------------------------------------------------

    @property
    def n_threads(self) -> int:
        """Threads used for single-token decodes (kept in Python: no C call)."""
        self.ptr  # raise if closed
        return self._threads[0]

    @property
    def n_threads_batch(self) -> int:
        """Threads used for prompt batches."""
        self.ptr  # raise if closed
        return self._threads[1]

    @exclusive
    def set_threads(self, n_threads: int, n_threads_batch: int | None = None) -> None:
        if n_threads < 1 or (n_threads_batch is not None and n_threads_batch < 1):
            raise ValueError("thread counts must be >= 1")
        n_batch = n_threads if n_threads_batch is None else n_threads_batch
        _C.set_threads(self.ptr, n_threads, n_batch)
        self._threads = _C.threads(self.ptr)

    @property
    def kv_cache_size(self) -> int:
        """Bytes of the KV cache over all devices."""
        return sum(self.buffers["KV"].values())

    # -- evaluation -----------------------------------------------------------

    def _enter(self) -> CData:
        """Start exclusive use (end it with ``_leave()``); the context pointer."""
        self._guard.acquire()
        ptr = self._ptr
        if ptr is None:  # checked after taking the guard: close() cannot be midway
            self._guard.release()
            raise ClosedError("Context is closed")
        return ptr

    def _leave(self) -> None:
        self._guard.release()

    def decode(self, batch: Batch) -> None:
        """Run the model on ``batch`` (``llama_decode``).

        Raises NoKvSlotError (code 1, recoverable), DecodeAbortedError (2),
        InvalidBatchError (-1) or DecodeError (other codes), each with the
        lines llama.cpp logged.
        """
        ctx = self._enter()
        try:
            self._run(ctx, batch, "decode")
        finally:
            self._guard.release()

    def encode(self, batch: Batch) -> None:
        """Run the encoder on ``batch`` (``llama_encode``; encoder-decoder and
        embedding models)."""
        ctx = self._enter()
        try:
            self._run(ctx, batch, "encode")
        finally:
            self._guard.release()

    def _run(self, ctx: CData, batch: Batch, what: str) -> None:
        """decode/encode ``batch`` while holding both this context and the batch
        (whose memory stays referenced here for the whole call)."""
        if not isinstance(batch, Batch):
            raise TypeError(f"{what} takes a llama_cffi.Batch, not {type(batch).__name__}")
        mem = batch._take()  # raises ClosedError for a closed batch
        try:
            struct = mem.struct
            n = struct.n_tokens
            if not 0 < n <= mem.capacity:
                raise InvalidBatchError(f"cannot {what} an empty batch" if n == 0 else
                                        f"cannot {what} a batch of {n} entries", code=-1)
            if mem.embd and mem.embd != self._n_embd_inp:
                raise InvalidBatchError(f"the batch carries embeddings of size {mem.embd}; "
                                        f"this model takes {self._n_embd_inp}", code=-1)
            if what == "decode":
                self._sampled = None
                _C.decode(ctx, struct, self.n_ctx, self._abort, causal=self._causal)
                if self._samplers:
                    self._sampled = sampled_snapshot(batch, n, self._samplers)
            else:
                _C.encode(ctx, struct, self.n_ctx, self._abort)
        finally:
            batch._guard.release()

    def _scratch_batch(self) -> Batch:
        b = self._batch
        if b is None or b.closed:
            b = self._batch = Batch(self.n_batch)
        return b

    def eval_tokens(self, tokens: Sequence[int], start_pos: int, *, seq_id: int = 0) -> None:
        """Evaluate a token list in chunks of n_batch; logits of the last token are kept."""
        n = len(tokens)
        if n == 0:
            return
        check = self.vocab.check_token
        for t in tokens:
            check(t)
        if not 0 <= seq_id < self.n_seq_max:
            raise ValueError(f"seq_id {seq_id} is outside 0..{self.n_seq_max - 1}")
        if start_pos + n > self.n_ctx_seq:
            raise ContextFullError(
                f"{start_pos + n} tokens do not fit the context of {self.n_ctx_seq} tokens "
                "per sequence; create the context with a larger n_ctx")
        ctx = self._enter()  # the scratch batch is shared: fill it only while holding the context
        try:
            batch = self._scratch_batch()
            step = batch.capacity
            for i in range(0, n, step):
                chunk = tokens[i:i + step]
                batch.set_tokens(chunk, start_pos + i, seq_id=seq_id,
                                 output_last=(i + step >= n))
                self._run(ctx, batch, "decode")
        finally:
            self._guard.release()

    @exclusive
    def logits(self, i: int = -1) -> np.ndarray:
        """Logits for the token at index ``i`` of the last batch (it must have
        been marked as output); negative ``i`` counts the outputs from the end.

        A copy (float32, n_vocab; about 10 µs for a 49k vocabulary): it stays
        valid after the next decode and after close.
        """
        if self._sampled is not None:
            refuse_sampled(self._sampled, i)
        out = _C.logits(self.ptr, i, self._n_vocab)
        if out is None:
            raise LlamaError(f"no logits for output {i}: was it marked as output in the batch?")
        return out

    # -- backend sampling ----------------------------------------------------------

    @exclusive
    def _set_sampler(self, seq_id: int, owner: Handle | None, chain: CData | None) -> bool:
        """Attach (``owner`` and its ``chain`` pointer) or detach (None) the backend
        sampler of ``seq_id``; the context keeps an attached chain alive.
        Called by :meth:`SamplerChain.attach` and ``detach``."""
        self._check_seq(seq_id)
        if owner is not None and self._samplers.get(seq_id) not in (None, owner):
            raise LlamaError(f"sequence {seq_id} already has a backend sampler; detach it "
                             "first")
        ok = _C.set_sampler(self.ptr, seq_id, chain)
        if owner is not None and ok:
            self._samplers[seq_id] = owner
        else:
            self._samplers.pop(seq_id, None)
        return ok

    @property
    def backend_samplers(self) -> dict[int, Handle]:
        """{seq_id: SamplerChain} attached with :meth:`SamplerChain.attach`."""
        return dict(self._samplers)

    @exclusive
    def embeddings(self, i: int = -1) -> np.ndarray:
        """Embedding for the token at batch index ``i`` (context created with
        ``embeddings=True``); negative ``i`` counts the outputs from the end.

        A copy (float32, n_embd), valid after the next decode and after close.
        """
        out = _C.embeddings(self.ptr, i, self._n_embd)
        if out is None:
            raise LlamaError(f"no embedding for output {i}: create the context with "
                             "embeddings=True and mark the token as output")
        return out

    @exclusive
    def seq_embeddings(self, seq_id: int = 0) -> np.ndarray:
        """Pooled embedding of sequence ``seq_id`` (pooling other than ``none``).

        A copy, valid after the next decode and after close.
        """
        n = self._n_embd if self.pooling != PoolingType.RANK else \
            max(1, int(getattr(self.model, "n_cls_out", 1)))
        out = _C.seq_embeddings(self.ptr, seq_id, n)
        if out is None:
            raise LlamaError(f"no pooled embedding for sequence {seq_id} (is pooling 'none'?)")
        return out

    # -- memory (KV cache) ----------------------------------------------------

    @exclusive
    def clear(self, data: bool = True) -> None:
        """Forget all tokens of all sequences (``llama_memory_clear``)."""
        _C.memory_clear(self.ptr, data)

    def _check_seq(self, seq_id: int, allow_all: bool = False) -> None:
        if allow_all and seq_id == -1:
            return
        if not 0 <= seq_id < self.n_seq_max:
            raise ValueError(f"seq_id {seq_id} is outside 0..{self.n_seq_max - 1}")

    @exclusive
    def seq_rm(self, seq_id: int = -1, p0: int = -1, p1: int = -1) -> bool:
        """Remove positions [p0, p1) of ``seq_id`` (-1: all sequences / open ends).

        Returns False when the memory cannot remove a part of a sequence
        (recurrent models); removing whole sequences always works.
        """
        self._check_seq(seq_id, allow_all=True)
        return _C.seq_rm(self.ptr, seq_id, p0, p1)

    @property
    def split_kv(self) -> bool:
        """Whether each sequence has its own KV stream (``kv_unified=False`` with
        ``n_seq_max > 1``): ``n_ctx_seq`` is then a part of ``n_ctx``."""
        return self.n_seq_max > 1 and self.n_ctx_seq < self.n_ctx

    @exclusive
    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Make positions [p0, p1) of ``src`` also belong to ``dst`` (-1: open ends).

        With one KV stream (``kv_unified=True``, or one sequence) the cells are
        shared, nothing is copied. With a stream per sequence (:attr:`split_kv`)
        llama.cpp copies a whole stream and supports only whole sequences: a
        range inside the context raises ValueError (llama.cpp would abort);
        copy everything and cut the tail with :meth:`seq_rm` instead.
        """
        self._check_seq(src)
        self._check_seq(dst)
        if src != dst and self.split_kv and (p0 > 0 or 0 <= p1 < self.n_ctx_seq):
            raise ValueError(
                f"seq_cp({src}, {dst}, p0={p0}, p1={p1}): with one KV stream per sequence "
                f"(kv_unified=False, n_seq_max={self.n_seq_max}) only whole sequences can be "
                f"copied (p0=-1, p1=-1); copy all and seq_rm the tail, or create the context "
                f"with kv_unified=True")
        _C.seq_cp(self.ptr, src, dst, p0, p1)

    @exclusive
    def seq_keep(self, seq_id: int) -> None:
        """Remove every sequence except ``seq_id``."""
        self._check_seq(seq_id)
        _C.seq_keep(self.ptr, seq_id)

    @exclusive
    def seq_add(self, seq_id: int, p0: int, p1: int, delta: int) -> None:
        """Shift positions [p0, p1) of ``seq_id`` by ``delta`` (RoPE is updated)."""
        self._check_seq(seq_id, allow_all=True)
        if not self._can_shift:
            raise LlamaError("this model's memory cannot shift positions")
        _C.seq_add(self.ptr, seq_id, p0, p1, delta)

    @exclusive
    def seq_div(self, seq_id: int, p0: int, p1: int, d: int) -> None:
        """Divide positions [p0, p1) of ``seq_id`` by ``d`` (self-extend)."""
        self._check_seq(seq_id, allow_all=True)
        if d < 1:
            raise ValueError("d must be >= 1")
        if not self._can_shift:
            raise LlamaError("this model's memory cannot shift positions")
        _C.seq_div(self.ptr, seq_id, p0, p1, d)

    @exclusive
    def seq_pos_min(self, seq_id: int = 0) -> int:
        """Smallest position stored for ``seq_id``, -1 if none."""
        self._check_seq(seq_id)
        return _C.seq_pos_min(self.ptr, seq_id)

    @exclusive
    def seq_pos_max(self, seq_id: int = 0) -> int:
        """Largest position stored for ``seq_id``, -1 if none."""
        self._check_seq(seq_id)
        return _C.seq_pos_max(self.ptr, seq_id)

    @property
    def can_shift(self) -> bool:
        """Whether the memory can shift positions (``seq_add``, ``seq_div``)."""
        self.ptr  # raise if closed
        return self._can_shift

    @exclusive
    def shift(self, seq_id: int, n_keep: int, n_discard: int) -> int:
        """Context shift as llama.cpp does it: drop ``n_discard`` tokens after the
        first ``n_keep`` and move the rest back. Returns the new next position."""
        self._check_seq(seq_id)
        ptr = self.ptr
        end = _C.seq_pos_max(ptr, seq_id) + 1
        if n_keep < 0 or n_discard < 1 or n_keep + n_discard > end:
            raise ValueError(f"cannot discard {n_discard} tokens after {n_keep} "
                             f"from a sequence of {end}")
        if not self._can_shift:
            raise LlamaError("this model's memory cannot shift positions")
        if not _C.seq_rm(ptr, seq_id, n_keep, n_keep + n_discard):
            raise LlamaError("this model's memory cannot remove part of a sequence")
        _C.seq_add(ptr, seq_id, n_keep + n_discard, end, -n_discard)
        return end - n_discard

    # -- state -------------------------------------------------------------------

    @exclusive
    def state_get(self) -> bytes:
        """The state of the context's memory (KV cache of all sequences) as bytes.

        At this llama.cpp the state holds the memory only, not the logits of
        the last decode: after restoring, evaluate the next token (keep the
        last prompt token out of the saved state and decode it afterwards).
        """
        return _C.state_get(self.ptr)

    @exclusive
    def state_set(self, data: bytes) -> None:
        """Restore a state from :meth:`state_get` (same model and context size)."""
        _C.state_set(self.ptr, bytes_arg(data, "state data"))

    @exclusive
    def save_state(self, path: str | os.PathLike[str], tokens: Sequence[int] = ()) -> None:
        """Write the state and ``tokens`` (the prompt it holds) to a file."""
        _C.state_save_file(self.ptr, path, tokens)

    @exclusive
    def load_state(self, path: str | os.PathLike[str], max_tokens: int | None = None) -> list[int]:
        """Restore a state file; returns the tokens saved with it."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"state file not found: {path}")
        return _C.state_load_file(self.ptr, path, self.n_ctx if max_tokens is None else max_tokens)

    @exclusive
    def seq_state_get(self, seq_id: int = 0) -> bytes:
        """The memory of one sequence as bytes."""
        self._check_seq(seq_id)
        return _C.seq_state_get(self.ptr, seq_id)

    @exclusive
    def seq_state_set(self, data: bytes, seq_id: int = 0) -> None:
        """Load :meth:`seq_state_get` bytes into sequence ``seq_id``."""
        self._check_seq(seq_id)
        _C.seq_state_set(self.ptr, bytes_arg(data, "state data"), seq_id)

    @exclusive
    def save_seq_state(self, path: str | os.PathLike[str], seq_id: int = 0,
                       tokens: Sequence[int] = ()) -> None:
        self._check_seq(seq_id)
        _C.seq_state_save_file(self.ptr, path, seq_id, tokens)

    @exclusive
    def load_seq_state(self, path: str | os.PathLike[str], seq_id: int = 0,
                       max_tokens: int | None = None) -> list[int]:
        self._check_seq(seq_id)
        if not Path(path).is_file():
            raise FileNotFoundError(f"state file not found: {path}")
        cap = self.n_ctx if max_tokens is None else max_tokens
        return _C.seq_state_load_file(self.ptr, path, seq_id, cap)

    # -- LoRA --------------------------------------------------------------------

    @exclusive
    def set_loras(self, adapters: Mapping[LoraAdapter, float]) -> None:
        """Use exactly these LoRA adapters with these scales (``--lora-scaled``).

        Call again with other scales, or ``{}`` to remove them all: no model
        reload (as llama-server's ``/lora-adapters``).
        """
        if not isinstance(adapters, Mapping):
            raise TypeError(f"adapters must be a mapping LoraAdapter -> scale, "
                            f"got {type(adapters).__name__}")
        items = list(adapters.items())
        for adapter, scale in items:
            check_adapter(adapter)
            number_arg(scale, "LoRA scale")
            if adapter.model is not self.model:
                raise ValueError("a LoRA adapter belongs to the model it was loaded for")
        with contextlib.ExitStack() as stack:  # no adapter is freed during the call
            ptrs = [stack.enter_context(a._using()) for a, _ in items]
            _C.set_loras(self.ptr, ptrs, [number_arg(s, "LoRA scale") for _, s in items])
            for adapter, _ in items:
                adapter._users.add(self)
        self._loras = dict(items)  # keep them alive while in use

    @property
    def loras(self) -> dict[LoraAdapter, float]:
        return dict(self._loras)

    @exclusive
    def set_control_vector(self, data: np.ndarray | None, il_start: int = 1,
                           il_end: int | None = None) -> None:
        """Add a control vector to layers [il_start, il_end] (``--control-vector``).

        data: array of shape (n_layer, n_embd); row i is added to layer i+1's
            output (llama.cpp's convention: layer 0 has no vector). ``None``
            removes the control vector.
        """
        ctx = self.ptr
        if data is None:
            _C.set_control_vector(ctx, None, self._n_embd, -1, -1)
            return
        arr = np.ascontiguousarray(data, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self._n_embd:
            raise ValueError(f"control vector must have shape (n_layer, {self._n_embd})")
        end = arr.shape[0] if il_end is None else il_end
        _C.set_control_vector(ctx, arr, self._n_embd, il_start, end)

    def load_control_vectors(self, files: Sequence[tuple[str | os.PathLike[str], float]]
                             | Sequence[str | os.PathLike[str]], il_start: int = 1,
                             il_end: int | None = None) -> None:
        """Apply control vector files (``--control-vector FILE`` /
        ``--control-vector-scaled FILE SCALE``, ``--control-vector-layer-range``)."""
        pairs = [(f, 1.0) if isinstance(f, (str, os.PathLike)) else (f[0], float(f[1]))
                 for f in files]
        data = control_vector.combine(pairs)
        if data.shape[1] != self._n_embd:
            raise LlamaError(f"the control vectors have n_embd {data.shape[1]}, the model "
                             f"{self._n_embd}")
        self.set_control_vector(data, il_start, il_end if il_end is not None else data.shape[0])

    # -- performance ------------------------------------------------------------

    @exclusive
    def perf(self) -> dict[str, float]:
        """llama.cpp's own timings (``llama_perf_context``)."""
        return _C.perf(self.ptr)

    @exclusive
    def perf_reset(self) -> None:
        _C.perf_reset(self.ptr)

    # -- change tracking (the engine's prefix cache) --------------------------------

    _changes = 0
    _quiet_thread: int | None = None

    @property
    def changes(self) -> int:
        """How many calls have changed what the memory holds or how the model
        computes (decode, KV cache edits, state loads, LoRA adapters, control
        vectors), not counting those made by the thread set with
        :meth:`ignore_changes_from`. An engine compares it between its steps to
        notice changes made behind its back and forget the prefixes it cached."""
        return self._changes

    def ignore_changes_from(self, thread_ident: int | None) -> None:
        """Leave calls made by this thread (``threading.get_ident()``) out of
        :attr:`changes` (the engine, for its own decodes); None counts all."""
        self._quiet_thread = thread_ident

    def close(self) -> None:
        """Free the context, after a call running on another thread has ended.

        Raises LlamaError when called from inside one of the context's own
        calls (its abort callback, a Python sampler of a chain sampling it).
        """
        if self._ptr is None:
            return
        self._guard.wait()  # wait for a decode running on another thread
        try:
            if self._batch is not None:
                self._batch.close()
                self._batch = None
            self._loras = {}
            self._samplers = {}  # llama_free forgets them; the chains see the context closed
            super().close()
        finally:
            self._guard.release()

    def __repr__(self) -> str:
        if self.closed:
            return "<Context (closed)>"
        return f"<Context n_ctx={self.n_ctx} n_batch={self.n_batch} on {self.model!r}>"


for _name in ("decode", "encode", "eval_tokens", "clear", "seq_rm", "seq_cp", "seq_keep",
              "seq_add", "seq_div", "shift", "state_set", "load_state", "seq_state_set",
              "load_seq_state", "set_loras", "set_control_vector"):
    setattr(Context, _name, counted(getattr(Context, _name)))
del _name
