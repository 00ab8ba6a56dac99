"""Ollama's API of ``llama-cffi serve``, through the ``ollama`` client package.

The server runs in a subprocess on a free port of 127.0.0.1 with SmolLM2 and
the MiniLM embedding model. Greedy generations through Ollama's endpoints are
compared with the same requests through the OpenAI endpoints of the same
server (another request path onto the same engine), so that what the Ollama
layer adds (options, templates, streaming, keep_alive) is what is checked.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import ollama
import pytest

from llama_cffi.apps.server.errors import ApiError
from llama_cffi.apps.server.ollama_schemas import parse_keep_alive, render_go_template

from .server_util import ours

GREEDY = {"temperature": 0, "num_predict": 8}


@pytest.fixture(scope="module")
def server(smollm2_path: Path, minilm_path: Path) -> Iterator[str]:
    """The server's base URL; it is stopped at the end of the module."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "models.toml"
        config.write_text(
            f'[models.smollm2]\nmodel = "{smollm2_path}"\nargs = "-c 1024 -np 2 -t 2"\n\n'
            f'[models.minilm]\nmodel = "{minilm_path}"\nargs = "-c 512 -np 1 -t 2"\n',
            encoding="utf-8")
        with ours(["--config", str(config)], Path(tmp) / "server.log",
                  ready_path="/api/version", timeout=60) as srv:
            yield srv.url


@pytest.fixture(scope="module")
def client(server: str) -> ollama.Client:
    return ollama.Client(host=server, timeout=60)


@pytest.fixture(scope="module")
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


def _openai_chat(http: httpx.Client, content: str, max_tokens: int) -> dict[str, Any]:
    r = http.post("/v1/chat/completions", json={
        "model": "smollm2", "messages": [{"role": "user", "content": content}],
        "temperature": 0, "max_tokens": max_tokens})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _loaded(client: ollama.Client) -> set[str]:
    return {m.model for m in client.ps().models if m.model}


@pytest.mark.slow
def test_version_and_list(client: ollama.Client, http: httpx.Client, smollm2_path: Path,
                          minilm_path: Path) -> None:
    assert http.get("/").status_code == 200  # some clients probe Ollama's root
    version = http.get("/api/version").json()["version"]
    assert [int(x) for x in version.split(".")] >= [0, 5, 0]
    models = {m.model: m for m in client.list().models}
    assert set(models) == {"smollm2", "minilm"}
    smol, mini = models["smollm2"], models["minilm"]
    assert smol.size == smollm2_path.stat().st_size
    assert mini.size == minilm_path.stat().st_size
    assert smol.details is not None and mini.details is not None
    assert (smol.details.format, smol.details.family, smol.details.parameter_size,
            smol.details.quantization_level) == ("gguf", "llama", "135M", "Q4_1")
    assert (mini.details.family, mini.details.quantization_level) == ("bert", "F32")
    assert smol.digest and len(smol.digest) == 64 and smol.digest != mini.digest
    assert smol.modified_at is not None
    assert abs(smol.modified_at.timestamp() - smollm2_path.stat().st_mtime) < 1


@pytest.mark.slow
def test_show(client: ollama.Client) -> None:
    smol = client.show("smollm2")
    assert smol.modelinfo is not None and smol.modelinfo["general.architecture"] == "llama"
    assert smol.modelinfo["general.parameter_count"] > 130_000_000
    assert smol.template is not None and "<|im_start|>" in smol.template
    assert smol.capabilities == ["completion"]
    assert smol.parameters is not None and "num_ctx" in smol.parameters \
        and "1024" in smol.parameters
    assert client.show("minilm").capabilities == ["embedding"]


@pytest.mark.slow
def test_chat_not_streamed(client: ollama.Client, http: httpx.Client) -> None:
    r = client.chat(model="smollm2", messages=[{"role": "user", "content": "Hi"}],
                    options=GREEDY, stream=False)
    reference = _openai_chat(http, "Hi", 8)
    assert r.message.role == "assistant"
    assert r.message.content == reference["choices"][0]["message"]["content"]
    assert r.message.content
    assert r.done and r.done_reason == "length"
    assert r.eval_count == 8
    assert r.prompt_eval_count == reference["usage"]["prompt_tokens"]
    assert r.total_duration is not None and r.eval_duration is not None
    assert r.total_duration >= r.eval_duration > 0


