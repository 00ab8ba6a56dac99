"""Tokenizers of many models (vocab-only GGUFs shipped with llama.cpp) against
llama.cpp's own reference token ids (``models/ggml-vocab-*.gguf.inp/.out``,
the data of its test-tokenizer-0)."""

from __future__ import annotations

from pathlib import Path

import pytest

import llama_cffi as lc
from llama_cffi._bindings import raw as _ffi

VOCAB_DIR = Path(__file__).resolve().parent.parent / "vendor" / "llama.cpp" / "models"
SEP = "\n__ggml_vocab_test__\n"
CASES = sorted(p.name[: -len(".inp")] for p in VOCAB_DIR.glob("ggml-vocab-*.gguf.inp"))
# Byte-level BPE tokenizers: the pieces of the tokens give back the exact bytes.
ROUND_TRIP = {"ggml-vocab-llama-bpe.gguf", "ggml-vocab-qwen2.gguf", "ggml-vocab-gpt-2.gguf",
              "ggml-vocab-command-r.gguf", "ggml-vocab-starcoder.gguf"}


def load_cases(name: str) -> list[tuple[str, list[int]]]:
    texts = (VOCAB_DIR / f"{name}.inp").read_text(encoding="utf-8").split(SEP)
    if texts and texts[-1] == "":
        texts.pop()
    outs = (VOCAB_DIR / f"{name}.out").read_text(encoding="utf-8").split("\n")
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs)]


def test_reference_vocabularies_exist() -> None:
    assert len(CASES) >= 10


@pytest.mark.parametrize("name", CASES)
def test_tokenizer_matches_llama_cpp_reference(name: str) -> None:
    cases = load_cases(name)
    assert len(cases) > 10
    with lc.Model(VOCAB_DIR / name, vocab_only=True) as model:
        vocab = model.vocab
        for text, expected in cases:
            assert vocab.tokenize(text, add_special=False) == expected, repr(text)
            if name in ROUND_TRIP:
                pieces = b"".join(vocab.token_to_piece(t) for t in expected)
                assert pieces == text.encode("utf-8"), repr(text)


def test_vocab_only_model_has_no_context() -> None:
    with lc.Model(VOCAB_DIR / "ggml-vocab-llama-bpe.gguf", vocab_only=True) as model:
        assert model.vocab.n_tokens > 100000
        with pytest.raises(lc.ContextError, match="vocab_only"):
            model.context()


def test_special_tokens_and_attributes(smollm2: lc.Model) -> None:
    v = smollm2.vocab
    assert v.type == "bpe"
    assert v.eos is not None and v.is_eog(v.eos)
    assert lc.TokenAttr.CONTROL in v.attr(v.eos)
    assert lc.TokenAttr.NORMAL in v.attr(v.tokenize("hello", add_special=False)[0])
    im_start = v.tokenize("<|im_start|>", add_special=False, parse_special=True)
    assert len(im_start) == 1 and v.is_control(im_start[0])
    assert v.token_to_piece(im_start[0], special=True) == b"<|im_start|>"
    assert v.token_to_piece(im_start[0], special=False) == b""
    assert _ffi.lib.llama_vocab_n_tokens(v.ptr) == len(v)
