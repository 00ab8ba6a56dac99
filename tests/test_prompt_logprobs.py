"""Prompt-token log-probabilities (``echo`` with ``logprobs``, what evaluation
harnesses score with) and ``max_tokens=0``: in LLM.complete, the OpenAI
server (official client) and compat, against log-probabilities computed here
from a plain Context's logits of the whole prompt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

import llama_cffi as lc
import llama_cffi.compat as compat
from llama_cffi.engine import prompt_logprobs as plp
from llama_cffi.errors import ContextFullError

from .server_util import Server, ours

TOL = 1e-4
N_BATCH = 16  # the engine's: a prompt of PROMPT's length takes several chunks
PROMPT = ("The history of the city begins in the Roman period, when a small settlement grew "
          "up beside the river crossing. Over the following centuries it became a market "
          "town, then a cathedral city, and in the nineteenth century an industrial centre "
          "whose mills and railways drew workers from the surrounding countryside.")
OTHER = "Once upon a time, in a land far away, there lived"


def reference(model: lc.Model, tokens: list[int]) -> np.ndarray:
    """log-softmax of every prompt position's logits (float64), one decode of a
    plain Context with all outputs: row i predicts token i + 1."""
    n = len(tokens)
    with lc.Context(model, lc.ContextParams(n_ctx=512, n_batch=512, n_ubatch=512,
                                            n_threads=2)) as ctx, lc.Batch(n) as batch:
        for i, t in enumerate(tokens):
            batch.add(t, i, [0], True)
        ctx.decode(batch)
        x = np.stack([ctx.logits(i) for i in range(n)]).astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    out: np.ndarray = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    return out


def top_ids(row: np.ndarray, n: int) -> list[int]:
    return [int(i) for i in np.argsort(-row, kind="stable")[:n]]


@pytest.fixture(scope="module")
def llm(smollm2_path: Path) -> Iterator[lc.LLM]:
    with lc.LLM(smollm2_path, n_ctx=2048, n_batch=N_BATCH, n_seq_max=2, n_threads=2) as model:
        yield model


@pytest.fixture(scope="module")
def ref(llm: lc.LLM) -> np.ndarray:
    return reference(llm.model, llm.tokenize(PROMPT))


# -- the arithmetic ---------------------------------------------------------------------------


def test_entries_match_a_float64_log_softmax_and_a_stable_sort() -> None:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((6, 3000)) * 4).astype(np.float32)
    x[1] = 0.0  # flat: every token ties
    x[2, 10:20] = 40.0  # ties at the top
    x[3, 5] = 200.0  # one token takes (almost) all
    x[4, :] = -np.inf  # banned tokens ...
    x[4, 7] = x[4, 9] = 1.0  # ... but two
    tokens = [3, 4, 15, 5, 9, 0]
    xd = x.astype(np.float64)
    m = xd.max(axis=1, keepdims=True)
    want = xd - m - np.log(np.exp(xd - m).sum(axis=1, keepdims=True))
    for k in (0, 1, 3, 12):
        got = plp.entries(x, tokens, k, str)
        for r, e in enumerate(got):
            assert e.token == tokens[r] and e.text == str(tokens[r])
            assert abs(e.logprob - want[r, tokens[r]]) < 1e-6
            assert [t for t, _, _ in e.top] == top_ids(want[r], k) if k else e.top == []
            assert np.allclose([p for _, _, p in e.top], want[r][top_ids(want[r], k)],
                               atol=1e-6)


# -- LLM ---------------------------------------------------------------------------------------


def test_prompt_logprobs_match_the_logits_of_a_plain_context(llm: lc.LLM,
                                                             ref: np.ndarray) -> None:
    tokens = llm.tokenize(PROMPT)
    assert len(tokens) > 2 * N_BATCH  # evaluated in several chunks
    c = llm.complete(PROMPT, echo=True, logprobs=3, max_tokens=0)
    assert c.finish_reason == "length" and c.tokens == [] and c.text == PROMPT
    assert c.prompt_tokens == tokens
    entries = c.prompt_logprobs
    assert entries is not None and len(entries) == len(tokens)
    assert entries[0] is None  # nothing precedes the first token
    for i in range(1, len(tokens)):
        e = entries[i]
        assert e is not None and e.token == tokens[i]
        assert e.text == llm.vocab.token_to_piece(tokens[i]).decode("utf-8", "replace")
        assert abs(e.logprob - ref[i - 1, tokens[i]]) < TOL, i
        assert [t for t, _, _ in e.top] == top_ids(ref[i - 1], 3), i
        assert np.allclose([p for _, _, p in e.top], ref[i - 1][top_ids(ref[i - 1], 3)],
                           atol=TOL)
    # the whole prompt was evaluated (a cached prefix has no logits) ...
    assert c.usage.cached_tokens == 0 and c.timings.prompt_tokens_evaluated == len(tokens)
    assert c.usage.completion_tokens == 0


def test_generated_tokens_follow_the_prompt_entries(llm: lc.LLM, ref: np.ndarray) -> None:
    tokens = llm.tokenize(PROMPT)
    c = llm.complete(PROMPT, echo=True, logprobs=2, max_tokens=3, temperature=0)
    assert c.prompt_logprobs is not None and len(c.prompt_logprobs) == len(tokens)
    assert c.logprobs is not None and len(c.logprobs) == len(c.tokens) == 3
    first = c.logprobs[0]  # the last prompt position's logits chose it
    assert first.token == top_ids(ref[-1], 1)[0]
    assert abs(first.logprob - ref[-1, first.token]) < TOL
    assert c.text.startswith(PROMPT)
    plain = llm.complete(PROMPT, logprobs=2, max_tokens=3, temperature=0)
    assert plain.prompt_logprobs is None and plain.tokens == c.tokens  # echo is what asks


def test_other_slots_and_the_prefix_cache_are_undisturbed(llm: lc.LLM,
                                                          ref: np.ndarray) -> None:
    tokens = llm.tokenize(PROMPT)
    alone = llm.complete(OTHER, max_tokens=24, temperature=0, ignore_eos=True)
    follow = llm.complete(PROMPT, max_tokens=8, temperature=0)
    running = llm.submit(OTHER, max_tokens=24, temperature=0, ignore_eos=True)
    c = llm.complete(PROMPT, echo=True, logprobs=1, max_tokens=0)
    assert running.result(timeout=120).tokens == alone.tokens
    assert c.prompt_logprobs is not None
    got = [e.logprob for e in c.prompt_logprobs[1:] if e is not None]
    want = [ref[i - 1, tokens[i]] for i in range(1, len(tokens))]
    assert np.max(np.abs(np.array(got) - np.array(want))) < TOL
    again = llm.complete(PROMPT, max_tokens=8, temperature=0)  # reuses that slot's cache
    assert again.usage.cached_tokens > 0 and again.tokens == follow.tokens


def test_max_tokens_zero_generates_nothing(llm: lc.LLM) -> None:
    c = llm.complete(OTHER, max_tokens=0, temperature=0.8, seed=3)
    assert (c.tokens, c.text, c.finish_reason, c.usage.completion_tokens) == ([], "", "length", 0)
    assert c.logprobs is None and c.prompt_logprobs is None
    assert llm.complete(OTHER, max_tokens=0, echo=True).text == OTHER
    assert "".join(llm.stream(OTHER, max_tokens=0, echo=True)) == OTHER


def test_refusals(llm: lc.LLM) -> None:
    long = llm.tokenize(PROMPT) * 20  # more than a slot's 1024 cells
    with pytest.raises(ContextFullError, match="prompt log-probabilities"):
        llm.submit(long, echo=True, logprobs=1, context_shift=True)
    sp = lc.SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="prompt_logprobs"):
        llm.engine.submit([1, 2, 3], sp, prompt_logprobs=-1)


# -- the server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("plp-server") / "server.log"
    with ours(["-m", str(smollm2_path), "-c", "2048", "-np", "2", "-t", "2",
               "-b", str(N_BATCH), "-a", "smol"], log) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    yield c
    c.close()


def test_server_echo_logprobs_max_tokens_zero(client: openai.OpenAI, llm: lc.LLM,
                                              ref: np.ndarray) -> None:
    tokens = llm.tokenize(PROMPT)
    r = client.completions.create(model="smol", prompt=PROMPT, echo=True, logprobs=3,
                                  max_tokens=0)
    choice = r.choices[0]
    assert choice.text == PROMPT and choice.finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 0
    assert r.usage.prompt_tokens == len(tokens)
    lp = choice.logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert lp.top_logprobs is not None and lp.text_offset is not None
    assert len(lp.tokens) == len(tokens) and "".join(lp.tokens) == PROMPT  # no BOS here
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    got = np.array(lp.token_logprobs[1:], dtype=np.float64)
    want = np.array([ref[i - 1, tokens[i]] for i in range(1, len(tokens))])
    assert np.max(np.abs(got - want)) < TOL
    for i in range(1, len(tokens)):
        top = lp.top_logprobs[i]
        assert top is not None and len(top) == 3
        assert max(top.values()) == pytest.approx(ref[i - 1].max(), abs=TOL)
    assert lp.text_offset == [sum(map(len, lp.tokens[:i])) for i in range(len(tokens))]


def test_server_token_prompts_as_lm_eval_sends_them(client: openai.OpenAI, llm: lc.LLM,
                                                    ref: np.ndarray) -> None:
    tokens = llm.tokenize(PROMPT)
    other = llm.tokenize(OTHER)
    r = client.completions.create(model="smol", prompt=[tokens, other], echo=True, logprobs=1,
                                  max_tokens=1, temperature=0, seed=1234)
    assert len(r.choices) == 2
    for choice, ids in zip(sorted(r.choices, key=lambda c: c.index), (tokens, other)):
        lp = choice.logprobs
        assert lp is not None and lp.token_logprobs is not None and lp.top_logprobs is not None
        assert len(lp.token_logprobs) == len(ids) + 1  # the prompt's, then the generated one
        assert lp.token_logprobs[0] is None
        assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
        for v, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]):
            assert top is not None and len(top) == 1 and v is not None
            assert max(top.values()) >= v - TOL
    first = sorted(r.choices, key=lambda c: c.index)[0].logprobs
    assert first is not None and first.token_logprobs is not None
    got = np.array(first.token_logprobs[1:len(tokens)], dtype=np.float64)
    want = np.array([ref[i - 1, tokens[i]] for i in range(1, len(tokens))])
    assert np.max(np.abs(got - want)) < TOL


def test_server_streamed_echo_with_logprobs(client: openai.OpenAI, llm: lc.LLM) -> None:
    n = len(llm.tokenize(OTHER))
    chunks = list(client.completions.create(model="smol", prompt=OTHER, echo=True, logprobs=2,
                                            max_tokens=4, temperature=0, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    plain = client.completions.create(model="smol", prompt=OTHER, max_tokens=4, temperature=0)
    assert text == OTHER + plain.choices[0].text
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    lp = last.choices[0].logprobs
    assert lp is not None and lp.token_logprobs is not None
    assert len(lp.token_logprobs) == n + 4 and lp.token_logprobs[0] is None


def test_server_max_tokens_zero_without_echo(client: openai.OpenAI) -> None:
    r = client.completions.create(model="smol", prompt=OTHER, max_tokens=0)
    assert r.choices[0].text == "" and r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 0


# -- compat ----------------------------------------------------------------------------------


def test_compat_echo_logprobs_as_llama_cpp_python(smollm2_path: Path, llm: lc.LLM,
                                                  ref: np.ndarray) -> None:
    tokens = llm.tokenize(PROMPT)
    with compat.Llama(str(smollm2_path), n_ctx=512, n_threads=2, verbose=False) as model:
        out = model(PROMPT, echo=True, logprobs=2, max_tokens=1, temperature=0.0)
        choice = out["choices"][0]
        assert choice["text"].startswith(PROMPT)
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(tokens) + 1
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        got = np.array(lp["token_logprobs"][1:len(tokens)], dtype=np.float64)
        want = np.array([ref[i - 1, tokens[i]] for i in range(1, len(tokens))])
        assert np.max(np.abs(got - want)) < TOL
        for token, value, top in zip(lp["tokens"][1:], lp["token_logprobs"][1:],
                                     lp["top_logprobs"][1:]):
            assert top[token] == value  # llama-cpp-python's: the chosen token among them
        assert lp["text_offset"] == [sum(map(len, lp["tokens"][:i]))
                                     for i in range(len(lp["tokens"]))]
        # llama-cpp-python's rule: max_tokens <= 0 is no limit (up to the context)
        more = model(OTHER, max_tokens=0, temperature=0.0)
        assert more["usage"]["completion_tokens"] > 16


def test_compat_leaves_out_the_bos(gemma3_path: Path) -> None:
    with compat.Llama(str(gemma3_path), n_ctx=256, n_threads=2, verbose=False) as model:
        tokens = model.tokenize(OTHER.encode())
        assert tokens[0] == model.token_bos()
        out = model(OTHER, echo=True, logprobs=1, max_tokens=1, temperature=0.0)
        lp = out["choices"][0]["logprobs"]
        assert len(lp["tokens"]) == len(tokens)  # the prompt's without BOS, one generated
        assert "".join(lp["tokens"]).startswith(OTHER)
        assert lp["token_logprobs"][0] is None
        assert all(v is not None for v in lp["token_logprobs"][1:])


def test_a_bos_model(gemma3_path: Path) -> None:
    """The engine gives the BOS an (empty) entry and the next token a real one; the
    server's shape leaves an added BOS out of a text prompt, not out of ids."""
    from llama_cffi.apps.server.openai_api import completion_logprobs

    with lc.LLM(gemma3_path, n_ctx=512, n_threads=2) as llm:
        tokens = llm.tokenize(OTHER)
        assert tokens[0] == llm.vocab.bos
        ref = reference(llm.model, tokens)
        c = llm.complete(OTHER, echo=True, logprobs=2, max_tokens=1, temperature=0)
        assert c.prompt_logprobs is not None and c.prompt_logprobs[0] is None
        e = c.prompt_logprobs[1]
        assert e is not None and abs(e.logprob - ref[0, tokens[1]]) < TOL
        text = completion_logprobs(c, llm.vocab, OTHER, OTHER)
        assert text is not None and len(text["tokens"]) == len(tokens) - 1 + 1
        assert "".join(text["tokens"]).startswith(OTHER)
        assert text["token_logprobs"][0] is None
        assert text["token_logprobs"][1] == pytest.approx(ref[1, tokens[2]], abs=TOL)
        ids = completion_logprobs(c, llm.vocab, llm.vocab.detokenize(tokens), tokens)
        assert ids is not None and len(ids["tokens"]) == len(tokens) + 1
        assert ids["token_logprobs"][0] is None
        assert ids["token_logprobs"][1] == pytest.approx(ref[0, tokens[1]], abs=TOL)
