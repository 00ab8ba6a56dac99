"""Greedy generation equals llama.cpp's own llama-simple, token for token."""

from __future__ import annotations

import subprocess
from pathlib import Path

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


@pytest.mark.tools
def test_greedy_is_deterministic(smollm2_path: Path, tools_dir: Path) -> None:
    # Two runs through the binding (fresh model and context each) and a third
    # with a prompt batch that splits the prompt over several decodes: each
    # equals llama.cpp's llama-simple on the same prompt, byte for byte.
    prompt = "The capital of France is"
    reference = llama_simple(tools_dir, smollm2_path, prompt, 16)
    first = ours(smollm2_path, prompt, 16)
    second = ours(smollm2_path, prompt, 16)
    assert len(first[1]) == 16
    assert first[2] == reference
    assert second[1] == first[1] and second[2] == reference
    # the same tokens when the prompt is evaluated two tokens at a time
    with lc.Model(smollm2_path) as model, \
            model.context(n_ctx=64, n_batch=2, n_ubatch=2, n_threads=4) as ctx, \
            lc.SamplerChain([lc.sampling.greedy()]) as chain:
        split = list(lc.Generation(ctx, chain, first[0], max_tokens=16))
    assert split == first[1]


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
