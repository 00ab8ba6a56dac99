"""JSON schema -> grammar: generation with a real model always gives JSON that
the ``jsonschema`` package validates, at temperature 0 and 1 with several seeds."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from typing import Any

import jsonschema
import numpy as np
import pytest

import llama_cffi as lc
from llama_cffi.objects.json_schema import to_gbnf

NAME = {"type": "string", "minLength": 1, "maxLength": 24}
SCHEMAS: dict[str, dict[str, Any]] = {
    "person": {"type": "object", "properties": {"name": NAME, "age": {
        "type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"]},
    "optional-fields": {"type": "object", "properties": {
        "title": NAME, "subtitle": NAME, "pages": {"type": "integer", "minimum": 1,
                                                   "maximum": 2000}}},
    "nested-address": {"type": "object", "properties": {
        "name": NAME,
        "address": {"type": "object", "properties": {
            "street": NAME, "city": NAME, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["street", "city", "zip"]}},
        "required": ["name", "address"]},
    "array-of-objects": {"type": "object", "properties": {"items": {
        "type": "array", "minItems": 1, "maxItems": 3, "items": {
            "type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
                                             "qty": {"type": "integer", "minimum": 1,
                                                     "maximum": 99}},
            "required": ["sku", "qty"]}}}, "required": ["items"]},
    "enum-and-const": {"type": "object", "properties": {
        "status": {"enum": ["open", "closed", "pending"]},
        "version": {"const": 2},
        "priority": {"enum": [1, 2, 3, None]}}, "required": ["status", "version", "priority"]},
    "refs": {"$defs": {"point": {"type": "object", "properties": {
        "x": {"type": "integer", "minimum": -50, "maximum": 50},
        "y": {"type": "integer", "minimum": -50, "maximum": 50}}, "required": ["x", "y"]}},
        "type": "object", "properties": {"start": {"$ref": "#/$defs/point"},
                                         "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"]},
    "number-bounds": {"type": "object", "properties": {
        "temperature": {"type": "number", "minimum": -30, "maximum": 50},
        "humidity": {"type": "number", "minimum": 0, "maximum": 100},
        "count": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}},
        "required": ["temperature", "humidity", "count"]},
    "dates": {"type": "object", "properties": {
        "day": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "time"},
        "created": {"type": "string", "format": "date-time"}},
        "required": ["day", "at", "created"]},
    "uuid": {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"},
                                              "ok": {"type": "boolean"}},
             "required": ["id", "ok"]},
    "any-of": {"type": "object", "properties": {"value": {"anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 9}, {"type": "boolean"}, {"type": "null"}]}},
        "required": ["value"]},
    "one-of-shapes": {"oneOf": [
        {"type": "object", "properties": {"kind": {"const": "circle"}, "radius": {
            "type": "integer", "minimum": 1, "maximum": 100}}, "required": ["kind", "radius"]},
        {"type": "object", "properties": {"kind": {"const": "square"}, "side": {
            "type": "integer", "minimum": 1, "maximum": 100}}, "required": ["kind", "side"]}]},
    "all-of": {"allOf": [
        {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1,
                                                 "maximum": 1000}}, "required": ["id"]},
        {"properties": {"label": NAME}, "required": ["label"]}]},
    "nullable": {"type": "object", "properties": {
        "nickname": {"type": ["string", "null"], "maxLength": 16},
        "score": {"type": "integer", "minimum": 0, "maximum": 10, "nullable": True}},
        "required": ["nickname", "score"]},
    "string-array": {"type": "array", "items": {"type": "string", "maxLength": 12},
                     "minItems": 2, "maxItems": 4},
    "tuple": {"type": "array", "prefixItems": [NAME, {"type": "integer", "minimum": 0,
                                                       "maximum": 9},
                                                {"type": "boolean"}], "items": False},
    "two-level-tree": {"$defs": {"leaf": {"type": "object", "properties": {
        "label": {"type": "string", "maxLength": 8}}, "required": ["label"]}},
        "type": "object", "properties": {
        "label": {"type": "string", "maxLength": 8},
        "children": {"type": "array", "maxItems": 2, "items": {"$ref": "#/$defs/leaf"}}},
        "required": ["label", "children"]},
    "additional-properties": {"type": "object", "properties": {"id": {
        "type": "integer", "minimum": 0, "maximum": 99}}, "required": ["id"],
        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 9},
        "maxProperties": 4},
}
PROMPT = "Here is one example record as compact JSON:\n"
RUNS = [(0.0, 1), (1.0, 1), (1.0, 2), (1.0, 3)]


def check_formats(value: object, schema: dict[str, Any]) -> None:
    """Validate the string formats jsonschema only checks with extra packages."""
    props = schema.get("properties", {})
    if isinstance(value, dict):
        for k, v in value.items():
            fmt = props.get(k, {}).get("format")
            if fmt == "date":
                dt.date.fromisoformat(v)
            elif fmt == "time":
                dt.time.fromisoformat(v.replace("Z", "+00:00"))
            elif fmt == "date-time":
                dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
            elif fmt == "uuid":
                uuid.UUID(v)


def generate(model: lc.Model, schema: dict[str, Any] | bool, temperature: float, seed: int,
             prompt: str = PROMPT, **options: Any) -> str:
    grammar = lc.Grammar.from_json_schema(schema, **options)
    with model.context(n_ctx=1024) as ctx, lc.SamplerChain.from_params(
            model, temperature=temperature, seed=seed, grammar=grammar) as chain:
        stream = lc.TextStream(model.vocab)
        gen = lc.Generation(ctx, chain, model.vocab.tokenize(prompt), max_tokens=400)
        text = "".join(stream.add(t) for t in gen) + stream.flush()
        assert gen.finish_reason == "stop", f"did not finish: {text!r}"
        return text


def test_at_least_fifteen_schemas() -> None:
    assert len(SCHEMAS) >= 15


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_generated_json_validates(name: str, smollm2: lc.Model) -> None:
    schema = SCHEMAS[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    outputs = set()
    for temperature, seed in RUNS:
        text = generate(smollm2, schema, temperature, seed)
        value = json.loads(text)
        jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)
        check_formats(value, schema)
        outputs.add(text)
    assert len(outputs) >= 2, "temperature 1 with different seeds should vary the output"


RECURSIVE = {"$defs": {"node": {"type": "object", "properties": {
    "label": {"type": "string", "maxLength": 8},
    "children": {"type": "array", "maxItems": 2, "items": {"$ref": "#/$defs/node"}}},
    "required": ["label"]}}, "$ref": "#/$defs/node"}


def feed(model: lc.Model, grammar: lc.Grammar, text: str) -> None:
    """Advance a grammar over ``text`` token by token (GrammarError if it refuses)."""
    with lc.SamplerChain([grammar.sampler(model), lc.sampling.greedy()]) as chain:
        for t in model.vocab.tokenize(text, add_special=False):
            chain.accept(t)


def test_recursive_schema_accepts_nested_documents(smollm2: lc.Model) -> None:
    # An unbounded recursive schema lets a small model nest forever, so it is
    # checked by feeding documents: nesting 3 deep is accepted, a violation is not.
    grammar = lc.Grammar.from_json_schema(RECURSIVE)
    doc = {"label": "a", "children": [{"label": "b", "children": [{"label": "c"}]},
                                      {"label": "d"}]}
    jsonschema.validate(doc, RECURSIVE)
    feed(smollm2, grammar, json.dumps(doc))
    with pytest.raises(lc.GrammarError, match="not allowed"):
        feed(smollm2, grammar, json.dumps({"label": "a", "children": [{"name": "x"}]}))


ANY_JSON_GOOD = ['{"name": "Tom", "age": 3}', '[1, 2.5, -3e2, 0.5E-1, true, false, null]',
                 '"a \\"quoted\\" word \\u00e9"', "0", "-12", "{}", "[]", '""',
                 '{"a": {"b": [1, {"c": null}]}, "d": []}']
ANY_JSON_BAD = ['{"name": "Tom",}', "[1, 2,]", "{name: 1}", "'single'", "01", "tru", '{"a" 1}',
                "[1 2]", '"unterminated', "+1", "nul", '{"a": 1}}', "[", "1.", ".5", '"\\q"']


def test_any_json_mode(smollm2: lc.Model) -> None:
    grammar = lc.Grammar.any_json()
    # llama.cpp's grammar engine running the grammar accepts what Python's json
    # module parses, and refuses what it refuses
    for text in ANY_JSON_GOOD:
        json.loads(text)
        assert matches(smollm2, grammar, text), text
    for text in ANY_JSON_BAD:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        assert not matches(smollm2, grammar, text), text
    # generation under it ends with a complete JSON document (prompts on which
    # this model ends its document at temperature 0)
    for prompt in (PROMPT, "A cat as JSON:\n"):
        text = generate(smollm2, True, 0.0, 1, prompt=prompt)  # asserts it stopped
        assert isinstance(json.loads(text), dict), text
        assert matches(smollm2, grammar, text), text


@pytest.mark.parametrize("schema, keyword", [
    ({"type": "string", "not": {"const": "x"}}, "not"),
    ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "number", "multipleOf": 3}, "multipleOf"),
    ({"$ref": "other-schema.json#/$defs/x"}, "local $ref"),
    ({"$ref": "#/$defs/missing"}, "points to nothing"),
    ({"type": "integer", "minimum": 10, "maximum": 1}, "larger than maximum"),
    ({"type": "string", "pattern": "^(?=a)b$"}, "lookaround"),
    ({"type": "number", "minimum": 0.5}, "integer-valued"),
    ("{not json", "not valid JSON"),
])
def test_unsupported_schemas_name_the_feature(schema: Any, keyword: str) -> None:
    with pytest.raises(lc.SchemaError, match=keyword.replace("$", r"\$")):
        to_gbnf(schema)


def test_integer_ranges_are_exact(smollm2: lc.Model) -> None:
    """Every integer from -1200 to 1200 is accepted by llama.cpp's grammar
    engine, running the grammar made for {"type": "integer", "minimum": lo,
    "maximum": hi}, exactly when it is in [lo, hi]; integers written the way
    JSON forbids (leading zeros, "+") never are."""
    vocab = smollm2.vocab
    eos = vocab.eos
    assert eos is not None
    tokens: dict[int | str, list[int]] = {
        n: vocab.tokenize(str(n), add_special=False) for n in range(-1200, 1201)}
    malformed = ["00", "01", "007", "+1", "1.0", "1e2", "--1", ""]
    tokens.update({text: vocab.tokenize(text, add_special=False) for text in malformed})
    end = lc.Candidates.from_logits(np.zeros(1, dtype=np.float32))

    for lo, hi in [(0, 0), (5, 123), (-20, 7), (-300, -45), (1, 9), (10, 10), (99, 1001)]:
        grammar = lc.Grammar.from_json_schema({"type": "integer", "minimum": lo, "maximum": hi})
        with lc.SamplerChain([grammar.sampler(smollm2)]) as chain:

            def accepts(toks: list[int]) -> bool:
                chain.reset()
                try:
                    for t in toks:
                        chain.accept(t)
                except lc.GrammarError:
                    return False
                end.size = 1  # may the output end here?
                end.ids[0], end.logits[0] = eos, 0.0
                chain.apply(end)
                return bool(np.isfinite(end.logits[0]))

            accepted = {n for n, toks in tokens.items() if accepts(toks)}
        assert accepted == set(range(lo, hi + 1)), (lo, hi, sorted(
            accepted.symmetric_difference(range(lo, hi + 1)), key=str)[:10])


# -- converter options (llama.cpp's --prop-order, --dotall, --raw-pattern, --allow-fetch) ---


def matches(model: lc.Model, grammar: lc.Grammar, text: str) -> bool:
    """Whether llama.cpp's grammar engine accepts exactly ``text``: every token
    of it, and then the end of generation."""
    with lc.SamplerChain([grammar.sampler(model)]) as chain:
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


PERSON = {"type": "object", "properties": {
    "name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}, "city": NAME},
    "required": ["name", "age", "city"]}
ANN = {"name": "Ann", "age": 30, "city": "Oslo"}


def test_matches_helper_tells_complete_documents(smollm2: lc.Model) -> None:
    grammar = lc.Grammar.from_json_schema(PERSON)
    assert matches(smollm2, grammar, json.dumps(ANN))
    assert not matches(smollm2, grammar, json.dumps(ANN)[:-1])  # a prefix only
    assert not matches(smollm2, grammar, json.dumps({**ANN, "age": 121}))


def test_default_property_order_is_schema_order(smollm2: lc.Model) -> None:
    value = json.loads(generate(smollm2, PERSON, 0.0, 1))
    jsonschema.validate(value, PERSON)
    assert list(value) == ["name", "age", "city"]


@pytest.mark.parametrize("order", [["city", "age"], "city, age", {"age": 5, "city": 2}])
def test_prop_order_orders_the_generated_keys(smollm2: lc.Model, order: Any) -> None:
    # as --prop-order=city,age: listed names first, in that order, then the rest
    value = json.loads(generate(smollm2, PERSON, 0.0, 1, prop_order=order))
    jsonschema.validate(value, PERSON)
    assert list(value) == ["city", "age", "name"]
    grammar = lc.Grammar.from_json_schema(PERSON, prop_order=order)
    reordered = {"city": "Oslo", "age": 30, "name": "Ann"}
    assert matches(smollm2, grammar, json.dumps(reordered))
    assert not matches(smollm2, grammar, json.dumps(ANN))


def test_prop_order_applies_to_nested_objects_and_keeps_required_first(
        smollm2: lc.Model) -> None:
    schema = {"type": "object", "properties": {
        "b": {"type": "integer"}, "a": {"type": "integer"},
        "inner": {"type": "object", "properties": {"b": {"type": "integer"},
                                                   "a": {"type": "integer"}},
                  "required": ["a", "b"]}}, "required": ["b", "inner"]}
    grammar = lc.Grammar.from_json_schema(schema, prop_order=["a", "b"])
    # required b and inner come before optional a (as llama.cpp); inside inner, a then b
    assert matches(smollm2, grammar, '{"b": 1, "inner": {"a": 2, "b": 3}, "a": 4}')
    assert matches(smollm2, grammar, '{"b": 1, "inner": {"a": 2, "b": 3}}')
    assert not matches(smollm2, grammar, '{"a": 4, "b": 1, "inner": {"a": 2, "b": 3}}')
    assert not matches(smollm2, grammar, '{"b": 1, "inner": {"b": 3, "a": 2}}')


DOT = {"type": "string", "pattern": "^a.b$"}


def test_dot_matches_no_newline_unless_dotall(smollm2: lc.Model) -> None:
    plain = lc.Grammar.from_json_schema(DOT)
    dotall = lc.Grammar.from_json_schema(DOT, dotall=True)
    # line terminators: JSON escapes, \u escapes, and U+2028/U+2029 raw
    for doc in ['"a\\nb"', '"a\\rb"', '"a\\u000Ab"', '"a\\u000db"', '"a\\u2028b"',
                '"a\\u2029b"', '"a\u2028b"', '"a\u2029b"']:
        assert json.loads(doc)[1] in "\n\r\u2028\u2029"
        assert not matches(smollm2, plain, doc), doc
        assert matches(smollm2, dotall, doc), doc
    # without dotall, '.' still matches every other character, raw or escaped
    for doc in ['"a-b"', '"a\\tb"', '"a\\"b"', '"aéb"', '"a\\u00e9b"', '"a\\u000Bb"',
                '"a\\u2027b"', '"a\\u0a0ab"']:
        assert matches(smollm2, plain, doc), doc
        jsonschema.validate(json.loads(doc), DOT)
    assert not matches(smollm2, plain, '"ab"')
    # JSON schema (ECMA-262) agrees: '.' does not match a newline
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("a\nb", DOT)


def test_pattern_escapes_characters_json_escapes(smollm2: lc.Model) -> None:
    # a quote, backslash or newline the pattern allows is produced JSON-escaped
    schema = {"type": "string", "pattern": '^[a-z"\\\\]+\\s[0-9]$'}
    grammar = lc.Grammar.from_json_schema(schema)
    for text in ['a"b 1', "a\\b\n2", "x\t3"]:
        jsonschema.validate(text, schema)
        assert matches(smollm2, grammar, json.dumps(text)), text
    assert matches(smollm2, grammar, '"ab\\n1"')
    assert not matches(smollm2, grammar, '"ab\n1"')  # a raw newline is not JSON


RAW = {"type": "string", "pattern": "^(yes|no): [a-z]{2,8}$"}


def test_raw_pattern_constrains_plain_text(smollm2: lc.Model) -> None:
    raw = lc.Grammar.from_json_schema(RAW, raw_pattern=True)
    quoted = lc.Grammar.from_json_schema(RAW)
    assert matches(smollm2, raw, "yes: abc")
    assert not matches(smollm2, raw, '"yes: abc"')
    assert not matches(smollm2, raw, "yes: abc ")  # no trailing whitespace either
    assert matches(smollm2, quoted, '"yes: abc"')
    assert not matches(smollm2, quoted, "yes: abc")
    text = generate(smollm2, RAW, 0.0, 1, prompt="Question: is the sky blue? Answer: ",
                    raw_pattern=True)
    assert re.fullmatch(RAW["pattern"], text), text


def test_raw_pattern_takes_quotes_and_backslashes_literally(smollm2: lc.Model) -> None:
    schema = {"type": "string", "pattern": '^say "[a-z]+" \\\\ .$'}
    raw = lc.Grammar.from_json_schema(schema, raw_pattern=True)
    quoted = lc.Grammar.from_json_schema(schema)
    text = 'say "hi" \\ x'
    jsonschema.validate(text, schema)
    assert matches(smollm2, raw, text)
    assert not matches(smollm2, raw, json.dumps(text))
    assert matches(smollm2, quoted, json.dumps(text))
    assert not matches(smollm2, raw, 'say "hi" \\ \n')  # '.' is not a newline ...
    dotall = lc.Grammar.from_json_schema(schema, raw_pattern=True, dotall=True)
    assert matches(smollm2, dotall, 'say "hi" \\ \n')  # ... unless dotall


def test_whitespace_option_constrains_whitespace_between_tokens(smollm2: lc.Model) -> None:
    compact = json.dumps(ANN, separators=(",", ":"))
    spaced = json.dumps(ANN)
    double = '{"name":  "Ann", "age": 30, "city": "Oslo"}'
    pretty = json.dumps(ANN, indent=2)
    grammars = {w: lc.Grammar.from_json_schema(PERSON, whitespace=w)
                for w in ("compact", "single", "free")}
    accepted = {w: [d for d in (compact, spaced, double, pretty) if matches(smollm2, g, d)]
                for w, g in grammars.items()}
    assert accepted == {"compact": [compact], "single": [compact, spaced],
                        "free": [compact, spaced, pretty]}
    default = lc.Grammar.from_json_schema(PERSON)
    assert matches(smollm2, default, spaced) and not matches(smollm2, default, pretty)
    # sampled output under "compact" has no whitespace outside strings
    for seed in (1, 2):
        text = generate(smollm2, PERSON, 1.0, seed, whitespace="compact")
        jsonschema.validate(json.loads(text), PERSON)
        assert not re.search(r"\s", re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)), text


def test_remote_refs_are_refused_and_never_fetched(smollm2: lc.Model) -> None:
    with pytest.raises(lc.SchemaError, match="remote.*--allow-fetch"):
        to_gbnf({"$ref": "https://example.com/schema.json#/$defs/x"})
    with pytest.raises(lc.SchemaError, match="remote"):
        lc.Grammar.from_json_schema({"type": "object", "properties": {
            "p": {"$ref": "http://example.com/point.json"}}})
    # a $ref through the schema's own $id is local
    schema = {"$id": "https://example.com/s.json", "$defs": {"n": {"type": "integer",
                                                                   "minimum": 1,
                                                                   "maximum": 3}},
              "type": "array", "items": {"$ref": "https://example.com/s.json#/$defs/n"}}
    grammar = lc.Grammar.from_json_schema(schema)
    assert matches(smollm2, grammar, "[1, 3]")
    assert not matches(smollm2, grammar, "[4]")


@pytest.mark.parametrize("options, error, name", [
    ({"prop_order": 5}, TypeError, "prop_order"),
    ({"prop_order": ["a", 1]}, TypeError, "prop_order"),
    ({"prop_order": ["a", "a"]}, ValueError, "prop_order"),
    ({"prop_order": {"a": "first"}}, TypeError, "prop_order"),
    ({"prop_order": {"a": True}}, TypeError, "prop_order"),
    ({"dotall": "yes"}, TypeError, "dotall"),
    ({"raw_pattern": 1}, TypeError, "raw_pattern"),
    ({"allow_fetch": True}, ValueError, "allow_fetch"),
    ({"allow_fetch": "no"}, TypeError, "allow_fetch"),
    ({"whitespace": "tabs"}, ValueError, "whitespace"),
    ({"whitespace": None}, TypeError, "whitespace"),
    ({"indent": 2}, TypeError, "indent"),
])
def test_bad_options_raise_naming_the_option(options: dict[str, Any], error: type,
                                             name: str) -> None:
    for convert in (to_gbnf, lc.Grammar.from_json_schema):
        with pytest.raises(error, match=name):
            convert(PERSON, **options)


def test_dot_unicode_escapes_exclude_exactly_the_line_terminators() -> None:
    """Without dotall, '.' in a JSON string takes any \\uXXXX escape but those of
    \\n, \\r, U+2028 and U+2029: the hex part of the rule, checked exhaustively
    by reading its GBNF as a Python regex."""
    from llama_cffi.objects.json_schema_gbnf import DOT_RULES

    body = DOT_RULES[False, False]
    assert body.endswith("))")  # closing the \\u group and the escape group
    hex_part = body[body.index('"u" (') + len('"u" ('):-2]
    rx = re.compile(hex_part.replace('"', "").replace(" ", ""))
    refused = {f"{n:04x}" for n in range(0x10000) if not rx.fullmatch(f"{n:04x}")}
    refused_upper = {f"{n:04X}" for n in range(0x10000) if not rx.fullmatch(f"{n:04X}")}
    assert refused == {"000a", "000d", "2028", "2029"}
    assert refused_upper == {"000A", "000D", "2028", "2029"}


# -- forms llama.cpp's converter accepts (vendor/llama.cpp/tests/test-json-schema-to-grammar.cpp)

ACCEPTED_FORMS: list[tuple[str, dict[str, Any], list[Any], list[Any]]] = [
    # name, schema, documents llama.cpp's grammar engine must accept, and must refuse
    ("items-as-list-tuple", {"type": "array", "items": [{"type": "integer"}, {"type": "string"}]},
     [[1, "a"]], [[1], [1, 2], [1, "a", "b"]]),
    ("prefixItems-then-items", {"type": "array", "prefixItems": [{"type": "integer"}],
                                "items": {"type": "string"}, "maxItems": 3},
     [[1], [1, "a"], [1, "a", "b"]], [[], ["a"], [1, 2], [1, "a", "b", "c"]]),
    ("ref-into-properties", {"type": "object", "properties": {
        "a": {"type": "integer", "minimum": 0, "maximum": 9}, "b": {"$ref": "#/properties/a"}},
        "required": ["a", "b"]}, [{"a": 1, "b": 2}], [{"a": 1, "b": 10}]),
    ("allOf-of-enums", {"allOf": [{"enum": ["a", "b", "c"]}, {"enum": ["b", "c", "d"]}]},
     ["b", "c"], ["a", "d"]),
    ("allOf-enum-and-const", {"allOf": [{"enum": [1, 2, 3]}, {"const": 2}]}, [2], [1, 3]),
    ("unanchored-pattern", {"type": "string", "pattern": "[0-9]{3}"},
     ["123", "ab123", "x1234y"], ["12", "abc"]),
    ("start-anchored-pattern", {"type": "string", "pattern": "^ab"}, ["ab", "abc!"], ["xab"]),
    ("end-anchored-pattern", {"type": "string", "pattern": "ab$"}, ["ab", "xxab"], ["abx"]),
    ("other-format-is-an-annotation", {"type": "string", "format": "email"},
     ["a@b.c", "anything"], [1]),
]


@pytest.mark.parametrize("name, schema, good, bad", ACCEPTED_FORMS,
                         ids=[f[0] for f in ACCEPTED_FORMS])
def test_forms_llama_cpp_accepts_are_accepted_and_exact(name: str, schema: dict[str, Any],
                                                        good: list[Any], bad: list[Any],
                                                        smollm2: lc.Model) -> None:
    grammar = lc.Grammar.from_json_schema(schema)
    for doc in good:
        tuple_form = isinstance(schema.get("items"), list)  # draft 7's form of prefixItems
        validator = jsonschema.Draft7Validator if tuple_form else jsonschema.Draft202012Validator
        validator(schema).validate(doc)  # the cases themselves are right
        assert matches(smollm2, grammar, json.dumps(doc)), doc
    for doc in bad:
        assert not matches(smollm2, grammar, json.dumps(doc)), doc


# llama.cpp's converter reads one schema given as prefixItems like items (its cases "string
# array", "nullable string array", "array with empty items and prefixItems"): items wins
SINGLE_PREFIX_ITEMS: list[tuple[str, dict[str, Any], list[Any], list[Any]]] = [
    ("string-array", {"type": "array", "prefixItems": {"type": "string"}},
     [[], ["a"], ["a", "b", "c"]], [[1], ["a", 1], {}, None]),
    ("nullable-string-array", {"type": ["array", "null"], "prefixItems": {"type": "string"}},
     [None, [], ["a", "b"]], [[1], "a"]),
    ("empty-items-and-prefixItems", {"type": "array", "items": {},
                                     "prefixItems": {"type": "string"}},
     [[], ["a"], [1, "a", None, {"k": [2]}]], [{}, "a", None]),
    ("no-type", {"prefixItems": {"type": "integer"}, "maxItems": 2}, [[], [1], [1, 2]],
     [[1, 2, 3], ["a"]]),
]


@pytest.mark.parametrize("name, schema, good, bad", SINGLE_PREFIX_ITEMS,
                         ids=[f[0] for f in SINGLE_PREFIX_ITEMS])
def test_prefix_items_as_one_schema_is_read_like_items(name: str, schema: dict[str, Any],
                                                        good: list[Any], bad: list[Any],
                                                        smollm2: lc.Model,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llama_cffi"):
        grammar = lc.Grammar.from_json_schema(schema)
    assert "prefixItems as one schema, not a list, is non-standard" in caplog.text
    # the same grammar as the standard form llama.cpp reads it as
    standard = {"items": schema["prefixItems"],
                **{k: v for k, v in schema.items() if k != "prefixItems"}}
    assert to_gbnf(schema) == to_gbnf(standard)
    for doc in good:
        jsonschema.Draft202012Validator(standard).validate(doc)  # the cases themselves are right
        assert matches(smollm2, grammar, json.dumps(doc)), doc
    for doc in bad:
        assert not matches(smollm2, grammar, json.dumps(doc)), doc


def test_prefix_items_neither_list_nor_schema_is_refused() -> None:
    with pytest.raises(lc.SchemaError, match="prefixItems must be a list of schemas "
                                             r"\(or one schema\), not int"):
        to_gbnf({"type": "array", "prefixItems": 3})


def test_allof_enums_without_common_value_is_refused() -> None:
    with pytest.raises(lc.SchemaError, match="no value in common"):
        to_gbnf({"allOf": [{"enum": ["a"]}, {"enum": ["b"]}]})


def test_json_schema_true_means_an_object(smollm2_path: Any) -> None:
    # llama-cpp-python's response_format json_object: a JSON object, never a bare value
    assert lc.SamplingParams(json_schema=True).json_schema == {"type": "object"}
    with lc.LLM(smollm2_path, n_ctx=512) as llm:
        for seed in (1, 2):
            c = llm.complete("The answer is 42. JSON:", json_schema=True, max_tokens=60,
                             temperature=1.0, seed=seed)
            if c.finish_reason in ("stop", "grammar"):
                assert isinstance(json.loads(c.text), dict)
            else:
                assert c.text.lstrip().startswith("{")
