"""Placement on real Vulkan devices (marker ``vulkan``).

Runs only when the installed llama_cffi was built with ``-DGGML_VULKAN=ON``
(scripts/vulkan_sdk.sh; docs/building.md), and then every test first checks
that the Vulkan devices it needs exist, and fails otherwise: a wrong driver
path must not turn into a silent CPU run. Without a GPU, Mesa's lavapipe
(a Vulkan driver that runs on the CPU) is the device:
``GGML_VK_VISIBLE_DEVICES=0,0`` lists it twice (Vulkan0, Vulkan1), enough
for a real split. lavapipe is slow, so the models are tiny synthetic GGUFs
(tests/synthetic.py) and each generation is a few tokens.

Each placement is compared with llama.cpp's own ``llama-completion`` from the
same Vulkan build (``LLAMA_CFFI_TOOLS_DIR`` = that build's ``bin/``) run with
the same flags: the buffer sizes per buffer type it reports (weights, KV
cache) and its greedy text.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import llama_cffi as lc

from .synthetic import DENSE_BYTES_PER_LAYER, EXPERT_BYTES_PER_LAYER, N_LAYER
from .vulkan_util import (MARKS, MIB, PROMPT, ROUNDING, greedy, host, llama_completion,
                          same_as_tool, vk, vulkan_devices)
from .vulkan_util import dense, moe, vk_tools  # noqa: F401 - fixtures

pytestmark = MARKS


def test_devices_and_system_info() -> None:
    info = lc.system_info()
    assert "VULKAN" in info.compiled_backends and "GGML_VULKAN" in info.build_options
    names = vulkan_devices(1)
    (reg,) = [b for b in info.backends if b.name == "Vulkan"]
    listed = [d for d in info.devices if d.backend == "Vulkan"]
    assert reg.n_devices == len(listed) >= 1
    assert [d.name for d in listed][:1] == names[:1]
    for d in listed:
        assert d.name.startswith("Vulkan") and d.description
        assert d.type in ("gpu", "igpu")
        assert 0 < d.memory_free <= d.memory_total
    assert "Vulkan0" in str(info)
    print(info)  # the test log shows which devices ran


@pytest.mark.tools
@pytest.mark.parametrize("ngl", [0, 3, -1])
def test_n_gpu_layers_places_layers_and_kv_like_llama_cpp(ngl: int, dense: Path,
                                                          vk_tools: Path) -> None:
    (dev,) = vulkan_devices(1)
    tool = llama_completion(vk_tools, dense, ["-dev", dev, "-ngl", str(ngl if ngl >= 0 else 99)])
    with lc.Model(dense, devices=[dev], n_gpu_layers=ngl, load_mode="none") as model:
        _, kv = same_as_tool(model, tool)
        weights = vk(model.buffers)
        if ngl == 0:
            assert weights == {} and vk(kv) == {}
            return
        # -ngl N: the output layer and the last N-1 repeating layers on the device
        on_device = N_LAYER if ngl < 0 else ngl - 1
        (size,) = weights.values()
        assert list(weights) == [dev]
        # the output layer's weights are the tied token embeddings (a copy)
        output = model.vocab.n_tokens * 64 * 4 + 64 * 4
        assert size == pytest.approx(on_device * DENSE_BYTES_PER_LAYER + output, abs=ROUNDING)
        # KV cells of the offloaded layers on the device, the others in host memory
        total_kv = sum(kv.values())
        assert vk(kv)[dev] == pytest.approx(total_kv * on_device / N_LAYER, abs=ROUNDING)


@pytest.mark.tools
def test_smollm2_wholly_on_the_device(smollm2_path: Path, vk_tools: Path) -> None:
    """SmolLM2 with all 31 layers, the KV cache and the output on Vulkan0: a few
    greedy tokens equal llama-completion's with the same flags."""
    (dev,) = vulkan_devices(1)
    tool = llama_completion(vk_tools, smollm2_path, ["-dev", dev, "-ngl", "99", "-n", "3"])
    with lc.Model(smollm2_path, n_gpu_layers=-1, devices=[dev], load_mode="none") as model:
        assert set(vk(model.buffers)) == {dev}
        assert model.buffers == tool.model
        text, kv = greedy(model, n=3)
        assert set(kv) == {dev} and kv == tool.kv
    assert text == tool.text and text


