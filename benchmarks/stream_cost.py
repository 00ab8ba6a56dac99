"""Streams and logprobs in the engine's generation runs in C (``engine_throughput.py
--parts stream``).

1. Binding time per token per slot (wall minus the time inside llama_decode)
   and aggregate tokens/s of streamed requests (each read piece by piece by
   its own thread), of logprobs requests (top 5) and of JSON-schema requests
   (llguidance, masked in C inside the runs), at 1 and 8 requests,
   with the runs (default) and with one Python step per token
   (``engine.run_steps = 0``), interleaved pairs; and the gaps between two
   pieces a reader sees (p50 / p95 over all readers).
2. The same gaps through the servers' SSE streams: ours against llama-server
   from the same build, one client, ``/v1/completions`` with ``stream``,
   alternating requests.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import TimedDecode, random_tokens

import llama_cffi as lc
from llama_cffi.engine.engine import RUN_STEPS

N_PROMPT, N_GEN = 32, 128
LONG_SCHEMA = {"type": "array", "minItems": 60, "maxItems": 60,
               "items": {"type": "integer", "minimum": 0, "maximum": 999}}
"""A schema whose output is long (60 numbers: about 120 tokens or more)."""
KINDS = os.environ.get("STREAM_COST_KINDS", "stream,logprobs,schema").split(",")
"""The request kinds measured (the environment's STREAM_COST_KINDS)."""
THREADS = int(os.environ.get("STREAM_COST_THREADS", "2"))
"""Decode threads (the environment's STREAM_COST_THREADS; 1 leaves a core to the
stream pump and the readers on a 2-core machine)."""


def p50_p95(gaps: list[float]) -> tuple[float, float]:
    """Median and 95th percentile, in ms."""
    if len(gaps) < 2:
        return float("nan"), float("nan")
    return statistics.median(gaps) * 1e3, statistics.quantiles(gaps, n=20)[18] * 1e3


def engine_requests(llm: lc.LLM, k: int, rng: random.Random,
                    kind: str) -> tuple[float, float, list[float]]:
    """(aggregate generation t/s, binding ms per token per slot, gaps between
    pieces in s) for ``k`` requests of ``kind`` ("stream", "logprobs" or
    "schema": :data:`LONG_SCHEMA` on llguidance, not streamed, ending where
    the grammar or ``N_GEN`` ends it)."""
    prompts = [random_tokens(llm.model, N_PROMPT, rng) for _ in range(k)]
    extra: dict[str, Any] = {"logprobs": 5} if kind == "logprobs" else {}
    if kind == "schema":
        extra = {"json_schema": LONG_SCHEMA, "grammar_engine": "llguidance",
                 "ignore_eos": False}
    arrivals: list[list[float]] = [[] for _ in range(k)]

    def read(pieces: Iterator[str], out: list[float]) -> None:
        for _ in pieces:
            out.append(time.perf_counter())

    with TimedDecode() as timer:
        t0 = time.perf_counter()
        handles = [llm.submit(p, **{"max_tokens": N_GEN, "temperature": 0, "ignore_eos": True,
                                    "add_special": False, **extra})
                   for p in prompts]  # type: ignore[arg-type]
        threads = []
        if kind == "stream":
            for h, out in zip(handles, arrivals):
                threads.append(threading.Thread(target=read, args=(h.pieces(), out)))
                threads[-1].start()
        for t in threads:
            t.join()
        done = [h.result() for h in handles]
        t_end = time.perf_counter()
        inside = timer.inside
    firsts = [t0 + c.timings.time_to_first_token for c in done]
    n = sum(len(c.tokens) for c in done)
    tps = (n - k) / (t_end - max(firsts))
    gaps = [b - a for arr in arrivals for a, b in zip(arr, arr[1:])]
    return tps, (t_end - t0 - inside) / n * 1e3, gaps


def engine_part(path: str, pairs: int) -> None:
    rng = random.Random(1)
    print(f"\nStreams, logprobs (top 5), JSON schema: {N_GEN} greedy tokens per request, "
          f"{THREADS} threads, median of {pairs} interleaved pairs (runs in C, then one "
          "Python step per token)\n")
    print("| requests | kind | runs: t/s, binding ms/token | per-step: t/s, binding ms/token | "
          "t/s ratio | gap p50 / p95 ms, runs | gap p50 / p95 ms, per-step |")
    print("|---|---|---|---|---|---|---|")
    with lc.LLM(path, n_ctx=4096, n_parallel=8, n_threads=THREADS, n_batch=2048,
                n_ubatch=512) as llm:
        engine_requests(llm, 1, rng, "stream")  # warm-up
        for k in (1, 8):
            for kind in KINDS:
                rows, gaps_runs, gaps_step = [], [], []
                for _ in range(pairs):
                    tps, binding, g1 = engine_requests(llm, k, rng, kind)
                    llm.engine.run_steps = 0
                    try:
                        tps0, binding0, g0 = engine_requests(llm, k, rng, kind)
                    finally:
                        llm.engine.run_steps = RUN_STEPS
                    rows.append((tps, binding, tps0, binding0, tps / tps0))
                    gaps_runs += g1
                    gaps_step += g0
                m = [statistics.median(c) for c in zip(*rows)]
                gr, gs = p50_p95(gaps_runs), p50_p95(gaps_step)
                gap_cells = (f"{gr[0]:.2f} / {gr[1]:.2f} | {gs[0]:.2f} / {gs[1]:.2f}"
                             if kind == "stream" else "- | -")
                print(f"| {k} | {kind} | {m[0]:.1f}, {m[1]:.3f} | {m[2]:.1f}, {m[3]:.3f} | "
                      f"{m[4]:.3f} | {gap_cells} |", flush=True)


def sse_gaps(url: str, prompt: str, n: int) -> list[float]:
    """Gaps (s) between the SSE chunks with text of one streamed completion."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    body = json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0,
                       "ignore_eos": True, "stream": True})
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    times = []
    for line in resp:
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if any(c.get("text") for c in chunk.get("choices", [])):
            times.append(time.perf_counter())
    conn.close()
    return [b - a for a, b in zip(times, times[1:])]


def server_part(path: str, requests: int) -> None:
    from server_load import running

    gaps: dict[str, list[float]] = {"ours": [], "llama-server": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(requests):
            for kind in (("ours", "llama-server") if i % 2 == 0 else ("llama-server", "ours")):
                with running(kind, path, 1, Path(tmp) / f"{kind}.log") as (url, _):
                    sse_gaps(url, "Warm up:", 8)
                    gaps[kind] += sse_gaps(url, f"Story number {i}: once upon a time", N_GEN)
    print(f"\nSSE stream, 1 client, {N_GEN} tokens, {requests} requests per server "
          "(alternating, a fresh server each):\n")
    print("| server | gap p50 ms | gap p95 ms |")
    print("|---|---|---|")
    for kind, g in gaps.items():
        p50, p95 = p50_p95(g)
        print(f"| {kind} | {p50:.2f} | {p95:.2f} |", flush=True)


def stream_cost(path: str, pairs: int) -> None:
    engine_part(path, pairs)
    if os.environ.get("STREAM_COST_SERVERS", "1") != "0":
        server_part(path, max(2, pairs))
