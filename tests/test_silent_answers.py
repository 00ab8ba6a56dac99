"""Natural ports from llama-cpp-python that used to give a wrong answer without an error.

Each test is one case of issue 15: a string where a list of strings is
expected is one item; bytes are text; a change of the context behind the
LLM's back (state, LoRA adapters, control vector, KV cache edits) makes the
LLM forget the prefixes it believed cached.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import llama_cffi as lc

from .synthetic import write_lora

PROMPT = "The capital of France is"
# same number of tokens as PROMPT, different text: a KV cache holding one
# cannot be told from the other by its length
OTHER = "The capital of Spain is"


@pytest.fixture(scope="module")
def llm(smollm2: lc.Model) -> Iterator[lc.LLM]:
    with lc.LLM(smollm2, n_ctx=512) as llm:
        yield llm


def greedy(llm: lc.LLM, prompt: str | bytes, n: int = 12, **kw: object) -> lc.Completion:
    return llm.complete(prompt, max_tokens=n, temperature=0, **kw)


# -- a string is one stop string -------------------------------------------------------

FORCED = 'root ::= "A: yes. Q: next"\n'  # a colon long before "Q:"


def test_stop_string_is_one_string_in_the_params() -> None:
    assert lc.SamplingParams(stop="Q:").stop == ("Q:",)
    assert lc.SamplingParams.from_kwargs(None, stop="Q:").stop == ("Q:",)
    assert lc.SamplingParams(stop=["Q:", "\n"]).stop == ("Q:", "\n")


def test_stop_string_is_one_string_in_every_call(llm: lc.LLM) -> None:
    kw = dict(grammar=FORCED, stop="Q:", temperature=0, max_tokens=30)
    r = llm.complete("Answer:", **kw)
    assert (r.text, r.finish_reason, r.stop_string) == ("A: yes. ", "stop", "Q:")
    s = llm.stream("Answer:", **kw)
    assert "".join(s) == "A: yes. " and s.completion is not None
    c = llm.chat([{"role": "user", "content": "Answer"}], **kw)
    assert c.text == "A: yes. "
    # as the LLM's default too
    with lc.LLM(llm.model, n_ctx=128, sampling=lc.SamplingParams(stop="Q:")) as other:
        assert other.complete("Answer:", grammar=FORCED, temperature=0).text == "A: yes. "
        other.sampling = {"stop": "Q:", "max_tokens": 30}
        assert other.complete("Answer:", grammar=FORCED, temperature=0).text == "A: yes. "


# -- bytes are text ------------------------------------------------------------------------


def test_bytes_are_tokenized_as_text(llm: lc.LLM) -> None:
    text = "Hello, world! Grüße"
    ids = llm.tokenize(text)
    data = text.encode()
    assert ids != list(data)
    assert llm.tokenize(data) == ids
    assert llm.tokenize(bytearray(data)) == ids
    assert llm.tokenize(memoryview(data)) == ids
    assert llm.vocab.tokenize(data) == llm.vocab.tokenize(text)
    assert greedy(llm, data).tokens == greedy(llm, text).tokens
    assert llm.submit(data, max_tokens=4, temperature=0).result().usage.prompt_tokens == len(ids)
    a, b = llm.generate_batch([data, text], max_tokens=6, temperature=0)
    assert a.tokens == b.tokens


def test_token_lists_must_hold_integers(llm: lc.LLM) -> None:
    ids = llm.tokenize("Hello")
    assert llm.tokenize(np.array(ids, dtype=np.int64)) == ids
    with pytest.raises(TypeError, match="integers"):
        llm.tokenize([float(t) + 0.5 for t in ids])
    with pytest.raises(TypeError):
        llm.vocab.tokenize(ids)  # type: ignore[arg-type]


def test_embed_takes_bytes_as_one_text(llm: lc.LLM) -> None:
    one = llm.embed(b"Hello", pooling="mean")
    assert isinstance(one, np.ndarray) and one.shape == (llm.model.n_embd,)
    ref = llm.embed("Hello", pooling="mean")
    assert isinstance(ref, np.ndarray)
    np.testing.assert_allclose(one, ref, rtol=1e-5, atol=1e-6)


# -- changes behind the LLM's back ----------------------------------------------------


def test_state_set_behind_the_llm_invalidates_its_prefixes(llm: lc.LLM) -> None:
    assert len(llm.tokenize(PROMPT)) == len(llm.tokenize(OTHER))
    ref_other = greedy(llm, OTHER)
    greedy(llm, PROMPT)
    state = llm.ctx.state_get()  # the KV cache of PROMPT and its output
    greedy(llm, OTHER)  # the slot now believes it holds OTHER
    llm.ctx.state_set(state)  # ... but the KV cache holds PROMPT again
    again = greedy(llm, OTHER)
    assert again.usage.cached_tokens == 0
    assert again.tokens == ref_other.tokens


def test_kv_edits_behind_the_llm_invalidate_its_prefixes(llm: lc.LLM) -> None:
    ref = greedy(llm, PROMPT)
    llm.ctx.seq_rm(0, 2, -1)  # drop all but 2 tokens
    r = greedy(llm, PROMPT)
    assert r.usage.cached_tokens == 0 and r.tokens == ref.tokens
    llm.ctx.clear()
    r = greedy(llm, PROMPT)
    assert r.usage.cached_tokens == 0 and r.tokens == ref.tokens
    llm.engine.call(llm.ctx.clear)  # on the engine thread, still not the engine's own
    r = greedy(llm, PROMPT)
    assert r.usage.cached_tokens == 0 and r.tokens == ref.tokens
    r = greedy(llm, PROMPT)  # the engine's own cache still works
    assert r.usage.cached_tokens > 0 and r.tokens == ref.tokens


def test_set_loras_behind_the_llm_invalidates_its_prefixes(smollm2: lc.Model,
                                                          tmp_path: Path) -> None:
    path = write_lora(tmp_path / "lora.gguf", smollm2.n_embd, range(0, 30, 2), scale=0.5)
    with lc.LoraAdapter(smollm2, path) as adapter:
        with lc.LLM(smollm2, n_ctx=256) as ref_llm:
            ref_llm.ctx.set_loras({adapter: 1.0})
            ref = greedy(ref_llm, PROMPT)
            ref_llm.ctx.set_loras({})
            plain = greedy(ref_llm, PROMPT)
        assert ref.tokens != plain.tokens  # the adapter matters
        with lc.LLM(smollm2, n_ctx=256) as llm:
            assert greedy(llm, PROMPT).tokens == plain.tokens
            llm.ctx.set_loras({adapter: 1.0})
            r = greedy(llm, PROMPT)
            assert r.usage.cached_tokens == 0 and r.tokens == ref.tokens
            llm.set_loras({})  # the LLM's own method, on its engine thread
            r = greedy(llm, PROMPT)
            assert r.usage.cached_tokens == 0 and r.tokens == plain.tokens


def test_control_vector_behind_the_llm_invalidates_its_prefixes(llm: lc.LLM) -> None:
    plain = greedy(llm, PROMPT)
    rng = np.random.default_rng(0)
    cv = rng.standard_normal((llm.model.n_layer, llm.model.n_embd)).astype(np.float32)
    llm.ctx.set_control_vector(cv)
    try:
        first = greedy(llm, PROMPT)
        assert first.usage.cached_tokens == 0 and first.tokens != plain.tokens
        second = greedy(llm, PROMPT)  # now the cache holds steered tokens: reuse is right
        assert second.usage.cached_tokens > 0 and second.tokens == first.tokens
    finally:
        llm.set_control_vector(None)
    r = greedy(llm, PROMPT)
    assert r.usage.cached_tokens == 0 and r.tokens == plain.tokens


def test_a_change_during_a_request_fails_that_request(llm: lc.LLM) -> None:
    handle = llm.submit(PROMPT, max_tokens=200, temperature=0, ignore_eos=True)
    pieces = handle.pieces()
    next(pieces)  # it is generating
    llm.engine.call(llm.ctx.clear)
    with pytest.raises(lc.ContextError, match="changed outside the engine"):
        handle.result(timeout=60)
    pieces.close()
    assert greedy(llm, PROMPT).usage.cached_tokens == 0
