"""The same greedy request gets the same answer, to the last bit of its
log-probabilities, whatever unrelated requests ran before it.

The sequence comes from a user report: after a sampled ``n=2`` request and a
JSON-mode request, a greedy request that had been answered twice got another
answer. Its cause: with one KV cache shared by every slot, a re-evaluated
token's cell could land in a hole another slot left, before the slot's older
cells, and attention summed in a different order. With ``-np N`` each slot now
has its own KV stream, as in llama-server.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from .mmproj_synthetic import make_image, png_bytes, write_mmproj
from .server_util import Server, http, ours

pytestmark = pytest.mark.slow

PROBE = {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 16,
         "temperature": 0, "logprobs": True, "top_logprobs": 2}
HI = [{"role": "user", "content": "Say hi."}]


def _probe(server: Server) -> tuple[str, list[tuple[str, float, list[float]]]]:
    status, body = server.post("/v1/chat/completions", PROBE)
    assert status == 200, body
    choice = body["choices"][0]
    return choice["message"]["content"], [
        (t["token"], t["logprob"], [x["logprob"] for x in t["top_logprobs"]])
        for t in choice["logprobs"]["content"]]


def _cancelled_stream(server: Server) -> None:
    """A streamed request the client drops after its first pieces."""
    import urllib.request

    req = urllib.request.Request(
        server.url + "/v1/chat/completions", method="POST",
        data=json.dumps({"messages": HI, "max_tokens": 64, "stream": True,
                         "temperature": 0.9, "seed": 3}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        for _ in range(3):
            assert resp.readline() is not None


def _unrelated(server: Server, image_url: str) -> list[tuple[str, Any]]:
    """What runs between two probes: every kind of request that takes slots."""
    image = [{"type": "image_url", "image_url": {"url": image_url}},
             {"type": "text", "text": "What is this?"}]
    return [
        ("n=2 sampled", {"messages": HI, "max_tokens": 8, "n": 2, "temperature": 0.7,
                         "seed": 1}),
        ("json_object", {"messages": HI, "max_tokens": 8,
                         "response_format": {"type": "json_object"}, "seed": 1}),
        ("n=3 sampled", {"messages": HI, "max_tokens": 6, "n": 3, "temperature": 1.0,
                         "seed": 2}),
        ("grammar", {"messages": [{"role": "user", "content": "Pick yes or no."}],
                     "max_tokens": 4, "grammar": 'root ::= "yes" | "no"'}),
        ("n=4 greedy", {"messages": [{"role": "user", "content": "Name three colours. "
                                      "Then name three more."}], "max_tokens": 10, "n": 4,
                        "temperature": 0}),
        ("image", {"messages": [{"role": "user", "content": image}], "max_tokens": 6}),
        ("cancelled stream", None),
        ("json_schema", {"messages": HI, "max_tokens": 12, "response_format": {
            "type": "json_schema", "json_schema": {"name": "g", "schema": {
                "type": "object", "properties": {"greeting": {"type": "string"}},
                "required": ["greeting"]}}}}),
    ]


def test_greedy_answer_does_not_depend_on_earlier_requests(smollm2_path: Path,
                                                           tmp_path: Path) -> None:
    write_mmproj(tmp_path / "mmproj.gguf", 576)
    image_url = "data:image/png;base64," + base64.b64encode(png_bytes(make_image(3))).decode()
    args = ["-m", str(smollm2_path), "--mmproj", str(tmp_path / "mmproj.gguf"),
            "-np", "4", "-c", "4096", "-t", "2"]
    with ours(args, tmp_path / "ours.log") as server:
        status, props = server.get("/props")
        assert status == 200 and props["total_slots"] == 4, props
        first = _probe(server)
        assert first[0] and len(first[1]) == 16
        for name, request in _unrelated(server, image_url):
            # the reported order: the probe again, then the unrelated request
            assert _probe(server) == first, f"before {name}"
            if request is None:
                _cancelled_stream(server)
            else:
                status, body = server.post("/v1/chat/completions", request)
                assert status == 200, (name, body)
            assert _probe(server) == first, f"after {name}"
        # requests running at once in other slots (their batches mix sequences)
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            others = [pool.submit(http, "POST", server.url + "/v1/chat/completions",
                                  {"messages": HI, "max_tokens": 24, "temperature": 0.8,
                                   "seed": i, "n": 1 + i}) for i in range(3)]
            assert all(f.result()[0] == 200 for f in others)
        assert _probe(server) == first
