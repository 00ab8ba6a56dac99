"""A slot: one sequence of the engine's context and the request it serves.

The slot keeps the tokens whose KV cache its sequence holds (``cache``) also
after its request ends, for prefix reuse. While it serves a request it turns
sampled tokens into text (UTF-8 safe), finds stop strings across token
boundaries (holding back text that could be the start of one), counts
tokens against ``max_tokens`` and records log-probabilities.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .generation import TextStream, TokenFacts
from .request import _DONE, _ERROR, _PIECE, Request
from .results import Completion, Timings, TokenLogprob, Usage


def common_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common prefix of two token sequences (prefix reuse)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters could be the start of a stop string."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


def logprob_of(piece: Callable[[int], str], logits: np.ndarray, token: int,
               top_n: int) -> TokenLogprob:
    """The log-probability of ``token`` under ``logits`` and the ``top_n`` best."""
    x = logits.astype(np.float64)
    m = x.max()
    lp = x - (m + np.log(np.exp(x - m).sum()))
    top: list[tuple[int, str, float]] = []
    if top_n > 0:
        idx = np.argpartition(-lp, top_n)[:top_n]
        idx = idx[np.argsort(-lp[idx])]
        top = [(int(i), piece(int(i)), float(lp[i])) for i in idx]
    return TokenLogprob(token, piece(token), float(lp[token]), top)


class Slot:
    """Sequence ``seq_id`` of the engine's context. Used by the engine thread only."""

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.cache: list[int] = []  # tokens whose KV is in this sequence
        self.req: Request | None = None
        self.n_prompt_done = 0  # prompt tokens in the KV cache
        self.next_token: int | None = None  # sampled, not yet decoded
        self.draft: list[int] = []
        self.rows: list[int] = []  # batch rows of this slot's outputs in the current step
        # this step's prompt chunk when its logits are wanted (.prompt_logprobs):
        # (first batch row, first position, tokens)
        self.chunk: tuple[int, int, int] | None = None
        self.prompt_logprobs: list[TokenLogprob | None] | None = None
        self.last_used = 0.0

    @property
    def busy(self) -> bool:
        return self.req is not None

    @property
    def prefilling(self) -> bool:
        return self.req is not None and self.next_token is None

    # -- a request starts ---------------------------------------------------------------

    def start(self, req: Request, reused: int, facts: TokenFacts) -> None:
        self.req = req
        self.n_prompt_done = reused
        self.next_token = None
        self.draft = []
        self.rows = []
        self._piece: Callable[[int], str] = facts.text
        self._stream = TextStream(facts.vocab, piece=facts.piece)
        self.out: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stop_hit: str | None = None
        self.logprobs: list[TokenLogprob] | None = [] if req.sampling.logprobs is not None \
            else None
        self.chunk = None
        # one entry per prompt token; the first has none (nothing precedes it)
        self.prompt_logprobs = [None] if req.prompt_logprobs is not None else None
        self.usage = Usage(prompt_tokens=len(req.tokens), cached_tokens=reused)
        self.timings = Timings(prompt_tokens_evaluated=len(req.tokens) - reused)
        self.t_start = time.perf_counter()
        self.t_first: float | None = None
        if req.echo:
            req.handle._push(_PIECE, req.echo)

    def prompt_outputs(self, first_row: int, first_pos: int, n: int) -> list[bool]:
        """The batch's output flags for a prompt chunk of ``n`` tokens at rows
        ``first_row ..`` (positions ``first_pos ..``): all set when the request
        wants the prompt's log-probabilities (the chunk is then remembered for
        :func:`~llama_cffi.engine.prompt_logprobs.collect`), else none."""
        want = self.prompt_logprobs is not None
        self.chunk = (first_row, first_pos, n) if want else None
        return [want] * n

    # -- tokens come in -------------------------------------------------------------------

    def accept(self, token: int, is_eog: bool, logits: np.ndarray | None,
               logprob: TokenLogprob | None = None) -> str | None:
        """Take one sampled token; returns a finish reason if the request ends here.
        ``logprob``: its log-probabilities computed already (a generation run's),
        else they come from ``logits``."""
        req = self.req
        assert req is not None
        sp = req.sampling
        if self.t_first is None:
            self.t_first = time.perf_counter()
            self.timings.prompt_seconds = self.t_first - self.t_start
            self.timings.time_to_first_token = self.t_first - req.submitted
        if sp.max_tokens == 0:  # the prompt only (its KV cache, its log-probabilities)
            return "length"
        if req.stopping is not None and logits is not None and \
                req.stopping(req.tokens + self.out, logits):
            return "stop"
        if is_eog and not sp.ignore_eos:
            return "grammar" if req.has_grammar else "stop"
        self.out.append(token)
        if self.logprobs is not None and logprob is not None:
            self.logprobs.append(logprob)
        elif self.logprobs is not None and logits is not None:
            self.logprobs.append(logprob_of(self._piece, logits, token, sp.logprobs or 0))
        self.text += self._stream.add(token)
        stops = sp.stop
        if stops:
            search_from = max(0, self.emitted - max(map(len, stops)))
            hits = [(self.text.find(s, search_from), s) for s in stops]
            found = [(i, s) for i, s in hits if i >= 0]
            if found:
                at, self.stop_hit = min(found)
                self.text = self.text[:at]
                self._emit(at)
                return "stop"
            safe = len(self.text) - stop_holdback(self.text, stops)
        else:
            safe = len(self.text)
        self._emit(safe)
        if 0 <= sp.max_tokens <= len(self.out):
            return "length"
        self.next_token = token
        return None

    def accept_run(self, tokens: Sequence[int], is_eog: Callable[[int], bool]) -> tuple[int,
                                                                                    str | None]:
        """:meth:`accept` for each of a generation run's ``tokens``, for a request
        with no stop strings, logprobs or stopping criterion, handing its new
        text to the caller once (a run serves no reader of pieces).
        (tokens taken, finish reason or None)."""
        req = self.req
        assert req is not None and self.t_first is not None
        sp = req.sampling
        out, add, limit = self.out, self._stream.add, sp.max_tokens
        pieces: list[str] = []
        finish: str | None = None
        n = 0
        for tok in tokens:
            n += 1
            if is_eog(tok) and not sp.ignore_eos:
                finish = "grammar" if req.has_grammar else "stop"
                break
            out.append(tok)
            pieces.append(add(tok))
            if 0 <= limit <= len(out):
                finish = "length"
                break
            self.next_token = tok
        self.text += "".join(pieces)
        self._emit(len(self.text))
        return n, finish

    def _emit(self, upto: int, req: Request | None = None) -> None:
        req = req or self.req
        if upto > self.emitted and req is not None:
            req.handle._push(_PIECE, self.text[self.emitted:upto])
            self.emitted = upto

    # -- the request ends -------------------------------------------------------------------

    def finish(self, reason: str, error: BaseException | None = None) -> Completion | None:
        """End the request: deliver the Completion (or the error), free the slot.

        Exactly one final event reaches the caller, whatever happens here.
        """
        req = self.req
        if req is None:
            return None
        self.req = None
        self.next_token = None
        self.draft = []
        self.rows = []
        self.last_used = time.perf_counter()
        try:
            req.chain.close()
        except BaseException as exc:  # noqa: BLE001 - the caller learns of it
            error = error or exc
        if error is not None:
            req.handle._push(_ERROR, error)
            return None
        try:
            done = self._completion(reason, req)
        except BaseException as exc:  # noqa: BLE001 - never leave the caller waiting
            req.handle._push(_ERROR, exc)
            return None
        req.handle._push(_DONE, done)
        return done

    def _completion(self, reason: str, req: Request) -> Completion:
        if reason != "cancelled" and self.stop_hit is None:
            tail = self._stream.flush()
            if tail:
                self.text += tail
        if reason != "cancelled":
            self._emit(len(self.text), req)
        t_end = time.perf_counter()
        if self.t_first is not None:
            self.timings.generation_seconds = t_end - self.t_first
        self.timings.generated_tokens = len(self.out)
        self.usage.completion_tokens = len(self.out)
        return Completion(text=req.echo + self.text, tokens=self.out, finish_reason=reason,
                          usage=self.usage, timings=self.timings, logprobs=self.logprobs,
                          stop_string=self.stop_hit, prompt_logprobs=self.prompt_logprobs,
                          prompt_tokens=None if self.prompt_logprobs is None
                          else list(req.tokens))
