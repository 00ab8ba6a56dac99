"""AMX on a CPU that has it (issue 22): llama_cffi against llama-bench from the
same patched build, and AMX on against AMX off.

For each model (SmolLM2-135M Q4_1, Gemma 3 270M Q4_K_M) and the thread count
given, in interleaved rounds:

- llama-bench pp512 / tg128 (``--repack 1``, llama.cpp's default: the AMX
  weight repacking is on);
- ``llama-cffi bench -p 512 -n 128`` (llama-bench's procedure through
  llama_cffi, default model parameters: repacking on);
- ``LLM.complete``: 128 greedy tokens after a short prompt (the engine's path);
- the object layer with ``use_extra_bufts=False`` (no AMX repacking: what the
  build without AMX gave for these quantizations) and ``True``.

Ratios: llama_cffi / llama-bench (goal >= 0.97), AMX on / off (expected >= 2
for tg on Sapphire Rapids). On a CPU without AMX the script says so and stops
(``--anyway`` runs it regardless; the AMX rows then measure the AVX-512 paths).

    flock /tmp/llama.lock python benchmarks/amx_speed.py [--rounds 3] [--threads 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import llama_cffi as lc

from _common import llama_bench, pp_seconds, random_tokens, tg_seconds

HERE = Path(__file__).resolve().parent


def has_amx() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])
    return "amx_tile" in flags and "amx_int8" in flags


def cffi_bench(model: Path, threads: int) -> dict[str, float]:
    exe = Path(sys.executable).parent / "llama-cffi"
    cmd = [str(exe) if exe.exists() else "llama-cffi", "bench", "-m", str(model), "-p", "512",
           "-n", "128", "-t", str(threads), "-r", "3", "-o", "json"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return {f"{r['test']}": float(r["avg_ts"]) for r in out}


def complete_tg(model: Path, threads: int) -> float:
    with lc.LLM(model, n_threads=threads, n_threads_batch=threads, n_ctx=1024) as llm:
        llm.complete("Hello", max_tokens=8, temperature=0)  # warm-up
        r = llm.complete("Write a long story about a lighthouse keeper.", max_tokens=128,
                         temperature=0, ignore_eos=True)
        return r.timings.generation_tokens_per_second


def object_layer(model: Path, threads: int, repack: bool) -> dict[str, float]:
    rng = random.Random(0)
    with lc.Model(model, use_extra_bufts=repack) as m, \
            m.context(n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads,
                      n_threads_batch=threads) as ctx:
        batch = lc.Batch(512)
        pp_tok, tg_tok = random_tokens(m, 512, rng), random_tokens(m, 128, rng)
        pp_seconds(ctx, batch, pp_tok)
        pp = statistics.mean(512 / pp_seconds(ctx, batch, pp_tok) for _ in range(3))
        tg = statistics.mean(128 / tg_seconds(ctx, batch, tg_tok) for _ in range(3))
        batch.close()
        return {"pp512": pp, "tg128": tg}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--anyway", action="store_true", help="run on a CPU without AMX too")
    a = ap.parse_args()
    if not has_amx() and not a.anyway:
        print("this CPU has no AMX (amx_tile/amx_int8 not in /proc/cpuinfo): nothing to "
              "measure (--anyway runs it regardless)")
        return 0
    info = lc.system_info()
    print(f"AMX_INT8 in the build: {info.cpu_features.get('AMX_INT8', '0')}; "
          f"threads {a.threads}; {a.rounds} interleaved rounds\n")
    print("| model | test | llama-bench | llama-cffi bench | LLM.complete | AMX off | AMX on "
          "| cffi/bench | on/off |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in a.models.split(","):
        path = lc.models.fetch(name)
        rows: dict[str, dict[str, list[float]]] = {
            t: {k: [] for k in ("bench", "cffi", "llm", "off", "on")} for t in ("pp512", "tg128")}
        for _ in range(a.rounds):
            for t, n_p, n_g in (("pp512", 512, 0), ("tg128", 0, 128)):
                rows[t]["bench"].append(llama_bench(path, n_prompt=n_p, n_gen=n_g,
                                                    threads=a.threads, reps=3))
            cb = cffi_bench(path, a.threads)
            rows["pp512"]["cffi"].append(cb["pp512"])
            rows["tg128"]["cffi"].append(cb["tg128"])
            rows["tg128"]["llm"].append(complete_tg(path, a.threads))
            for repack, key in ((False, "off"), (True, "on")):
                r = object_layer(path, a.threads, repack)
                rows["pp512"][key].append(r["pp512"])
                rows["tg128"][key].append(r["tg128"])
            time.sleep(0.5)
        for t in ("pp512", "tg128"):
            med = {k: statistics.median(v) if v else float("nan") for k, v in rows[t].items()}
            print(f"| {name} | {t} | {med['bench']:.1f} | {med['cffi']:.1f} | "
                  f"{med['llm']:.1f} | {med['off']:.1f} | {med['on']:.1f} | "
                  f"{med['cffi'] / med['bench']:.3f} | {med['on'] / med['off']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
