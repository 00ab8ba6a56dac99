"""Lifetimes and misuse: nothing a user does from Python crashes the process.

Each scenario runs in a fresh interpreter, so that a crash would be seen as a
failed test (a signal exit status) instead of killing the test run.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import llama_cffi as lc

from .conftest import run_python
from .synthetic import write_lora

PRELUDE = """
import gc, threading, numpy as np
import llama_cffi as lc
m = lc.Model({path!r})
"""

SCENARIOS = {
    "model closed under a live context": """
ctx = m.context(n_ctx=64)
m.close()
try:
    ctx.eval_tokens([1, 2, 3], 0)
except lc.ClosedError as e:
    print("OK", e)
""",
    "batch larger than its capacity": """
b = lc.Batch(2)
b.add(1, 0); b.add(2, 1)
try:
    b.add(3, 2)
except OverflowError as e:
    print("OK", e)
""",
    "positions out of order": """
ctx = m.context(n_ctx=64)
ctx.eval_tokens([1, 2, 3], 0)
b = lc.Batch(2)
b.add(5, 10, (0,), True)
try:
    ctx.decode(b)
except lc.InvalidBatchError as e:
    print("OK", e)
""",
    "token id out of range in a batch": """
ctx = m.context(n_ctx=64)
try:
    ctx.eval_tokens([10**7], 0)
except lc.TokenError as e:
    print("OK", e)
""",
    "context too large for memory": """
try:
    m.context(n_ctx=2**31 - 1, n_batch=512)
except (lc.ContextError, ValueError) as e:
    print("OK", str(e).splitlines()[0])
""",
    "two threads on one context": """
# The first thread is held inside llama_decode (its abort callback, which ggml
# calls between graph nodes, waits there): the overlap is certain, not a matter
# of timing. Every call of the second thread meanwhile must be refused.
inside, release = threading.Event(), threading.Event()
def hold():
    if not release.is_set():
        inside.set()
        release.wait(60)
    return False
ctx = m.context(n_ctx=64, n_threads=1, n_threads_batch=1, abort_callback=hold)
chain = lc.SamplerChain([lc.sampling.greedy()])
toks = m.vocab.tokenize("Hello there")
worker_errors = []
def work():
    try:
        ctx.eval_tokens(toks, 0)
    except BaseException as e:
        worker_errors.append(e)
t = threading.Thread(target=work)
t.start()
assert inside.wait(60), "the decode never reached its abort callback"
refused = []
for call in (ctx.clear, lambda: ctx.eval_tokens(toks, 0), ctx.logits,
             lambda: ctx.seq_rm(0), lambda: chain.sample(ctx)):
    try:
        call()
    except lc.LlamaError as e:
        refused.append("another thread" in str(e))
    else:
        refused.append(False)
release.set()
t.join(60)
assert not t.is_alive() and worker_errors == [], worker_errors
assert refused == [True] * 5, refused
# the first thread's decode was not disturbed, and the context is free again
first = ctx.logits().copy()
ctx.clear(); ctx.eval_tokens(toks, 0)
assert np.array_equal(ctx.logits(), first)
chain.close(); ctx.close()
print("OK")
""",
    "garbage collection in any order": """
import weakref
model_ref = weakref.ref(m)
ctx = m.context(n_ctx=64)
chain = lc.SamplerChain([lc.sampling.greedy()])
v = m.vocab
del m
gc.collect()
assert model_ref() is not None  # the context keeps the model
toks = v.tokenize("hi")
ctx.eval_tokens(toks, 0)
assert chain.sample(ctx) == int(np.argmax(ctx.logits()))
del ctx, chain
gc.collect()
assert model_ref() is not None  # the vocabulary keeps it too
assert v.n_tokens == 49152 and v.tokenize("hi") == toks
del v
gc.collect()
assert model_ref() is None  # the last reference gone: the model is freed
print("OK")
""",
    "numpy views of a closed batch": """
b = lc.Batch(4)
t, pos, out = b.tokens, b.positions, b.output
b.set_tokens([11, 12, 13], 5)
b.close()
del b
gc.collect()
junk = [np.full(1000, 99, dtype=np.int32) for _ in range(1000)]  # reuse freed memory
assert t[:3].tolist() == [11, 12, 13] and pos[:3].tolist() == [5, 6, 7], (t, pos)
assert out[:3].tolist() == [0, 0, 1], out
t[:] = 7  # the view owns a reference to its memory: writing is safe
assert t.tolist() == [7, 7, 7, 7]
print("OK")
""",
    "a closed batch raises ClosedError": """
b = lc.Batch(4)
b.close()
for use in (lambda: b.tokens, lambda: b.positions, lambda: b.n_tokens,
            lambda: b.add(1, 0), lambda: b.set_tokens([1], 0), lambda: b.clear()):
    try:
        use()
    except lc.ClosedError:
        pass
    else:
        raise SystemExit("no ClosedError")
print("OK")
""",
    "logits kept after close": """
ctx = m.context(n_ctx=64)
ctx.eval_tokens(m.vocab.tokenize("Hello world"), 0)
logits = ctx.logits()
emb_ref = logits.copy()
assert logits.flags.owndata  # a copy, not a view of llama.cpp's buffer
ctx.eval_tokens(m.vocab.tokenize(" and more"), 2)  # the next decode does not change it
ctx.close()
m.close()
gc.collect()
junk = [np.full(100000, 7.0, dtype=np.float32) for _ in range(50)]
assert np.array_equal(logits, emb_ref)
print("OK")
""",
    "Python sampler keeps its candidates": """
kept = []
class Keep(lc.PythonSampler):
    def apply(self, c):
        kept.append((c, c.logits, c.ids))
