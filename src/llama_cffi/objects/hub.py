"""GGUF models from the Hugging Face Hub, through ``huggingface_hub`` (optional extra ``hf``).

>>> path = download("bartowski/SmolLM2-135M-Instruct-GGUF", "*Q4_K_M.gguf")  # doctest: +SKIP

:func:`download` lists the repository's files, picks the one ``filename``
(a glob) matches, and downloads it with ``hf_hub_download`` into the Hub's
cache (``HF_HOME``), or into ``local_dir``. A split GGUF
(``name-00001-of-00003.gguf``) comes with all its parts and the first part's
path is returned (llama.cpp loads the others from the same folder). An
interrupted download resumes where it stopped (``huggingface_hub`` keeps the
``.incomplete`` file and asks for the rest with a ``Range`` request). Each
file is checked against the checksum the Hub lists for it (the LFS SHA-256,
or the git blob id of a small file) once; a mismatch deletes the file and
raises :class:`~llama_cffi.errors.ModelFetchError`. A progress bar is shown
when stderr is a terminal.

``HF_ENDPOINT`` (read at each call), ``HF_HOME``/``HF_HUB_CACHE`` and
``HF_TOKEN`` are honoured as by ``huggingface_hub`` itself.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelFetchError
from .registry import cache_dir

SPLIT = re.compile(r"^(?P<prefix>.*)-(?P<i>\d{5})-of-(?P<n>\d{5})\.gguf$")
HF_URL = re.compile(r"^hf://(?P<repo>[^/]+/[^/]+)(?:/(?P<file>.+))?$")


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ImportError(
            "downloading models from the Hugging Face Hub needs the huggingface_hub package: "
            "pip install 'llama-cffi[hf]' (or pip install huggingface_hub)") from exc
    return huggingface_hub


@dataclass(frozen=True)
class HubFile:
    """A file of a Hub repository: its path, size and the checksum the Hub lists."""

    path: str
    size: int
    sha256: str | None  # LFS files
    git_sha1: str | None  # other files: the git blob id


def parse_hf_url(url: str) -> tuple[str, str | None]:
    """``hf://org/repo/path/file.gguf`` -> (``org/repo``, ``path/file.gguf``; None if absent)."""
    m = HF_URL.match(url)
    if not m:
        raise ValueError(f"not a Hub address: {url!r} (expected hf://ORG/REPO/FILE.gguf, "
                         "where FILE may be a glob such as *Q4_K_M.gguf)")
    return m.group("repo"), m.group("file")


def list_files(repo_id: str, *, revision: str | None = None, endpoint: str | None = None,
               token: str | bool | None = None) -> list[HubFile]:
    """Every file of model repository ``repo_id`` (at ``revision``)."""
    hub = _hub()
    api = hub.HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    out = []
    try:
        entries = list(api.list_repo_tree(repo_id, recursive=True, revision=revision))
    except Exception as exc:  # huggingface_hub's HTTP and validation errors
        raise ModelFetchError(f"cannot list the files of {repo_id!r} on the Hub: "
                              f"{type(exc).__name__}: {exc}") from exc
    for e in entries:
        if not hasattr(e, "size"):  # a folder
            continue
        lfs = getattr(e, "lfs", None)
        out.append(HubFile(e.path, int(e.size), lfs.sha256 if lfs is not None else None,
                           None if lfs is not None else getattr(e, "blob_id", None)))
    return out


def select(files: Sequence[HubFile], pattern: str, repo_id: str = "") -> list[HubFile]:
    """The file ``pattern`` (a glob over repository paths) picks, with every part
    of a split GGUF (first part first). ValueError when nothing or several
    unrelated files match."""
    matches = [f for f in files if fnmatch.fnmatch(f.path, pattern)]
    names = sorted(f.path for f in files)
    if not matches:
        raise ValueError(f"no file of {repo_id or 'the repository'} matches {pattern!r}; "
                         f"files: {', '.join(names)}")
    sets = {(m.group("prefix"), m.group("n")) if (m := SPLIT.match(f.path)) else (f.path, "")
            for f in matches}
    if len(sets) > 1:
        raise ValueError(f"{pattern!r} matches several files of {repo_id or 'the repository'}: "
                         f"{', '.join(sorted(f.path for f in matches))}; give a narrower pattern")
    prefix, n = next(iter(sets))
    if not n:
        return matches
    by_path = {f.path: f for f in files}
    parts = []
    for i in range(1, int(n) + 1):
        name = f"{prefix}-{i:05d}-of-{n}.gguf"
        if name not in by_path:
            raise ValueError(f"split GGUF {prefix}-*-of-{n}.gguf of {repo_id} lacks part {name}")
        parts.append(by_path[name])
    return parts


def _digest(path: Path, algo: str, git_size: int | None = None) -> str:
    h = hashlib.new(algo)
    if git_size is not None:
        h.update(f"blob {git_size}\0".encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, f: HubFile) -> None:
    """Check ``path`` against ``f``'s size and checksum (once per checksum: a
    marker in llama_cffi's cache remembers a verified file)."""
    size = path.stat().st_size
    if size != f.size:
        path.unlink(missing_ok=True)
        raise ModelFetchError(f"{f.path}: downloaded {size} bytes, the Hub lists {f.size}")
    expected = f.sha256 or f.git_sha1
    if not expected:
        return
    marker = cache_dir() / "hf-verified" / f"{expected}-{size}"
    if marker.exists():
        return
    got = _digest(path, "sha256") if f.sha256 else _digest(path, "sha1", git_size=size)
    if got != expected:
        path.unlink(missing_ok=True)
        raise ModelFetchError(f"{f.path}: checksum mismatch (got {got}, the Hub lists "
                              f"{expected}); the file was deleted, download it again")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _quiet_tqdm() -> Any:
    """A tqdm class whose bars never show (no progress bar off a terminal)."""
    import importlib

    base = importlib.import_module("tqdm.auto").tqdm

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        base.__init__(self, *args, **kwargs)

    return type("QuietTqdm", (base,), {"__init__": init})


def download(repo_id: str, filename: str = "*.gguf", *,
             additional_files: Sequence[str] | None = None, revision: str | None = None,
             local_dir: str | os.PathLike[str] | None = None,
             cache_dir: str | os.PathLike[str] | None = None, token: str | bool | None = None,
             endpoint: str | None = None, progress: bool | None = None) -> Path:
    """Download the GGUF ``filename`` (a glob) of ``repo_id`` and return its local path.

    additional_files: more globs whose files are downloaded next to it (an
        mmproj, a tokenizer config). revision: branch, tag or commit.
    local_dir: put the files there instead of the Hub cache.
    progress: show a progress bar (default: when stderr is a terminal).
    """
    hub = _hub()
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    files = list_files(repo_id, revision=revision, endpoint=endpoint, token=token)
    chosen = select(files, filename, repo_id)
    for pattern in additional_files or ():
        chosen += [f for f in select(files, pattern, repo_id) if f not in chosen]
    show = sys.stderr.isatty() if progress is None else progress
    extra: dict[str, Any] = {} if show else {"tqdm_class": _quiet_tqdm()}
    paths = []
    for f in chosen:
        try:
            local = hub.hf_hub_download(repo_id, f.path, revision=revision, local_dir=local_dir,
                                        cache_dir=cache_dir, token=token, endpoint=endpoint,
                                        **extra)
        except Exception as exc:  # huggingface_hub's HTTP errors
            raise ModelFetchError(f"downloading {f.path} of {repo_id} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        path = Path(local)
        verify(path.resolve(), f)
        paths.append(path)
    return paths[0]
