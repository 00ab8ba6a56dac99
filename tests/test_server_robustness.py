"""The server under hostile or clumsy clients, over real sockets: JSON nested
a thousand levels deep, non-finite numbers (NaN, Infinity, which Python's
json reads), bodies of the maximal size while /health must still answer,
clients that hang up while sending their body, and /metrics counting what
the clients were actually sent."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .child_runner import child_env
from .server_util import ROOT, Server, free_port, http, ours

pytestmark = pytest.mark.slow

MAX_BODY = 16 * 2**20  # the server's default --max-body


@pytest.fixture(scope="module")
def server(smollm2_path: Path, minilm_path: Path) -> Iterator[Server]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "models.toml"
        config.write_text(
            f'[models.smollm]\nmodel = "{smollm2_path}"\nargs = "-c 2048 -np 2 -t 2"\n\n'
            f'[models.minilm]\nmodel = "{minilm_path}"\nargs = "-c 512 -np 1 -t 2"\n',
            encoding="utf-8")
        with ours(["--config", str(config), "--log-level", "info"],
                  Path(tmp) / "server.log") as s:
            # loaded first: while a model loads and none is, /health is llama-server's
            # 503 "Loading model" (tests/test_balancer.py); these tests time it when up
            assert s.post("/v1/completions", {"model": "smollm", "prompt": "Hi",
                                              "max_tokens": 1})[0] == 200
            yield s


def _post_raw(server: Server, path: str, raw: bytes | str) -> tuple[int, Any]:
    return server.post(path, raw=raw.encode() if isinstance(raw, str) else raw)


def _message(answer: Any) -> str:
    """The error message of an OpenAI-shaped or an Ollama-shaped answer."""
    error = answer["error"]
    return error if isinstance(error, str) else error["message"]


JSON_ENDPOINTS = ["/v1/chat/completions", "/chat/completions", "/v1/completions",
                  "/v1/responses",
                  "/v1/embeddings", "/api/chat", "/api/generate", "/api/embed",
                  "/api/embeddings", "/api/show", "/tokenize", "/detokenize",
                  "/apply-template", "/models/unload"]


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_deep_json_is_a_400(server: Server, path: str, depth: int) -> None:
    raw = '{"model": "smollm", "x": ' + "[" * depth + "]" * depth + "}"
    status, answer = _post_raw(server, path, raw)
    assert status == 400, answer
    assert "nests arrays/objects more than 64 levels deep" in _message(answer)


def test_json_within_the_depth_limit_is_served(server: Server) -> None:
    metadata: Any = "deep"
    for _ in range(60):
        metadata = {"a": metadata}
    status, answer = server.post("/v1/chat/completions", {
        "model": "smollm", "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1, "metadata": metadata})
    assert status == 200, answer
    status, answer = server.post("/api/chat", {
        "model": "smollm", "messages": [{"role": "user", "content": "Hi"}], "stream": False,
        "options": {"num_predict": 1, "temperature": 0}})
    assert status == 200, answer


CHAT = '{"model": "smollm", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1'
OLLAMA_CHAT = '{"model": "smollm", "messages": [{"role": "user", "content": "Hi"}], ' \
              '"stream": false'

NON_FINITE = [
    ("/v1/chat/completions", CHAT + ', "temperature": Infinity}', "temperature"),
    ("/v1/chat/completions", CHAT + ', "temperature": -Infinity}', "temperature"),
    ("/chat/completions", CHAT + ', "top_p": NaN}', "top_p"),
    ("/v1/chat/completions", CHAT + ', "temperature": 1e999}', "temperature"),
    ("/v1/chat/completions", CHAT + ', "logit_bias": {"15": -Infinity}}', "logit_bias.15"),
    ("/v1/chat/completions", CHAT + ', "dry_multiplier": NaN}', "dry_multiplier"),
    ("/v1/chat/completions",
     CHAT + ', "tools": [{"type": "function", "function": {"name": "f", "parameters": '
     '{"type": "object", "properties": {"a": {"type": "number", "maximum": Infinity}}}}}]}',
     "tools[0].function.parameters.properties.a.maximum"),
    ("/v1/responses", '{"model": "smollm", "input": "Hi", "max_output_tokens": 1, '
                      '"temperature": Infinity}', "temperature"),
    ("/v1/completions", '{"model": "smollm", "prompt": "a", "max_tokens": 1, '
                        '"presence_penalty": -Infinity}', "presence_penalty"),
    ("/v1/embeddings", '{"model": "minilm", "input": [101, NaN]}', "input[1]"),
    ("/api/chat", OLLAMA_CHAT + ', "options": {"num_predict": 1, "temperature": -Infinity}}',
     "options.temperature"),
    ("/api/generate", '{"model": "smollm", "prompt": "a", "stream": false, '
                      '"options": {"num_predict": 1, "seed": NaN}}', "options.seed"),
    ("/api/embed", '{"model": "minilm", "input": "a", "options": {"temperature": NaN}}',
     "options.temperature"),
    ("/api/embeddings", '{"model": "minilm", "prompt": "a", "keep_alive": Infinity}',
     "keep_alive"),
    ("/tokenize", '{"model": "smollm", "content": "a", "add_special": NaN}', "add_special"),
    ("/detokenize", '{"model": "smollm", "tokens": [1, Infinity]}', "tokens[1]"),
]


@pytest.mark.parametrize(("path", "raw", "field"), NON_FINITE)
def test_non_finite_numbers_are_refused(server: Server, path: str, raw: str,
                                        field: str) -> None:
    status, answer = _post_raw(server, path, raw)
    assert status == 400, answer
    message = _message(answer)
    assert message.startswith(f"{field} must be a finite number"), message
    if not path.startswith("/api/"):
        assert answer["error"]["param"] == field
    # the same request with a finite number is served (the field itself is fine)
    finite = re.sub(r"-?Infinity|NaN|1e999", "1", raw)
    status, answer = _post_raw(server, path, finite)
    assert status == 200, (finite, answer)


def test_a_non_finite_body_is_not_an_object(server: Server) -> None:
    status, answer = _post_raw(server, "/v1/chat/completions", "NaN")
    assert status == 400
    assert "must be a JSON object, not NaN" in _message(answer)


def _health_while(server: Server, path: str, body: bytes,
                  timeout: float = 600) -> tuple[int, bytes, list[float]]:
    """Send ``body`` to ``path`` in a thread; once it has been sent, ask /health
    again and again until that answer comes. (status, answer, /health latencies)."""
    sent = threading.Event()
    result: dict[str, Any] = {}

    def big() -> None:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        try:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         "\r\n".encode() + body)
            sent.set()
            chunks = []
            while chunk := sock.recv(1 << 20):
                chunks.append(chunk)
            head, _, answer = b"".join(chunks).partition(b"\r\n\r\n")
            result["status"] = int(head.split()[1])
            result["answer"] = answer
        finally:
            sent.set()
            sock.close()

    worker = threading.Thread(target=big)
    worker.start()
    assert sent.wait(timeout)
    latencies = []
    while True:  # at least once, after the whole body has been sent
        t = time.monotonic()
        with urllib.request.urlopen(server.url + "/health", timeout=30) as r:
            assert r.status == 200
        latencies.append(time.monotonic() - t)
        if not worker.is_alive() or len(latencies) > timeout / 0.1:
            break
        time.sleep(0.1)
    worker.join(timeout)
    return result["status"], result["answer"], latencies


TEXT = "The quick brown fox jumps over the lazy dog; a stitch in time saves nine. "


def test_health_answers_while_a_maximal_chat_body_is_processed(server: Server) -> None:
    head = b'{"model": "smollm", "messages": [{"role": "user", "content": "'
    tail = b'"}], "max_tokens": 1}'
    text = (TEXT * (MAX_BODY // len(TEXT)))[:MAX_BODY - len(head) - len(tail)].encode()
    body = head + text + tail
    assert len(body) == MAX_BODY
    status, answer, latencies = _health_while(server, "/v1/chat/completions", body)
    assert status == 400, answer[:300]
    assert json.loads(answer)["error"]["code"] == "context_length_exceeded"
    assert max(latencies) < 1.0, latencies


def test_health_answers_while_a_maximal_tokenize_is_processed(server: Server) -> None:
    head = b'{"model": "smollm", "with_pieces": true, "content": "'
    tail = b'"}'
    text = (TEXT * (MAX_BODY // len(TEXT)))[:MAX_BODY - len(head) - len(tail)].encode()
    body = head + text + tail
    status, answer, latencies = _health_while(server, "/tokenize", body)
    assert status == 200, answer[:300]
    tokens = json.loads(answer)["tokens"]
    assert "".join(t["piece"] for t in tokens) == text.decode()
    assert max(latencies) < 1.0, latencies


def test_health_answers_while_maximal_token_ids_are_processed(server: Server) -> None:
    head = b'{"model": "smollm", "max_tokens": 1, "prompt": ['
    tail = b"]}"
    n = (MAX_BODY - len(head) - len(tail)) // 2
    body = head + b",".join([b"1"] * n) + tail
    status, answer, latencies = _health_while(server, "/v1/completions", body)
    assert status == 400, answer[:300]
    assert json.loads(answer)["error"]["code"] == "context_length_exceeded"
    assert max(latencies) < 1.0, latencies


def test_too_many_tools_are_refused_at_once(server: Server) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    status, answer = server.post("/v1/chat/completions", {
        "model": "smollm", "messages": [{"role": "user", "content": "Hi"}],
        "tools": [tool] * 1025})
    assert status == 400, answer
    assert answer["error"]["param"] == "tools"
    assert "at most 1024 items" in answer["error"]["message"]


# -- counting what was sent ------------------------------------------------------------------

def _http_counts(server: Server) -> tuple[Counter[tuple[str, str, str]],
                                          Counter[tuple[str, str, str]]]:
    """(answers by method, route, status; disconnects by method, route, phase)."""
    text = server.get("/metrics")[1]
    answers: Counter[tuple[str, str, str]] = Counter()
    gone: Counter[tuple[str, str, str]] = Counter()
    for line in text.splitlines():
        m = re.match(r"(llama_cffi_http_\w+)_total\{(.*)\} (\S+)$", line)
        if m is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if m.group(1) == "llama_cffi_http_requests":
            answers[(labels["method"], labels["route"], labels["status"])] = int(
                float(m.group(3)))
        elif m.group(1) == "llama_cffi_http_disconnects":
            gone[(labels["method"], labels["route"], labels["phase"])] = int(float(m.group(3)))
    return answers, gone


def _delta(after: Counter[Any], before: Counter[Any]) -> Counter[Any]:
    return Counter({k: after[k] - before[k] for k in after if after[k] != before[k]})


def test_metrics_count_the_answers_clients_received(server: Server) -> None:
    before, gone_before = _http_counts(server)
    received: Counter[tuple[str, str, str]] = Counter()
    deep = '{"x": ' + "[" * 5000 + "]" * 5000 + "}"
    requests: list[tuple[str, str, str | None]] = [
        ("POST", "/v1/chat/completions", deep), ("POST", "/api/chat", deep),
        ("POST", "/tokenize", deep), ("POST", "/v1/chat/completions", "not json"),
        ("POST", "/v1/chat/completions", CHAT + ', "temperature": NaN}'),
        ("POST", "/v1/chat/completions", CHAT + ', "temperature": 0}'),
        ("GET", "/v1/models", None), ("POST", "/health", "{}"),
        ("POST", "/api/generate", '{"model": "nope", "prompt": "a"}'),
    ]
    for method, path, raw in requests * 2:
        status, _ = http(method, server.url + path, raw=None if raw is None else raw.encode())
        received[(method, path, str(status))] += 1
    # a body over the limit, announced by its Content-Length: refused before it is read
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Length: " + str(MAX_BODY + 1).encode() + b"\r\n\r\n")
        status = int(sock.recv(4096).split()[1])
        received[("POST", "/v1/chat/completions", str(status))] += 1
    after, gone_after = _http_counts(server)
    counted = _delta(after, before)
    counted.pop(("GET", "/metrics", "200"), None)
    assert counted == received
    assert ("POST", "/v1/chat/completions", "400") in received
    assert ("POST", "/v1/chat/completions", "413") in received
    assert not any(s.startswith("5") for _, _, s in received)
    assert gone_after == gone_before


def _wait_for(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/tokenize"])
def test_a_client_gone_while_sending_its_body_is_a_disconnect(server: Server,
                                                              path: str) -> None:
    before, gone_before = _http_counts(server)
    log_before = len(server.log.read_bytes())
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100000\r\n\r\n".encode() + b'{"model": "smollm", "m')
        time.sleep(0.3)  # the server is reading the body
    key = ("POST", path, "request")
    _wait_for(lambda: _http_counts(server)[1][key] == gone_before[key] + 1,
              "the disconnect was not counted")
    after, gone_after = _http_counts(server)
    counted = _delta(after, before)
    counted.pop(("GET", "/metrics", "200"), None)
    assert counted == Counter()  # no answer was sent, so none is counted
    assert _delta(gone_after, gone_before) == Counter({key: 1})
    log = server.log.read_bytes()[log_before:].decode(errors="replace")
    assert "Traceback" not in log and "unexpected" not in log, log
    assert f"POST {path}: the client disconnected before the request was complete" in log


def test_a_client_gone_while_waiting_is_a_disconnect(server: Server) -> None:
    before, gone_before = _http_counts(server)
    log_before = len(server.log.read_bytes())
    raw = json.dumps({"model": "smollm", "prompt": "Once upon a time", "max_tokens": 400,
                      "ignore_eos": True}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                     + str(len(raw)).encode() + b"\r\n\r\n" + raw)
        _wait_for(lambda: any(s["is_processing"] for s in server.get("/slots")[1]),
                  "the request did not start")
    _wait_for(lambda: not any(s["is_processing"] for s in server.get("/slots")[1]),
              "the slot was not freed")
    key = ("POST", "/v1/completions", "request")
    _wait_for(lambda: _http_counts(server)[1][key] == gone_before[key] + 1,
              "the disconnect was not counted")
    counted = _delta(_http_counts(server)[0], before)
    counted.pop(("GET", "/metrics", "200"), None)
    counted.pop(("GET", "/slots", "200"), None)
    assert counted == Counter()
    log = server.log.read_bytes()[log_before:].decode(errors="replace")
    assert "Traceback" not in log and "ERROR" not in log, log


def test_an_exception_no_handler_answers_is_a_counted_500(smollm2_path: Path,
                                                          tmp_path: Path) -> None:
    """A bug (an exception escaping every handler) still gets a 500 that /metrics
    counts; the app runs in uvicorn on a real socket, with one route that fails."""
    code = f"""
