"""The engine against llama.cpp's own tools, one run, one machine.

1. Aggregate generation tokens/s with 1, 2, 4, 8 concurrent requests (random
   32-token prompts, 128 tokens each, ignore_eos) against llama-batched-bench's
   S_TG at the same parallelism (same context, batch and thread settings),
   and at 1 request against llama-bench tg128.
2. Binding time per generated token (wall time minus the time spent inside
   llama_decode, per token and slot) at 1, 2, 4 and 8 requests, and at 1 and 8
   with the greedy choice made inside the graph (backend_sampling). Each
   count also runs with the engine's generation runs in C turned off
   (``engine.run_steps = 0``: one Python step per token), for comparison.
3. Time to first token of 4 requests sharing a 300-token prefix, with and
   without copying the prefix between slots.
4. Grammar-constrained generation (a JSON schema): ms per token against
   llama-completion --json-schema with the same schema.
5. Streamed and logprobs requests in the generation runs (``--parts stream``,
   :mod:`stream_cost`): binding time, inter-token gaps, SSE against llama-server.

    python benchmarks/engine_throughput.py [--models smollm2-135m,gemma3-270m] > table.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import TimedDecode, llama_bench, random_tokens, tools_dir
from stream_cost import stream_cost

import llama_cffi as lc
from llama_cffi.engine.engine import RUN_STEPS

COUNTS = [1, 2, 4, 8]
N_PROMPT, N_GEN, THREADS = 32, 128, 2
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"},
    "hobbies": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "age", "hobbies"]}


def batched_bench(model_path: str, counts: list[int], *, n_gen: int = N_GEN,
                  threads: int = THREADS, flags: tuple[str, ...] = ()) -> dict[int, float]:
    """llama-batched-bench's S_TG (generation tokens/s over all sequences) per count
    (``flags``: more of its flags, such as ``-ngl 99``)."""
    cmd = [str(tools_dir() / "llama-batched-bench"), "-m", model_path, "-c", "4096",
           "-b", "2048", "-ub", "512", "-t", str(threads), "-npp", str(N_PROMPT),
           "-ntg", str(n_gen), "-npl", ",".join(map(str, counts)), *flags]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and re.fullmatch(r"\d+", cells[2] or ""):
            result[int(cells[2])] = float(cells[7])
    return result


def engine_tg(llm: lc.LLM, k: int, rng: random.Random,
              backend: bool = False, n_gen: int = N_GEN) -> tuple[float, float, float]:
    """(aggregate generation tokens/s, binding ms per token per slot, of which
    ms choosing tokens inside generation runs in C) for k requests
    (``backend``: sampled inside the graph, llama.cpp's --backend-sampling)."""
    prompts = [random_tokens(llm.model, N_PROMPT, rng) for _ in range(k)]
    firsts: list[float] = []
    with TimedDecode() as timer:
        t0 = time.perf_counter()
        handles = [llm.submit(p, max_tokens=n_gen, temperature=0, ignore_eos=True,
                              add_special=False, backend_sampling=backend) for p in prompts]
        done = [h.result() for h in handles]
        t_end = time.perf_counter()
        inside, sampling = timer.inside, timer.run_sampling
    for c in done:
        firsts.append(t0 + c.timings.time_to_first_token)
    window = t_end - max(firsts)
    tokens = sum(len(c.tokens) for c in done) - k  # the first ones came with the prompt
    wall = t_end - t0
    n = sum(len(c.tokens) for c in done)
    return tokens / window, (wall - inside) / n * 1e3, sampling / n * 1e3


def ttft_shared_prefix(llm: lc.LLM, share: bool) -> tuple[float, float]:
    """(median, max) seconds to first token of 4 requests sharing a 300-token prefix."""
    system = " ".join(f"Rule {i}: be kind to llamas and alpacas." for i in range(30))
    llm.engine.share_prefix = share
    try:
        # fresh caches: a different system prompt each run
        tag = f"[{random.random():.6f}] "
        handles = [llm.submit(tag + system + f"\nQ: question {i}?\nA:", max_tokens=4,
                              temperature=0) for i in range(4)]
        t = [h.result().timings.time_to_first_token for h in handles]
    finally:
        llm.engine.share_prefix = True
    return statistics.median(t), max(t)


def completion_ms_per_token(path: str, grammar_file: str | None = None) -> float:
    """llama-completion's time per generated token with the same JSON schema
    (``-j``, llama.cpp's converter) or the same grammar text (``grammar_file``):
    decode (its eval time) plus grammar-constrained sampling (its sampling
    time), as ours counts both."""
    constraint = ["--grammar-file", grammar_file] if grammar_file else ["-j", json.dumps(SCHEMA)]
    cmd = [str(tools_dir() / "llama-completion"), "-m", path, "-p", "Describe a person as JSON:",
           "-n", "96", "-t", str(THREADS), "--temp", "0", *constraint, "-no-cnv", "--perf"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    err = proc.stderr + proc.stdout
    m = re.search(r"common_perf_print:\s+eval time =\s*([0-9.]+) ms /\s*(\d+) runs", err)
    smp = re.search(r"common_perf_print:\s+sampling time =\s*([0-9.]+) ms", err)
    if not m or not smp:
        raise RuntimeError("no eval/sampling time in llama-completion's output:\n" + err[-2000:])
    runs = int(m.group(2))
    # decode + sampling of each generated token (its sampling time also covers
    # the token sampled from the prompt: one more than the decode runs)
    return (float(m.group(1)) + float(smp.group(1)) * runs / (runs + 1)) / runs


def ours_ms_per_token(llm: lc.LLM, grammar: lc.Grammar | None = None) -> float:
    c = llm.complete("Describe a person as JSON:", max_tokens=96, temperature=0,
                     **({"grammar": grammar} if grammar else {"json_schema": SCHEMA}))
    return c.timings.generation_seconds / max(1, len(c.tokens) - 1) * 1e3


def json_schema_cost(path: str, pairs: int = 4) -> None:
    """Interleaved pairs (ours, then llama-completion's), median of the ratios:
    each side with its own converter (``json_schema`` / ``-j``), then both with
    the same grammar text (ours with llama.cpp's whitespace rule), which makes
    both generate the same text."""
    same = lc.Grammar.from_json_schema(SCHEMA, whitespace="free")
    with tempfile.NamedTemporaryFile("w", suffix=".gbnf", delete=False) as f:
        f.write(same.text)
    try:
        with lc.LLM(path, n_ctx=1024, n_threads=THREADS) as llm:
            ours_ms_per_token(llm)  # warm-up
            for label, grammar, gfile in (("own converters", None, None),
                                          ("same grammar", same, f.name)):
                ours, theirs = [], []
                for _ in range(pairs):
                    ours.append(ours_ms_per_token(llm, grammar))
                    theirs.append(completion_ms_per_token(path, gfile))
                ratio = statistics.median(o / t for o, t in zip(ours, theirs))
                print(f"\nJSON schema ({label}), ms per token: llama_cffi "
                      f"{statistics.median(ours):.2f} / llama-completion "
                      f"{statistics.median(theirs):.2f} (median ratio of {pairs} interleaved "
                      f"pairs {ratio:.2f})")
    finally:
        os.unlink(f.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--parts", default="tg,json",
                    help="tg (throughput, binding time, TTFT), json, stream (streams, logprobs)")
    ap.add_argument("--pairs", type=int, default=3, help="interleaved pairs per figure")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    for name in a.models.split(","):
        path = str(lc.models.fetch(name))
        print(f"\n### {name}\n")
        if "tg" in parts:
            throughput(path, a.pairs)
        if "json" in parts:
            json_schema_cost(path)
        if "stream" in parts:
            stream_cost(path, a.pairs)


def throughput(path: str, pairs: int) -> None:
    """Each figure against llama.cpp's tool is the median of ``pairs`` ratios,
    each from one tool run followed by the same work here (the machine's
    speed drifts by more than the differences the ratios are meant to show)."""
    rng = random.Random(0)
    print(f"Median of {pairs} interleaved pairs per row.\n")
    print("| requests | engine t/s | llama-batched-bench S_TG t/s | ratio | "
          "binding ms/token (of which choosing tokens in C) | "
          "per-step Python: t/s, ratio, binding ms/token |")
    print("|---|---|---|---|---|---|")
    refs: dict[int, float] = {}
    with lc.LLM(path, n_ctx=4096, n_parallel=8, n_threads=THREADS, n_batch=2048,
                n_ubatch=512) as llm:
        engine_tg(llm, 1, rng)  # warm-up
        for k in COUNTS:
            rows = []
            for _ in range(pairs):
                ref = batched_bench(path, [k])[k]
                tps, binding, choosing = engine_tg(llm, k, rng)
                llm.engine.run_steps = 0  # the same requests without generation runs in C
                try:
                    tps0, binding0, _ = engine_tg(llm, k, rng)
                finally:
                    llm.engine.run_steps = RUN_STEPS
                rows.append((tps, ref, tps / ref, binding, choosing, tps0, tps0 / ref, binding0))
            m = [statistics.median(col) for col in zip(*rows)]
            refs[k] = m[1]
            print(f"| {k} | {m[0]:.1f} | {m[1]:.1f} | {m[2]:.3f} | {m[3]:.3f} ({m[4]:.3f}) | "
                  f"{m[5]:.1f}, {m[6]:.3f}, {m[7]:.3f} |")
        ones = []
        for _ in range(pairs):
            ref = llama_bench(Path(path), n_prompt=0, n_gen=N_GEN, threads=THREADS, reps=1)
            one, _, _ = engine_tg(llm, 1, rng)
            ones.append((one, ref, one / ref))
        one, ref, ratio = (statistics.median(col) for col in zip(*ones))
        print(f"\n1 request vs llama-bench tg{N_GEN}: {one:.1f} / {ref:.1f} t/s "
              f"(median ratio {ratio:.3f}; each pair: "
              f"{', '.join(f'{r:.3f}' for _, _, r in ones)})\n")
        print("| requests, greedy in the graph (backend_sampling) | engine t/s | ratio to "
              "S_TG above | binding ms/token |")
        print("|---|---|---|---|")
        for k in (1, 8):
            tps, binding, _ = engine_tg(llm, k, rng, backend=True)
            print(f"| {k} | {tps:.1f} | {tps / refs[k]:.3f} | {binding:.3f} |")
        print()
        with_copy = ttft_shared_prefix(llm, True)
        without = ttft_shared_prefix(llm, False)
        print("| 4 requests, 300-token shared prefix | TTFT median s | TTFT max s |")
        print("|---|---|---|")
        print(f"| prefix copied between slots | {with_copy[0]:.3f} | {with_copy[1]:.3f} |")
        print(f"| each evaluates the prefix | {without[0]:.3f} | {without[1]:.3f} |")


if __name__ == "__main__":
    main()
