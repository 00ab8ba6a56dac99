"""Rows per second through Ray Data (llama_cffi.integrations.ray_data) with 1
and 2 actors, against one in-process LLM with the same total slots: what Ray
costs per row. On a 2-core machine two actors cannot be faster than one
process; the figure to watch is the overhead.

    flock /tmp/llama.lock python benchmarks/ray_overhead.py [--rows 200] [--repeat 2]

Each run includes loading the model (once per actor, or once in-process) and,
for Ray, starting the actors; the Ray cluster itself (ray.init) is started
once, before the first timed run. Runs are interleaved (in-process, 1 actor,
2 actors, again ...) and the median is reported. Every decode uses one
thread per actor (two OpenMP teams on the same cores slow both many times);
the in-process LLM is measured with 1 and with 2 threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402

from llama_cffi import LLM, models  # noqa: E402
from llama_cffi.integrations.ray_data import LLMPredictor  # noqa: E402

SLOTS = 4


def prompts(n: int) -> list[str]:
    return [f"Fact {i}: the colour of the sky over city number {i} is" for i in range(n)]


def in_process(model: str, rows: list[str], max_tokens: int, n_threads: int) -> float:
    t0 = time.perf_counter()
    with LLM(model, n_seq_max=SLOTS, n_ctx=SLOTS * 2048, n_threads=n_threads,
             n_threads_batch=n_threads) as llm:
        done = llm.generate_batch(rows, temperature=0.0, max_tokens=max_tokens)
    assert len(done) == len(rows)
    return time.perf_counter() - t0


def through_ray(model: str, rows: list[str], max_tokens: int, actors: int) -> float:
    items = [{"id": i, "prompt": p} for i, p in enumerate(rows)]
    t0 = time.perf_counter()
    ds = ray.data.from_items(items).map_batches(
        LLMPredictor, fn_constructor_kwargs={
            "model": model, "n_parallel": SLOTS // actors, "n_threads": 1,
            "sampling": {"temperature": 0.0, "max_tokens": max_tokens}},
        compute=ray.data.ActorPoolStrategy(size=actors), batch_size=4 * (SLOTS // actors),
        num_cpus=1)
    out = ds.take_all()
    elapsed = time.perf_counter() - t0
    assert len(out) == len(rows) and all(r["error"] is None for r in out)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--model", default="smollm2-135m")
    a = ap.parse_args()
    model = str(models.fetch(a.model))
    rows = prompts(a.rows)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False)
    runs: dict[str, list[float]] = {}
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        for _ in range(a.repeat):
            for name, fn in (("in-process, 1 thread", lambda: in_process(model, rows,
                                                                          a.max_tokens, 1)),
                             ("in-process, 2 threads", lambda: in_process(model, rows,
                                                                           a.max_tokens, 2)),
                             ("Ray Data, 1 actor", lambda: through_ray(model, rows,
                                                                       a.max_tokens, 1)),
                             ("Ray Data, 2 actors", lambda: through_ray(model, rows,
                                                                        a.max_tokens, 2))):
                runs.setdefault(name, []).append(fn())
    finally:
        ray.shutdown()
    base = statistics.median(runs["in-process, 1 thread"])
    print(f"{a.rows} rows, {a.max_tokens} tokens each, {SLOTS} slots in all, model {a.model}, "
          f"median of {a.repeat}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'':24} {'seconds':>8} {'rows/s':>8} {'vs in-process 1 thread':>24}")
    for name, times in runs.items():
        t = statistics.median(times)
        extra_ms = (t - base) / a.rows * 1000
        print(f"{name:24} {t:8.2f} {a.rows / t:8.1f} {extra_ms:+20.1f} ms/row")


if __name__ == "__main__":
    main()
