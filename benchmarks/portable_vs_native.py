"""The portable wheel next to the native build, one machine, one run.

pp512 and tg128 (llama-bench's tests, through the object layer as
benchmarks/_common.py measures them) in the native build (this interpreter's
llama_cffi: -march=native) and in the portable wheel installed in another
environment (its python given with --portable-python; scripts/ci_portable.sh
leaves one in build/portable/venv). Each measurement runs in a fresh child
process; native and portable alternate (interleaved pairs) and the table
gives the median portable/native ratio. The CPU variant the portable wheel
loaded is printed with the reason.

Hold the machine's lock around the whole run (no other decode may run):

    flock /tmp/llama.lock python benchmarks/portable_vs_native.py \\
        --portable-python build/portable/venv/bin/python [--pairs 5] [--models smollm2-135m,gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

WORKER = r"""
import json, random, sys
sys.path.insert(0, sys.argv[1])
import llama_cffi as lc
from _common import pp_seconds, random_tokens, tg_seconds
path, threads, reps = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
info = lc.system_info()
rng = random.Random(0)
with lc.Model(path) as model, \
        model.context(n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads,
                      n_threads_batch=threads) as ctx, lc.Batch(512) as batch:
    pp_tok = random_tokens(model, 512, rng)
    tg_tok = random_tokens(model, 128, rng)
    pp_seconds(ctx, batch, pp_tok)  # warm-up, as llama-bench does
    tg_seconds(ctx, batch, tg_tok[:16])
    pp = [512 / pp_seconds(ctx, batch, pp_tok) for _ in range(reps)]
    tg = [128 / tg_seconds(ctx, batch, tg_tok) for _ in range(reps)]
print("RESULT " + json.dumps({"pp512": statistics.mean(pp), "tg128": statistics.mean(tg),
                              "variant": info.cpu_variant, "reason": info.cpu_variant_reason,
                              "file": lc.__file__}))
"""


def measure(python: str, model: Path, threads: int, reps: int) -> dict[str, object]:
    # cwd outside the source tree: the child's llama_cffi is its environment's
    proc = subprocess.run([python, "-c", "import statistics\n" + WORKER, str(HERE), str(model),
                           str(threads), str(reps)], capture_output=True, text=True,
                          cwd="/", timeout=1800)
    if proc.returncode != 0:
        sys.exit(f"{python}: the worker failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    out: dict[str, object] = json.loads(line[len("RESULT "):])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--portable-python", required=True,
                    help="python of the environment the portable wheel is installed in")
    ap.add_argument("--models", default="smollm2-135m",
                    help="registry names, comma-separated (smollm2-135m, gemma3-270m)")
    ap.add_argument("--pairs", type=int, default=5, help="interleaved native/portable pairs")
    ap.add_argument("--reps", type=int, default=3, help="repetitions inside each run")
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    a = ap.parse_args()

    import llama_cffi as lc

    raw: dict[str, dict[str, list[dict[str, object]]]] = {}
    print(f"threads {a.threads}, {a.pairs} interleaved pairs, {a.reps} reps per run\n")
    print("| model | test | native t/s | portable t/s | portable/native (median of pairs) |")
    print("|---|---|---:|---:|---:|")
    variant = ""
    for name in a.models.split(","):
        path = lc.models.fetch(name)
        runs: dict[str, list[dict[str, object]]] = {"native": [], "portable": []}
        for i in range(a.pairs):
            order = ("native", "portable") if i % 2 == 0 else ("portable", "native")
            for which in order:
                python = sys.executable if which == "native" else a.portable_python
                runs[which].append(measure(python, path, a.threads, a.reps))
        raw[name] = runs
        p0 = runs["portable"][0]
        variant = f"{p0['variant']} ({p0['reason']})"
        for test in ("pp512", "tg128"):
            nat = [float(str(r[test])) for r in runs["native"]]
            por = [float(str(r[test])) for r in runs["portable"]]
            ratio = statistics.median(p / n for p, n in zip(por, nat))
            print(f"| {name} | {test} | {statistics.median(nat):.1f} | "
                  f"{statistics.median(por):.1f} | {ratio:.3f} |")
    print(f"\nportable wheel's CPU variant: {variant}")
    if a.json:
        a.json.write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
