"""The engine: many requests on one context, continuous batching, prefix sharing,
cancellation, backpressure, per-request errors, speculative decoding in slots."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import llama_cffi as lc

from .test_speculative import assert_exact_or_tie

PROMPTS = ["Once upon a time", "The capital of France is", "Here is a short poem about the sea:",
           "List three colours:", "My favourite food is", "The history of the printing press",
           "def fibonacci(n):", "Q: What is 7 times 6?\nA:"]


@pytest.fixture(scope="module")
def model(smollm2_path: Path) -> Iterator[lc.Model]:
    with lc.Model(smollm2_path) as m:
        yield m


@pytest.fixture(scope="module")
def alone(model: lc.Model) -> dict[str, list[int]]:
    """Each prompt's greedy continuation with one slot (one request at a time)."""
    with lc.LLM(model, n_ctx=512, n_threads=2) as llm:
        return {p: llm.complete(p, max_tokens=24, temperature=0, ignore_eos=True).tokens
                for p in PROMPTS}


@pytest.fixture(scope="module")
def llm8(model: lc.Model) -> Iterator[lc.LLM]:
    with lc.LLM(model, n_ctx=8 * 512, n_parallel=8, n_threads=2) as llm:
        yield llm


def test_eight_threads_get_what_each_gets_alone(llm8: lc.LLM,
                                                alone: dict[str, list[int]]) -> None:
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(PROMPTS))

    def worker(prompt: str) -> None:
        try:
            start.wait()
            results[prompt] = llm8.complete(prompt, max_tokens=24, temperature=0,
                                            ignore_eos=True).tokens
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p,)) for p in PROMPTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert results == alone
    m = llm8.metrics
    assert m.decode_calls < sum(len(v) for v in alone.values())  # they shared batches


def test_asyncio_gets_what_each_gets_alone(llm8: lc.LLM, alone: dict[str, list[int]]) -> None:
    async def main() -> list[lc.Completion]:
        return await asyncio.gather(*(llm8.acomplete(p, max_tokens=24, temperature=0,
                                                     ignore_eos=True) for p in PROMPTS))

    got = asyncio.run(main())
    assert {p: c.tokens for p, c in zip(PROMPTS, got)} == alone

    async def streamed() -> str:
        return "".join([piece async for piece in llm8.astream(PROMPTS[0], max_tokens=24,
                                                               temperature=0, ignore_eos=True)])

    assert asyncio.run(streamed()) == llm8.vocab.detokenize(alone[PROMPTS[0]])


def test_a_closed_stream_frees_its_slot_for_a_waiting_request(llm8: lc.LLM) -> None:
    long = dict(max_tokens=150, temperature=0, ignore_eos=True)
    streams = [llm8.stream(p, **long) for p in PROMPTS]  # all 8 slots busy
    waiting = llm8.submit("A ninth request", max_tokens=4, temperature=0, ignore_eos=True)
    first = streams[0]
    for i, _ in enumerate(first):
        if i == 2:
            break
    first.close()
    assert first.completion is not None and first.completion.finish_reason == "cancelled"
    assert len(first.completion.tokens) < 150
    done = waiting.result(timeout=60)
    assert len(done.tokens) == 4
    # the ninth finished while the others were still generating
    assert sum(not s.handle.done for s in streams[1:]) >= 4
    for s in streams[1:]:
        c = s.handle.result(timeout=120)
        assert c.finish_reason == "length" and len(c.tokens) == 150
    assert llm8.engine.idle()


def test_a_shared_system_prompt_is_evaluated_once(model: lc.Model) -> None:
    system = " ".join(f"Rule {i}: be kind to llamas and alpacas." for i in range(30))
    with lc.LLM(model, n_ctx=4 * 1024, n_parallel=4, n_threads=2) as llm:
        prefix = llm.tokenize(system)
        assert len(prefix) >= 300
        questions = ["\nQ: Why?\nA:", "\nQ: How?\nA:", "\nQ: When?\nA:", "\nQ: Who?\nA:"]
        handles = [llm.submit(system + q, max_tokens=8, temperature=0) for q in questions]
        done = [h.result(timeout=120) for h in handles]
        m = llm.metrics
        total = sum(c.usage.prompt_tokens for c in done)
        # the prefix was evaluated for one request, copied for the other three
        assert m.prefix_copies == 3
        assert m.prompt_tokens_evaluated <= total - 3 * (len(prefix) - 1)
        cached = sorted(c.usage.cached_tokens for c in done)
        assert cached[0] == 0 and all(n >= len(prefix) - 2 for n in cached[1:]), cached
        # and the answers are those of each request alone (up to an exact tie:
        # a batch of several sequences is computed with other kernel shapes)
        with lc.LLM(model, n_ctx=1024, n_threads=2) as one:
            for q, c in zip(questions, done):
                assert_exact_or_tie(one.complete(system + q, max_tokens=8, temperature=0,
                                                 logprobs=2), c)


