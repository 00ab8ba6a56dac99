"""llama_cffi next to llama.cpp's own tools from the same build, one run, one machine.

For each model (and the thread count given): pp512 and tg128 through the
object layer and through LLM.complete versus llama-bench (interleaved pairs,
median ratio); the cost of a trivial C call; the share of a generated token's
time spent outside llama_decode in LLM.complete; tokenization throughput on
~1 MB of text versus llama-tokenize; model load time cold (file evicted from
the page cache) and warm versus llama-completion's own load time; peak RSS of
load + 128 generated tokens versus llama-completion.

    python benchmarks/side_by_side.py [--pairs 3] [--json out.json] > table.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import llama_cffi as lc

from _common import TimedDecode, llama_bench, pp_seconds, random_tokens, tg_seconds, tools_dir


def evict(path: Path) -> None:
    """Drop a file from the page cache (cold load) without root."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def rss_of(cmd: list[str]) -> float:
    """Peak RSS (MiB) of one command, measured in a fresh helper process."""
    helper = ("import resource, subprocess, sys; "
              "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
              "stderr=subprocess.DEVNULL, check=True); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", helper, *cmd], capture_output=True, text=True,
                         check=True).stdout
    return int(out.strip()) / 1024


def completion_load_ms(model: Path) -> float:
    out = subprocess.run([str(tools_dir() / "llama-completion"), "-m", str(model), "-p", "Hi",
                          "-n", "1", "-t", "2", "-no-cnv", "-c", "512"],
                         capture_output=True, text=True, check=True).stderr
    m = re.search(r"load time =\s+([0-9.]+) ms", out)
    return float(m.group(1)) if m else float("nan")


