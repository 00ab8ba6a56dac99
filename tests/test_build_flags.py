"""A build flag passed the way llama.cpp users pass it takes effect.

Rebuilds the package with ``-C cmake.define.GGML_BLAS=ON`` (OpenBLAS, Debian's
libopenblas-dev) into its own build directory, installs that wheel into a
scratch folder and checks from a fresh interpreter that BLAS is compiled in,
registered, and used for a real prompt. Opt-in (LLAMA_CFFI_TEST_BLAS=1): it
costs a llama.cpp build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import json, llama_cffi as lc
info = lc.system_info()
m = lc.Model({model!r})
ctx = m.context(n_ctx=512, n_batch=512)
ctx.eval_tokens(m.vocab.tokenize("The quick brown fox jumps over the lazy dog. " * 20), 0)
print(json.dumps({{"compiled": info.compiled_backends,
                  "registered": [b.name for b in info.backends],
                  "options": info.build_options,
                  "file": lc.__file__}}))
"""


@pytest.mark.blas
@pytest.mark.slow
def test_ggml_blas_flag_takes_effect(tmp_path: Path, smollm2_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w", str(wheels),
         "-C", "cmake.define.GGML_BLAS=ON", "-C", "cmake.define.GGML_BLAS_VENDOR=OpenBLAS",
         "-C", f"build-dir={ROOT / 'build' / 'blas'}"],
        capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheel = next(wheels.glob("llama_cffi-*.whl"))
    site = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target",
                           str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr
    env = dict(os.environ, PYTHONPATH=str(site), LLAMA_CFFI_LOG="")
    proc = subprocess.run([sys.executable, "-c", CHECK.format(model=str(smollm2_path))],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["file"].startswith(str(site))
    assert "BLAS" in got["compiled"]
    assert "BLAS" in got["registered"]
    assert "GGML_BLAS" in got["options"] and "GGML_BLAS_VENDOR=OpenBLAS" in got["options"]


def test_missing_backend_fails_the_build(tmp_path: Path) -> None:
    """Asking for a backend whose toolkit is absent stops the build loudly.

    At the pinned commit llama.cpp's own CMake already refuses a missing Vulkan
    SDK; our CMakeLists adds a second check (every GGML_<X>=ON must have
    produced its ggml-<x> target) for llama.cpp checkouts that only warn.
    The SDK is made unfindable even where one is installed (system-wide, or
    the kit of scripts/vulkan_sdk.sh in the environment):
    CMAKE_DISABLE_FIND_PACKAGE_Vulkan makes find_package(Vulkan) fail as if
    nothing were there, and the kit's variables are dropped.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("VULKAN_SDK", "CMAKE_ARGS", "CMAKE_PREFIX_PATH")}
    proc = subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(tmp_path / "b"), "-G", "Ninja",
         "-DGGML_VULKAN=ON", f"-DPython_EXECUTABLE={sys.executable}",
         "-DCMAKE_DISABLE_FIND_PACKAGE_Vulkan=ON"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Vulkan" in out and "CMake Error" in out
    assert not (tmp_path / "b" / "build.ninja").exists()  # nothing to build from
