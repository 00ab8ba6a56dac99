"""Bad input raises clear Python exceptions and leaves the process working.

Loading is exercised in a fresh interpreter so that a crash inside llama.cpp
would show up as a failed test instead of taking the test run down.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import llama_cffi as lc

from .conftest import run_python

SCRIPT = """
import sys
import llama_cffi as lc
try:
    lc.Model({path!r})
except {exc} as e:
    print("RAISED", type(e).__name__)
    print("MESSAGE", str(e).replace("\\n", " | "))
else:
    print("NO EXCEPTION")
    sys.exit(3)
# the process still works: load a good model and generate
with lc.Model({good!r}) as m, m.context(n_ctx=64) as ctx, \\
        lc.SamplerChain([lc.sampling.greedy()]) as chain:
    toks = list(lc.Generation(ctx, chain, m.vocab.tokenize("Hello"), max_tokens=4))
    print("GENERATED", len(toks))
"""


def _check(path: Path | str, exc: str, good: Path) -> str:
    proc = run_python(SCRIPT.format(path=str(path), exc=exc, good=str(good)))
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "GENERATED 4" in proc.stdout, proc.stdout
    return proc.stdout


def test_missing_model_path(tmp_path: Path, smollm2_path: Path) -> None:
    out = _check(tmp_path / "nope.gguf", "FileNotFoundError", smollm2_path)
    assert "RAISED ModelNotFoundError" in out
    assert "not found" in out


def test_file_that_is_not_gguf(tmp_path: Path, smollm2_path: Path) -> None:
    bad = tmp_path / "notes.gguf"
    bad.write_text("this is a text file, not a model\n" * 10)
    out = _check(bad, "lc.ModelLoadError", smollm2_path)
    assert "RAISED ModelLoadError" in out
    assert "not a GGUF file" in out


@pytest.mark.parametrize("keep", [64, 4096, 2_000_000])
def test_truncated_gguf(tmp_path: Path, smollm2_path: Path, keep: int) -> None:
    # 64 bytes: inside the header; 4096: inside the metadata;
    # 2 MB: metadata complete, tensor data missing.
    bad = tmp_path / "truncated.gguf"
    with smollm2_path.open("rb") as src:
        bad.write_bytes(src.read(keep))
    out = _check(bad, "lc.ModelLoadError", smollm2_path)
    assert "RAISED ModelLoadError" in out
    assert "failed to load model" in out
    assert "llama.cpp said" in out  # llama.cpp's own diagnosis is in the message


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(lc.ModelLoadError, match="not a file"):
        lc.Model(tmp_path)


def test_token_out_of_range(smollm2: lc.Model) -> None:
    n = smollm2.vocab.n_tokens
    with pytest.raises(lc.TokenError, match="out of range"):
        smollm2.vocab.token_to_piece(n)
    with pytest.raises(lc.TokenError):
        smollm2.vocab.detokenize([1, -5])
    with pytest.raises(ValueError):  # TokenError is a ValueError
        smollm2.vocab.is_eog(n + 100)


def test_use_after_close(smollm2_path: Path) -> None:
    model = lc.Model(smollm2_path)
    ctx = model.context(n_ctx=64)
    ctx.close()
    with pytest.raises(lc.ClosedError):
        ctx.n_ctx
    ctx.close()  # idempotent
    model.close()
    with pytest.raises(lc.ClosedError):
        model.n_params
    with pytest.raises(lc.ClosedError):
        model.vocab.tokenize("hi")
    with pytest.raises(lc.ClosedError):
        model.context()


def test_context_keeps_model_alive(smollm2_path: Path) -> None:
    import gc

    ctx = lc.Model(smollm2_path).context(n_ctx=64)
    gc.collect()
    tokens = ctx.vocab.tokenize("Hello world")
    ctx.eval_tokens(tokens, 0)
    assert ctx.logits().shape == (ctx.vocab.n_tokens,)
    ctx.close()
    ctx.model.close()  # nobody else holds it: close it rather than leave it to the GC


def test_prompt_longer_than_context(smollm2: lc.Model) -> None:
    with smollm2.context(n_ctx=32) as ctx, lc.SamplerChain([lc.sampling.greedy()]) as chain:
        # llama.cpp may round n_ctx up; make the prompt longer than what it got
        tokens = smollm2.vocab.tokenize("word " * (ctx.n_ctx + 10))
        assert len(tokens) > ctx.n_ctx
        with pytest.raises(lc.ContextFullError, match="n_ctx"):
            list(lc.Generation(ctx, chain, tokens))
        # the context is still usable
        out = list(lc.Generation(ctx, chain, smollm2.vocab.tokenize("Hi"), max_tokens=3))
        assert len(out) == 3


def test_invalid_parameters(smollm2: lc.Model) -> None:
    with pytest.raises(ValueError, match="flash_attn"):
        smollm2.context(flash_attn="sometimes")
    with pytest.raises(ValueError, match="type_k"):
        smollm2.context(type_k="q3_weird")
    with pytest.raises(ValueError, match="n_threads"):
        smollm2.context(n_threads=0)


def test_chain_without_selector(smollm2: lc.Model) -> None:
    with smollm2.context(n_ctx=64) as ctx, lc.SamplerChain([lc.sampling.top_k(5)]) as chain:
        ctx.eval_tokens(smollm2.vocab.tokenize("Hello"), 0)
        with pytest.raises(lc.LlamaError, match="selecting sampler"):
            chain.sample(ctx)


def test_sampling_before_decode(smollm2: lc.Model) -> None:
    code = textwrap.dedent(f"""
        import llama_cffi as lc
        m = lc.Model({str(smollm2.path)!r})
        ctx = m.context(n_ctx=64)
        chain = lc.SamplerChain([lc.sampling.greedy()])
        try:
            chain.sample(ctx)
        except lc.LlamaError as e:
            print("RAISED", e)
    """)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RAISED no logits" in proc.stdout
