"""Streamed requests and logprobs in the engine's generation runs in C.

A streamed request's tokens are published by C as they are chosen and handed
to ``Slot.accept`` by the stream pump thread while the run goes on
(``engine/run_stream.py``); logprobs are computed in C. Each comparison runs
the same requests with runs and with one Python step per token
(``engine.run_steps = 0``) and asserts the same pieces, text, tokens, finish
reasons, log-probabilities and number of decodes, and that runs happened.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llama_cffi as lc
from llama_cffi._bindings import run as _run
from llama_cffi.engine.slot import logprob_of
from llama_cffi.objects.run import MAX_LOGPROBS, GenerationRun, RunSlot

from .test_engine_runs import forget_prefixes

PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):",
           "List three colours:"]
# answers with characters of several UTF-8 bytes, which byte-level vocabularies
# split over tokens (the text must hold them back until they are whole)
UNICODE = ["Translate to Chinese: 'I like tea.' ->", "Écris une phrase en français: Le café",
           "Emoji for happy, sad, love: 😀", "Русский текст: Москва"]


def start_together(llm: lc.LLM, requests: list[dict[str, Any]],
                   streamed: list[bool]) -> tuple[list[lc.RequestHandle], list[Any]]:
    """Submit ``requests`` while the engine thread waits between two steps
    (so they start together), reading the pieces of the ``streamed`` ones."""
    inside, gate = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        gate.wait(60)

    holder = threading.Thread(target=llm.engine.call, args=(hold,))
    holder.start()
    try:
        assert inside.wait(60)
        handles = [llm.submit(r["prompt"], **{k: v for k, v in r.items() if k != "prompt"})
                   for r in requests]
        readers = [h.pieces(timeout=300) if s else None for h, s in zip(handles, streamed)]
    finally:
        gate.set()
        holder.join()
    return handles, readers


def both_ways(llm: lc.LLM, requests: list[dict[str, Any]],
              streamed: list[bool] | None = None) -> list[tuple[lc.Completion, list[str]]]:
    """Run ``requests`` at once with runs and without (``streamed``: which of
    them are read piece by piece; default all); assert the same outcome."""
    streamed = streamed or [True] * len(requests)
    results = {}
    for steps in (0, 64):
        llm.engine.call(lambda: forget_prefixes(llm.engine))
        llm.engine.run_steps = steps
        m = llm.metrics
        calls, runs = m.decode_calls, m.run_decode_calls
        try:
            handles, readers = start_together(llm, requests, streamed)
            pieces = [list(r) if r is not None else [] for r in readers]
            done = [h.result(timeout=300) for h in handles]
        finally:
            llm.engine.run_steps = 64
        kv = llm.engine.call(lambda: [(len(s.cache), llm.engine.ctx.seq_pos_max(s.seq_id))
                                      for s in llm.engine.slots])
        for n_cached, pos_max in kv:  # the KV holds exactly the tokens the slot records
            assert pos_max == n_cached - 1
        results[steps] = (list(zip(done, pieces)), m.decode_calls - calls,
                          m.run_decode_calls - runs)
    (plain, plain_calls, plain_runs), (fast, fast_calls, fast_runs) = results[0], results[64]
    assert plain_runs == 0
    assert fast_runs > 0, "no generation run happened"
    for (a, pa), (b, pb), s in zip(plain, fast, streamed):
        assert b.tokens == a.tokens
        assert b.text == a.text
        assert pb == pa  # the same pieces, cut at the same places
        if s:
            assert "".join(pb) == b.text
        assert b.finish_reason == a.finish_reason
        assert b.stop_string == a.stop_string
        assert (a.logprobs is None) == (b.logprobs is None)
        for x, y in zip(a.logprobs or [], b.logprobs or []):
            assert (x.token, x.text) == (y.token, y.text)
            assert y.logprob == pytest.approx(x.logprob, abs=1e-6)
            assert [t for t, _, _ in y.top] == [t for t, _, _ in x.top]
            assert [p for _, p, _ in y.top] == [p for _, p, _ in x.top]
            assert [v for _, _, v in y.top] == pytest.approx([v for _, _, v in x.top], abs=1e-6)
    assert fast_calls == plain_calls, "the runs decoded past where the requests ended"
    return fast


def test_streamed_requests_run_in_c_with_the_same_pieces(llm4: lc.LLM) -> None:
    # two streamed and two plain requests share the runs
    both_ways(llm4, [dict(prompt=p, max_tokens=20 + 13 * i, temperature=0)
                     for i, p in enumerate(PROMPTS)], [True, False, True, False])
    both_ways(llm4, [dict(prompt=p, max_tokens=40, temperature=0.9, top_k=40, top_p=0.9,
                          seed=5 + i) for i, p in enumerate(PROMPTS)])


def test_streamed_stop_strings_and_split_characters(llm4: lc.LLM) -> None:
    done = both_ways(llm4, [dict(prompt=p, max_tokens=80, temperature=0,
                                 stop=[" the", "\n\n", "is a"]) for p in PROMPTS])
    assert sum(d.stop_string is not None for d, _ in done) >= 2  # the stops were met
    done = both_ways(llm4, [dict(prompt=p, max_tokens=48, temperature=0) for p in UNICODE])
    vocab = llm4.model.vocab
    split = [t for d, _ in done for t in d.tokens
             if not vocab.token_to_piece(t).decode("utf-8", "ignore")
             and vocab.token_to_piece(t)]
    if len(vocab.tokenize("茶", add_special=False, parse_special=False)) > 1:
        assert split, "no token held part of a character"  # (a byte-level vocabulary)
    assert all("\ufffd" not in d.text for d, _ in done)
    # stop strings of several bytes per character, met inside the run
    both_ways(llm4, [dict(prompt=p, max_tokens=48, temperature=0, stop=["。", "é", "а"])
                     for p in UNICODE])


def test_logprobs_in_runs_equal_the_per_step_ones(llm4: lc.LLM) -> None:
    both_ways(llm4, [dict(prompt=PROMPTS[0], max_tokens=24, temperature=0, logprobs=5),
                     dict(prompt=PROMPTS[1], max_tokens=24, temperature=0, logprobs=0),
                     dict(prompt=PROMPTS[2], max_tokens=24, temperature=0.8, seed=3,
                          logprobs=MAX_LOGPROBS),
                     dict(prompt=PROMPTS[3], max_tokens=40, temperature=0, logprobs=2,
                          stop=["\n\n"])],
              [False, True, False, True])


def test_what_still_takes_the_per_step_path(llm4: lc.LLM) -> None:
    runs = llm4.metrics.run_decode_calls
    done = llm4.complete(PROMPTS[1], max_tokens=6, temperature=0, logprobs=MAX_LOGPROBS + 1)
    assert done.logprobs is not None and len(done.logprobs[0].top) == MAX_LOGPROBS + 1
    llm4.complete(PROMPTS[1], max_tokens=6, temperature=0,
                  stopping_criteria=lambda toks, logits: False)
    assert llm4.metrics.run_decode_calls == runs


def test_pieces_arrive_while_the_run_goes_on(smollm2_path: Path) -> None:
    with lc.LLM(smollm2_path, n_ctx=1024, n_threads=2) as llm:
        engine = llm.engine
        ends: list[float] = []
        real = engine._run.run

        def timed(*args: Any, **kwargs: Any) -> Any:
            out = real(*args, **kwargs)
            ends.append(time.perf_counter())
            return out

        engine._run.run = timed  # type: ignore[method-assign]
        arrivals = []
        for _ in llm.stream(PROMPTS[0], max_tokens=120, temperature=0, ignore_eos=True):
            arrivals.append(time.perf_counter())
        assert llm.metrics.run_decode_calls >= 100
        first_end = ends[0]
        # the first run took most of the tokens; its pieces came one by one during it
        assert sum(t < first_end for t in arrivals) >= 30
        during = [t for t in arrivals if t < first_end]
        assert len(set(during)) == len(during)  # not handed over in one burst


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity (Linux) and two CPUs")
def test_the_pump_keeps_off_the_runs_cpu_for_one_stream(smollm2_path: Path) -> None:
    # C notes the CPU of the run's thread at each step; with one streamed slot
    # the pump thread's affinity is every CPU of the process but that one
    allowed = os.sched_getaffinity(0)

    def pump_mask(llm: lc.LLM) -> set[int] | None:
        pump = llm.engine._pump
        tid = None if pump is None else pump._thread.native_id
        return None if tid is None else os.sched_getaffinity(tid)

    with lc.LLM(smollm2_path, n_ctx=2048, n_parallel=4, n_threads=2) as llm:
        seen: list[tuple[int, set[int]]] = []
        for _ in llm.stream(PROMPTS[0], max_tokens=80, temperature=0, ignore_eos=True):
            mask = pump_mask(llm)
            if mask is not None:
                seen.append((llm.engine._run.cpu(), mask))
        assert llm.metrics.run_decode_calls >= 60 and len(seen) >= 60
        assert all(cpu in allowed for cpu, _ in seen)  # a real CPU of this process
        # once the pump has looked (after its first wake-up) it is off the run's
        # CPU and on all the others; the run's thread seldom moves, so nearly
        # every piece finds the two in step
        kept = [cpu not in mask and mask == allowed - {cpu} for cpu, mask in seen[5:]]
        assert sum(kept) >= 0.8 * len(kept), seen
        assert seen[-1][1] != allowed
        # several streamed slots in the run: the pump may run anywhere again
        reqs = [{"prompt": p, "max_tokens": 60, "temperature": 0, "ignore_eos": True}
                for p in PROMPTS]
        _, readers = start_together(llm, reqs, [True] * 4)
        masks = []
        for _ in range(30):
            for r in readers:
                next(r)
            masks.append(pump_mask(llm))
        for r in readers:
            for _ in r:
                pass
        assert masks[-1] == allowed, masks


def test_cancel_mid_stream_and_a_late_reader(llm4: lc.LLM) -> None:
    engine = llm4.engine
    before = llm4.metrics.run_decode_calls
    handle = llm4.submit(PROMPTS[0], max_tokens=2000, temperature=0, ignore_eos=True)
    got = []
    for piece in handle.pieces(timeout=120):
        got.append(piece)
        if len(got) == 10:
            break  # closing the reader cancels the request
    done = handle.result(timeout=60)
    assert done.finish_reason == "cancelled" and 10 <= len(done.tokens) < 2000
    assert llm4.metrics.run_decode_calls > before
    kv = engine.call(lambda: [(len(s.cache), engine.ctx.seq_pos_max(s.seq_id))
                              for s in engine.slots])
    assert all(pos == n - 1 for n, pos in kv)
    # a reader that comes while the request is already in runs gets what was
    # generated so far, then the rest piece by piece
    handle = llm4.submit(PROMPTS[1], max_tokens=200, temperature=0, ignore_eos=True)
    runs = llm4.metrics.run_decode_calls
    deadline = time.monotonic() + 60
    while llm4.metrics.run_decode_calls == runs and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not handle.done
    pieces = list(handle.pieces(timeout=120))
    done = handle.result()
    assert "".join(pieces) == done.text and len(done.tokens) == 200
    assert len(pieces) >= 50  # the rest came piece by piece
    plain = llm4.complete(PROMPTS[1], max_tokens=200, temperature=0, ignore_eos=True)
    assert plain.text == done.text


def test_a_run_checks_its_logprob_request(smollm2_path: Path) -> None:
    with lc.Model(smollm2_path) as model:
        tokens = model.vocab.tokenize("Hello")
        with model.context(n_ctx=128, n_threads=2) as ctx, lc.Batch(8) as batch, \
                lc.SamplerChain.from_params(model, temperature=0) as chain:
            ctx.eval_tokens(tokens, 0)
            gr = GenerationRun(1, 4)
            for bad in (-2, MAX_LOGPROBS + 1):
                with pytest.raises(ValueError, match="top log-probabilities"):
                    gr.run(ctx, batch, [RunSlot(0, len(tokens), ctx.n_ctx_seq, -1, True,
                                                tokens[-1], chain, logprobs=bad)])
            # a streamed slot with nobody to wake, and the log-probabilities of
            # every token of a longer run than asked for: C refuses, Python steps
            out = gr.run(ctx, batch, [RunSlot(0, len(tokens), ctx.n_ctx_seq, -1, True,
                                              tokens[-1], chain, logprobs=3, stream=True)])
            assert out is not None and out.status == 0 and out.steps == 4
            lps = out.logprobs[0]
            assert lps is not None and len(lps) == 4
            for tok, (value, best) in zip(out.tokens[0], lps):
                assert best[0][0] == tok and value == best[0][1] <= 0  # greedy: the best
                assert [v for _, v in best] == sorted((v for _, v in best), reverse=True)
            assert gr.published(0) == 4
            # C refuses a slot that asks for more than it has room for
            mem = gr._mem
            mem.slots[0].n_probs = MAX_LOGPROBS + 5
            res = mem.result
            _run.lib.llama_cffi_run(ctx._enter(), batch._take().holder, mem.slots, 1, 1,
                                    mem.flag, _run.NO_BUDGET, -1, res)
            batch._guard.release()
            ctx._leave()
            assert res.status == -4 and res.steps == 0


def test_the_c_logprobs_equal_the_per_step_ones_on_any_row() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 5, 8, 63, 64, 65, 1000, 49152):
        for kind in range(5):
            x = (rng.standard_normal(n) * 4).astype(np.float32)
            if kind == 1:
                x = np.round(x)  # ties: the lower id first
            elif kind == 2:
                x[:] = -np.inf
                x[rng.integers(0, n)] = 3.0  # one token holds all the probability
            elif kind == 3:
                x[rng.integers(0, n, 3)] = -1e30  # far below: exp underflows
            elif kind == 4:
                x += 1e4  # large logits: only the differences count
            tok = int(rng.integers(0, n))
            for top in (0, 1, 5, MAX_LOGPROBS):
                want = logprob_of(str, x, tok, min(top, n - 1) if n > 1 else 0)
                value, best = _run.logprobs(x, tok, top)
                if np.isfinite(want.logprob):
                    assert value == pytest.approx(want.logprob, abs=1e-6), (n, kind, top)
                else:
                    assert value == want.logprob
                assert len(best) == min(top, n)
                ranked = sorted(range(n), key=lambda i: (-x[i], i))[:top]
                assert [t for t, _ in best] == ranked  # the best, ties by lower id
                for t, v in best:
                    exact = float(x[t]) - (float(x.max()) + np.log(np.exp(
                        x.astype(np.float64) - float(x.max())).sum()))
                    assert v == pytest.approx(exact, abs=1e-6)
    # NaN logits and bad ids never crash; NaN is never among the best
    x = rng.standard_normal(100).astype(np.float32)
    x[[0, 7]] = np.nan
    value, best = _run.logprobs(x, 5, 3)
    assert np.isnan(value) and all(t not in (0, 7) for t, _ in best)
    value, _ = _run.logprobs(x[1:7], 999, 2)  # a token past the row
    assert np.isnan(value)
    with pytest.raises(ValueError, match="top log-probabilities"):
        _run.logprobs(x, 1, MAX_LOGPROBS + 1)
