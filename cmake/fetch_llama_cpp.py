"""Fill ``vendor/llama.cpp`` from the pinned llama-cpp-python sdist.

CMake runs this when the vendored llama.cpp source is missing. The only copy
of llama.cpp's source reachable through the package index is inside the sdist
of llama-cpp-python, whose ``vendor/llama.cpp`` is upstream llama.cpp at a
known commit. The archive is fetched by package name with pip (pip's own
configured index, never a hard-coded host), checked against a pinned sha256
and only its ``vendor/llama.cpp/`` subtree is extracted.

The patches in ``patches/`` (our carried fixes to llama.cpp, each naming the
upstream change it mirrors) are applied to the extracted tree by our own
unified-diff applier (``unidiff.py`` beside this file: no patch(1) needed,
exact context, no fuzz), and the stamp
file records the patch set (names and sha256), so a changed patch set
re-extracts and re-patches. Files a patch does not change keep the archive's
mtimes, and a file whose content is unchanged from the tree it replaces keeps
that tree's mtime: incremental builds and ccache stay warm. The new tree is
built in a temporary directory beside the destination and swapped in at once
(under the lock file, when there is one: other builds read this tree).

``--copy-from DIR`` does the same for a user's llama.cpp checkout
(``-DLLAMA_CPP_DIR`` with ``-DLLAMA_CFFI_PATCH_SOURCE=ON``): the checkout is
copied into the destination (in the build directory) and patched there; the
user's tree is never written.

Exit status 0 on success; on failure a message on stderr says what went wrong
and how to build against a local llama.cpp checkout instead (status 2: a patch
that does not apply, named in the message).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import unidiff  # cmake/unidiff.py, beside this script

SDIST_NAME = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
STAMP = ".llama_cffi_source"
# Held while the new tree is swapped in (the project's machines share it with
# test runs); none is taken when the file does not exist.
LOCK_ENV = "LLAMA_CFFI_VENDOR_LOCK"
DEFAULT_LOCK = "/tmp/llama.lock"
LOCK_WAIT_S = 1800.0

# Parts of the subtree that the build never needs.
SKIPPED_DIRS = ("docs/", "media/")

FALLBACK_HINT = (
    "To build against a llama.cpp checkout of your own instead, pass its path:\n"
    "    CMAKE_ARGS=\"-DLLAMA_CPP_DIR=/path/to/llama.cpp\" pip install .\n"
    "or place the sdist file {file} (sha256 {sha}) in {cache} and retry."
)


class FetchError(Exception):
    pass


class PatchError(FetchError):
    """A patch of patches/ does not apply to the llama.cpp source."""


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


def patch_set(patches_dir: Path | None) -> list[tuple[str, str]]:
    """The patches to apply, in order: (file name, sha256) of each ``*.patch``."""
    if patches_dir is None or not patches_dir.is_dir():
        return []
    return [(p.name, sha256_of(p)) for p in sorted(patches_dir.resolve().glob("*.patch"))]


def stamp_text(origin: str, patches: list[tuple[str, str]]) -> str:
    lines = [f"commit={LLAMA_CPP_COMMIT}" if origin == "sdist" else f"copy={origin}"]
    if origin == "sdist":
        lines += [f"sdist={SDIST_FILE}", f"sha256={SDIST_SHA256}"]
    lines += [f"patch={name} sha256={digest}" for name, digest in patches]
    return "\n".join(lines) + "\n"


def up_to_date(dest: Path, patches: list[tuple[str, str]]) -> bool:
    """Whether ``dest`` is the pinned source with exactly this patch set."""
    try:
        return (dest / STAMP).read_text() == stamp_text("sdist", patches)
    except OSError:
        return False


def apply_patches(tree: Path, patches_dir: Path, patches: list[tuple[str, str]]) -> None:
    """Apply each patch to ``tree`` (cmake/unidiff.py: -p1, no fuzz, all or nothing).

    A patch that does not apply raises PatchError naming it, the file and the
    hunk; it has written nothing (earlier patches have, in ``tree``: the
    caller's staging copy, thrown away on failure).
    """
    for name, _ in patches:
        try:
            unidiff.apply(tree, (patches_dir.resolve() / name).read_bytes())
        except unidiff.DiffError as exc:
            raise PatchError(f"patch {name} does not apply to the llama.cpp source: {exc}") \
                from None


def _same_file(new: Path, old: Path, st_new: os.stat_result) -> bool:
    try:
        st_old = old.stat()
    except OSError:
        return False
    if st_old.st_size != st_new.st_size:
        return False
    if st_old.st_mtime_ns == st_new.st_mtime_ns:
        return True
    with new.open("rb") as a, old.open("rb") as b:
        while True:
            x, y = a.read(1 << 20), b.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def keep_mtimes(staging: Path, dest: Path) -> None:
    """Give files of ``staging`` equal to those in ``dest`` their old mtime.

    A file that differs (patched now, or patched before and not now) gets the
    current time, so that make and ninja rebuild what depends on it.
    """
    if not dest.is_dir():
        return
    now = time.time_ns()
    for root, _dirs, files in os.walk(staging):
        for fname in files:
            new = Path(root) / fname
            if new.is_symlink():
                continue
            old = dest / new.relative_to(staging)
            st_new = new.stat()
            if _same_file(new, old, st_new):
                st_old = old.stat()
                os.utime(new, ns=(st_old.st_atime_ns, st_old.st_mtime_ns))
            elif old.exists():
                os.utime(new, ns=(now, now))


def _lock_held_by_ancestor(path: str) -> bool:
    """Whether a process above this one holds a flock on ``path`` (/proc/locks)."""
    try:
        ino = os.stat(path).st_ino
        with open("/proc/locks") as fh:
            holders = {int(f[4]) for f in (line.split() for line in fh)
                       if len(f) > 5 and f[1] == "FLOCK" and f[5].rsplit(":", 1)[-1] == str(ino)}
    except (OSError, ValueError):
        return False
    pid = os.getpid()
    for _ in range(64):
        if pid in holders:
            return True
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid <= 1:
            return False
    return False


@contextmanager
def swap_lock() -> Iterator[None]:
    """Hold the shared lock file while swapping (none if it does not exist).

    A build started under ``flock`` of the same file (its parent holds the
    lock) goes on without waiting for itself.
    """
    path = os.environ.get(LOCK_ENV, DEFAULT_LOCK)
    if not path or not os.path.exists(path) or _lock_held_by_ancestor(path):
        yield
        return
    with open(path, "a") as fh:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FetchError(f"{path} stayed locked for {LOCK_WAIT_S:.0f} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def swap_in(staging: Path, dest: Path) -> None:
    """Put ``staging`` at ``dest``: one atomic exchange where the OS has it."""
    with swap_lock():
        if not dest.exists():
            os.replace(staging, dest)
            return
        renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
        at_fdcwd, rename_exchange = -100, 2
        if renameat2 is not None and renameat2(
                at_fdcwd, os.fsencode(staging), at_fdcwd, os.fsencode(dest),
                rename_exchange) == 0:
            return  # staging now holds the old tree; the caller removes it
        err = ctypes.get_errno() if renameat2 is not None else errno.ENOSYS
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, 0):
            raise FetchError(f"cannot swap {staging} into {dest}: {os.strerror(err)}")
        old = dest.with_name(dest.name + f".old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(staging, dest)
        os.replace(old, staging)


def _staging_dir(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))


def _finish(staging: Path, dest: Path, patches_dir: Path | None,
            patches: list[tuple[str, str]], origin: str) -> None:
    if patches_dir is not None:
        apply_patches(staging, patches_dir, patches)
    (staging / STAMP).write_text(stamp_text(origin, patches))
    keep_mtimes(staging, dest)
    swap_in(staging, dest)


def extract(archive: Path, dest: Path, patches_dir: Path | None = None) -> None:
    """Extract the archive's vendor/llama.cpp/ into ``dest``, patched, atomically."""
    prefix = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/"
    patches = patch_set(patches_dir)
    staging = _staging_dir(dest)
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
        _finish(staging, dest, patches_dir, patches, "sdist")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


COPY_IGNORED = (".git", "build", "models", "docs", "media")


def copy_patched(source: Path, dest: Path, patches_dir: Path) -> None:
    """Copy a user's llama.cpp tree to ``dest`` and patch the copy."""
    source = source.resolve()
    if not (source / "include" / "llama.h").exists():
        raise FetchError(f"{source} is not a llama.cpp source tree (no include/llama.h)")
    patches = patch_set(patches_dir)

    def ignore(directory: str, names: list[str]) -> set[str]:
        if Path(directory) == source:
            return {n for n in names if n in COPY_IGNORED or n.startswith("build")}
        return {".git"} & set(names)

    staging = _staging_dir(dest)
    try:
        shutil.copytree(source, staging, symlinks=True, ignore=ignore, dirs_exist_ok=True)
        _finish(staging, dest, patches_dir, patches, str(source))
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
    parser.add_argument("--patches", type=Path, default=None,
                        help="apply this folder's *.patch files (in name order) to the tree")
    parser.add_argument("--if-needed", action="store_true",
                        help="do nothing when the stamp shows the pinned source with this patch set")
    parser.add_argument("--copy-from", type=Path, default=None,
                        help="copy this llama.cpp checkout into --dest and patch the copy")
    args = parser.parse_args(argv)
    if args.print_commit:
        print(LLAMA_CPP_COMMIT)
        return 0
    cache = args.cache or default_cache_dir()
    try:
        if args.copy_from is not None:
            if args.patches is None:
                raise FetchError("--copy-from needs --patches")
            copy_patched(args.copy_from, args.dest, args.patches)
            print(f"-- llama_cffi: {args.copy_from} copied to {args.dest} with "
                  f"{len(patch_set(args.patches))} patch(es)", file=sys.stderr)
            return 0
        if args.if_needed and up_to_date(args.dest, patch_set(args.patches)):
            return 0
        if args.archive is not None:
            digest = sha256_of(args.archive)
            if digest != SDIST_SHA256:
                raise FetchError(f"{args.archive} has sha256 {digest}, expected {SDIST_SHA256}")
            archive = args.archive
        else:
            archive = download(cache)
        extract(archive, args.dest, args.patches)
    except PatchError as exc:
        print(f"llama_cffi: {exc}\nEach patch in {args.patches} must fit the llama.cpp "
              f"source it is applied to (the pinned commit {LLAMA_CPP_COMMIT[:9]}).",
              file=sys.stderr)
        return 2
    except FetchError as exc:
        print(f"llama_cffi: cannot provide llama.cpp source: {exc}\n"
              + FALLBACK_HINT.format(file=SDIST_FILE, sha=SDIST_SHA256, cache=cache),
              file=sys.stderr)
        return 1
    print(f"-- llama_cffi: llama.cpp {LLAMA_CPP_COMMIT[:9]} extracted to {args.dest} with "
          f"{len(patch_set(args.patches))} patch(es)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