def test_queue_full_and_prompt_too_long(model: lc.Model) -> None:
    with lc.LLM(model, n_ctx=256, n_parallel=1, max_queue=2, n_threads=2) as llm:
        busy = llm.submit("Once upon a time", max_tokens=200, temperature=0, ignore_eos=True)
        for _ in range(500):  # until the engine has taken it into its slot
            if llm.metrics.requests_queued == 0 and not llm.engine.idle():
                break
            time.sleep(0.01)
        queued = [llm.submit("Hello", max_tokens=2) for _ in range(2)]
        with pytest.raises(lc.EngineBusyError, match="max_queue=2"):
            llm.submit("one too many", max_tokens=2)
        with pytest.raises(lc.ContextFullError, match="slot holds 256"):
            llm.submit("word " * 400, max_tokens=2)
        busy.cancel()
        assert busy.result(timeout=60).finish_reason == "cancelled"
        assert all(len(q.result(timeout=60).tokens) == 2 for q in queued)


class Boom(lc.PythonSampler):
    def __init__(self) -> None:
        self.calls = 0

    def apply(self, candidates: lc.Candidates) -> None:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("boom in slot")


def test_a_python_sampler_raising_ends_only_its_request(llm8: lc.LLM,
                                                        alone: dict[str, list[int]]) -> None:
    chain = lc.SamplerChain([Boom(), lc.sampling.greedy()])
    bad = llm8.submit(PROMPTS[0], max_tokens=24, temperature=0, sampler=chain)
    good = [llm8.submit(p, max_tokens=24, temperature=0, ignore_eos=True) for p in PROMPTS[1:4]]
    with pytest.raises(RuntimeError, match="boom in slot"):
        bad.result(timeout=60)
    assert [g.result(timeout=60).tokens for g in good] == [alone[p] for p in PROMPTS[1:4]]
    assert llm8.metrics.requests_failed >= 1


def test_cancel_by_timeout_and_event(llm8: lc.LLM) -> None:
    ev = threading.Event()
    h1 = llm8.submit("Once upon a time", max_tokens=500, temperature=0, ignore_eos=True,
                     timeout=0.5)
    h2 = llm8.submit("Once upon a time", max_tokens=500, temperature=0, ignore_eos=True,
                     cancel=ev)
    time.sleep(0.3)
    ev.set()
    for h in (h1, h2):
        c = h.result(timeout=60)
        assert c.finish_reason == "cancelled" and len(c.tokens) < 500


def test_engine_death_reaches_every_caller(model: lc.Model) -> None:
    llm = lc.LLM(model, n_ctx=256, n_threads=2)
    try:
        h = llm.submit("Once upon a time", max_tokens=300, temperature=0, ignore_eos=True)

        def explode() -> None:
            raise SystemError("engine thread lost")

        original = llm.engine._step
        llm.engine._step = explode  # type: ignore[method-assign]
        with pytest.raises(lc.EngineDeadError, match="engine thread lost"):
            h.result(timeout=60)
        with pytest.raises(lc.EngineDeadError):
            llm.submit("again", max_tokens=2)
        llm.engine._step = original  # type: ignore[method-assign]
    finally:
        llm.close()


@pytest.fixture(scope="module")
def smollm2_f16(smollm2_path: Path) -> Path:
    out = lc.models.cache_dir() / "SmolLM2-135M-Instruct.F16-from-Q4_1.gguf"
    if not out.exists():
        lc.quantize(smollm2_path, out, "f16", allow_requantize=True)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["draft-simple", "ngram-simple"])
@pytest.mark.parametrize("n_parallel", [1, 4])
def test_speculative_in_slots_is_exact(smollm2_f16: Path, smollm2_path: Path, kind: str,
                                       n_parallel: int) -> None:
    prompts = PROMPTS[:4]
    copy = "Repeat exactly: the quick brown fox jumps over the lazy dog. " * 3
    if kind == "ngram-simple":
        prompts = [copy + p for p in prompts]
    with lc.LLM(smollm2_f16, n_ctx=1024 * n_parallel, n_parallel=n_parallel,
                n_threads=2) as plain:
        want = {p: plain.complete(p, max_tokens=48, temperature=0, ignore_eos=True,
                                  logprobs=2) for p in prompts}
    spec_kw = ({"draft_model": str(smollm2_path), "draft_n_max": 4} if kind == "draft-simple"
               else {"speculative": "ngram-simple", "ngram_size_n": 3, "ngram_size_m": 8})
    with lc.LLM(smollm2_f16, n_ctx=1024 * n_parallel, n_parallel=n_parallel, n_threads=2,
                **spec_kw) as llm:
        handles = {p: llm.submit(p, max_tokens=48, temperature=0, ignore_eos=True)
                   for p in prompts}
        got = {p: h.result(timeout=300) for p, h in handles.items()}
    drafted = 0
    for p in prompts:
        assert_exact_or_tie(want[p], got[p])
        drafted += got[p].timings.drafted_tokens
    assert drafted > 0


def test_text_held_back_for_a_stop_string_is_delivered_at_the_end(llm8: lc.LLM) -> None:
    plain = llm8.complete(PROMPTS[0], max_tokens=12, temperature=0, ignore_eos=True)
    # a stop string that starts with the output's last character, and never matches:
    # that character is held back until the request ends, then delivered
    stop = plain.text[-1] + "\x00never"
    h = llm8.submit(PROMPTS[0], max_tokens=12, temperature=0, ignore_eos=True, stop=[stop])
    pieces = list(h.pieces(timeout=60))
    done = h.result(timeout=60)
    assert "".join(pieces) == done.text == plain.text and done.finish_reason == "length"
