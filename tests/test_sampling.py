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
    p = softmax(np.array(LOGITS))
    c = cands(LOGITS)
    run(S.min_p(0.3), c)
    assert kept(c) & set(range(c.size) if False else c.ids[:c.size]) == \
        {i for i in range(6) if p[i] >= 0.3 * p.max()}


def test_temperature_scales_logits() -> None:
    c = cands(LOGITS)
    run(S.temp(2.0), c)
    np.testing.assert_allclose(c.logits, np.array(LOGITS) / 2, rtol=1e-6)
    c = cands(LOGITS)
    run(S.temp(0.0), c)
    assert kept(c) == {1}


def test_dynamic_temperature_stays_in_range() -> None:
    c = cands(LOGITS)
    run(S.temp_ext(1.0, delta=0.5, exponent=1.0), c)
    # the effective temperature lies in [0.5, 1.5]: the logit spread shrinks or grows within it
    spread = float(np.ptp(c.logits[np.isfinite(c.logits)]))
    assert 5.0 / 1.5 - 1e-4 <= spread <= 5.0 / 0.5 + 1e-4


def test_typical_keeps_a_subset_around_entropy() -> None:
    c = cands(LOGITS)
    run(S.typical(0.5), c)
    assert 1 <= len(set(c.ids[:c.size])) < 6


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


def test_mirostat_v2_selects_reproducibly() -> None:
    picks = []
    for _ in range(2):
        out = []
        with S.mirostat_v2(tau=3.0, eta=0.1, seed=7) as m:
            for _ in range(20):
                c = cands(LOGITS)
                m.apply(c)
                out.append(c.selected_token())
        picks.append(out)
    assert picks[0] == picks[1]


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
    # greedy via temperature 0 equals the greedy sampler
    assert generate(smollm2, temperature=0) == generate(smollm2, temperature=0, seed=9)


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
    rec = KeepEven()
    chain = lc.SamplerChain([S.top_k(50), rec, S.temp(0.8), S.dist(seed=1)])
    ref = weakref.ref(rec)
    del rec  # the chain keeps it alive
    gc.collect()
    with smollm2.context(n_ctx=256) as ctx:
        out = list(lc.Generation(ctx, chain, smollm2.vocab.tokenize("Hello"), max_tokens=12))
    assert out and all(t % 2 == 0 for t in out)
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


def test_mirostat_v1_adaptive_p_and_infill(smollm2: lc.Model) -> None:
    for make in (lambda: S.mirostat(smollm2, tau=3.0, eta=0.1, seed=5),
                 lambda: S.adaptive_p(0.3, 0.9, seed=5)):
        runs = []
        for _ in range(2):
            out = []
            with make() as s:
                for _ in range(10):
                    c = lc.Candidates.from_logits(np.linspace(3, -3, smollm2.vocab.n_tokens,
                                                              dtype=np.float32))
                    s.apply(c)
                    out.append(c.selected_token())
            runs.append(out)
        assert runs[0] == runs[1]  # seeded: reproducible
    c = lc.Candidates.from_logits(np.linspace(3, -3, smollm2.vocab.n_tokens, dtype=np.float32))
    run(S.infill(smollm2), c)
    assert 0 < c.size <= smollm2.vocab.n_tokens


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
