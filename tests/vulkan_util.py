"""Helpers of the Vulkan device tests (tests/test_vulkan.py,
tests/test_vulkan_features.py): the devices they need (a missing one fails
the test), llama.cpp's ``llama-completion`` from the same Vulkan build run
with the same flags, and greedy text through llama_cffi to compare with it."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

import llama_cffi as lc
from llama_cffi._bindings.log import buffer_sizes
from llama_cffi.raw import BUILD_BACKENDS

from .synthetic import write_dense_model, write_moe_model

# the marks of the device test modules (their ``pytestmark``):
# LLAMA_CFFI_TEST_VULKAN=1 (CI's Vulkan step) runs them whatever the build: a
# build without the backend then fails instead of skipping
MARKS = [
    pytest.mark.vulkan,
    pytest.mark.skipif("VULKAN" not in BUILD_BACKENDS
                       and os.environ.get("LLAMA_CFFI_TEST_VULKAN") != "1",
                       reason="this llama_cffi was built without -DGGML_VULKAN=ON"),
]
PROMPT = "The old lighthouse keeper"
N_TOKENS = 6
MIB = 2**20
# llama.cpp reports sizes in MiB with two decimals
ROUNDING = 0.011 * MIB


def vulkan_devices(n: int) -> list[str]:
    """The names of the first ``n`` Vulkan devices; fails the test if there are fewer."""
    names = [d.name for d in lc.devices() if d.backend == "Vulkan"]
    if len(names) < n:
        pytest.fail(
            f"this test needs {n} Vulkan device(s), found {names or 'none'}: check the "
            "driver (VK_ICD_FILENAMES from scripts/vulkan_sdk.sh) and, for lavapipe or to "
            "list a GPU twice, GGML_VK_VISIBLE_DEVICES=0,0")
    return names[:n]


def check_vk_tools(tools_dir: Path) -> Path:
    """``tools_dir`` if its llama.cpp tools list a Vulkan device; fails the test otherwise."""
    proc = subprocess.run([str(tools_dir / "llama-completion"), "--list-devices"],
                          capture_output=True, text=True, timeout=120, check=False)
    if "Vulkan0" not in proc.stdout + proc.stderr:
        pytest.fail(f"the tools in {tools_dir} list no Vulkan device: set LLAMA_CFFI_TOOLS_DIR "
                    f"to the bin/ of the Vulkan build\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return tools_dir


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    """The synthetic dense model (tests/synthetic.py), one per test module."""
    return write_dense_model(tmp_path_factory.mktemp("vk") / "dense.gguf", smollm2_path)


@pytest.fixture(scope="module")
def moe(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    return write_moe_model(tmp_path_factory.mktemp("vk") / "moe.gguf", smollm2_path)


@pytest.fixture(scope="module")
def vk_tools(tools_dir: Path) -> Path:
    """llama.cpp's tools of a Vulkan build (they list the same Vulkan devices)."""
    return check_vk_tools(tools_dir)


class ToolRun:
    """What llama-completion printed: the generated text and its buffer reports."""

    def __init__(self, proc: subprocess.CompletedProcess[bytes]) -> None:
        self.text = proc.stdout.rstrip(b"\n")  # it ends the output with newlines
        self.log = proc.stderr.decode(errors="replace")
        lines = [(0, line) for line in self.log.splitlines()]
        self.model = buffer_sizes(lines, "model")
        self.kv = buffer_sizes(lines, "KV")


def llama_completion(tools: Path, model: Path, flags: list[str],
                     n: int = N_TOKENS) -> ToolRun:
    """llama-completion's greedy text for PROMPT (``--temp 0`` unless ``flags`` say otherwise)."""
    cmd = [str(tools / "llama-completion"), "-m", str(model), "-p", PROMPT,
           "-n", str(n), "--temp", "0", "-no-cnv", "--no-display-prompt", "-c", "256",
           "-t", "2", "--no-warmup", "-fit", "off", "-lm", "none",
           # the loader's buffer reports (shown from level 4), lines without prefixes
           "-lv", "4", "--no-log-prefix", "--no-log-timestamps", "--log-colors", "off", *flags]
    proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return ToolRun(proc)


def greedy(model: lc.Model, ctx_kw: dict[str, object] | None = None, n: int = N_TOKENS,
           loras: Mapping[lc.LoraAdapter, float] | None = None) -> tuple[bytes, dict[str, int]]:
    """Greedy text for PROMPT (as llama-completion prints it) and the KV buffers."""
    with model.context(n_ctx=256, n_threads=2, n_threads_batch=2, **(ctx_kw or {})) as ctx, \
            lc.Batch(1) as batch:
        if loras:
            ctx.set_loras(loras)
        ctx.eval_tokens(model.vocab.tokenize(PROMPT, add_special=True), 0)
        out = continue_greedy(ctx, batch, n)
        text = b"".join(model.vocab.token_to_piece(t) for t in out)
        return text, dict(ctx.buffers["KV"])


def continue_greedy(ctx: lc.Context, batch: lc.Batch, n: int) -> list[int]:
    """Up to ``n`` greedy tokens after what sequence 0 of ``ctx`` holds (its last
    output's logits); stops at end of generation."""
    vocab = ctx.model.vocab
    pos = ctx.seq_pos_max(0) + 1
    out: list[int] = []
    for _ in range(n):
        tok = int(np.argmax(ctx.logits()))
        if vocab.is_eog(tok):
            break
        out.append(tok)
        batch.clear()
        batch.add(tok, pos, (0,), True)
        ctx.decode(batch)
        pos += 1
    return out


def vk(buffers: dict[str, int]) -> dict[str, int]:
    """The buffers on Vulkan devices (not Vulkan_Host: pinned host memory)."""
    return {k: v for k, v in buffers.items() if re.fullmatch(r"Vulkan\d+", k)}


def host(buffers: dict[str, int]) -> int:
    """Bytes in host memory: CPU buffers and Vulkan_Host (pinned host memory, where
    llama.cpp puts CPU-resident weights when a Vulkan device is used)."""
    return sum(v for k, v in buffers.items() if k.startswith("CPU") or k == "Vulkan_Host")


def same_as_tool(model: lc.Model, tool: ToolRun, ctx_kw: dict[str, object] | None = None,
                 loras: Mapping[lc.LoraAdapter, float] | None = None
                 ) -> tuple[bytes, dict[str, int]]:
    """Weights, KV cache and greedy text equal what llama-completion reported."""
    assert model.buffers == tool.model
    text, kv = greedy(model, ctx_kw, loras=loras)
    assert kv == tool.kv
    assert text.rstrip(b"\n") == tool.text and text
    return text, kv
