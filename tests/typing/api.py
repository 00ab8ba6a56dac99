"""Type-checked (not run) use of the public API: mypy --strict must accept it.

tests/test_typing.py runs mypy over the package and this file; a public
signature that loses its types, or an ``Any`` that leaks where users are,
shows up here as an error.
"""

from __future__ import annotations

import numpy as np

import llama_cffi as lc


def model_and_context(path: str) -> float:
    mp = lc.ModelParams(n_gpu_layers=-1, split_mode="layer", tensor_split=(3, 1))
    with lc.Model(path, mp, n_cpu_moe=2) as model:
        n_layer: int = model.n_layer
        name: str | None = model.architecture
        cp = lc.ContextParams(n_ctx=2048, type_k="q8_0", flash_attn="auto")
        with model.context(cp, n_batch=256) as ctx:
            n_ctx: int = ctx.n_ctx
            tokens: list[int] = model.vocab.tokenize("hello", add_special=True)
            ctx.eval_tokens(tokens, 0)
            logits: np.ndarray = ctx.logits()
            chain = lc.SamplerChain([lc.sampling.top_k(40), lc.sampling.temp(0.7),
                                     lc.sampling.dist(seed=1)])
            token: int = chain.sample(ctx)
            chain.close()
            return float(logits[token]) + n_layer + n_ctx + len(name or "")


def high_level(path: str) -> str:
    with lc.LLM(path, n_ctx=1024, temperature=0.0) as llm:
        sp = lc.SamplingParams(max_tokens=16, stop=("\n",), seed=3)
        c: lc.Completion = llm.complete("Once upon a time", sp, temperature=0.2)
        usage: lc.Usage = c.usage
        pieces = [p for p in llm.stream("Hi", max_tokens=4)]
        reply = llm.chat([{"role": "user", "content": "Hi"}], json_schema={"type": "object"})
        batch: list[lc.Completion] = llm.generate_batch(["a", "b"], max_tokens=2)
        return c.text + reply.text + "".join(pieces) + str(usage.total_tokens) + str(len(batch))


def grammar() -> lc.Grammar:
    return lc.Grammar.from_json_schema({"type": "object"})
