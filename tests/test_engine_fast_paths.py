"""The engine's hot-path shortcuts give what llama.cpp's own calls give."""

from __future__ import annotations

import pytest

import llama_cffi as lc
from llama_cffi.objects.argmax import sample_argmax
from llama_cffi.objects.chain import SamplerChain, build_chain
from llama_cffi.objects.samplers import greedy, logit_bias


def test_argmax_chains_match_llama_sampler_sample(smollm2: lc.Model) -> None:
    """A greedy chain, alone or after a logit bias (as ignore_eos builds it),
    picks its token in numpy; llama.cpp's llama_sampler_sample on a chain of
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


def test_argmax_ties_nan_and_odd_biases_follow_llama_cpp(smollm2: lc.Model) -> None:
    """The arg-max fast path keeps llama.cpp's greedy rules on logits written by
    hand into llama.cpp's own buffer: the first of equal maxima, NaN never
    wins (but a NaN at index 0 keeps index 0), all -inf gives 0, and biases
    that raise a token, ban the winner or make a tie are applied (a NaN bias
    is refused by SamplingParams)."""
    from llama_cffi._bindings import context as _C

    vocab = smollm2.vocab
    n_vocab = vocab.n_tokens
    toks = vocab.tokenize("Hello there")
    n = len(toks)
    nan, inf = float("nan"), float("inf")

    def write(ctx: lc.Context, values: dict[int, float], fill: float = 0.0) -> None:
        c = ctx._enter()
        try:
            view = _C.logits_view(c, n - 1, n_vocab)
            assert view is not None
            view[:] = fill
            for i, v in values.items():
                view[i] = v
        finally:
            ctx._leave()

    cases: list[tuple[dict[int, float], float, dict[int, float] | None]] = [
        ({50: 9.0, 100: 9.0}, 0.0, None),           # a tie: the first
        ({0: nan, 7: 5.0}, 0.0, None),               # NaN at 0 keeps 0
        ({3: nan, 7: 5.0, 9: nan}, 0.0, None),       # NaN elsewhere never wins
        ({}, -inf, None),                            # all -inf
        ({n_vocab - 1: 3.0}, 0.0, None),             # the last token (the tail loop)
        ({7: 5.0, 8: 4.0}, 0.0, {7: -inf}),          # the winner banned
        ({7: 5.0, 8: 4.0}, 0.0, {9: 2.0}),           # another lifted over it
        ({7: 5.0, 8: 4.0}, 0.0, {8: 1.0}),           # a tie made by a bias
    ]
    with lc.Context(smollm2, n_ctx=64, n_threads=2) as ctx, lc.Batch(16) as batch:
        batch.set_rows(toks, list(range(n)), [0] * n, [False] * (n - 1) + [True])
        ctx.decode(batch)
        for values, fill, bias in cases:
            write(ctx, values, fill)
            fast = build_chain(vocab, {"temperature": 0, "logit_bias": bias})
            reference = SamplerChain([logit_bias(vocab, bias or {0: 0.0}), greedy()])
            try:
                assert fast.is_argmax and not reference.is_argmax
                assert fast.sample(ctx, n - 1) == reference.sample(ctx, n - 1), (values, bias)
                assert sample_argmax(ctx, [fast], [n - 1]) == [reference.sample(ctx, n - 1)]
            finally:
                fast.close()
                reference.close()


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