@pytest.mark.tools
def test_tensor_split_over_two_devices(dense: Path, vk_tools: Path) -> None:
    devs = vulkan_devices(2)
    for split in ([1, 1], [3, 1]):
        tool = llama_completion(vk_tools, dense, ["-dev", ",".join(devs), "-ngl", "99",
                                                  "-sm", "layer",
                                                  "-ts", ",".join(map(str, split))])
        with lc.Model(dense, devices=devs, n_gpu_layers=-1, split_mode="layer",
                      tensor_split=split, load_mode="none") as model:
            _, kv = same_as_tool(model, tool)
            weights = vk(model.buffers)
            assert set(weights) == set(devs), model.buffers
            print(f"tensor_split {split}: weights {weights}, KV {vk(kv)}")
            # the split runs over the 4 repeating layers and the output layer:
            # layer i goes to the first device while i / 5 < its share
            layers_first = {1: 3, 3: 4}[split[0]]
            assert weights[devs[0]] == pytest.approx(layers_first * DENSE_BYTES_PER_LAYER,
                                                     abs=ROUNDING), weights


@pytest.mark.tools
def test_main_gpu_with_split_mode_none(dense: Path, vk_tools: Path) -> None:
    devs = vulkan_devices(2)
    tool = llama_completion(vk_tools, dense, ["-dev", ",".join(devs), "-ngl", "99",
                                              "-sm", "none", "-mg", "1"])
    with lc.Model(dense, devices=devs, n_gpu_layers=-1, split_mode="none", main_gpu=1,
                  load_mode="none") as model:
        _, kv = same_as_tool(model, tool)
        assert list(vk(model.buffers)) == [devs[1]]
        assert list(vk(kv)) == [devs[1]]


def test_split_mode_row_is_refused(dense: Path) -> None:
    """Vulkan has no row-split buffer type: llama.cpp refuses, and so do we (an
    exception naming the device, no crash, no silent layer split)."""
    devs = vulkan_devices(2)
    with pytest.raises(lc.ModelLoadError, match="device Vulkan0 does not support split buffers"):
        lc.Model(dense, devices=devs, n_gpu_layers=-1, split_mode="row")


# (llama-completion flags, context parameters, where the KV cache goes)
KV_SETTINGS = {
    "kv on device": ([], {}, "Vulkan"),
    "kv in host memory": (["-nkvo"], {"offload_kqv": False}, "CPU"),
    "flash attention off": (["-fa", "off"], {"flash_attn": False}, "Vulkan"),
    "flash attention on": (["-fa", "on"], {"flash_attn": True}, "Vulkan"),
    "q8_0 kv": (["-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0"],
                {"flash_attn": True, "type_k": "q8_0", "type_v": "q8_0"}, "Vulkan"),
}


@pytest.mark.tools
@pytest.mark.parametrize("name", list(KV_SETTINGS))
def test_kv_cache_settings_on_the_device(name: str, dense: Path, vk_tools: Path) -> None:
    flags, ctx_kw, where = KV_SETTINGS[name]
    (dev,) = vulkan_devices(1)
    tool = llama_completion(vk_tools, dense, ["-dev", dev, "-ngl", "99", *flags])
    with lc.Model(dense, devices=[dev], n_gpu_layers=-1, load_mode="none") as model:
        _, kv = same_as_tool(model, tool, ctx_kw)
    (buft,) = kv
    assert buft.startswith(where), kv
    # f16 K and V: 256 cells x 64 values x 2 bytes x 2 x 4 layers; q8_0: 34/32 bytes per value
    f16 = 256 * 64 * 2 * 2 * N_LAYER
    expected = f16 * 34 // 64 if "q8_0" in name else f16
    assert kv[buft] == pytest.approx(expected, abs=ROUNDING)


