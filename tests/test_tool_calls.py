"""Tool calls: each native format parsed from recorded model outputs (the
replies llama.cpp's tests/test-chat.cpp parses), templates with native tool
support rendered and read back, and forced calls round-tripping with SmolLM2."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import llama_cffi as lc
from llama_cffi.api.tool_calls import detect_family, parse_tool_calls, tool_call_dict
from llama_cffi.api.tool_choice import check_tool_choice, check_tools, tool_grammar

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "vendor" / "llama.cpp" / "models" / "templates"
ARG1 = {"arg1": 1}
SPECIAL = {"type": "function", "function": {
    "name": "special_function", "description": "I'm special",
    "parameters": {"type": "object", "properties": {"arg1": {"type": "integer"}},
                   "required": ["arg1"]}}}

# (template file, family, recorded reply, content, [(name, arguments, id or None)])
RECORDED: list[tuple[str, str, str, str | None, list[tuple[str, dict[str, Any], str | None]]]] = [
    ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", "hermes",
     '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}</tool_call>',
     None, [("special_function", ARG1, None)]),
    ("Qwen-Qwen2.5-7B-Instruct", "hermes",
     "Hello, world!\nWhat's up?<tool_call>\n"
     '{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>',
     "Hello, world!\nWhat's up?", [("special_function", ARG1, None)]),
    ("Qwen3-Coder", "qwen3_coder",
     "<tool_call>\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n"
     "</function>\n</tool_call>", None, [("special_function", ARG1, None)]),
    ("meta-llama-Llama-3.1-8B-Instruct", "llama3",
     '{"name": "special_function", "parameters": {"arg1": 1}}', None,
     [("special_function", ARG1, None)]),
    ("meta-llama-Llama-3.1-8B-Instruct", "llama3",
     '<|python_tag|>brave_search.call(query="llama.cpp")', None,
     [("brave_search", {"query": "llama.cpp"}, None)]),
    ("mistralai-Mistral-Nemo-Instruct-2407", "mistral",
     '[TOOL_CALLS][{"name": "special_function", "arguments": {"arg1": 1}, "id": "123456789"}]',
     None, [("special_function", ARG1, "123456789")]),
    ("Mistral-Small-3.2-24B-Instruct-2506", "mistral",
     '[TOOL_CALLS]special_function[CALL_ID]000000001[ARGS]{"arg1": 1}'
     '[TOOL_CALLS]special_function_with_opt[CALL_ID]000000002[ARGS]{"arg1": 1, "arg2": 2}',
     None, [("special_function", ARG1, "000000001"),
            ("special_function_with_opt", {"arg1": 1, "arg2": 2}, "000000002")]),
    ("unsloth-mistral-Devstral-Small-2507", "mistral",
     "Hello, world!\nWhat's up?[TOOL_CALLS]special_function[ARGS]{\"arg1\": 1}",
     "Hello, world!\nWhat's up?", [("special_function", ARG1, None)]),
    ("meetkai-functionary-medium-v3.1", "functionary_v3_1",
     '<function=special_function>{"arg1": 1}</function>', None,
     [("special_function", ARG1, None)]),
    ("meetkai-functionary-medium-v3.2", "functionary_v3_2",
     'special_function\n{"arg1": 1}', None, [("special_function", ARG1, None)]),
    ("meetkai-functionary-medium-v3.2", "functionary_v3_2",
     "all\nHello, world!\nWhat's up?", "Hello, world!\nWhat's up?", []),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "deepseek",
     "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>special_function\n"
     '```json\n{"arg1": 1}```<｜tool▁call▁end｜><｜tool▁calls▁end｜>', None,
     [("special_function", ARG1, None)]),
    ("deepseek-ai-DeepSeek-V3.1", "deepseek",
     '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{"city": "XYZCITY"}'
     "<｜tool▁call▁end｜><｜tool▁calls▁end｜>", None, [("get_time", {"city": "XYZCITY"}, None)]),
    ("fireworks-ai-llama-3-firefunction-v2", "firefunction",
     ' functools[{"name": "special_function", "arguments": {"arg1": 1}}]', None,
     [("special_function", ARG1, None)]),
    ("CohereForAI-c4ai-command-r7b-12-2024-tool_use", "command_r",
     "<|START_THINKING|>I'm\nthinking<|END_THINKING|><|START_ACTION|>[\n"
     '    {"tool_call_id": "0", "tool_name": "special_function", "parameters": {"arg1": 1}}\n'
     "]<|END_ACTION|>", None, [("special_function", ARG1, "0")]),
    ("CohereForAI-c4ai-command-r-plus-tool_use", "command_r",
     'Action:\n```json\n[{"tool_name": "special_function", "parameters": {"arg1": 1}}]\n```',
     None, [("special_function", ARG1, None)]),
    ("ibm-granite-granite-3.3-2B-Instruct", "granite",
     '<|tool_call|>[{"name": "special_function", "arguments": {"arg1": 1}}]', None,
     [("special_function", ARG1, None)]),
    ("google-gemma-2-2b-it", "generic",
     '{"tool_call": {"name": "special_function", "arguments": {"arg1": 1}}}', None,
     [("special_function", ARG1, None)]),
    ("google-gemma-2-2b-it", "generic", '{"response": "Hello, world!"}', "Hello, world!", []),
]


@pytest.mark.parametrize("template, family, text, content, calls", RECORDED,
                         ids=[f"{r[1]}-{i}" for i, r in enumerate(RECORDED)])
def test_recorded_replies_parse(template: str, family: str, text: str, content: str | None,
                                calls: list[tuple[str, dict[str, Any], str | None]]) -> None:
    assert detect_family((TEMPLATES / f"{template}.jinja").read_text()) == family
    got_content, got = parse_tool_calls(text, family)
    assert got_content == content
    assert [(c.name, json.loads(c.arguments)) for c in got] == [(n, a) for n, a, _ in calls]
    for call, (_, _, cid) in zip(got, calls):
        assert call.id == cid if cid else call.id.startswith("call_")


@pytest.mark.parametrize("family", ["hermes", "llama3", "mistral", "deepseek", "generic",
                                    "functionary_v3_2", "command_r", "granite"])
def test_malformed_calls_stay_content(family: str) -> None:
    for text in ['<tool_call>\n{"name": "f", "arguments": {"a": </tool_call>',
                 "[TOOL_CALLS]f[ARGS]{oops", "just words", '{"name": 1}']:
        content, calls = parse_tool_calls(text, family)
        assert calls == [] and content is not None and content.strip()


def test_unknown_family_raises() -> None:
    with pytest.raises(ValueError, match="unknown tool-call family 'nope'"):
        parse_tool_calls("x", "nope")


# -- native templates: a call rendered back into the prompt reads as the model writes it ------

NATIVE = [("Qwen-Qwen2.5-7B-Instruct", "hermes"),
          ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", "hermes"),
          ("meta-llama-Llama-3.1-8B-Instruct", "llama3"),
          ("mistralai-Mistral-Nemo-Instruct-2407", "mistral"),
          ("meetkai-functionary-medium-v3.1", "functionary_v3_1"),
          ("fireworks-ai-llama-3-firefunction-v2", "firefunction")]


@pytest.mark.parametrize("template, family", NATIVE, ids=[n[0] for n in NATIVE])
def test_native_template_renders_tools_and_calls_in_its_format(template: str,
                                                                family: str) -> None:
    tmpl = lc.ChatTemplate((TEMPLATES / f"{template}.jinja").read_text(), bos_token="<s>")
    assert tmpl.caps.tools and tmpl.caps.tool_calls
    user = [{"role": "user", "content": "Call it"}]
    before = tmpl.render(user, tools=[SPECIAL], add_generation_prompt=True)
    assert "special_function" in before  # the template describes the tool
    call = {"id": "123456789", "type": "function",
            "function": {"name": "special_function", "arguments": '{"arg1": 1}'}}
    after = tmpl.render(user + [{"role": "assistant", "content": "", "tool_calls": [call]}],
                        tools=[SPECIAL], add_generation_prompt=False)
    assert after.startswith(before)
    reply = after[len(before):]
    for end in ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "</s>"):
        reply = reply.split(end)[0]
    content, calls = parse_tool_calls(reply, family)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("special_function", ARG1)]


# -- tool_choice and grammars ------------------------------------------------------------------


def test_tool_choice_is_checked() -> None:
    tools = check_tools([SPECIAL])
    assert check_tool_choice(None, tools) == "auto"
    assert check_tool_choice(None, []) == "none"
    assert check_tool_choice({"type": "function", "function": {"name": "special_function"}},
                             tools) == "name:special_function"
    with pytest.raises(ValueError, match="not among the tools"):
        check_tool_choice({"type": "function", "function": {"name": "other"}}, tools)
    with pytest.raises(ValueError, match="tool_choice must be"):
        check_tool_choice("always", tools)
    with pytest.raises(ValueError, match="needs tools"):
        check_tool_choice("required", [])
    with pytest.raises(ValueError, match=r"tools\[0\]\.function\.name"):
        check_tools([{"type": "function", "function": {"name": "bad name!"}}])
    with pytest.raises(ValueError, match="a second tool"):
        check_tools([SPECIAL, SPECIAL])
    with pytest.raises(TypeError, match="tools must be a list"):
        check_tools(SPECIAL)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", ["hermes", "llama3", "mistral", "generic"])
def test_forced_grammars_parse_and_accept_a_call(family: str, smollm2_path: Path) -> None:
    tools = check_tools([SPECIAL])
    gbnf, parse_family = tool_grammar(tools, "required", family)
    grammar = lc.Grammar(gbnf)  # valid GBNF
    text = {"hermes": '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}'
                      '\n</tool_call>',
            "llama3": '{"name": "special_function", "parameters": {"arg1": 1}}'}.get(
        parse_family, '{"tool_call": {"name": "special_function", "arguments": {"arg1": 1}}}')
    _, calls = parse_tool_calls(text, parse_family)
    assert [c.name for c in calls] == ["special_function"]
    with lc.Model(smollm2_path, vocab_only=True) as model, \
            lc.SamplerChain([grammar.sampler(model)]) as chain:
        for t in model.vocab.tokenize(text, add_special=False):
            chain.accept(t)  # raises GrammarError if the grammar refused it
        with pytest.raises(lc.GrammarError):
            chain.accept(model.vocab.tokenize(" {", add_special=False)[-1])


# -- SmolLM2 (a template that knows nothing of tools): forced calls round-trip ----------------

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 30},
        "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}
SCHEMAS = {"get_weather": WEATHER["function"]["parameters"], "add": ADD["function"]["parameters"]}


@pytest.fixture(scope="module")
def llm(smollm2_path: Path) -> Any:
    with lc.LLM(smollm2_path, n_ctx=2048) as llm:
        yield llm


@pytest.mark.slow
@pytest.mark.parametrize("choice, name", [
    ("required", None), ({"type": "function", "function": {"name": "add"}}, "add")])
def test_forced_tool_call_round_trip(llm: lc.LLM, choice: Any, name: str | None) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is 2 plus 3?"}]
    c = llm.chat(messages, tools=[WEATHER, ADD], tool_choice=choice, max_tokens=60,
                 temperature=0)
    assert c.finish_reason == "grammar"
    assert c.content is None and c.tool_calls is not None and len(c.tool_calls) == 1
    call = c.tool_calls[0]
    assert name is None or call.name == name
    jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    # the call and its result go back in, and the next turn renders and runs
    messages += [{"role": "assistant", "content": None, "tool_calls": [tool_call_dict(call)]},
                 {"role": "tool", "tool_call_id": call.id, "content": "5"}]
    prompt = llm.apply_chat_template(messages, tools=[WEATHER, ADD])
    assert call.id in prompt and '"content": "5"' in prompt
    again = llm.chat(messages, tools=[WEATHER, ADD], tool_choice="none", max_tokens=8,
                     temperature=0)
    assert again.tool_calls is None and again.content == again.text


@pytest.mark.slow
def test_auto_on_a_template_without_tools_gives_a_call_or_a_response(llm: lc.LLM) -> None:
    c = llm.chat([{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER],
                 max_tokens=60, temperature=0)
    value = json.loads(c.text)  # generic JSON, enforced
    assert set(value) in ({"tool_call"}, {"response"})
    assert (c.tool_calls is not None) == ("tool_call" in value)


@pytest.mark.slow
def test_stream_and_async_chat_parse_calls(llm: lc.LLM) -> None:
    kw: dict[str, Any] = dict(tools=[ADD], tool_choice="required", max_tokens=40,
                              temperature=0)
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Add 1 and 2"}]}]
    stream = llm.chat_stream(msgs, **kw)
    text = "".join(stream)
    done = stream.completion
    assert done is not None and done.text == text and done.tool_calls
    c = asyncio.run(llm.achat(msgs, **kw))
    assert c.tool_calls and c.tool_calls[0].name == "add"
    assert [t.arguments for t in c.tool_calls] == [t.arguments for t in done.tool_calls]


def test_tools_and_a_grammar_cannot_both_constrain(llm: lc.LLM) -> None:
    # (a json_schema can: see test_tools_with_schema.py)
    with pytest.raises(ValueError, match="not both"):
        llm.chat([{"role": "user", "content": "x"}], tools=[ADD], tool_choice="required",
                 grammar='root ::= "{}"', max_tokens=1)


@pytest.mark.parametrize("template, choice, family, grammar, described_by_us", [
    ("Qwen-Qwen2.5-7B-Instruct", "auto", "hermes", False, False),
    ("Qwen-Qwen2.5-7B-Instruct", "required", "hermes", True, False),
    ("meta-llama-Llama-3.1-8B-Instruct", "required", "llama3", True, False),
    ("mistralai-Mistral-Nemo-Instruct-2407", "auto", "mistral", False, False),
    ("mistralai-Mistral-Nemo-Instruct-2407", "required", "generic", True, True),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "auto", "deepseek", False, True),
    ("deepseek-ai-DeepSeek-V3.2", "auto", "generic", False, False),  # its own DSML format
    ("google-gemma-2-2b-it", "auto", "generic", True, True),
    ("google-gemma-2-2b-it", "none", None, False, False),
])
def test_prepare_chat_picks_prompt_grammar_and_parser(template: str, choice: str,
                                                       family: str | None, grammar: bool,
                                                       described_by_us: bool,
                                                       smollm2_path: Path) -> None:
    from llama_cffi.api.tool_choice import prepare_chat

    source = (TEMPLATES / f"{template}.jinja").read_text()
    with lc.Model(smollm2_path, vocab_only=True) as model:
        prep = prepare_chat(model, [{"role": "user", "content": "Call it"}], template=source,
                            tools=[SPECIAL], tool_choice=choice)
    assert prep.family == family
    assert (prep.grammar is not None) == grammar
    assert ("You can call the following tools" in prep.prompt) == described_by_us
    assert ("special_function" in prep.prompt) == (choice != "none")
