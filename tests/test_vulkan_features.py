"""Features on real Vulkan devices (marker ``vulkan``), beside the placement
tests of tests/test_vulkan.py: a split over Vulkan0 and an RPC device, backend
sampling with the chain in the device's graph, a LoRA adapter on the device
and the multimodal projector on the device.

As there, each test first checks that the Vulkan devices it needs exist and
fails otherwise, the models are tiny synthetic GGUFs and each generation a
few tokens (lavapipe is slow), and results are compared with llama.cpp's own
tools from the same Vulkan build (``LLAMA_CFFI_TOOLS_DIR``) where one has
the flag (``--rpc``, ``-bs``, ``--lora``).
"""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import llama_cffi as lc
from llama_cffi._bindings.log import collect
from llama_cffi.objects.multimodal import MultimodalProjector

from .mmproj_synthetic import N_PATCHES, make_image, write_mmproj
from .synthetic import DENSE_BYTES_PER_LAYER, N_EMBD, N_LAYER, write_lora
from .vulkan_util import (MARKS, PROMPT, ROUNDING, continue_greedy, greedy, llama_completion,
                          same_as_tool, vk, vulkan_devices)
from .vulkan_util import dense, vk_tools  # noqa: F401 - fixtures

pytestmark = MARKS


# -- backend sampling ---------------------------------------------------------------

# (llama-completion flags, the same settings as SamplingParams fields)
CHAINS = {
    "greedy": (["--temp", "0"], dict(temperature=0)),
    "top_k+temp": (["--temp", "0.8", "--top-k", "20", "--samplers", "top_k;temperature"],
                   dict(temperature=0.8, top_k=20, samplers="top_k;temperature")),
}
SPLIT = re.compile(r"^## SPLIT #\d+: (\S+)")
NODE = re.compile(r"^node #\s*\d+ \(\s*(\w+)\):\s+(\S+)")
# the nodes llama.cpp's backend samplers add to the graph (src/llama-sampler.cpp)
SAMPLER_NODE = re.compile(r"^(top_k|dist_|greedy_|temp)")


def sampler_nodes(lines: list[str]) -> dict[str, set[str]]:
    """The sampler nodes of the graphs the scheduler printed (``GGML_SCHED_DEBUG=2``),
    by the backend of the split that ran them."""
    where: dict[str, set[str]] = {}
    split = "?"
    for line in lines:
        if m := SPLIT.match(line):
            split = m.group(1)
        elif (m := NODE.match(line)) and SAMPLER_NODE.match(m.group(2)):
            where.setdefault(split, set()).add(m.group(2))
    return where


