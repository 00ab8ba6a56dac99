"""A JSON schema together with tools through the server (issue 25, item 7),
with the clients that send it: openai's ``chat.completions.parse`` with
``pydantic_function_tool`` (no ``tool_choice``), the raw ``tool_choice:
"auto"`` + ``response_format`` json_schema that pydantic-ai sends, and
ollama's ``chat(format=..., tools=...)``. When no tool is called the content
follows the schema; ``"required"`` shows the tool branch. Also messages with
neither content nor tool calls (item 11): a 400 naming the message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import ollama
import openai
import pytest
from pydantic import BaseModel

from .server_util import Server, ours
from .test_tools_with_schema import PERSON, WEATHER

pytestmark = pytest.mark.slow

ABOUT_YOU: list[Any] = [{"role": "user", "content": "Who are you? Reply with your name and age."}]
RESPONSE_FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "person",
                                                              "schema": PERSON}}


class Person(BaseModel):
    name: str
    age: int


class GetWeather(BaseModel):
    """Current weather of a city."""

    city: str


@pytest.fixture(scope="module")
def server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("tools-schema")
    config = tmp / "models.toml"
    config.write_text(f'[models.smollm2]\nmodel = "{smollm2_path}"\n'
                      f'args = "-c 2048 -np 2 -t 2"\n', encoding="utf-8")
    with ours(["--config", str(config)], tmp / "server.log") as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    yield c
    c.close()


def test_openai_parse_with_a_pydantic_model_and_tools(client: openai.OpenAI) -> None:
    # the client sends no tool_choice; "strict" tools and a strict schema
    done = client.chat.completions.parse(
        model="smollm2", messages=ABOUT_YOU, response_format=Person,
        tools=[openai.pydantic_function_tool(GetWeather)], temperature=0, max_tokens=80)
    message = done.choices[0].message
    assert not message.tool_calls and done.choices[0].finish_reason == "stop"
    assert isinstance(message.parsed, Person)
    assert message.content is not None
    jsonschema.validate(json.loads(message.content), Person.model_json_schema())
    # forced, the tool branch: parsed arguments of the pydantic tool
    forced = client.chat.completions.parse(
        model="smollm2", messages=ABOUT_YOU, response_format=Person,
        tools=[openai.pydantic_function_tool(GetWeather)], tool_choice="required",
        temperature=0, max_tokens=80)
    calls = forced.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "GetWeather"
    assert isinstance(calls[0].function.parsed_arguments, GetWeather)
    assert forced.choices[0].finish_reason == "tool_calls"


def test_raw_auto_with_json_schema(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model="smollm2", messages=ABOUT_YOU, tools=[WEATHER], tool_choice="auto",
        response_format=RESPONSE_FORMAT, temperature=0, max_tokens=80)
    message = done.choices[0].message
    assert not message.tool_calls and message.content is not None
    jsonschema.validate(json.loads(message.content), PERSON)
    # streamed: the same content, in the deltas
    stream = client.chat.completions.create(
        model="smollm2", messages=ABOUT_YOU, tools=[WEATHER], tool_choice="auto",
        response_format=RESPONSE_FORMAT, temperature=0, max_tokens=80, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == message.content
    # required: a call that follows the tool's parameters
    forced = client.chat.completions.create(
        model="smollm2", messages=ABOUT_YOU, tools=[WEATHER], tool_choice="required",
        response_format=RESPONSE_FORMAT, temperature=0, max_tokens=80)
    calls = forced.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    jsonschema.validate(json.loads(calls[0].function.arguments),
                        WEATHER["function"]["parameters"])
    # none: the schema alone, the tools not shown
    none = client.chat.completions.create(
        model="smollm2", messages=ABOUT_YOU, tools=[WEATHER], tool_choice="none",
        response_format=RESPONSE_FORMAT, temperature=0, max_tokens=80)
    plain = client.chat.completions.create(
        model="smollm2", messages=ABOUT_YOU, response_format=RESPONSE_FORMAT, temperature=0,
        max_tokens=80)
    assert none.choices[0].message.content == plain.choices[0].message.content
    jsonschema.validate(json.loads(none.choices[0].message.content or ""), PERSON)


def test_ollama_chat_with_format_and_tools(server: Server) -> None:
    c = ollama.Client(host=server.url, timeout=120)
    options = {"temperature": 0, "num_predict": 80}
    r = c.chat(model="smollm2", messages=ABOUT_YOU, format=PERSON, tools=[WEATHER],
               options=options, stream=False)
    assert not r.message.tool_calls
    jsonschema.validate(json.loads(r.message.content or ""), PERSON)
    streamed = "".join(part.message.content or "" for part in c.chat(
        model="smollm2", messages=ABOUT_YOU, format=PERSON, tools=[WEATHER],
        options=options, stream=True))
    assert streamed == r.message.content
    # format "json" (any object) with tools also works
    r = c.chat(model="smollm2", messages=ABOUT_YOU, format="json", tools=[WEATHER],
               options=options, stream=False)
    assert r.message.tool_calls or isinstance(json.loads(r.message.content or ""), dict)


def test_a_grammar_beside_tools_is_a_400_naming_grammar(server: Server) -> None:
    r = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": "smollm2", "messages": ABOUT_YOU, "tools": [WEATHER],
        "tool_choice": "required", "grammar": 'root ::= "x"', "max_tokens": 4})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "grammar"


@pytest.mark.parametrize("messages, where", [
    ([{"role": "assistant"}], "messages[0]"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant"},
      {"role": "user", "content": "again"}], "messages[1]"),
])
def test_a_message_without_content_or_tool_calls_is_a_400(server: Server, messages: Any,
                                                          where: str) -> None:
    r = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": "smollm2", "messages": messages, "max_tokens": 4})
    assert r.status_code == 400, r.text
    assert where in r.json()["error"]["message"]
    # an assistant message with tool calls and no content is fine (as llama.cpp)
    ok = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": "smollm2", "max_tokens": 2, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]})
    assert ok.status_code == 200, ok.text


def test_pydantic_ai_native_output_with_tools(server: Server) -> None:
    # pydantic-ai sends tool_choice "auto" with response_format json_schema (strict)
    import pydantic_ai
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.usage import UsageLimits

    called: list[str] = []

    def get_weather(city: str) -> str:
        """Current weather of a city."""
        called.append(city)
        return "sunny"

    sent: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        sent.append(json.loads(request.content))

    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                                http_client=httpx.AsyncClient(
                                    event_hooks={"request": [record]}, timeout=120))
    model = OpenAIChatModel("smollm2", provider=OpenAIProvider(openai_client=client))
    agent = pydantic_ai.Agent(model, output_type=pydantic_ai.NativeOutput(Person),
                              tools=[get_weather])
    result = agent.run_sync(ABOUT_YOU[0]["content"], usage_limits=UsageLimits(request_limit=4),
                            model_settings={"temperature": 0, "max_tokens": 80})
    assert isinstance(result.output, Person) and called == []
    assert result.output.name and result.output.age >= 0
    # the shape that was a 400: tools, tool_choice "auto" and a json_schema response_format
    assert len(sent) == 1 and sent[0]["tools"][0]["function"]["name"] == "get_weather"
    assert sent[0].get("tool_choice", "auto") == "auto"
    assert sent[0]["response_format"]["type"] == "json_schema"
