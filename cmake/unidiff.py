"""Apply a unified diff to a directory tree, without patch(1).

The build applies ``patches/*.patch`` to the llama.cpp source with this
module (cmake/fetch_llama_cpp.py), so a source build needs only Python: no
``patch`` program, whose GNU-only options BSD patch may not take.

What it does, and nothing more:

* file headers ``--- a/path`` / ``+++ b/path``; the first path component is
  stripped (like ``patch -p1``); ``/dev/null`` on one side makes a new or
  deleted file. Text before the first header (the patch's note) and git's
  ``diff --git``/``index``/``new file mode`` lines are ignored; renames, copies,
  mode changes and binary diffs are refused.
* hunks ``@@ -l,n +l,n @@``, applied with zero fuzz: every context and removed
  line must match exactly. A hunk may be found at another line than the one
  it states (an offset, searched outward from where the previous hunks put
  it), never with fewer context lines; a hunk with less context on one side
  than the other must sit at the start or end of the file, as in patch(1).
* each file keeps its line endings (an added line takes the file's ending:
  CRLF in a CRLF file), and ``\\ No newline at end of file`` is honoured on
  both sides.
* all or nothing: every hunk of the patch is applied in memory first, and
  files are written only when the whole patch applies. A failure raises
  :class:`DiffError` naming the file and the hunk; the tree is unchanged.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_DEV_NULL = "/dev/null"
# git extended header lines that ask for more than a content change
_UNSUPPORTED = (b"rename from ", b"rename to ", b"copy from ", b"copy to ",
                b"old mode ", b"new mode ", b"GIT binary patch", b"Binary files ")

# One line: its text without the line ending, and the ending itself
# (b"\n", b"\r\n", or b"" for a last line without one).
Line = tuple[bytes, bytes]


class DiffError(Exception):
    """The diff is malformed, or does not apply to the tree."""


@dataclass
class Hunk:
    """One ``@@`` hunk: its stated position and its lines, tagged ' ', '-' or '+'."""

    number: int  # 1-based within its file, as patch(1) counts
    old_start: int
    old_count: int
    new_start: int
    new_count: int
    lines: list[tuple[str, bytes]] = field(default_factory=list)
    old_no_eol: bool = False  # the old side's last line has no line ending
    new_no_eol: bool = False

    def side(self, which: str) -> list[Line]:
        """The old (``'-'``) or new (``'+'``) side's lines, with the eol they must have."""
        tags = (" ", which)
        out: list[Line] = [(text, b"\n") for tag, text in self.lines if tag in tags]
        if out and (self.old_no_eol if which == "-" else self.new_no_eol):
            out[-1] = (out[-1][0], b"")
        return out


@dataclass
class FileDiff:
    """The hunks for one file; ``old``/``new`` are None for /dev/null."""

    old: str | None
    new: str | None
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def path(self) -> str:
        path = self.new if self.new is not None else self.old
        assert path is not None
        return path


def _split(data: bytes) -> list[Line]:
    """Lines of ``data``; a CR before LF belongs to the line ending."""
    lines: list[Line] = []
    for chunk in data.split(b"\n"):
        lines.append((chunk[:-1], b"\r\n") if chunk.endswith(b"\r") else (chunk, b"\n"))
    last = lines.pop()  # what follows the final LF (b"" for a complete last line)
    if last[0] or last[1] == b"\r\n":
        text, eol = last
        lines.append((text + b"\r", b"") if eol == b"\r\n" else (text, b""))
    return lines


def _header_path(raw: bytes, what: str) -> str | None:
    text = raw.split(b"\t", 1)[0].decode("utf-8", "surrogateescape").rstrip()
    if text.startswith('"') and text.endswith('"'):
        raise DiffError(f"quoted file name {text} in the {what} header is not supported")
    if text == _DEV_NULL:
        return None
    parts = text.split("/", 1)
    if len(parts) != 2 or not parts[1]:
        raise DiffError(f"file name {text!r} has no leading component to strip (-p1)")
    rel = parts[1]
    if rel.startswith("/") or ".." in rel.split("/"):
        raise DiffError(f"file name {text!r} leaves the tree")
    return rel