import logging, threading, time, urllib.request, urllib.error
import uvicorn
from starlette.routing import Route
from llama_cffi.apps.server.app import create_app
from llama_cffi.apps.server.config import ServerConfig, entry_from_args

logging.basicConfig(level=logging.WARNING)

async def boom(request):
    raise RuntimeError("a bug")

config = ServerConfig([entry_from_args("m", ["-m", {str(smollm2_path)!r}])])
app = create_app(config)
app.router.routes.append(Route("/boom", boom, methods=["GET"]))
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port={free_port()},
                                       log_level="warning"))
thread = threading.Thread(target=server.run)
thread.start()
base = "http://127.0.0.1:%d" % server.config.port
for _ in range(300):
    if server.started:
        break
    time.sleep(0.1)
statuses = []
for _ in range(3):
    try:
        urllib.request.urlopen(base + "/boom", timeout=30)
    except urllib.error.HTTPError as exc:
        statuses.append(exc.code)
        print("BODY", exc.read().decode())
print("STATUSES", statuses)
metrics = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
print([l for l in metrics.splitlines() if l.startswith("llama_cffi_http_requests_total")])
server.should_exit = True
thread.join(30)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=child_env(ROOT), cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "STATUSES [500, 500, 500]" in out
    assert "internal error: RuntimeError: a bug" in out
    assert ('llama_cffi_http_requests_total{method="GET",route="other",status="500"} 3.0'
            in out), out
    assert out.count("Traceback") == 3  # each bug logged with its traceback


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_a_client_gone_during_a_stream_is_a_disconnect(server: Server, path: str) -> None:
    before, gone_before = _http_counts(server)
    log_before = len(server.log.read_bytes())
    body: dict[str, Any] = (
        {"model": "smollm", "stream": True, "max_tokens": 300, "ignore_eos": True}
        if path == "/v1/chat/completions" else {"model": "smollm",
                                                  "options": {"num_predict": 300}})
    body["messages"] = [{"role": "user", "content": "Tell me a long story."}]
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
                     "\r\n".encode() + data)
        got = b""
        while got.count(b"\n") < 12:  # the status line and a few pieces
            chunk = sock.recv(4096)
            assert chunk, got
            got += chunk
        assert got.startswith(b"HTTP/1.1 200")
    key = ("POST", path, "response")
    _wait_for(lambda: _http_counts(server)[1][key] == gone_before[key] + 1,
              "the disconnect was not counted")
    counted = _delta(_http_counts(server)[0], before)
    counted.pop(("GET", "/metrics", "200"), None)
    assert counted == Counter({("POST", path, "200"): 1})  # its status line was sent
    _wait_for(lambda: not any(s["is_processing"] for s in server.get("/slots")[1]),
              "the slot was not freed")
    log = server.log.read_bytes()[log_before:].decode(errors="replace")
    assert "Traceback" not in log and "ERROR" not in log, log
