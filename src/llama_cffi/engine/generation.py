"""The token generation loop on a context, and UTF-8-safe incremental text.

:class:`Generation` evaluates a prompt and then yields one sampled token at a
time, stopping at an end-of-generation token, after ``max_tokens`` or when the
context is full; ``finish_reason`` says which. :class:`TextStream` turns the
tokens into text pieces that never split a multi-byte UTF-8 character.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator, Sequence

from ..objects.batch import Batch
from ..objects.context import Context
from ..errors import ContextFullError
from ..objects.chain import SamplerChain
from ..objects.vocab import Vocab


class TextStream:
    """Decodes token pieces incrementally; holds back incomplete UTF-8 sequences.

    piece: the function giving a token's bytes (default:
    ``vocab.token_to_piece(token, special=special)``; the engine passes its
    :class:`TokenFacts`' cached one).
    """

    def __init__(self, vocab: Vocab, *, special: bool = False,
                 piece: Callable[[int], bytes] | None = None) -> None:
        self._vocab = vocab
        self._special = special
        self._piece = piece if piece is not None else self._token_to_piece
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def _token_to_piece(self, token: int) -> bytes:
        return self._vocab.token_to_piece(token, special=self._special)

    def add(self, token: int) -> str:
        """Text completed by ``token`` (may be empty while a character is incomplete)."""
        return self._decoder.decode(self._piece(token))

    def flush(self) -> str:
        """Whatever is left at the end (an incomplete character becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)


class TokenFacts:
    """Per-token facts of a vocabulary the token loop asks for every token
    (end of generation, the token's bytes), read from llama.cpp once per
    token id and then served from a dict: they cannot change while the model
    lives. Holds at most one entry per token id of the vocabulary."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._vocab = vocab
        self._eog: dict[int, bool] = {}
        self._pieces: dict[int, bytes] = {}

    def is_eog(self, token: int) -> bool:
        """``vocab.is_eog(token)``."""
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = self._vocab.is_eog(token)
        return eog

    def piece(self, token: int) -> bytes:
        """``vocab.token_to_piece(token)`` (special tokens render empty)."""
        b = self._pieces.get(token)
        if b is None:
            b = self._pieces[token] = self._vocab.token_to_piece(token)
        return b

    def text(self, token: int) -> str:
        """The piece as text (an incomplete UTF-8 character becomes U+FFFD)."""
        return self.piece(token).decode("utf-8", "replace")


class Generation:
    """Iterate over the tokens generated for ``prompt_tokens``.

    The sequence ``seq_id`` of ``ctx`` is cleared first, then the prompt is
    evaluated in chunks of the context's n_batch, then tokens are sampled with
    ``sampler`` one by one. After iteration ``finish_reason`` is ``"stop"``
    (end-of-generation token), ``"length"`` (max_tokens reached) or
    ``"context"`` (the context is full), and ``tokens`` holds the output.
    """

    def __init__(self, ctx: Context, sampler: SamplerChain, prompt_tokens: Sequence[int],
                 *, max_tokens: int = -1, seq_id: int = 0) -> None:
        if not prompt_tokens:
            raise ValueError("the prompt has no tokens")
        self.ctx = ctx
        self.sampler = sampler
        self.prompt_tokens = list(prompt_tokens)
        self.max_tokens = max_tokens
        self.seq_id = seq_id
        self.tokens: list[int] = []
        self.finish_reason: str | None = None

    def __iter__(self) -> Iterator[int]:
        ctx, sampler, seq_id = self.ctx, self.sampler, self.seq_id
        vocab = ctx.vocab
        n_ctx = ctx.n_ctx
        ctx.seq_rm(seq_id)
        prompt = self.prompt_tokens
        if len(prompt) >= n_ctx:
            raise ContextFullError(
                f"the prompt has {len(prompt)} tokens but the context holds {n_ctx}; "
                "use a larger n_ctx or a shorter prompt")
        ctx.eval_tokens(prompt, 0, seq_id=seq_id)
        pos = len(prompt)
        step = Batch(1)
        try:
            remaining = self.max_tokens
            while remaining != 0:
                token = sampler.sample(ctx, -1)
                if vocab.is_eog(token):
                    self.finish_reason = "stop"
                    return
                self.tokens.append(token)
                yield token
                remaining -= 1
                if remaining == 0:
                    break
                if pos >= n_ctx:
                    self.finish_reason = "context"
                    return
                step.clear()
                step.add(token, pos, (seq_id,), True)
                ctx.decode(step)
                pos += 1
            self.finish_reason = "length"
        finally:
            step.close()
