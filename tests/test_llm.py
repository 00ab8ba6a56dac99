"""The high-level API: complete, stream, chat, prefix reuse, batches, async."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

import llama_cffi as lc

from .server_util import llama_server

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def llm(smollm2_path: Path) -> Iterator[lc.LLM]:
    with lc.LLM(smollm2_path, n_ctx=1024, n_seq_max=4) as llm:
        yield llm


def object_layer_greedy(model: lc.Model, prompt: str, n: int) -> list[int]:
    with model.context(n_ctx=512) as ctx, lc.SamplerChain([lc.sampling.greedy()]) as chain:
        return list(lc.Generation(ctx, chain, model.vocab.tokenize(prompt), max_tokens=n))


def test_complete_greedy_equals_the_object_layer(llm: lc.LLM, smollm2: lc.Model) -> None:
    r = llm.complete(PROMPT, max_tokens=32, temperature=0)
    assert r.tokens == object_layer_greedy(smollm2, PROMPT, 32)
    assert r.finish_reason == "length" and r.usage.completion_tokens == 32
    assert r.text == smollm2.vocab.detokenize(r.tokens)
    assert r.timings.generation_tokens_per_second > 0


def test_stream_pieces_join_to_the_completion(llm: lc.LLM) -> None:
    s = llm.stream("Write three emoji and a Chinese greeting:", max_tokens=40, temperature=0)
    pieces = list(s)
    assert s.completion is not None
    assert "".join(pieces) == s.completion.text
    assert all("\ufffd" not in p for p in pieces)


def test_stream_multibyte_pieces_are_valid_utf8(llm: lc.LLM) -> None:
    # A grammar forces Japanese and an emoji; byte-level tokens split them.
    g = lc.Grammar('root ::= "日本語の" [ぁ-ん]{3,6} " 🙂🙂"\n')
    s = llm.stream("Say something in Japanese:", grammar=g, temperature=1.0, seed=4,
                   max_tokens=60)
    pieces = list(s)
    text = "".join(pieces)
    assert text == s.completion.text
    assert text.startswith("日本語の") and text.endswith("🙂🙂")
    assert all("\ufffd" not in p for p in pieces)
    assert len(s.completion.tokens) > len(pieces) - 1 >= 2  # several tokens per character


def test_stop_string_across_tokens(llm: lc.LLM) -> None:
    full = llm.complete(PROMPT, max_tokens=32, temperature=0).text
    # a stop string spanning several tokens in the middle of the output
    start = full.index("city") + 2
    stop = full[start:start + 9]
    r = llm.complete(PROMPT, max_tokens=32, temperature=0, stop=[stop, "zzz"])
    assert r.finish_reason == "stop" and r.stop_string == stop
    assert r.text == full[:start]
    streamed = "".join(llm.stream(PROMPT, max_tokens=32, temperature=0, stop=[stop]))
    assert streamed == full[:start]


def test_prefix_reuse_evaluates_only_the_new_part(llm: lc.LLM) -> None:
    first = llm.complete("The three primary colours are", max_tokens=16, temperature=0)
    n_first = first.usage.prompt_tokens + first.usage.completion_tokens
    follow = "The three primary colours are" + first.text + " And the secondary ones are"
    second = llm.complete(follow, max_tokens=8, temperature=0)
    assert second.usage.cached_tokens >= n_first - 1
    assert second.timings.prompt_tokens_evaluated == \
        second.usage.prompt_tokens - second.usage.cached_tokens


def test_chat_turns_get_cheaper(llm: lc.LLM) -> None:
    msgs = [{"role": "user", "content": "Name a fruit."}]
    a = llm.chat(msgs, max_tokens=12, temperature=0)
    msgs += [{"role": "assistant", "content": a.text},
             {"role": "user", "content": "Name another one."}]
    b = llm.chat(msgs, max_tokens=12, temperature=0)
    assert b.usage.cached_tokens > a.usage.prompt_tokens  # the first turn was reused
    assert b.timings.prompt_tokens_evaluated < b.usage.prompt_tokens / 2


def test_chat_with_json_schema(llm: lc.LLM) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                               "country": {"type": "string", "maxLength": 30}},
              "required": ["city", "country"]}
    r = llm.chat([{"role": "user", "content": "Give a city and its country as JSON."}],
                 json_schema=schema, max_tokens=100, temperature=0.7, seed=1)
    value = json.loads(r.text)
    assert set(value) == {"city", "country"}
    assert r.finish_reason == "grammar"


def test_logprobs(llm: lc.LLM) -> None:
    r = llm.complete(PROMPT, max_tokens=5, temperature=0, logprobs=3)
    assert r.logprobs is not None and len(r.logprobs) == 5
    for lp, tok in zip(r.logprobs, r.tokens):
        assert lp.token == tok and lp.logprob <= 0
        assert len(lp.top) == 3 and lp.top[0][0] == tok  # greedy picks the top one
        assert [t[2] for t in lp.top] == sorted((t[2] for t in lp.top), reverse=True)
        assert sum(math.exp(t[2]) for t in lp.top) <= 1 + 1e-6


def test_cancel_mid_stream_keeps_the_llm_usable(llm: lc.LLM) -> None:
    s = llm.stream(PROMPT, max_tokens=50, temperature=0)
    for i, _ in enumerate(s):
        if i == 3:
            break
    s.close()
    assert s.completion is not None and s.completion.finish_reason == "cancelled"
    r = llm.complete(PROMPT, max_tokens=8, temperature=0)
    assert r.usage.cached_tokens >= r.usage.prompt_tokens - 1
    assert r.tokens == object_layer_greedy(llm.model, PROMPT, 8)

    import threading

    ev = threading.Event()
    ev.set()
    assert llm.complete(PROMPT, max_tokens=8, cancel=ev).finish_reason == "cancelled"


def test_a_paused_stream_does_not_block_the_next_call(llm: lc.LLM) -> None:
    s = llm.stream(PROMPT, max_tokens=50, temperature=0, ignore_eos=True)
    first = next(s)  # left unfinished: the engine generates on without a reader
    assert first
    r = llm.complete(PROMPT, max_tokens=4, temperature=0)  # beside it or after it, not stuck
    assert r.usage.completion_tokens == 4
    rest = "".join(s)  # what was generated meanwhile is still there to read
    assert s.completion is not None and s.completion.finish_reason == "length"
    assert first + rest == s.completion.text and len(s.completion.tokens) == 50


def test_context_limits(smollm2_path: Path) -> None:
    with lc.LLM(smollm2_path, n_ctx=256) as small:
        long_prompt = "word " * 400
        with pytest.raises(lc.ContextFullError, match="context_shift"):
            small.complete(long_prompt, max_tokens=4)
        r = small.complete(long_prompt, max_tokens=4, temperature=0, context_shift=True)
        assert len(r.tokens) == 4
        r = small.complete("Count: 1, 2, 3,", max_tokens=400, temperature=0, context_shift=True)
        assert len(r.tokens) == 400  # went past the 256-token context by shifting


def test_generate_batch_equals_each_alone(llm: lc.LLM, smollm2: lc.Model) -> None:
    prompts = ["Once upon a time", "The sky is", "My favourite food is", "In 1969,"]
    results = llm.generate_batch(prompts, max_tokens=16, temperature=0)
    for p, r in zip(prompts, results):
        expected = object_layer_greedy(smollm2, p, 16)
        assert len(expected) == 16 and r.tokens == expected
    # more prompts than slots: the rest wait for a free slot, same results
    twice = llm.generate_batch(prompts * 2, max_tokens=16, temperature=0)
    assert [r.tokens for r in twice] == [r.tokens for r in results] * 2
    # afterwards ordinary calls still work
    assert llm.complete("Hi", max_tokens=2, temperature=0).usage.completion_tokens == 2


def test_async_variants(llm: lc.LLM) -> None:
    async def main() -> tuple[lc.Completion, str]:
        r = await llm.acomplete(PROMPT, max_tokens=8, temperature=0)
        pieces = [p async for p in llm.astream(PROMPT, max_tokens=8, temperature=0)]
        return r, "".join(pieces)

    r, streamed = asyncio.run(main())
    assert r.tokens == object_layer_greedy(llm.model, PROMPT, 8)
    assert streamed == r.text


def test_llm_parameters_are_checked(smollm2_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown parameter"):
        lc.LLM(smollm2_path, n_ctxx=10)
    with pytest.raises(ValueError, match="type_k"):
        lc.LLM(smollm2_path, n_ctx=128, type_k="q9_9")
    with lc.LLM("smollm2-135m", n_ctx=128, type_k="q8_0", n_gpu_layers=0) as small:
        n_ctx = small.ctx.n_ctx
        assert n_ctx >= 128
        # the K cache is q8_0 (34 bytes per 32 values), V stays f16: the KV buffer
        # llama.cpp allocated has exactly that size (it reports it in MiB, 2 decimals)
        m = small.model
        per_token = m.n_layer * (m.n_embd // m.n_head) * m.n_head_kv * (34 / 32 + 2)
        assert abs(small.ctx.kv_cache_size - n_ctx * per_token) <= 0.01 * 2**20


# -- chat templates --------------------------------------------------------------------------

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "What is 2+2?"}]


def server_render(tools: Path, model: Path, messages: list[dict], log: Path) -> str:
    with llama_server(tools, ["-m", str(model), "-c", "512", "-np", "1"], log,
                      timeout=60) as srv:
        status, body = srv.post("/apply-template", {"messages": messages}, timeout=30)
    assert status == 200, body
    return str(body["prompt"])


@pytest.mark.tools
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_template_matches_llama_server(name: str, model_paths: dict[str, Path],
                                       tools_dir: Path, tmp_path: Path) -> None:
    path = model_paths[name]
    log = tmp_path / "llama-server.log"
    with lc.LLM(path, n_ctx=256) as llm:
        ours = llm.apply_chat_template(MESSAGES)
        assert ours == server_render(tools_dir, path, MESSAGES, log)
        no_system = MESSAGES[1:]
        assert llm.apply_chat_template(no_system) == server_render(tools_dir, path, no_system,
                                                                   log)


EVIL = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ raise_exception.__globals__ }}",
    "{% for m in messages %}{{ m.__class__.__init__.__globals__['os'] }}{% endfor %}",
    "{% include '/etc/passwd' %}",
    "{{ messages.append({'role': 'x'}) }}",
]


@pytest.mark.parametrize("evil", EVIL)
def test_malicious_template_in_a_gguf_is_refused(evil: str, smollm2_path: Path,
                                                 tmp_path: Path) -> None:
    from .synthetic import write_moe_model

    path = write_moe_model(tmp_path / "evil.gguf", smollm2_path,
                           extra_kv={"tokenizer.chat_template": evil})
    with lc.LLM(path, n_ctx=128) as llm:
        assert llm.model.chat_template() == evil
        with pytest.raises(lc.TemplateError):
            llm.chat([{"role": "user", "content": "hi"}], max_tokens=1)
        # nothing leaked into a rendering either
        with pytest.raises(lc.TemplateError):
            llm.apply_chat_template([{"role": "user", "content": "hi"}])


def test_user_and_builtin_templates(llm: lc.LLM) -> None:
    text = llm.apply_chat_template(MESSAGES[1:2], template="gemma")
    assert text.startswith("<start_of_turn>user\nHello!")
    custom = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    assert llm.apply_chat_template(MESSAGES[:2], template=custom) == \
        "[system] You are terse.\n[user] Hello!\n"
    with pytest.raises(lc.TemplateError, match="refused"):
        llm.apply_chat_template(MESSAGES, template="{{ raise_exception('no system') }}")
