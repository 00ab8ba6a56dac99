"""Several prompts at once on one context: one sequence each, shared batches."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..errors import ContextFullError
from ..objects.batch import Batch
from ..objects.chain import SamplerChain
from ..objects.context import Context
from .generation import TextStream
from .results import Completion, Timings, Usage


def generate_batch(ctx: Context, tokens: Sequence[list[int]], *, max_tokens: int,
                   make_chain: Callable[[], SamplerChain],
                   ignore_eos: bool = False) -> list[Completion]:
    """Generate for every token list at once, sequence ``i`` holding prompt ``i``.

    make_chain: a fresh sampler chain per sequence.
    """
    vocab = ctx.vocab
    n = len(tokens)
    if n == 0:
        return []
    if n > ctx.n_seq_max:
        raise ValueError(f"{n} prompts need a context with n_seq_max >= {n} "
                         f"(this one has {ctx.n_seq_max}); pass n_seq_max to LLM(...)")
    limit = ctx.n_ctx_seq
    for i, t in enumerate(tokens):
        if not t:
            raise ValueError(f"prompt {i} is empty")
        if len(t) >= limit:
            raise ContextFullError(f"prompt {i} has {len(t)} tokens; each sequence holds {limit}")
    chains = [make_chain() for _ in range(n)]
    batch = Batch(ctx.n_batch, n_seq_max=1)
    try:
        ctx.clear()
        t0 = time.perf_counter()
        # every prompt token but the last, in full batches, without outputs
        pending = [(s, pos, tok) for s, t in enumerate(tokens) for pos, tok in enumerate(t[:-1])]
        for i in range(0, len(pending), batch.capacity):
            batch.clear()
            for s, pos, tok in pending[i:i + batch.capacity]:
                batch.add(tok, pos, (s,), False)
            ctx.decode(batch)
        # the last prompt token of each sequence together: their logits are rows 0..n-1
        batch.clear()
        for s, t in enumerate(tokens):
            batch.add(t[-1], len(t) - 1, (s,), True)
        ctx.decode(batch)
        t_prompt = time.perf_counter() - t0
        rows = {s: s for s in range(n)}
        positions = [len(t) for t in tokens]
        outs: list[list[int]] = [[] for _ in range(n)]
        finish = ["length"] * n
        active = list(range(n))
        t1 = time.perf_counter()
        while active:
            batch.clear()
            still = []
            for s in active:
                tok = chains[s].sample(ctx, rows[s])
                if vocab.is_eog(tok) and not ignore_eos:
                    finish[s] = "stop"
                    continue
                outs[s].append(tok)
                if (max_tokens >= 0 and len(outs[s]) >= max_tokens) or positions[s] >= limit:
                    continue
                rows[s] = batch.n_tokens
                batch.add(tok, positions[s], (s,), True)
                positions[s] += 1
                still.append(s)
            active = still
            if active:
                ctx.decode(batch)
        t_gen = time.perf_counter() - t1
    finally:
        batch.close()
        for c in chains:
            c.close()
    results = []
    for s in range(n):
        stream = TextStream(vocab)
        text = "".join(stream.add(t) for t in outs[s]) + stream.flush()
        results.append(Completion(
            text=text, tokens=outs[s], finish_reason=finish[s],
            usage=Usage(prompt_tokens=len(tokens[s]), completion_tokens=len(outs[s])),
            timings=Timings(prompt_seconds=t_prompt, generation_seconds=t_gen,
                            prompt_tokens_evaluated=sum(map(len, tokens)),
                            generated_tokens=sum(map(len, outs)))))
    return results