def parse(data: bytes) -> list[FileDiff]:
    """The file diffs of a unified diff; DiffError when it is malformed or has none."""
    lines = [text for text, _eol in _split(data)]
    files: list[FileDiff] = []
    i = 0
    current: FileDiff | None = None
    while i < len(lines):
        line = lines[i]
        if line.startswith(b"--- ") and i + 1 < len(lines) and lines[i + 1].startswith(b"+++ "):
            old = _header_path(line[4:], "---")
            new = _header_path(lines[i + 1][4:], "+++")
            if old is None and new is None:
                raise DiffError("a file header has /dev/null on both sides")
            current = FileDiff(old, new)
            files.append(current)
            i += 2
            continue
        if line.startswith(_UNSUPPORTED):
            raise DiffError(f"unsupported diff line (renames, copies, modes and binary "
                            f"diffs are not applied): {line.decode(errors='replace')}")
        match = _HUNK.match(line)
        if match is None:
            i += 1  # the note, git's extended headers, text between files
            continue
        if current is None:
            raise DiffError(f"line {i + 1}: a hunk before any ---/+++ file header")
        hunk = Hunk(len(current.hunks) + 1, int(match[1]), 1 if match[2] is None else int(match[2]),
                    int(match[3]), 1 if match[4] is None else int(match[4]))
        i = _read_hunk(lines, i + 1, hunk, current.path)
        current.hunks.append(hunk)
    if not files:
        raise DiffError("no ---/+++ file header: this is not a unified diff")
    for fd in files:
        if not fd.hunks:
            raise DiffError(f"{fd.path}: a file header without hunks")
    return files


def _read_hunk(lines: list[bytes], i: int, hunk: Hunk, path: str) -> int:
    """Read the body of ``hunk`` from ``lines[i:]``; return the index after it."""
    old_left, new_left = hunk.old_count, hunk.new_count
    last_tag = ""
    while old_left > 0 or new_left > 0:
        if i >= len(lines):
            raise DiffError(f"{path}: hunk #{hunk.number} ends early "
                            f"({old_left} old and {new_left} new line(s) missing)")
        line = lines[i]
        tag, text = (" ", b"") if line == b"" else (chr(line[0]), line[1:])
        if tag == "\\":
            raise DiffError(f"{path}: hunk #{hunk.number}: '\\' marker in the middle of a hunk")
        if tag not in " -+":
            raise DiffError(f"{path}: hunk #{hunk.number}: unexpected line "
                            f"{line.decode(errors='replace')!r} "
                            f"({old_left} old and {new_left} new line(s) missing)")
        if tag in " -":
            old_left -= 1
        if tag in " +":
            new_left -= 1
        if old_left < 0 or new_left < 0:
            raise DiffError(f"{path}: hunk #{hunk.number} has more lines than its header says")
        hunk.lines.append((tag, text))
        last_tag = tag
        i += 1
        # "\ No newline at end of file" marks the line just read
        if i < len(lines) and lines[i].startswith(b"\\"):
            if last_tag in " -":
                hunk.old_no_eol = True
            if last_tag in " +":
                hunk.new_no_eol = True
            i += 1
    return i


def _matches(content: list[Line], at: int, want: list[Line]) -> bool:
    if at < 0 or at + len(want) > len(content):
        return False
    for k, (text, eol) in enumerate(want):
        have_text, have_eol = content[at + k]
        if have_text != text or (eol == b"") != (have_eol == b""):
            return False
    return True


def _find(content: list[Line], want: list[Line], expected: int, floor: int) -> int | None:
    """Where ``want`` matches exactly, nearest to ``expected`` and not before ``floor``."""
    if not want:  # a pure insertion has nothing to search by: only where it says
        return expected if floor <= expected <= len(content) else None
    limit = len(content) - len(want)
    for distance in range(max(expected - floor, limit - expected, 0) + 1):
        for at in (expected + distance, expected - distance) if distance else (expected,):
            if floor <= at <= limit and _matches(content, at, want):
                return at
    return None


