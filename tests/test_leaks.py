"""Memory does not grow over many create/use/free cycles.

Each check runs in a fresh interpreter: cycles of loading the real model
(mmap makes that cheap), creating a context, decoding and freeing it all;
then cycles of creating an LLM, completing one token and closing it. The
resident set size (``/proc/self/statm``) after a warm-up must not grow by
more than 5 MiB over the remaining cycles. ``malloc_trim`` runs before each
measurement so that freed-but-cached heap pages do not count; memory still
allocated (a leak) does.

A cycle costs about 0.25 s on the 2-core test machine (loading the
vocabulary alone is 0.15 s of it), so 1,000 cycles of each kind take about
8 minutes: by default each test runs ``CYCLES`` (200, about 50 s each);
``LLAMA_CFFI_LEAK_CYCLES=1000`` runs the full count.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from .conftest import run_python

PRELUDE = r'''
import ctypes, gc, json, os, sys, time
import llama_cffi as lc

PAGE = os.sysconf("SC_PAGE_SIZE")
libc = ctypes.CDLL("libc.so.6")


def rss():
    gc.collect()
    libc.malloc_trim(0)
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def measure(cycle, n, warmup):
    t0 = time.monotonic()
    for i in range(warmup):
        cycle(i)
    base = rss()
    t1 = time.monotonic()
    for i in range(warmup, n):
        cycle(i)
    end = rss()
    print(json.dumps({"cycles": n, "warmup": warmup, "growth": end - base, "rss": end,
                      "s_per_cycle": round((time.monotonic() - t1) / max(1, n - warmup), 4),
                      "seconds": round(time.monotonic() - t0, 1)}))

PATH, N, WARMUP = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
'''

OBJECTS = PRELUDE + r'''
TOKENS = None

def cycle(i):
    global TOKENS
    with lc.Model(PATH) as m:
        if TOKENS is None:
            TOKENS = m.vocab.tokenize("Hello")
        with m.context(n_ctx=64, n_batch=16, n_threads=1, n_threads_batch=1) as ctx, \
                lc.SamplerChain([lc.sampling.greedy()]) as chain:
            ctx.eval_tokens(TOKENS, 0)
            assert 0 <= chain.sample(ctx) < m.vocab.n_tokens
            b = lc.Batch(4)
            b.add(TOKENS[0], len(TOKENS), (0,), True)
            ctx.decode(b)
            b.close()

measure(cycle, N, WARMUP)
'''

LLM = PRELUDE + r'''
from llama_cffi.api.llm import LLM

def cycle(i):
    llm = LLM(PATH, n_ctx=64, n_batch=16, n_threads=1, n_threads_batch=1)
    try:
        out = llm.complete("Hello", max_tokens=1, temperature=0)
        assert len(out.text) >= 0
    finally:
        llm.close()

measure(cycle, N, WARMUP)
'''

LIMIT = 5 * 1024 * 1024
CYCLES = int(os.environ.get("LLAMA_CFFI_LEAK_CYCLES", "200"))
WARMUP = 50


def _run(code: str, path: Path, n: int, warmup: int, timeout: float) -> dict[str, float]:
    full = f"import sys; sys.argv = ['leaks', {str(path)!r}, '{n}', '{warmup}']\n" + code
    proc = run_python(full, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    report: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(report, file=sys.stderr)
    return report


@pytest.mark.slow
def test_model_context_decode_cycles_do_not_leak(smollm2_path: Path) -> None:
    report = _run(OBJECTS, smollm2_path, CYCLES, WARMUP, timeout=60 + CYCLES)
    assert report["growth"] < LIMIT, report


@pytest.mark.slow
def test_llm_create_close_cycles_do_not_leak(smollm2_path: Path) -> None:
    report = _run(LLM, smollm2_path, CYCLES, WARMUP, timeout=60 + CYCLES)
    assert report["growth"] < LIMIT, report


def test_the_leak_check_sees_a_leak(smollm2_path: Path) -> None:
    """The measurement is sensitive: contexts kept alive (never freed) show up."""
    code = PRELUDE + r'''
m = lc.Model(PATH)
kept = []

def cycle(i):
    kept.append(m.context(n_ctx=256, n_batch=16, n_threads=1))  # KV cache and buffers

measure(cycle, N, WARMUP)
for c in kept:
    c.close()
m.close()
'''
    report = _run(code, smollm2_path, 25, 5, timeout=120)
    assert report["growth"] > LIMIT, report
