"""Ray Data and Ray Serve over llama_cffi (llama_cffi.integrations), on local
Ray clusters: ``ray.init(num_cpus=2)`` and a head plus one worker node started
with ``ray start`` on 127.0.0.1.

Two actors or replicas share this machine's cores: each decodes with one
thread (two OpenMP teams spinning on the same cores would slow both many
times). Every wait is bounded; Ray is shut down in finalizers and no raylet
is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import ray  # in the test extra (the package's optional extra `ray`)

from llama_cffi.api.llm import LLM
from llama_cffi.integrations.ray_data import LLMPredictor

from .server_util import free_port

pytestmark = [pytest.mark.slow]

N_ROWS = 200
MAX_TOKENS = 6
PER_ACTOR = {"n_parallel": 4, "n_threads": 1,
             "sampling": {"temperature": 0.0, "max_tokens": MAX_TOKENS}}
SUBJECTS = ("sky", "sea", "grass", "sun", "snow", "night", "forest", "desert", "river", "moon")


def prompts(n: int = N_ROWS) -> list[str]:
    return [f"Fact {i}: the colour of the {SUBJECTS[i % 10]} is" for i in range(n)]


@pytest.fixture(scope="module")
def reference(smollm2_path: Path) -> list[str]:
    """The greedy texts of one process: one LLM with the same slots."""
    with LLM(smollm2_path, n_seq_max=4, n_ctx=4 * 2048, n_threads=1) as llm:
        done = llm.generate_batch(prompts(), temperature=0.0, max_tokens=MAX_TOKENS)
    return [c.text for c in done]


def _wait(cond: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if cond():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, timeout=10)
    return [int(p) for p in out.stdout.split() if int(p) != os.getpid()]


def _no_raylet_left() -> None:
    _wait(lambda: not _pids("ray/core/src/ray/raylet/raylet"), "the raylets to exit", 60)


@pytest.fixture(scope="class")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning",
             log_to_driver=False)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            from ray import serve
            serve.shutdown()
        ray.shutdown()
        _no_raylet_left()


def _dataset(model: Path, rows: list[dict[str, Any]], batch_size: int = 20) -> Any:
    return ray.data.from_items(rows).map_batches(
        LLMPredictor, fn_constructor_kwargs={"model": str(model), **PER_ACTOR},
        compute=ray.data.ActorPoolStrategy(size=2), batch_size=batch_size, num_cpus=1)


@pytest.mark.usefixtures("local_ray")
class TestLocalCluster:
    def test_map_batches_equals_one_process(self, smollm2_path: Path,
                                            reference: list[str]) -> None:
        rows: list[dict[str, Any]] = [{"id": i, "prompt": p, "sampling": None}
                                      for i, p in enumerate(prompts())]
        rows += [{"id": N_ROWS, "prompt": "Hi", "sampling": '{"temperature": "hot"}'},
                 {"id": N_ROWS + 1, "prompt": None, "sampling": None},
                 {"id": N_ROWS + 2, "prompt": "Hi", "sampling": '{"max_tokenz": 3}'}]
        out = sorted(_dataset(smollm2_path, rows).take_all(), key=lambda r: r["id"])
        assert [r["id"] for r in out] == list(range(N_ROWS + 3))
        good = out[:N_ROWS]
        assert [r["text"] for r in good] == reference
        assert all(r["error"] is None for r in good)
        assert all((r["finish_reason"] == "length") == (r["completion_tokens"] == MAX_TOKENS)
                   and r["finish_reason"] in ("length", "stop") for r in good)
        assert all(0 < r["prompt_tokens"] and r["usage"] == {
            "prompt_tokens": r["prompt_tokens"], "completion_tokens": r["completion_tokens"],
            "total_tokens": r["prompt_tokens"] + r["completion_tokens"]} for r in good)
        bad = {r["id"]: r for r in out[N_ROWS:]}
        assert "temperature" in bad[N_ROWS]["error"]
        assert "neither 'prompt' nor 'messages'" in bad[N_ROWS + 1]["error"]
        assert "max_tokenz" in bad[N_ROWS + 2]["error"]
        assert all(r["finish_reason"] == "error" and r["text"] == "" for r in bad.values())

    def test_chat_rows(self, smollm2_path: Path) -> None:
        rows = [{"id": 0, "messages": [{"role": "user", "content": "What is 2+2?"}]},
                {"id": 1, "messages": [{"role": "user", "content": "Name a colour."}]}]
        out = sorted(_dataset(smollm2_path, rows, batch_size=2).take_all(),
                     key=lambda r: r["id"])
        with LLM(smollm2_path, n_seq_max=1, n_threads=1) as llm:
            want = [llm.chat(r["messages"], temperature=0.0, max_tokens=MAX_TOKENS).content
                    for r in rows]
        assert [r["text"] for r in out] == want
        assert all(r["error"] is None for r in out)

    def test_killed_actor_is_retried_and_every_row_comes_once(
            self, smollm2_path: Path, reference: list[str]) -> None:
        rows = [{"id": i, "prompt": p} for i, p in enumerate(prompts())]
        seen: list[dict[str, Any]] = []
        killed: list[int] = []
        deadline = time.monotonic() + 600
        for row in _dataset(smollm2_path, rows, batch_size=10).iter_rows():
            seen.append(row)
            assert time.monotonic() < deadline, "the job took over 10 minutes"
            if not killed:  # the first rows are out: both actors are up and working
                actors = _pids("MapWorker")
                assert actors, "no Ray Data actor process found"
                os.kill(actors[-1], signal.SIGKILL)
                killed.append(actors[-1])
        assert killed
        ids = sorted(r["id"] for r in seen)
        assert ids == list(range(N_ROWS)), "a row was lost or came twice"
        assert [r["text"] for r in sorted(seen, key=lambda r: r["id"])] == reference

    def test_serve_two_replicas_openai_stream_and_replica_loss(
            self, smollm2_path: Path) -> None:
        from openai import OpenAI
        from ray import serve

        from llama_cffi.integrations.ray_serve import deployment

        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = deployment([str(smollm2_path), "-c", "1024", "-np", "2", "-t", "1", "-a", "m"],
                         num_replicas=2, ray_actor_options={"num_cpus": 0.5},
                         max_ongoing_requests=4)
        serve.run(app, route_prefix="/", name="llama", blocking=False)
        _wait(lambda: serve.status().applications["llama"].status == "RUNNING",
              "the Serve application", 300)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                        timeout=120, max_retries=0)
        question = [{"role": "user", "content": "What is the capital of France?"}]
        with LLM(smollm2_path, n_seq_max=1, n_threads=1) as llm:
            want = llm.chat(question, temperature=0.0, max_tokens=12)
        for _ in range(4):  # both replicas answer (Serve spreads the requests)
            stream = client.chat.completions.create(
                model="m", messages=question, max_tokens=12,  # type: ignore[arg-type]
                temperature=0, stream=True)
            parts, finish = [], None
            for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                    finish = chunk.choices[0].finish_reason or finish
            assert "".join(parts) == want.content and finish == want.finish_reason
        replicas = _pids("ServeReplica:llama")
        assert len(replicas) == 2, replicas
        os.kill(replicas[0], signal.SIGKILL)
        answered = 0
        for _ in range(8):  # every request after the loss still succeeds
            reply = client.chat.completions.create(
                model="m", messages=question, max_tokens=12,  # type: ignore[arg-type]
                temperature=0)
            assert reply.choices[0].message.content == want.content
            answered += 1
        assert answered == 8
        serve.delete("llama")


def _ray(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    out = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *args],
                         capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


DRIVER = """
import json, sys
import ray
from llama_cffi.integrations.ray_data import LLMPredictor
model, address, n, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
prompts = json.loads(sys.stdin.read())
ray.init(address=address, logging_level="warning", log_to_driver=False)
try:
    nodes = [x for x in ray.nodes() if x["Alive"]]
    rows = [{"id": i, "prompt": p} for i, p in enumerate(prompts)]
    ds = ray.data.from_items(rows).map_batches(
        LLMPredictor, fn_constructor_kwargs={"model": model, "n_parallel": 4, "n_threads": 1,
        "sampling": {"temperature": 0.0, "max_tokens": max_tokens}},
        compute=ray.data.ActorPoolStrategy(size=2), batch_size=20, num_cpus=1)
    out = sorted(ds.take_all(), key=lambda r: r["id"])
    print(json.dumps({"nodes": len(nodes), "ids": [r["id"] for r in out],
                      "texts": [r["text"] for r in out]}))
