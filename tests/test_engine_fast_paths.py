"""The engine's hot-path shortcuts give what llama.cpp's own calls give."""

from __future__ import annotations

import pytest

import llama_cffi as lc
from llama_cffi.objects.chain import SamplerChain, build_chain, sample_argmax
from llama_cffi.objects.samplers import greedy, logit_bias


def test_argmax_chains_match_llama_sampler_sample(smollm2: lc.Model) -> None:
    """A greedy chain, alone or after a logit bias (as ignore_eos builds it),
    picks its token in Python; llama.cpp's llama_sampler_sample on a chain of
    the same samplers must pick the same, also when the bias bans the winner
    or lifts another token over it."""
    vocab = smollm2.vocab
    toks = vocab.tokenize("The capital of France is Paris, and the capital of Italy is")
    n = len(toks)
    with lc.Context(smollm2, n_ctx=256, n_threads=2) as ctx, lc.Batch(64) as batch:
        batch.set_rows(toks, list(range(n)), [0] * n, [True] * n)
        ctx.decode(batch)
        rows = [n - 3, n - 2, n - 1]
        for row in rows:
            raw = ctx.logits(row)
            order = raw.argsort()[::-1]
            top, second = int(order[0]), int(order[1])
            gap = float(raw[top] - raw[second])
            cases = [None, {top: float("-inf")}, {second: gap + 1.0},
                     {top: -1.0, second: 0.5}, {int(order[5]): float("-inf")}]
            for bias in cases:
                params = {"temperature": 0, "logit_bias": bias}
                fast = build_chain(vocab, params)
                # built by hand, the chain runs llama_sampler_sample (a zero bias
                # changes nothing)
                reference = SamplerChain([logit_bias(vocab, bias or {0: 0.0}), greedy()])
                try:
                    assert fast.is_argmax and not reference.is_argmax
                    assert fast.sample(ctx, row) == reference.sample(ctx, row)
                finally:
                    fast.close()
                    reference.close()
            banned = build_chain(vocab, {"temperature": 0, "logit_bias": {top: float("-inf")}})
            lifted = build_chain(vocab, {"temperature": 0, "logit_bias": {second: gap + 1.0}})
            try:
                assert banned.sample(ctx, row) != top  # the bias is applied, not ignored
                assert lifted.sample(ctx, row) == second
            finally:
                banned.close()
                lifted.close()
        bans = [{int(ctx.logits(r).argmax()): float("-inf")} for r in rows]
        chains = [build_chain(vocab, {"temperature": 0, "logit_bias": b}) for b in bans]
        alone = [SamplerChain([logit_bias(vocab, b), greedy()]) for b in bans]
        try:
            assert sample_argmax(ctx, chains, rows) == [c.sample(ctx, r) for c, r in zip(alone, rows)]
            with pytest.raises(ValueError, match="arg-max"):
                sample_argmax(ctx, alone, rows)
        finally:
            for c in chains + alone:
                c.close()


def test_set_rows_fills_like_add_and_names_bad_values() -> None:
    with lc.Batch(8, n_seq_max=2) as a, lc.Batch(8, n_seq_max=2) as b:
        a.set_rows([5, 6, 7], [0, 1, 0], [0, 0, 1], [False, True, True])
        for t, p, s, o in [(5, 0, 0, False), (6, 1, 0, True), (7, 0, 1, True)]:
            b.add(t, p, (s,), o)
        assert a.n_tokens == b.n_tokens == 3
        assert list(a.tokens[:3]) == list(b.tokens[:3])
        assert list(a.positions[:3]) == list(b.positions[:3])
        assert list(a.output[:3]) == list(b.output[:3])
        assert list(a.n_seq_ids[:3]) == [1, 1, 1]
        with pytest.raises(TypeError, match="position"):
            a.set_rows([1], [0.5], [0], [True])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="token"):
            a.set_rows([2**40], [0], [0], [True])
        assert a.n_tokens == 0  # a refused fill leaves the batch empty
        with pytest.raises(ValueError, match="same length"):
            a.set_rows([1, 2], [0], [0, 0], [True, True])
        with pytest.raises(OverflowError):
            a.set_rows([1] * 9, [0] * 9, [0] * 9, [True] * 9)
