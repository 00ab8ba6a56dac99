"""Registry models: fetched by package name, verified, re-fetched when damaged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llama_cffi import models
from llama_cffi.errors import ModelNotFoundError


def test_resolve_short_name_and_path(smollm2_path: Path) -> None:
    assert models.resolve("smollm2-135m") == smollm2_path
    assert models.resolve(str(smollm2_path)) == smollm2_path
    with pytest.raises(ModelNotFoundError, match="smollm2-135m"):
        models.resolve("no-such-model")


def test_cached_models_are_listed(smollm2_path: Path) -> None:
    names = {name for name, _, _ in models.list_cached()}
    assert "smollm2-135m" in names


@pytest.mark.slow
def test_corrupted_cache_is_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          smollm2_path: Path) -> None:
    monkeypatch.setenv("LLAMA_CFFI_MODELS", str(tmp_path))
    target = tmp_path / smollm2_path.name
    shutil.copyfile(smollm2_path, target)
    # Flip one byte in the middle: same size, wrong content.
    with target.open("r+b") as fh:
        fh.seek(target.stat().st_size // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))
    assert models.cached_path("smollm2-135m") is None  # never used as is
    lines: list[str] = []
    path = models.fetch("smollm2-135m", progress=lines.append)
    assert path == target
    assert models.cached_path("smollm2-135m") == target
    assert any("downloading" in line for line in lines)
    # A partial download (shorter file) is detected without hashing.
    with target.open("r+b") as fh:
        fh.truncate(1000)
    assert models.cached_path("smollm2-135m") is None
