"""The build's source fetcher fails clearly and points at -DLLAMA_CPP_DIR."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "cmake" / "fetch_llama_cpp.py"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_wrong_checksum(tmp_path: Path) -> None:
    fake = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    fake.write_bytes(b"not the real archive")
    proc = run("--dest", str(tmp_path / "out"), "--archive", str(fake))
    assert proc.returncode == 1
    assert "sha256" in proc.stderr and "LLAMA_CPP_DIR" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_broken_archive(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import fetch_llama_cpp as f
    finally:
        sys.path.pop(0)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    try:
        f.extract(broken, tmp_path / "out")
    except f.FetchError as exc:
        assert "not a readable archive" in str(exc)
    else:
        raise AssertionError("a broken archive was accepted")
    # An archive without the llama.cpp subtree is refused too.
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz") as tar:
        info = tarfile.TarInfo("something/else.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    try:
        f.extract(empty, tmp_path / "out")
    except f.FetchError as exc:
        assert "vendor/llama.cpp" in str(exc)
    else:
        raise AssertionError("an archive without llama.cpp was accepted")
    assert not (tmp_path / "out").exists()


def test_no_network(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update({
        "LLAMA_CFFI_CACHE": str(tmp_path / "cache"),  # nothing cached
        "PIP_CONFIG_FILE": os.devnull,               # no local wheel folders
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
    })
    proc = run("--dest", str(tmp_path / "out"), env=env)
    assert proc.returncode == 1
    assert "could not download" in proc.stderr
    assert "LLAMA_CPP_DIR" in proc.stderr
