"""llguidance as a grammar engine (issue 23): the vocabulary handed to it
(byte-level BPE and SentencePiece), JSON schemas on both models, regex and
Lark, forced tool calls, the choice of engine and the fallback to llama.cpp's,
the compiled-grammar cache, and the server / compat paths."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

import llama_cffi as lc
import llama_cffi.compat as compat
from llama_cffi.api.tool_choice import prepare_chat
from llama_cffi.objects.chain import chain_for
from llama_cffi.objects.constraints import cache_info, choose, pieces_of, tokenizer_for

from .server_util import Server, ours

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 20},
    "age": {"type": "integer", "minimum": 0, "maximum": 150}}, "required": ["name", "age"]}
SCHEMAS: dict[str, dict[str, Any]] = {
    "person": PERSON,
    "nested": {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 30},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12},
                 "minItems": 1, "maxItems": 3},
        "meta": {"type": "object", "properties": {"ok": {"type": "boolean"},
                                                  "score": {"type": "number", "minimum": 0,
                                                            "maximum": 10}},
                 "required": ["ok", "score"]}},
        "required": ["title", "tags", "meta"]},
    "enum_anyof": {"type": "object", "properties": {
        "colour": {"enum": ["red", "green", "blue"]},
        "value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 999},
                            {"type": "null"}]}},
        "required": ["colour", "value"]},
    # llama.cpp's converter refuses multipleOf; only llguidance can serve it
    "llguidance_only": {"type": "object", "properties": {
        "n": {"type": "integer", "multipleOf": 5, "minimum": 0, "maximum": 100},
        "word": {"type": "string", "maxLength": 12}},
        "required": ["n", "word"]},
}
# llguidance refuses the unknown format; llama.cpp's converter reads it as an annotation
FALLBACK = {"type": "object", "properties": {"zip": {"type": "string", "format": "zip-code",
                                                     "maxLength": 10}}, "required": ["zip"]}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 30},
        "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}}}
ASK = [{"role": "user", "content": "Describe a person as JSON."}]


@pytest.fixture(scope="module")
def smol(smollm2_path: Path) -> Iterator[lc.LLM]:
    with lc.LLM(smollm2_path, n_ctx=1024) as llm:
        yield llm


@pytest.fixture(scope="module")
def gemma(gemma3_path: Path) -> Iterator[lc.LLM]:
    with lc.LLM(gemma3_path, n_ctx=1024) as llm:
        yield llm


@pytest.fixture(params=["smol", "gemma"])
def llm(request: pytest.FixtureRequest) -> lc.LLM:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


# -- the vocabulary ---------------------------------------------------------------


def test_vocabulary_pieces_bpe_and_sentencepiece(llm: lc.LLM) -> None:
    vocab = llm.model.vocab
    pieces = pieces_of(vocab)
    assert len(pieces.tokens) == vocab.n_tokens
    text = ' {"name": "Zoë",\n\t42}'
    ids = vocab.tokenize(text, add_special=False)
    # the pieces are the bytes the tokens stand for (Ġ / ▁ spaces, <0x0A> bytes decoded)
    assert b"".join(pieces.tokens[t] for t in ids) == text.encode()
    assert vocab.type in ("bpe", "spm")
    # end-of-generation tokens: what the engine stops on; marked special
    assert vocab.eos in pieces.eog and all(vocab.is_eog(t) for t in pieces.eog)
    if vocab.eot is not None:
        assert vocab.eot in pieces.eog
    for t in pieces.eog:
        assert t in pieces.special and pieces.tokens[t].startswith(b"\xff")
    tok = tokenizer_for(vocab)
    assert tok is tokenizer_for(vocab)  # built once per model
    assert tok.vocab_size == vocab.n_tokens and sorted(tok.eos_tokens) == pieces.eog
    assert tok.decode_bytes(ids) == text.encode()


def test_special_tokens(smol: lc.LLM, gemma: lc.LLM) -> None:
    p = pieces_of(smol.model.vocab)
    assert p.tokens[smol.model.vocab.tokenize("<|im_end|>", add_special=False,
                                              parse_special=True)[0]] == b"\xff<|im_end|>"
    g = gemma.model.vocab
    end_of_turn = g.tokenize("<end_of_turn>", add_special=False, parse_special=True)[0]
    assert end_of_turn in pieces_of(g).eog


# -- JSON schemas ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_valid(llm: lc.LLM, name: str) -> None:
    schema = SCHEMAS[name]
    for temperature in (0.0, 0.9):
        r = llm.chat(ASK, json_schema=schema, temperature=temperature, seed=3, max_tokens=120,
                     grammar_engine="llguidance")
        assert r.finish_reason in ("stop", "grammar"), r.text
        jsonschema.validate(json.loads(r.text), schema)


def test_engine_choice(smol: lc.LLM) -> None:
    model = smol.model
    auto = chain_for(model, lc.SamplingParams(json_schema=PERSON))
    llama = chain_for(model, lc.SamplingParams(json_schema=PERSON, grammar_engine="llama"))
    try:
        assert auto._constraint is not None and "grammar" not in auto.names
        assert llama._constraint is None and "grammar" in llama.names
    finally:
        auto.close()
        llama.close()
    # llama.cpp's engine is still there and still valid
    r = smol.chat(ASK, json_schema=PERSON, temperature=0, max_tokens=80, grammar_engine="llama")
    jsonschema.validate(json.loads(r.text), PERSON)
    # the schema only llguidance takes: the default serves it, llama.cpp's engine refuses it
    only = SCHEMAS["llguidance_only"]
    jsonschema.validate(json.loads(smol.chat(ASK, json_schema=only, temperature=0,
                                             max_tokens=80).text), only)
    with pytest.raises(lc.SchemaError, match="multipleOf"):
        smol.chat(ASK, json_schema=only, max_tokens=8, grammar_engine="llama")


def test_fallback_is_logged(smol: lc.LLM, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="llama_cffi"):
        constraint, grammar = choose(smol.model.vocab, lc.SamplingParams(json_schema=FALLBACK))
    assert constraint is None and grammar is not None
    assert any("zip-code" in r.getMessage() and "llama.cpp's grammar engine" in r.getMessage()
               for r in caplog.records)
    r = smol.chat(ASK, json_schema=FALLBACK, temperature=0, max_tokens=40)
    jsonschema.validate(json.loads(r.text), FALLBACK)


def test_wrong_engine_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="grammar_engine"):
        lc.SamplingParams(grammar_engine="xgrammar")


def test_compiled_grammar_cache(smol: lc.LLM) -> None:
    schema = {"type": "object", "properties": {"k": {"type": "integer"}}, "required": ["k"],
              "title": "cache-test"}
    before = cache_info()
    for _ in range(3):
        r = smol.complete("JSON:", json_schema=schema, temperature=0, max_tokens=20)
        assert "k" in json.loads(r.text)
    after = cache_info()
    assert after["misses"] == before["misses"] + 1 and after["hits"] >= before["hits"] + 2


# -- regex, Lark, GBNF -----------------------------------------------------------------


def test_regex_and_lark(llm: lc.LLM) -> None:
    pattern = r" [12][0-9]{3}\. (yes|no)/ok"
    r = llm.complete("The year is", grammar=lc.Grammar.regex(pattern), temperature=0.7, seed=5,
                     max_tokens=20)
    assert re.fullmatch(pattern, r.text), r.text
    lark = 'start: " " answer "!"\nanswer: "yes" | "no" | /[0-9]{2}/'
    r = llm.complete("Answer:", grammar=lc.Grammar.lark(lark), temperature=0, max_tokens=10)
    assert re.fullmatch(r" (yes|no|[0-9]{2})!", r.text), r.text
    # as text, llama.cpp's %llguidance prefix
    r = llm.complete("Answer:", grammar='%llguidance {}\nstart: "A" | "B"', max_tokens=5)
    assert r.text in ("A", "B")
    with pytest.raises(ValueError, match="grammar_engine"):
        llm.complete("x", grammar=lc.Grammar.lark(lark), grammar_engine="llama", max_tokens=2)


def test_gbnf_through_llguidance(smol: lc.LLM) -> None:
    gbnf = 'root ::= "(" [a-c]{2,3} ")" ws\nws ::= " "?'
    constraint, grammar = choose(smol.model.vocab, lc.SamplingParams(grammar=gbnf))
    assert constraint is not None and grammar is None
    constraint.close()  # it owns its C matcher
    r = smol.complete("Letters:", grammar=gbnf, temperature=0.8, seed=1, max_tokens=10)
    assert re.fullmatch(r"\([a-c]{2,3}\) ?", r.text), r.text


def test_forced_tool_call(llm: lc.LLM) -> None:
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    prep = prepare_chat(llm.model, messages, tools=[WEATHER], tool_choice="required")
    assert prep.grammar is not None
    constraint, _ = choose(llm.model.vocab, lc.SamplingParams(grammar=prep.grammar))
    assert constraint is not None  # the tools' GBNF runs on llguidance
    constraint.close()
    r = llm.chat(messages, tools=[WEATHER], tool_choice="required", temperature=0,
                 max_tokens=80)
    assert r.tool_calls and r.tool_calls[0].name == "get_weather"
    jsonschema.validate(json.loads(r.tool_calls[0].arguments),
                        WEATHER["function"]["parameters"])  # type: ignore[index]


def test_compat_response_format(smollm2_path: Path) -> None:
    only = SCHEMAS["llguidance_only"]
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": only}}
    with compat.Llama(str(smollm2_path), n_ctx=512, verbose=False) as model:
        out: Any = model.create_chat_completion(ASK, response_format=fmt, max_tokens=60,
                                                temperature=0.0)
    jsonschema.validate(json.loads(out["choices"][0]["message"]["content"]), only)


# -- the server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("llg-server") / "server.log"
    with ours(["-m", str(smollm2_path), "-c", "2048", "-np", "2", "-t", "2"], log) as s:
        yield s


@pytest.mark.slow
def test_server_response_format(server: Server) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                           timeout=300)
    only = SCHEMAS["llguidance_only"]
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "n", "schema": only}}
    with client:
        r = client.chat.completions.create(model="m", messages=ASK,  # type: ignore[arg-type]
                                           response_format=fmt, max_tokens=60, temperature=0)
        jsonschema.validate(json.loads(r.choices[0].message.content or ""), only)
        with pytest.raises(openai.BadRequestError, match="multipleOf"):
            client.chat.completions.create(model="m", messages=ASK,  # type: ignore[arg-type]
                                           response_format=fmt, max_tokens=8,
                                           extra_body={"grammar_engine": "llama"})
        lark = lc.Grammar.lark('start: "yes" | "no"').text
        c = client.completions.create(model="m", prompt="Is it?", max_tokens=5,
                                      extra_body={"grammar": lark})
        assert c.choices[0].text in ("yes", "no")
    status, body = server.post("/v1/chat/completions", {
        "messages": ASK, "max_tokens": 4, "grammar_engine": "xgrammar"})
    assert status == 400 and "grammar_engine" in json.dumps(body)


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"type": "string", "minLength": 5,
                                            "maxLength": 2}}},
    {"type": "array", "items": {"type": "integer", "minimum": 3, "maximum": 1}},
    '{"type": "array", "minItems": 4, "maxItems": 1}',
])
def test_contradictory_bounds_refused_as_llama_cpp_does(schema: object) -> None:
    """llguidance compiles a schema whose bounds no value meets and quietly
    leaves the impossible part out; both engines refuse it instead."""
    from llama_cffi.errors import SchemaError
    from llama_cffi.objects.constraints.select import check_bounds
    from llama_cffi.objects.json_schema import to_gbnf

    with pytest.raises(SchemaError, match="larger than"):
        check_bounds(schema)
    with pytest.raises(SchemaError):
        to_gbnf(schema)  # type: ignore[arg-type]
    check_bounds({"type": "object", "properties": {"minLength": {"type": "integer"}}})


@pytest.mark.parametrize(("version", "used"), [
    ("1.9.1", True), ("1.12.0", True), ("1.10rc1", True), ("1.8.3", False), ("2.0.0", False),
    ("0.7", False),
])
def test_only_llguidance_1x_has_its_c_api_loaded(version: str, used: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """cdef/llg.h declares llguidance 1.x's structs (no size field on the
    constraint init): another major version is refused with the reason, not
    called with a layout it may not have."""
    import importlib.metadata

    from llama_cffi._bindings import llg

    monkeypatch.setattr(importlib.metadata, "version", lambda name: version)
    reason = llg._version_refused()
    assert (reason == "") is used
    if not used:
        assert version in reason and "llguidance>=1.9,<2" in reason
