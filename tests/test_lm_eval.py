"""lm-eval-harness's ``local-completions`` model scoring a small multiple-choice
task against our server (``/v1/completions`` with ``echo``, ``logprobs`` and
token-id prompts), each choice's log-likelihood checked against one computed
here from a plain Context's logits.

lm-eval is heavy (pandas, pyarrow, scikit-learn, datasets ...: about 740 MB
in a fresh virtual environment) and is not in the test extra: the test runs
it with the interpreter that has it (``LLAMA_CFFI_LM_EVAL_PYTHON``, or this
one), or makes a virtual environment with it once in the cache folder. The task is written here (a YAML with a local jsonl
dataset), so nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import llama_cffi as lc
from llama_cffi import models

from .server_util import ours

pytestmark = pytest.mark.slow

TASK = "llama_cffi_tiny_mc"
DOCS = [
    {"question": "What is the capital of France?", "choices": ["Paris", "London", "Rome"],
     "answer": 0},
    {"question": "How many legs does a spider have?", "choices": ["six", "eight", "ten"],
     "answer": 1},
    {"question": "What colour is the sky on a clear day?", "choices": ["green", "red", "blue"],
     "answer": 2},
    {"question": "Which animal says moo?", "choices": ["a cow", "a cat", "a dog"], "answer": 0},
]


def lm_eval_python() -> str:
    """An interpreter that can import lm_eval: ``LLAMA_CFFI_LM_EVAL_PYTHON``, this
    one if it has lm-eval, else a virtual environment made once in the cache
    folder with ``pip install "lm-eval[api]"`` (kept apart: lm-eval would change
    the versions of packages the server uses)."""
    env = os.environ.get("LLAMA_CFFI_LM_EVAL_PYTHON")
    if env:
        return env
    if importlib.util.find_spec("lm_eval") is not None:
        return sys.executable
    venv = models.cache_dir().parent / "lm-eval-venv"
    python = venv / "bin" / "python"
    if not (venv / "complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "lm-eval[api]"],
                       check=True, timeout=1200)
        (venv / "complete").touch()
    return str(python)


def write_task(folder: Path) -> None:
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (folder / f"{TASK}.yaml").write_text(f"""\
task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")


def loglikelihood(ctx: lc.Context, context: list[int], continuation: list[int]) -> float:
    """log P(continuation | context) from one decode of the whole text."""
    tokens = context + continuation
    ctx.clear()
    with lc.Batch(len(tokens)) as batch:
        for i, t in enumerate(tokens):
            batch.add(t, i, [0], True)
        ctx.decode(batch)
    total = 0.0
    for i in range(len(context), len(tokens)):
        x = ctx.logits(i - 1).astype(np.float64)
        m = x.max()
        total += float(x[tokens[i]] - m - np.log(np.exp(x - m).sum()))
    return total


def test_lm_eval_local_completions_multiple_choice(smollm2_path: Path, tmp_path: Path) -> None:
    python = lm_eval_python()
    write_task(tmp_path)
    driver = Path(__file__).with_name("lm_eval_driver.py")
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"))
    with ours(["-m", str(smollm2_path), "-c", "2048", "-np", "2", "-t", "2", "-a", "smol"],
              tmp_path / "server.log") as server:
        proc = subprocess.run([python, str(driver), server.url, "smol", str(tmp_path), TASK,
                               str(len(DOCS))], capture_output=True, text=True, timeout=540,
                              cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-4000:] + server.output()
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["docs"]) == len(DOCS)
    with lc.Model(smollm2_path) as model, \
            lc.Context(model, lc.ContextParams(n_ctx=256, n_batch=256, n_threads=2)) as ctx:
        right = 0
        for doc, choices in zip(DOCS, out["docs"]):
            assert len(choices) == len(doc["choices"])
            want = []
            for (context, continuation, got), choice in zip(choices, doc["choices"]):
                assert continuation == " " + choice
                # as lm-eval splits: the whole text's tokens, cut after the context's
                whole = model.vocab.tokenize(context + continuation, add_special=False,
                                             parse_special=True)
                n = len(model.vocab.tokenize(context, add_special=False, parse_special=True))
                want.append(loglikelihood(ctx, whole[:n], whole[n:]))
                assert abs(got - want[-1]) < 1e-3, (context, continuation, got, want[-1])
            right += int(np.argmax(want)) == doc["answer"]
    assert out["acc"] == pytest.approx(right / len(DOCS))
