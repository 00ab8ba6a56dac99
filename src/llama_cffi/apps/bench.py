"""``llama-cffi bench``: llama-bench's measurements, made through llama_cffi.

Same procedure as llama.cpp's llama-bench (random tokens, a warm-up run,
memory cleared before each repetition; pp = one prompt of N tokens in
batches of n_batch, tg = N single-token decodes) and the same flags, so that
configurations can be compared from Python and against llama-bench itself.
"""

from __future__ import annotations

import csv
import io
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..objects import registry as models
from ..objects.batch import Batch
from ..objects.context import Context
from ..objects.model import Model


@dataclass
class BenchResult:
    model: str
    size: int
    params: int
    n_threads: int
    n_gpu_layers: int
    type_k: str
    type_v: str
    flash_attn: str
    n_batch: int
    n_ubatch: int
    test: str
    n_prompt: int
    n_gen: int
    avg_ts: float
    stddev_ts: float
    samples_ts: list[float]


def _tokens(model: Model, n: int, rng: random.Random) -> list[int]:
    v = model.vocab
    first = v.bos if v.add_bos and v.bos is not None else rng.randrange(v.n_tokens)
    return [first] + [rng.randrange(v.n_tokens) for _ in range(n - 1)]


def run_prompt(ctx: Context, batch: Batch, tokens: list[int]) -> float:
    ctx.clear()
    t0 = time.perf_counter()
    for i in range(0, len(tokens), batch.capacity):
        batch.set_tokens(tokens[i:i + batch.capacity], i, output_last=True)
        ctx.decode(batch)
    ctx.logits(-1)  # waits for the device (a GPU's decode returns before it finishes)
    return time.perf_counter() - t0


def run_gen(ctx: Context, batch: Batch, tokens: list[int], start: int = 0) -> float:
    t0 = time.perf_counter()
    for pos, tok in enumerate(tokens, start):
        batch.clear()
        batch.add(tok, pos, (0,), True)
        ctx.decode(batch)
    ctx.logits(-1)  # the device runs the decodes in order: waiting for the last one suffices
    return time.perf_counter() - t0


def bench(model: Model, *, n_prompt: int, n_gen: int, reps: int, n_threads: int,
          n_batch: int = 2048, n_ubatch: int = 512, type_k: str = "f16", type_v: str = "f16",
          flash_attn: str = "auto", n_gpu_layers: int = -1) -> BenchResult:
    """One llama-bench test: pp (n_gen=0), tg (n_prompt=0) or both (pp then tg)."""
    rng = random.Random(0)
    with model.context(n_ctx=n_prompt + n_gen, n_batch=n_batch, n_ubatch=n_ubatch,
                       n_threads=n_threads, n_threads_batch=n_threads, type_k=type_k,
                       type_v=type_v, flash_attn=flash_attn) as ctx:
        pbatch = Batch(ctx.n_batch)
        gbatch = Batch(1)
        try:
            def once() -> float:
                total = 0.0
                ctx.clear()
                if n_prompt:
                    total += run_prompt(ctx, pbatch, _tokens(model, n_prompt, rng))
                if n_gen:
                    total += run_gen(ctx, gbatch, _tokens(model, n_gen, rng), n_prompt)
                return total

            once()  # warm-up
            samples = [(n_prompt + n_gen) / once() for _ in range(reps)]
        finally:
            pbatch.close()
            gbatch.close()
    test = (f"pp{n_prompt}" if n_prompt else "") + ("+" if n_prompt and n_gen else "") + \
        (f"tg{n_gen}" if n_gen else "")
    return BenchResult(
        model=model.description, size=model.size, params=model.n_params, n_threads=n_threads,
        n_gpu_layers=n_gpu_layers, type_k=type_k, type_v=type_v, flash_attn=flash_attn,
        n_batch=n_batch, n_ubatch=n_ubatch, test=test, n_prompt=n_prompt, n_gen=n_gen,
        avg_ts=statistics.mean(samples),
        stddev_ts=statistics.stdev(samples) if len(samples) > 1 else 0.0, samples_ts=samples)


def format_results(results: Sequence[BenchResult], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([asdict(r) for r in results], indent=2)
    if fmt == "jsonl":
        return "\n".join(json.dumps(asdict(r)) for r in results)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        fields = [f for f in asdict(results[0]) if f != "samples_ts"] if results else []
        w.writerow(fields)
        for r in results:
            d = asdict(r)
            w.writerow([d[f] for f in fields])
        return buf.getvalue()
    lines = ["| model | size | params | threads | ngl | type_k | type_v | fa | test | t/s |",
             "| --- | ---: | ---: | ---: | ---: | --- | --- | --- | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.model} | {r.size / 2**20:.2f} MiB | {r.params / 1e6:.2f} M | "
                     f"{r.n_threads} | {r.n_gpu_layers} | {r.type_k} | {r.type_v} | "
                     f"{r.flash_attn} | {r.test} | {r.avg_ts:.2f} ± {r.stddev_ts:.2f} |")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _strs(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(args: Any) -> int:
    results: list[BenchResult] = []
    for name in _strs(args.model):
        path = models.resolve(name)
        for ngl in _ints(args.n_gpu_layers):
            with Model(path, n_gpu_layers=ngl) as model:
                for t in _ints(args.threads):
                    for tk in _strs(args.cache_type_k):
                        for tv in _strs(args.cache_type_v):
                            for fa in _strs(args.flash_attn):
                                for nb in _ints(args.batch_size):
                                    for nub in _ints(args.ubatch_size):
                                        kw: dict[str, Any] = dict(
                                            reps=args.repetitions, n_threads=t, n_batch=nb,
                                            n_ubatch=nub, type_k=tk, type_v=tv,
                                            flash_attn=fa, n_gpu_layers=ngl)
                                        for p in _ints(args.n_prompt):
                                            if p:
                                                results.append(bench(model, n_prompt=p,
                                                                     n_gen=0, **kw))
                                        for g in _ints(args.n_gen):
                                            if g:
                                                results.append(bench(model, n_prompt=0,
                                                                     n_gen=g, **kw))
                                        for pg in args.n_pg:
                                            p, g = _ints(pg)
                                            results.append(bench(model, n_prompt=p,
                                                                 n_gen=g, **kw))
    print(format_results(results, args.output))
    sys.stdout.flush()
    return 0
