"""/health and /slots as llama-server answers them (balancers such as paddler
read both): the same JSON keys, recursively, and the same status codes as
llama-server built from the same llama.cpp, on the same model and flags."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .server_util import Server, http, llama_server, ours

pytestmark = [pytest.mark.slow, pytest.mark.tools]

# what our slots add to llama-server's: the model's name and its cached tokens
OUR_EXTRAS = {"model", "n_cached_tokens"}


def keys(value: Any, extras: frozenset[str] = frozenset()) -> Any:
    """The shape of a JSON value: objects as {key: shape}, lists by their items."""
    if isinstance(value, dict):
        return {k: keys(v) for k, v in value.items() if k not in extras}
    if isinstance(value, list):
        return [keys(v) for v in value]
    return type(value).__name__ if not isinstance(value, (int, float)) or \
        isinstance(value, bool) else "number"


def our_keys(value: Any) -> Any:
    if isinstance(value, list):
        return [keys(v, frozenset(OUR_EXTRAS)) for v in value]
    return keys(value)


def shapes(value: Any) -> Any:
    """A shape with a list's items in a fixed order (the servers may pick other
    slots for the same request: the set of slot shapes must match)."""
    if isinstance(value, list):
        return sorted((json.dumps(v, sort_keys=True) for v in value))
    return value


def _wait(cond: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _fill_slots(server: Server, n: int) -> list[threading.Thread]:
    """Start ``n`` long generations (ignore_eos) on their own threads."""
    body = {"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True,
            "temperature": 0, "model": "m"}
    threads = [threading.Thread(target=http, args=("POST", server.url + "/v1/completions",
                                                   body), kwargs={"timeout": 300}, daemon=True)
               for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def _reports(server: Server) -> dict[str, Any]:
    """health, slots when idle, after a request, while every slot is busy."""
    out: dict[str, Any] = {}
    out["health"] = server.get("/health")
    out["v1_health"] = server.get("/v1/health")
    out["slots_idle_fresh"] = server.get("/slots")
    out["fail_fresh"] = server.get("/slots?fail_on_no_slot=1")
    status, _ = server.post("/v1/completions", {"prompt": "Hi", "max_tokens": 4,
                                                "temperature": 0, "model": "m"})
    assert status == 200
    out["slots_after"] = server.get("/slots")
    threads = _fill_slots(server, 2)
    try:
        _wait(lambda: all(s["is_processing"] for s in server.get("/slots")[1]), "busy slots")
        out["slots_busy"] = server.get("/slots")
        out["fail_busy"] = server.get("/slots?fail_on_no_slot=1")
        out["health_busy"] = server.get("/health")
    finally:
        for t in threads:
            t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    out["fail_after"] = server.get("/slots?fail_on_no_slot=1")
    return out


def test_health_and_slots_match_llama_server(smollm2_path: Path, tools_dir: Path,
                                             tmp_path: Path) -> None:
    args = ["-m", str(smollm2_path), "-c", "2048", "-np", "2", "-t", "2", "-a", "m"]
    with llama_server(tools_dir, args, tmp_path / "ref.log") as ref:
        theirs = _reports(ref)
    with ours(args, tmp_path / "ours.log") as mine:
        assert mine.get("/slots")[1][0]["model"] == "m"  # configured, not loaded: idle slots
        got = _reports(mine)
    for name, (status, body) in theirs.items():
        my_status, my_body = got[name]
        assert my_status == status, (name, my_status, my_body, status, body)
        assert shapes(our_keys(my_body)) == shapes(keys(body)), (name, my_body, body)
    # the answers themselves, where they are fixed
    assert got["health"][1] == theirs["health"][1] == {"status": "ok"}
    assert got["fail_busy"][1] == theirs["fail_busy"][1] == {
        "error": {"code": 503, "message": "no slot available", "type": "unavailable_error"}}
    assert [s["id"] for s in got["slots_busy"][1]] == [s["id"] for s in theirs["slots_busy"][1]]
    assert {s["n_ctx"] for s in got["slots_busy"][1]} == {s["n_ctx"] for s in
                                                         theirs["slots_busy"][1]} == {1024}


def test_health_while_loading_is_llama_servers_503(smollm2_path: Path) -> None:
    """While the only model loads, /health answers 503 "Loading model" as
    llama-server does until its model is loaded; 200 once it is."""
    from starlette.testclient import TestClient

    from llama_cffi.api.llm import LLM
    from llama_cffi.apps.server.app import create_app
    from llama_cffi.apps.server.config import ModelEntry, ServerConfig
    from llama_cffi.apps.server.manager import load_entry

    release = threading.Event()
    started = threading.Event()

    def slow_loader(entry: ModelEntry) -> LLM:
        started.set()
        assert release.wait(60)
        return load_entry(entry)

    config = ServerConfig(models=[ModelEntry(name="m", model=str(smollm2_path))])
    with TestClient(create_app(config, loader=slow_loader)) as client:
        assert client.get("/health").status_code == 200  # nothing loading: a request loads
        box: dict[str, Any] = {}
        t = threading.Thread(target=lambda: box.update(r=client.post(
            "/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "model": "m"})))
        t.start()
        try:
            assert started.wait(60)
            r = client.get("/health")
            assert r.status_code == 503
            assert r.json() == {"error": {"code": 503, "message": "Loading model",
                                          "type": "unavailable_error"}}
        finally:
            release.set()
            t.join(120)
        assert box["r"].status_code == 200
        assert client.get("/health").json() == {"status": "ok"}
