"""The server under the client libraries applications use, beyond the
official openai and ollama clients: LangChain's OpenAI (chat completions and
the Responses API) and Ollama chat models, with structured output and tools.
Greedy texts are compared with the plain openai client's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from .server_util import Server, ours

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"


class City(BaseModel):
    name: str
    country: str


@pytest.fixture(scope="module")
def server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("clients") / "server.log"
    with ours(["-m", str(smollm2_path), "-a", "smol", "-c", "4096", "-np", "2", "-t", "2"],
              log) as s:
        yield s


@pytest.fixture(scope="module")
def expected(server: Server) -> str:
    """The greedy answer of the plain openai client."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                           timeout=120)
    reply = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": QUESTION}], max_tokens=16,
        temperature=0)
    client.close()
    text = reply.choices[0].message.content
    assert text
    return text


def test_langchain_openai_chat_and_responses(server: Server, expected: str) -> None:
    from langchain_openai import ChatOpenAI

    for responses in (False, True):
        llm = ChatOpenAI(model="smol", base_url=server.url + "/v1", api_key="x",
                         temperature=0, max_tokens=16, max_retries=0,
                         use_responses_api=responses)
        assert llm.invoke(QUESTION).text == expected, responses
        streamed = "".join(chunk.text for chunk in llm.stream(QUESTION))
        assert streamed == expected, responses


def test_langchain_openai_structured_output_and_tools(server: Server) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    for responses in (False, True):
        llm = ChatOpenAI(model="smol", base_url=server.url + "/v1", api_key="x",
                         temperature=0, max_tokens=48, max_retries=0,
                         use_responses_api=responses)
        city = llm.with_structured_output(City, method="json_schema").invoke(
            "Name a city in Italy.")
        assert isinstance(city, City) and city.name, responses
        called = llm.bind_tools([get_weather], tool_choice="required").invoke(
            "What is the weather in Paris?")
        assert called.tool_calls and called.tool_calls[0]["name"] == "get_weather", responses
        assert isinstance(called.tool_calls[0]["args"].get("city"), str), called.tool_calls


def test_langchain_ollama_chat_and_format(server: Server, expected: str) -> None:
    from langchain_ollama import ChatOllama

    llm = ChatOllama(model="smol", base_url=server.url, temperature=0, num_predict=16)
    assert llm.invoke(QUESTION).text == expected
    structured = ChatOllama(model="smol", base_url=server.url, temperature=0,
                            num_predict=48).with_structured_output(City, method="json_schema")
    city = structured.invoke("Name a city in Italy.")
    assert isinstance(city, City)
    jsonschema.validate(json.loads(city.model_dump_json()), City.model_json_schema())
