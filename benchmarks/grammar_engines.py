"""JSON-schema generation with llguidance, with llama.cpp's grammar engine and
without constraint, side by side (issue 23); and the compile time of a large
schema, once and from the cache.

Per model, interleaved rounds of four runs on the same prompt (greedy, the
3-property schema of ``engine_throughput.py``, up to 96 tokens):

* ``llguidance``: ``json_schema=`` with ``grammar_engine="llguidance"``;
* ``unconstrained``: no schema, as many tokens as the llguidance run made
  (``ignore_eos``), so both decode the same count;
* ``llama``: ``grammar_engine="llama"`` (llama.cpp's grammar engine on the
  GBNF our converter writes);
* ``llama-completion -j``: llama.cpp's own tool with the same schema (its
  eval time plus its sampling time per generated token).

Then the same with sampling (temperature 0.8, a seed): llguidance computes
its mask every step there (greedy keeps the arg-max when the grammar allows
it, without a mask). Figures: median ms per generated token, and the median
of the per-round ratios. llguidance's requests run in the engine's C runs
(``cdef/run.h`` masks and advances the matcher, no Python per token);
``llguidance, per-step`` is the same request with one Python step per token
(``engine.run_steps = 0``), as before the runs took constrained requests.

Compile: a 50-property object whose properties hold strings, integers,
enums and arrays of objects with nested arrays; the first compile for the
model (llguidance), the same schema again (cache), and llama.cpp's
converter plus grammar sampler for comparison; and the one-time cost of
giving llguidance the model's vocabulary.

    flock /tmp/llama.lock python benchmarks/grammar_engines.py [--models ...] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from _common import tools_dir
from engine_throughput import SCHEMA, THREADS, completion_ms_per_token

import llama_cffi as lc
from llama_cffi.engine.engine import RUN_STEPS
from llama_cffi.objects.constraints import constraint_for, tokenizer_for

PROMPT = "Describe a person as JSON:"
N_MAX = 96


def big_schema(tag: str) -> dict[str, Any]:
    """A 50-property object with nested arrays (``tag`` makes it new to the cache)."""
    props: dict[str, Any] = {}
    for i in range(50):
        kind = i % 5
        if kind == 0:
            props[f"name_{i}"] = {"type": "string", "maxLength": 40}
        elif kind == 1:
            props[f"count_{i}"] = {"type": "integer", "minimum": 0, "maximum": 10000}
        elif kind == 2:
            props[f"state_{i}"] = {"enum": ["new", "open", "closed", "archived"]}
        elif kind == 3:
            props[f"items_{i}"] = {"type": "array", "maxItems": 8, "items": {
                "type": "object", "properties": {
                    "id": {"type": "integer"},
                    "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                    "score": {"type": "number"}},
                "required": ["id", "labels"]}}
        else:
            props[f"matrix_{i}"] = {"type": "array", "items": {
                "type": "array", "items": {"type": "integer"}, "maxItems": 6}}
    return {"title": tag, "type": "object", "properties": props, "required": list(props)}


def ms_per_token(c: lc.Completion) -> float:
    return c.timings.generation_seconds / max(1, len(c.tokens) - 1) * 1e3


def side_by_side(llm: lc.LLM, path: str, rounds: int, temperature: float,
                 with_tool: bool) -> None:
    runs: dict[str, list[float]] = {"llguidance": [], "unconstrained": [],
                                    "llguidance, per-step": [], "llama": [],
                                    "llama-completion -j": []}
    counts = []
    kw: dict[str, Any] = {"temperature": temperature, "seed": 7}
    for _ in range(rounds):
        g = llm.complete(PROMPT, max_tokens=N_MAX, json_schema=SCHEMA,
                         grammar_engine="llguidance", **kw)
        n = len(g.tokens)
        counts.append(n)
        u = llm.complete(PROMPT, max_tokens=n, ignore_eos=True, **kw)
        llm.engine.run_steps = 0
        try:
            s = llm.complete(PROMPT, max_tokens=N_MAX, json_schema=SCHEMA,
                             grammar_engine="llguidance", **kw)
        finally:
            llm.engine.run_steps = RUN_STEPS
        runs["llguidance, per-step"].append(ms_per_token(s))
        ll = llm.complete(PROMPT, max_tokens=N_MAX, json_schema=SCHEMA, grammar_engine="llama",
                          **kw)
        runs["llguidance"].append(ms_per_token(g))
        runs["unconstrained"].append(ms_per_token(u))
        runs["llama"].append(ms_per_token(ll))
        if with_tool:
            runs["llama-completion -j"].append(completion_ms_per_token(path))
    base = runs["unconstrained"]
    print(f"\n{'greedy' if temperature <= 0 else f'temperature {temperature}'}, "
          f"{statistics.median(counts)} tokens (median of {rounds} rounds)\n")
    print("| run | ms/token | / unconstrained | / llguidance |")
    print("|---|---|---|---|")
    for name, values in runs.items():
        if not values:
            continue
        r_base = statistics.median(v / b for v, b in zip(values, base))
        r_llg = statistics.median(v / b for v, b in zip(values, runs["llguidance"]))
        print(f"| {name} | {statistics.median(values):.2f} | {r_base:.2f} | {r_llg:.2f} |")


def compile_times(llm: lc.LLM) -> None:
    vocab = llm.model.vocab
    schema = big_schema(f"bench-{time.time()}")
    t0 = time.perf_counter()
    first = constraint_for(vocab, "json_schema", schema)
    t1 = time.perf_counter()
    again = constraint_for(vocab, "json_schema", schema)
    t2 = time.perf_counter()
    first.close()
    again.close()
    gbnf = lc.Grammar.from_json_schema(schema)
    t3 = time.perf_counter()
    sampler = gbnf.sampler(llm.model)
    t4 = time.perf_counter()
    sampler.close()
    print("\n| 50-property schema with nested arrays | ms |\n|---|---|")
    print(f"| llguidance compile (first time) | {(t1 - t0) * 1e3:.2f} |")
    print(f"| llguidance again (cached: a copy of the matcher) | {(t2 - t1) * 1e3:.3f} |")
    print(f"| llama.cpp: our converter to GBNF | {(t3 - t2) * 1e3:.2f} |")
    print(f"| llama.cpp: grammar sampler from the GBNF (every request) | "
          f"{(t4 - t3) * 1e3:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    have_tool = (tools_dir() / "llama-completion").exists()
    for name in a.models.split(","):
        path = str(lc.models.fetch(name))
        print(f"\n### {name}")
        with lc.LLM(path, n_ctx=1024, n_threads=THREADS) as llm:
            t0 = time.perf_counter()
            tokenizer_for(llm.model.vocab)
            print(f"\nvocabulary to llguidance (once per model): "
                  f"{(time.perf_counter() - t0) * 1e3:.0f} ms")
            llm.complete(PROMPT, max_tokens=8, json_schema=SCHEMA)  # warm-up
            side_by_side(llm, path, a.rounds, 0.0, have_tool)
            side_by_side(llm, path, a.rounds, 0.8, False)
            compile_times(llm)


if __name__ == "__main__":
    main()