ctx = m.context(n_ctx=64)
ctx.eval_tokens(m.vocab.tokenize("Hello world"), 0)
chain = lc.SamplerChain([Keep(), lc.sampling.greedy()])
tok = chain.sample(ctx)
cands, logits, ids = kept[0]
try:
    cands.logits
except lc.LlamaError as e:
    assert "not valid after" in str(e), e
else:
    raise SystemExit("candidates still usable after apply()")
ref = ctx.logits()
chain.close(); ctx.close(); m.close()
del chain, ctx
gc.collect()
junk = [np.full(100000, 7.0, dtype=np.float32) for _ in range(50)]
assert ids[tok] == tok and np.array_equal(logits, ref), "view changed after close"
print("OK")
""",
    "model closed while another thread decodes": """
import time
started, calls, log = threading.Event(), [], []
def abort():
    calls.append(time.monotonic())
    if not started.is_set():
        started.set()
        time.sleep(0.3)  # keep the decode running while the main thread closes
    return False
ctx = m.context(n_ctx=256, n_threads=1, abort_callback=abort)
toks = m.vocab.tokenize("word " * 100)
def work():
    try:
        ctx.eval_tokens(toks, 0)
        log.append("decoded")
    except Exception as e:  # the decode must not fail or be cut short
        log.append(repr(e))
t = threading.Thread(target=work)
t.start()
assert started.wait(60)
m.close()  # must wait for the decode, then close the context
closed_at = time.monotonic()
t.join(60)
assert log == ["decoded"], log
# the close ended after the decode's last check of its abort callback
assert closed_at >= calls[-1], (closed_at, calls[-1])
assert ctx.closed
try:
    ctx.logits()
except lc.ClosedError:
    print("OK")
""",
    "chain closed while another thread samples": """
import time
started, log = threading.Event(), []
class Slow(lc.PythonSampler):
    def apply(self, c):
        started.set()
        time.sleep(0.3)
ctx = m.context(n_ctx=64)
ctx.eval_tokens(m.vocab.tokenize("Hello"), 0)
chain = lc.SamplerChain([Slow(), lc.sampling.greedy()])
def work():
    log.append(("sampled", chain.sample(ctx)))
t = threading.Thread(target=work)
t.start()
assert started.wait(60)
try:
    chain.sample(ctx)
except lc.LlamaError as e:
    assert "another thread" in str(e), e
else:
    raise SystemExit("a second thread sampled a busy chain")
chain.close()  # waits for the running sample
log.append(("closed",))
t.join()
assert log[0][0] == "sampled" and log[1] == ("closed",), log
print("OK")
""",
    "close from inside its own callback": """
state = {}
def abort():
    try:
        state["ctx"].close()
    except lc.LlamaError as e:
        state["err"] = e
    return False
ctx = m.context(n_ctx=64, abort_callback=abort)
state["ctx"] = ctx
ctx.eval_tokens(m.vocab.tokenize("Hello world"), 0)
assert "inside one of its own calls" in str(state["err"]), state
assert not ctx.closed
class Closer(lc.PythonSampler):
    def apply(self, c):
        try:
            chain.close()
        except lc.LlamaError as e:
            state["chain"] = e
chain = lc.SamplerChain([Closer(), lc.sampling.greedy()])
chain.sample(ctx)
assert "inside one of its own calls" in str(state["chain"]), state
chain.close(); ctx.close()
print("OK")
""",
    "decode of a closed batch": """
ctx = m.context(n_ctx=64)
b = lc.Batch(4)
b.close()
try:
    ctx.decode(b)
except lc.ClosedError as e:
    print("OK", e)
""",
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_misuse_is_an_exception(name: str, smollm2_path: Path) -> None:
    code = PRELUDE.format(path=str(smollm2_path)) + textwrap.dedent(SCENARIOS[name])
    proc = run_python(code, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    assert proc.stdout.startswith("OK"), proc.stdout


def test_lora_hot_swap_and_lifetime(smollm2_path: Path, tmp_path: Path) -> None:
    lora_path = write_lora(tmp_path / "lora.gguf", 576, range(0, 30, 2), scale=0.5)
    with lc.Model(smollm2_path) as model:
        tokens = model.vocab.tokenize("The weather today is")

        def last_logits(ctx: lc.Context) -> "object":
            ctx.clear()
            ctx.eval_tokens(tokens, 0)
            return ctx.logits().copy()

        adapter = lc.LoraAdapter(model, lora_path)
        assert adapter.metadata["adapter.type"] == "lora"
        with model.context(n_ctx=128) as ctx:
            base = last_logits(ctx)
            ctx.set_loras({adapter: 1.0})
            with_lora = last_logits(ctx)
            ctx.set_loras({adapter: 0.0})
            zero = last_logits(ctx)
            ctx.set_loras({})
            removed = last_logits(ctx)
            ctx.set_loras({adapter: 1.0})
            adapter.close()  # removes itself from the context first
            assert ctx.loras == {}
            after_close = last_logits(ctx)
        import numpy as np

        assert np.abs(with_lora - base).max() > 1e-2
        np.testing.assert_allclose(zero, base, atol=1e-4)
        np.testing.assert_array_equal(removed, base)
        np.testing.assert_array_equal(after_close, base)
        with pytest.raises(lc.ModelLoadError):
            lc.LoraAdapter(model, tmp_path / "missing.gguf")
        bad = tmp_path / "bad-lora.gguf"
        write_lora(bad, 100, range(2))  # wrong shapes for this model
        with pytest.raises(lc.ModelLoadError, match="LoRA"):
            lc.LoraAdapter(model, bad)
