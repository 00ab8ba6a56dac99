"""The engine's hooks for states kept outside the KV cache, and for changes made behind its back.

A *prompt cache* (:class:`PromptStateCache`, implemented in
:mod:`llama_cffi.api.prompt_cache`) keeps the KV state of finished requests
keyed by their tokens. When a request starts, the engine asks it for the
entry sharing the longest prefix with the prompt; if that prefix is longer
than what the slot (or another slot) already holds, the entry's state is
loaded into the slot's sequence and only the rest of the prompt is
evaluated. When a request ends, the slot's state is offered to the cache.

The engine assumes it alone changes its context. The context counts the
calls that change it from any other place (``Context.changes``: KV edits,
state loads, LoRA adapters, control vectors, decodes); when the count moved
since the engine last looked, the engine forgets every cached prefix (and
fails the requests running then: their KV cache is no longer theirs).

Everything here runs on the engine thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ..errors import ContextError, LlamaError
from .slot import common_prefix

if TYPE_CHECKING:
    from .engine import Engine
    from .slot import Slot

logger = logging.getLogger("llama_cffi")


class PromptStateCache(Protocol):
    """What the engine needs of a prompt cache."""

    def lookup(self, tokens: Sequence[int]) -> tuple[Sequence[int], bytes] | None:
        """The entry (its tokens, its sequence state) whose tokens share the
        longest non-empty prefix with ``tokens``, or None."""
        ...

    def store(self, tokens: Sequence[int], data: bytes) -> None:
        """Keep the state ``data`` of a sequence holding ``tokens``."""
        ...


def restore(engine: Engine, slot: Slot, tokens: Sequence[int], best: int) -> bool:
    """Load the cached state sharing the longest prefix with ``tokens`` into
    ``slot`` if that prefix is longer than ``best`` (what the slots hold
    already). Returns whether it did; ``slot.cache`` then holds its tokens."""
    cache = engine.prompt_cache
    if cache is None:
        return False
    hit = cache.lookup(tokens)
    if hit is None:
        return False
    cached, data = hit
    if min(common_prefix(cached, tokens), len(tokens) - 1) <= best:
        return False
    ctx = engine.ctx
    ctx.seq_rm(slot.seq_id)
    slot.cache = []
    try:
        ctx.seq_state_set(data, slot.seq_id)
    except (LlamaError, ValueError):  # a state of another context size or model: skip it
        ctx.seq_rm(slot.seq_id)
        return False
    slot.cache = list(cached)
    if not engine._reusable(slot):  # a sliding-window cache cannot continue an old prefix
        ctx.seq_rm(slot.seq_id)
        slot.cache = []
        return False
    return True


def store(engine: Engine, slot: Slot) -> None:
    """Offer the state of ``slot``'s sequence to the prompt cache."""
    cache = engine.prompt_cache
    if cache is None or not slot.cache:
        return
    try:
        cache.store(list(slot.cache), engine.ctx.seq_state_get(slot.seq_id))
    except (OSError, LlamaError) as exc:  # a full disk must not fail the request
        logger.warning("the prompt cache could not store a state: %s", exc)


def check_outside_changes(engine: Engine) -> None:
    """Forget the slots' cached prefixes if the context was changed outside the
    engine since the last check (and fail the requests running then)."""
    changes = engine.ctx.changes
    if changes == engine._changes_seen:
        return
    engine._changes_seen = changes
    error = ContextError(
        "the context was changed outside the engine (KV cache, state, LoRA adapters or "
        "control vector) while this request ran; change it through the LLM between requests")
    for slot in engine.slots:
        if slot.busy:
            engine._finish(slot, "error", error)
        slot.cache = []


def adopt(engine: Engine, caches: dict[int, list[int]]) -> None:
    """Record that the caller (on the engine thread, after
    :func:`check_outside_changes`) changed the listed slots' sequences itself,
    and the tokens each now holds."""
    engine._changes_seen = engine.ctx.changes
    for seq_id, tokens in caches.items():
        engine.slots[seq_id].cache = list(tokens)