finally:
    ray.shutdown()
"""


def test_head_and_worker_node(smollm2_path: Path, reference: list[str]) -> None:
    """A head and one worker node (`ray start`, 127.0.0.1, one CPU each), the job
    driven from another process: the two actors land one per node; the texts
    equal one process's."""
    port = free_port()
    # the nodes and the driver share one token (Ray's token authentication)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
               RAY_USAGE_STATS_ENABLED="0")
    started = False
    try:
        _ray(env, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
             "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats")
        started = True
        _ray(env, "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
             "--num-cpus=1", "--disable-usage-stats")
        run = subprocess.run([sys.executable, "-c", DRIVER, str(smollm2_path),
                              f"127.0.0.1:{port}", str(N_ROWS), str(MAX_TOKENS)],
                             input=json.dumps(prompts()), capture_output=True, text=True,
                             timeout=600, env=env)
        assert run.returncode == 0, run.stderr[-5000:]
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result["nodes"] == 2
        assert result["ids"] == list(range(N_ROWS))
        assert result["texts"] == reference
    finally:
        if started:
            _ray(env, "stop", "--force")
        _no_raylet_left()


def test_pandas_batches_and_bad_rows_without_ray(smollm2_path: Path) -> None:
    """The class on its own (Ray's ``batch_format="pandas"``): a DataFrame in,
    every column out, each bad row's error in its row."""
    import pandas as pd

    predictor = LLMPredictor(str(smollm2_path), n_parallel=2, n_threads=1,
                             sampling={"temperature": 0.0, "max_tokens": 3})
    try:
        batch = pd.DataFrame({"prompt": ["The sky is", None, "Hi", "Hi"],
                              "sampling": [None, None, {"max_tokens": -5.5}, "not json"]})
        out = predictor(batch)
    finally:
        predictor.close()
    prompts_out = list(out["prompt"])  # pandas' missing value (None or NaN) kept as it was
    assert prompts_out[::2] == ["The sky is", "Hi"] and pd.isna(prompts_out[1])
    assert out["error"][0] is None and out["completion_tokens"][0] == 3
    assert "neither 'prompt' nor 'messages'" in out["error"][1]
    assert "max_tokens" in out["error"][2]
    assert "not a JSON object" in out["error"][3]
    assert list(out["finish_reason"][1:]) == ["error"] * 3
