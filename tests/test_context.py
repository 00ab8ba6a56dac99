"""Contexts: KV cache types, state, several sequences, memory operations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import llama_cffi as lc

PROMPT = "The history of the printing press begins in"


@pytest.fixture(scope="module")
def gemma3(gemma3_path: Path):
    with lc.Model(gemma3_path) as model:
        yield model


def greedy(ctx: lc.Context, tokens: list[int], n: int, start: int = 0, seq_id: int = 0) -> list[int]:
    """Greedy continuation of a sequence whose first ``start`` tokens are already in ``ctx``."""
    if len(tokens) > start:
        ctx.eval_tokens(tokens[start:], start, seq_id=seq_id)
    out: list[int] = []
    pos = len(tokens)
    batch = lc.Batch(1)
    for _ in range(n):
        tok = int(np.argmax(ctx.logits()))
        out.append(tok)
        batch.clear()
        batch.add(tok, pos, (seq_id,), True)
        ctx.decode(batch)
        pos += 1
    batch.close()
    return out


def teacher_forced_agreement(ctx: lc.Context, tokens: list[int], reference: list[int]) -> float:
    """Share of steps where ctx's top-1 equals ``reference`` when fed the reference."""
    ctx.eval_tokens(tokens, 0)
    hits = 0
    batch = lc.Batch(1)
    for i, ref in enumerate(reference):
        hits += int(np.argmax(ctx.logits())) == ref
        batch.clear()
        batch.add(ref, len(tokens) + i, (0,), True)
        ctx.decode(batch)
    batch.close()
    return hits / len(reference)


@pytest.mark.parametrize("model_name", ["smollm2", "gemma3"])
def test_quantized_kv_cache(model_name: str, request: pytest.FixtureRequest) -> None:
    model: lc.Model = request.getfixturevalue(model_name)
    tokens = model.vocab.tokenize(PROMPT)
    with model.context(n_ctx=512, type_k="f16", type_v="f16") as ctx:
        f16_size = ctx.kv_cache_size
        reference = greedy(ctx, tokens, 64)
    for kind, ratio in (("q8_0", 8.5 / 16), ("q4_0", 4.5 / 16)):
        with model.context(n_ctx=512, type_k=kind, type_v=kind, flash_attn="auto") as ctx:
            # the KV cache shrinks by the bits per element of the type
            assert ctx.kv_cache_size == pytest.approx(f16_size * ratio, rel=0.02), kind
            agreement = teacher_forced_agreement(ctx, tokens, reference)
        # Criterion: fed the f16 greedy text, the quantized cache picks the same
        # next token at >= 90 % (q8_0) / >= 75 % (q4_0) of 64 steps.
        assert agreement >= (0.9 if kind == "q8_0" else 0.75), (kind, agreement)


def test_quantized_v_without_flash_attention_is_refused(smollm2: lc.Model) -> None:
    with pytest.raises(ValueError, match="Flash Attention"):
        smollm2.context(type_v="q8_0", flash_attn="off")


def continue_from(ctx: lc.Context, tokens: list[int], n: int, seq_id: int = 0) -> list[int]:
    """Evaluate the last prompt token alone, then generate greedily."""
    ctx.eval_tokens(tokens[-1:], len(tokens) - 1, seq_id=seq_id)
    return greedy(ctx, tokens, n, start=len(tokens), seq_id=seq_id)


# A saved state holds the memory (KV cache) only, not the logits, at this
# llama.cpp: so the state is taken after all prompt tokens but the last, and
# both runs then evaluate the last token alone -- the same computation.

def test_state_bytes_restore_continues_identically(smollm2: lc.Model, tmp_path: Path) -> None:
    tokens = smollm2.vocab.tokenize(PROMPT)
    head = tokens[:-1]
    with smollm2.context(n_ctx=256) as ctx:
        ctx.eval_tokens(head, 0)
        uninterrupted = continue_from(ctx, tokens, 24)
    with smollm2.context(n_ctx=256) as ctx:
        ctx.eval_tokens(head, 0)
        state = ctx.state_get()
        ctx.save_state(tmp_path / "s.bin", head)
    with smollm2.context(n_ctx=256) as fresh:
        fresh.state_set(state)
        assert fresh.seq_pos_max(0) == len(head) - 1
        assert continue_from(fresh, tokens, 24) == uninterrupted
    with smollm2.context(n_ctx=256) as fresh:
        assert fresh.load_state(tmp_path / "s.bin") == head
        assert continue_from(fresh, tokens, 24) == uninterrupted


