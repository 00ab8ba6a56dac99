"""ggml RPC: other processes or machines as devices.

``add_server("host:port")`` makes the devices of a running RPC server (one
started by :func:`serve`, ``llama-cffi rpc-server`` or llama.cpp's
``ggml-rpc-server``) available to models, as llama.cpp's ``--rpc`` does; they
appear in :func:`llama_cffi.devices` as ``RPC<n>`` and take part in
``n_gpu_layers``, ``tensor_split`` and ``devices``.

:class:`Server` runs an RPC server in a child process for as long as it is
open (tests, or lending this machine's CPU to another process).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from .._bindings import backend
from .._bindings.init import ensure_initialised
from .._bindings.raw import HAVE_RPC
from ..errors import LlamaError
from .system import Device, find_device
from .system import devices as _all_devices

_servers: dict[str, list[str]] = {}


def _require_rpc() -> None:
    if not HAVE_RPC:
        raise LlamaError("this build has no RPC backend: reinstall with -DGGML_RPC=ON")


def _check_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"RPC endpoint must be host:port, got {endpoint!r}")
    return host, int(port)


def add_server(endpoint: str) -> list[Device]:
    """Register the devices of the RPC server at ``endpoint`` (``--rpc host:port``).

    Returns the new devices. Adding the same endpoint twice returns the
    devices registered the first time. Devices stay registered for the life
    of the process; if their server stops, models that would use them raise
    an error (pass ``devices=[...]`` without them). A server that dies in the
    middle of a computation makes llama.cpp abort the process: its RPC
    backend has no way to report that error.
    """
    _require_rpc()
    ensure_initialised()
    host, port = _check_endpoint(endpoint)
    if endpoint in _servers:
        return [d for d in _all_devices() if d.name in _servers[endpoint]]
    try:  # fail with a clear message instead of llama.cpp's abort on no server
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise LlamaError(f"no RPC server answers at {endpoint}: {exc}") from exc
    before = {d.name for d in _all_devices()}
    backend.rpc_add_server(endpoint)
    new = [d for d in _all_devices() if d.name not in before]
    _servers[endpoint] = [d.name for d in new]
    return new


def servers() -> dict[str, list[str]]:
    """Endpoints added in this process and the names of their devices."""
    return {k: list(v) for k, v in _servers.items()}


def serve(host: str = "127.0.0.1", port: int = 50052, *, devices: Sequence[str] | None = None,
          n_threads: int | None = None, cache_dir: str | None = None) -> None:
    """Run an RPC server in this thread; it never returns (stop the process).

    devices: names of local devices to serve, default the accelerators or,
        if there are none, the CPU (as ``ggml-rpc-server``).
    n_threads: threads for the CPU device.
    cache_dir: where the server caches tensors it received (``-c``), none by default.
    """
    _require_rpc()
    ensure_initialised()
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving RPC on {host}: the protocol has no authentication; "
              "expose it only on trusted networks", file=sys.stderr)
    if devices:
        devs = [find_device(name) for name in devices]
    else:
        devs = [d for d in backend.all_devices()
                if backend.device_type(d) not in (backend.DEVICE_TYPE_CPU,
                                                  backend.DEVICE_TYPE_ACCEL)
                and backend.device_backend_name(d) != "RPC"]
        if not devs:
            cpu = backend.device_by_type(backend.DEVICE_TYPE_CPU)
            if cpu is None:
                raise LlamaError("there is no device to serve")
            devs = [cpu]
    threads = n_threads if n_threads is not None else 1
    backend.rpc_start_server(f"{host}:{port}", cache_dir, threads, devs)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Server:
    """An RPC server in a child process (``llama-cffi rpc-server``), for ``with``.

    >>> with Server() as srv:                       # doctest: +SKIP
    ...     devs = add_server(srv.endpoint)
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *,
                 n_threads: int = 1, startup_timeout: float = 30.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.endpoint = f"{host}:{self.port}"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cffi", "rpc-server", "--host", host,
             "--port", str(self.port), "-t", str(n_threads)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + startup_timeout
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise LlamaError(f"the RPC server exited with {self._proc.returncode}: {err}")
            try:
                socket.create_connection((host, self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise LlamaError(f"the RPC server did not start listening on {self.endpoint}")
                time.sleep(0.05)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
