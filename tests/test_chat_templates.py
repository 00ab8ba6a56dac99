"""Chat templates of real models (vendor/llama.cpp/models/templates), the
expected renderings stated in llama.cpp's own tests, system-message merging,
template names and aliases, and the sandbox around template text."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import llama_cffi as lc
from llama_cffi.api.chat_template import (TEMPLATE_ALIASES, ChatTemplate, TemplateError,
                                          builtin_templates, render_builtin, resolve_name)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "vendor" / "llama.cpp" / "models" / "templates"
TEMPLATE_FILES = sorted(TEMPLATES.glob("*.jinja"))

TOOL = {"type": "function", "function": {
    "name": "special_function", "description": "I'm special",
    "parameters": {"type": "object", "properties": {"arg1": {"type": "integer",
                                                             "description": "The arg."}},
                   "required": ["arg1"]}}}
# The conversation shapes of llama.cpp's tests (tests/test-chat.cpp, test-chat-template.cpp)
SHAPES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]] | None]] = {
    "user": ([{"role": "user", "content": "Hey there!"}], None),
    "user-parts": ([{"role": "user", "content": [{"type": "text", "text": "Hey"},
                                                 {"type": "text", "text": "there"}]}], None),
    "system-user": ([{"role": "system", "content": "You are a helpful assistant"},
                     {"role": "user", "content": "Hey there!"}], None),
    "multi-turn": ([{"role": "user", "content": "Hello, how are you?"},
                    {"role": "assistant", "content": "I am fine, thank you!"},
                    {"role": "user", "content": "Who are you"}], None),
    "tool-call-and-result": ([
        {"role": "user", "content": "Hey there!"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call00001", "type": "function",
            "function": {"name": "special_function", "arguments": '{"arg1": 1}'}}]},
        {"role": "tool", "tool_call_id": "call00001", "content": "Tool response"},
        {"role": "assistant", "content": "The result was 'Tool response'"},
        {"role": "user", "content": "Thanks"}], [TOOL]),
}


def test_all_template_files_are_found() -> None:
    assert len(TEMPLATE_FILES) >= 70


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=[p.stem for p in TEMPLATE_FILES])
def test_every_template_renders_every_shape(path: Path) -> None:
    tmpl = ChatTemplate(path.read_text(), bos_token="<s>", eos_token="</s>")
    for name, (messages, tools) in SHAPES.items():
        text = tmpl.render(messages, tools=tools)
        # nothing the user wrote is lost, whatever the template supports
        assert "Hey" in text or "Hello" in text, (name, text)
        if name == "system-user":
            assert "You are a helpful assistant" in text, text
        if name == "tool-call-and-result":
            assert "special_function" in text and "Tool response" in text, text
            assert "Thanks" in text


# -- llama.cpp's stated renderings (tests/test-chat-template.cpp) --------------------------

_ESC = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "'": "'", "r": "\r"}
_LITERALS = re.compile(r'\s*(?:U8C\()?\s*(?:u8)?"((?:\\.|[^"\\])*)"\)?')


def _c_string(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESC.get(m.group(1), "\\" + m.group(1)), body)


def _field(block: str, label: str) -> str | None:
    i = block.find(f"/* .{label}= */")
    if i < 0:
        i = block.find(f"/* .{label} */")
    if i < 0:
        return None
    pos, out = block.index("*/", i) + 2, []
    while (m := _LITERALS.match(block, pos)) is not None:
        out.append(_c_string(m.group(1)))
        pos = m.end()
    return "".join(out) if out else None


def llama_cpp_template_cases() -> list[tuple[str, str, str, str, str, list[tuple[str, str]]]]:
    """(name, template, expected jinja output, bos, eos, extra turns) of every case
    llama.cpp's test-chat-template.cpp checks with its Jinja engine."""
    path = ROOT / "vendor" / "llama.cpp" / "tests" / "test-chat-template.cpp"
    src = path.read_text()
    body = src[src.index("std::vector<TestCase> test_cases {"):
               src.index("std::vector<char> formatted_chat(")]
    cases = []
    for block in re.split(r"\n        \{\n", body)[1:]:
        name, tmpl = _field(block, "name"), _field(block, "template_str")
        if name is None or tmpl is None or "/* .supported_with_jinja= */ false" in block:
            continue
        expected = _field(block, "expected_output_jinja") or _field(block, "expected_output")
        assert expected is not None, name
        extra = []
        if "extra_conversation= */" in block:
            tail = block[block.index("extra_conversation= */"):]
            extra = [(_c_string(r), _c_string(c)) for r, c in re.findall(
                r'\{"((?:\\.|[^"\\])*)",\s*"((?:\\.|[^"\\])*)"\}', tail)]
        cases.append((name, tmpl, expected, _field(block, "bos_token") or "",
                      _field(block, "eos_token") or "", extra))
    return cases


