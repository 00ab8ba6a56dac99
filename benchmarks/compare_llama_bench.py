"""pp512 / tg128 through llama_cffi's object layer versus llama-bench, same build.

Runs interleaved pairs (llama-bench, ours, llama-bench, ours, ...) and prints
the median ratio per model and test, as a markdown table and as JSON.

Because these 2-core machines are noisy (the same llama-bench run varies by
3-20 %), it also reports the binding's own cost, which does not depend on how
fast the machine happens to be: the wall time of the object-layer loop minus
the time spent inside ``llama_decode`` (timed around the C call), per token.
(llama.cpp's own perf counters do not record decode time at this commit.)

    python benchmarks/compare_llama_bench.py [--pairs 5] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics

import llama_cffi as lc

from _common import TimedDecode, llama_bench, pp_seconds, random_tokens, tg_seconds

TESTS = {"pp512": (512, 0), "tg128": (0, 128)}


def measure(model_name: str, threads: int, pairs: int) -> list[dict[str, object]]:
    path = lc.models.fetch(model_name)
    rows = []
    rng = random.Random(0)
    with lc.Model(path) as model:
        for test, (n_prompt, n_gen) in TESTS.items():
            n = n_prompt or n_gen
            with model.context(n_ctx=n_prompt + n_gen, n_batch=2048, n_ubatch=512,
                               n_threads=threads, n_threads_batch=threads,
                               no_perf=False) as ctx:
                batch = lc.Batch(ctx.n_batch if n_prompt else 1)
                run = pp_seconds if n_prompt else tg_seconds
                run(ctx, batch, random_tokens(model, n, rng))  # warm-up, as llama-bench
                ours, theirs, overheads = [], [], []
                for _ in range(pairs):
                    theirs.append(llama_bench(path, n_prompt=n_prompt, n_gen=n_gen,
                                              threads=threads))
                    tokens = random_tokens(model, n, rng)
                    wall = run(ctx, batch, tokens)
                    ours.append(n / wall)
                    with TimedDecode() as timed:
                        wall = run(ctx, batch, tokens)
                    overheads.append(((wall - timed.inside) / n * 1e6, (wall - timed.inside) / wall))
                batch.close()
            ratios = [o / t for o, t in zip(ours, theirs)]
            rows.append({"model": model_name, "test": test, "threads": threads,
                         "llama_cffi_tps": statistics.median(ours),
                         "llama_bench_tps": statistics.median(theirs),
                         "ratio_median": statistics.median(ratios),
                         "binding_us_per_token_median": statistics.median(o[0] for o in overheads),
                         "binding_share_median": statistics.median(o[1] for o in overheads),
                         "ratios": ratios})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    a = ap.parse_args()
    rows = []
    for name in a.models.split(","):
        rows += measure(name, a.threads, a.pairs)
    print("| model | test | threads | llama_cffi t/s | llama-bench t/s | ratio (median of pairs) "
          "| binding cost per token (outside llama_decode) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['test']} | {r['threads']} | {r['llama_cffi_tps']:.1f} | "
              f"{r['llama_bench_tps']:.1f} | {r['ratio_median']:.3f} | "
              f"{r['binding_us_per_token_median']:.2f} µs = "
              f"{100 * r['binding_share_median']:.2f} % |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
