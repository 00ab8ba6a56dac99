"""Backend sampling (llama.cpp's ``-bs``/``--backend-sampling``): the chain runs
inside the model's graph. Checked against llama-completion from the same build,
and for the safety rules of an attached chain (no stale logits, one attachment
per chain, no dangling pointer when the chain closes first)."""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

import pytest

import llama_cffi as lc
from llama_cffi.objects.argmax import sample_argmax

PROMPT = "The capital of France is"
N = 24
# (llama-completion flags, the same settings as SamplingParams fields)
SETTINGS = {
    "greedy": (["--temp", "0"], dict(temperature=0)),
    "top_k+temp": (["--temp", "0.8", "--top-k", "40", "--samplers", "top_k;temperature"],
                   dict(temperature=0.8, top_k=40, samplers="top_k;temperature")),
    "k,p,min_p,temp": (["--temp", "0.7", "--top-k", "20", "--top-p", "0.9", "--min-p", "0.05",
                        "--samplers", "top_k;top_p;min_p;temperature"],
                       dict(temperature=0.7, top_k=20, top_p=0.9, min_p=0.05,
                            samplers="top_k;top_p;min_p;temperature")),
    # dry cannot run in the graph: the penalties run there, the rest on the CPU
    "default chain": ([], {}),
}


def _completion(tools_dir: Path, model: Path, flags: list[str], backend: bool) -> str:
    cmd = [str(tools_dir / "llama-completion"), "-m", str(model), "-p", PROMPT, "-n", str(N),
           "--seed", "7", "-no-cnv", "--no-display-prompt", "-c", "256", "-t", "2",
           "--no-warmup", *flags, *(["-bs"] if backend else [])]
    proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout.decode().rstrip("\n")


@pytest.fixture(scope="module")
def llm(smollm2_path: Path):
    with lc.LLM(smollm2_path, n_ctx=256, n_threads=2) as llm:
        yield llm


@pytest.mark.tools
@pytest.mark.parametrize("name", list(SETTINGS))
def test_equals_llama_completion_with_backend_sampling(name: str, llm: lc.LLM,
                                                       smollm2_path: Path,
                                                       tools_dir: Path) -> None:
    flags, kw = SETTINGS[name]
    ours = llm.complete(PROMPT, max_tokens=N, seed=7, backend_sampling=True, **kw).text
    assert ours == _completion(tools_dir, smollm2_path, flags, backend=True)
    if name == "top_k+temp":
        # the graph draws its random numbers its own way: a chain that runs
        # wholly in the graph gives another seeded text than on the CPU, on both
        # sides, so this comparison shows the request really sampled in the graph
        cpu = llm.complete(PROMPT, max_tokens=N, seed=7, **kw).text
        assert cpu == _completion(tools_dir, smollm2_path, flags, backend=False)
        assert cpu != ours


