"""pytest-benchmark: prompt processing and generation through the object layer.

    python -m pytest benchmarks --benchmark-only
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

import llama_cffi as lc

from _common import pp_seconds, random_tokens, tg_seconds


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def model(request: pytest.FixtureRequest) -> Iterator[lc.Model]:
    with lc.Model(lc.models.fetch(request.param)) as m:
        yield m


def test_pp512(benchmark, model: lc.Model) -> None:
    tokens = random_tokens(model, 512, random.Random(0))
    with model.context(n_ctx=512, n_batch=2048, n_threads=2) as ctx:
        batch = lc.Batch(ctx.n_batch)
        pp_seconds(ctx, batch, tokens)
        benchmark.pedantic(pp_seconds, args=(ctx, batch, tokens), rounds=5)
        batch.close()


def test_tg128(benchmark, model: lc.Model) -> None:
    tokens = random_tokens(model, 128, random.Random(0))
    with model.context(n_ctx=128, n_threads=2) as ctx:
        batch = lc.Batch(1)
        tg_seconds(ctx, batch, tokens)
        benchmark.pedantic(tg_seconds, args=(ctx, batch, tokens), rounds=5)
        batch.close()


def test_trivial_c_call(benchmark, model: lc.Model) -> None:
    with model.context(n_ctx=128) as ctx:
        benchmark(lambda: ctx.n_ctx)
