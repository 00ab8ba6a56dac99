"""One sequence of a context, generating: prompt reuse, sampling, speculation, stops.

:class:`SequenceRunner` keeps the tokens whose KV cache sequence 0 holds, so
a prompt that starts like the previous prompt plus its output only evaluates
the new part. :meth:`SequenceRunner.run` is the token loop behind
``LLM.complete``/``stream``/``chat``: it yields text pieces (UTF-8 safe,
stop strings found across tokens) and fills a :class:`Completion`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Protocol

import numpy as np

from ..errors import ContextFullError
from ..objects.batch import Batch
from ..objects.chain import SamplerChain
from ..objects.context import Context
from ..objects.params import SamplingParams
from .generation import TextStream
from .results import Completion, Timings, TokenLogprob, Usage

Cancel = Callable[[], bool] | threading.Event


class Proposer(Protocol):
    """A speculative proposer (see :mod:`llama_cffi.engine.speculative`)."""

    name: str

    def propose(self, history: Sequence[int], last: int) -> list[int]: ...

    def close(self) -> None: ...


def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters could be the start of a stop string."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


def logprob_of(vocab_piece: Callable[[int], str], logits: np.ndarray, token: int,
               top_n: int) -> TokenLogprob:
    """The log-probability of ``token`` under ``logits`` and the ``top_n`` best."""
    m = logits.max()
    logz = m + np.log(np.exp(logits - m).sum())
    lp = logits - logz
    top: list[tuple[int, str, float]] = []
    if top_n > 0:
        idx = np.argpartition(-lp, top_n)[:top_n]
        idx = idx[np.argsort(-lp[idx])]
        top = [(int(i), vocab_piece(int(i)), float(lp[i])) for i in idx]
    return TokenLogprob(token, vocab_piece(token), float(lp[token]), top)


class SequenceRunner:
    """Generation on sequence 0 of ``ctx``, reusing its KV cache across calls.

    Not thread-safe: the LLM that owns it serialises calls.
    """

    def __init__(self, ctx: Context, spec: Proposer | None = None) -> None:
        self.ctx = ctx
        self.vocab = ctx.vocab
        self.spec = spec
        self.cache: list[int] = []  # tokens whose KV is in sequence 0
        self._step = Batch(1)
        self._vbatch: Batch | None = None
        self._last_logits: np.ndarray | None = None

    def close(self) -> None:
        self._step.close()
        if self._vbatch is not None:
            self._vbatch.close()

    def forget(self) -> None:
        """The KV cache was changed behind the runner's back: reuse nothing."""
        self.cache = []

    def prepare(self, tokens: list[int], context_shift: bool) -> tuple[int, float]:
        """Make the KV cache hold ``tokens`` (reusing the common prefix); returns
        (reused token count, seconds spent evaluating)."""
        ctx = self.ctx
        n_ctx = ctx.n_ctx_seq
        if len(tokens) >= n_ctx:
            if not context_shift:
                raise ContextFullError(
                    f"the prompt has {len(tokens)} tokens but the context holds {n_ctx}; "
                    "use a larger n_ctx, a shorter prompt, or context_shift=True")
            tokens[:] = tokens[:4] + tokens[-(n_ctx // 2):]  # keep the start and the recent half
        common = 0
        for a, b in zip(self.cache, tokens):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # always evaluate the last prompt token
        if not ctx.seq_rm(0, common, -1):
            ctx.seq_rm(0)
            common = 0
        self.cache = tokens[:common]
        t0 = time.perf_counter()
        ctx.eval_tokens(tokens[common:], common, seq_id=0)
        self.cache = list(tokens)
        return common, time.perf_counter() - t0

    def _ensure_room(self, n: int, context_shift: bool) -> bool:
        """Room for ``n`` more tokens in the context, shifting if allowed."""
        ctx = self.ctx
        if len(self.cache) + n <= ctx.n_ctx_seq:
            return True
        if not context_shift:
            return False
        n_keep = min(4, len(self.cache))
        n_discard = max(n, (len(self.cache) - n_keep) // 2)
        ctx.shift(0, n_keep, n_discard)
        del self.cache[n_keep:n_keep + n_discard]
        return True

    def _verify_batch(self, n: int) -> Batch:
        b = self._vbatch
        if b is None or b.capacity < n:
            if b is not None:
                b.close()
            b = self._vbatch = Batch(max(n, 64))
        return b

    def tokens(self, chain: SamplerChain, timings: Timings, context_shift: bool,
               want_logits: bool = False) -> Generator[int, None, None]:
        """Sampled tokens, one at a time; the memory always holds ``self.cache``.

        A token is fed back (decoded) only when the consumer asks for the next
        one, so the last token of an output is never decoded needlessly.
        """
        ctx, step, spec = self.ctx, self._step, self.spec

        def pick(i: int = -1) -> int:
            if want_logits:  # for logprobs: the distribution the token came from
                self._last_logits = ctx.logits(i).astype(np.float64)
            return chain.sample(ctx, i)

        tok = pick()
        while True:
            yield tok
            draft = spec.propose(self.cache, tok) if spec is not None else []
            if not self._ensure_room(1 + len(draft), context_shift):
                draft = []
                if not self._ensure_room(1, context_shift):
                    return
            pos = len(self.cache)
            if not draft:
                step.clear()
                step.add(tok, pos, (0,), True)
                ctx.decode(step)
                self.cache.append(tok)
                timings.target_passes += 1
                tok = pick()
                continue
            batch = self._verify_batch(len(draft) + 1)
            batch.clear()
            for i, t in enumerate([tok, *draft]):
                batch.add(t, pos + i, (0,), True)
            ctx.decode(batch)
            self.cache += [tok, *draft]
            timings.target_passes += 1
            timings.drafted_tokens += len(draft)
            for i in range(len(draft) + 1):
                t = pick(i)
                if i < len(draft) and t == draft[i]:
                    timings.accepted_tokens += 1
                    yield t
                    continue
                keep = pos + 1 + i  # tok and the accepted drafts
                ctx.seq_rm(0, keep, -1)
                del self.cache[keep:]
                tok = t
                break

    def _piece(self, token: int) -> str:
        return self.vocab.token_to_piece(token).decode("utf-8", "replace")

    def run(self, tokens: list[int], chain: SamplerChain, sp: SamplingParams,
            cancel: Cancel | None, context_shift: bool, has_grammar: bool,
            holder: list[Completion]) -> Iterator[str]:
        """Generate after ``tokens``; yields text pieces, appends the Completion to
        ``holder`` at the end (also when the consumer stops early)."""
        vocab = self.vocab
        stops = list(sp.stop)
        max_tokens = sp.max_tokens
        usage = Usage(prompt_tokens=len(tokens))
        timings = Timings()
        out_tokens: list[int] = []
        pieces = TextStream(vocab)
        text = ""
        emitted = 0
        finish = "length"
        stop_hit: str | None = None
        lps: list[TokenLogprob] | None = [] if sp.logprobs is not None else None
        is_cancelled = (cancel.is_set if isinstance(cancel, threading.Event)
                        else cancel) or (lambda: False)
        try:
            usage.cached_tokens, timings.prompt_seconds = self.prepare(tokens, context_shift)
            timings.prompt_tokens_evaluated = len(tokens) - usage.cached_tokens
            t_gen = time.perf_counter()
            source = self.tokens(chain, timings, context_shift, lps is not None)
            try:
                for token in source:
                    if is_cancelled():
                        finish = "cancelled"
                        break
                    if vocab.is_eog(token) and not sp.ignore_eos:
                        finish = "grammar" if has_grammar else "stop"
                        break
                    out_tokens.append(token)
                    if lps is not None and self._last_logits is not None:
                        lps.append(logprob_of(self._piece, self._last_logits, token,
                                              sp.logprobs or 0))
                    text += pieces.add(token)
                    if stops:
                        search_from = max(0, emitted - max(map(len, stops)))
                        hits = [(text.find(s, search_from), s) for s in stops]
                        hits = [(i, s) for i, s in hits if i >= 0]
                        if hits:
                            at, stop_hit = min(hits)
                            text = text[:at]
                            finish = "stop"
                            if at > emitted:
                                yield text[emitted:at]
                            emitted = at
                            break
                        safe = len(text) - stop_holdback(text, stops)
                    else:
                        safe = len(text)
                    if safe > emitted:
                        yield text[emitted:safe]
                        emitted = safe
                    if 0 <= max_tokens <= len(out_tokens):
                        finish = "length"
                        break
                else:
                    finish = "length"  # the context is full
            finally:
                source.close()
            timings.generation_seconds = time.perf_counter() - t_gen
        except GeneratorExit:
            finish = "cancelled"
            raise
        finally:
            if finish != "stop" or stop_hit is None:
                tail = pieces.flush()
                if finish != "cancelled" and tail:
                    text += tail
            timings.generated_tokens = len(out_tokens)
            usage.completion_tokens = len(out_tokens)
            holder.append(Completion(text=text, tokens=out_tokens, finish_reason=finish,
                                     usage=usage, timings=timings, logprobs=lps,
                                     stop_string=stop_hit))
        if emitted < len(text):
            yield text[emitted:]
