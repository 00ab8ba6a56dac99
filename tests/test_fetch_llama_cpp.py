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


# -- patches/: applied at extraction, recorded in the stamp, never to a user's tree ------

import fcntl  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

ROOT = SCRIPT.parent.parent
PREFIX = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
TAR_MTIME = 1_600_000_000

ORIGINAL = "int answer(void) {\n    return 41;\n}\n"
FIXED = "int answer(void) {\n    return 42;\n}\n"
GOOD_PATCH = """Answer: 42 (mirrors upstream change X, a note like ours)

--- a/src/answer.c
+++ b/src/answer.c
@@ -1,3 +1,3 @@
 int answer(void) {
-    return 41;
+    return 42;
 }
"""
BAD_PATCH = """Does not fit

--- a/src/answer.c
+++ b/src/answer.c
@@ -1,3 +1,3 @@
 int answer(void) {
-    return 7;
+    return 8;
 }
"""


def fetcher():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import fetch_llama_cpp as f
    finally:
        sys.path.pop(0)
    return f


def fake_sdist(path: Path) -> Path:
    """A tar.gz laid out like the pinned sdist: two source files and llama.h."""
    files = {"src/answer.c": ORIGINAL, "src/other.c": "int other;\n",
             "include/llama.h": "/* llama.h */\n"}
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(PREFIX + rel)
            info.size = len(data)
            info.mtime = TAR_MTIME
            tar.addfile(info, io.BytesIO(data))
    return path


def patches_dir(tmp_path: Path, **patches: str) -> Path:
    d = tmp_path / "patches"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    for name, text in patches.items():
        (d / f"{name}.patch").write_text(text)
    return d


def test_extract_applies_patches_and_stamps_them(tmp_path: Path) -> None:
    f = fetcher()
    archive = fake_sdist(tmp_path / "sdist.tar.gz")
    pdir = patches_dir(tmp_path, **{"0001-answer": GOOD_PATCH})
    dest = tmp_path / "vendor" / "llama.cpp"
    f.extract(archive, dest, pdir)
    assert (dest / "src/answer.c").read_text() == FIXED
    stamp = (dest / f.STAMP).read_text()
    digest = f.sha256_of(pdir / "0001-answer.patch")
    assert f"patch=0001-answer.patch sha256={digest}" in stamp
    assert f.up_to_date(dest, f.patch_set(pdir))
    # the unpatched file keeps the archive's mtime (builds and ccache stay warm)
    assert int((dest / "src/other.c").stat().st_mtime) == TAR_MTIME
    assert (dest / "src/answer.c").stat().st_mtime > TAR_MTIME
    assert not list(dest.parent.glob(".llama.cpp-*")), "the staging directory was left behind"


def test_changed_patch_set_re_extracts(tmp_path: Path) -> None:
    f = fetcher()
    archive = fake_sdist(tmp_path / "sdist.tar.gz")
    dest = tmp_path / "llama.cpp"
    pdir = patches_dir(tmp_path, **{"0001-answer": GOOD_PATCH})
    f.extract(archive, dest, pdir)
    patched_mtime = (dest / "src/answer.c").stat().st_mtime_ns
    # the patch is removed: the stamp no longer matches, and a re-extraction
    # restores the file with a new mtime (make/ninja must rebuild it), while
    # the file no patch touched keeps its mtime
    pdir = patches_dir(tmp_path)
    assert not f.up_to_date(dest, f.patch_set(pdir))
    time.sleep(0.01)
    f.extract(archive, dest, pdir)
    assert (dest / "src/answer.c").read_text() == ORIGINAL
    assert (dest / "src/answer.c").stat().st_mtime_ns > patched_mtime
    assert int((dest / "src/other.c").stat().st_mtime) == TAR_MTIME
    assert "patch=" not in (dest / f.STAMP).read_text()
    # an edited patch changes the stamp too
    f.extract(archive, dest, patches_dir(tmp_path, **{"0001-answer": GOOD_PATCH}))
    pdir = patches_dir(tmp_path, **{"0001-answer": GOOD_PATCH + "\n"})
    assert not f.up_to_date(dest, f.patch_set(pdir))


def test_patch_that_does_not_apply_names_it_and_keeps_the_tree(tmp_path: Path) -> None:
    f = fetcher()
    archive = fake_sdist(tmp_path / "sdist.tar.gz")
    dest = tmp_path / "llama.cpp"
    f.extract(archive, dest, patches_dir(tmp_path, **{"0001-answer": GOOD_PATCH}))
    before = (dest / f.STAMP).read_text()
    pdir = patches_dir(tmp_path, **{"0001-answer": GOOD_PATCH, "0002-broken": BAD_PATCH})
    with pytest.raises(f.PatchError, match="0002-broken.patch does not apply"):
        f.extract(archive, dest, pdir)
    # the tree in place is the old one, whole
    assert (dest / f.STAMP).read_text() == before
    assert (dest / "src/answer.c").read_text() == FIXED
    assert not list(dest.parent.glob(".llama.cpp-*"))
    # the command line: exit status 2 and the patch's name
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dest", str(dest), "--patches", str(pdir),
         "--archive", str(archive), "--if-needed"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    # (the fake archive fails the pinned checksum before any patch is tried)
    assert "sha256" in proc.stderr