def test_sequence_state_restore(smollm2: lc.Model, tmp_path: Path) -> None:
    tokens = smollm2.vocab.tokenize(PROMPT)
    head = tokens[:-1]
    with smollm2.context(n_ctx=512, n_seq_max=2) as ctx:
        ctx.eval_tokens(head, 0, seq_id=1)
        uninterrupted = continue_from(ctx, tokens, 16, seq_id=1)
        ctx.clear()
        ctx.eval_tokens(head, 0, seq_id=1)
        data = ctx.seq_state_get(1)
        ctx.save_seq_state(tmp_path / "seq.bin", 1, head)
    with smollm2.context(n_ctx=512, n_seq_max=2) as fresh:
        fresh.seq_state_set(data, 0)  # into another sequence id
        assert fresh.seq_pos_max(0) == len(head) - 1
        assert fresh.seq_pos_max(1) == -1
        assert continue_from(fresh, tokens, 16, seq_id=0) == uninterrupted
    with smollm2.context(n_ctx=512, n_seq_max=2) as fresh:
        assert fresh.load_seq_state(tmp_path / "seq.bin", 1) == head
        assert continue_from(fresh, tokens, 16, seq_id=1) == uninterrupted


def test_restoring_garbage_state_raises(smollm2: lc.Model) -> None:
    with smollm2.context(n_ctx=256) as ctx:
        with pytest.raises(lc.LlamaError, match="could not restore"):
            ctx.state_set(b"\x00\x01garbage")
        ctx.eval_tokens(smollm2.vocab.tokenize("still works"), 0)


def test_two_sequences_in_one_batch_match_each_alone(smollm2: lc.Model) -> None:
    prompts = [smollm2.vocab.tokenize(PROMPT), smollm2.vocab.tokenize("My favourite fruit is")]
    alone = []
    for p in prompts:
        with smollm2.context(n_ctx=512) as ctx:
            alone.append(greedy(ctx, p, 20))
    with smollm2.context(n_ctx=1024, n_seq_max=2) as ctx:
        batch = lc.Batch(64, n_seq_max=1)
        for s, p in enumerate(prompts):
            for i, t in enumerate(p):
                batch.add(t, i, (s,), i == len(p) - 1)
        ctx.decode(batch)
        outs: list[list[int]] = [[], []]
        pos = [len(p) for p in prompts]
        rows = [len(prompts[0]) - 1, len(prompts[0]) + len(prompts[1]) - 1]  # batch indices
        for _ in range(20):
            picks = [int(np.argmax(ctx.logits(rows[s]))) for s in range(2)]
            rows = [0, 1]
            batch.clear()
            for s in range(2):
                outs[s].append(picks[s])
                batch.add(picks[s], pos[s], (s,), True)
                pos[s] += 1
            ctx.decode(batch)
        batch.close()
    assert outs == alone


def test_memory_operations(smollm2: lc.Model) -> None:
    tokens = smollm2.vocab.tokenize(PROMPT)
    n = len(tokens)
    # a unified KV cache: sequences share cells, as seq_cp/seq_keep assume
    with smollm2.context(n_ctx=768, n_seq_max=3, kv_unified=True) as ctx:
        ctx.eval_tokens(tokens, 0, seq_id=0)
        assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (0, n - 1)
        ctx.seq_cp(0, 2)
        assert ctx.seq_pos_max(2) == n - 1
        ctx.seq_keep(2)
        assert ctx.seq_pos_max(0) == -1 and ctx.seq_pos_max(2) == n - 1
        assert ctx.seq_rm(2, n - 2, -1)
        assert ctx.seq_pos_max(2) == n - 3
        ctx.clear()
        assert ctx.seq_pos_max(2) == -1
        with pytest.raises(ValueError, match="seq_id"):
            ctx.seq_pos_max(3)


