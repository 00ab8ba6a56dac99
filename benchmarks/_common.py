"""Shared helpers: the same measurements llama-bench makes, through llama_cffi."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import llama_cffi as lc

ROOT = Path(__file__).resolve().parent.parent


def tools_dir() -> Path:
    env = os.environ.get("LLAMA_CFFI_TOOLS_DIR")
    if env:
        return Path(env)
    for candidate in sorted((ROOT / "build").glob("*/bin")):
        if (candidate / "llama-bench").exists():
            return candidate
    sys.exit("llama-bench not found: install with -C cmake.define.LLAMA_CFFI_BUILD_TOOLS=ON "
             "or set LLAMA_CFFI_TOOLS_DIR")


def random_tokens(model: lc.Model, n: int, rng: random.Random) -> list[int]:
    """llama-bench's input: BOS (if the model adds one) then random token ids."""
    n_vocab = model.vocab.n_tokens
    first = model.vocab.bos if model.vocab.add_bos and model.vocab.bos is not None \
        else rng.randrange(n_vocab)
    return [first] + [rng.randrange(n_vocab) for _ in range(n - 1)]


def pp_seconds(ctx: lc.Context, batch: lc.Batch, tokens: list[int]) -> float:
    """One prompt-processing run, as llama-bench's test_prompt (cleared memory)."""
    ctx.clear()
    t0 = time.perf_counter()
    step = batch.capacity
    for i in range(0, len(tokens), step):
        batch.set_tokens(tokens[i:i + step], i, output_last=True)
        ctx.decode(batch)
    ctx.logits(-1)  # waits for the device (a GPU's decode returns before it finishes)
    return time.perf_counter() - t0


def tg_seconds(ctx: lc.Context, batch: lc.Batch, tokens: list[int]) -> float:
    """One token-generation run, as llama-bench's test_gen: one token per decode."""
    ctx.clear()
    t0 = time.perf_counter()
    for pos, tok in enumerate(tokens):
        batch.clear()
        batch.add(tok, pos, (0,), True)
        ctx.decode(batch)
    ctx.logits(-1)  # the device runs the decodes in order: waiting for the last one suffices
    return time.perf_counter() - t0


def llama_bench(model_path: Path, *, n_prompt: int, n_gen: int, threads: int,
                reps: int = 1) -> float:
    """tokens/s that llama-bench reports for one test (pp or tg)."""
    cmd = [str(tools_dir() / "llama-bench"), "-m", str(model_path), "-p", str(n_prompt),
           "-n", str(n_gen), "-t", str(threads), "-r", str(reps), "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    (result,) = json.loads(proc.stdout)
    return float(result["avg_ts"])



class TimedDecode:
    """Counts the seconds spent inside ``llama_decode`` by the object layer.

    ``with TimedDecode() as t: ...`` swaps the ``lib`` that llama_cffi's
    context bindings call for a proxy whose ``llama_decode`` is timed, and the
    one the generation runs call (``llama_cffi_run``, which times its own
    decodes in C) for a proxy that adds the run's decode time; everything
    else passes through. ``wall - t.inside`` is then the binding's own cost
    (an upper bound: the proxy adds a little).
    """

    def __init__(self) -> None:
        from llama_cffi._bindings import context, run

        self._modules = (context, run)
        self._lib = context.lib
        self.inside = 0.0
        self.run_sampling = 0.0  # of the time outside, choosing tokens inside runs in C

    def __getattr__(self, name: str) -> object:
        return getattr(self._lib, name)

    def llama_decode(self, ctx: object, batch: object) -> int:
        t0 = time.perf_counter()
        rc = self._lib.llama_decode(ctx, batch)
        self.inside += time.perf_counter() - t0
        return rc

    def llama_cffi_run(self, *args: object) -> None:
        self._lib.llama_cffi_run(*args)
        self.inside += args[-1].t_decode_us / 1e6  # type: ignore[attr-defined]
        self.run_sampling += args[-1].t_sample_us / 1e6  # type: ignore[attr-defined]

    def __enter__(self) -> "TimedDecode":
        for m in self._modules:
            m.lib = self  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        for m in self._modules:
            m.lib = self._lib  # type: ignore[attr-defined]