def test_user_tree_is_copied_never_patched_in_place(tmp_path: Path) -> None:
    f = fetcher()
    user = tmp_path / "my-llama.cpp"
    (user / "src").mkdir(parents=True)
    (user / "include").mkdir()
    (user / "include/llama.h").write_text("/* llama.h */\n")
    (user / "src/answer.c").write_text(ORIGINAL)
    (user / ".git").mkdir()
    (user / ".git/HEAD").write_text("ref: refs/heads/master\n")
    (user / "build").mkdir()
    (user / "build/big.o").write_text("x")
    pdir = patches_dir(tmp_path, **{"0001-answer": GOOD_PATCH})
    copy = tmp_path / "build" / "llama.cpp-patched"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--copy-from", str(user), "--dest", str(copy),
         "--patches", str(pdir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (copy / "src/answer.c").read_text() == FIXED
    assert (user / "src/answer.c").read_text() == ORIGINAL
    assert not (copy / ".git").exists() and not (copy / "build").exists()
    assert f"copy={user.resolve()}" in (copy / f.STAMP).read_text()
    # a patch that does not fit the user's tree: status 2, named, tree untouched
    pdir = patches_dir(tmp_path, **{"0001-answer": GOOD_PATCH, "0002-broken": BAD_PATCH})
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--copy-from", str(user), "--dest", str(copy),
         "--patches", str(pdir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "0002-broken.patch does not apply" in proc.stderr
    assert (user / "src/answer.c").read_text() == ORIGINAL


def test_swap_under_a_lock_held_by_the_parent_does_not_wait_for_itself(tmp_path: Path) -> None:
    """The editable rebuild runs under ``flock /tmp/llama.lock``; the fetcher,
    started by that build, takes the same lock for the swap and must see that
    its ancestor already holds it."""
    if shutil.which("flock") is None:
        pytest.skip("flock(1) is not installed")
    archive = fake_sdist(tmp_path / "sdist.tar.gz")
    lock = tmp_path / "lock"
    lock.write_text("")
    code = ("import sys; sys.path.insert(0, %r); import fetch_llama_cpp as f; "
            "from pathlib import Path; f.extract(Path(%r), Path(%r), Path(%r))"
            % (str(SCRIPT.parent), str(archive), str(tmp_path / "out"),
               str(patches_dir(tmp_path, **{"0001-answer": GOOD_PATCH}))))
    env = dict(os.environ, LLAMA_CFFI_VENDOR_LOCK=str(lock))
    proc = subprocess.run(["flock", str(lock), sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out/src/answer.c").read_text() == FIXED
    # held by an unrelated process (not an ancestor), the lock is waited for
    holder = subprocess.Popen(["flock", str(lock), "sleep", "60"], start_new_session=True)
    try:
        for _ in range(100):  # until the holder has it
            with lock.open("a") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fh, fcntl.LOCK_UN)
                except BlockingIOError:
                    break
            time.sleep(0.05)
        child = subprocess.Popen([sys.executable, "-c", code.replace("/out", "/out2")],
                                 env=env, stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=3)
        assert not (tmp_path / "out2").exists()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep
        holder.wait(timeout=10)
    assert child.wait(timeout=60) == 0
    assert (tmp_path / "out2/src/answer.c").read_text() == FIXED


def test_project_patches_apply_to_the_pinned_source(tmp_path: Path) -> None:
    """Every file of patches/ applies to the pinned llama.cpp, in order, and
    each carries a note before its diff naming the upstream change it mirrors."""
    f = fetcher()
    archive = f.default_cache_dir() / f.SDIST_FILE
    if not archive.exists():
        pytest.skip(f"the pinned sdist is not in {archive.parent} (the build fetches it)")
    pdir = ROOT / "patches"
    patches = sorted(pdir.glob("*.patch"))
    assert patches, "patches/ is empty"
    for p in patches:
        head = p.read_text().split("\n--- a/", 1)[0]
        assert "upstream" in head.lower() and len(head.splitlines()) >= 3, p.name
    dest = tmp_path / "llama.cpp"
    f.extract(archive, dest, pdir)
    mmq = (dest / "ggml/src/ggml-cpu/amx/mmq.cpp").read_text()
    assert "ARCH_REQ_XCOMP_PERM" in mmq or "arch_req_xcomp_perm" in mmq
    assert "static const tile_config_t" in mmq
    assert "LLAMA_CFFI_CPU_VARIANTS" in (dest / "ggml/src/CMakeLists.txt").read_text()


def test_configure_with_a_patch_that_does_not_fit_a_user_tree(tmp_path: Path) -> None:
    """-DLLAMA_CPP_DIR with -DLLAMA_CFFI_PATCH_SOURCE=ON: a patch that does not
    apply is a configure error naming it; the user's tree is not written."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    user = tmp_path / "llama.cpp"
    (user / "include").mkdir(parents=True)
    (user / "include/llama.h").write_text("/* not the real one */\n")
    before = sorted(p.name for p in user.rglob("*"))
    proc = subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(tmp_path / "build"),
         f"-DLLAMA_CPP_DIR={user}", "-DLLAMA_CFFI_PATCH_SOURCE=ON",
         f"-DPython_EXECUTABLE={sys.executable}"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    first = sorted(p.name for p in (ROOT / "patches").glob("*.patch"))[0]
    assert f"{first} does not apply" in out
    assert "LLAMA_CFFI_PATCH_SOURCE" in out
    assert sorted(p.name for p in user.rglob("*")) == before
