"""Images and audio in engine requests: the prefill of media chunks.

A request with media carries a :class:`MediaPrefill`: its prompt was split
by a :class:`~llama_cffi.objects.multimodal.MultimodalProjector` into text
and media chunks. The request's token list holds the text tokens as they
are and, for each medium, one *placeholder* per position it occupies
(``n_pos``): negative numbers derived from the medium's content hash, never
valid token ids. So the slot's cached token list still maps one entry to one
position, and prefix reuse works unchanged: the same image at the same
place gives the same placeholders (its KV is reused, nothing is encoded or
decoded again), another image differs at its first placeholder.

When a slot's prefill reaches a medium, the engine thread calls
:meth:`MediaPrefill.evaluate_at`, which has the projector encode it (or take
it from the projector's cache) and decode its embeddings into the slot's
sequence right away; text around it goes through the engine's normal
batches. Speculative drafts and context shifting are off for such requests
(placeholders are not tokens a draft model or a shift could handle).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import MediaError
from ..objects.context import Context
from ..objects.multimodal import TEXT, MediaPrompt, MultimodalProjector
from ..objects.vocab import Vocab
from .slot import Slot


def placeholders(key: str, n: int) -> list[int]:
    """``n`` negative placeholder ids standing for the medium ``key``."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)
    return [-1 - ((h + i) % 0x7FFFFFF0) for i in range(n)]


@dataclass(frozen=True)
class MediaSpan:
    """One medium of a request: positions ``start .. start + n_pos - 1``,
    chunk ``chunk`` of the prompt."""

    start: int
    n_pos: int
    chunk: int


class MediaPrefill:
    """The media of one request and how to evaluate them into a slot.

    It owns ``prompt`` from now on: the prompt is closed with :meth:`close`,
    or when the prefill is collected (once the engine has dropped the
    request), so the chunks stay valid for exactly as long as a request can
    reach them.
    """

    def __init__(self, projector: MultimodalProjector, prompt: MediaPrompt) -> None:
        tokens: list[int] = []
        spans: list[MediaSpan] = []
        for i, c in enumerate(prompt.chunks):
            if c.kind == TEXT:
                tokens.extend(c.tokens)
            else:
                spans.append(MediaSpan(len(tokens), c.n_pos, i))
                tokens.extend(placeholders(c.key or f"{c.id}#{i}", c.n_pos))
        if not spans:
            raise ValueError("the prompt has no media: submit its tokens without a MediaPrefill")
        if spans[-1].start + spans[-1].n_pos == len(tokens):
            raise MediaError("the prompt ends with a medium: text must follow the last "
                             "image or audio (the chat template's assistant prefix does)")
        self.projector = projector
        self.prompt = prompt
        self.tokens = tokens
        """The request's token list: text tokens and placeholders."""
        self.spans = tuple(spans)
        self._by_start = {s.start: s for s in spans}
        self._closer = weakref.finalize(self, prompt.close)

    def close(self) -> None:
        """Close the prompt now (a request still using it then fails cleanly)."""
        self._closer()

    def check(self, tokens: Sequence[int], vocab: Vocab) -> list[int]:
        """``tokens`` (which must be :attr:`tokens`) with the text tokens checked."""
        if list(tokens) != self.tokens:
            raise ValueError("the tokens of a request with media must be its "
                             "MediaPrefill's tokens")
        return [t if t < 0 else vocab.check_token(t) for t in tokens]

    def text_until(self, pos: int, end: int) -> int:
        """How far text may be batched from ``pos`` (at most ``end``): up to the
        next medium."""
        for s in self.spans:
            if s.start >= pos:
                return min(end, s.start)
        return end

    def evaluate_at(self, ctx: Context, pos: int, seq_id: int) -> list[int]:
        """If a medium starts at ``pos``, evaluate it into ``seq_id`` now and
        return its placeholders (what the slot's cache gains); else ``[]``."""
        span = self._by_start.get(pos)
        if span is None:
            return []
        new_pos = self.projector.evaluate_chunk(ctx, self.prompt, span.chunk, n_past=pos,
                                                seq_id=seq_id, n_batch=ctx.n_batch)
        if new_pos != pos + span.n_pos:  # pragma: no cover - libmtmd's own bookkeeping
            raise MediaError(f"the medium took {new_pos - pos} positions, "
                             f"{span.n_pos} were announced")
        return self.tokens[pos:pos + span.n_pos]


def prefill_media(ctx: Context, slot: Slot) -> int:
    """Evaluate every medium that starts where ``slot``'s prefill stands
    (engine thread); the prefill's new position."""
    req = slot.req
    media = req.media if req is not None else None
    if media is None:
        return slot.n_prompt_done
    while True:
        added = media.evaluate_at(ctx, slot.n_prompt_done, slot.seq_id)
        if not added:
            return slot.n_prompt_done
        slot.cache += added
        slot.n_prompt_done += len(added)
