"""Run lm-eval-harness's ``local-completions`` model on one multiple-choice task
against a running server (tests/test_lm_eval.py runs this file with the
Python that has ``lm_eval`` installed, which may not be the test's own).

argv: base URL of the server, model name, task directory (a task YAML and its
jsonl data), task name, number of documents. Prints one JSON object: the
task's ``acc`` and, per document, each choice's (context, continuation,
log-likelihood).

lm-eval needs the model's tokenizer to split context from continuation; its
``remote`` backend reads it from the server, in vLLM's dialect
(``/tokenizer_info``, ``/tokenize`` with ``prompt``). The adapter below reads
the same facts from llama-server's ``/tokenize`` and ``/detokenize``, which
this server has, so that nothing is downloaded.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import lm_eval
import lm_eval.utils
import requests
from lm_eval.tasks import TaskManager


class LlamaServerTokenizer(lm_eval.utils.RemoteTokenizer):
    """lm-eval's remote tokenizer over llama-server's tokenizer endpoints."""

    def _validate_server(self) -> None:
        requests.post(f"{self.base_url}/tokenize", json={"content": "x"},
                      timeout=self.timeout).raise_for_status()

    @property
    def tokenizer_info(self) -> dict[str, Any]:
        return {"eos_token": "<|im_end|>", "bos_token": None, "pad_token": None}

    def encode(self, text: str) -> list[int]:
        r = requests.post(f"{self.base_url}/tokenize",
                          json={"content": text, "add_special": False}, timeout=self.timeout)
        r.raise_for_status()
        return list(r.json()["tokens"])

    def decode(self, tokens: list[int]) -> str:
        r = requests.post(f"{self.base_url}/detokenize", json={"tokens": tokens},
                          timeout=self.timeout)
        r.raise_for_status()
        return str(r.json()["content"])


def main() -> None:
    base, model, task_dir, task, limit = sys.argv[1:6]
    lm_eval.utils.RemoteTokenizer = LlamaServerTokenizer  # type: ignore[misc]
    out = lm_eval.simple_evaluate(
        model="local-completions",
        model_args=f"model={model},base_url={base}/v1/completions,tokenizer_backend=remote,"
                   "num_concurrent=1,max_retries=1,tokenized_requests=True",
        tasks=[task], task_manager=TaskManager(include_path=task_dir), limit=int(limit),
        log_samples=True, batch_size=2)
    assert out is not None
    docs = []
    for s in out["samples"][task]:
        docs.append([[a[0], a[1], r[0][0]] for a, r in zip(s["arguments"], s["resps"])])
    print(json.dumps({"acc": out["results"][task]["acc,none"], "docs": docs}))


if __name__ == "__main__":
    main()
