"""Aggregate generation throughput of LLM.generate_batch with 1, 2, 4, 8 prompts,
against the same prompts run one after another, and llama-batched-bench.

    python benchmarks/batch_throughput.py [--n-gen 64]
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess

import llama_cffi as lc

from _common import random_tokens, tools_dir


def batched_bench(model_path: str, n_prompt: int, n_gen: int, npl: list[int]) -> dict[int, float]:
    """S_TG (generation tokens/s over all sequences) per parallel count."""
    cmd = [str(tools_dir() / "llama-batched-bench"), "-m", model_path, "-c", "4096",
           "-b", "2048", "-ub", "512", "-t", "2", "-npp", str(n_prompt), "-ntg", str(n_gen),
           "-npl", ",".join(map(str, npl))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and re.fullmatch(r"\d+", cells[2] or ""):
            # | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |
            result[int(cells[2])] = float(cells[7])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-prompt", type=int, default=32)
    ap.add_argument("--n-gen", type=int, default=64)
    a = ap.parse_args()
    path = lc.models.fetch("smollm2-135m")
    counts = [1, 2, 4, 8]
    rng = random.Random(0)
    print("| prompts | generate_batch t/s | one after another t/s | speed-up | "
          "llama-batched-bench S_TG t/s | ratio to batched-bench |")
    print("|---|---|---|---|---|---|")
    theirs = batched_bench(str(path), a.n_prompt, a.n_gen, counts)
    with lc.LLM(path, n_ctx=4096, n_seq_max=8, n_threads=2) as llm:
        for k in counts:
            prompts = [random_tokens(llm.model, a.n_prompt, rng) for _ in range(k)]
            # ignore_eos is not a thing here: random prompts rarely end early
            res = llm.generate_batch(prompts, max_tokens=a.n_gen, temperature=0)
            batch_tps = res[0].timings.generated_tokens / res[0].timings.generation_seconds
            n = 0
            gen_time = 0.0
            for p in prompts:
                r = llm.complete(p, max_tokens=a.n_gen, temperature=0, add_special=False)
                n += r.usage.completion_tokens
                gen_time += r.timings.generation_seconds
            seq_tps = n / gen_time
            ref = theirs.get(k, float("nan"))
            print(f"| {k} | {batch_tps:.1f} | {seq_tps:.1f} | {batch_tps / seq_tps:.2f}x | "
                  f"{ref:.1f} | {batch_tps / ref:.2f} |")


if __name__ == "__main__":
    main()
