"""GPU check: one table saying whether a GPU build of llama_cffi runs where it
should and how it compares with llama.cpp's own tools from the same build.

Rows: the backend and device in ``system_info``; greedy text with
``n_gpu_layers`` 0 and 99 against llama-completion; ``llama-cffi bench``
against llama-bench (pp/tg, all layers offloaded); the engine with 1, 4 and 8
streams against llama-batched-bench's S_TG; CPU-MoE (``cpu_moe``) on a
synthetic mixture-of-experts model (tests/synthetic.py): the experts in host
memory, the rest on the device, text equal to llama-completion ``--cpu-moe``;
the binding's share of a generated token (the engine's wall time per token
minus llama-batched-bench's, at 1 stream: llama_decode returns before a GPU
finishes, so the time inside it is not the device's time).

    LLAMA_CFFI_TOOLS_DIR=<build>/bin python benchmarks/gpu_check.py --backend cuda
    scripts/gpu_check.sh --backend vulkan --quick     # builds, then runs this

Needs llama.cpp's tools of the same build (``LLAMA_CFFI_TOOLS_DIR``), and the
``gguf`` package for the MoE model. ``--quick`` uses small token counts (for
lavapipe, Mesa's Vulkan driver on the CPU: its figures are not GPU speed).
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, llama_bench, tools_dir
from engine_throughput import batched_bench, engine_tg

import llama_cffi as lc

sys.path.insert(0, str(ROOT))  # tests.synthetic: the MoE model
PROMPT = "The old lighthouse keeper"
BACKENDS = {"cuda": ("CUDA", "CUDA"), "vulkan": ("VULKAN", "Vulkan")}  # compiled, device


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.failed = False

    def add(self, check: str, ours: str, theirs: str, result: str | bool) -> None:
        if isinstance(result, bool):
            self.failed |= not result
            result = "ok" if result else "FAILED"
        self.rows.append((check, ours, theirs, result))
        print(f"  {check}: {result}", file=sys.stderr, flush=True)

    def markdown(self) -> str:
        lines = ["| check | llama_cffi | llama.cpp (same build) | result |", "|---|---|---|---|"]
        lines += [f"| {' | '.join(r)} |" for r in self.rows]
        return "\n".join(lines)


def completion(model: Path, n: int, threads: int, flags: list[str]) -> str:
    """llama-completion's greedy text for PROMPT."""
    cmd = [str(tools_dir() / "llama-completion"), "-m", str(model), "-p", PROMPT, "-n", str(n),
           "--temp", "0", "-no-cnv", "--no-display-prompt", "-c", "512", "-t", str(threads),
           "--no-warmup", "-fit", "off", *flags]
    proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=600,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-completion failed: {proc.stderr.decode()[-2000:]}")
    return proc.stdout.decode(errors="replace").rstrip("\n")


def check_device(table: Table, backend: str) -> str:
    compiled, dev_backend = BACKENDS[backend]
    info = lc.system_info()
    devs = [d for d in info.devices if d.backend == dev_backend]
    listed = subprocess.run([str(tools_dir() / "llama-completion"), "--list-devices"],
                            capture_output=True, text=True, timeout=120, check=False).stdout
    theirs = next((ln.strip() for ln in listed.splitlines() if ln.strip().startswith(
        dev_backend + "0")), "none")
    ours = "; ".join(f"{d.name}: {d.description} ({d.memory_total // 2**20} MiB)"
                     for d in devs) or "none"
    table.add(f"system_info: {compiled} compiled, its device", ours, theirs,
              compiled in info.compiled_backends and bool(devs)
              and theirs.startswith(devs[0].name + ":"))
    if not devs:
        raise SystemExit(table.markdown() + f"\n\nno {dev_backend} device: stopped")
    return devs[0].name


def check_greedy(table: Table, model: Path, dev: str, n: int, threads: int) -> None:
    for ngl in (0, 99):
        with lc.LLM(model, devices=[dev], n_gpu_layers=ngl, n_ctx=512, n_threads=threads) as llm:
            ours = llm.complete(PROMPT, max_tokens=n, temperature=0).text
        theirs = completion(model, n, threads, ["-dev", dev, "-ngl", str(ngl)])
        table.add(f"greedy {n} tokens, n_gpu_layers {ngl}", repr(ours), repr(theirs),
                  ours == theirs and bool(ours))


def check_bench(table: Table, model: Path, pp: int, tg: int, reps: int, threads: int) -> None:
    cmd = [sys.executable, "-m", "llama_cffi", "bench", "-m", str(model), "-p", str(pp),
           "-n", str(tg), "-ngl", "99", "-r", str(reps), "-t", str(threads), "-o", "json"]
    ours = {r["test"]: r["avg_ts"] for r in json.loads(
        subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)}
    for test, kw in ((f"pp{pp}", dict(n_prompt=pp, n_gen=0)),
                     (f"tg{tg}", dict(n_prompt=0, n_gen=tg))):
        theirs = llama_bench(model, threads=threads, reps=reps, **kw)
        table.add(f"llama-cffi bench {test}, all layers offloaded (t/s)",
                  f"{ours[test]:.1f}", f"{theirs:.1f}", f"ratio {ours[test] / theirs:.3f}")


