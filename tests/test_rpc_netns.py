"""llama.cpp's RPC backend across hosts: two network namespaces made by the test
(joined by a veth pair, 10.x addresses that exist only inside them) stand for
two machines. llama.cpp's ``ggml-rpc-server`` (same build) runs in one; the
model is split between the local CPU and that remote device in the other.

- Greedy tokens equal the single-machine (CPU only) run.
- Killing the remote server mid-generation: llama.cpp's RPC client aborts the
  process (``GGML_ABORT("Remote RPC server crashed or returned malformed
  response")`` in ggml-rpc.cpp; it has no error path), so the generation runs
  in a child process and the test turns its death into a Python error with
  llama.cpp's message, within a bounded time (under a second here).
- The remote machine vanishing (its link down: no FIN or RST reaches the
  client) is not noticed at all: the client waits in recv() with no timeout
  or keepalive, so only the parent's deadline ends it.

Skips, with the reason, where namespaces cannot be made (not root, no ``ip``,
no CAP_NET_ADMIN). The namespaces are deleted in a finalizer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import llama_cffi as lc

from .child_runner import child_env

pytestmark = [pytest.mark.slow, pytest.mark.tools]

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The old lighthouse keeper"
N_TOKENS = 16
RPC_PORT = 50052


class RemoteLost(RuntimeError):
    """The child that generated through the RPC device died: the remote server
    went away (llama.cpp aborts its process)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=check)


@dataclass
class Hosts:
    """Two namespaces: ``client`` (10.x.y.1) and ``server`` (10.x.y.2)."""

    client: str
    server: str
    client_ip: str
    server_ip: str

    def run(self, ns: str, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", ns, *argv], **kw)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2): network namespaces cannot be made here")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CAP_NET_ADMIN)")
    tag = f"lc{os.getpid() % 100000}"
    client, server = f"{tag}c", f"{tag}s"
    subnet = f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"
    made: list[str] = []
    try:
        for ns in (client, server):
            r = _ip("netns", "add", ns, check=False)
            if r.returncode != 0:
                pytest.skip(f"`ip netns add` failed here: {r.stderr.strip()}")
            made.append(ns)
        _ip("link", "add", f"{tag}a", "netns", client, "type", "veth", "peer", "name",
            f"{tag}b", "netns", server)
        for ns, dev, addr in ((client, f"{tag}a", f"{subnet}.1"),
                              (server, f"{tag}b", f"{subnet}.2")):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield Hosts(client, server, f"{subnet}.1", f"{subnet}.2")
    finally:
        for ns in made:  # deletes the veth pair with them
            _ip("netns", "delete", ns, check=False)
        left = _ip("netns", "list", check=False).stdout
        assert client not in left and server not in left, left


