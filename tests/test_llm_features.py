"""LLM features ported from llama-cpp-python: states, prompt caches, echo, fill-in-the-middle,
max_tokens=None, ignore_eos, logits processors, stopping criteria, sampling defaults, raw."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import llama_cffi as lc
from llama_cffi.api.fim import format_infill
from llama_cffi.api.prompt_cache import DiskPromptCache, RamPromptCache
from llama_cffi.api.state import LLMState

from .server_util import llama_server

PROMPT = "Once upon a time"
OTHER = "The quick brown fox jumps over"
ROOT = Path(__file__).resolve().parent.parent
VOCABS = ROOT / "vendor" / "llama.cpp" / "models"


@pytest.fixture(scope="module")
def llm(smollm2: lc.Model) -> Iterator[lc.LLM]:
    with lc.LLM(smollm2, n_ctx=512) as llm:
        yield llm


def greedy(llm: lc.LLM, prompt: object, n: int = 16, **kw: object) -> lc.Completion:
    return llm.complete(prompt, max_tokens=n, temperature=0, **kw)  # type: ignore[arg-type]


# -- save_state / load_state ----------------------------------------------------------------


def test_state_round_trip_gives_the_same_greedy_continuation(llm: lc.LLM,
                                                             smollm2: lc.Model) -> None:
    first = greedy(llm, PROMPT)
    state = llm.save_state()
    assert list(state.tokens) == llm.tokenize(PROMPT) + first.tokens[:-1]
    greedy(llm, OTHER)  # the slot forgets PROMPT
    llm.load_state(state)
    again = greedy(llm, PROMPT)
    assert again.usage.cached_tokens == len(llm.tokenize(PROMPT)) - 1
    assert again.tokens == first.tokens
    # a continuation past the saved tokens is the same as without the state
    longer = greedy(llm, PROMPT, 24)
    llm.load_state(state)
    assert greedy(llm, PROMPT, 24).tokens == longer.tokens
    # as bytes, into another LLM of the same model
    blob = state.to_bytes()
    with lc.LLM(smollm2, n_ctx=512) as other:
        other.load_state(LLMState.from_bytes(blob))
        r = greedy(other, PROMPT)
        assert r.usage.cached_tokens > 0 and r.tokens == first.tokens


def test_state_of_another_model_is_refused(llm: lc.LLM) -> None:
    state = llm.save_state()
    with pytest.raises(lc.LlamaError, match="another model"):
        llm.load_state(LLMState(state.tokens, state.data, "some other model"))
    with pytest.raises(TypeError):
        llm.load_state(state.data)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LLMState.from_bytes(b"not a state at all")


# -- prompt caches -------------------------------------------------------------------------


def test_ram_prompt_cache_restores_the_longest_prefix(llm: lc.LLM) -> None:
    cache = RamPromptCache(64 << 20)
    llm.set_cache(cache)
    try:
        first = greedy(llm, PROMPT)
        greedy(llm, OTHER)  # the only slot now holds OTHER
        assert len(cache) == 2
        hit = greedy(llm, PROMPT)
        assert hit.usage.cached_tokens == len(llm.tokenize(PROMPT)) - 1
        assert hit.tokens == first.tokens
        # a longer prompt starting with the cached output reuses all of it
        cont = greedy(llm, PROMPT + first.text)
        assert cont.usage.cached_tokens >= len(llm.tokenize(PROMPT)) + 10
    finally:
        llm.set_cache(None)
    greedy(llm, OTHER)
    assert greedy(llm, PROMPT).usage.cached_tokens == 0  # no cache, no restore


def test_prompt_cache_evicts_least_recently_used_by_bytes() -> None:
    def state(tokens: tuple[int, ...], n: int) -> LLMState:
        return LLMState(tokens, bytes(n), "m")

    cache = RamPromptCache(1000)
    cache.put(state((1, 2, 3), 400))
    cache.put(state((4, 5), 400))
    assert cache.find([1, 2, 9], "m") is not None  # (1, 2, 3) is now the most recent
    cache.put(state((6,), 400))  # 1200 bytes: evict the least recent, (4, 5)
    assert cache.keys() == [(1, 2, 3), (6,)]
    assert cache.cache_size == (400 + 4 * 3) + (400 + 4 * 1)
    assert cache.find([4, 5], "m") is None and cache.find([7], "m") is None
    assert cache.find([1, 2], "another model") is None
    assert cache[[1, 2, 7]].tokens == (1, 2, 3)
    with pytest.raises(KeyError):
        cache[[9]]
    cache.put(state((8,), 5000))  # larger than the whole cache: not kept
    assert (8,) not in cache.keys()
    cache.clear()
    assert len(cache) == 0 and cache.cache_size == 0


def test_disk_prompt_cache_hits_and_outlives_the_process(llm: lc.LLM, smollm2: lc.Model,
                                                        tmp_path: Path) -> None:
    cache = DiskPromptCache(tmp_path / "prompts", 64 << 20)
    llm.set_cache(cache)
    try:
        first = greedy(llm, PROMPT)
        greedy(llm, OTHER)
        hit = greedy(llm, PROMPT)
        assert hit.usage.cached_tokens > 0 and hit.tokens == first.tokens
    finally:
        llm.set_cache(None)
    files = sorted((tmp_path / "prompts").glob("*.state"))
    assert len(files) == len(cache) == 2
    reopened = DiskPromptCache(tmp_path / "prompts", 64 << 20)  # a new process would see this
    assert sorted(reopened.keys()) == sorted(cache.keys())
    with lc.LLM(smollm2, n_ctx=512) as fresh:
        fresh.set_cache(reopened)
        r = greedy(fresh, PROMPT)
        assert r.usage.cached_tokens > 0 and r.tokens == first.tokens


# -- echo, max_tokens=None, ignore_eos -------------------------------------------------------


def test_echo_puts_the_prompt_first(llm: lc.LLM) -> None:
    plain = greedy(llm, PROMPT, 8)
    r = greedy(llm, PROMPT, 8, echo=True)
    assert r.text == PROMPT + plain.text and r.tokens == plain.tokens
    pieces = list(llm.stream(PROMPT, max_tokens=8, temperature=0, echo=True))
    assert pieces[0] == PROMPT and "".join(pieces) == r.text
    ids = llm.tokenize(PROMPT)
    assert greedy(llm, ids, 8, echo=True).text == PROMPT + plain.text


def test_max_tokens_none_runs_to_the_end_of_the_context(smollm2: lc.Model) -> None:
    assert lc.SamplingParams(max_tokens=None).max_tokens == -1
    with lc.LLM(smollm2, n_ctx=256, sampling=lc.SamplingParams(max_tokens=4)) as small:
        n_ctx = small.ctx.n_ctx_seq
        prompt = small.tokenize("one two three four " * 60)[:n_ctx - 20]
        assert len(small.complete(prompt, temperature=0, ignore_eos=True).tokens) == 4
        r = small.complete(prompt, max_tokens=None, temperature=0, ignore_eos=True)
        assert r.finish_reason == "length"
        # every position is used: the last token sampled needs no room
        assert r.usage.prompt_tokens + r.usage.completion_tokens == n_ctx + 1


def _force_eos_at(llm: lc.LLM, position: int):  # type: ignore[no-untyped-def]
    n_prompt = len(llm.tokenize(PROMPT))
    eos = llm.vocab.eos
    assert eos is not None

    def force(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if len(input_ids) - n_prompt == position:
            scores[eos] = 1e9
        return scores

    return force


def test_ignore_eos_in_every_call(llm: lc.LLM) -> None:
    force = _force_eos_at(llm, 2)
    r = greedy(llm, PROMPT, 8, logits_processors=[force])
    assert r.finish_reason == "stop" and len(r.tokens) == 2
    # as llama.cpp's --ignore-eos: the end-of-generation tokens are banned
    eog = {t for t in range(llm.vocab.n_tokens) if llm.vocab.is_eog(t)}
    r = greedy(llm, PROMPT, 8, logits_processors=[force], ignore_eos=True)
    assert len(r.tokens) == 8 and not eog & set(r.tokens)
    assert r.tokens[:2] == greedy(llm, PROMPT, 8).tokens[:2]
    s = llm.stream(PROMPT, max_tokens=8, temperature=0, logits_processors=[force],
                   ignore_eos=True)
    list(s)
    assert s.completion is not None and s.completion.tokens == r.tokens
    c = llm.chat([{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0,
                 ignore_eos=True, logits_processors=[lambda i, s: _boost(s, llm.vocab.eos)])
    assert len(c.tokens) == 6 and not eog & set(c.tokens)


def _boost(scores: np.ndarray, token: int | None) -> np.ndarray:
    assert token is not None
    scores[token] = 1e9
    return scores


# -- logits processors and stopping criteria ------------------------------------------------------


def test_logits_processor_bans_a_token(llm: lc.LLM) -> None:
    plain = greedy(llm, PROMPT)
    banned = plain.tokens[0]
    seen: list[tuple[int, tuple[int, ...]]] = []

    def ban(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        seen.append((len(input_ids), scores.shape))
        assert input_ids.dtype == np.intc and scores.dtype == np.single
        scores[banned] = -np.inf
        return scores

    r = greedy(llm, PROMPT, logits_processors=[ban])
    assert banned not in r.tokens and r.tokens != plain.tokens
    n = len(llm.tokenize(PROMPT))
    assert [k for k, _ in seen] == list(range(n, n + len(r.tokens)))
    assert {shape for _, shape in seen} == {(llm.vocab.n_tokens,)}
    # a processor returning a new array works too, and several run in order
    r2 = greedy(llm, PROMPT, logits_processors=[lambda i, s: s.copy(), ban])
    assert r2.tokens == r.tokens
    with pytest.raises(ValueError, match="shape"):
        greedy(llm, PROMPT, logits_processors=[lambda i, s: s[:10]])
    with pytest.raises(TypeError):
        greedy(llm, PROMPT, logits_processors=[42])


def test_stopping_criterion_stops_at_the_right_token(llm: lc.LLM) -> None:
    plain = greedy(llm, PROMPT)
    target = plain.tokens[4]
    calls: list[int] = []

    def stop_after_target(input_ids: np.ndarray, logits: np.ndarray) -> bool:
        calls.append(len(input_ids))
        assert logits.shape == (llm.vocab.n_tokens,)
        return bool(input_ids[-1] == target)

    r = greedy(llm, PROMPT, stopping_criteria=[stop_after_target])
    k = plain.tokens.index(target)
    assert r.tokens == plain.tokens[:k + 1] and r.finish_reason == "stop"
    n = len(llm.tokenize(PROMPT))
    assert calls == list(range(n, n + k + 2))
    s = llm.stream(PROMPT, max_tokens=16, temperature=0, stopping_criteria=[stop_after_target])
    assert "".join(s) == llm.vocab.detokenize(plain.tokens[:k + 1])
    c = llm.chat([{"role": "user", "content": "Hi"}], max_tokens=16, temperature=0,
                 stopping_criteria=[lambda ids, logits: True])
    assert c.tokens == [] and c.finish_reason == "stop"


# -- sampling defaults -----------------------------------------------------------------------


def test_sampling_defaults_are_settable_on_the_llm(smollm2: lc.Model) -> None:
    with lc.LLM(smollm2, n_ctx=128) as llm:
        llm.sampling = lc.SamplingParams(temperature=0, max_tokens=5)
        r = llm.complete(PROMPT)
        assert len(r.tokens) == 5 and r.tokens == greedy(llm, PROMPT, 5).tokens
        llm.sampling = {"temperature": 0, "max_tokens": 3}
        assert len(llm.complete(PROMPT).tokens) == 3
        assert llm.complete(PROMPT, max_tokens=4).usage.completion_tokens == 4
        with pytest.raises(TypeError):
            llm.sampling = 0.5  # type: ignore[assignment]
        with pytest.raises(TypeError, match="temperatur"):
            llm.sampling = {"temperatur": 0}


# -- fill in the middle ----------------------------------------------------------------------


def test_fim_needs_the_models_fim_tokens(llm: lc.LLM) -> None:
    with pytest.raises(ValueError, match="FIM"):
        llm.complete("def add(a, b):\n    ", suffix="\n    return c\n", max_tokens=4)


def test_fim_prompt_is_built_as_llama_server_builds_it() -> None:
    with lc.Model(VOCABS / "ggml-vocab-deepseek-coder.gguf", vocab_only=True) as model:
        v = model.vocab
        pre, suf = "def add(a, b):\n    ", "\n    return c\n"
        ids = format_infill(v, pre, suf, n_batch=2048, n_predict=16, n_ctx=4096)
        tok = lambda t: v.tokenize(t, add_special=False)  # noqa: E731
        assert v.add_bos and v.fim_rep is None and v.fim_sep is None
        assert ids == [v.bos, v.fim_pre, *tok(pre), v.fim_suf, *tok(suf), v.fim_mid]
        # the prefix keeps its last 3/4 n_batch tokens, the suffix its first n_batch/4 - 2
        long_pre, long_suf = "x = 1\n" * 200, "y = 2\n" * 200
        cut = format_infill(v, long_pre, long_suf, n_batch=64, n_predict=16, n_ctx=4096)
        assert cut == [v.bos, v.fim_pre, *tok(long_pre)[-48:], v.fim_suf,
                       *tok(long_suf)[:14], v.fim_mid]
    with lc.Model(VOCABS / "ggml-vocab-refact.gguf", vocab_only=True) as model:
        v = model.vocab  # has a repo token: the repo-level pattern when the context has room
        assert v.fim_rep is not None and not v.add_bos
        ids = format_infill(v, "a", "b", n_batch=512, n_predict=16, n_ctx=4096)
        assert ids == [v.fim_rep, *tok_of(v, "myproject\n"), v.fim_pre, *tok_of(v, "a"),
                       v.fim_suf, *tok_of(v, "b"), v.fim_mid]
        assert format_infill(v, "a", "b", n_batch=512, n_predict=2000, n_ctx=4096)[0] == v.fim_pre


def tok_of(v: lc.Vocab, text: str) -> list[int]:
    return v.tokenize(text, add_special=False)


# SmolLM2 has no FIM tokens; llama.cpp reads them from the GGUF, so both sides
# are given the same three (unused) special tokens with --override-kv.
FIM_IDS = {"fim_pre": 6, "fim_suf": 7, "fim_mid": 8}


@pytest.mark.tools
@pytest.mark.slow
def test_fim_matches_llama_server_infill(smollm2_path: Path, tools_dir: Path,
                                         tmp_path: Path) -> None:
    pre, suf = "def add(a, b):\n    result = ", "\n    return result\n"
    overrides = tuple((f"tokenizer.ggml.{k}_token_id", v) for k, v in FIM_IDS.items())
    # a context with room for llama-server's repo-level extra ("<reponame>myproject\n")
    with lc.LLM(smollm2_path, n_ctx=2048, n_batch=1024, kv_overrides=overrides) as llm:
        ours = llm.complete(pre, suffix=suf, max_tokens=16, temperature=0)
    args = ["-m", str(smollm2_path), "-c", "2048", "-b", "1024", "-n", "16", "-np", "1"]
    for k, v in FIM_IDS.items():
        args += ["--override-kv", f"tokenizer.ggml.{k}_token_id=int:{v}"]
    with llama_server(tools_dir, args, tmp_path / "llama-server.log", timeout=60) as srv:
        status, theirs = srv.post("/infill", {
            "input_prefix": pre, "input_suffix": suf, "n_predict": 16, "temperature": 0,
            "return_tokens": True, "cache_prompt": False}, timeout=60)
    assert status == 200, theirs
    assert theirs["tokens_evaluated"] == ours.usage.prompt_tokens
    assert ours.tokens == theirs["tokens"][:len(ours.tokens)]
    assert ours.text == theirs["content"]


# -- the raw module ---------------------------------------------------------------------------


def test_raw_module_is_llama_cpps_c_api(smollm2: lc.Model) -> None:
    from llama_cffi import raw

    v = smollm2.vocab
    assert raw.lib.llama_vocab_n_tokens(v.ptr) == v.n_tokens
    buf = raw.ffi.new("llama_token[]", 64)
    n = raw.lib.llama_tokenize(v.ptr, b"Hello, world!", 13, buf, 64, False, False)
    assert list(buf[0:n]) == v.tokenize("Hello, world!", add_special=False)
    assert raw.LLAMA_COMMIT and raw.NULL == raw.ffi.NULL
    assert raw.__doc__ and "llama_cpp.llama_" in raw.__doc__
