"""Samplers on constructed logits, seeds, Python samplers, grammars."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest

import llama_cffi as lc
from llama_cffi import sampling as S
from llama_cffi._bindings.callbacks import live_sampler_states

GRAMMARS = Path(__file__).resolve().parent.parent / "vendor" / "llama.cpp" / "grammars"


def cands(logits: list[float]) -> lc.Candidates:
    return lc.Candidates.from_logits(np.array(logits, dtype=np.float32))


def run(sampler: lc.Sampler, c: lc.Candidates) -> None:
    """Apply a loose sampler once, then free it."""
    with sampler:
        sampler.apply(c)


def kept(c: lc.Candidates) -> set[int]:
    """Token ids still possible: within size and with a finite logit."""
    return {int(i) for i, l in zip(c.ids, c.logits) if np.isfinite(l)}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


LOGITS = [1.0, 4.0, 3.0, 0.5, 2.0, -1.0]  # probabilities: 4 > 3 > 2 > 1 > 0.5 > -1


def test_greedy_and_dist_select() -> None:
    c = cands(LOGITS)
    run(S.greedy(), c)
    assert c.selected_token() == 1
    counts = np.zeros(6)
    with S.dist(seed=42) as d:
        for _ in range(3000):
            c = cands(LOGITS)
            d.apply(c)
            counts[c.selected_token()] += 1
    expected = softmax(np.array(LOGITS)) * 3000
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected) + 5)


def test_top_k_keeps_k_most_likely() -> None:
    c = cands(LOGITS)
    run(S.top_k(2), c)
    assert c.size == 2 and set(c.ids) == {1, 2}


def test_top_p_keeps_smallest_mass_set() -> None:
    p = softmax(np.array(LOGITS))
    c = cands(LOGITS)
    run(S.top_p(0.8), c)
    order = np.argsort(-p)
    need = int(np.searchsorted(np.cumsum(p[order]), 0.8) + 1)
    assert set(c.ids[:c.size]) == set(order[:need].tolist())


def test_min_p_drops_relatively_unlikely() -> None:
    x = np.array(LOGITS, dtype=np.float32)
    p = softmax(x.astype(np.float64))
    for min_p in (0.1, 0.3):
        c = cands(LOGITS)
        run(S.min_p(min_p), c)
        # p_i >= min_p * p_max, kept in their original order, logits untouched
        expected = [i for i in range(6) if p[i] >= min_p * p.max()]
        assert [int(i) for i in c.ids] == expected, min_p
        np.testing.assert_array_equal(c.logits, x[expected])
    # min_keep larger than what passes: the min_keep most likely, sorted
    c = cands(LOGITS)
    run(S.min_p(0.3, min_keep=3), c)
    assert [int(i) for i in c.ids] == [1, 2, 4] and c.sorted


def test_temperature_scales_logits() -> None:
    c = cands(LOGITS)
    run(S.temp(2.0), c)
    np.testing.assert_allclose(c.logits, np.array(LOGITS) / 2, rtol=1e-6)
    c = cands(LOGITS)
    run(S.temp(0.0), c)
    assert kept(c) == {1}


def test_dynamic_temperature_follows_the_entropy() -> None:
    x = np.array(LOGITS, dtype=np.float64)
    c = cands(LOGITS)
    run(S.temp_ext(1.0, delta=0.5, exponent=1.0), c)
    # temperature = min + (max - min) * (H / H_max) ** exponent, within [0.5, 1.5]
    p = softmax(x)
    t = 0.5 + 1.0 * (-(p * np.log(p)).sum() / np.log(6))
    order = np.argsort(-x)
    assert [int(i) for i in c.ids] == order.tolist()
    np.testing.assert_allclose(c.logits, x[order] / t, rtol=1e-5)
    np.testing.assert_allclose(c.p, softmax(x[order] / t), rtol=1e-5)


def test_typical_keeps_a_subset_around_entropy() -> None:
    p = softmax(np.array(LOGITS, dtype=np.float64))
    # locally typical: tokens by |surprise - entropy|, the fewest whose mass exceeds 0.5
    entropy = -(p * np.log(p)).sum()
    order = np.argsort(np.abs(-np.log(p) - entropy))
    n = int(np.argmax(np.cumsum(p[order]) > 0.5)) + 1
    c = cands(LOGITS)
    run(S.typical(0.5), c)
    assert [int(i) for i in c.ids] == order[:n].tolist() == [2, 1]
    np.testing.assert_allclose(c.p, p[order[:n]], rtol=1e-5)  # not renormalised


def test_xtc_removes_top_choices() -> None:
    c = cands([5.0, 4.9, 4.8, -5.0, -6.0])
    run(S.xtc(probability=1.0, threshold=0.1, seed=1), c)
    # all tokens above the threshold but the least likely of them are removed
    assert set(c.ids[:c.size]) & {0, 1} == set() and 2 in set(c.ids[:c.size])


def test_top_n_sigma() -> None:
    x = np.array(LOGITS)
    c = cands(LOGITS)
    run(S.top_n_sigma(1.0), c)
    assert kept(c) == {i for i in range(6) if x[i] >= x.max() - 1.0 * x.std()}


def test_penalties_follow_history() -> None:
    pen = S.penalties(last_n=8, repeat=2.0, frequency=0.5, presence=0.25)
    with lc.SamplerChain([pen, S.greedy()]) as chain:
        check_penalties(chain)


def check_penalties(chain: lc.SamplerChain) -> None:
    chain.accept(1)
    chain.accept(1)
    chain.accept(3)
    c = cands(LOGITS)
    chain.apply(c)
    # token 1: positive logit / 2, then - 2*0.5 (frequency) - 0.25 (presence)
    assert c.logits[list(c.ids).index(1)] == pytest.approx(4.0 / 2 - 1.0 - 0.25)
    # token 3: 0.5 / 2 - 0.5 - 0.25
    assert c.logits[list(c.ids).index(3)] == pytest.approx(0.5 / 2 - 0.5 - 0.25)
    assert c.logits[list(c.ids).index(2)] == pytest.approx(3.0)
    chain.reset()
    c = cands(LOGITS)
    chain.apply(c)
    np.testing.assert_allclose(c.logits, LOGITS)


def test_logit_bias(smollm2: lc.Model) -> None:
    c = cands(LOGITS)
    run(S.logit_bias(smollm2, {3: 10.0, 1: float("-inf")}), c)
    assert c.logits[3] == pytest.approx(10.5) and not np.isfinite(c.logits[1])


def test_dry_penalises_continuing_a_repetition(smollm2: lc.Model) -> None:
    v = smollm2.vocab
    seq = v.tokenize(" red green blue red green", add_special=False)
    nxt = v.tokenize(" blue", add_special=False)[0]
    other = v.tokenize(" yellow", add_special=False)[0]
    with lc.SamplerChain([S.dry(smollm2, multiplier=1.0, base=2.0, allowed_length=1,
                                penalty_last_n=64), S.greedy()]) as chain:
        for t in seq:
            chain.accept(t)
        logits = np.zeros(v.n_tokens, dtype=np.float32)
        c = lc.Candidates.from_logits(logits)
        chain.apply(c)
    ids = list(c.ids)
    assert c.logits[ids.index(nxt)] < -0.5
    assert c.logits[ids.index(other)] == 0.0


def mirostat_v2_run(seed: int, tau: float, eta: float, steps: int) -> list[int]:
    """Run mirostat v2 on LOGITS and check every step against the algorithm:
    keep the tokens whose surprise -log2(p) is at most mu (at least the best),
    renormalise, select one of them, then mu -= eta * (surprise of the pick - tau)."""
    x = np.array(LOGITS, dtype=np.float64)
    p = softmax(x)
    order = np.argsort(-p)
    mu = np.float32(2 * tau)
    picks: list[int] = []
    with S.mirostat_v2(tau=tau, eta=eta, seed=seed) as m:
        for _ in range(steps):
            keep = [int(i) for i in order if -np.log2(p[i]) <= mu] or [int(order[0])]
            c = cands(LOGITS)
            m.apply(c)
            assert [int(i) for i in c.ids] == keep, (mu, keep)
            q = softmax(x[keep])
            np.testing.assert_allclose(c.p, q, rtol=1e-5)
            token = c.selected_token()
            picks.append(token)
            surprise = np.float32(-np.log2(q[keep.index(token)]))
            mu = np.float32(mu - np.float32(eta) * (surprise - np.float32(tau)))
    return picks


def test_mirostat_v2_follows_its_target_surprise() -> None:
    a = mirostat_v2_run(7, tau=2.0, eta=0.5, steps=40)
    assert len(set(a)) >= 2  # mu moved enough to admit more than one token
    assert mirostat_v2_run(7, tau=2.0, eta=0.5, steps=40) == a  # seeded: reproducible
    assert mirostat_v2_run(8, tau=2.0, eta=0.5, steps=40) != a
    # with eta 0, mu stays 2 * tau = 3.6 bits: ids 1, 2, 4 (0.67, 2.1, 3.6 bits), drawn
    # in proportion to their renormalised probabilities
    counts = np.zeros(6)
    with S.mirostat_v2(tau=1.8, eta=0.0, seed=3) as m:
        for _ in range(3000):
            c = cands(LOGITS)
            m.apply(c)
            counts[c.selected_token()] += 1
    q = np.zeros(6)
    q[[1, 2, 4]] = softmax(np.array(LOGITS, dtype=np.float64)[[1, 2, 4]])
    expected = q * 3000
    assert counts[[0, 3, 5]].sum() == 0
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected) + 5), counts


def generate(model: lc.Model, **params: object) -> list[int]:
    with model.context(n_ctx=256) as ctx, lc.SamplerChain.from_params(model, **params) as ch:
        return list(lc.Generation(ctx, ch, model.vocab.tokenize("Once upon a time"),
                                  max_tokens=24))


def test_seeds_reproduce_and_differ(smollm2: lc.Model) -> None:
    a = generate(smollm2, temperature=1.0, seed=123)
    b = generate(smollm2, temperature=1.0, seed=123)
    c = generate(smollm2, temperature=1.0, seed=124)
    assert a == b
    assert a != c
    # temperature 0 picks what the greedy sampler alone picks, whatever the seed
    with smollm2.context(n_ctx=256) as ctx, lc.SamplerChain([S.greedy()]) as greedy:
        reference = list(lc.Generation(ctx, greedy, smollm2.vocab.tokenize("Once upon a time"),
                                       max_tokens=24))
    assert len(reference) == 24
    assert generate(smollm2, temperature=0) == reference
    assert generate(smollm2, temperature=0, seed=9) == reference


def test_from_params_order_and_names(smollm2: lc.Model) -> None:
    with lc.SamplerChain.from_params(smollm2, temperature=0.7, repeat_penalty=1.1,
                                     dry_multiplier=0.8, seed=5) as chain:
        assert chain.names == ["penalties", "dry", "top-n-sigma", "top-k", "typical", "top-p",
                               "min-p", "xtc", "temp-ext", "dist"]
        assert chain.seed == 5
    with lc.SamplerChain.from_params(smollm2, samplers="kt", mirostat=0) as chain2:
        assert chain2.names == ["top-k", "temp-ext", "dist"]
    with lc.SamplerChain.from_params(smollm2, mirostat=2, temp=0.9) as chain3:
        assert chain3.names == ["temp", "mirostat-v2"]
    with pytest.raises(TypeError, match="unknown sampling parameter"):
        lc.SamplerChain.from_params(smollm2, temprature=0.5)


def test_defaults_from_gguf_metadata(smollm2_path: Path, tmp_path: Path) -> None:
    from .synthetic import write_moe_model

    path = write_moe_model(tmp_path / "m.gguf", smollm2_path, extra_kv={
        "general.sampling.top_k": 7, "general.sampling.temp": 0.3,
        "general.sampling.sequence": "kt"})
    with lc.Model(path) as m:
        defaults = lc.sampling.model_sampling_defaults(m)
        assert defaults == {"top_k": 7, "temperature": pytest.approx(0.3), "samplers": "kt"}
        with lc.SamplerChain.from_model_defaults(m, seed=3) as chain:
            assert chain.names == ["top-k", "temp-ext", "dist"]


class KeepEven(lc.PythonSampler):
    """Forbids odd token ids; records what it was told."""

    name = "keep-even"

    def __init__(self) -> None:
        self.accepted: list[int] = []

    def apply(self, c: lc.Candidates) -> None:
        logits = c.logits
        logits[c.ids % 2 == 1] = -np.inf

    def accept(self, token: int) -> None:
        self.accepted.append(token)


def test_python_sampler_in_a_chain(smollm2: lc.Model) -> None:
    # On constructed logits: the Python sampler sees what top-k left, its edits
    # reach the next sampler, and the chain selects among what it kept.
    seen: list[list[int]] = []

    class Recording(KeepEven):
        def apply(self, c: lc.Candidates) -> None:
            seen.append([int(i) for i in c.ids])
            super().apply(c)

    with lc.SamplerChain([S.top_k(4), Recording(), S.greedy()]) as small:
        c = cands(LOGITS)
        small.apply(c)
    assert seen == [[1, 2, 4, 0]]  # top-4, sorted
    assert {int(i) for i, l in zip(c.ids, c.logits) if np.isfinite(l)} == {0, 2, 4}
    assert c.selected_token() == 2  # the best even token, not 1

    rec = KeepEven()
    chain = lc.SamplerChain([S.top_k(50), rec, S.temp(0.8), S.dist(seed=1)])
    ref = weakref.ref(rec)
    del rec  # the chain keeps it alive
    gc.collect()
    with smollm2.context(n_ctx=256) as ctx:
        out = list(lc.Generation(ctx, chain, smollm2.vocab.tokenize("Hello"), max_tokens=12))
    assert len(out) == 12 and all(t % 2 == 0 for t in out)
    rec_again = ref()
    assert rec_again is not None and rec_again.accepted == out
    del rec_again
    state = chain._py_states[0]
    assert state in live_sampler_states
    chain.close()
    gc.collect()
    assert state not in live_sampler_states  # llama.cpp freed it through the iface


class Broken(lc.PythonSampler):
    def apply(self, c: lc.Candidates) -> None:
        raise RuntimeError("bug in user sampler")


def test_python_sampler_exception_reaches_the_caller(smollm2: lc.Model) -> None:
    with smollm2.context(n_ctx=64) as ctx, lc.SamplerChain([Broken(), S.greedy()]) as chain:
        ctx.eval_tokens(smollm2.vocab.tokenize("Hi"), 0)
        with pytest.raises(RuntimeError, match="bug in user sampler"):
            chain.sample(ctx)


class RaisesEverywhere(lc.PythonSampler):
    def apply(self, c: lc.Candidates) -> None:
        raise RuntimeError("apply failed")

    def accept(self, token: int) -> None:
        raise KeyError("accept failed")

    def reset(self) -> None:
        raise ValueError("reset failed")


def test_python_sampler_exceptions_survive_every_path() -> None:
    alone = RaisesEverywhere().to_sampler()
    with pytest.raises(RuntimeError, match="apply failed"):
        alone.apply(cands(LOGITS))
    alone.close()
    with lc.SamplerChain([RaisesEverywhere(), S.greedy()]) as chain:
        with pytest.raises(RuntimeError, match="apply failed"):
            chain.apply(cands(LOGITS))
        with pytest.raises(KeyError, match="accept failed"):
            chain.accept(1)
        with pytest.raises(ValueError, match="reset failed"):
            chain.reset()
        assert all(st.error is None for st in chain._py_states)  # nothing stale left


# -- grammars ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(GRAMMARS.glob("*.gbnf")), ids=lambda p: p.name)
def test_shipped_grammars_parse(path: Path, smollm2: lc.Model) -> None:
    g = lc.Grammar.from_file(path)
    g.sampler(smollm2).close()


@pytest.mark.parametrize("text, line, col, what", [
    ('root ::= "a" | ', None, None, None),  # valid: empty alternative
    ('root ::= "abc', 1, 14, "unexpected end"),
    ("root ::= foo\n", 1, 10, "undefined rule"),
    ('root := "a"\n', 1, 6, "expecting ::="),
    ('root ::= [a-z\n', 2, 1, "character class"),
    ('root ::= * "a"\n', 1, 10, "expecting preceding item"),
    ('root ::= "a"{x}\n', 1, 14, "expecting an int"),
    ('main ::= "a"\n', 1, 1, "no 'root' rule"),
    ('root ::= ("a"\n', 2, 1, "expecting ')'"),
    ('root ::= "\\q"\n', 1, 11, "unknown escape"),
])
def test_grammar_errors_have_positions(text: str, line: int | None, col: int | None,
                                       what: str | None, smollm2: lc.Model) -> None:
    if what is None:
        lc.Grammar(text).sampler(smollm2).close()
        return
    import re

    with pytest.raises(lc.GrammarError, match=re.escape(what)) as info:
        lc.Grammar(text)
    assert (info.value.line, info.value.column) == (line, col)


def test_grammar_constrains_generation(smollm2: lc.Model) -> None:
    g = lc.Grammar('root ::= "The answer is " [0-9]+ "."\n')
    with smollm2.context(n_ctx=256) as ctx, lc.SamplerChain(
            [g.sampler(smollm2), S.temp(1.0), S.dist(seed=3)]) as chain:
        stream = lc.TextStream(smollm2.vocab)
        gen = lc.Generation(ctx, chain, smollm2.vocab.tokenize("Q: 6*7?\nA:"), max_tokens=40)
        text = "".join(stream.add(t) for t in gen) + stream.flush()
    import re

    assert re.fullmatch(r"The answer is [0-9]+\.", text), text
    assert gen.finish_reason == "stop"


def test_grammar_dead_end_is_an_error(smollm2: lc.Model) -> None:
    v = smollm2.vocab
    # forbid every token that starts with "x": the grammar demands one
    banned = {t: float("-inf") for t in range(v.n_tokens) if v.token_to_piece(t).startswith(b"x")}
    with smollm2.context(n_ctx=64) as ctx, lc.SamplerChain(
            [S.logit_bias(smollm2, banned), lc.Grammar('root ::= "x"+\n').sampler(smollm2),
             S.greedy()]) as chain:
        ctx.eval_tokens(v.tokenize("Hello"), 0)
        with pytest.raises(lc.GrammarError, match="allows no token"):
            chain.sample(ctx)
        # a forbidden token is refused instead of aborting the process
        with pytest.raises(lc.GrammarError, match="not allowed"):
            chain.accept(v.tokenize("hello", add_special=False)[0])


def test_lazy_grammar_waits_for_its_trigger(smollm2: lc.Model) -> None:
    g = lc.Grammar('root ::= "<tool>" [a-z]{1,8} "</tool>"\n')
    v = smollm2.vocab
    sampler = g.sampler(smollm2, lazy=True, trigger_words=["<tool>"])
    with lc.SamplerChain([sampler, S.greedy()]) as chain:
        for t in v.tokenize("Free text before", add_special=False):
            chain.accept(t)  # not constrained yet
        for t in v.tokenize("<tool>abc", add_special=False):
            chain.accept(t)
        with pytest.raises(lc.GrammarError):
            chain.accept(v.tokenize("123", add_special=False)[0])  # now constrained
    with pytest.raises(ValueError, match="trigger"):
        g.sampler(smollm2, lazy=True)


def test_closing_the_model_closes_vocab_samplers(smollm2_path: Path) -> None:
    m = lc.Model(smollm2_path)
    chain = lc.SamplerChain([lc.Grammar('root ::= "a"\n').sampler(m), S.greedy()])
    loose = S.dry(m, multiplier=0.5)
    m.close()
    assert chain.closed and loose.closed
    with pytest.raises(lc.ClosedError):
        loose.apply(cands(LOGITS))


def test_mirostat_v1_estimates_zipf_and_truncates(smollm2: lc.Model) -> None:
    # Zipf-distributed logits (p_rank ~ rank^-1.1), the distribution mirostat
    # assumes: it estimates s_hat = 1.1 from the top m tokens and keeps the k best,
    # k = (eps * 2^mu / (1 - n^-eps))^(1/s_hat), eps = s_hat - 1, mu = 2 tau at first.
    n = smollm2.vocab.n_tokens
    x = -1.1 * np.log(np.arange(1, n + 1, dtype=np.float64))
    tau, eta = 3.0, 0.1

    def run(seed: int) -> list[int]:
        mu, picks = 2 * tau, []
        with S.mirostat(smollm2, tau=tau, eta=eta, m=100, seed=seed) as s:
            for _ in range(10):
                k = ((0.1 * 2.0 ** mu) / (1 - n ** -0.1)) ** (1 / 1.1)
                assert abs(k - round(k)) > 1e-3  # not at a rounding edge
                c = lc.Candidates.from_logits(x.astype(np.float32))
                s.apply(c)
                assert [int(i) for i in c.ids] == list(range(int(k)))
                q = softmax(x[:int(k)])
                np.testing.assert_allclose(c.p, q, rtol=1e-4)
                picks.append(c.selected_token())
                mu -= eta * (-np.log2(q[picks[-1]]) - tau)
        return picks

    a = run(5)
    assert len(set(a)) >= 2
    assert run(5) == a and run(6) != a


def test_adaptive_p_transforms_towards_its_target() -> None:
    x = np.array(LOGITS, dtype=np.float64)
    target, decay = 0.3, 0.5

    def transformed(p: np.ndarray, t: float) -> np.ndarray:
        d = np.abs(p - t) / 0.3
        return 5.0 - 10.0 * d * d / (1 + d)

    with lc.SamplerChain([S.adaptive_p(target, decay, seed=5)]) as chain:
        p = softmax(x)
        c = cands(LOGITS)
        chain.apply(c)
        # the first step aims at the target itself; order is kept
        assert [int(i) for i in c.ids] == list(range(6))
        np.testing.assert_allclose(c.logits, transformed(p, target), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(c.p, softmax(transformed(p, target)), rtol=1e-5)
        picked = c.selected_token()
        # accepting a token it did not pick leaves its average alone
        chain.accept(next(t for t in range(6) if t != picked))
        c = cands(LOGITS)
        chain.apply(c)
        np.testing.assert_allclose(c.logits, transformed(p, target), rtol=1e-5, atol=1e-5)
        # accepting its pick adds the pick's original probability to the moving
        # average (which starts as if `target` had always been picked); the next
        # target moves the other way: 2 * target - average
        picked = c.selected_token()
        chain.accept(picked)
        weighted = p[picked] + decay * target / (1 - decay)
        total = 1 + decay / (1 - decay)
        t2 = min(max(2 * target - weighted / total, 0.0), 1.0)
        assert abs(t2 - target) > 0.01
        c = cands(LOGITS)
        chain.apply(c)
        np.testing.assert_allclose(c.logits, transformed(p, t2), rtol=1e-5, atol=1e-5)



def test_infill_prefers_eog_or_merges_prefixes(smollm2: lc.Model) -> None:
    v = smollm2.vocab
    n = v.n_tokens
    # (1) end of generation is likely enough (3 * p_eog * n > p_text): only EOG tokens stay
    x = np.linspace(3, -3, n, dtype=np.float32)
    c = lc.Candidates.from_logits(x.copy())
    run(S.infill(smollm2), c)
    eog = [t for t in range(n) if v.is_eog(t)]
    assert sorted(int(i) for i in c.ids) == eog
    p = softmax(x.astype(np.float64))
    np.testing.assert_allclose(c.p, p[c.ids] / p[eog].sum(), rtol=1e-4)
    # (2) text only: " the" is a prefix of " them" and takes its probability,
    # tokens under 0.2 go, the rest is renormalised
    ids = [v.tokenize(w, add_special=False)[0] for w in (" the", " them", " cat", " dog")]
    q = np.array([0.3, 0.25, 0.35, 0.1])
    c = lc.Candidates.from_logits(np.log(q).astype(np.float32))
    c.ids[:] = ids
    run(S.infill(smollm2), c)
    the, cat = 0.3 + 0.25, 0.35
    assert [int(i) for i in c.ids] == [ids[2], ids[0]]  # sorted by logit
    np.testing.assert_allclose(c.p, [cat / (the + cat), the / (the + cat)], rtol=1e-5)


def test_chain_performance_counters(smollm2: lc.Model) -> None:
    with smollm2.context(n_ctx=128) as ctx, lc.SamplerChain(
            [S.top_k(10), S.dist(seed=1)], no_perf=False) as chain:
        ctx.eval_tokens(smollm2.vocab.tokenize("Hi"), 0)
        for _ in range(5):
            chain.sample(ctx)
        perf = chain.perf()
        assert perf["n_sample"] == 5 and perf["t_sample_ms"] > 0
        chain.perf_reset()
        assert chain.perf()["n_sample"] == 0


def test_temperature_zero_shortcut_equals_llama_cpps_full_chain(smollm2: lc.Model) -> None:
    """from_params(temperature=0) keeps only penalties + greedy; llama.cpp runs its
    whole chain with a zero temperature. Both must pick the same tokens."""
    full = lc.SamplerChain([S.penalties(64, 1.3, 0.1, 0.1), S.top_n_sigma(-1), S.top_k(40),
                            S.typical(1.0), S.top_p(0.95), S.min_p(0.05), S.xtc(0.0, 0.1),
                            S.temp_ext(0.0, 0.0, 1.0), S.dist(seed=1)])
    short = lc.SamplerChain.from_params(smollm2, temperature=0, repeat_penalty=1.3,
                                        frequency_penalty=0.1, presence_penalty=0.1)
    assert short.names == ["penalties", "greedy"]
    outs = []
    for chain in (full, short):
        with smollm2.context(n_ctx=256) as ctx:
            outs.append(list(lc.Generation(ctx, chain, smollm2.vocab.tokenize("Once upon a"),
                                           max_tokens=40)))
        chain.close()
    assert outs[0] == outs[1]
