"""Model loading options and facts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import llama_cffi as lc


def test_model_facts(smollm2: lc.Model) -> None:
    m = smollm2
    assert m.architecture == "llama"
    assert m.n_layer == 30 and m.n_embd == 576 and m.n_head == 9 and m.n_head_kv == 3
    assert m.n_ctx_train == 8192
    assert 130e6 < m.n_params < 140e6
    assert m.size > 80 * 2**20
    assert not m.is_moe and not m.is_recurrent and not m.is_hybrid and not m.has_encoder
    assert m.metadata["general.architecture"] == "llama"
    assert "im_start" in (m.chat_template() or "")
    assert "Q4_1" in m.description
    assert m.buffers and sum(m.buffers.values()) >= m.size * 0.9


def test_gemma3_sliding_window(gemma3_path: Path) -> None:
    with lc.Model(gemma3_path) as m:
        assert m.architecture == "gemma3"
        assert m.n_swa > 0


def test_metadata_overrides(smollm2_path: Path) -> None:
    with lc.Model(smollm2_path, kv_overrides={"llama.context_length": 1024,
                                              "general.name": "renamed"}) as m:
        assert m.n_ctx_train == 1024
    with pytest.raises(TypeError, match="int, float, bool or str"):
        lc.Model(smollm2_path, kv_overrides={"general.name": [1, 2]})


def test_no_alloc_reads_facts_without_allocating(smollm2_path: Path) -> None:
    with lc.Model(smollm2_path, no_alloc=True, load_mode="none") as m:
        assert m.n_params > 100e6 and m.size > 80 * 2**20  # known from the metadata
        assert sum(m.buffers.values()) == 0  # but no weight memory was allocated


def test_load_modes(smollm2_path: Path) -> None:
    for kw in ({"load_mode": "none"}, {"load_mode": "mmap"}, {"use_mmap": False},
               {"load_mode": lc.LoadMode.MMAP}):
        with lc.Model(smollm2_path, **kw) as m:
            assert m.n_layer == 30
    with pytest.raises(ValueError, match="load_mode"):
        lc.Model(smollm2_path, load_mode="sometimes")
    with pytest.raises(ValueError, match="either load_mode"):
        lc.Model(smollm2_path, load_mode="mmap", use_mmap=True)


def fresh_logits(ctx: lc.Context, tokens: list[int]) -> np.ndarray:
    """Logits after the prompt alone, from an emptied context (a copy)."""
    ctx.clear()
    ctx.eval_tokens(tokens, 0)
    return ctx.logits().copy()


def test_control_vector(smollm2: lc.Model) -> None:
    tokens = smollm2.vocab.tokenize("The weather today is")
    with smollm2.context(n_ctx=128) as ctx:
        def logits() -> np.ndarray:
            return fresh_logits(ctx, tokens)

        base = logits()
        rng = np.random.default_rng(0)
        vec = rng.standard_normal((smollm2.n_layer, smollm2.n_embd)).astype(np.float32)
        ctx.set_control_vector(vec, 1, smollm2.n_layer)
        steered = logits()
        ctx.set_control_vector(np.zeros_like(vec), 1, smollm2.n_layer)
        zero = logits()
        ctx.set_control_vector(None)
        removed = logits()
        assert np.abs(steered - base).max() > 0.1
        np.testing.assert_allclose(zero, base, atol=1e-4)
        np.testing.assert_array_equal(removed, base)
        with pytest.raises(ValueError, match="shape"):
            ctx.set_control_vector(np.zeros((3, 7), dtype=np.float32))


def test_embeddings_output(smollm2: lc.Model) -> None:
    tokens = smollm2.vocab.tokenize("Embed this sentence.")
    with smollm2.context(n_ctx=128, embeddings=True, pooling="mean") as ctx:
        assert ctx.pooling == lc.PoolingType.MEAN
        ctx.eval_tokens(tokens, 0)
        e = ctx.seq_embeddings(0)
        assert e.shape == (smollm2.n_embd,) and np.isfinite(e).all() and np.abs(e).sum() > 0


def test_check_tensors_and_progress(smollm2_path: Path) -> None:
    seen: list[float] = []
    with lc.Model(smollm2_path, check_tensors=True, progress=seen.append) as m:
        assert m.n_layer == 30
    assert seen[-1] == pytest.approx(1.0)


def test_batch_of_embeddings(smollm2: lc.Model) -> None:
    """A batch can carry input embeddings instead of token ids."""
    rng = np.random.default_rng(0)
    with smollm2.context(n_ctx=128) as ctx:
        batch = lc.Batch(4, embd=smollm2.n_embd)
        batch.embeddings[:3] = rng.standard_normal((3, smollm2.n_embd)).astype(np.float32) * 0.02
        for i in range(3):
            batch.positions[i] = i
        batch.set_seq_ids(3)  # n_seq_ids is read-only: set through the batch
        assert batch.n_seq_ids[:3].tolist() == [1, 1, 1]
        with pytest.raises(ValueError):
            batch.n_seq_ids[0] = 100  # a count over n_seq_max would make C read out of bounds
        batch.output[:3] = [0, 0, 1]
        batch.n_tokens = 3
        ctx.decode(batch)
        assert np.isfinite(ctx.logits()).all()
        assert ctx.seq_pos_max(0) == 2
        batch.close()


def test_control_vector_files(smollm2: lc.Model, tmp_path: Path) -> None:
    import gguf

    rng = np.random.default_rng(1)
    vec = rng.standard_normal((smollm2.n_layer, smollm2.n_embd)).astype(np.float32)
    path = tmp_path / "cv.gguf"
    w = gguf.GGUFWriter(str(path), "controlvector")
    for layer in range(1, smollm2.n_layer + 1):
        w.add_tensor(f"direction.{layer}", vec[layer - 1])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tokens = smollm2.vocab.tokenize("The weather today is")
    with smollm2.context(n_ctx=128) as ctx:
        def logits() -> np.ndarray:
            return fresh_logits(ctx, tokens)

        ctx.set_control_vector(vec * 0.5, 1, smollm2.n_layer)
        from_array = logits()
        ctx.load_control_vectors([(path, 0.25), (path, 0.25)])  # scaled and summed
        np.testing.assert_allclose(logits(), from_array, atol=1e-5)
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"GGUF" + b"\0" * 16)
        with pytest.raises(lc.LlamaError, match="not a readable GGUF"):
            ctx.load_control_vectors([bad])
        with pytest.raises(lc.LlamaError, match="direction"):
            ctx.load_control_vectors([smollm2.path])  # a model is not a control vector
