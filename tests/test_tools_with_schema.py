"""A JSON schema together with tools (issue 25, item 7): one grammar that is
a tool call or a reply following the schema for ``"auto"``, a call only for
``"required"``/a named function, the schema only for ``"none"``; the grammar
itself, ``LLM.chat``, llama-cpp-python's ``create_chat_completion``. Also
messages with neither content nor tool calls (item 11). The server's side,
with the real clients, is in ``test_server_tools_with_schema.py``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

import llama_cffi as lc
import llama_cffi.compat as compat
from llama_cffi.api.tool_calls import parse_tool_calls
from llama_cffi.api.tool_choice import check_tools, prepare_chat, tool_grammar

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "vendor" / "llama.cpp" / "models" / "templates"

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 20},
    "age": {"type": "integer", "minimum": 0, "maximum": 150}}, "required": ["name", "age"]}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 30},
        "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}}}
CALL_ARGS = {"city": "Paris", "unit": "celsius"}
ANN = {"name": "Ann", "age": 30}
# a question the tool does not help with (SmolLM2 answers it in the schema, greedily)
ABOUT_YOU = [{"role": "user", "content": "Who are you? Reply with your name and age."}]
ABOUT_PARIS = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def vocab_model(smollm2_path: Path) -> Iterator[lc.Model]:
    with lc.Model(smollm2_path, vocab_only=True) as model:
        yield model


def accepts(model: lc.Model, gbnf: str, text: str) -> bool:
    """Whether llama.cpp's grammar engine accepts exactly ``text`` under ``gbnf``:
    each of its tokens, and then the end of generation."""
    with lc.SamplerChain([lc.Grammar(gbnf).sampler(model)]) as chain:
        try:
            for t in model.vocab.tokenize(text, add_special=False):
                chain.accept(t)
        except lc.GrammarError:
            return False
        candidates = lc.Candidates.from_logits(np.zeros(len(model.vocab), dtype=np.float32))
        chain.apply(candidates)
        eos = model.vocab.eos
        assert eos is not None
        return bool(np.isfinite(candidates.logits[eos]))


# -- the combined grammar --------------------------------------------------------------------


def test_generic_grammar_is_a_call_or_the_schema_and_nothing_else(vocab_model: lc.Model) -> None:
    gbnf, family = tool_grammar(check_tools([WEATHER]), "auto", "generic", PERSON)
    assert family == "generic_json"
    call = json.dumps({"tool_call": {"name": "get_weather", "arguments": CALL_ARGS}})
    answer = json.dumps({"response": ANN})
    assert accepts(vocab_model, gbnf, call)
    assert accepts(vocab_model, gbnf, answer)
    for bad in ['{"response": "Ann is 30"}',  # a text answer: not the schema
                json.dumps({"response": {"name": "Ann"}}),  # age missing
                json.dumps({"response": {"name": "Ann", "age": 200}}),
                json.dumps({"tool_call": {"name": "other", "arguments": CALL_ARGS}}),
                json.dumps({"tool_call": {"name": "get_weather", "arguments": {"city": "P"}}}),
                json.dumps(ANN),  # the generic format wraps the answer in "response"
                "Ann is 30 years old."]:
        assert not accepts(vocab_model, gbnf, bad), bad
    # the reply parses into a call, or into content that is the schema's JSON
    _, calls = parse_tool_calls(call, family)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", CALL_ARGS)]
    content, calls = parse_tool_calls(answer, family)
    assert calls == [] and content is not None and json.loads(content) == ANN


def test_a_string_schema_gives_json_content() -> None:
    # content is the schema's JSON text, also where the schema is a string
    content, calls = parse_tool_calls('{"response": "Ann"}', "generic_json")
    assert (content, calls) == ('"Ann"', [])
    assert parse_tool_calls('{"response": "Ann"}', "generic") == ("Ann", [])


def test_hermes_grammar_is_a_tool_call_block_or_the_schema(vocab_model: lc.Model) -> None:
    gbnf, family = tool_grammar(check_tools([WEATHER]), "auto", "hermes", PERSON)
    assert family == "hermes"
    call = ('<tool_call>\n' + json.dumps({"name": "get_weather", "arguments": CALL_ARGS})
            + '\n</tool_call>')
    assert accepts(vocab_model, gbnf, call)
    assert accepts(vocab_model, gbnf, json.dumps(ANN))
    for bad in ["Ann is 30.", json.dumps({"response": ANN}),
                '<tool_call>\n' + json.dumps({"name": "Ann", "arguments": {}}) + '\n</tool_call>',
                json.dumps(ANN) + '\n<tool_call>']:
        assert not accepts(vocab_model, gbnf, bad), bad
    content, calls = parse_tool_calls(json.dumps(ANN), family)
    assert calls == [] and content is not None and json.loads(content) == ANN
    _, calls = parse_tool_calls(call, family)
    assert [c.name for c in calls] == ["get_weather"]


def test_forced_choices_ignore_the_schema(vocab_model: lc.Model) -> None:
    tools = check_tools([WEATHER])
    for family in ("generic", "hermes", "llama3"):
        assert tool_grammar(tools, "required", family, PERSON) == \
            tool_grammar(tools, "required", family)
    gbnf, _ = tool_grammar(tools, "name:get_weather", "generic", PERSON)
    assert not accepts(vocab_model, gbnf, json.dumps({"response": ANN}))
    assert accepts(vocab_model, gbnf, json.dumps(
        {"tool_call": {"name": "get_weather", "arguments": CALL_ARGS}}))


def test_local_refs_resolve_in_the_schema_and_in_tool_parameters(
        vocab_model: lc.Model) -> None:
    # what pydantic writes for nested models: $defs at the root of each schema
    city = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    params = {"$defs": {"City": city}, "type": "object",
              "properties": {"city": {"$ref": "#/$defs/City"}}, "required": ["city"]}
    schema = {"$defs": {"Age": {"type": "integer", "minimum": 0, "maximum": 9}},
              "type": "object", "properties": {"age": {"$ref": "#/$defs/Age"}},
              "required": ["age"]}
    tool = {"type": "function", "function": {"name": "where", "parameters": params}}
    gbnf, _ = tool_grammar(check_tools([tool]), "auto", "generic", schema)
    assert accepts(vocab_model, gbnf, json.dumps(
        {"tool_call": {"name": "where", "arguments": {"city": {"name": "Oslo"}}}}))
    assert accepts(vocab_model, gbnf, json.dumps({"response": {"age": 7}}))
    assert not accepts(vocab_model, gbnf, json.dumps({"response": {"age": 10}}))
    gbnf, _ = tool_grammar(check_tools([tool]), "required", "hermes")
    assert accepts(vocab_model, gbnf, '<tool_call>\n' + json.dumps(
        {"name": "where", "arguments": {"city": {"name": "Oslo"}}}) + '\n</tool_call>')


def test_a_schema_the_converter_refuses_is_named() -> None:
    with pytest.raises(lc.SchemaError, match="uniqueItems"):
        tool_grammar(check_tools([WEATHER]), "auto", "generic",
                     {"type": "array", "uniqueItems": True})


@pytest.mark.parametrize("template, choice, family, grammar, described_by_us", [
    ("Qwen-Qwen2.5-7B-Instruct", "auto", "hermes", True, False),
    ("Qwen-Qwen2.5-7B-Instruct", "required", "hermes", True, False),
    # a bare JSON call could be taken for the schema's JSON: llama.cpp's generic format
    ("meta-llama-Llama-3.1-8B-Instruct", "auto", "generic_json", True, True),
    ("meta-llama-Llama-3.1-8B-Instruct", "required", "llama3", True, False),
    ("mistralai-Mistral-Nemo-Instruct-2407", "auto", "generic_json", True, True),
    ("google-gemma-2-2b-it", "auto", "generic_json", True, True),
    ("google-gemma-2-2b-it", "none", None, False, False),
])
def test_prepare_chat_with_a_schema(template: str, choice: str, family: str | None,
                                    grammar: bool, described_by_us: bool,
                                    vocab_model: lc.Model) -> None:
    source = (TEMPLATES / f"{template}.jinja").read_text()
    prep = prepare_chat(vocab_model, ABOUT_YOU, template=source, tools=[WEATHER],
                        tool_choice=choice, json_schema=PERSON)
    assert prep.family == family
    assert (prep.grammar is not None) == grammar
    assert prep.replaces_schema == grammar  # the schema is in it, or a forced call overrides it
    assert ("You can call the following tools" in prep.prompt) == described_by_us
    # our generic prompt shows the schema the answer follows ("auto" only)
    assert ('"maxLength": 20' in prep.prompt) == (described_by_us and choice == "auto")


# -- LLM.chat on SmolLM2 (a template that knows nothing of tools) ----------------------------


@pytest.fixture(scope="module")
def llm(smollm2_path: Path) -> Iterator[lc.LLM]:
    with lc.LLM(smollm2_path, n_ctx=2048) as llm:
        yield llm


GREEDY: dict[str, Any] = dict(max_tokens=80, temperature=0)


@pytest.mark.slow
def test_chat_auto_with_a_schema_answers_in_the_schema(llm: lc.LLM) -> None:
    c = llm.chat(ABOUT_YOU, tools=[WEATHER], json_schema=PERSON, **GREEDY)
    assert c.finish_reason in ("stop", "grammar") and c.tool_calls is None
    assert set(json.loads(c.text)) == {"response"}  # llama.cpp's generic format
    assert c.content is not None
    jsonschema.validate(json.loads(c.content), PERSON)
    # the schema given in the call's SamplingParams instead: the same reply
    sp = lc.SamplingParams(json_schema=PERSON, **GREEDY)
    same = llm.chat(ABOUT_YOU, sp, tools=[WEATHER])
    assert (same.text, same.content) == (c.text, c.content)
    # streamed and async: the same
    stream = llm.chat_stream(ABOUT_YOU, tools=[WEATHER], json_schema=PERSON, **GREEDY)
    assert "".join(stream) == c.text
    assert stream.completion is not None and stream.completion.content == c.content
    again = asyncio.run(llm.achat(ABOUT_YOU, tools=[WEATHER], json_schema=PERSON, **GREEDY))
    assert again.content == c.content


@pytest.mark.slow
def test_chat_auto_with_a_schema_can_call_the_tool(llm: lc.LLM) -> None:
    c = llm.chat(ABOUT_PARIS, tools=[WEATHER], json_schema=PERSON, **GREEDY)
    assert c.tool_calls is not None and c.content is None
    assert [t.name for t in c.tool_calls] == ["get_weather"]
    jsonschema.validate(json.loads(c.tool_calls[0].arguments),
                        WEATHER["function"]["parameters"])


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["required", {"type": "function",
                                                 "function": {"name": "get_weather"}}])
def test_chat_forced_call_with_a_schema_is_a_call(llm: lc.LLM, choice: Any) -> None:
    c = llm.chat(ABOUT_YOU, tools=[WEATHER], tool_choice=choice, json_schema=PERSON, **GREEDY)
    assert c.tool_calls is not None and len(c.tool_calls) == 1 and c.content is None
    jsonschema.validate(json.loads(c.tool_calls[0].arguments),
                        WEATHER["function"]["parameters"])


@pytest.mark.slow
def test_chat_none_with_a_schema_is_the_schema_alone(llm: lc.LLM) -> None:
    c = llm.chat(ABOUT_PARIS, tools=[WEATHER], tool_choice="none", json_schema=PERSON,
                 **GREEDY)
    assert c.tool_calls is None and c.content == c.text
    jsonschema.validate(json.loads(c.text), PERSON)  # bare JSON, no generic wrapper
    plain = llm.chat(ABOUT_PARIS, json_schema=PERSON, **GREEDY)
    assert plain.text == c.text  # the tools are not shown


def test_a_grammar_beside_tools_is_still_refused(llm: lc.LLM) -> None:
    for choice in ("required", "auto"):
        with pytest.raises(ValueError, match="not both"):
            llm.chat(ABOUT_YOU, tools=[WEATHER], tool_choice=choice, grammar='root ::= "x"',
                     max_tokens=1)


@pytest.mark.slow
def test_compat_chat_completion_with_tools_and_response_format(smollm2_path: Path) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    with compat.Llama(str(smollm2_path), n_ctx=1024, verbose=False) as model:
        out: Any = model.create_chat_completion(ABOUT_YOU, tools=[WEATHER], response_format=fmt,
                                                max_tokens=80, temperature=0.0)
        message = out["choices"][0]["message"]
        assert "tool_calls" not in message and out["choices"][0]["finish_reason"] == "stop"
        jsonschema.validate(json.loads(message["content"]), PERSON)
        chunks = list(model.create_chat_completion(ABOUT_YOU, tools=[WEATHER],
                                                   response_format=fmt, max_tokens=80,
                                                   temperature=0.0, stream=True))
        assert "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks) == message["content"]
        out = model.create_chat_completion(ABOUT_YOU, tools=[WEATHER], response_format=fmt,
                                           tool_choice="required", max_tokens=80,
                                           temperature=0.0)
        assert out["choices"][0]["finish_reason"] == "tool_calls"
        assert out["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == \
            "get_weather"


# -- messages with neither content nor tool calls (item 11) ----------------------------------


def test_a_message_without_content_or_tool_calls_is_refused(llm: lc.LLM) -> None:
    with pytest.raises(ValueError, match=r"messages\[0\] has neither 'content' nor "
                                         r"'tool_calls'"):
        llm.chat([{"role": "user"}], max_tokens=1)
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        llm.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant"}])
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        llm.chat_stream([{"role": "system"}, {"role": "user", "content": "hi"}])


def test_what_llama_cpp_allows_stays_allowed(llm: lc.LLM) -> None:
    # llama.cpp's chat layer needs a 'content' key (null or "" allowed) or 'tool_calls'
    call = {"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps(CALL_ARGS)}}
    for assistant in ({"role": "assistant", "tool_calls": [call]},
                      {"role": "assistant", "content": None, "tool_calls": [call]},
                      {"role": "assistant", "content": None},
                      {"role": "assistant", "content": ""}):
        prompt = llm.apply_chat_template([{"role": "user", "content": "hi"}, assistant,
                                          {"role": "user", "content": None}])
        assert "<|im_start|>assistant" in prompt
    assert "Paris" in llm.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [call]}])
