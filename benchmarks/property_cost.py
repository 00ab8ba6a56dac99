"""What reading a fact of a live object costs, against the bare C call.

    python benchmarks/property_cost.py

Facts that cannot change after creation (sizes, special tokens) are read
from C once, when the object is made; reading them afterwards is a Python
attribute access. The bare cffi call is shown for comparison (cffi releases
and re-acquires the GIL around every call).
"""

from __future__ import annotations

import sys
import timeit

import llama_cffi as lc
from llama_cffi._bindings.raw import lib


def per_call_ns(fn: object, number: int = 200_000, repeat: int = 7) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=repeat))  # type: ignore[arg-type]
    return best / number * 1e9


def main() -> int:
    with lc.Model(lc.models.fetch("smollm2-135m")) as model, \
            model.context(n_ctx=256, n_threads=1) as ctx:
        vocab = model.vocab
        ptr = ctx.ptr
        rows = [
            ("ctx.n_ctx", per_call_ns(lambda: ctx.n_ctx)),
            ("ctx.n_ctx_seq", per_call_ns(lambda: ctx.n_ctx_seq)),
            ("ctx.n_batch", per_call_ns(lambda: ctx.n_batch)),
            ("model.n_layer", per_call_ns(lambda: model.n_layer)),
            ("model.n_embd", per_call_ns(lambda: model.n_embd)),
            ("vocab.n_tokens", per_call_ns(lambda: vocab.n_tokens)),
            ("vocab.eos", per_call_ns(lambda: vocab.eos)),
            ("bare lib.llama_n_ctx(ptr)", per_call_ns(lambda: lib.llama_n_ctx(ptr))),
        ]
    print("| read | ns per call (best of 7) |")
    print("|---|---|")
    for name, ns in rows:
        print(f"| `{name}` | {ns:.0f} |")
    worst = max(ns for name, ns in rows if not name.startswith("bare"))
    print(f"\nslowest fact: {worst:.0f} ns (goal <= 100 ns)")
    return 0 if worst <= 100 else 1


if __name__ == "__main__":
    sys.exit(main())
