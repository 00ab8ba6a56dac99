"""GPU backends as plugins (issue 22): the portable core wheel (backends as
loadable modules) and a plugin wheel (``llama-cffi-vulkan`` or
``llama-cffi-cuda``, only ``libggml-<backend>.so`` and an entry point in the
group ``llama_cffi.backends``) installed into a fresh virtual environment;
a child process there imports llama_cffi, which loads the plugin.

- Vulkan (marker ``plugins``; CI runs it through scripts/ci_plugins.sh):
  lavapipe, Mesa's Vulkan driver that runs on the CPU, with
  ``GGML_VK_VISIBLE_DEVICES=0``. ``devices()`` must list Vulkan0 through the
  plugin, a tiny synthetic model offloaded with ``n_gpu_layers=99`` must have
  its weights in Vulkan0 buffers and give the same greedy tokens as on the CPU.
- CUDA (this machine has no GPU): without the NVIDIA driver the plugin says
  so in the loader's warning and the CPU keeps working; with a stand-in
  driver library that answers every call with an error, ggml-cuda loads and
  finds no device, which the loader's warning says too.

The wheels come from the environment (built by scripts/ci_plugins.sh and
scripts/build_cuda.sh): ``LLAMA_CFFI_PORTABLE_WHEEL`` (the core),
``LLAMA_CFFI_VULKAN_PLUGIN_WHEEL``, ``LLAMA_CFFI_CUDA_PLUGIN_WHEEL`` and
``LLAMA_CFFI_NVIDIA_WHEELS`` (a folder with NVIDIA's runtime wheels; default
the cache of scripts/build_cuda.sh). Without them the tests skip, unless
``LLAMA_CFFI_TEST_PLUGINS=1`` (CI), where a missing wheel fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .synthetic import write_dense_model

pytestmark = pytest.mark.plugins

REQUIRED = os.environ.get("LLAMA_CFFI_TEST_PLUGINS") == "1"
N_TOKENS = 6
PROMPT = "The old lighthouse keeper"

# Run inside the plugin's venv: what the loader found, and greedy tokens for
# each n_gpu_layers given. Prints one JSON object on the last line.
CHILD = r'''
import json, sys, warnings
import numpy as np
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import llama_cffi as lc
    info = lc.system_info()
from llama_cffi._bindings import loader
rep = loader.report()
out = {
    "file": lc.__file__,
    "warnings": [str(w.message) for w in caught],
    "plugins": [[p.name, p.outcome] for p in rep.plugins] if rep else None,
    "cpu_variant": info.cpu_variant,
    "backends": [[b.name, b.n_devices] for b in info.backends],
    "devices": [[d.name, d.backend, d.type] for d in info.devices],
    "runs": {},
}
for arg in sys.argv[2:]:
    ngl = int(arg)
    with lc.Model(sys.argv[1], n_gpu_layers=ngl, load_mode="none") as model, \
            model.context(n_ctx=128, n_threads=2, n_threads_batch=2) as ctx, \
            lc.Batch(1) as batch:
        toks = model.vocab.tokenize(PROMPT, add_special=True)
        ctx.eval_tokens(toks, 0)
        pos, gen = len(toks), []
        for _ in range(N_TOKENS):
            tok = int(np.argmax(ctx.logits()))
            gen.append(tok)
            batch.clear()
            batch.add(tok, pos, (0,), True)
            ctx.decode(batch)
            pos += 1
        out["runs"][arg] = {"tokens": gen, "buffers": dict(model.buffers)}
print(json.dumps(out))
'''.replace("PROMPT", repr(PROMPT)).replace("N_TOKENS", str(N_TOKENS))


def _wheel(var: str, default: Path | None = None) -> Path:
    value = os.environ.get(var)
    path = Path(value) if value else default
    if path is not None and path.is_dir():
        found = sorted(path.glob("*.whl"))
        path = found[-1] if found else None
    if path is None or not path.is_file():
        msg = (f"{var} names no wheel ({value or 'unset'}); scripts/ci_plugins.sh "
               "(Vulkan) and scripts/build_cuda.sh (CUDA) build them")
        if REQUIRED:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def make_venv(root: Path, wheels: list[Path], find_links: tuple[Path, ...] = ()) -> Path:
    """A fresh venv at ``root`` with ``wheels`` installed; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=120)
    py = root / "bin" / "python"
    links = [arg for d in find_links for arg in ("--find-links", str(d))]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-cache-dir",
         "--disable-pip-version-check", *links, *map(str, wheels)],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return py


