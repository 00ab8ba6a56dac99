"""Greedy generation equals llama.cpp's own llama-simple, token for token."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import llama_cffi as lc

N_PREDICT = 64
PROMPTS = {
    "smollm2-135m": "Once upon a time, in a small village by the sea,",
    "gemma3-270m": "The three most important inventions of the twentieth century are",
}


def llama_simple(tools: Path, model: Path, prompt: str, n_predict: int) -> bytes:
    proc = subprocess.run(
        [str(tools / "llama-simple"), "-m", str(model), "-n", str(n_predict), prompt],
        capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout


def ours(model_path: Path, prompt: str, n_predict: int) -> tuple[list[int], list[int], bytes]:
    """The same computation as llama-simple, through llama_cffi."""
    with lc.Model(model_path) as model:
        vocab = model.vocab
        prompt_tokens = vocab.tokenize(prompt, add_special=True, parse_special=True)
        n_prompt = len(prompt_tokens)
        # llama-simple's context: n_ctx = n_prompt + n_predict - 1, n_batch = n_prompt,
        # llama.cpp's default thread count.
        with model.context(n_ctx=n_prompt + n_predict - 1, n_batch=n_prompt,
                           n_threads=4, n_threads_batch=4) as ctx, \
                lc.SamplerChain([lc.sampling.greedy()]) as chain:
            gen = lc.Generation(ctx, chain, prompt_tokens, max_tokens=n_predict)
            generated = list(gen)
        text = b"".join(vocab.token_to_piece(t, special=True) for t in prompt_tokens + generated)
        return prompt_tokens, generated, text + b"\n"


@pytest.mark.tools
@pytest.mark.parametrize("name", list(PROMPTS))
def test_greedy_matches_llama_simple(name: str, model_paths: dict[str, Path],
                                     tools_dir: Path) -> None:
    path = model_paths[name]
    prompt = PROMPTS[name]
    _, generated, text = ours(path, prompt, N_PREDICT)
    reference = llama_simple(tools_dir, path, prompt, N_PREDICT)
    assert len(generated) == N_PREDICT, "model stopped early; pick a prompt that runs 64 tokens"
    assert text == reference


def test_greedy_is_deterministic(smollm2_path: Path) -> None:
    prompt_tokens, generated, _ = ours(smollm2_path, "The capital of France is", 16)
    assert len(generated) == 16
    assert ours(smollm2_path, "The capital of France is", 16)[1] == generated
    # Each token is the arg-max of the logits after everything before it,
    # computed here from scratch for each prefix (one batch, no KV reuse).
    # Batched and one-token decodes round differently in the last bits, so
    # where the two best logits are within 1e-3 either may come out.
    with lc.Model(smollm2_path) as model, model.context(n_ctx=64) as ctx:
        for i, token in enumerate(generated):
            ctx.clear()
            ctx.eval_tokens(prompt_tokens + generated[:i], 0)
            logits = ctx.logits()
            best = int(np.argmax(logits))
            assert token == best or logits[best] - logits[token] < 1e-3, (
                f"token {i}: generated {token}, arg-max {best} "
                f"({logits[best] - logits[token]:.4f} better)")


@pytest.mark.tools
@pytest.mark.parametrize("name", list(PROMPTS))
def test_llm_complete_matches_llama_simple(name: str, model_paths: dict[str, Path],
                                           tools_dir: Path) -> None:
    path = model_paths[name]
    prompt = PROMPTS[name]
    reference = llama_simple(tools_dir, path, prompt, N_PREDICT)
    with lc.Model(path) as model:
        n_prompt = len(model.vocab.tokenize(prompt, add_special=True, parse_special=True))
        with lc.LLM(model, n_ctx=n_prompt + N_PREDICT - 1, n_batch=n_prompt,
                    n_threads=4, n_threads_batch=4) as llm:
            r = llm.complete(prompt, max_tokens=N_PREDICT, temperature=0)
        prompt_text = b"".join(model.vocab.token_to_piece(t, special=True)
                               for t in model.vocab.tokenize(prompt, parse_special=True))
    assert r.usage.completion_tokens == N_PREDICT
    assert prompt_text + r.text.encode() + b"\n" == reference
