"""`llama-cffi bench` measures like llama-bench and prints its formats."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llama_cffi", "bench", *args],
                          capture_output=True, text=True, timeout=300)


def test_bench_json_and_markdown(smollm2_path) -> None:
    proc = run("-m", str(smollm2_path), "-p", "64", "-n", "16", "-r", "2", "-t", "2",
               "-ctk", "f16,q8_0", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["test"], r["type_k"]) for r in rows] == [
        ("pp64", "f16"), ("tg16", "f16"), ("pp64", "q8_0"), ("tg16", "q8_0")]
    for r in rows:
        assert r["avg_ts"] > 0 and len(r["samples_ts"]) == 2 and r["n_threads"] == 2
    md = run("-m", str(smollm2_path), "-p", "32", "-n", "0", "-r", "1", "-pg", "32,8")
    assert md.returncode == 0, md.stderr
    assert "| pp32 |" in md.stdout and "| pp32+tg8 |" in md.stdout
    c = run("-m", str(smollm2_path), "-p", "0", "-n", "8", "-r", "1", "-o", "csv")
    table = list(csv.DictReader(io.StringIO(c.stdout)))
    assert table[0]["test"] == "tg8"
