"""Start a server (ours or llama-server) in a subprocess on a free port of
127.0.0.1 and wait for it, with bounded waits."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .child_runner import child_env

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, *, headers: dict[str, str] | None = None,
         raw: bytes | None = None, timeout: float = 120) -> tuple[int, Any]:
    """(status, parsed JSON or text) of one request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return http("GET", self.url + path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return http("POST", self.url + path, body, **kw)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@contextlib.contextmanager
def running(argv: Sequence[str], log: Path, *, port: int, ready_path: str = "/health",
            timeout: float = 180, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Run ``argv`` (which must listen on ``port``) until the block ends."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                env=env or child_env(ROOT), cwd=ROOT)
    server = Server(proc, port, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}):\n{server.output()}")
            try:
                status, _ = server.get(ready_path, timeout=5)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start in {timeout} s:\n"
                                   f"{server.output()}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def ours(args: Sequence[str], log: Path, **kw: Any) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    argv = [sys.executable, "-m", "llama_cffi.apps.server", "--port", str(port),
            "--log-level", "warning", *args]
    return running(argv, log, port=port, **kw)


def llama_server(tools_dir: Path, args: Sequence[str], log: Path,
                 **kw: Any) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    argv = [str(tools_dir / "llama-server"), "--host", "127.0.0.1", "--port", str(port), *args]
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    return running(argv, log, port=port, env=env, **kw)
