"""Run many test items in child processes, surviving crashes and hangs.

A child is started with the ids still to run as one JSON line on its stdin
and reports on stdout, one line each:

* ``BEGIN <json id>`` before an item,
* ``PHASE <name>`` when the item reaches a named stage (optional),
* ``RESULT <json object with "id">`` after it,
* ``DONE`` at the end.

When the child dies (a crash: a signal or an exit in the middle of an item)
or stays silent longer than ``timeout`` (a hang: it is killed), the item in
progress gets ``{"id", "result": "crash"|"hang", "phase", "exit", "stderr"}``
(``stderr``: what the child wrote there during that item) and the remaining
items continue in a new child. Every id ends up with a result.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

TIMEOUT = "<timeout>"
EOF = "<end of output>"

Result = dict[str, Any]


def _read_line(proc: subprocess.Popen[bytes], sel: selectors.BaseSelector, buf: bytearray,
               timeout: float) -> str:
    """The next line from ``proc``'s stdout, or TIMEOUT, or EOF."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not sel.select(left):
            return TIMEOUT
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            return EOF
        buf.extend(chunk)
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode("utf-8", "replace")


def run_in_children(argv: Sequence[str], ids: Sequence[Any], *, timeout: float,
                    start_timeout: float = 120.0, env: dict[str, str] | None = None
                    ) -> dict[Any, Result]:
    """Run ``ids`` in children started as ``argv``; a result per id (see the module).

    timeout: longest silence allowed during one item; start_timeout: before the
    first item (interpreter start-up, imports, fixtures the child builds).
    """
    results: dict[Any, Result] = {}
    todo = list(ids)
    while todo:
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=stderr, env=env)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(todo).encode() + b"\n")
            proc.stdin.close()
            sel = selectors.DefaultSelector()
            sel.register(proc.stdout, selectors.EVENT_READ)
            buf = bytearray()
            current: Any = None
            started = False
            phase: str | None = None
            mark = 0
            try:
                while True:
                    line = _read_line(proc, sel, buf, timeout if started else start_timeout)
                    if line.startswith("BEGIN "):
                        current, started, phase = json.loads(line[6:]), True, None
                        mark = stderr.seek(0, os.SEEK_END)
                    elif line.startswith("PHASE "):
                        phase = line[6:]
                    elif line.startswith("RESULT "):
                        rec = json.loads(line[7:])
                        results[rec["id"]] = rec
                        todo.remove(rec["id"])
                        current = None
                    elif line == "DONE":
                        proc.wait(timeout=60)
                        break
                    elif line in (TIMEOUT, EOF):
                        hung = line == TIMEOUT
                        if hung:
                            proc.kill()
                        rc = proc.wait(timeout=60)
                        stderr.seek(mark)
                        tail = stderr.read()[-3000:].decode("utf-8", "replace")
                        if current is None:
                            raise RuntimeError(
                                f"a child {'hung' if hung else 'died'} outside an item "
                                f"(exit {rc}); stderr:\n{tail}")
                        results[current] = {"id": current, "result": "hang" if hung else "crash",
                                            "phase": phase, "exit": rc, "stderr": tail}
                        todo.remove(current)
                        break
            finally:
                sel.close()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
    return results


def run_parallel(argv: Sequence[str], ids: Sequence[Any], *, workers: int = 2,
                 **kwargs: Any) -> dict[Any, Result]:
    """:func:`run_in_children` over ``workers`` interleaved shares of ``ids``."""
    shares = [list(ids[k::workers]) for k in range(workers)]
    results: dict[Any, Result] = {}
    errors: list[BaseException] = []

    def work(share: list[Any]) -> None:
        try:
            results.update(run_in_children(argv, share, **kwargs))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in shares if s]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def child_env(root: os.PathLike[str] | str, **extra: str) -> dict[str, str]:
    """The environment of a child: the llama_cffi this test process imported
    (installed or ``src``) and the checkout on PYTHONPATH, no gdb backtraces
    on aborts (they take seconds each)."""
    import llama_cffi

    env = dict(os.environ, GGML_NO_BACKTRACE="1", **extra)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(llama_cffi.__file__)))
    paths = [package_parent, str(root), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env
