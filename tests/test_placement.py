"""Placement for real: two ggml RPC servers on 127.0.0.1 act as two devices.

Each server is a separate process serving its CPU; the model spreads over them
exactly as it would over two GPUs (``n_gpu_layers``, ``tensor_split``,
``devices``, ``-ot``, ``--n-cpu-moe``). Where each weight went is read from
the buffer sizes llama.cpp reports per buffer type while loading
(``Model.buffers``); models are loaded without mmap so that the host buffer
is the exact size of the tensors kept there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import llama_cffi as lc

from .conftest import run_python
from .synthetic import EXPERT_BYTES_PER_LAYER, N_LAYER, write_moe_model


@pytest.fixture(scope="module")
def rpc_devices() -> Iterator[list[str]]:
    with lc.rpc.Server() as a, lc.rpc.Server() as b:
        names = [d.name for d in lc.rpc.add_server(a.endpoint)]
        names += [d.name for d in lc.rpc.add_server(b.endpoint)]
        assert len(names) == 2
        yield names


def rpc_buffers(model: lc.Model) -> dict[str, int]:
    return {k: v for k, v in model.buffers.items() if k.startswith("RPC")}


def host_bytes(model: lc.Model) -> int:
    return sum(v for k, v in model.buffers.items() if k.startswith("CPU"))


def greedy_tokens(model: lc.Model, prompt: str, n: int = 24) -> list[int]:
    with model.context(n_ctx=256) as ctx:
        ctx.eval_tokens(model.vocab.tokenize(prompt), 0)
        out, batch = [], lc.Batch(1)
        pos = ctx.seq_pos_max(0) + 1
        for _ in range(n):
            tok = int(np.argmax(ctx.logits()))
            out.append(tok)
            batch.clear()
            batch.add(tok, pos, (0,), True)
            ctx.decode(batch)
            pos += 1
        batch.close()
        return out


@pytest.fixture(scope="module")
def cpu_reference(smollm2_path: Path) -> list[int]:
    with lc.Model(smollm2_path, n_gpu_layers=0) as model:
        return greedy_tokens(model, "The old lighthouse keeper")


def test_stopped_rpc_server_is_an_error_not_an_abort(smollm2_path: Path) -> None:
    code = f"""
import llama_cffi as lc
srv = lc.rpc.Server()
(dev,) = lc.rpc.add_server(srv.endpoint)
srv.close()
print([d.description for d in lc.devices() if d.name == dev.name])
try:
    lc.Model({str(smollm2_path)!r})
except lc.LlamaError as e:
    print("RAISED", e)
with lc.Model({str(smollm2_path)!r}, devices=[]) as m:   # CPU only still works
    print("LOADED", m.n_layer)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(unreachable)" in proc.stdout
    assert "RAISED the RPC server of device" in proc.stdout
    assert "LOADED 30" in proc.stdout


def test_rpc_devices_are_listed(rpc_devices: list[str]) -> None:
    names = {d.name: d for d in lc.devices()}
    for n in rpc_devices:
        assert names[n].backend == "RPC" and names[n].memory_total > 0
    assert set(lc.rpc.servers()) and all(lc.rpc.servers().values())


def test_tensor_split_spreads_layers_over_two_devices(
        rpc_devices: list[str], smollm2_path: Path, cpu_reference: list[int]) -> None:
    with lc.Model(smollm2_path, n_gpu_layers=-1, split_mode="layer", tensor_split=[1, 1],
                  devices=rpc_devices, load_mode="none") as model:
        rpc = rpc_buffers(model)
        assert len(rpc) == 2, model.buffers
        total = sum(rpc.values())
        # 30 layers split 15/15 (the output layer adds to the last device)
        assert all(v > 0.3 * total for v in rpc.values()), rpc
        first_even = model.buffers[rpc_buffer_order(model, rpc_devices)[0]]
        assert greedy_tokens(model, "The old lighthouse keeper") == cpu_reference

    with lc.Model(smollm2_path, n_gpu_layers=-1, tensor_split=[3, 1], devices=rpc_devices,
                  load_mode="none") as model:
        first = model.buffers[rpc_buffer_order(model, rpc_devices)[0]]
        # about 23 instead of 15 layers on the first device
        assert first > 1.3 * first_even, model.buffers


