"""Fill ``vendor/llama.cpp`` from the pinned llama-cpp-python sdist.

CMake runs this when the vendored llama.cpp source is missing. The only copy
of llama.cpp's source reachable through the package index is inside the sdist
of llama-cpp-python, whose ``vendor/llama.cpp`` is upstream llama.cpp at a
known commit. The archive is fetched by package name with pip (pip's own
configured index, never a hard-coded host), checked against a pinned sha256
and only its ``vendor/llama.cpp/`` subtree is extracted.

Exit status 0 on success; on failure a message on stderr says what went wrong
and how to build against a local llama.cpp checkout instead.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_NAME = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
STAMP = ".llama_cffi_source"

# Parts of the subtree that the build never needs.
SKIPPED_DIRS = ("docs/", "media/")

FALLBACK_HINT = (
    "To build against a llama.cpp checkout of your own instead, pass its path:\n"
    "    CMAKE_ARGS=\"-DLLAMA_CPP_DIR=/path/to/llama.cpp\" pip install .\n"
    "or place the sdist file {file} (sha256 {sha}) in {cache} and retry."
)


class FetchError(Exception):
    pass


def default_cache_dir() -> Path:
    env = os.environ.get("LLAMA_CFFI_CACHE")
    if env:
        return Path(env) / "sdist"
    return Path.home() / ".cache" / "llama_cffi" / "sdist"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(cache: Path) -> Path:
    """Return the verified sdist in ``cache``, downloading it if needed."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / SDIST_FILE
    if target.exists():
        if sha256_of(target) == SDIST_SHA256:
            return target
        print(f"-- llama_cffi: cached {target} has a wrong checksum, fetching again",
              file=sys.stderr)
        target.unlink()
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
               "--no-binary", SDIST_NAME, "--disable-pip-version-check",
               "-d", tmp, f"{SDIST_NAME}=={SDIST_VERSION}"]
        print("-- llama_cffi: fetching llama.cpp source:", " ".join(cmd[3:]), file=sys.stderr)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        got = Path(tmp) / SDIST_FILE
        if proc.returncode != 0 or not got.exists():
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            raise FetchError(
                f"could not download {SDIST_NAME}=={SDIST_VERSION} with pip "
                f"(exit status {proc.returncode}); is the package index reachable?\n{tail}")
        digest = sha256_of(got)
        if digest != SDIST_SHA256:
            raise FetchError(
                f"{SDIST_FILE} has sha256 {digest}, expected {SDIST_SHA256}; "
                "refusing to build from an unverified archive")
        os.replace(got, target)
    return target


def extract(archive: Path, dest: Path) -> None:
    """Extract the archive's vendor/llama.cpp/ into ``dest`` atomically."""
    prefix = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/"
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".llama.cpp-", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = []
                for member in tar.getmembers():
                    if not member.name.startswith(prefix):
                        continue
                    rel = member.name[len(prefix):]
                    # The sdist's .git is a gitlink into a directory we do not
                    # extract; without it llama.cpp's CMake does not mistake
                    # the enclosing checkout's commit for its own.
                    if not rel or rel == ".git" or rel.startswith(SKIPPED_DIRS):
                        continue
                    if not (member.isfile() or member.isdir() or member.issym()):
                        continue
                    member.name = rel
                    members.append(member)
                if not members:
                    raise FetchError(f"{archive} holds no {prefix} subtree")
                tar.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FetchError(f"{archive} is not a readable archive: {exc}") from exc
        (staging / STAMP).write_text(
            f"commit={LLAMA_CPP_COMMIT}\nsdist={SDIST_FILE}\nsha256={SDIST_SHA256}\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True,
                        help="directory to fill (vendor/llama.cpp)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the sdist is kept between builds")
    parser.add_argument("--archive", type=Path, default=None,
                        help="use this local sdist file instead of downloading")
    parser.add_argument("--print-commit", action="store_true",
                        help="print the pinned llama.cpp commit and exit")
    args = parser.parse_args(argv)
    if args.print_commit:
        print(LLAMA_CPP_COMMIT)
        return 0
    cache = args.cache or default_cache_dir()
    try:
        if args.archive is not None:
            digest = sha256_of(args.archive)
            if digest != SDIST_SHA256:
                raise FetchError(f"{args.archive} has sha256 {digest}, expected {SDIST_SHA256}")
            archive = args.archive
        else:
            archive = download(cache)
        extract(archive, args.dest)
    except FetchError as exc:
        print(f"llama_cffi: cannot provide llama.cpp source: {exc}\n"
              + FALLBACK_HINT.format(file=SDIST_FILE, sha=SDIST_SHA256, cache=cache),
              file=sys.stderr)
        return 1
    print(f"-- llama_cffi: llama.cpp {LLAMA_CPP_COMMIT[:9]} extracted to {args.dest}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