def _default_eol(content: list[Line]) -> bytes:
    return next((eol for _text, eol in content if eol), b"\n")


def apply_file(content: list[Line], fd: FileDiff) -> list[Line]:
    """``content`` with the hunks of ``fd`` applied; DiffError naming a hunk that does not fit."""
    eol = _default_eol(content)
    out: list[Line] = []
    pos, offset = 0, 0  # old-file lines consumed; how far the last hunk moved
    for hunk in fd.hunks:
        old = hunk.side("-")
        expected = (hunk.old_start if hunk.old_count == 0 else hunk.old_start - 1) + offset
        # Context cut short on one side means the file began or ended there
        # (diff writes equal context elsewhere); patch(1) holds such a hunk,
        # at zero fuzz, to the start or end of the file, and so do we.
        prefix = next((k for k, (tag, _t) in enumerate(hunk.lines) if tag != " "), 0)
        suffix = next((k for k, (tag, _t) in enumerate(reversed(hunk.lines)) if tag != " "), 0)
        if prefix < suffix and hunk.old_start <= 1:
            at = 0 if pos == 0 and _matches(content, 0, old) else None
        elif suffix < prefix:
            end = len(content) - len(old)
            at = end if end >= pos and _matches(content, end, old) else None
        else:
            at = _find(content, old, expected, pos)
        if at is None:
            reverse = _find(content, hunk.side("+"), expected, pos) if hunk.side("+") else None
            hint = " (its result is already there: is the patch applied already?)" \
                if reverse is not None and hunk.side("+") != old else ""
            raise DiffError(f"{fd.path}: hunk #{hunk.number} (@@ -{hunk.old_start},"
                            f"{hunk.old_count} +{hunk.new_start},{hunk.new_count} @@) "
                            f"does not match the file{hint}")
        offset = at - (expected - offset)
        out.extend(content[pos:at])
        k = at
        new_side = hunk.side("+")
        n = 0
        for tag, text in hunk.lines:
            if tag == "-":
                k += 1
                continue
            want_eol = new_side[n][1]
            n += 1
            if tag == " ":
                have_text, have_eol = content[k]
                k += 1
            else:
                have_text, have_eol = text, eol
            if want_eol == b"":
                have_eol = b""
            elif have_eol == b"":
                have_eol = eol
            out.append((have_text, have_eol))
        pos = k
    out.extend(content[pos:])
    # a line that was last without an ending and is no longer last gets one
    return [(t, e if e or i == len(out) - 1 else eol) for i, (t, e) in enumerate(out)]


def _target(tree: Path, rel: str) -> Path:
    path = tree / rel
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise DiffError(f"{rel} is not a regular file: refusing to patch it")
    return path


def apply(tree: Path, data: bytes) -> list[str]:
    """Apply the unified diff ``data`` to ``tree`` (-p1), all or nothing.

    Returns the changed paths (relative to ``tree``). Raises DiffError naming
    the file and hunk that does not apply; then no file has been written.
    """
    results: dict[str, list[Line] | None] = {}  # None: delete the file
    for fd in parse(data):
        rel = fd.path
        path = _target(tree, rel)
        if rel in results:
            before = results[rel]
            if before is None:
                raise DiffError(f"{rel}: patched after it was deleted")
            content = before
        elif fd.old is None:
            if path.exists():
                raise DiffError(f"{rel}: the patch creates it, but it exists already")
            content = []
        elif not path.exists():
            raise DiffError(f"{rel}: no such file to patch")
        else:
            content = _split(path.read_bytes())
        after = apply_file(content, fd)
        if fd.new is None:
            if after:
                raise DiffError(f"{rel}: the patch deletes it, but lines would remain")
            results[rel] = None
        else:
            results[rel] = after
    for rel, lines in results.items():
        path = tree / rel
        if lines is None:
            path.unlink()
            continue
        _write(path, b"".join(t + e for t, e in lines))
    return list(results)


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (a new file), keeping its permission bits."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
