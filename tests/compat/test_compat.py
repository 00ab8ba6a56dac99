"""llama_cffi.compat beyond llama-cpp-python's own tests: the OpenAI shapes,
keywords, streaming, chat (JSON mode, tools), caches and errors, on SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llama_cffi.compat as lc
from llama_cffi import GrammarError, TemplateError

PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown fox"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def llm(smollm2_path: Path):
    with lc.Llama(str(smollm2_path), n_ctx=256, verbose=False) as model:
        yield model


def test_completion_shape_and_greedy_text(llm: lc.Llama) -> None:
    out = llm(PROMPT, max_tokens=6, temperature=0.0)
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    choice = out["choices"][0]
    # llama.cpp's llama-completion gives the same greedy continuation
    assert choice == {"text": " is a classic example of a", "index": 0, "logprobs": None,
                      "finish_reason": "length"}
    assert out["usage"] == {"prompt_tokens": 14, "completion_tokens": 6, "total_tokens": 20}


def test_stop_string_is_one_string_and_echo(llm: lc.Llama) -> None:
    full = llm(PROMPT, max_tokens=6, temperature=0.0)["choices"][0]["text"]
    out = llm(PROMPT, max_tokens=6, temperature=0.0, stop="classic", echo=True)
    assert out["choices"][0]["text"] == PROMPT + full[:full.index("classic")]
    assert out["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_none_runs_to_the_end(llm: lc.Llama) -> None:
    grammar = lc.LlamaGrammar.from_string('root ::= "yes" | "no"')
    out = llm("Answer yes or no: ", max_tokens=None, grammar=grammar, temperature=0.0)
    assert out["choices"][0]["text"] in ("yes", "no")
    assert out["choices"][0]["finish_reason"] == "stop"


def test_stream_chunks_join_to_the_text(llm: lc.Llama) -> None:
    chunks = list(llm(PROMPT, max_tokens=6, temperature=0.0, stream=True))
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == " is a classic example of a"
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_logprobs_shape(llm: lc.Llama) -> None:
    out = llm(PROMPT, max_tokens=3, temperature=0.0, logprobs=2)
    lp = out["choices"][0]["logprobs"]
    text = out["choices"][0]["text"]
    assert "".join(lp["tokens"]) == text
    assert lp["text_offset"][0] == len(PROMPT)
    assert all(v is not None and v <= 0 for v in lp["token_logprobs"])
    for token, value, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert top[token] == value and max(top.values()) == value  # greedy: the best one


def test_logits_processor_and_stopping_criteria(llm: lc.Llama) -> None:
    banned = llm.tokenize(b" is", add_bos=False)[0]

    def ban(input_ids, scores):
        scores[banned] = -float("inf")
        return scores

    out = llm(PROMPT, max_tokens=4, temperature=0.0,
              logits_processor=lc.LogitsProcessorList([ban]))
    assert not out["choices"][0]["text"].startswith(" is")
    seen = []

    def stop_after_two(input_ids, logits):
        seen.append(len(input_ids))
        return len(seen) >= 2

    out = llm(PROMPT, max_tokens=6, temperature=0.0,
              stopping_criteria=lc.StoppingCriteriaList([stop_after_two]))
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["completion_tokens"] < 6


def test_unknown_keywords_name_themselves(smollm2_path: Path, llm: lc.Llama) -> None:
    with pytest.raises(TypeError, match="n_ctxx"):
        lc.Llama(str(smollm2_path), n_ctxx=64)
    with pytest.raises(TypeError, match="temprature"):
        llm(PROMPT, temprature=0.5)
    with pytest.raises(ValueError, match="chat_handler"):
        lc.Llama(str(smollm2_path), chat_handler=object())
    with pytest.raises(TemplateError):
        lc.Llama(str(smollm2_path), n_ctx=64, chat_format="no-such-format")


def test_constructor_keywords_reach_the_params(smollm2_path: Path) -> None:
    with lc.Llama(str(smollm2_path), n_ctx=512, n_batch=32, n_ubatch=16, seed=7,
                  type_k=1, flash_attn=False, use_mmap=False, last_n_tokens_size=32,
                  verbose=False) as m:
        cp, mp = m.llm.context_params, m.llm.model_params
        assert (m.n_ctx(), cp.n_batch, cp.n_ubatch) == (512, 32, 16)
        assert cp.type_k.name == "F16" and cp.flash_attn.name == "OFF"
        assert mp.load_mode.name == "NONE" and mp.n_gpu_layers == 0
        assert m.llm.sampling.repeat_last_n == 32 and m._seed == 7
        assert m.n_vocab() == 49152 and m.token_eos() == m.llm.vocab.eos


def test_chat_completion_and_stream_deltas(llm: lc.Llama) -> None:
    msgs = [{"role": "user", "content": "Say hello."}]
    out = llm.create_chat_completion(msgs, max_tokens=8, temperature=0.0)
    assert out["object"] == "chat.completion"
    message = out["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"]
    chunks = list(llm.create_chat_completion(msgs, max_tokens=8, temperature=0.0, stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == message["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == out["choices"][0]["finish_reason"]


def test_chat_json_mode_with_and_without_schema(llm: lc.Llama) -> None:
    msgs = [{"role": "user", "content": "Give me a person as JSON."}]
    out = llm.create_chat_completion(msgs, max_tokens=48, temperature=0.0,
                                     response_format={"type": "json_object"})
    assert out["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(out["choices"][0]["message"]["content"]), dict)
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    out = llm.create_chat_completion(msgs, max_tokens=24, temperature=0.0,
                                     response_format={"type": "json_object", "schema": schema})
    assert isinstance(json.loads(out["choices"][0]["message"]["content"])["age"], int)


def test_chat_forced_tool_call(llm: lc.Llama) -> None:
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    out = llm.create_chat_completion(msgs, tools=[WEATHER], max_tokens=48, temperature=0.0,
                                     tool_choice={"type": "function",
                                                  "function": {"name": "get_weather"}})
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)
    chunks = list(llm.create_chat_completion(msgs, tools=[WEATHER], tool_choice="required",
                                             max_tokens=48, temperature=0.0, stream=True))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant"} and deltas[-1] == {}
    (streamed,) = deltas[1]["tool_calls"]
    assert streamed["index"] == 0 and streamed["function"]["name"] == "get_weather"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_chat_logprobs(llm: lc.Llama) -> None:
    out = llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=3,
                                     temperature=0.0, logprobs=True, top_logprobs=2)
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == out["usage"]["completion_tokens"]
    assert all(len(c["top_logprobs"]) == 2 and c["logprob"] <= 0 for c in content)
    assert "".join(c["token"] for c in content) == out["choices"][0]["message"]["content"]


def test_disk_cache_survives_a_new_cache_object(llm: lc.Llama, tmp_path: Path) -> None:
    llm.set_cache(lc.LlamaDiskCache(tmp_path))
    try:
        first = llm(PROMPT, max_tokens=2, temperature=0.0)
    finally:
        llm.set_cache(None)
    reopened = lc.LlamaDiskCache(tmp_path)
    tokens = llm.tokenize(PROMPT.encode())
    state = reopened[tokens]
    assert state.tokens[:len(tokens)] == tokens
    llm.reset()
    llm.load_state(state)
    again = llm(PROMPT, max_tokens=2, temperature=0.0)
    assert again["choices"][0]["text"] == first["choices"][0]["text"]


def test_embedding_response(llm: lc.Llama) -> None:
    out = llm.create_embedding(["hello", "world"])
    assert out["object"] == "list" and [d["index"] for d in out["data"]] == [0, 1]
    assert out["usage"]["prompt_tokens"] > 0


def test_json_schema_grammar_constrains(llm: lc.Llama) -> None:
    g = lc.LlamaGrammar.from_json_schema(json.dumps(
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}))
    out = llm("A JSON object with a number: ", max_tokens=16, temperature=0.0, grammar=g)
    assert isinstance(json.loads(out["choices"][0]["text"])["n"], int)
    with pytest.raises(GrammarError, match="line 1"):
        lc.LlamaGrammar.from_string('root ::= "unterminated')


def test_prompt_lookup_draft_keeps_greedy_output(smollm2_path: Path, llm: lc.Llama) -> None:
    text = "one two three four one two three four one two three"
    expected = llm(text, max_tokens=8, temperature=0.0)["choices"][0]["text"]
    with lc.Llama(str(smollm2_path), n_ctx=128, verbose=False,
                  draft_model=lc.LlamaPromptLookupDecoding(num_pred_tokens=4)) as fast:
        assert fast(text, max_tokens=8, temperature=0.0)["choices"][0]["text"] == expected
        assert fast.llm.metrics.generated_tokens_total == 8


def test_vocab_only_cannot_generate(smollm2_path: Path) -> None:
    with lc.Llama(str(smollm2_path), vocab_only=True) as m:
        assert m.detokenize(m.tokenize(b"Hello")) == b"Hello"
        with pytest.raises(lc.llama.LlamaError, match="vocab_only"):
            m("Hello")


def test_vision_chat_handler_passes_the_projector(smollm2_path: Path, tmp_path: Path) -> None:
    """llama-cpp-python's ``chat_handler=Llava15ChatHandler(clip_model_path=...)``:
    image parts reach the model through libmtmd, as LLM(mmproj=...) sends them."""
    import base64

    import llama_cffi as core
    from llama_cffi.compat.llama_chat_format import Llava15ChatHandler

    from ..mmproj_synthetic import make_image, png_bytes, write_mmproj

    write_mmproj(tmp_path / "mmproj.gguf", 576)
    url = "data:image/png;base64," + base64.b64encode(png_bytes(make_image(0))).decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": "What is this?"}]}]
    handler = Llava15ChatHandler(clip_model_path=str(tmp_path / "mmproj.gguf"))
    with lc.Llama(model_path=str(smollm2_path), n_ctx=1024, chat_handler=handler,
               verbose=False) as llm:
        got = llm.create_chat_completion(messages=messages, max_tokens=12, temperature=0)
    with core.LLM(smollm2_path, n_ctx=1024, mmproj=tmp_path / "mmproj.gguf") as ref:
        want = ref.chat(messages, max_tokens=12, temperature=0)
    assert got["choices"][0]["message"]["content"] == want.content
    with pytest.raises(ValueError, match="chat_handler"):
        lc.Llama(model_path=str(smollm2_path), chat_handler=object(), verbose=False)