def rpc_buffer_order(model: lc.Model, devices: list[str]) -> list[str]:
    """Buffer names in the order of ``devices`` (RPC<n> -> its endpoint)."""
    endpoints = {d.name: d.description for d in lc.devices()}
    names = []
    for dev in devices:
        names.append(next(k for k in model.buffers if k.endswith(f"[{endpoints[dev]}]")))
    return names


def test_n_gpu_layers_and_main_gpu(rpc_devices: list[str], smollm2_path: Path,
                                   cpu_reference: list[int]) -> None:
    with lc.Model(smollm2_path, n_gpu_layers=0, devices=rpc_devices) as model:
        assert rpc_buffers(model) == {}
    sizes = []
    # -ngl N puts the output layer and the last N-1 repeating layers on the device
    for ngl in (5, 15, -1):
        with lc.Model(smollm2_path, n_gpu_layers=ngl, devices=rpc_devices[:1],
                      load_mode="none") as model:
            (size,) = rpc_buffers(model).values()
            sizes.append(size)
            if ngl == 15:
                assert greedy_tokens(model, "The old lighthouse keeper") == cpu_reference
    assert 0 < sizes[0] < sizes[1] < sizes[2]
    per_layer = (sizes[1] - sizes[0]) / 10
    assert sizes[2] - sizes[1] == pytest.approx(16 * per_layer, rel=0.02)  # 14 -> 30 layers
    with lc.Model(smollm2_path, n_gpu_layers=-1, split_mode="none", main_gpu=1,
                  devices=rpc_devices, load_mode="none") as model:
        (name,) = rpc_buffers(model)
        assert name == rpc_buffer_order(model, rpc_devices[1:])[0]


def test_n_cpu_ffn_and_tensor_overrides_keep_tensors_in_host_memory(
        rpc_devices: list[str], smollm2_path: Path, cpu_reference: list[int]) -> None:
    kw = dict(n_gpu_layers=-1, devices=rpc_devices[:1], load_mode="none")
    with lc.Model(smollm2_path, **kw) as base:
        base_host = host_bytes(base)
    with lc.Model(smollm2_path, n_cpu_ffn=10, **kw) as model:
        moved = host_bytes(model) - base_host
        # 10 layers x 3 FFN matrices of 576 x 1536 in Q4_1 (0.625 bytes/weight)
        expected = 10 * 3 * 576 * 1536 * 20 // 32
        assert moved == pytest.approx(expected, rel=0.02)
        assert greedy_tokens(model, "The old lighthouse keeper") == cpu_reference
    with lc.Model(smollm2_path, tensor_overrides={r"blk\.[0-9]+\.attn_.*": "CPU"}, **kw) as model:
        assert host_bytes(model) > base_host
        assert greedy_tokens(model, "The old lighthouse keeper") == cpu_reference
    with pytest.raises(ValueError, match="unknown buffer type"):
        lc.Model(smollm2_path, tensor_overrides={"ffn": "NoSuchGPU"})
    with pytest.raises(ValueError, match="not a regex"):
        lc.Model(smollm2_path, tensor_overrides={"ffn[": "CPU"})


def test_cpu_moe_keeps_experts_in_host_memory(rpc_devices: list[str], smollm2_path: Path,
                                              tmp_path: Path) -> None:
    moe = write_moe_model(tmp_path / "moe.gguf", smollm2_path)
    kw = dict(n_gpu_layers=-1, devices=rpc_devices[:1], load_mode="none")
    with lc.Model(moe, **kw) as model:
        assert model.is_moe and model.n_expert == 4
        base_host = host_bytes(model)
        reference = greedy_tokens(model, "Hello there", 8)
    for kwargs, layers in (({"n_cpu_moe": 2}, 2), ({"cpu_moe": True}, N_LAYER),
                           ({"tensor_overrides": {r"blk\.3\.ffn_.*_exps": "CPU"}}, 1)):
        with lc.Model(moe, **kwargs, **kw) as model:
            # llama.cpp reports sizes in MiB with two decimals
            assert host_bytes(model) - base_host == pytest.approx(
                layers * EXPERT_BYTES_PER_LAYER, abs=0.011 * 2**20), kwargs
            assert greedy_tokens(model, "Hello there", 8) == reference