@pytest.mark.tools
def test_backend_sampling_runs_in_the_devices_graph(
        dense: Path, vk_tools: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The chain runs in Vulkan0's graph (every sampler node in a Vulkan0 split of
    the scheduler's own report); greedy tokens equal the CPU-side chain's, and a
    seeded top-k/temperature chain equals llama-completion ``-bs`` on the device."""
    (dev,) = vulkan_devices(1)
    n = 8
    tools = {name: llama_completion(vk_tools, dense, ["-dev", dev, "-ngl", "99", "--seed", "7",
                                                      "-bs", *flags], n=n)
             for name, (flags, _) in CHAINS.items()}
    monkeypatch.setenv("GGML_SCHED_DEBUG", "2")  # read when the context is made
    kw_model = dict(devices=[dev], n_gpu_layers=-1, n_ctx=256, n_threads=2)
    for name, (_, kw) in CHAINS.items():
        # one LLM per request: on lavapipe the decode after a request that
        # sampled in the graph crashed reading its logits (reported with this test)
        with lc.LLM(dense, **kw_model) as llm:
            assert set(llm.ctx.buffers["KV"]) == {dev}
            caplog.clear()
            with caplog.at_level(logging.DEBUG, logger="llama_cffi"):
                ours = llm.complete(PROMPT, max_tokens=n, seed=7, backend_sampling=True, **kw)
            where = sampler_nodes(caplog.messages)
            assert set(where) == {dev} and where[dev], (name, where)
            assert ours.text.encode() == tools[name].text and ours.text, name
    with lc.LLM(dense, **kw_model) as llm:  # the greedy chain on the CPU
        cpu = llm.complete(PROMPT, max_tokens=n, temperature=0)
    assert cpu.text.encode() == tools["greedy"].text


# -- LoRA -----------------------------------------------------------------------------

LORA_LINE = re.compile(r"^\S+:\s+(\S+) LoRA buffer size =\s+([0-9.]+) MiB")


def lora_buffers(lines: list[str]) -> dict[str, int]:
    """Bytes per buffer of llama.cpp's "<buffer> LoRA buffer size = N MiB" lines."""
    return {m.group(1): int(float(m.group(2)) * 2**20)
            for m in map(LORA_LINE.match, lines) if m}


@pytest.mark.tools
def test_lora_adapter_on_the_device(dense: Path, vk_tools: Path, tmp_path: Path) -> None:
    """The adapter's tensors sit on the device of the weights they adapt, and the
    greedy text with it equals llama-completion ``--lora`` on the same device."""
    (dev,) = vulkan_devices(1)
    path = write_lora(tmp_path / "lora.gguf", N_EMBD, range(N_LAYER), scale=0.5)
    tool = llama_completion(vk_tools, dense, ["-dev", dev, "-ngl", "99", "--lora", str(path)])
    with lc.Model(dense, devices=[dev], n_gpu_layers=-1, load_mode="none") as model:
        with collect() as lines:
            adapter = lc.LoraAdapter(model, path)
        with adapter:
            placed = lora_buffers([line for _, line in lines])
            assert placed == lora_buffers(tool.log.splitlines())
            # rank 8 A and B of attn_q (64 x 64) in 4 layers, f32
            assert list(placed) == [dev]
            assert placed[dev] == pytest.approx(N_LAYER * 2 * 8 * N_EMBD * 4, abs=ROUNDING)
            with_lora, _ = same_as_tool(model, tool, loras={adapter: 1.0})
        plain, _ = greedy(model)
    assert with_lora != plain  # the adapter changed the device's computation


# -- multimodal projector ---------------------------------------------------------------

# the largest difference allowed between the device's and the CPU's projected
# embeddings, relative to the largest embedding value: ggml-vulkan multiplies
# in f16 where the device has it (lavapipe does), ggml-cpu in f32; measured on
# lavapipe 2.4e-3 (0.034 of 13.8), so the bound leaves a factor of 2
EMBD_TOLERANCE = 5e-3


def test_projector_on_the_device(dense: Path, tmp_path: Path) -> None:
    """``use_gpu=True`` runs the projector on Vulkan0 (libmtmd's report); its
    embeddings equal the CPU projector's within EMBD_TOLERANCE, and the greedy
    tokens after the image are the same."""
    (dev,) = vulkan_devices(1)
    mmproj = write_mmproj(tmp_path / "mmproj.gguf", N_EMBD)
    embd: dict[bool, np.ndarray] = {}
    tokens: dict[bool, list[int]] = {}
    with lc.Model(dense, devices=[dev], n_gpu_layers=-1, load_mode="none") as model:
        for use_gpu in (True, False):
            with collect() as lines:
                proj = MultimodalProjector(model, mmproj, use_gpu=use_gpu, warmup=False)
            with proj:
                backend = dev if use_gpu else "CPU"
                assert any(f"CLIP using {backend} backend" in line for _, line in lines), lines
                with proj.tokenize(f"Look: {proj.marker} and tell", [make_image(0)]) as prompt, \
                        model.context(n_ctx=256, n_threads=2) as ctx, lc.Batch(1) as batch:
                    embd[use_gpu] = proj.encode(prompt, 1).copy()
                    proj.evaluate(ctx, prompt)
                    tokens[use_gpu] = continue_greedy(ctx, batch, 6)
    assert embd[True].shape == (N_PATCHES, N_EMBD)
    scale = float(np.abs(embd[False]).max())
    diff = float(np.abs(embd[True] - embd[False]).max())
    print(f"projector on {dev}: largest difference {diff:.2e} from the CPU's "
          f"(largest value {scale:.2f})")
    assert diff <= EMBD_TOLERANCE * scale, (diff, scale)
    assert tokens[True] == tokens[False] and tokens[True]


# -- Vulkan0 plus an RPC device (last: its server stops, its device stays listed) ----

@pytest.fixture
def rpc_cpu(vk_tools: Path) -> Iterator[str]:
    """llama.cpp's ggml-rpc-server from the same build serving its CPU on
    127.0.0.1; yields its endpoint."""
    port = lc.rpc.free_port()
    proc = subprocess.Popen([str(vk_tools / "ggml-rpc-server"), "-d", "CPU", "-t", "2",
                             "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"ggml-rpc-server exited with {proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "ggml-rpc-server did not listen"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.tools
def test_tensor_split_over_vulkan_and_rpc(dense: Path, vk_tools: Path, rpc_cpu: str) -> None:
    """``tensor_split=[1, 1]`` over Vulkan0 and an RPC device: the weights and the
    KV cache split between them as llama-completion ``--rpc`` splits them, with
    the same greedy text."""
    (dev,) = vulkan_devices(1)
    # the tool first: the server takes one client at a time
    tool_flags = ["-ngl", "99", "-sm", "layer", "-ts", "1,1"]
    probe = subprocess.run([str(vk_tools / "llama-completion"), "--rpc", rpc_cpu,
                            "--list-devices"], capture_output=True, text=True, timeout=120,
                           check=False)
    (rpc_name,) = re.findall(r"^\s*(RPC\d+): " + re.escape(rpc_cpu), probe.stdout, re.M)
    tool = llama_completion(vk_tools, dense, ["--rpc", rpc_cpu, "-dev", f"{dev},{rpc_name}",
                                              *tool_flags])
    (rpc,) = lc.rpc.add_server(rpc_cpu)
    assert rpc.backend == "RPC" and rpc.description == rpc_cpu
    with lc.Model(dense, devices=[dev, rpc.name], n_gpu_layers=-1, split_mode="layer",
                  tensor_split=[1, 1], load_mode="none") as model:
        _, kv = same_as_tool(model, tool)
        (remote,) = [k for k in model.buffers if k.startswith("RPC")]
        # layers 0-2 on Vulkan0 (i / 5 < 1/2), layer 3 and the output (the
        # tied embeddings, copied) on the RPC device
        assert vk(model.buffers) == {dev: pytest.approx(3 * DENSE_BYTES_PER_LAYER,
                                                        abs=ROUNDING)}
        output = model.vocab.n_tokens * N_EMBD * 4 + N_EMBD * 4
        assert model.buffers[remote] == pytest.approx(DENSE_BYTES_PER_LAYER + output,
                                                      abs=ROUNDING)
        total = sum(kv.values())
        assert vk(kv)[dev] == pytest.approx(total * 3 / N_LAYER, abs=ROUNDING)
        (remote_kv,) = [k for k in kv if k.startswith("RPC")]
        assert kv[remote_kv] == pytest.approx(total / N_LAYER, abs=ROUNDING)
        print(f"weights over {dev} and {rpc.name}: {model.buffers}; KV: {kv}")
