"""Generation runs: the engine's steps in C (``llama_cffi_run``) give what its
per-step Python path gives, token for token, and stop where it would.

Each case runs the same requests twice on one engine, with runs
(``engine.run_steps = 64``) and without (``0``: one Python step per token),
and compares tokens, text, finish reasons and the number of decodes, and
checks that the runs really happened (``metrics.run_decode_calls``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llama_cffi as lc
from llama_cffi._bindings.run import argmax as c_argmax
from llama_cffi.objects.run import GenerationRun, RunSlot

PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):",
           "List three colours:"]


def submit_together(llm: lc.LLM, requests: list[dict[str, Any]]) -> list[lc.RequestHandle]:
    """Submit ``requests`` while the engine thread waits between two steps, so
    that they start in the same step whichever way they are then run."""
    inside, gate = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        gate.wait(60)

    holder = threading.Thread(target=llm.engine.call, args=(hold,))
    holder.start()
    try:
        assert inside.wait(60)
        return [llm.submit(r["prompt"], **{k: v for k, v in r.items() if k != "prompt"})
                for r in requests]
    finally:
        gate.set()
        holder.join()


def forget_prefixes(engine: lc.Engine) -> None:
    for slot in engine.slots:
        engine.ctx.seq_rm(slot.seq_id)
        slot.cache = []


def both_ways(llm: lc.LLM, requests: list[dict[str, Any]]) -> list[lc.Completion]:
    """Run ``requests`` at once with runs and without; assert the same outcome
    (returned)."""
    results = {}
    for steps in (0, 64):
        llm.engine.call(lambda: forget_prefixes(llm.engine))  # both ways evaluate the prompts
        llm.engine.run_steps = steps
        m = llm.metrics
        calls, runs = m.decode_calls, m.run_decode_calls
        try:
            handles = submit_together(llm, requests)
            done = [h.result(timeout=300) for h in handles]
        finally:
            llm.engine.run_steps = 64
        kv = llm.engine.call(lambda: [(len(s.cache), llm.engine.ctx.seq_pos_max(s.seq_id))
                                      for s in llm.engine.slots])
        for n_cached, pos_max in kv:  # the KV holds exactly the tokens the slot records
            assert pos_max == n_cached - 1
        results[steps] = (done, m.decode_calls - calls, m.run_decode_calls - runs)
    (plain, plain_calls, plain_runs), (fast, fast_calls, fast_runs) = results[0], results[64]
    assert plain_runs == 0
    assert fast_runs > 0, "no generation run happened"
    for a, b in zip(plain, fast):
        assert b.tokens == a.tokens
        assert b.text == a.text
        assert b.finish_reason == a.finish_reason
        assert b.stop_string == a.stop_string
        assert b.usage.completion_tokens == a.usage.completion_tokens
    assert fast_calls == plain_calls, "the runs decoded past where the requests ended"
    return fast


def test_greedy_requests_of_different_lengths(llm4: lc.LLM) -> None:
    both_ways(llm4, [dict(prompt=p, max_tokens=20 + 13 * i, temperature=0)
                     for i, p in enumerate(PROMPTS)])


def test_seeded_sampling_with_penalties(llm4: lc.LLM) -> None:
    both_ways(llm4, [dict(prompt=p, max_tokens=40, temperature=0.9, top_k=40, top_p=0.9,
                          min_p=0.05, repeat_penalty=1.2, seed=11 + i)
                     for i, p in enumerate(PROMPTS)])


def test_stop_strings_across_tokens(llm4: lc.LLM) -> None:
    # a space-led word, a newline pair and a two-word stop: each may span tokens
    done = both_ways(llm4, [dict(prompt=p, max_tokens=80, temperature=0,
                                 stop=[" the", "\n\n", "is a"]) for p in PROMPTS])
    assert sum(d.stop_string is not None for d in done) >= 2  # the stops were met


def test_ignore_eos_and_logit_bias(llm4: lc.LLM) -> None:
    vocab = llm4.model.vocab
    lift = vocab.tokenize(" llama", add_special=False, parse_special=False)[0]
    both_ways(llm4, [
        dict(prompt=PROMPTS[0], max_tokens=30, temperature=0, ignore_eos=True),
        # a raised token changes every choice; a lowered one only where it led
        dict(prompt=PROMPTS[1], max_tokens=12, temperature=0, logit_bias={lift: 30.0}),
        dict(prompt=PROMPTS[2], max_tokens=30, temperature=0, logit_bias={lift: -100.0}),
        dict(prompt=PROMPTS[3], max_tokens=30, temperature=0.7, seed=3,
             logit_bias={lift: 5.0}),
    ])
    fast = llm4.complete(PROMPTS[1], max_tokens=12, temperature=0, logit_bias={lift: 30.0})
    assert fast.tokens == [lift] * 12  # the bias really reached the arg-max


def test_end_of_generation_ends_the_request(smollm2_path: Path) -> None:
    # SmolLM2-Instruct answers and ends its turn (the Gemma 3 test model is a
    # base model that goes on)
    with lc.LLM(smollm2_path, n_ctx=2 * 512, n_parallel=2, n_threads=2) as llm:
        prompts = [llm.apply_chat_template([{"role": "user", "content": q}])
                   for q in ("Say hi.", "Name a colour.")]
        both_ways(llm, [dict(prompt=p, max_tokens=200, temperature=0, add_special=False)
                        for p in prompts])
        done = llm.complete(prompts[0], max_tokens=200, temperature=0, add_special=False)
        assert done.finish_reason == "stop" and len(done.tokens) < 200


def test_streams_and_logprobs_run_in_c(llm4: lc.LLM) -> None:
    # (compared with the per-step path in test_engine_run_streams.py)
    runs = llm4.metrics.run_decode_calls
    pieces = list(llm4.stream(PROMPTS[0], max_tokens=16, temperature=0, ignore_eos=True))
    assert len(pieces) >= 8  # handed out as they were decoded
    assert llm4.metrics.run_decode_calls >= runs + 14
    done = llm4.complete(PROMPTS[1], max_tokens=8, temperature=0, logprobs=2)
    assert done.logprobs is not None and len(done.logprobs) == 8
    assert llm4.metrics.run_decode_calls >= runs + 20


def test_a_waiting_request_and_a_cancel_interrupt_a_run(llm4: lc.LLM) -> None:
    engine = llm4.engine
    wakes = []
    real = engine._run.interrupt

    def counting() -> None:
        wakes.append(threading.get_ident())
        real()

    engine._run.interrupt = counting  # type: ignore[method-assign]
    try:
        before = engine.metrics.run_decode_calls
        long = llm4.submit(PROMPTS[0], max_tokens=5000, temperature=0, ignore_eos=True)
        assert len(wakes) == 1  # submitting interrupts whatever run is going on
        deadline = time.monotonic() + 60
        while engine.metrics.run_decode_calls == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.metrics.run_decode_calls > before  # the long request is in runs
        short = llm4.complete(PROMPTS[1], max_tokens=4, temperature=0)
        assert len(wakes) == 2 and short.usage.completion_tokens == 4
        assert not long.done  # the short request did not wait for the long one
        long.cancel()
        assert len(wakes) == 3
        done = long.result(timeout=60)
        assert done.finish_reason == "cancelled" and len(done.tokens) < 5000
    finally:
        engine._run.interrupt = real  # type: ignore[method-assign]


def test_closing_the_llm_during_a_run_cancels_its_request(smollm2_path: Path) -> None:
    llm = lc.LLM(smollm2_path, n_ctx=4096, n_threads=2)
    try:
        handle = llm.submit(PROMPTS[0], max_tokens=3000, temperature=0, ignore_eos=True)
        deadline = time.monotonic() + 60
        while llm.metrics.run_decode_calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert llm.metrics.run_decode_calls > 0
    finally:
        llm.close()
    done = handle.result(timeout=60)
    assert done.finish_reason == "cancelled" and 0 < len(done.tokens) < 3000
    with pytest.raises(lc.EngineDeadError):
        llm.engine.submit([1, 2, 3], lc.SamplingParams())


# -- the run itself (objects layer) --------------------------------------------------------


def test_a_run_stops_at_an_interrupt_its_budget_and_its_steps(smollm2_path: Path) -> None:
    with lc.LLM(smollm2_path, n_ctx=512, n_threads=2) as llm:
        engine = llm.engine

        def run(interrupt: bool, budget: float | None, steps: int) -> int:
            def go() -> int:
                ctx = engine.ctx
                ctx.clear()
                toks = llm.model.vocab.tokenize("Hello", add_special=True, parse_special=False)
                ctx.eval_tokens(toks, 0)
                with lc.SamplerChain.from_params(llm.model, temperature=0) as chain:
                    first = chain.sample(ctx, -1)
                    gr = GenerationRun(1, 16)
                    if interrupt:
                        gr.interrupt()
                    out = gr.run(ctx, engine._batch, [RunSlot(0, len(toks), ctx.n_ctx_seq, -1,
                                                               True, first, chain)],
                                 budget, steps)
                    assert out is not None and out.status == 0
                    assert len(out.tokens[0]) == out.steps
                    return out.steps
            return engine.call(go)

        assert run(False, None, 16) == 16
        assert run(False, None, 5) == 5
        assert run(True, None, 16) == 1  # the first step always runs
        assert run(False, 0.0, 16) == 1


def test_the_c_arg_max_follows_llama_cpp_greedy_rule() -> None:
    rng = np.random.default_rng(0)

    def greedy(x: np.ndarray) -> int:  # llama.cpp's greedy: x[i] > x[selected], from 0
        sel = 0
        for i in range(1, len(x)):
            if x[i] > x[sel]:
                sel = i
        return sel

    for n in (1, 7, 8, 33, 64, 65, 1000, 4099):
        for kind in range(8):
            x = rng.standard_normal(n).astype(np.float32)
            if kind == 1:
                x = np.round(x)  # ties: the first wins
            elif kind == 2:
                x[rng.integers(0, n, 3)] = np.nan  # NaN never wins
            elif kind == 3:
                x[0] = np.nan  # ... and at index 0 keeps index 0
            elif kind == 4:
                x[:] = -np.inf
            elif kind == 5:
                x[:] = np.nan
            elif kind == 6:
                x = np.round(x)
                x[: n // 2] = np.nan
            elif kind == 7:
                x[:] = 0.0
                x[rng.integers(0, n, n // 2)] = -0.0  # -0 and +0 tie
            assert c_argmax(x) == greedy(x), (n, kind)


class Nothing(lc.PythonSampler):
    def apply(self, candidates: lc.Candidates) -> None:
        pass


def test_a_run_refuses_what_only_a_python_step_can_do(smollm2_path: Path) -> None:
    with lc.Model(smollm2_path) as model:
        tokens = model.vocab.tokenize("The capital of France is")
        n = len(tokens)
        with model.context(n_ctx=256, n_threads=2, n_seq_max=2) as ctx, lc.Batch(64) as batch:
            ctx.eval_tokens(tokens, 0)
            gr = GenerationRun(2, 8)

            def slot(chain: lc.SamplerChain, seq_id: int = 0) -> RunSlot:
                return RunSlot(seq_id, n, ctx.n_ctx_seq, -1, True, tokens[-1], chain)

            # a chain with a Python sampler (it needs the interpreter every token)
            py = lc.SamplerChain([Nothing(), lc.sampling.greedy()])
            assert not GenerationRun.can_run(py)
            with pytest.raises(ValueError, match="cannot be used"):
                gr.run(ctx, batch, [slot(py)])
            py.close()
            assert not GenerationRun.can_run(py)  # closed
            # a sequence sampled in the graph by another chain has no logits to read
            attached = lc.SamplerChain([lc.sampling.greedy()])
            assert attached.attach(ctx, 1)
            with lc.SamplerChain([lc.sampling.greedy()]) as cpu:
                assert gr.run(ctx, batch, [slot(cpu, 1)]) is None
                assert gr.run(ctx, batch, [slot(attached, 0)]) is None  # not its sequence
            attached.detach()
            assert gr.run(ctx, batch, [slot(attached, 1)]) is None  # detached: cannot sample
            attached.close()
        # an abort callback's exception can only reach the caller from a Python step
        with model.context(n_ctx=256, n_threads=2, abort_callback=lambda: False) as ctx, \
                lc.Batch(64) as batch, lc.SamplerChain([lc.sampling.greedy()]) as cpu:
            ctx.eval_tokens(tokens, 0)
            assert GenerationRun(1, 8).run(ctx, batch, [RunSlot(0, n, ctx.n_ctx_seq, -1, True,
                                                                tokens[-1], cpu)]) is None


def test_a_bias_for_a_larger_vocabulary_never_reaches_c(smollm2_path: Path,
                                                       gemma3_path: Path) -> None:
    # a greedy chain built for Gemma 3 (262k tokens) biases a token SmolLM2
    # (49k) does not have: C would add it past the end of the logits
    with lc.Model(gemma3_path) as gemma, lc.Model(smollm2_path) as small:
        tokens = small.vocab.tokenize("Hello")
        with small.context(n_ctx=128, n_threads=2) as ctx, lc.Batch(8) as batch, \
                lc.SamplerChain.from_params(gemma, temperature=0,
                                            logit_bias={200_000: 5.0}) as chain:
            assert chain.is_argmax
            ctx.eval_tokens(tokens, 0)
            with pytest.raises(ValueError, match="token ids in 0..49151"):
                GenerationRun(1, 4).run(ctx, batch, [RunSlot(0, len(tokens), ctx.n_ctx_seq, -1,
                                                             True, tokens[-1], chain)])
            ctx.eval_tokens([tokens[-1]], len(tokens))  # the context is still usable
