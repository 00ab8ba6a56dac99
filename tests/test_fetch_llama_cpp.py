"""The build's source fetcher fails clearly and points at -DLLAMA_CPP_DIR."""

from __future__ import annotations

import importlib
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


def cmake_module(name: str):  # type: ignore[no-untyped-def]
    """A module of cmake/ (the build's own scripts, not a package)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def fetcher():  # type: ignore[no-untyped-def]
    return cmake_module("fetch_llama_cpp")


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


# -- cmake/unidiff.py: the applier that replaces patch(1) ---------------------------------


def unidiff():  # type: ignore[no-untyped-def]
    return cmake_module("unidiff")


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != ".llama_cffi_source"}


def test_project_patches_give_what_gnu_patch_gives(tmp_path: Path) -> None:
    """Our applier and ``patch -p1`` turn the pinned source into the same tree."""
    f = fetcher()
    archive = f.default_cache_dir() / f.SDIST_FILE
    if not archive.exists():
        pytest.skip(f"the pinned sdist is not in {archive.parent} (the build fetches it)")
    if shutil.which("patch") is None:
        pytest.skip("patch(1) is not installed (the reference this test compares with)")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    f.extract(archive, theirs)  # unpatched
    shutil.copytree(theirs, ours, symlinks=True)
    pdir = ROOT / "patches"
    for p in sorted(pdir.glob("*.patch")):
        subprocess.run(["patch", "-p1", "--batch", "--forward", "--fuzz=0", "--quiet",
                        "--no-backup-if-mismatch", "-d", str(theirs), "-i", str(p)],
                       check=True, timeout=60)
    f.apply_patches(ours, pdir, f.patch_set(pdir))
    a, b = tree_bytes(ours), tree_bytes(theirs)
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, differ
    # and the patches changed something (the comparison is not of two pristine trees)
    plain = tmp_path / "plain"
    f.extract(archive, plain)
    changed = sorted(k for k, v in tree_bytes(plain).items() if a[k] != v)
    assert changed == ["ggml/src/CMakeLists.txt", "ggml/src/ggml-cpu/amx/mmq.cpp"], changed


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_wrong_context_fails_naming_file_and_hunk_and_writes_nothing(tmp_path: Path) -> None:
    u = unidiff()
    tree = make_tree(tmp_path / "t", {"a.c": b"one\ntwo\nthree\n", "b.c": b"x\ny\nz\n"})
    # the first file's hunk fits; the second file's second hunk does not
    diff = (b"note\n\n--- a/a.c\n+++ b/a.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n"
            b"--- a/b.c\n+++ b/b.c\n@@ -1,2 +1,2 @@\n-x\n+X\n y\n"
            b"@@ -2,2 +2,2 @@\n y\n-Q\n+q\n")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tree.iterdir()}
    with pytest.raises(u.DiffError, match=r"b\.c: hunk #2 .*does not match"):
        u.apply(tree, diff)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tree.iterdir()} == before
    assert sorted(p.name for p in tree.iterdir()) == ["a.c", "b.c"]  # no temporary left
    # through the fetcher: PatchError with the patch's name, the file and the hunk
    f = fetcher()
    pdir = tmp_path / "patches"
    pdir.mkdir()
    (pdir / "0003-two.patch").write_bytes(diff)
    with pytest.raises(f.PatchError, match=r"0003-two\.patch does not apply.*b\.c: hunk #2"):
        f.apply_patches(tree, pdir, f.patch_set(pdir))
    assert (tree / "a.c").read_bytes() == b"one\ntwo\nthree\n"
    # fuzz is not allowed: one context line off fails, though the change itself fits
    fuzzy = b"--- a/a.c\n+++ b/a.c\n@@ -1,3 +1,3 @@\n ONE\n-two\n+TWO\n three\n"
    with pytest.raises(u.DiffError, match="a.c: hunk #1"):
        u.apply(tree, fuzzy)
    # an applied patch applied again fails, and says it looks applied
    good = b"--- a/a.c\n+++ b/a.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n"
    u.apply(tree, good)
    assert (tree / "a.c").read_bytes() == b"one\nTWO\nthree\n"
    with pytest.raises(u.DiffError, match="already"):
        u.apply(tree, good)


def test_hunk_found_at_an_offset(tmp_path: Path) -> None:
    u = unidiff()
    body = b"".join(b"line %d\n" % i for i in range(1, 21))
    # five lines were added at the top since the diff was made, and two removed in between
    text = b"new 1\nnew 2\nnew 3\nnew 4\nnew 5\n" + body.replace(b"line 9\nline 10\n", b"")
    tree = make_tree(tmp_path / "t", {"f.txt": text})
    diff = (b"--- a/f.txt\n+++ b/f.txt\n"
            b"@@ -2,4 +2,5 @@\n line 2\n line 3\n+inserted A\n line 4\n line 5\n"
            b"@@ -15,3 +16,3 @@\n line 15\n-line 16\n+LINE 16\n line 17\n")
    u.apply(tree, diff)
    want = text.replace(b"line 3\n", b"line 3\ninserted A\n").replace(b"line 16\n", b"LINE 16\n")
    assert (tree / "f.txt").read_bytes() == want
    # with patch(1), where installed: the same result
    if shutil.which("patch"):
        ref = make_tree(tmp_path / "ref", {"f.txt": text})
        subprocess.run(["patch", "-p1", "--batch", "--fuzz=0", "--quiet", "-d", str(ref)],
                       input=diff, check=True, timeout=30)
        assert (ref / "f.txt").read_bytes() == want
    # less context before than after a change means "at the end of the file": at a
    # line in the middle such a hunk fails, with patch(1) as here
    tree = make_tree(tmp_path / "t2", {"f.txt": text})
    with pytest.raises(u.DiffError, match="hunk #1"):
        u.apply(tree, b"--- a/f.txt\n+++ b/f.txt\n@@ -2,3 +2,4 @@\n line 2\n line 3\n"
                      b"+inserted A\n line 4\n")
    assert (tree / "f.txt").read_bytes() == text


def test_no_newline_at_end_of_file(tmp_path: Path) -> None:
    u = unidiff()
    tree = make_tree(tmp_path / "t", {"a": b"x\ny", "b": b"x\ny\n", "c": b"x\ny"})
    u.apply(tree, (
        # a: the last line changes and still has no newline
        b"--- a/a\n+++ b/a\n@@ -1,2 +1,2 @@\n x\n-y\n\\ No newline at end of file\n+Y\n"
        b"\\ No newline at end of file\n"
        # b: the final newline is removed
        b"--- a/b\n+++ b/b\n@@ -1,2 +1,2 @@\n x\n-y\n+y\n\\ No newline at end of file\n"
        # c: a line is added after a last line that had none
        b"--- a/c\n+++ b/c\n@@ -1,2 +1,3 @@\n x\n-y\n\\ No newline at end of file\n+y\n+z\n"))
    assert (tree / "a").read_bytes() == b"x\nY"
    assert (tree / "b").read_bytes() == b"x\ny"
    assert (tree / "c").read_bytes() == b"x\ny\nz\n"
    # a hunk that claims a final newline the file lacks does not match
    with pytest.raises(u.DiffError, match="a: hunk #1"):
        u.apply(tree, b"--- a/a\n+++ b/a\n@@ -1,2 +1,2 @@\n x\n-Y\n+Z\n")


def test_crlf_file_keeps_its_line_endings(tmp_path: Path) -> None:
    u = unidiff()
    tree = make_tree(tmp_path / "t", {"w.txt": b"alpha\r\nbeta\r\ngamma\r\n"})
    # an LF diff (as in patches/) applies to the CRLF file; added lines get CRLF
    u.apply(tree, b"--- a/w.txt\n+++ b/w.txt\n@@ -1,3 +1,4 @@\n alpha\n-beta\n+BETA\n+delta\n"
                  b" gamma\n")
    assert (tree / "w.txt").read_bytes() == b"alpha\r\nBETA\r\ndelta\r\ngamma\r\n"
    # and a CRLF diff too
    u.apply(tree, b"--- a/w.txt\r\n+++ b/w.txt\r\n@@ -3,2 +3,2 @@\r\n-delta\r\n+DELTA\r\n"
                  b" gamma\r\n")
    assert (tree / "w.txt").read_bytes() == b"alpha\r\nBETA\r\nDELTA\r\ngamma\r\n"


def test_new_and_deleted_files_and_malformed_diffs(tmp_path: Path) -> None:
    u = unidiff()
    tree = make_tree(tmp_path / "t", {"old.txt": b"bye\n", "keep.txt": b"k\n"})
    (tree / "keep.txt").chmod(0o755)
    u.apply(tree, b"diff --git a/new/dir/n.txt b/new/dir/n.txt\nnew file mode 100644\n"
                  b"--- /dev/null\n+++ b/new/dir/n.txt\n@@ -0,0 +1,2 @@\n+hello\n+world\n"
                  b"--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n"
                  b"--- a/keep.txt\n+++ b/keep.txt\n@@ -1 +1 @@\n-k\n+K\n")
    assert (tree / "new/dir/n.txt").read_bytes() == b"hello\nworld\n"
    assert not (tree / "old.txt").exists()
    assert (tree / "keep.txt").read_bytes() == b"K\n"
    assert (tree / "keep.txt").stat().st_mode & 0o777 == 0o755  # mode kept
    for bad, message in [
        (b"just a note\n", "not a unified diff"),
        (b"--- a/keep.txt\n+++ b/keep.txt\n@@ -1,2 +1,2 @@\n-K\n+k\n", "ends early"),
        (b"--- a/../escape\n+++ b/../escape\n@@ -1 +1 @@\n-a\n+b\n", "leaves the tree"),
        (b"--- a/missing.txt\n+++ b/missing.txt\n@@ -1 +1 @@\n-a\n+b\n", "no such file"),
        (b"--- /dev/null\n+++ b/keep.txt\n@@ -0,0 +1 @@\n+x\n", "exists already"),
        (b"diff --git a/keep.txt b/k2.txt\nrename from keep.txt\nrename to k2.txt\n",
         "unsupported"),
    ]:
        with pytest.raises(u.DiffError, match=message):
            u.apply(tree, bad)
    assert (tree / "keep.txt").read_bytes() == b"K\n"