def run_child(py: Path, model: Path | None, ngls: list[int],
              env: dict[str, str]) -> dict[str, object]:
    """Run CHILD in the venv of ``py`` (outside the source tree, the venv's
    own llama_cffi only)."""
    args = [str(py), "-c", CHILD, str(model or "")] + [str(n) for n in ngls]
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("PYTHONPATH", "LLAMA_CFFI_CPU_VARIANT")}
    full_env.update(env)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=full_env,
                          cwd=str(py.parent), check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    assert "site-packages" in str(result["file"])  # the venv's install, not the checkout
    return result


def run_child_fails(py: Path, model: Path, ngl: int, env: dict[str, str]) -> str:
    """Run CHILD with ``n_gpu_layers=ngl``, which must fail; its stderr."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("PYTHONPATH", "LLAMA_CFFI_CPU_VARIANT")}
    full_env.update(env)
    proc = subprocess.run([str(py), "-c", CHILD, str(model), str(ngl)], capture_output=True,
                          text=True, timeout=600, env=full_env, cwd=str(py.parent), check=False)
    assert proc.returncode != 0, proc.stdout[-2000:]
    return proc.stderr


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    return write_dense_model(tmp_path_factory.mktemp("plugins") / "dense.gguf", smollm2_path)


@pytest.fixture(scope="module")
def core_wheel() -> Path:
    return _wheel("LLAMA_CFFI_PORTABLE_WHEEL")


# --------------------------------------------------------------------------
# Vulkan: the CI part
# --------------------------------------------------------------------------
def _vulkan_env() -> dict[str, str]:
    """The Vulkan kit's run-time environment (lavapipe's ICD, the loader)."""
    names = ("VK_ICD_FILENAMES", "VK_DRIVER_FILES", "LD_LIBRARY_PATH")
    env = {n: os.environ[n] for n in names if n in os.environ}
    if "VK_ICD_FILENAMES" not in env and "VK_DRIVER_FILES" not in env:
        msg = ("no Vulkan driver in the environment: eval \"$(scripts/vulkan_sdk.sh)\" "
               "(lavapipe) or a system Vulkan driver")
        if REQUIRED:
            pytest.fail(msg)
        pytest.skip(msg)
    return env


@pytest.fixture(scope="module")
def vulkan_venv(tmp_path_factory: pytest.TempPathFactory, core_wheel: Path) -> Path:
    plugin = _wheel("LLAMA_CFFI_VULKAN_PLUGIN_WHEEL")
    return make_venv(tmp_path_factory.mktemp("venv") / "vk", [core_wheel, plugin])


def test_vulkan_plugin_offloads_and_matches_cpu(vulkan_venv: Path, dense: Path) -> None:
    env = _vulkan_env() | {"GGML_VK_VISIBLE_DEVICES": "0"}
    res = run_child(vulkan_venv, dense, [0, 99], env)
    assert res["plugins"] == [["vulkan", "loaded Vulkan, 1 device"]], res["warnings"]
    assert not res["warnings"]
    assert ["Vulkan", 1] in res["backends"]
    vk = [d for d in res["devices"] if d[1] == "Vulkan"]
    assert [d[0] for d in vk] == ["Vulkan0"], res["devices"]
    runs = res["runs"]
    assert isinstance(runs, dict)
    cpu, gpu = runs["0"], runs["99"]
    # offloaded for real: the weights are in Vulkan0's memory, not on the host
    assert gpu["buffers"].get("Vulkan0", 0) > 0, gpu["buffers"]
    assert "Vulkan0" not in cpu["buffers"], cpu["buffers"]
    assert len(cpu["tokens"]) == N_TOKENS
    assert gpu["tokens"] == cpu["tokens"]


def test_vulkan_plugin_without_visible_devices_keeps_the_cpu(vulkan_venv: Path,
                                                             dense: Path) -> None:
    """lavapipe is a CPU-type device, which ggml-vulkan skips unless
    GGML_VK_VISIBLE_DEVICES lists it: the plugin loads, lists no device, and
    the model runs on the CPU when asked to (n_gpu_layers=0); asking for GPU
    layers is a clear error naming the plugin, not a silent CPU run."""
    env = _vulkan_env()
    env["GGML_VK_VISIBLE_DEVICES"] = ""
    res = run_child(vulkan_venv, dense, [0], env)
    assert res["plugins"] == [["vulkan", "loaded Vulkan, 0 devices"]]
    assert ["Vulkan", 0] in res["backends"]
    assert [d for d in res["devices"] if d[1] == "Vulkan"] == []
    assert len(res["runs"]["0"]["tokens"]) == N_TOKENS
    err = run_child_fails(vulkan_venv, dense, 99, env)
    assert "n_gpu_layers=99 asks for GPU offload" in err
    assert "plugin 'vulkan' (llama_cffi_vulkan) loaded Vulkan, 0 devices" in err


# --------------------------------------------------------------------------
# CUDA on a machine without a GPU (local: the plugin takes ~1 h to compile)
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cuda_venv(tmp_path_factory: pytest.TempPathFactory, core_wheel: Path) -> Path:
    plugin = _wheel("LLAMA_CFFI_CUDA_PLUGIN_WHEEL")
    cache = Path(os.environ.get("LLAMA_CFFI_CACHE", Path.home() / ".cache" / "llama_cffi"))
    nvidia = Path(os.environ.get("LLAMA_CFFI_NVIDIA_WHEELS", cache / "cuda" / "wheels"))
    if not any(nvidia.glob("nvidia_cuda_runtime-*.whl")):
        msg = f"no NVIDIA runtime wheels in {nvidia} (scripts/build_cuda.sh --kit-only)"
        if REQUIRED:
            pytest.fail(msg)
        pytest.skip(msg)
    return make_venv(tmp_path_factory.mktemp("venv") / "cuda", [core_wheel, plugin], (nvidia,))


def _has_libcuda() -> bool:
    import ctypes
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def fake_driver(where: Path, plugin_dir: Path) -> Path:
    """A stand-in libcuda.so.1 defining every driver function the plugin links,
    each failing with CUDA_ERROR_NO_DEVICE (100); the runtime finds none of
    the entry points it needs and reports that no usable driver exists."""
    module = plugin_dir / "libggml-cuda.so"
    syms = subprocess.run(["nm", "-D", "--undefined-only", str(module)], capture_output=True,
                          text=True, check=True, timeout=60).stdout.split()
    funcs = sorted({s.split("@")[0] for s in syms if s.startswith("cu") and s[2:3].isupper()})
    assert "cuMemCreate" in funcs  # VMM build: the driver API is linked
    where.mkdir(exist_ok=True)
    src = where / "fake_cuda.c"
    src.write_text("".join(f"int {f}(void) {{ return 100; }}\n" for f in funcs))
    lib = where / "libcuda.so.1"
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(lib),
                    str(src)], check=True, timeout=120)
    return where


def test_cuda_plugin_without_driver_says_so_and_cpu_works(cuda_venv: Path, dense: Path) -> None:
    if _has_libcuda():
        pytest.skip("this machine has the NVIDIA driver: the no-driver path cannot be shown")
    res = run_child(cuda_venv, dense, [0], {})
    (name, outcome), = res["plugins"]
    assert name == "cuda" and outcome.startswith("not loaded")
    assert "no NVIDIA driver" in outcome and "libcuda.so.1" in outcome
    assert any("'cuda'" in w and "no NVIDIA driver" in w
               for w in res["warnings"])
    assert [b for b in res["backends"] if b[0] == "CUDA"] == []
    assert [d[1] for d in res["devices"]] == ["CPU"]
    assert len(res["runs"]["0"]["tokens"]) == N_TOKENS


def test_cuda_plugin_with_a_driver_but_no_device(cuda_venv: Path, dense: Path,
                                                 tmp_path: Path) -> None:
    if _has_libcuda():
        pytest.skip("this machine has the NVIDIA driver: a stand-in cannot replace it")
    site = next((cuda_venv.parent.parent / "lib").glob("python3*/site-packages"))
    drv = fake_driver(tmp_path / "drv", site / "llama_cffi_cuda")
    env = {"LD_LIBRARY_PATH": str(drv)}
    # the plugin's own check: the runtime's reason, in the loader's warning
    res = run_child(cuda_venv, None, [], env)
    (name, outcome), = res["plugins"]
    assert name == "cuda" and "CUDA found no device" in outcome, outcome
    # without the check, ggml-cuda itself loads (its libraries resolve through
    # the RPATH: the core's libggml-base.so, NVIDIA's libcudart and cuBLAS)
    # and registers CUDA with zero devices; the CPU still runs the model
    res = run_child(cuda_venv, dense, [0], env | {"LLAMA_CFFI_CUDA_NO_CHECK": "1"})
    assert res["plugins"] == [["cuda", "loaded CUDA, 0 devices"]], res["warnings"]
    assert ["CUDA", 0] in res["backends"]
    assert [d[1] for d in res["devices"]] == ["CPU"]
    assert len(res["runs"]["0"]["tokens"]) == N_TOKENS
    err = run_child_fails(cuda_venv, dense, 99, env | {"LLAMA_CFFI_CUDA_NO_CHECK": "1"})
    assert "plugin 'cuda' (llama_cffi_cuda) loaded CUDA, 0 devices" in err
