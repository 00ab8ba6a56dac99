"""Speculative decoding: a real target/draft pair, exactness, n-gram lookup.

Targets are made with llama_cffi's own quantize: SmolLM2 Q4_1 -> F16 and
Gemma 3 Q4_K_M -> Q8_0 (``allow_requantize``); the registry files are the
drafts. Same vocabulary, different weights and speed: a real pair.

Exactness: speculative greedy output must equal the target alone. There is
one thing no verifier can control: llama.cpp computes a batch of 5 tokens
with other kernels than a single token, so logits differ in the last bits.
Where the target's two best tokens are tied within 0.01 in log-probability,
either may come out (llama.cpp's own llama-speculative-simple and
llama-simple part ways at such ties too). The check is therefore: identical
tokens, or identical up to a position where the target-alone run had such a
tie and the speculative run took the other tied token.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import llama_cffi as lc

PROMPTS = ["Once upon a time", "The history of the printing press begins in",
           "Here is a recipe for a simple tomato soup:"]
TIE = 0.01


@pytest.fixture(scope="session")
def smollm2_f16(smollm2_path: Path) -> Path:
    out = lc.models.cache_dir() / "SmolLM2-135M-Instruct.F16-from-Q4_1.gguf"
    if not out.exists():
        lc.quantize(smollm2_path, out, "f16", allow_requantize=True)
    return out


@pytest.fixture(scope="session")
def gemma3_q8(gemma3_path: Path) -> Path:
    out = lc.models.cache_dir() / "gemma-3-270m.Q8_0-from-Q4_K_M.gguf"
    if not out.exists():
        lc.quantize(gemma3_path, out, "q8_0", allow_requantize=True)
    return out


def assert_exact_or_tie(plain: lc.Completion, spec: lc.Completion) -> None:
    a, b = plain.tokens, spec.tokens
    if a == b:
        return
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    assert i < min(len(a), len(b)), "one output is a prefix of the other"
    assert plain.logprobs is not None
    top = plain.logprobs[i].top
    assert top[0][2] - top[1][2] < TIE, (
        f"diverged at token {i} without a tie: margin {top[0][2] - top[1][2]:.4f}")
    assert b[i] == top[1][0], "the speculative run picked a token that was not tied"


@pytest.mark.slow
@pytest.mark.parametrize("pair", ["smollm2", "gemma3"])
def test_draft_model_greedy_is_exact(pair: str, request: pytest.FixtureRequest) -> None:
    target = request.getfixturevalue("smollm2_f16" if pair == "smollm2" else "gemma3_q8")
    draft = request.getfixturevalue("smollm2_path" if pair == "smollm2" else "gemma3_path")
    with lc.LLM(target, n_ctx=1024) as plain_llm, \
            lc.LLM(target, n_ctx=1024, draft_model=draft, draft_n_max=4) as spec_llm:
        assert spec_llm.spec.name == "draft-simple"
        total_drafted = total_accepted = 0
        for prompt in PROMPTS:
            plain = plain_llm.complete(prompt, max_tokens=256, temperature=0, logprobs=2)
            spec = spec_llm.complete(prompt, max_tokens=256, temperature=0)
            assert len(plain.tokens) >= 256 or plain.finish_reason == "stop"
            assert_exact_or_tie(plain, spec)
            t = spec.timings
            assert t.drafted_tokens > 0 and 0 < t.accepted_tokens <= t.drafted_tokens
            assert t.target_passes < len(spec.tokens)  # fewer target passes than tokens
            total_drafted += t.drafted_tokens
            total_accepted += t.accepted_tokens
        # same weights at other precision: the draft agrees most of the time
        assert total_accepted / total_drafted > 0.7


def test_ngram_lookup_is_exact_and_accepts_copies(smollm2_f16: Path) -> None:
    passage = ("def fibonacci(n):\n    if n < 2:\n        return n\n"
               "    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
               "def factorial(n):\n    result = 1\n    for i in range(2, n + 1):\n"
               "        result *= i\n    return result\n")
    msgs = [{"role": "user", "content": "Copy the following code exactly, without changes:\n\n"
             + passage}]
    with lc.LLM(smollm2_f16, n_ctx=1024) as plain_llm, lc.LLM(
            smollm2_f16, n_ctx=1024, speculative="ngram", ngram_size_n=3,
            ngram_size_m=16) as ng:
        plain = plain_llm.chat(msgs, max_tokens=200, temperature=0, logprobs=2)
        spec = ng.chat(msgs, max_tokens=200, temperature=0)
    assert_exact_or_tie(plain, spec)
    t = spec.timings
    # About half of the reply is the passage copied from the prompt: those
    # drafts are accepted; the explanation that follows is new text where
    # look-ups rarely match. Hence a floor of 35 % accepted drafts and at least
    # 25 % fewer target passes than tokens.
    assert t.acceptance_rate >= 0.35, t
    assert t.target_passes <= 0.75 * len(spec.tokens), t


def test_incompatible_draft_is_refused(smollm2_path: Path, gemma3_path: Path) -> None:
    with pytest.raises(lc.IncompatibleDraftError, match="differ|tokenizer"):
        lc.LLM(smollm2_path, n_ctx=256, draft_model=gemma3_path)
    with pytest.raises(ValueError, match="speculative"):
        lc.LLM(smollm2_path, n_ctx=256, speculative="eagle-4")


def test_seeded_speculative_sampling_is_reproducible(smollm2_f16: Path,
                                                    smollm2_path: Path) -> None:
    # Every position is sampled by the target's own seeded chain (drafts are
    # kept only where it picks the same token), so the random draws are the
    # same as without a draft: the output equals the target alone, same seed.
    with lc.LLM(smollm2_f16, n_ctx=512) as plain_llm:
        plain = plain_llm.complete(PROMPTS[0], max_tokens=48, temperature=0.8, seed=7)
    with lc.LLM(smollm2_f16, n_ctx=512, draft_model=smollm2_path) as llm:
        a = llm.complete(PROMPTS[0], max_tokens=48, temperature=0.8, seed=7)
        b = llm.complete(PROMPTS[0], max_tokens=48, temperature=0.8, seed=7)
        c = llm.complete(PROMPTS[0], max_tokens=48, temperature=0.8, seed=8)
    assert len(plain.tokens) == 48
    assert a.tokens == plain.tokens
    assert b.tokens == a.tokens
    assert c.tokens != a.tokens
    t = a.timings
    assert t.drafted_tokens > 0 and 0 < t.accepted_tokens <= t.drafted_tokens
    assert t.target_passes < len(a.tokens)  # the drafts were used


def test_quantize(smollm2_path: Path, tmp_path: Path) -> None:
    out = lc.quantize(smollm2_path, tmp_path / "q8.gguf", "q8_0", allow_requantize=True)
    with lc.Model(out) as m:
        assert "Q8_0" in m.description
    with pytest.raises(ValueError, match="unknown ftype"):
        lc.quantize(smollm2_path, tmp_path / "x.gguf", "q9_9")
    with pytest.raises(lc.LlamaError, match="failed"):
        lc.quantize(smollm2_path, tmp_path / "y.gguf", "q8_0")  # requantize not allowed
