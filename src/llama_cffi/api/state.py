"""Saved states of an LLM's KV cache: :class:`LLMState`, and the save/load calls behind
:meth:`LLM.save_state <llama_cffi.LLM.save_state>` / :meth:`LLM.load_state`.

A state is one sequence's KV cache as llama.cpp serialises it
(``llama_state_seq_get_data``) together with the tokens it holds. Loading it
into an LLM of the same model (and KV cache types) makes the next prompt
that starts with those tokens evaluate only the rest: the same as if the
tokens had just been evaluated, so a greedy continuation is identical.

The state holds the KV cache only, not the logits of the last token: the
engine always evaluates the last prompt token again, as it does for any
reused prefix.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..engine import state_cache
from ..errors import EngineBusyError, LlamaError

if TYPE_CHECKING:
    from ..engine.engine import Engine
    from ..objects.model import Model

_MAGIC = b"LCFFISTA"
_VERSION = 1


def model_key(model: Model) -> str:
    """What a state must agree on to be loaded into a context of ``model``."""
    return (f"{model.description}|params={model.n_params}|layers={model.n_layer}|"
            f"embd={model.n_embd}|vocab={model.vocab.n_tokens}")


@dataclass(frozen=True)
class LLMState:
    """The KV cache of one sequence and the tokens it holds.

    tokens: the tokens whose KV the state holds (prompt and output).
    data: llama.cpp's serialised sequence state (``llama_state_seq_get_data``).
    model: :func:`model_key` of the model it was made with; loading it into
        another model raises :class:`~llama_cffi.LlamaError`.
    """

    tokens: tuple[int, ...]
    data: bytes
    model: str = ""

    @property
    def nbytes(self) -> int:
        """Bytes the state takes in memory (KV data and tokens)."""
        return len(self.data) + 4 * len(self.tokens)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def to_bytes(self) -> bytes:
        """The state as one byte string (:meth:`from_bytes` reads it back)."""
        meta = json.dumps({"version": _VERSION, "model": self.model,
                           "n_tokens": len(self.tokens)}).encode()
        toks = np.asarray(self.tokens, dtype="<i4").tobytes()
        return b"".join((_MAGIC, struct.pack("<I", len(meta)), meta, toks, self.data))

    @classmethod
    def from_bytes(cls, blob: bytes) -> LLMState:
        """Read :meth:`to_bytes`' output; ValueError if it is not such a state."""
        view = memoryview(blob)
        if bytes(view[:8]) != _MAGIC or len(view) < 12:
            raise ValueError("not a llama_cffi state (bad magic)")
        (n_meta,) = struct.unpack("<I", view[8:12])
        try:
            meta = json.loads(bytes(view[12:12 + n_meta]))
            n = int(meta["n_tokens"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a llama_cffi state (bad header: {exc})") from None
        if meta.get("version") != _VERSION:
            raise ValueError(f"unsupported state version {meta.get('version')!r}")
        start = 12 + n_meta
        if n < 0 or len(view) < start + 4 * n:
            raise ValueError("truncated llama_cffi state")
        tokens = np.frombuffer(view[start:start + 4 * n], dtype="<i4")
        return cls(tuple(int(t) for t in tokens), bytes(view[start + 4 * n:]),
                   str(meta.get("model", "")))

    def __repr__(self) -> str:
        return f"<LLMState {len(self.tokens)} tokens, {len(self.data)} bytes>"


def save(engine: Engine, model: Model) -> LLMState:
    """The state of the slot used last (on the engine thread, between steps)."""

    def run() -> LLMState:
        state_cache.check_outside_changes(engine)
        slot = max(engine.slots, key=lambda s: (bool(s.cache), s.last_used, -s.seq_id))
        return LLMState(tuple(slot.cache), engine.ctx.seq_state_get(slot.seq_id),
                        model_key(model))

    return engine.call(run)


def load(engine: Engine, model: Model, state: LLMState) -> None:
    """Put ``state`` into a free slot (slot 0 if free): the next prompt that
    starts with its tokens reuses them."""
    if not isinstance(state, LLMState):
        raise TypeError(f"state must be an LLMState (from LLM.save_state), "
                        f"got {type(state).__name__}")
    key = model_key(model)
    if state.model and state.model != key:
        raise LlamaError(f"this state was saved with another model ({state.model}); "
                         f"this LLM's is {key}")
    if len(state.tokens) > engine.ctx.n_ctx_seq:
        raise LlamaError(f"the state holds {len(state.tokens)} tokens; a slot of this LLM "
                         f"holds {engine.ctx.n_ctx_seq}")
    check = engine.vocab.check_token
    tokens = [check(t) for t in state.tokens]

    def run() -> None:
        state_cache.check_outside_changes(engine)
        free = [s for s in engine.slots if not s.busy]
        if not free:
            raise EngineBusyError("every slot is serving a request; load the state between "
                                  "requests")
        slot = free[0]
        ctx = engine.ctx
        ctx.seq_rm(slot.seq_id)
        try:
            if state.data:
                ctx.seq_state_set(state.data, slot.seq_id)
        except BaseException:
            ctx.seq_rm(slot.seq_id)
            state_cache.adopt(engine, {slot.seq_id: []})
            raise
        state_cache.adopt(engine, {slot.seq_id: tokens if state.data else []})
        slot.last_used = max(s.last_used for s in engine.slots) + 1e-6

    engine.call(run)
