"""Our server against llama-server from the same build, under streaming load.

For each model, ``llama-cffi serve`` (``python -m llama_cffi.apps.server``)
and then ``llama-server`` from the tools this build makes are started, one
after the other (never both at once), on free ports of 127.0.0.1 with the
same flags: ``-c 4096 -np N -t 2`` (llama-server also gets ``--jinja``, so
that both apply the model's own chat template). Each is loaded with 1, 4 and
8 concurrent clients, by default each level on a fresh server with as many
slots as clients (``-np N``; ``--np 4`` keeps one 4-slot server for all
levels, so that 8 clients queue for 4 slots); every client sends its share of requests one after the
other to ``POST /v1/chat/completions`` with ``stream: true``,
``stream_options.include_usage``, ``temperature: 0``, ``ignore_eos: true``
(llama-server's field, which both accept) and ``max_tokens`` (default 96),
each request with its own fixed prompt (the same prompts for both servers).

Reported per server and concurrency:

* aggregate generated tokens/s: the ``usage.completion_tokens`` the server
  reports in its last chunk, summed over the level's requests, divided by the
  level's wall time (first request sent to last stream closed);
* time to first token, p50 and p95: from sending a request to the first
  chunk that carries text (``delta.content`` not empty), queueing for a slot
  included (with ``--np 4``, 8 clients share 4 slots);
* inter-token gap, p50 and p95: the time between two consecutive chunks with
  text that a client reads, over all the level's streams;
* the server process's CPU time (user + system, all threads) per generated
  token;
* ours / llama-server ratios (goal of issue 23: aggregate >= 1.05, gaps no
  longer than llama-server's).

Each server is measured ``--rounds`` times (default 2, in ABBA order: ours,
llama-server, llama-server, ours) and the medians are reported; single
measurements scatter by 10-25 % on a shared 2-core machine. Every
concurrency level has its own prompts: a prompt seen before would be found
whole in a slot's cache and TTFT would no longer include prompt processing.

Run it on a quiet machine (both servers share its cores with this client),
under the lock the test suite uses, from the repository root::

    flock /tmp/llama_test.lock env PYTHONPATH=src \\
        python benchmarks/server_load.py --models smollm2-135m [--json out.json] > table.md

About 6 minutes per model with the defaults (``--per-client 1:16,4:6,8:3``:
requests per client at each concurrency, 20-25 s per level with SmolLM2 on
2 cores; ``--max-tokens 96``). For Gemma 3 270M, ``--per-client 1:8,4:4,8:2
--max-tokens 64`` keeps a run near 4 minutes. ``--servers ours`` or
``--servers llama-server`` measures one side only, ``--logs DIR`` keeps the
servers' logs (llama-server's give its prompt and generation times per
request). llama-server is looked for in ``build/*/bin`` (a build with
``-C cmake.define.LLAMA_CFFI_BUILD_TOOLS=ON``) or ``$LLAMA_CFFI_TOOLS_DIR``.
To compare by hand, start the two servers with the commands this script
prints to stderr (lines starting with ``$``) and point any OpenAI client
at each, one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _common import ROOT, tools_dir

import llama_cffi as lc

THREADS, N_CTX = 2, 4096
SUBJECTS = ["a lighthouse keeper", "a lost umbrella", "the first snow", "a clockmaker",
            "a river otter", "an old violin", "a night train", "a paper kite",
            "a desert well", "a robot gardener", "a tea merchant", "a sleeping volcano",
            "a library cat", "a broken compass", "a mountain goat", "a glass bottle"]
KINDS = ("Write a short story about", "Describe in detail", "Write a poem about",
         "Explain to a child the idea of")


def prompt(i: int) -> str:
    """The ``i``-th fixed prompt (all distinct: no request finds its whole prompt
    in a slot's cache; they share the chat template's start, as real chats do)."""
    return (f"{KINDS[(i // len(SUBJECTS)) % len(KINDS)]} {SUBJECTS[i % len(SUBJECTS)]} "
            f"in at most {100 + i} words.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_argv(kind: str, model: str, port: int, n_parallel: int) -> list[str]:
    common = ["-c", str(N_CTX), "-np", str(n_parallel), "-t", str(THREADS)]
    if kind == "ours":
        return [sys.executable, "-m", "llama_cffi.apps.server", model, *common,
                "--port", str(port), "--log-level", "warning"]
    return [str(tools_dir() / "llama-server"), "-m", model, *common, "--jinja",
            "--host", "127.0.0.1", "--port", str(port)]


@contextlib.contextmanager
def running(kind: str, model: str, n_parallel: int, log: Path,
            timeout: float = 180) -> Iterator[tuple[str, int]]:
    """(base URL, pid) of a server started for the block, ready (``/health`` 200)."""
    port = free_port()
    argv = server_argv(kind, model, port, n_parallel)
    print("$ " + " ".join(argv), file=sys.stderr, flush=True)
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} exited ({proc.returncode}):\n"
                                   + log.read_text(errors="replace")[-3000:])
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(url + "/health", timeout=5) as resp:
                if resp.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} did not start in {timeout} s:\n"
                                   + log.read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


async def one_request(client: httpx.AsyncClient, url: str, text: str,
                      max_tokens: int) -> tuple[float, int, list[float]]:
    """(seconds to the first text chunk, completion tokens from usage, seconds
    between consecutive text chunks) of one streamed chat."""
    body = {"messages": [{"role": "user", "content": text}], "stream": True,
            "stream_options": {"include_usage": True}, "temperature": 0,
            "ignore_eos": True, "max_tokens": max_tokens}
    t0 = time.perf_counter()
    ttft: float | None = None
    tokens: int | None = None
    stamps: list[float] = []
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {(await resp.aread())[:500]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"error in the stream: {chunk['error']}")
            if any(c.get("delta", {}).get("content") for c in chunk.get("choices") or []):
                stamps.append(time.perf_counter())
                if ttft is None:
                    ttft = stamps[0] - t0
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    if ttft is None or tokens is None:
        raise RuntimeError("a stream ended without text or without usage")
    return ttft, tokens, list(np.diff(stamps))


async def level(url: str, clients: int, per_client: int, max_tokens: int,
                first_prompt: int) -> dict[str, Any]:
    """``clients`` concurrent clients, each sending ``per_client`` requests in turn
    (a new connection for each request: llama-server closes kept-alive ones at times)."""
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        async def run_client(c: int) -> list[tuple[float, int, list[float]]]:
            return [await one_request(client, url, prompt(first_prompt + c * per_client + r),
                                      max_tokens) for r in range(per_client)]

        t0 = time.perf_counter()
        per = await asyncio.gather(*(run_client(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    ttfts = np.array([t for rows in per for t, _, _ in rows])
    tokens = sum(n for rows in per for _, n, _ in rows)
    gaps = np.array([g for rows in per for _, _, gs in rows for g in gs])
    return {"clients": clients, "requests": len(ttfts), "tokens": tokens, "wall_s": wall,
            "tok_s": tokens / wall, "ttft_p50": float(np.percentile(ttfts, 50)),
            "ttft_p95": float(np.percentile(ttfts, 95)),
            "gap_p50": float(np.percentile(gaps, 50)), "gap_p95": float(np.percentile(gaps, 95))}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def first_prompts(plan: dict[int, int]) -> dict[int, int]:
    """The index of each level's first prompt: each level has its own prompts."""
    out, first = {}, 0
    for clients, per_client in plan.items():
        out[clients] = first
        first += clients * per_client
    return out


