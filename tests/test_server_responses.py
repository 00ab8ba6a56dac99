"""OpenAI's Responses API (``/v1/responses``) through the official ``openai``
client against SmolLM2: each greedy answer is compared with the chat
completions endpoint's answer to the same messages, so the conversion of
items, instructions, tool calls and previous responses into chat messages is
checked, not only the shape."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pydantic
import pytest

from .mmproj_synthetic import make_image, png_bytes, write_mmproj
from .server_util import Server, ours

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("responses-log") / "server.log"
    with ours([str(smollm2_path), "-c", "4096", "-np", "1", "-t", "2"], log) as s:
        yield s


@pytest.fixture(scope="module")
def model(server: Server) -> str:
    status, body = server.get("/v1/models")
    assert status == 200, body
    return str(body["data"][0]["id"])


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    yield c
    c.close()


def chat_text(client: openai.OpenAI, model: str, messages: list[dict[str, Any]],
              max_tokens: int, **kw: Any) -> tuple[str, Any]:
    """(greedy text, the completion) of the chat completions endpoint, asked
    twice: the answer compared is the one given with the whole prompt but its
    last token in the slot's cache, as the Responses request that follows it
    has (greedy text can depend on how much of a prompt was cached)."""
    for _ in range(2):
        r = client.chat.completions.create(model=model, messages=messages,  # type: ignore
                                           max_tokens=max_tokens, temperature=0, **kw)
    return r.choices[0].message.content or "", r


WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}
WEATHER_CHAT = {"type": "function", "function": {k: WEATHER[k] for k in
                                                 ("name", "description", "parameters")}}


def test_text_and_instructions_equal_chat(client: openai.OpenAI, model: str) -> None:
    question = "What is the capital of France?"
    text, chat = chat_text(client, model, [{"role": "user", "content": question}], 24)
    r = client.responses.create(model=model, input=question, max_output_tokens=24,
                                temperature=0)
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.output_text == text and text
    assert [item.type for item in r.output] == ["message"]
    assert r.output[0].role == "assistant"  # type: ignore[union-attr]
    length = chat.choices[0].finish_reason == "length"
    assert r.status == ("incomplete" if length else "completed")
    assert r.usage is not None and chat.usage is not None
    assert r.usage.input_tokens == chat.usage.prompt_tokens
    assert r.usage.output_tokens == chat.usage.completion_tokens
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.cached_tokens >= 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert r.temperature == 0 and r.model == model

    text, _ = chat_text(client, model, [{"role": "system", "content": "Answer in French."},
                                        {"role": "user", "content": question}], 24)
    r = client.responses.create(model=model, instructions="Answer in French.", input=question,
                                max_output_tokens=24, temperature=0)
    assert r.output_text == text and r.instructions == "Answer in French."
    # the same through the path without /v1
    http = openai.OpenAI(base_url=client.base_url.__str__().removesuffix("/v1/"),
                         api_key="x", max_retries=0)
    try:
        again = http.responses.create(model=model, instructions="Answer in French.",
                                      input=question, max_output_tokens=24, temperature=0)
    finally:
        http.close()
    assert again.output_text == text


def test_output_logprobs(client: openai.OpenAI, model: str) -> None:
    r = client.responses.create(model=model, input="Say hello.", max_output_tokens=8,
                                temperature=0, top_logprobs=2,
                                include=["message.output_text.logprobs"])
    part = r.output[0].content[0]  # type: ignore[union-attr]
    assert part.logprobs is not None and r.usage is not None
    assert len(part.logprobs) == r.usage.output_tokens
    assert "".join(lp.token for lp in part.logprobs) == part.text  # type: ignore[union-attr]
    for lp in part.logprobs:
        assert len(lp.top_logprobs) == 2 and lp.logprob <= 0
        assert lp.logprob == pytest.approx(lp.top_logprobs[0].logprob, abs=1e-4)

def test_message_items_equal_chat(client: openai.OpenAI, model: str) -> None:
    items: list[Any] = [
        {"role": "developer", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "input_text", "text": "My name is Ada."}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Nice to meet you, Ada.",
                      "annotations": []}]},
        {"role": "user", "content": "What is my name?"},
    ]
    text, _ = chat_text(client, model, [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"}], 20)
    r = client.responses.create(model=model, input=items, max_output_tokens=20, temperature=0)
    assert r.output_text == text and text


def test_previous_response_id(client: openai.OpenAI, model: str, server: Server) -> None:
    first = client.responses.create(model=model, input="My name is Ada.", max_output_tokens=16,
                                    temperature=0, instructions="Be brief.")
    # instructions are not carried over to a follow-up (OpenAI's rule)
    text, _ = chat_text(client, model, [{"role": "user", "content": "My name is Ada."},
                                        {"role": "assistant", "content": first.output_text},
                                        {"role": "user", "content": "What is my name?"}], 16)
    second = client.responses.create(model=model, previous_response_id=first.id,
                                     input="What is my name?", max_output_tokens=16,
                                     temperature=0)
    assert second.previous_response_id == first.id
    assert second.output_text == text
    kept = client.responses.retrieve(second.id)
    assert kept.id == second.id and kept.output_text == second.output_text
    status, body = server.get("/responses/" + second.id)  # the path without /v1 too
    assert status == 200 and body["id"] == second.id

    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=model, previous_response_id="resp_unknown", input="Hi",
                                max_output_tokens=4)
    assert err.value.status_code == 400
    assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert "previous_response_id" in err.value.body["message"]  # type: ignore[index]

    unkept = client.responses.create(model=model, input="Hi", max_output_tokens=4, store=False)
    assert unkept.output_text is not None and unkept.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=model, previous_response_id=unkept.id, input="And?",
                                max_output_tokens=4)
    assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_function_call_and_output(client: openai.OpenAI, model: str) -> None:
    question = {"role": "user", "content": "What is the weather in Paris? Use the tool."}
    r = client.responses.create(model=model, input=[question], tools=[WEATHER],  # type: ignore
                                tool_choice="required", max_output_tokens=60, temperature=0)
    calls = [item for item in r.output if item.type == "function_call"]
    assert calls, r.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id and call.id.startswith("fc_")  # type: ignore
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])  # type: ignore
    assert r.status == "completed" and r.tools[0].name == "get_weather"  # type: ignore

    output = json.dumps({"temperature_c": 21, "sky": "clear"})
    follow = [question, *[item.model_dump(exclude_none=True) for item in r.output],
              {"type": "function_call_output", "call_id": call.call_id, "output": output}]
    chat_call = {"id": call.call_id, "type": "function",
                 "function": {"name": "get_weather", "arguments": call.arguments}}
    text, chat = chat_text(client, model, [
        question, {"role": "assistant", "content": None, "tool_calls": [chat_call]},
        {"role": "tool", "tool_call_id": call.call_id, "content": output}], 30,
        tools=[WEATHER_CHAT])
    r2 = client.responses.create(model=model, input=follow, tools=[WEATHER],  # type: ignore
                                 max_output_tokens=30, temperature=0)
    if chat.choices[0].message.tool_calls:
        assert [i.type for i in r2.output][-1] == "function_call"
    else:
        assert r2.output_text == text
    # the same continuation through previous_response_id
    r3 = client.responses.create(model=model, previous_response_id=r.id, tools=[WEATHER],  # type: ignore
                                 input=[{"type": "function_call_output",
                                         "call_id": call.call_id, "output": output}],
                                 max_output_tokens=30, temperature=0)
    assert r3.output_text == r2.output_text
    named = client.responses.create(model=model, input=[question], tools=[WEATHER],  # type: ignore
                                    tool_choice={"type": "function", "name": "get_weather"},
                                    max_output_tokens=60, temperature=0)
    assert [i.name for i in named.output if i.type == "function_call"] == ["get_weather"]


CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                         "population": {"type": "integer"}},
        "required": ["city", "population"], "additionalProperties": False}


class City(pydantic.BaseModel):
    city: str = pydantic.Field(max_length=20)
    population: int


def test_text_format(client: openai.OpenAI, model: str) -> None:
    r = client.responses.create(
        model=model, input="Give the largest city of Japan as JSON.", max_output_tokens=60,
        temperature=0, text={"format": {"type": "json_schema", "name": "city", "schema": CITY,
                                        "strict": True}})
    jsonschema.validate(json.loads(r.output_text), CITY)
    assert r.text.format.type == "json_schema"  # type: ignore[union-attr]
    parsed = client.responses.parse(model=model, input="Give the largest city of Japan.",
                                    max_output_tokens=60, temperature=0, text_format=City)
    assert parsed.status == "completed" and isinstance(parsed.output_parsed, City)
    # a schema beside tools (chat's one grammar): a call, or text that follows the schema
    both = client.responses.create(
        model=model, input="Give the largest city of Japan as JSON.", max_output_tokens=60,
        temperature=0, tools=[WEATHER],  # type: ignore[list-item]
        text={"format": {"type": "json_schema", "name": "city", "schema": CITY}})
    if not any(item.type == "function_call" for item in both.output):
        jsonschema.validate(json.loads(both.output_text), CITY)
    r = client.responses.create(model=model, input="Describe Paris as JSON.",
                                max_output_tokens=40, temperature=0,
                                text={"format": {"type": "json_object"}})
    assert r.status == "incomplete" or isinstance(json.loads(r.output_text), dict)


def _events(client: openai.OpenAI, **kw: Any) -> list[Any]:
    return list(client.responses.create(stream=True, **kw))


def test_stream_events(client: openai.OpenAI, model: str) -> None:
    kw: dict[str, Any] = dict(model=model, input="Write one sentence about the sea.",
                              max_output_tokens=40, temperature=0)
    client.responses.create(**kw)  # the same cache state for the two compared below
    full = client.responses.create(**kw)
    events = _events(client, **kw)
    kinds = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = "response.completed" if full.status == "completed" else "response.incomplete"
    deltas = kinds.count("response.output_text.delta")
    assert deltas > 1  # streamed as generated, not in one piece
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * deltas,
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", final]
    assert events[0].response.status == "in_progress"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == full.output_text
    assert events[-4].text == text  # output_text.done
    last = events[-1].response
    assert last.output_text == text and last.usage.output_tokens == full.usage.output_tokens  # type: ignore
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {last.output[0].id}
    # the client's stream helper accumulates the same response
    kw["max_output_tokens"] = 200
    with client.responses.stream(**kw) as stream:
        helper = stream.get_final_response()
    assert helper.status == "completed" and helper.output_text.startswith(text)


def test_stream_function_call(client: openai.OpenAI, model: str) -> None:
    events = _events(client, model=model, tools=[WEATHER], tool_choice="required",
                     input="What is the weather in Paris?", max_output_tokens=60, temperature=0)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done and done[0].name == "get_weather"  # type: ignore[attr-defined]
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert args == done[0].arguments
    jsonschema.validate(json.loads(args), WEATHER["parameters"])  # type: ignore[arg-type]
    call = [i for i in events[-1].response.output if i.type == "function_call"][0]
    assert call.arguments == args


def test_incomplete_by_length(client: openai.OpenAI, model: str) -> None:
    r = client.responses.create(model=model, input="Count from one to twenty in words.",
                                max_output_tokens=3, temperature=0)
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 3
    events = _events(client, model=model, input="Count from one to twenty in words.",
                     max_output_tokens=3, temperature=0)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.output_text == r.output_text


def test_refusals_name_the_field(server: Server, model: str) -> None:
    def refused(body: dict[str, Any], param: str, word: str | None = None) -> None:
        status, answer = server.post("/v1/responses", {"model": model, **body})
        assert status == 400, (body, answer)
        error = answer["error"]
        assert error["param"] == param, (body, error)
        assert (word or param.split(".")[0].split("[")[0]) in error["message"], (body, error)

    refused({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools", "web_search")
    refused({"input": "Hi", "tools": [{"type": "web_search_preview"}]}, "tools",
            "web_search_preview")
    refused({"input": "Hi", "tools": [{"type": "file_search", "vector_store_ids": ["v"]}]},
            "tools", "file_search")
    refused({"input": "Hi", "tools": [{"type": "code_interpreter"}]}, "tools",
            "code_interpreter")
    refused({"input": "Hi", "previous_response_id": "resp_nope"}, "previous_response_id")
    refused({"input": 5}, "input")
    refused({"input": [{"role": "user", "content": 5}]}, "input[0].content")
    refused({"input": [{"role": "robot", "content": "Hi"}]}, "input[0].role")
    refused({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type",
            "computer_call_output")
    refused({"input": "Hi", "temperature": "hot"}, "temperature")
    refused({"input": "Hi", "top_p": 3}, "top_p")
    refused({"input": "Hi", "max_output_tokens": 0}, "max_output_tokens")
    refused({"input": "Hi", "stream": "sometimes"}, "stream")
    refused({"input": "Hi", "tools": [{"type": "function"}]}, "tools[0].name")
    refused({"input": "Hi", "tools": [WEATHER], "tool_choice": {"type": "function",
                                                               "name": "other"}},
            "tool_choice", "other")
    refused({"input": "Hi", "text": {"format": {"type": "json_schema", "name": "x"}}},
            "text.format.schema")
    refused({"input": "Hi", "tools": [dict(WEATHER, name="get_weather\n")]}, "tools[0].name")
    refused({"input": "Hi", "tools": [WEATHER], "tool_choice": {"type": "function",
                                                               "function": "get_weather"}},
            "tool_choice.name")
    refused({"input": "Hi", "tool_choice": {"type": "web_search_preview"}}, "tool_choice",
            "web_search_preview")
    refused({"input": "Hi", "include": ["everything"]}, "include", "everything")
    refused({"input": "Hi", "background": True}, "background")
    refused({"input": "Hi", "frobnicate": 1}, "frobnicate")
    refused({}, "input")
    refused({"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]}, "input",
        "projector")
    status, body = server.get("/v1/responses/resp_nope")
    assert status == 404 and "resp_nope" in body["error"]["message"]
    assert server.get("/health")[0] == 200


def test_input_image_equals_chat(smollm2_path: Path, tmp_path: Path) -> None:
    write_mmproj(tmp_path / "mmproj.gguf", 576)
    url = "data:image/png;base64," + base64.b64encode(png_bytes(make_image(0))).decode()
    args = [str(smollm2_path), "--mmproj", str(tmp_path / "mmproj.gguf"), "-c", "1024", "-np",
            "1", "-t", "2"]
    with ours(args, tmp_path / "ours.log") as s:
        chat = {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": "What is in this picture?"}]}],
            "max_tokens": 16, "temperature": 0}
        status, theirs = s.post("/v1/chat/completions", chat)
        assert status == 200, theirs
        status, mine = s.post("/v1/responses", {"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": url, "detail": "auto"},
            {"type": "input_text", "text": "What is in this picture?"}]}],
            "max_output_tokens": 16, "temperature": 0})
        assert status == 200, mine
        assert mine["output"][0]["content"][0]["text"] == theirs["choices"][0]["message"]["content"]
        assert mine["usage"]["input_tokens"] == theirs["usage"]["prompt_tokens"]


def test_openai_agents_sdk(server: Server, client: openai.OpenAI, model: str) -> None:
    """An Agent of the openai-agents SDK (Responses API by default) runs a
    function tool, and answers in text, streamed, as the endpoint does."""
    import agents  # the test extra has it
    ran: list[str] = []

    def get_weather(city: str) -> str:
        """Current weather in a city."""
        ran.append(city)
        return json.dumps({"city": city, "temperature_c": 21, "sky": "clear"})

    async def run() -> tuple[Any, Any]:
        sdk_client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        agents.set_default_openai_client(sdk_client, use_for_tracing=False)
        agents.set_tracing_disabled(True)
        try:
            tool_agent = agents.Agent(
                name="weather", instructions="Answer weather questions with the tool.",
                model=model, tools=[agents.function_tool(get_weather)],
                tool_use_behavior="stop_on_first_tool",
                model_settings=agents.ModelSettings(tool_choice="required", temperature=0,
                                                    max_tokens=60))
            used = await agents.Runner.run(tool_agent, "What is the weather in Paris?",
                                           max_turns=2)
            talker = agents.Agent(name="talker", instructions="Answer in one sentence.",
                                  model=model, model_settings=agents.ModelSettings(
                                      temperature=0, max_tokens=24))
            streamed = agents.Runner.run_streamed(talker, "What is the capital of France?")
            async for _ in streamed.stream_events():
                pass
            return used, streamed
        finally:
            await sdk_client.close()

    for _ in range(2):  # the second with the same prompt cached as the agent's run below
        direct = client.responses.create(model=model, instructions="Answer in one sentence.",
                                         input="What is the capital of France?",
                                         max_output_tokens=24, temperature=0)
    used, streamed = asyncio.run(run())
    assert len(ran) == 1 and ran[0]  # the model's call reached the function
    assert used.final_output == get_weather(ran[0])
    assert streamed.final_output == direct.output_text