def test_seq_cp_per_kv_stream_and_unified(smollm2: lc.Model) -> None:
    tokens = smollm2.vocab.tokenize(PROMPT)
    n = len(tokens)
    # one KV stream per sequence: llama.cpp copies whole streams only (a range
    # would hit its GGML_ASSERT); the copy continues exactly like the original
    with smollm2.context(n_ctx=512, n_seq_max=2, kv_unified=False) as ctx:
        assert ctx.split_kv and ctx.n_ctx_seq < ctx.n_ctx
        ctx.eval_tokens(tokens, 0, seq_id=0)
        with pytest.raises(ValueError, match="only whole sequences"):
            ctx.seq_cp(0, 1, 0, n - 2)
        assert ctx.seq_pos_max(1) == -1  # nothing was copied
        ctx.seq_cp(0, 1)
        assert (ctx.seq_pos_min(1), ctx.seq_pos_max(1)) == (0, n - 1)
        batch = lc.Batch(2)
        nxt = smollm2.vocab.tokenize(" the", add_special=False)[0]
        batch.add(nxt, n, (0,), True)
        batch.add(nxt, n, (1,), True)
        ctx.decode(batch)
        np.testing.assert_allclose(ctx.logits(1), ctx.logits(0), rtol=0, atol=1e-4)
        batch.close()
    # one shared stream: any range of positions can be shared
    with smollm2.context(n_ctx=512, n_seq_max=2, kv_unified=True) as ctx:
        assert not ctx.split_kv
        ctx.eval_tokens(tokens, 0, seq_id=0)
        ctx.seq_cp(0, 1, 0, 3)
        assert (ctx.seq_pos_min(1), ctx.seq_pos_max(1)) == (0, 2)


def test_context_shift_keeps_generating(smollm2: lc.Model) -> None:
    with smollm2.context(n_ctx=256) as ctx:
        tokens = smollm2.vocab.tokenize("Once upon a time " * 40)
        ctx.eval_tokens(tokens, 0)
        assert ctx.can_shift
        end = ctx.shift(0, n_keep=4, n_discard=100)
        assert end == len(tokens) - 100
        assert ctx.seq_pos_max(0) == end - 1
        # the shifted cache still decodes: positions continue at ``end``
        batch = lc.Batch(1)
        batch.add(int(np.argmax(ctx.logits())), end, (0,), True)
        ctx.decode(batch)
        assert np.isfinite(ctx.logits()).all()
        batch.close()


def test_rope_and_thread_parameters(smollm2_path: Path) -> None:
    # A model of its own: a YaRN context with a scale rewrites the model's
    # n_ctx_train inside llama.cpp (llama_init_from_model).
    with lc.Model(smollm2_path) as model:
        tokens = model.vocab.tokenize(PROMPT)  # several positions: RoPE matters

        def last_logits(**params: object) -> np.ndarray:
            with model.context(n_ctx=256, n_threads=2, n_threads_batch=2, **params) as ctx:
                ctx.eval_tokens(tokens, 0)
                return ctx.logits().copy()

        def differ(a: np.ndarray, b: np.ndarray) -> float:
            return float(np.abs(a - b).max())

        default = last_logits()
        # a factor of 1 is no scaling, linear or YaRN
        np.testing.assert_allclose(last_logits(rope_scaling="linear", rope_freq_scale=1.0),
                                   default, rtol=0, atol=1e-4)
        np.testing.assert_allclose(last_logits(rope_scaling="yarn", rope_freq_scale=1.0),
                                   default, rtol=0, atol=1e-3)
        # linear interpolation by 2 moves every position: another prediction
        linear = last_logits(rope_scaling="linear", rope_freq_scale=0.5)
        assert differ(linear, default) > 1.0
        # YaRN without its extrapolation mix (ext_factor 0) is linear interpolation;
        # with it (ext_factor 1, llama.cpp's default for YaRN) it is something else
        np.testing.assert_allclose(last_logits(rope_scaling="yarn", rope_freq_scale=0.5,
                                               yarn_ext_factor=0.0), linear, rtol=0, atol=1e-4)
        assert differ(last_logits(rope_scaling="yarn", rope_freq_scale=0.5), linear) > 0.1
        # "none" never scales (llama.cpp ignores the factor then)
        np.testing.assert_allclose(last_logits(rope_scaling="none", rope_freq_scale=0.5),
                                   default, rtol=0, atol=1e-4)
        # another frequency base is another prediction too
        assert differ(last_logits(rope_freq_base=10000.0), default) > 1.0

        with model.context(n_ctx=256, n_threads=1, n_threads_batch=2) as ctx:
            assert (ctx.n_threads, ctx.n_threads_batch) == (1, 2)
            ctx.set_threads(2)
            assert (ctx.n_threads, ctx.n_threads_batch) == (2, 2)
            ctx.set_threads(1, 1)
            assert (ctx.n_threads, ctx.n_threads_batch) == (1, 1)