@pytest.mark.slow
def test_chat_streamed(client: ollama.Client, http: httpx.Client) -> None:
    parts = list(client.chat(model="smollm2:latest",
                             messages=[{"role": "user", "content": "Hi"}],
                             options=GREEDY, stream=True))
    assert len(parts) >= 3
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    final = parts[-1]
    assert final.done_reason == "length" and final.eval_count == 8
    assert final.prompt_eval_count and final.prompt_eval_duration
    text = "".join(p.message.content or "" for p in parts)
    assert text == _openai_chat(http, "Hi", 8)["choices"][0]["message"]["content"]
    # the wire format: NDJSON, one object a line, streaming by default
    with http.stream("POST", "/api/chat", json={
            "model": "smollm2", "messages": [{"role": "user", "content": "Hi"}],
            "options": {"temperature": 0, "num_predict": 3}}) as resp:
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert [x["done"] for x in lines] == [False] * (len(lines) - 1) + [True]
    assert lines[-1]["eval_count"] == 3


@pytest.mark.slow
def test_generate(client: ollama.Client, http: httpx.Client) -> None:
    prompt = "The capital of France is"
    raw = client.generate(model="smollm2", prompt=prompt, raw=True, options=GREEDY)
    r = http.post("/v1/completions", json={"model": "smollm2", "prompt": prompt,
                                           "temperature": 0, "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert raw.response == r.json()["choices"][0]["text"]
    assert raw.context is not None and raw.prompt_eval_count and raw.eval_count
    assert len(raw.context) == raw.prompt_eval_count + raw.eval_count
    # without raw, the prompt goes through the chat template as a user message
    templated = client.generate(model="smollm2", prompt="Hi", options=GREEDY)
    assert templated.response == _openai_chat(http, "Hi", 8)["choices"][0]["message"]["content"]
    # a Go template of the request replaces the model's
    go = client.generate(model="smollm2", prompt="Hi", options=GREEDY, template=(
        "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"))
    assert go.response == raw_chatml(http, "Hi")
    streamed = list(client.generate(model="smollm2", prompt=prompt, raw=True, options=GREEDY,
                                    stream=True))
    assert "".join(p.response or "" for p in streamed) == raw.response and streamed[-1].done


def raw_chatml(http: httpx.Client, content: str) -> str:
    r = http.post("/v1/completions", json={
        "model": "smollm2", "temperature": 0, "max_tokens": 8,
        "prompt": f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"})
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["text"])


@pytest.mark.slow
def test_format_json_schema(client: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}},
              "required": ["name"]}
    r = client.chat(model="smollm2", format=schema, options={"temperature": 0,
                                                             "num_predict": 40},
                    messages=[{"role": "user", "content": "Give a JSON object with a name."}])
    jsonschema.validate(json.loads(r.message.content or ""), schema)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.mark.slow
def test_tool_call_round_trip(client: ollama.Client) -> None:
    messages: list[Any] = [{"role": "user", "content": "Call get_weather for Paris."}]
    options = {"temperature": 0, "num_predict": 60}
    r = client.chat(model="smollm2", messages=messages, tools=[WEATHER], options=options)
    assert r.message.tool_calls, r.message
    (call,) = r.message.tool_calls
    assert call.function.name == "get_weather"
    assert call.function.arguments == {"city": "Paris"}  # an object, Ollama's shape
    assert r.done_reason == "stop"
    streamed = list(client.chat(model="smollm2", messages=messages, tools=[WEATHER],
                                options=options, stream=True))
    final = streamed[-1].message.tool_calls
    assert final and [(c.function.name, c.function.arguments) for c in final] == \
        [("get_weather", {"city": "Paris"})]
    # the call and its result go back as messages
    messages += [r.message, {"role": "tool", "content": "18 C and sunny",
                             "tool_name": "get_weather"}]
    after = client.chat(model="smollm2", messages=messages, tools=[WEATHER], options=options)
    assert after.done and after.prompt_eval_count and r.prompt_eval_count
    assert after.prompt_eval_count > r.prompt_eval_count + 10


@pytest.mark.slow
def test_embed(client: ollama.Client, http: httpx.Client) -> None:
    texts = ["hello world", "goodbye"]
    r = client.embed(model="minilm", input=texts)
    vectors = np.asarray(r.embeddings, dtype=np.float32)
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # [CLS] hello world [SEP] and [CLS] goodbye [SEP]
    assert r.prompt_eval_count == 7
    ref = http.post("/v1/embeddings", json={"model": "minilm", "input": texts}).json()
    assert np.allclose(vectors, [d["embedding"] for d in ref["data"]], atol=1e-5)
    legacy = np.asarray(client.embeddings(model="minilm", prompt="hello world").embedding)
    assert np.allclose(legacy / np.linalg.norm(legacy), vectors[0], atol=1e-5)
    short = np.asarray(client.embed(model="minilm", input="hello world",
                                    dimensions=16).embeddings[0])
    head = vectors[0, :16]
    assert np.allclose(short, head / np.linalg.norm(head), atol=1e-5)


@pytest.mark.slow
def test_keep_alive(client: ollama.Client, http: httpx.Client) -> None:
    def status() -> str:
        return str(http.get("/v1/models/smollm2").json()["status"]["value"])

    # a generation with keep_alive=0 unloads the model once it has answered
    r = client.generate(model="smollm2", prompt="Hi", options=GREEDY, keep_alive=0)
    assert r.response and r.done
    assert "smollm2" not in _loaded(client) and status() == "unloaded"
    # an empty request loads, or with keep_alive=0 unloads
    loaded = client.generate(model="smollm2", keep_alive="10m")
    assert loaded.done_reason == "load" and status() == "loaded"
    (card,) = [m for m in client.ps().models if m.model == "smollm2"]
    assert card.expires_at is not None and card.size and card.size_vram == 0
    left = (card.expires_at - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert 590 < left <= 600
    assert card.context_length == 1024
    unloaded = client.chat(model="smollm2", messages=[], keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert "smollm2" not in _loaded(client) and status() == "unloaded"


@pytest.mark.slow
def test_errors(client: ollama.Client, http: httpx.Client) -> None:
    def refused(status: int, **kw: Any) -> str:
        args = {"model": "smollm2", "prompt": "Hi", "stream": False, **kw}
        with pytest.raises(ollama.ResponseError) as info:
            client.generate(**args)
        assert info.value.status_code == status, info.value.error
        return str(info.value.error)

    assert refused(404, model="nope") == "model 'nope' not found"
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="nope", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(model="nope", input="x")
    assert info.value.status_code == 404
    assert "temperature" in refused(400, options={"temperature": "hot"})
    assert "top_p" in refused(400, options={"top_p": 2})
    assert "bogus" in refused(400, options={"bogus": 1})
    assert "num_predict" in refused(400, options={"num_predict": -5})
    assert "keep_alive" in refused(400, keep_alive="5 parsecs")
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="minilm", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 400 and "does not support" in info.value.error
    # Ollama's error shape, also for bodies the client library would not send
    for body in (b"{not json", b"[1, 2]", b'{"model": "smollm2", "messages": "Hi"}',
                 b'{"model": "smollm2", "messages": [{"role": "robot", "content": "x"}]}'):
        r = http.post("/api/chat", content=body)
        assert r.status_code == 400, r.text
        assert set(r.json()) == {"error"} and r.json()["error"]
    # the server is still well
    assert client.chat(model="smollm2", messages=[{"role": "user", "content": "Hi"}],
                       options={"temperature": 0, "num_predict": 2}).eval_count == 2


def test_keep_alive_values() -> None:
    assert parse_keep_alive(None) is None
    assert parse_keep_alive(300) == 300.0
    assert parse_keep_alive("5m") == 300.0
    assert parse_keep_alive("1h30m") == 5400.0
    assert parse_keep_alive("1.5s") == 1.5
    assert parse_keep_alive("0") == parse_keep_alive(0) == 0.0
    assert parse_keep_alive("-1") == parse_keep_alive("-1m") == parse_keep_alive(-5) == -1.0
    for bad in ("5 parsecs", "m", "1h 30m", "nan"):
        with pytest.raises(ApiError) as info:
            parse_keep_alive(bad)
        assert info.value.status == 400 and info.value.param == "keep_alive"


def test_go_template_subset() -> None:
    template = ("{{ if .System }}<s>{{ .System }}</s>\n{{- end }}\n"
                "{{ if .Prompt }}<u>{{ .Prompt }}</u>{{ else }}none{{ end }}{{ .Response }}")
    assert render_go_template(template, {"System": "S", "Prompt": "P", "Response": ""}) == \
        "<s>S</s>\n<u>P</u>"
    assert render_go_template(template, {"System": "", "Prompt": "", "Response": ""}) == \
        "\nnone"
    for bad in ("{{ range .Messages }}x{{ end }}", "{{ if .System }}x", "{{ .Tools }}"):
        with pytest.raises(ApiError) as info:
            render_go_template(bad, {"System": "", "Prompt": "", "Response": ""})
        assert info.value.status == 400 and info.value.param == "template"