def test_attached_chain(smollm2: lc.Model) -> None:
    tokens = smollm2.vocab.tokenize(PROMPT)
    with smollm2.context(n_ctx=256, n_threads=2, n_seq_max=2) as ctx, \
            smollm2.context(n_ctx=256, n_threads=2) as other, lc.Batch(64) as batch:
        # reference: greedy on the CPU
        other.eval_tokens(tokens, 0)
        expected = int(other.logits(-1).argmax())

        chain = lc.SamplerChain([lc.sampling.greedy()])
        assert chain.attach(ctx, 0) is True
        assert chain.attached and ctx.backend_samplers == {0: chain}
        with pytest.raises(lc.LlamaError, match="once"):
            chain.attach(ctx, 1)
        second = lc.SamplerChain([lc.sampling.greedy()])
        with pytest.raises(lc.LlamaError, match="already has a backend sampler"):
            second.attach(ctx, 0)
        n = len(tokens)
        batch.set_rows(tokens, list(range(n)), [0] * n, [False] * (n - 1) + [True])
        ctx.decode(batch)
        with pytest.raises(lc.LlamaError, match="sampled inside the graph"):
            ctx.logits(n - 1)
        with pytest.raises(lc.LlamaError, match="sampled inside the graph"):
            ctx.logits(-1)
        with pytest.raises(lc.LlamaError, match="attached to"):
            chain.sample(other, -1)
        # nor does another chain read the stale logits of that output
        with lc.SamplerChain([lc.sampling.greedy()]) as cpu, \
                lc.SamplerChain([lc.sampling.top_k(5), lc.sampling.dist(1)]) as cpu2:
            for c in (cpu, cpu2):
                with pytest.raises(lc.LlamaError, match="sampled inside the graph"):
                    c.sample(ctx, n - 1)
            with pytest.raises(lc.LlamaError, match="sampled inside the graph"):
                sample_argmax(ctx, [cpu], [n - 1])
        assert chain.sample(ctx, n - 1) == expected

        # a sequence without a backend sampler keeps its logits in the same batch
        batch.set_rows([expected, expected], [n, n], [0, 1], [True, True])
        ctx.seq_cp(0, 1)
        ctx.decode(batch)
        assert ctx.logits(1).shape == (smollm2.vocab.n_tokens,)
        with pytest.raises(lc.LlamaError, match="not an output of sequence 0"):
            chain.sample(ctx, 1)

        chain.detach()
        assert not chain.attached and ctx.backend_samplers == {}
        with pytest.raises(lc.LlamaError, match="detached"):
            chain.sample(ctx, 0)
        chain.close()
        assert second.attach(ctx, 0)
        second.close()  # closing an attached chain detaches it first
        assert ctx.backend_samplers == {}
        batch.set_rows([expected, expected], [n + 1, n + 1], [0, 1], [True, True])
        ctx.decode(batch)  # the context holds no pointer to the freed chain
        assert ctx.logits(0).shape == (smollm2.vocab.n_tokens,)


def test_refused_chains_and_context_closed_first(smollm2: lc.Model) -> None:
    with smollm2.context(n_ctx=128, n_threads=2) as ctx:
        g = lc.SamplerChain([lc.sampling.grammar(smollm2, 'root ::= "yes"'),
                             lc.sampling.greedy()])
        with pytest.raises(lc.LlamaError, match="grammar"):
            g.attach(ctx, 0)
        g.close()
        open_ended = lc.SamplerChain([lc.sampling.top_k(5)])
        with pytest.raises(lc.LlamaError, match="selecting"):
            open_ended.attach(ctx, 0)
        open_ended.close()
        with lc.SamplerChain([lc.sampling.greedy()]) as outside, \
                pytest.raises(ValueError, match="seq_id"):
            outside.attach(ctx, 99)
        late = lc.SamplerChain([lc.sampling.greedy()])
        assert late.attach(ctx, 0)
    late.close()  # the context went first: nothing to detach, no crash


def test_engine_mixes_backend_and_cpu_slots(smollm2_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """Two slots in one batch, one sampling in the graph and one on the CPU with
    logprobs: each equals its request run alone."""
    with lc.LLM(smollm2_path, n_ctx=512, n_threads=2, n_parallel=2) as llm:
        alone_bs = llm.complete(PROMPT, max_tokens=N, temperature=0).text
        alone_lp = llm.complete("Water is made of", max_tokens=N, temperature=0, logprobs=2)
        results: dict[str, lc.Completion] = {}

        def run(key: str, **kw: object) -> None:
            results[key] = llm.complete(**kw)  # type: ignore[arg-type]

        threads = [
            threading.Thread(target=run, args=("bs",), kwargs=dict(
                prompt=PROMPT, max_tokens=N, temperature=0, backend_sampling=True)),
            threading.Thread(target=run, args=("lp",), kwargs=dict(
                prompt="Water is made of", max_tokens=N, temperature=0, logprobs=2)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert results["bs"].text == alone_bs
        assert results["lp"].text == alone_lp.text
        assert results["lp"].logprobs is not None
        assert llm.ctx.backend_samplers == {}  # detached when the request ended
        # asked with logprobs, backend sampling is off for that request, as in llama-server
        with caplog.at_level(logging.WARNING, logger="llama_cffi"):
            c = llm.complete(PROMPT, max_tokens=4, temperature=0, logprobs=1,
                             backend_sampling=True)
        assert c.logprobs is not None
        assert "backend sampling is off for this request" in caplog.text