ROPE_SETTINGS = {  # ContextParams fields, and the same settings as llama.cpp's flags
    "linear-x2": ({"rope_scaling": "linear", "rope_freq_scale": 0.5},
                  ["--rope-scaling", "linear", "--rope-freq-scale", "0.5"]),
    "yarn-x2": ({"rope_scaling": "yarn", "rope_freq_scale": 0.5},
                ["--rope-scaling", "yarn", "--rope-freq-scale", "0.5"]),
    "yarn-x2-no-ext": ({"rope_scaling": "yarn", "rope_freq_scale": 0.5, "yarn_ext_factor": 0.0},
                       ["--rope-scaling", "yarn", "--rope-freq-scale", "0.5",
                        "--yarn-ext-factor", "0"]),
    "freq-base": ({"rope_freq_base": 10000.0}, ["--rope-freq-base", "10000"]),
}
ROPE_PROMPT = "Once upon a time, in a small village by the sea,"


@pytest.mark.tools
@pytest.mark.parametrize("name", list(ROPE_SETTINGS))
def test_rope_settings_match_llama_completion(name: str, smollm2_path: Path,
                                             tools_dir: Path) -> None:
    """Greedy text under each RoPE setting equals llama-completion's with the
    same flags (a setting that did not reach llama.cpp, or reached another
    field, gives the unscaled text or another one)."""
    import subprocess

    params, flags = ROPE_SETTINGS[name]

    def ours(**kw: object) -> bytes:
        with lc.Model(smollm2_path) as model:  # YaRN rewrites the model's n_ctx_train
            tokens = model.vocab.tokenize(ROPE_PROMPT)
            with model.context(n_ctx=256, n_threads=2, **kw) as ctx, \
                    lc.SamplerChain([lc.sampling.greedy()]) as chain:
                out = list(lc.Generation(ctx, chain, tokens, max_tokens=16))
            assert len(out) == 16
            return b"".join(model.vocab.token_to_piece(t) for t in out)

    proc = subprocess.run(
        [str(tools_dir / "llama-completion"), "-m", str(smollm2_path), "-p", ROPE_PROMPT,
         "-n", "16", "--temp", "0", "-no-cnv", "--no-display-prompt", "-c", "256", "-t", "2",
         "--no-warmup", *flags],
        capture_output=True, stdin=subprocess.DEVNULL, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    reference = proc.stdout.rstrip(b"\n")  # the tool ends its output with newlines
    scaled = ours(**params)
    assert scaled.rstrip(b"\n") == reference
    assert scaled != ours(), "the setting changed nothing: the comparison proves nothing"


def test_abort_callback(smollm2: lc.Model) -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return True

    with smollm2.context(n_ctx=256, abort_callback=stop) as ctx:
        with pytest.raises(lc.DecodeAbortedError):
            ctx.eval_tokens(smollm2.vocab.tokenize(PROMPT), 0)
    assert calls

    def broken() -> bool:
        raise RuntimeError("callback bug")

    with smollm2.context(n_ctx=256, abort_callback=broken) as ctx:
        with pytest.raises(lc.DecodeAbortedError) as info:
            ctx.eval_tokens(smollm2.vocab.tokenize(PROMPT), 0)
        assert isinstance(info.value.__cause__, RuntimeError)