def measure(name: str, threads: int, pairs: int) -> dict[str, Any]:
    path = lc.models.fetch(name)
    row: dict[str, Any] = {"model": name, "threads": threads}
    rng = random.Random(0)
    with lc.Model(path) as model:
        # pp512 / tg128, object layer vs llama-bench
        for test, (n_p, n_g) in {"pp512": (512, 0), "tg128": (0, 128)}.items():
            n = n_p or n_g
            with model.context(n_ctx=n, n_batch=2048, n_threads=threads,
                               n_threads_batch=threads) as ctx:
                batch = lc.Batch(ctx.n_batch if n_p else 1)
                run = pp_seconds if n_p else tg_seconds
                run(ctx, batch, random_tokens(model, n, rng))
                ours, theirs = [], []
                for _ in range(pairs):
                    theirs.append(llama_bench(path, n_prompt=n_p, n_gen=n_g, threads=threads))
                    ours.append(n / run(ctx, batch, random_tokens(model, n, rng)))
                batch.close()
            row[f"{test}_ours"] = statistics.median(ours)
            row[f"{test}_llama_bench"] = statistics.median(theirs)
            row[f"{test}_ratio"] = statistics.median(o / t for o, t in zip(ours, theirs))
        # tg128 through LLM.complete (greedy, stop-string checks, detokenization)
        with lc.LLM(model, n_ctx=512, n_threads=threads) as llm:
            prompt = random_tokens(model, 16, rng)
            llm.complete(prompt, max_tokens=8, temperature=0, add_special=False)
            ours, theirs, outside = [], [], []
            for _ in range(pairs):
                theirs.append(llama_bench(path, n_prompt=0, n_gen=128, threads=threads))
                prompt = random_tokens(model, 16, rng)  # no reuse: a fresh generation each time
                with TimedDecode() as timed:
                    r = llm.complete(prompt, max_tokens=128, temperature=0,
                                     stop=["\n\n\n\n", "<|im_end|>"], add_special=False)
                gen = r.timings.generation_seconds
                ours.append(r.timings.generated_tokens / gen)
                outside.append(1 - timed.inside / (gen + r.timings.prompt_seconds))
            row["complete_tg_ours"] = statistics.median(ours)
            row["complete_tg_ratio"] = statistics.median(o / t for o, t in zip(ours, theirs))
            row["complete_outside_decode_share"] = statistics.median(outside)
            # a trivial C call through the binding
            ctx = llm.ctx
            t0 = time.perf_counter()
            for _ in range(100_000):
                ctx.n_ctx
            row["trivial_call_ns"] = (time.perf_counter() - t0) / 100_000 * 1e9
    # tokenization throughput, ~1 MB of text, vocabulary-only load included on both sides
    text = (Path(lc.__file__).parent.parent.parent / "README.md")
    corpus = (text.read_text() if text.exists() else "The quick brown fox. " * 100) * 1
    corpus = (corpus * (1_000_000 // max(1, len(corpus)) + 1))[:1_000_000]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write(corpus)
    t0 = time.perf_counter()
    with lc.Model(path, vocab_only=True) as vm:
        n_tok = len(vm.vocab.tokenize(corpus, add_special=False))
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([str(tools_dir() / "llama-tokenize"), "-m", str(path), "-f", fh.name,
                    "--ids", "--log-disable", "--no-bos"], capture_output=True, check=True)
    theirs_s = time.perf_counter() - t0
    os.unlink(fh.name)
    row["tokenize_tps_ours"] = n_tok / ours_s
    row["tokenize_tps_llama_tokenize"] = n_tok / theirs_s
    # load time: model + a 512-token context, cold and warm, versus llama-completion's
    for state in ("cold", "warm"):
        if state == "cold":
            evict(path)
        t0 = time.perf_counter()
        with lc.Model(path) as m, m.context(n_ctx=512):
            pass
        row[f"load_{state}_ms_ours"] = (time.perf_counter() - t0) * 1000
        if state == "cold":
            evict(path)
        row[f"load_{state}_ms_llama_completion"] = completion_load_ms(path)
    # peak RSS of load + 128 generated tokens
    script = ("import llama_cffi as lc, sys; "
              "llm = lc.LLM(sys.argv[1], n_ctx=512, n_threads=2); "
              "llm.complete('Once upon a time', max_tokens=128, temperature=0)")
    row["rss_mib_ours"] = rss_of([sys.executable, "-c", script, str(path)])
    row["rss_mib_llama_completion"] = rss_of([
        str(tools_dir() / "llama-completion"), "-m", str(path), "-p", "Once upon a time",
        "-n", "128", "-t", "2", "--temp", "0", "-no-cnv", "-c", "512"])
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| measure | " + " | ".join(r["model"] for r in rows) + " |",
           "|---|" + "---|" * len(rows)]

    def line(label: str, fmt: Any) -> None:
        out.append(f"| {label} | " + " | ".join(fmt(r) for r in rows) + " |")

    line("pp512 t/s: llama_cffi / llama-bench (ratio)",
         lambda r: f"{r['pp512_ours']:.1f} / {r['pp512_llama_bench']:.1f} ({r['pp512_ratio']:.3f})")
    line("tg128 t/s: llama_cffi / llama-bench (ratio)",
         lambda r: f"{r['tg128_ours']:.1f} / {r['tg128_llama_bench']:.1f} ({r['tg128_ratio']:.3f})")
    line("tg128 via LLM.complete t/s (ratio to llama-bench)",
         lambda r: f"{r['complete_tg_ours']:.1f} ({r['complete_tg_ratio']:.3f})")
    line("LLM.complete time outside llama_decode",
         lambda r: f"{100 * r['complete_outside_decode_share']:.2f} %")
    line("trivial C call (ctx.n_ctx)", lambda r: f"{r['trivial_call_ns']:.0f} ns")
    line("tokenize 1 MB, tokens/s: llama_cffi / llama-tokenize",
         lambda r: f"{r['tokenize_tps_ours']:.0f} / {r['tokenize_tps_llama_tokenize']:.0f}")
    line("load cold ms: llama_cffi / llama-completion",
         lambda r: f"{r['load_cold_ms_ours']:.0f} / {r['load_cold_ms_llama_completion']:.0f}")
    line("load warm ms: llama_cffi / llama-completion",
         lambda r: f"{r['load_warm_ms_ours']:.0f} / {r['load_warm_ms_llama_completion']:.0f}")
    line("peak RSS MiB, load + 128 tokens: llama_cffi / llama-completion",
         lambda r: f"{r['rss_mib_ours']:.0f} / {r['rss_mib_llama_completion']:.0f}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = [measure(m, a.threads, a.pairs) for m in a.models.split(",")]
    print(markdown(rows))
    print("\nSpeculative decoding: benchmarks/speculative_speedup.py; several prompts at once: "
          "benchmarks/engine_throughput.py.")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