def reserve_outputs(ctx: lc.Context, n: int) -> None:
    """One decode with ``n`` outputs, then an empty context: on lavapipe a decode
    whose outputs grew from 1 to 4 crashed in llama_synchronize; decoding the
    most outputs first made that rarer."""
    with lc.Batch(n) as batch:
        for seq in range(n):
            batch.add(0, 0, (seq,), True)
        ctx.decode(batch)
    ctx.clear()


def engine_child(model: Path, k: int, n_gen: int, threads: int) -> None:
    """(In a child process) the engine's generation t/s with ``k`` streams, as JSON."""
    with lc.LLM(model, n_gpu_layers=-1, n_ctx=4096, n_parallel=8, n_threads=threads,
                n_batch=2048, n_ubatch=512) as llm:
        llm.engine.call(lambda: reserve_outputs(llm.ctx, k))
        rng = random.Random(k)
        engine_tg(llm, k, rng, n_gen=n_gen)  # warm-up
        print(json.dumps(engine_tg(llm, k, rng, n_gen=n_gen)[0]))


def check_engine(table: Table, model: Path, backend: str, n_gen: int, threads: int) -> None:
    """Engine rows, each count in its own process: a crash there (seen on
    lavapipe) becomes a FAILED row instead of ending the check."""
    counts = [1, 4, 8]
    theirs = batched_bench(str(model), counts, n_gen=n_gen, threads=threads,
                           flags=("-ngl", "99"))
    for k in counts:
        proc = subprocess.run([sys.executable, __file__, "--backend", backend, "--model",
                               str(model), "--threads", str(threads), "--n-gen", str(n_gen),
                               "--engine-child", str(k)], capture_output=True, text=True,
                              timeout=600, check=False)
        row = f"engine, {k} stream(s), {n_gen} tokens each (t/s)"
        ref = f"{theirs[k]:.1f} (llama-batched-bench S_TG)"
        if proc.returncode != 0:
            table.add(row, f"exit {proc.returncode}: {proc.stderr.strip()[-200:]!r}", ref, False)
            continue
        tps = float(proc.stdout.strip().splitlines()[-1])
        table.add(row, f"{tps:.1f}", ref, f"ratio {tps / theirs[k]:.3f}")
        if k == 1:
            # llama_decode returns before a GPU has finished (the wait falls in
            # the logits read), so "wall minus llama_decode" would count device
            # time as ours: the tool's time for the same token is the reference
            ours_ms, tool_ms = 1e3 / tps, 1e3 / theirs[k]
            table.add("binding's share of a token, 1 stream (wall minus the tool's "
                      "time per token)", f"{ours_ms:.2f} ms/token", f"{tool_ms:.2f} ms/token",
                      f"{(ours_ms - tool_ms) / ours_ms:.1%}")


def check_cpu_moe(table: Table, tokenizer: Path, dev: str, n: int, threads: int) -> None:
    from tests.synthetic import EXPERT_BYTES_PER_LAYER, N_LAYER, write_moe_model

    with tempfile.TemporaryDirectory() as tmp:
        moe = write_moe_model(Path(tmp) / "moe.gguf", tokenizer)
        with lc.Model(moe, devices=[dev], n_gpu_layers=-1, load_mode="none") as model:
            base = dict(model.buffers)
        with lc.LLM(moe, devices=[dev], n_gpu_layers=-1, cpu_moe=True, load_mode="none",
                    n_ctx=512, n_threads=threads) as llm:
            moved = base[dev] - llm.model.buffers[dev]
            ours = llm.complete(PROMPT, max_tokens=n, temperature=0).text
        theirs = completion(moe, n, threads, ["-dev", dev, "-ngl", "99", "--cpu-moe"])
    expected = N_LAYER * EXPERT_BYTES_PER_LAYER
    table.add("cpu_moe: experts moved off the device (bytes)", str(moved),
              f"{expected} (all experts)", abs(moved - expected) < 0.02 * 2**20)
    table.add(f"cpu_moe: greedy {n} tokens vs --cpu-moe", repr(ours), repr(theirs),
              ours == theirs and bool(ours))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=sorted(BACKENDS), required=True)
    ap.add_argument("--model", default="smollm2-135m", help="a model name or GGUF path")
    ap.add_argument("--quick", action="store_true",
                    help="small token counts (lavapipe): pp32/tg8, 4 tokens per stream")
    ap.add_argument("--threads", type=int, default=min(os.cpu_count() or 2, 8))
    ap.add_argument("--n-gen", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--engine-child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    from llama_cffi import models

    model = Path(a.model) if Path(a.model).is_file() else models.fetch(a.model)
    n, pp, tg, reps, n_gen = (4, 32, 8, 1, 4) if a.quick else (32, 512, 128, 3, 128)
    if a.engine_child is not None:
        engine_child(model, a.engine_child, a.n_gen or n_gen, a.threads)
        return
    start = time.perf_counter()
    table = Table()
    dev = check_device(table, a.backend)
    check_greedy(table, model, dev, n, a.threads)
    check_bench(table, model, pp, tg, reps, a.threads)
    check_engine(table, model, a.backend, n_gen, a.threads)
    check_cpu_moe(table, model, dev, n, a.threads)
    took = time.perf_counter() - start
    print(f"GPU check, --backend {a.backend}{' --quick' if a.quick else ''}, model "
          f"{model.name}, {a.threads} threads, {took:.0f} s\n")
    print(table.markdown())
    sys.exit(1 if table.failed else 0)


if __name__ == "__main__":
    main()
