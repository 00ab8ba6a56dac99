"""Speculative decoding: propose several tokens cheaply, verify them in one
target pass, keep the longest agreeing prefix.

Proposers (llama.cpp's ``--spec-type`` names):

* :class:`DraftModel` (``draft-simple``): a smaller model with the same
  vocabulary drafts greedily, up to ``n_max`` tokens, stopping early when its
  top probability falls below ``p_min`` (``--spec-draft-n-max``,
  ``--spec-draft-n-min``, ``--spec-draft-p-min``; ``--draft-max``/
  ``--draft-min`` are the older names). Its context is kept in step with the
  target's across calls, so prefix reuse applies to both.
* :class:`NgramSimple` (``ngram-simple``): no model; the last ``size_n``
  tokens are looked up earlier in the prompt and output, and the ``size_m``
  tokens that followed them there are proposed (``--spec-ngram-simple-size-n``,
  ``--spec-ngram-simple-size-m``). Cheap and effective when the output repeats
  the input (editing, summarising, extraction).

Verification is exact: at every drafted position the target's own sampler
picks a token from the target's distribution given the accepted prefix, and a
draft token is kept only if it equals that pick. Every emitted token is
therefore distributed exactly as the target alone would produce it (greedy:
the same tokens; with temperature: the same distribution, and with a seed
the same run-to-run results); drafts only change how many tokens one target
pass yields. A proposer is any object with ``propose(history, last) ->
list[int]``, ``close()`` and the ``name`` attribute, which leaves room for
llama.cpp's other kinds (MTP heads, EAGLE-3) without changing the verifier.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..objects.batch import Batch
from ..objects.context import Context
from ..errors import LlamaError
from ..objects.model import Model

VOCAB_MAX_SIZE_DIFFERENCE = 128  # common/speculative.cpp
VOCAB_CHECK_START_TOKEN_ID = 5


class IncompatibleDraftError(LlamaError, ValueError):
    """The draft model's vocabulary does not match the target's."""


def check_compatible(target: Model, draft: Model) -> None:
    """Refuse a draft whose vocabulary differs from the target's, with llama.cpp's rules:
    same tokenizer type, same BOS/EOS handling and ids, sizes within 128, and the
    same text for every token id from 5 on."""
    vt, vd = target.vocab, draft.vocab
    if vt.type != vd.type:
        raise IncompatibleDraftError(
            f"the draft's tokenizer is {vd.type}, the target's {vt.type}")
    if vt.add_bos != vd.add_bos or (vt.add_bos and vt.bos != vd.bos):
        raise IncompatibleDraftError(
            f"BOS tokens differ (add: {vt.add_bos}/{vd.add_bos}, id: {vt.bos}/{vd.bos})")
    if vt.add_eos != vd.add_eos or (vt.add_eos and vt.eos != vd.eos):
        raise IncompatibleDraftError(
            f"EOS tokens differ (add: {vt.add_eos}/{vd.add_eos}, id: {vt.eos}/{vd.eos})")
    if abs(vt.n_tokens - vd.n_tokens) > VOCAB_MAX_SIZE_DIFFERENCE:
        raise IncompatibleDraftError(
            f"vocabulary sizes differ too much: target {vt.n_tokens}, draft {vd.n_tokens} "
            f"(at most {VOCAB_MAX_SIZE_DIFFERENCE})")
    for i in range(VOCAB_CHECK_START_TOKEN_ID, min(vt.n_tokens, vd.n_tokens)):
        if vt.text(i) != vd.text(i):
            raise IncompatibleDraftError(
                f"token {i} differs: target {vt.text(i)!r}, draft {vd.text(i)!r}")


@dataclass
class SpecStats:
    """Per-call statistics: drafted and accepted tokens, target forward passes."""

    drafted: int = 0
    accepted: int = 0
    target_passes: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


class NgramSimple:
    """Draft tokens from n-grams of the prompt and the output so far (``ngram-simple``).

    size_n: length of the n-gram looked up (including the last sampled token).
    size_m: most tokens proposed (what followed the earlier occurrence).
    """

    name = "ngram-simple"

    def __init__(self, size_n: int = 12, size_m: int = 48) -> None:
        if not 1 <= size_n <= 1024 or not 1 <= size_m <= 1024:
            raise ValueError("size_n and size_m must be between 1 and 1024")
        self.size_n = size_n
        self.size_m = size_m

    def propose(self, history: Sequence[int], last: int, seq_id: int = 0) -> list[int]:
        """Tokens that followed the latest earlier occurrence of the current n-gram."""
        n, m = self.size_n, self.size_m
        cur = len(history)
        if cur <= n + m + 1:
            return []
        pattern = list(history[cur - n + 1:]) + [last]
        arr = np.asarray(history, dtype=np.int32)
        # search backwards, skipping the occurrence we are at
        first = pattern[0]
        for j in np.flatnonzero(arr[1:cur - n] == first)[::-1] + 1:
            if list(arr[j:j + n]) == pattern:
                copy = min(m, cur - (j + n))
                if copy < n:
                    return []
                return [int(t) for t in arr[j + n:j + n + copy]]
        return []

    def close(self) -> None:
        pass


class DraftModel:
    """Draft with a smaller model of the same vocabulary (``draft-simple``).

    draft: a Model, or a path / registry name loaded with ``model_params``
        (``-md``; ``n_gpu_layers`` is ``-ngld``, ``devices`` is ``-devd``).
    n_max, n_min, p_min: ``--spec-draft-n-max/-n-min/-p-min``; defaults are
        llama.cpp's (3, 0, 0.0).
    context_params: the draft context's own settings (``n_ctx``, ``type_k``,
        ``type_v``, threads ...).
    """

    name = "draft-simple"

    def __init__(self, target: Model, draft: Model | str | os.PathLike[str], *, n_max: int = 3,
                 n_min: int = 0, p_min: float = 0.0,
                 model_params: dict[str, Any] | None = None,
                 **context_params: Any) -> None:
        if n_max < 1 or n_min < 0 or n_min > n_max:
            raise ValueError("need 1 <= n_max and 0 <= n_min <= n_max")
        if isinstance(draft, Model):
            self.model, self._owns = draft, False
        else:
            self.model, self._owns = Model(draft, **(model_params or {})), True
        try:
            check_compatible(target, self.model)
            context_params.setdefault("n_ctx", 4096)
            self.ctx = Context(self.model, **context_params)
        except BaseException:
            if self._owns:
                self.model.close()
            raise
        self.n_max, self.n_min, self.p_min = n_max, n_min, p_min
        self._caches: dict[int, list[int]] = {}  # per sequence: tokens in the draft's KV
        self._step = Batch(1)

    def _sync(self, tokens: Sequence[int], seq_id: int) -> None:
        """Make the draft's sequence hold ``tokens`` and its logits follow the last one."""
        ctx = self.ctx
        common = 0
        cache = self._caches.get(seq_id, [])
        for a, b in zip(cache, tokens):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)
        if not ctx.seq_rm(seq_id, common, -1):
            ctx.seq_rm(seq_id)
            common = 0
        ctx.eval_tokens(tokens[common:], common, seq_id=seq_id)
        self._caches[seq_id] = list(tokens)

    def propose(self, history: Sequence[int], last: int, seq_id: int = 0) -> list[int]:
        """Up to ``n_max`` greedy tokens of the draft model after ``history + [last]``,
        kept in the draft's sequence ``seq_id`` (one per engine slot)."""
        ctx, step = self.ctx, self._step
        if not 0 <= seq_id < ctx.n_seq_max:
            raise ValueError(f"the draft context has {ctx.n_seq_max} sequences, not {seq_id + 1}")
        tokens = list(history) + [last]
        if len(tokens) + self.n_max >= ctx.n_ctx_seq:
            return []
        self._sync(tokens, seq_id)
        cache = self._caches[seq_id]
        out: list[int] = []
        pos = len(tokens)
        while True:
            logits = ctx.logits()
            tok = int(np.argmax(logits))
            if self.p_min > 0:
                z = logits - logits[tok]
                p_top = 1.0 / float(np.exp(z).sum())
                if p_top < self.p_min:
                    break
            out.append(tok)
            if len(out) >= self.n_max:
                break
            step.clear()
            step.add(tok, pos, (seq_id,), True)
            ctx.decode(step)
            cache.append(tok)
            pos += 1
        return out if len(out) >= self.n_min else []

    def close(self) -> None:
        self._step.close()
        self.ctx.close()
        if self._owns:
            self.model.close()