@pytest.mark.tools
@pytest.mark.parametrize("kwargs,flags,layers", [
    ({"cpu_moe": True}, ["--cpu-moe"], N_LAYER),
    ({"n_cpu_moe": 2}, ["--n-cpu-moe", "2"], 2),
    ({"tensor_overrides": {r"blk\.3\.ffn_.*_exps": "CPU"}}, ["-ot", r"blk\.3\.ffn_.*_exps=CPU"], 1),
])
def test_cpu_moe_keeps_exactly_the_experts_in_host_memory(
        kwargs: dict[str, object], flags: list[str], layers: int, moe: Path,
        vk_tools: Path) -> None:
    (dev,) = vulkan_devices(1)
    with lc.Model(moe, devices=[dev], n_gpu_layers=-1, load_mode="none") as model:
        assert model.is_moe and model.n_expert == 4
        base = dict(model.buffers)
    tool = llama_completion(vk_tools, moe, ["-dev", dev, "-ngl", "99", *flags])
    with lc.Model(moe, devices=[dev], n_gpu_layers=-1, load_mode="none", **kwargs) as model:
        same_as_tool(model, tool)
        moved = layers * EXPERT_BYTES_PER_LAYER
        assert host(model.buffers) - host(base) == pytest.approx(moved, abs=ROUNDING)
        assert base[dev] - model.buffers[dev] == pytest.approx(moved, abs=ROUNDING)


def test_engine_with_four_slots_on_the_device(dense: Path) -> None:
    (dev,) = vulkan_devices(1)
    prompts = ["The old lighthouse keeper", "Once upon a time", "Rain fell on", "In the year"]
    with lc.LLM(dense, devices=[dev], n_gpu_layers=-1, n_ctx=512, n_seq_max=4,
                n_threads=2) as llm:
        assert len(llm.engine.slots) == 4
        assert set(llm.ctx.buffers["KV"]) == {dev}
        together = [c.text for c in llm.generate_batch(prompts, max_tokens=4, temperature=0)]
        alone = [llm.complete(p, max_tokens=4, temperature=0).text for p in prompts]
    assert together == alone
    assert len(set(together)) > 1


def rss() -> int:
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_closing_an_offloaded_model_gives_the_memory_back(dense: Path) -> None:
    """What the model and its context held on the device is free again after close().

    A GPU's driver reports its free memory: it drops by at least the weights and
    the KV cache on load and comes back, within 1 MiB (allocator rounding), on
    close. lavapipe reports a fixed heap size instead, and its device memory is
    this process's heap, which malloc keeps for reuse (the resident set settles
    after a few loads): there six loads after two warm-up loads must grow the
    resident set by less than what one load holds on the device (13 MiB); a
    close that kept the device memory would add 6 x 13 MiB.
    """
    (dev,) = vulkan_devices(1)
    (desc,) = [d.description for d in lc.devices() if d.name == dev]
    lavapipe = "llvmpipe" in desc

    def free() -> int:
        (d,) = [d for d in lc.devices() if d.name == dev]
        return d.memory_free

    def load_and_close() -> tuple[int, int]:
        """(device bytes the model and its context held, free memory while loaded)"""
        model = lc.Model(dense, devices=[dev], n_gpu_layers=-1, load_mode="none")
        ctx = model.context(n_ctx=256)
        ctx.eval_tokens(model.vocab.tokenize(PROMPT), 0)
        used = vk(model.buffers)[dev] + vk(ctx.buffers["KV"])[dev]
        loaded = free()
        ctx.close()
        model.close()
        return used, loaded

    for _ in range(2):
        load_and_close()  # shaders, pipeline caches: allocated once per process
    if lavapipe:
        before = rss()
        held = [load_and_close()[0] for _ in range(6)]
        assert min(held) > 12 * MIB
        assert rss() - before < min(held), (before, rss(), held)
    else:
        before = free()
        used, loaded = load_and_close()
        assert before - loaded >= used - ROUNDING, (before, loaded, used)
        assert abs(free() - before) <= MIB, (before, free())


HIDDEN = """
import llama_cffi as lc
print("DEVICES", [d.name for d in lc.devices()])
try:
    lc.Model({model!r}, devices=["Vulkan0"])
except lc.LlamaError as e:
    print("RAISED", e)
try:
    lc.Model({model!r}, n_gpu_layers=99)
except lc.LlamaError as e:
    print("RAISED", e)
"""


def test_asking_for_vulkan_with_the_devices_hidden_is_an_error(dense: Path) -> None:
    vulkan_devices(1)  # they exist here; the child hides them
    env = dict(os.environ, VK_ICD_FILENAMES="/nonexistent/icd.json",
               VK_DRIVER_FILES="/nonexistent/icd.json", GGML_VK_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", HIDDEN.format(model=str(dense))],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DEVICES ['CPU']" in proc.stdout
    assert "RAISED no device named 'Vulkan0'" in proc.stdout
    assert "RAISED n_gpu_layers=99" in proc.stdout, proc.stdout