CONVERSATION = [("system", "You are a helpful assistant"), ("user", "Hello"),
                ("assistant", "Hi there"), ("user", "Who are you"),
                ("assistant", "   I am an assistant   "), ("user", "Another question")]
LLAMA_CPP_CASES = llama_cpp_template_cases()


def test_llama_cpp_cases_were_read() -> None:
    assert len(LLAMA_CPP_CASES) >= 30
    assert any(extra for *_, extra in LLAMA_CPP_CASES)


@pytest.mark.parametrize("name, source, expected, bos, eos, extra", LLAMA_CPP_CASES,
                         ids=[c[0] for c in LLAMA_CPP_CASES])
def test_rendering_equals_llama_cpp_expectation(name: str, source: str, expected: str,
                                                bos: str, eos: str,
                                                extra: list[tuple[str, str]]) -> None:
    messages = [{"role": r, "content": c} for r, c in CONVERSATION + extra]
    assert ChatTemplate(source, bos_token=bos, eos_token=eos).render(messages) == expected


# -- system messages, tools, content parts ---------------------------------------------------


def gemma2() -> ChatTemplate:
    return ChatTemplate((TEMPLATES / "google-gemma-2-2b-it.jinja").read_text(), bos_token="<bos>")


def test_system_refused_by_template_is_merged_into_first_user_message() -> None:
    text = gemma2().render([{"role": "system", "content": "Be terse."},
                            {"role": "user", "content": "Hi"}])
    assert text == "<bos><start_of_turn>user\nBe terse.\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert not gemma2().caps.system_role


def test_lone_system_message_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="llama_cffi"):
        text = gemma2().render([{"role": "system", "content": "Be terse."}])
    assert "Be terse" not in text and "system" in caplog.text


def test_tools_are_undefined_unless_given() -> None:
    tmpl = ChatTemplate("{% if tools is defined %}T={{ tools | length }}{% else %}none{% endif %}")
    assert tmpl.render([{"role": "user", "content": "x"}]) == "none"
    assert tmpl.render([{"role": "user", "content": "x"}], tools=[TOOL]) == "T=1"


def test_tojson_takes_pythons_arguments() -> None:
    tmpl = ChatTemplate("{{ {'b': 1, 'a': 'é'} | tojson(ensure_ascii=True, sort_keys=True, "
                        "separators=(',', ':')) }}|{{ [1] | tojson(indent=2) }}")
    assert tmpl.render([]) == '{"a":"\\u00e9","b":1}|[\n  1\n]'


def test_break_continue_and_generation_blocks() -> None:
    tmpl = ChatTemplate("{% for m in messages %}{% if m.role == 'system' %}{% continue %}"
                        "{% endif %}{% generation %}{{ m.content }}{% endgeneration %}"
                        "{% if loop.index > 1 %}{% break %}{% endif %}{% endfor %}")
    msgs = [{"role": r, "content": c} for r, c in
            [("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c")]]
    # the template skips system messages, so the system text is merged into the user's
    assert not tmpl.caps.system_role
    assert tmpl.render(msgs) == "S\nab"


def test_content_parts_and_tool_call_arguments_as_templates_expect() -> None:
    path = TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja"
    qwen = ChatTemplate(path.read_text())
    parts = qwen.render([{"role": "user", "content": [{"type": "text", "text": "Hey"},
                                                      {"type": "text", "text": "there"}]}])
    assert "<|im_start|>user\nHey\nthere<|im_end|>" in parts
    messages, tools = SHAPES["tool-call-and-result"]
    text = qwen.render(messages, tools=tools)  # arguments given as a JSON string
    assert '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>' \
        in text
    assert "<tool_response>\nTool response\n</tool_response>" in text
    # Functionary v3.2 concatenates arguments as text: they stay a JSON string there
    fv = ChatTemplate((TEMPLATES / "meetkai-functionary-medium-v3.2.jinja").read_text())
    assert not fv.caps.object_arguments
    assert '>>>special_function\n{"arg1": 1}' in fv.render(messages, tools=tools)


def test_template_without_tool_support_shows_calls_as_generic_json() -> None:
    messages, tools = SHAPES["tool-call-and-result"]
    text = gemma2().render(messages, tools=tools)
    assert '{"tool_call": {"name": "special_function", "arguments": {"arg1": 1}, ' \
           '"id": "call00001"}}' in text
    assert '"tool_response": {"tool": "special_function", "tool_call_id": "call00001", ' \
           '"content": "Tool response"}' in text


# -- names -----------------------------------------------------------------------------------


def test_unknown_template_name_raises_with_the_known_names() -> None:
    with pytest.raises(TemplateError, match="unknown chat template name 'llama-9'") as info:
        resolve_name("llama-9")
    assert "chatml" in str(info.value) and "mistral-instruct" in str(info.value)


