"""Models from the Hugging Face Hub (objects/hub.py, ``llama-cffi pull hf://``,
``compat.Llama.from_pretrained``), against a local stand-in of the Hub's file
endpoints (tests/hub_standin.py) on 127.0.0.1: no internet.

The downloads run in a child interpreter whose environment points
huggingface_hub at the stand-in (``HF_ENDPOINT``, ``HF_HUB_OFFLINE=0``, a
temporary ``HF_HOME``), since huggingface_hub reads those when imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub  # noqa: F401 - the test extra installs it; the tests need it

from tests.hub_standin import HubStandIn

ROOT = Path(__file__).resolve().parent.parent
VOCAB = ROOT / "vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf"

Q4 = os.urandom(3000)
Q8_1, Q8_2 = os.urandom(2000), os.urandom(1500)
REPO = {"org/models": {"model-Q4_K_M.gguf": Q4,
                       "model-Q8_0-00001-of-00002.gguf": Q8_1,
                       "model-Q8_0-00002-of-00002.gguf": Q8_2,
                       "README.md": b"# a model card\n"}}


def _run(hub: HubStandIn, tmp: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
           "HF_HOME": str(tmp / "hf"), "LLAMA_CFFI_MODELS": str(tmp / "models"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    env.pop("HF_TOKEN", None)
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


DOWNLOAD = """
import json, sys
from llama_cffi.objects import hub
out = []
for repo, pattern in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        out.append({"path": str(hub.download(repo, pattern))})
    except Exception as exc:
        out.append({"error": type(exc).__name__, "message": str(exc)})
print(json.dumps(out))
"""


def _download(hub: HubStandIn, tmp: Path, *repo_patterns: str) -> list[dict[str, str]]:
    """hub.download(repo, pattern) for each pair, in order, in one child interpreter."""
    proc = _run(hub, tmp, DOWNLOAD, *repo_patterns)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_download_by_glob_and_split_gguf(tmp_path: Path) -> None:
    with HubStandIn(REPO) as hub:
        q4, q8, again = _download(hub, tmp_path, "org/models", "*Q4_K_M.gguf",
                                  "org/models", "*Q8_0*.gguf", "org/models", "*Q8_0*.gguf")
    assert Path(q4["path"]).read_bytes() == Q4
    first = Path(q8["path"])
    assert first.name == "model-Q8_0-00001-of-00002.gguf"
    assert first.read_bytes() == Q8_1
    assert (first.parent / "model-Q8_0-00002-of-00002.gguf").read_bytes() == Q8_2
    assert again["path"] == str(first)
    # each part was fetched once: the second call found them in the cache
    gets = [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]
    assert sorted(gets) == sorted(set(gets)) and len(gets) == 3


def test_download_pattern_errors_name_the_files(tmp_path: Path) -> None:
    with HubStandIn(REPO) as hub:
        several, none, missing = _download(hub, tmp_path, "org/models", "*.gguf",
                                           "org/models", "*Q2_K*", "org/missing", "*.gguf")
    assert several["error"] == "ValueError" and "several files" in several["message"]
    assert none["error"] == "ValueError" and "model-Q4_K_M.gguf" in none["message"]
    assert missing["error"] == "ModelFetchError"


def test_checksum_mismatch_deletes_the_file(tmp_path: Path) -> None:
    with HubStandIn(REPO) as hub:
        hub.wrong_sha.add("model-Q4_K_M.gguf")
        (out,) = _download(hub, tmp_path, "org/models", "*Q4_K_M.gguf")
    assert out["error"] == "ModelFetchError" and "checksum mismatch" in out["message"]
    blobs = list((tmp_path / "hf" / "hub").rglob("blobs/*"))
    assert not [b for b in blobs if b.stat().st_size == len(Q4)]


def test_broken_download_resumes_with_a_range_request(tmp_path: Path) -> None:
    # huggingface_hub (>= 1.0) resumes a transfer that breaks off within the same
    # download call; a process killed mid-download starts the file again.
    # It writes in chunks of 10 MiB: the file is cut after the first chunk.
    big = os.urandom(11 << 20)
    with HubStandIn({"org/big": {"big.gguf": big}}) as hub:
        hub.drop_once["big.gguf"] = (10 << 20) + 12345
        (out,) = _download(hub, tmp_path, "org/big", "big.gguf")
        assert Path(out["path"]).read_bytes() == big
        ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith("big.gguf")]
        assert ranges == [None, f"bytes={10 << 20}-"]


def test_cli_pull_hf_url(tmp_path: Path) -> None:
    with HubStandIn(REPO) as hub:
        proc = _run(hub, tmp_path, "", "-m", "llama_cffi", "pull",
                    "hf://org/models/model-Q4_K_M.gguf")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert Path(proc.stdout.strip()).read_bytes() == Q4
        proc = _run(hub, tmp_path, "", "-m", "llama_cffi", "pull", "hf://org/models/*.bin")
        assert proc.returncode == 1 and "no file of org/models matches" in proc.stderr


def test_compat_from_pretrained(tmp_path: Path) -> None:
    repo = {"ggml-org/vocab": {"ggml-vocab-llama-spm.gguf": VOCAB.read_bytes()}}
    code = """
from llama_cffi.compat import Llama
llm = Llama.from_pretrained("ggml-org/vocab", "*spm.gguf", vocab_only=True, verbose=False)
print(llm.tokenize(b"Hello World"), llm.model_path.endswith("ggml-vocab-llama-spm.gguf"))
llm.close()
"""
    with HubStandIn(repo) as hub:
        proc = _run(hub, tmp_path, code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[1,", "15043,", "2787]", "True"]


def test_missing_huggingface_hub_says_what_to_install() -> None:
    code = """
import sys
sys.modules["huggingface_hub"] = None  # as if not installed
from llama_cffi.objects import hub
try:
    hub.download("org/models", "*.gguf")
except ImportError as exc:
    print(exc)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert "pip install 'llama-cffi[hf]'" in proc.stdout, proc.stderr[-2000:]
