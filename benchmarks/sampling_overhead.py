"""Per-token cost of sampling next to the cost of decoding, on SmolLM2.

A typical chain (penalties, top-k, top-p, min-p, temperature, dist) and the
same chain behind a JSON-schema grammar, each timed around ``chain.sample``
while generating 128 tokens for real; decode is timed around ``ctx.decode``
in the same loop.

    python benchmarks/sampling_overhead.py [--tokens 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import llama_cffi as lc

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 8}},
    "required": ["name", "age", "tags"]}
TYPICAL = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1,
               samplers=["penalties", "top_k", "top_p", "min_p", "temperature"], seed=1)


def run(model: lc.Model, n: int, grammar: lc.Grammar | None) -> tuple[float, float, int]:
    with model.context(n_ctx=1024, n_threads=2) as ctx, \
            lc.SamplerChain.from_params(model, grammar=grammar, **TYPICAL) as chain:
        prompt = model.vocab.tokenize("A JSON record of a person:\n")
        ctx.eval_tokens(prompt, 0)
        batch = lc.Batch(1)
        t_sample = t_decode = 0.0
        pos, count = len(prompt), 0
        for _ in range(n):
            t0 = time.perf_counter()
            tok = chain.sample(ctx)
            t1 = time.perf_counter()
            if model.vocab.is_eog(tok):
                break
            batch.clear()
            batch.add(tok, pos, (0,), True)
            ctx.decode(batch)
            t2 = time.perf_counter()
            t_sample += t1 - t0
            t_decode += t2 - t1
            pos += 1
            count += 1
        batch.close()
    return t_sample / count, t_decode / count, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    model = lc.Model(lc.models.fetch("smollm2-135m"))
    print("| chain | tokens | sample µs/token | decode ms/token | sample / decode |")
    print("|---|---|---|---|---|")
    for label, grammar in (("typical", None),
                           ("typical + JSON grammar", lc.Grammar.from_json_schema(SCHEMA))):
        rows = [run(model, a.tokens, grammar) for _ in range(a.repeats)]
        s = statistics.median(r[0] for r in rows)
        d = statistics.median(r[1] for r in rows)
        print(f"| {label} | {rows[0][2]} | {s * 1e6:.0f} | {d * 1e3:.2f} | {s / d:.1%} |")


if __name__ == "__main__":
    main()
