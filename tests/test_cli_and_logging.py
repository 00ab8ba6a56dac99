"""The llama-cffi command, load progress/cancel, and llama.cpp's log in logging."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llama_cffi as lc


def greedy_text(model: lc.Model, prompt: str, n: int) -> str:
    with model.context(n_ctx=256) as ctx, lc.SamplerChain([lc.sampling.greedy()]) as chain:
        toks = model.vocab.tokenize(prompt, add_special=True, parse_special=True)
        stream = lc.TextStream(model.vocab)
        text = "".join(stream.add(t) for t in lc.Generation(ctx, chain, toks, max_tokens=n))
        return text + stream.flush()


def test_cli_run_streams_the_greedy_continuation(smollm2: lc.Model) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llama_cffi", "run", "Once upon a time", "-n", "24",
         "--temp", "0", "-m", "smollm2-135m", "-c", "256"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == greedy_text(smollm2, "Once upon a time", 24) + "\n"
    assert proc.stderr == ""  # quiet when not on a terminal


def test_cli_reports_bad_model_cleanly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 10)
    proc = subprocess.run([sys.executable, "-m", "llama_cffi", "run", "hi", "-m", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "llama-cffi: error: invalid GGUF file" in proc.stderr and "GGUF version 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_system_info() -> None:
    proc = subprocess.run([sys.executable, "-m", "llama_cffi", "system-info"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "0c1e57098" in proc.stdout and "RPC" in proc.stdout


def test_progress_callback_and_cancel(smollm2_path: Path) -> None:
    seen: list[float] = []
    with lc.Model(smollm2_path, progress=seen.append):
        pass
    assert seen and seen[-1] == pytest.approx(1.0)

    with pytest.raises(lc.LoadCancelledError, match="cancelled"):
        lc.Model(smollm2_path, progress=lambda p: p < 0.3)

    def boom(p: float) -> bool:
        raise KeyError("user code failed")

    with pytest.raises(lc.LoadCancelledError) as info:
        lc.Model(smollm2_path, progress=boom)
    assert isinstance(info.value.__cause__, KeyError)
    # the process still loads models
    with lc.Model(smollm2_path) as m:
        assert m.n_params > 100_000_000


def test_log_goes_to_logging(smollm2_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="llama_cffi"):
        with lc.Model(smollm2_path):
            pass
    messages = [r.getMessage() for r in caplog.records if r.name == "llama_cffi"]
    assert any("llama_model_loader" in m or "print_info" in m for m in messages)
    assert all("\n" not in m for m in messages)


def test_quiet_by_default_and_env_switch(smollm2_path: Path) -> None:
    code = f"import llama_cffi as lc; lc.Model({str(smollm2_path)!r}).close()"
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
    env = dict(os.environ, LLAMA_CFFI_LOG="info")
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert loud.returncode == 0 and "llama_cffi INFO" in loud.stderr


def test_text_stream_never_splits_utf8(smollm2: lc.Model) -> None:
    vocab = smollm2.vocab
    text = "naïve café — 日本語 🙂"
    tokens = vocab.tokenize(text, add_special=False)
    stream = lc.TextStream(vocab)
    pieces = [stream.add(t) for t in tokens] + [stream.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert vocab.detokenize(tokens) == text


def test_cli_json_schema_and_bad_grammar() -> None:
    import json

    schema = ('{"type":"object","properties":{"name":{"type":"string","maxLength":20},'
              '"age":{"type":"integer","minimum":1,"maximum":99}},"required":["name","age"]}')
    proc = subprocess.run(
        [sys.executable, "-m", "llama_cffi", "run", "A person as JSON:", "-n", "80",
         "--temp", "0.7", "-s", "3", "-j", schema, "-c", "256"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    value = json.loads(proc.stdout)
    assert set(value) == {"name", "age"} and 1 <= value["age"] <= 99
    bad = subprocess.run([sys.executable, "-m", "llama_cffi", "run", "x", "--grammar",
                          'root ::= "a" ('], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "line 1, column 15" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_info() -> None:
    proc = subprocess.run([sys.executable, "-m", "llama_cffi", "info", "gemma3-270m"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "architecture:  gemma3" in proc.stdout and "sliding window: 512" in proc.stdout
    # 18 layers x 1 KV head x (256 + 256) x 2 bytes = 18 KiB per token
    assert "18.0 KiB per token" in proc.stdout


def test_cli_wrong_flags_are_helpful() -> None:
    import re

    # the usage text lists every flag: the error line itself must name the
    # flag, the bad value and the choices
    proc = subprocess.run([sys.executable, "-m", "llama_cffi", "run", "hi", "-fa", "maybe"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: llama-cffi run"), proc.stderr
    assert re.fullmatch(r"llama-cffi run: error: argument -fa/--flash-attn: invalid choice: "
                        r"'maybe' \(choose from '?on'?, '?off'?, '?auto'?\)",
                        proc.stderr.splitlines()[-1]), proc.stderr.splitlines()[-1]
    proc = subprocess.run([sys.executable, "-m", "llama_cffi", "frobnicate"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("llama-cffi: error: argument command: invalid choice: 'frobnicate'")
    assert all(f"'{c}'" in last for c in ("run", "chat", "info", "bench")), last
    proc = subprocess.run([sys.executable, "-m", "llama_cffi", "run", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--n-cpu-moe" in proc.stdout and "--json-schema" in proc.stdout


def test_cli_chat_in_a_terminal(smollm2_path: Path) -> None:
    """Drive `llama-cffi chat` through a pseudo-terminal, as a user would."""
    import os
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execv(sys.executable, [sys.executable, "-m", "llama_cffi", "chat", "-m",
                                  str(smollm2_path), "-n", "12", "--temp", "0", "-c", "512"])
    out = b""

    def read_until(marker: bytes, timeout: float = 120) -> None:
        nonlocal out
        start = len(out)
        deadline = time.monotonic() + timeout
        while marker not in out[start:]:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {marker!r}; got {out[-500:]!r}"
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break

    try:
        read_until(b"> ")
        os.write(fd, b"Hello, who are you?\r")
        read_until(b"who are you?")  # the terminal echoes the line
        read_until(b"\n> ")  # the reply, then the next prompt
        first = len(out)
        os.write(fd, b"Tell me more.\r")
        read_until(b"Tell me more.")
        read_until(b"\n> ", timeout=120)
        assert len(out) > first + 30
        os.write(fd, b"/bye\r")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out[-1000:]


def test_cli_pull_and_list(smollm2_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "llama_cffi", "pull", "smollm2-135m"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == str(smollm2_path)
    proc = subprocess.run([sys.executable, "-m", "llama_cffi", "list"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    line = next(x for x in proc.stdout.splitlines() if x.startswith("smollm2-135m"))
    assert "MiB" in line and str(smollm2_path) in line
    proc = subprocess.run([sys.executable, "-m", "llama_cffi", "pull", "no-such-model"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
