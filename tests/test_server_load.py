"""64 concurrent streaming clients against one server, a quarter of them
hanging up mid-stream, with malformed and oversized requests mixed in."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest

from .server_util import ours


pytestmark = pytest.mark.slow

PROMPTS = ["List three colors.", "Say hello in French.", "Name a planet.", "What is 2+2?"]
N_CLIENTS = 64
MAX_TOKENS = 10


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    assert m, f"{name}{{{want}}} not in /metrics"
    return float(m.group(1))


async def _stream(client: httpx.AsyncClient, prompt: str, *, hang_up: bool) -> str | None:
    """The streamed text, or None for a client that hangs up after 2 pieces."""
    body = {"model": "smollm", "messages": [{"role": "user", "content": prompt}],
            "temperature": 0, "stream": True,
            "max_tokens": 400 if hang_up else MAX_TOKENS}
    if hang_up:
        body["ignore_eos"] = True  # still generating when the client leaves
    pieces: list[str] = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200, await resp.aread()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            assert "error" not in event, event
            for choice in event["choices"]:
                pieces.append(choice["delta"].get("content") or "")
            if hang_up and len(pieces) >= 3:
                return None  # leaving the block closes the connection
    return "".join(pieces)


async def _malformed(client: httpx.AsyncClient, i: int) -> int:
    bodies = [b"{oops", b'{"model": "smollm", "messages": []}',
              b'{"model": "smollm", "messages": [{"role": "user", "content": 5}]}',
              b'{"model": "smollm", "messages": [{"role": "user", "content": "x"}], '
              b'"max_tokens": "many"}']
    resp = await client.post("/v1/chat/completions", content=bodies[i % len(bodies)],
                             headers={"Content-Type": "application/json"})
    return resp.status_code


async def _oversized(client: httpx.AsyncClient) -> int:
    big = json.dumps({"model": "smollm", "messages": [{"role": "user",
                                                       "content": "x" * 200_000}]})
    try:
        resp = await client.post("/v1/chat/completions", content=big,
                                 headers={"Content-Type": "application/json"})
    except httpx.TransportError:  # closed while sending: the 413 went unread
        return 413
    return resp.status_code


def test_64_streaming_clients(smollm2_path: Path, tmp_path: Path) -> None:
    # one KV stream per slot (-no-kvu): greedy output in a batch then equals the
    # output alone for this model (with the unified cache the attention sums
    # run over other cells and a near tie can flip, as in llama-server)
    args = [str(smollm2_path), "--alias", "smollm", "-c", "8192", "-np", "8", "-no-kvu",
            "-t", "2", "--max-body", "100000"]
    with ours(args, tmp_path / "load.log") as server:
        async def main() -> None:
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=server.url, timeout=600,
                                         limits=limits) as client:
                # references, one at a time
                refs = []
                for p in PROMPTS:
                    r = await client.post("/v1/chat/completions", json={
                        "model": "smollm", "messages": [{"role": "user", "content": p}],
                        "temperature": 0, "max_tokens": MAX_TOKENS})
                    assert r.status_code == 200
                    refs.append(r.json()["choices"][0]["message"]["content"])
                hang_ups = set(range(0, N_CLIENTS, 4))  # a quarter
                jobs = [_stream(client, PROMPTS[i % 4], hang_up=i in hang_ups)
                        for i in range(N_CLIENTS)]
                bad = [_malformed(client, i) for i in range(8)] + \
                    [_oversized(client) for _ in range(4)]
                results = await asyncio.wait_for(asyncio.gather(*jobs, *bad), timeout=900)
                texts, statuses = results[:N_CLIENTS], results[N_CLIENTS:]
                for i, text in enumerate(texts):
                    if i in hang_ups:
                        assert text is None
                    else:
                        assert text == refs[i % 4], (i, text, refs[i % 4])
                assert statuses == [400] * 8 + [413] * 4

                # every slot free again, counts as sent
                deadline = time.monotonic() + 30
                while True:
                    slots = (await client.get("/slots")).json()
                    if not any(s["is_processing"] for s in slots):
                        break
                    assert time.monotonic() < deadline, slots
                    await asyncio.sleep(0.2)
                assert len(slots) == 8
                metrics = (await client.get("/metrics")).text
                n_generations = len(PROMPTS) + N_CLIENTS
                assert _metric(metrics, "llama_cffi_requests_total", model="smollm") == \
                    n_generations
                assert _metric(metrics, "llama_cffi_requests_cancelled_total",
                               model="smollm") == len(hang_ups)
                assert _metric(metrics, "llama_cffi_requests_failed_total", model="smollm") == 0
                assert _metric(metrics, "llamacpp:requests_processing", model="smollm") == 0
                route = "/v1/chat/completions"
                assert _metric(metrics, "llama_cffi_http_requests_total", method="POST",
                               route=route, status="400") == 8
                assert _metric(metrics, "llama_cffi_http_requests_total", method="POST",
                               route=route, status="413") == 4
                assert _metric(metrics, "llama_cffi_http_requests_total", method="POST",
                               route=route, status="200") == n_generations
                health = await client.get("/health")
                assert health.status_code == 200

        asyncio.run(main())