def measure(kind: str, model: str, plan: dict[int, int], n_parallel: int, max_tokens: int,
            log: Path, firsts: dict[int, int]) -> dict[int, dict[str, Any]]:
    """The levels of ``plan`` on one server with ``n_parallel`` slots."""
    out: dict[int, dict[str, Any]] = {}
    with running(kind, model, n_parallel, log) as (url, pid):
        print(f"{kind} -np {n_parallel}: pid {pid}", file=sys.stderr, flush=True)
        # warm-up: every slot once, prompts not used below
        asyncio.run(level(url, n_parallel, 1, 8, first_prompt=10_000))
        for clients, per_client in plan.items():
            cpu0 = cpu_seconds(pid)
            r = asyncio.run(level(url, clients, per_client, max_tokens,
                                  first_prompt=firsts[clients]))
            r["server_cpu_ms_per_token"] = (cpu_seconds(pid) - cpu0) / r["tokens"] * 1e3
            print(f"{kind} {clients} clients: {r['tok_s']:.1f} t/s, TTFT p50 "
                  f"{r['ttft_p50'] * 1e3:.0f} ms p95 {r['ttft_p95'] * 1e3:.0f} ms, gap p50 "
                  f"{r['gap_p50'] * 1e3:.2f} ms p95 {r['gap_p95'] * 1e3:.2f} ms "
                  f"({r['requests']} requests, {r['wall_s']:.1f} s, server CPU "
                  f"{r['server_cpu_ms_per_token']:.1f} ms/token)", file=sys.stderr, flush=True)
            out[clients] = r
    return out