@contextlib.contextmanager
def rpc_server(hosts: Hosts, tools_dir: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """ggml-rpc-server in the server namespace, listening on its veth address."""
    with open(log, "wb") as out:
        proc = hosts.run(hosts.server, [str(tools_dir / "ggml-rpc-server"), "-H",
                                        hosts.server_ip, "-p", str(RPC_PORT), "-t", "1"],
                         stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        for _ in range(600):  # until it listens (probed from the client namespace)
            probe = hosts.run(hosts.client, [sys.executable, "-c", PROBE, hosts.server_ip,
                                             str(RPC_PORT)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
            if probe.wait(timeout=30) == 0:
                break
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "ggml-rpc-server did not listen in 60 s"
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


PROBE = """
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
"""

# The client: the model split between the local CPU and the remote device
# (n_gpu_layers of the 30 on the RPC device, the rest and the output on the CPU).
CLIENT = """
import json, sys, time
import numpy as np
import llama_cffi as lc
endpoint, model_path, prompt, n, ngl = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), \
    int(sys.argv[5])
(dev,) = lc.rpc.add_server(endpoint)
with lc.Model(model_path, n_gpu_layers=ngl, devices=[dev.name]) as model:
    remote = sum(v for k, v in model.buffers.items() if k.startswith("RPC"))
    local = sum(v for k, v in model.buffers.items() if not k.startswith("RPC"))
    print(json.dumps({"remote_bytes": remote, "local_bytes": local}), flush=True)
    with model.context(n_ctx=1024, n_threads=1) as ctx:
        ctx.eval_tokens(model.vocab.tokenize(prompt), 0)
        out, batch = [], lc.Batch(1)
        pos = ctx.seq_pos_max(0) + 1
        for i in range(n):
            tok = int(np.argmax(ctx.logits()))
            out.append(tok)
            print(json.dumps({"token": tok, "i": i}), flush=True)
            batch.clear()
            batch.add(tok, pos, (0,), True)
            ctx.decode(batch)
            pos += 1
        batch.close()
print(json.dumps({"tokens": out}), flush=True)
"""


def greedy_cpu(model_path: Path, n: int) -> list[int]:
    """The single-machine run: the same loop on the CPU alone."""
    import numpy as np

    with lc.Model(model_path, n_gpu_layers=0) as model, \
            model.context(n_ctx=1024, n_threads=1) as ctx:
        ctx.eval_tokens(model.vocab.tokenize(PROMPT), 0)
        out, batch = [], lc.Batch(1)
        pos = ctx.seq_pos_max(0) + 1
        for _ in range(n):
            tok = int(np.argmax(ctx.logits()))
            out.append(tok)
            batch.clear()
            batch.add(tok, pos, (0,), True)
            ctx.decode(batch)
            pos += 1
        batch.close()
        return out


def start_client(hosts: Hosts, model_path: Path, n: int, ngl: int) -> subprocess.Popen[bytes]:
    return hosts.run(hosts.client, [sys.executable, "-c", CLIENT,
                                    f"{hosts.server_ip}:{RPC_PORT}", str(model_path), PROMPT,
                                    str(n), str(ngl)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(ROOT))


def finish(child: subprocess.Popen[bytes], timeout: float) -> tuple[list[dict[str, object]], str]:
    """The child's JSON lines and stderr once it ends; RemoteLost if it died
    (llama.cpp's abort), TimeoutError (after killing it) if it outlives ``timeout``."""
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate(timeout=30)
        raise TimeoutError(f"the RPC client did not end within {timeout} s") from None
    lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    text = err.decode(errors="replace")
    if child.returncode != 0:
        why = next((x.strip() for x in text.splitlines() if "RPC" in x), text[-300:])
        sig = -child.returncode if child.returncode < 0 else None
        how = f"signal {signal.Signals(sig).name}" if sig else f"exit {child.returncode}"
        raise RemoteLost(f"the RPC client died ({how}): {why}")
    return lines, text


def test_split_across_hosts_equals_one_machine(hosts: Hosts, tools_dir: Path,
                                               smollm2_path: Path, tmp_path: Path) -> None:
    reference = greedy_cpu(smollm2_path, N_TOKENS)
    with rpc_server(hosts, tools_dir, tmp_path / "rpc.log"):
        lines, _ = finish(start_client(hosts, smollm2_path, N_TOKENS, ngl=15), timeout=300)
    sizes = lines[0]
    assert isinstance(sizes["remote_bytes"], int) and sizes["remote_bytes"] > 10 * 2**20
    assert isinstance(sizes["local_bytes"], int) and sizes["local_bytes"] > 10 * 2**20
    assert lines[-1]["tokens"] == reference


def test_remote_server_killed_mid_generation_is_an_error_not_a_hang(
        hosts: Hosts, tools_dir: Path, smollm2_path: Path, tmp_path: Path) -> None:
    n = 2000  # far more than it makes before the kill
    with rpc_server(hosts, tools_dir, tmp_path / "rpc.log") as server:
        child = start_client(hosts, smollm2_path, n, ngl=30)
        try:
            assert child.stdout is not None
            got = 0
            deadline = time.monotonic() + 300
            while got < 4:  # generating through the remote device
                line = child.stdout.readline()
                if not line:
                    err = child.stderr.read().decode() if child.stderr else ""
                    raise AssertionError(f"the client ended early: {err[-2000:]}")
                got += b'"token"' in line
                assert time.monotonic() < deadline
            server.kill()
            started = time.monotonic()
            with pytest.raises(RemoteLost, match="Remote RPC server crashed"):
                finish(child, timeout=60)
            assert time.monotonic() - started < 60
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)


def test_link_cut_mid_generation_is_bounded_by_the_parent(
        hosts: Hosts, tools_dir: Path, smollm2_path: Path, tmp_path: Path) -> None:
    """The remote machine vanishing (its link goes down: no FIN, no RST) is not
    noticed by llama.cpp's RPC client, which waits in recv() with no timeout:
    only the parent's deadline ends it (the child is killed, TimeoutError)."""
    with rpc_server(hosts, tools_dir, tmp_path / "rpc.log"):
        child = start_client(hosts, smollm2_path, 2000, ngl=30)
        try:
            assert child.stdout is not None
            got = 0
            deadline = time.monotonic() + 300
            while got < 4:
                line = child.stdout.readline()
                if not line:
                    raise AssertionError("the client ended early")
                got += b'"token"' in line
                assert time.monotonic() < deadline
            _ip("-n", hosts.server, "link", "set", "lo", "down")
            _ip("-n", hosts.server, "link", "set", f"{hosts.server[:-1]}b", "down")
            started = time.monotonic()
            with pytest.raises((TimeoutError, RemoteLost)):  # TimeoutError with this llama.cpp
                finish(child, timeout=20)
            assert time.monotonic() - started < 60
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)
