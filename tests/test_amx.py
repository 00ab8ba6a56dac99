"""AMX (issue 22): with patches/0001-amx-per-thread-tile-permission.patch the
AMX kernels run in every worker thread, and give the greedy tokens of the
same build with AMX off (``use_extra_bufts=False``: no AMX repacking, the
AVX-512/VNNI paths).

At the pinned llama.cpp without the patch, prompt processing dies with SIGILL
in ``tinygemm_kernel_amx`` on the first worker thread that runs a tile
instruction, so each case runs in a child process: a crash is a failure that
names the signal, not the end of the test run.

These tests need a CPU with AMX (``amx_tile`` and ``amx_int8`` in
/proc/cpuinfo: Intel Sapphire Rapids and later); elsewhere they skip with
that reason. On such a CPU the build must have AMX compiled in (a native
build, LLAMA_CFFI_NATIVE_AMX=ON, the default; or the portable build's
sapphirerapids variant): a build without it fails here rather than skipping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


HAS_AMX = {"amx_tile", "amx_int8"} <= cpu_flags()
pytestmark = pytest.mark.skipif(
    not HAS_AMX, reason="this CPU has no AMX (amx_tile/amx_int8 not in /proc/cpuinfo); "
                        "the AMX kernels cannot run here")

THREADS = max(4, os.cpu_count() or 4)
"""Several worker threads: the bug was per thread (only one asked for AMX)."""
N_GEN = 24

CHILD = r"""
import json, sys
import llama_cffi as lc
a = json.loads(sys.argv[1])
out = {}
info = lc.system_info()
out["cpu_features"] = info.cpu_features
out["cpu_variant"] = info.cpu_variant
with lc.LLM(a["model"], use_extra_bufts=a["amx"], n_ctx=8192, n_batch=512, n_ubatch=512,
            n_seq_max=8, n_threads=a["threads"], n_threads_batch=a["threads"]) as llm:
    base = llm.tokenize(a["text"])
    prompt = (base * (a["n_prompt"] // len(base) + 1))[:a["n_prompt"]]
    r = llm.complete(prompt, max_tokens=a["n_gen"], temperature=0)
    out["long"] = r.tokens
    out["n_prompt"] = r.usage.prompt_tokens
    batch = llm.generate_batch(a["batch"], max_tokens=a["n_gen"], temperature=0)
    out["batch"] = [c.tokens for c in batch]
print("RESULT " + json.dumps(out))
"""

TEXT = ("The history of the printing press begins in the fifteenth century, when "
        "movable type changed how books were made, sold and read across Europe. ")
BATCH = [f"Chapter {i + 1}. The lighthouse keeper counted {i + 3} ships that night, and" for i in range(8)]


def run_child(model: Path, amx: bool) -> dict[str, Any]:
    args = {"model": str(model), "amx": amx, "threads": THREADS, "text": TEXT,
            "n_prompt": 512, "n_gen": N_GEN, "batch": BATCH}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        pytest.fail(f"the child with AMX {'on' if amx else 'off'} died with {name} "
                    f"(SIGILL: a thread ran a tile instruction without the tile data state)\n"
                    + proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result: dict[str, Any] = json.loads(line[len("RESULT "):])
    return result


@pytest.fixture(scope="module")
def runs(smollm2_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    on = run_child(smollm2_path, amx=True)
    off = run_child(smollm2_path, amx=False)
    return on, off


@pytest.mark.slow
def test_build_has_amx(runs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    on, _ = runs
    assert on["cpu_features"].get("AMX_INT8") == "1", (
        "this CPU has AMX but the build does not use it: built with "
        "-DLLAMA_CFFI_NATIVE_AMX=OFF, or a portable build whose sapphirerapids variant was "
        f"not loaded (loaded: {on['cpu_variant'] or 'native'})")


@pytest.mark.slow
def test_512_token_prompt_amx_on_equals_off(runs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    on, off = runs
    assert on["n_prompt"] == 512
    assert len(on["long"]) == N_GEN
    assert on["long"] == off["long"]


@pytest.mark.slow
def test_batch_of_8_sequences_amx_on_equals_off(
        runs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    on, off = runs
    assert len(on["batch"]) == 8 and all(len(t) == N_GEN for t in on["batch"])
    assert on["batch"] == off["batch"]