@pytest.mark.parametrize("alias", sorted(TEMPLATE_ALIASES))
def test_llama_cpp_python_names_are_aliases(alias: str) -> None:
    target = TEMPLATE_ALIASES[alias]
    assert target in builtin_templates()
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert render_builtin(resolve_name(alias), msgs) == render_builtin(target, msgs)


def test_llama2_alias_renders_llama2_layout() -> None:
    text = render_builtin(resolve_name("llama-2"), [{"role": "system", "content": "S"},
                                                    {"role": "user", "content": "U"}])
    assert "[INST]" in text and "<<SYS>>" in text and "U" in text


def test_template_names_on_an_llm(smollm2_path: Path) -> None:
    msgs = [{"role": "user", "content": "Hello"}]
    with lc.LLM(smollm2_path, n_ctx=256) as llm:
        with pytest.raises(lc.TemplateError, match="unknown chat template name 'llama-9'"):
            llm.chat(msgs, template="llama-9", max_tokens=1)
        assert llm.apply_chat_template(msgs, template="llama-2") == \
            render_builtin("llama2-sys", msgs)
        assert llm.apply_chat_template(msgs, template="chatml-function-calling") == \
            render_builtin("chatml", msgs)


# -- the sandbox -----------------------------------------------------------------------------


def test_template_may_build_its_own_lists_but_not_change_the_messages() -> None:
    own = ChatTemplate("{% set seen = [] %}{% for m in messages %}{% set _ = seen.append("
                       "m.role) %}{% endfor %}{{ seen | join(',') }}")
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert own.render(msgs) == "user,assistant"
    for evil in ("{{ messages.append({'role': 'x'}) }}", "{{ messages[0].update({'a': 1}) }}",
                 "{{ messages[0].pop('role') }}"):
        with pytest.raises(TemplateError, match="unsafe"):
            ChatTemplate(evil).render(msgs)
    assert msgs == [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


def test_bad_messages_raise_naming_the_message() -> None:
    tmpl = ChatTemplate("{{ messages | length }}")
    with pytest.raises(TemplateError, match=r"messages\[1\] has no 'role'"):
        tmpl.render([{"role": "user", "content": "a"}, {"content": "b"}])
    with pytest.raises(TemplateError, match=r"messages\[0\]\.content\[0\]: only 'text'"):
        tmpl.render([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
    with pytest.raises(TemplateError, match="arguments is not valid JSON"):
        tmpl.render([{"role": "assistant", "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": "{oops"}}]}])
    assert json.loads(json.dumps(SHAPES))  # the shapes above are plain JSON


# -- against llama.cpp itself: llama-server's /apply-template (--jinja) from the same build ----

REFERENCE = ["Qwen-Qwen2.5-7B-Instruct", "Qwen-Qwen3-0.6B", "Qwen3-Coder",
             "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", "meta-llama-Llama-3.1-8B-Instruct",
             "mistralai-Mistral-Nemo-Instruct-2407", "Mistral-Small-3.2-24B-Instruct-2506",
             "meetkai-functionary-medium-v3.1", "meetkai-functionary-medium-v3.2",
             "CohereForAI-c4ai-command-r7b-12-2024-tool_use", "ibm-granite-granite-4.0",
             "deepseek-ai-DeepSeek-V3.2", "openai-gpt-oss-120b", "moonshotai-Kimi-K2",
             "google-gemma-2-2b-it", "Apertus-8B-Instruct"]


def _post(port: int, path: str, body: dict[str, Any]) -> Any:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.tools
@pytest.mark.slow
@pytest.mark.parametrize("name", REFERENCE)
def test_rendering_equals_llama_server(name: str, smollm2_path: Path, tools_dir: Path) -> None:
    import socket
    import subprocess
    import time
    import urllib.request

    path = TEMPLATES / f"{name}.jinja"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen([str(tools_dir / "llama-server"), "-m", str(smollm2_path),
                             "--host", "127.0.0.1", "--port", str(port), "-c", "512", "-np", "1",
                             "--jinja", "--chat-template-file", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "no llama-server"
                time.sleep(0.1)
        with lc.LLM(smollm2_path, n_ctx=256) as llm:
            tmpl = ChatTemplate(path.read_text())
            for shape, (messages, tools) in SHAPES.items():
                if tools and not (tmpl.caps.tools and tmpl.caps.tool_calls):
                    continue  # llama.cpp drops calls such templates cannot show; we keep them
                body: dict[str, Any] = {"messages": messages}
                if tools:
                    body["tools"] = tools
                theirs = _post(port, "/apply-template", body)["prompt"]
                ours = llm.apply_chat_template(messages, template=path.read_text(), tools=tools)
                assert ours == theirs, shape
    finally:
        proc.terminate()
        proc.wait(timeout=30)