def median_of(rounds: list[dict[int, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """Per concurrency, the median over rounds of every figure."""
    out: dict[int, dict[str, Any]] = {}
    for k in rounds[0]:
        rows = [r[k] for r in rounds]
        out[k] = {key: float(np.median([row[key] for row in rows])) for key in rows[0]}
    return out


def table(name: str, ours: dict[int, dict[str, Any]], theirs: dict[int, dict[str, Any]],
          max_tokens: int, n_parallel: str) -> str:
    lines = [(f"### {name} (-c {N_CTX} -np {n_parallel} -t {THREADS}, {max_tokens} tokens "
              "per request)"), "",
             ("| clients | ours t/s | llama-server t/s | ratio | ours TTFT p50 / p95 ms | "
              "llama-server TTFT p50 / p95 ms | TTFT ratio p50 / p95 | "
              "ours gap p50 / p95 ms | llama-server gap p50 / p95 ms | "
              "server CPU ms/token ours / llama-server |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k in sorted(set(ours) | set(theirs)):
        a, b = ours.get(k), theirs.get(k)

        def cell(r: dict[str, Any] | None) -> tuple[str, str, str]:
            if r is None:
                return "-", "-", "-"
            return (f"{r['tok_s']:.1f}", f"{r['ttft_p50'] * 1e3:.0f} / {r['ttft_p95'] * 1e3:.0f}",
                    f"{r['gap_p50'] * 1e3:.2f} / {r['gap_p95'] * 1e3:.2f}")

        (at, attft, agap), (bt, bttft, bgap) = cell(a), cell(b)
        cpu = " / ".join("-" if r is None else f"{r['server_cpu_ms_per_token']:.1f}"
                         for r in (a, b))
        if a and b:
            ratio = f"{a['tok_s'] / b['tok_s']:.3f}"
            tr = f"{a['ttft_p50'] / b['ttft_p50']:.2f} / {a['ttft_p95'] / b['ttft_p95']:.2f}"
        else:
            ratio = tr = "-"
        lines.append(f"| {k} | {at} | {bt} | {ratio} | {attft} | {bttft} | {tr} | {agap} | "
                     f"{bgap} | {cpu} |")
    return "\n".join(lines)


def parse_plan(text: str) -> dict[int, int]:
    plan = {}
    for item in text.split(","):
        clients, _, per = item.partition(":")
        plan[int(clients)] = int(per)
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m",
                    help="registry names or GGUF paths, comma-separated")
    ap.add_argument("--servers", default="ours,llama-server")
    ap.add_argument("--per-client", default="1:16,4:6,8:3",
                    help="CLIENTS:REQUESTS_EACH,... (the concurrency levels)")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--np", default="match",
                    help="slots per server: 'match' (default: a fresh server per level with "
                         "-np = clients) or a number (one server for all levels)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="measure each server this many times (alternating which starts), "
                         "report the medians")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--logs", default=None, help="keep the servers' logs in this folder")
    a = ap.parse_args()
    plan = parse_plan(a.per_client)
    firsts = first_prompts(plan)
    # (slots, levels) of each server started per round
    groups = ([(clients, {clients: per}) for clients, per in plan.items()] if a.np == "match"
              else [(int(a.np), plan)])
    servers = a.servers.split(",")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(a.logs or tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        for name in a.models.split(","):
            path = str(lc.models.fetch(name)) if not name.endswith(".gguf") else name
            rounds: dict[str, list[dict[int, dict[str, Any]]]] = {k: [] for k in servers}
            for i in range(a.rounds):
                for kind in servers if i % 2 == 0 else servers[::-1]:
                    got: dict[int, dict[str, Any]] = {}
                    for n_parallel, levels in groups:
                        log = logdir / f"{Path(name).stem}-{kind}-np{n_parallel}-{i}.log"
                        got |= measure(kind, path, levels, n_parallel, a.max_tokens, log, firsts)
                    rounds[kind].append(got)
            medians = {kind: median_of(rows) for kind, rows in rounds.items()}
            results[name] = {"median": medians, "rounds": rounds}
            print(table(name, medians.get("ours", {}), medians.get("llama-server", {}),
                        a.max_tokens, "N (= clients)" if a.np == "match" else a.np))
            print(flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))

if __name__ == "__main__":
    main()
