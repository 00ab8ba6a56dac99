"""A corpus of bad inputs across the public API, each with the exception it must raise.

Each case is a short snippet using the public API, the exception type it must
raise (or a subclass) and a regular expression its message must match. The
cases run in child processes, many per child (``tests/child_runner.py``): a
case that crashes the interpreter fails, named, and the remaining cases go on
in a new child. Categories: files, tokens, batches, states, grammars, JSON
schemas, chat templates, parameters (every params class), samplers, LoRA and
control vector files, RPC endpoints, closed objects.

The names a snippet can use (built once per child; see ``SETUP``): ``lc``,
``np``, ``Path``, ``model`` (SmolLM2, shared: do not close it), ``vocab``,
``N`` (its vocabulary size), ``HELLO`` (tokens of "Hello world"), ``SMOL``,
``GEMMA`` (paths), ``WORK`` (a scratch folder), and the helpers
``new_ctx(**kw)``, ``write(name, data)``, ``state_bytes()``, ``state_file()``,
``seq_state_file()``, ``gemma_state_file()``, ``lora_file(n_embd)``,
``cv_file(name, tensors)``, ``crafted(kind, label, value)`` (SmolLM2 with one
header field changed), ``crafted_string(key, value)``, ``closed_model()``.

tests/test_bad_input.py has the first cases of this kind (one interpreter per
case); this file extends the idea to the whole API.
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .child_runner import child_env, run_parallel

ROOT = Path(__file__).resolve().parent.parent
CASE_TIMEOUT_S = 120.0
CHILD_MEMORY_LIMIT = 8 << 30
"""A child's address space: an absurd allocation fails instead of exhausting
the machine."""


@dataclass(frozen=True)
class Case:
    """One bad input: ``code`` must raise ``exc`` (evaluated in the child, a
    subclass is fine) with a message matching ``pattern`` (``re.search``,
    DOTALL)."""

    id: str
    code: str
    exc: str
    pattern: str
    bug: str | None = None
    """Why this case fails today (a bug in code this test does not own); it
    is then an expected failure (strict: fixing the bug turns it into an
    XPASS failure, so the mark gets removed)."""


def case(id: str, code: str, exc: str, pattern: str, bug: str | None = None) -> Case:
    return Case(id, textwrap.dedent(code).strip(), exc, pattern, bug)


# -- files -------------------------------------------------------------------------------

FILES = [
    case("file-missing", "lc.Model(WORK / 'nope.gguf')", "lc.ModelNotFoundError",
         r"model file not found: .*nope\.gguf"),
    case("file-missing-is-filenotfound", "lc.Model(WORK / 'nope.gguf')", "FileNotFoundError",
         r"not found"),
    case("file-directory", "lc.Model(WORK)", "lc.ModelLoadError", r"model path is not a file"),
    case("file-empty", "lc.Model(write('empty.gguf', b''))", "lc.ModelLoadError",
         r"is not a GGUF file \(it starts with b''"),
    case("file-text", "lc.Model(write('notes.gguf', 'just some text\\n' * 10))",
         "lc.ModelLoadError", r"is not a GGUF file \(it starts with b'just'"),
    case("file-magic-only", "lc.Model(write('magic.gguf', b'GGUF'))", "lc.ModelLoadError",
         r"failed to load model.*llama\.cpp said"),
    case("file-truncated-header", "lc.Model(write('t.gguf', Path(SMOL).read_bytes()[:20]))",
         "lc.ModelLoadError", r"failed to load model.*llama\.cpp said"),
    case("file-truncated-tensor-infos",
         "lc.Model(write('t.gguf', Path(SMOL).read_bytes()[:1_775_000]))",
         "lc.ModelLoadError", r"failed to load model.*llama\.cpp said"),
    case("file-truncated-data",
         "p = WORK / 't.gguf'; p.write_bytes(Path(SMOL).read_bytes()[:60_000_000]); lc.Model(p)",
         "lc.ModelLoadError", r"failed to load model.*(file bounds|truncated|corrupted)"),
    case("file-wrong-magic-case", "lc.Model(write('m.gguf', b'gguf' + bytes(100)))",
         "lc.ModelLoadError", r"is not a GGUF file"),
    case("file-version-1", "lc.Model(write('v1.gguf', b'GGUF' + (1).to_bytes(4, 'little') "
                           "+ bytes(16)))", "lc.ModelLoadError",
         r"GGUF version 1 is not supported"),
    case("file-big-endian", "lc.Model(write('be.gguf', b'GGUF' + (3).to_bytes(4, 'big') "
                            "+ bytes(16)))", "lc.ModelLoadError", r"big-endian"),
    case("file-huge-kv-count", "lc.Model(crafted('n_kv', 'header', 2**62))",
         "lc.ModelLoadError", r"failed to load model.*llama\.cpp said"),
    case("file-block-count-0", "lc.Model(crafted('value', 'llama.block_count', 0))",
         "lc.ModelLoadError", r"llama\.block_count is 0"),
    case("file-path-type", "lc.Model(42)", "TypeError", r"(str|path|PathLike|int)"),
    case("file-nul-in-path", "lc.Model(str(WORK / 'a\\0b.gguf'))", "lc.ModelLoadError",
         r"(null|NUL|not found)"),
    case("file-unknown-registry-name", "lc.Model('no-such-model-xyz')",
         "lc.ModelNotFoundError", r"model file not found: no-such-model-xyz"),
    case("file-progress-raises", "lc.Model(SMOL, progress=lambda p: 1 / 0)",
         "lc.LoadCancelledError", r"progress callback raised ZeroDivisionError"),
    case("file-progress-false", "lc.Model(SMOL, progress=lambda p: False)",
         "lc.LoadCancelledError", r"cancelled by the progress callback"),
    case("file-quantize-missing", "lc.quantize(WORK / 'nope.gguf', WORK / 'out.gguf')",
         "FileNotFoundError", r"model file not found"),
    case("file-quantize-text", "lc.quantize(write('q.gguf', 'text'), WORK / 'out.gguf')",
         "lc.LlamaError", r"quantizing .* failed"),
    case("file-quantize-ftype", "lc.quantize(SMOL, WORK / 'out.gguf', ftype='q9_9')",
         "ValueError", r"unknown ftype 'q9_9'"),
    case("file-quantize-ftype-int", "lc.quantize(SMOL, WORK / 'out.gguf', ftype=7)",
         "TypeError", r"ftype must be a str"),
    case("file-quantize-crafted",
         "lc.quantize(crafted('value', 'llama.block_count', 0), WORK / 'out.gguf')",
         "lc.ModelLoadError", r"block_count"),
]

# -- tokens --------------------------------------------------------------------------------

TOKENS = [
    case("token-piece-n", "vocab.token_to_piece(N)", "lc.TokenError", r"out of range"),
    case("token-piece-negative", "vocab.token_to_piece(-1)", "lc.TokenError", r"out of range"),
    case("token-piece-huge", "vocab.token_to_piece(2**40)", "lc.TokenError", r"out of range"),
    case("token-piece-str", "vocab.token_to_piece('a')", "TypeError", r"token"),
    case("token-piece-float", "vocab.token_to_piece(1.5)", "TypeError", r"token"),
    case("token-piece-none", "vocab.token_to_piece(None)", "TypeError", r"token"),
    case("token-detokenize-out-of-range", "vocab.detokenize([1, N])", "lc.TokenError",
         r"out of range"),
    case("token-detokenize-negative", "vocab.detokenize([1, -5])", "lc.TokenError",
         r"out of range"),
    case("token-detokenize-str", "vocab.detokenize(['a'])", "TypeError", r"token"),
    case("token-detokenize-none", "vocab.detokenize(None)", "TypeError", r""),
    case("token-tokenize-int", "vocab.tokenize(123)", "TypeError", r"(str|bytes|text)"),
    case("token-tokenize-none", "vocab.tokenize(None)", "TypeError", r"(str|bytes|text)"),
    case("token-tokenize-surrogate", "vocab.tokenize('a\\udcffb')", "UnicodeEncodeError",
         r"surrogates not allowed"),
    case("token-attr-negative", "vocab.attr(-5)", "lc.TokenError", r"out of range"),
    case("token-is-eog-out-of-range", "vocab.is_eog(N + 100)", "lc.TokenError", r"out of range"),
    case("token-eval-out-of-range", "new_ctx().eval_tokens([N], 0)", "lc.TokenError",
         r"out of range"),
    case("token-eval-negative", "new_ctx().eval_tokens([1, -1], 0)", "lc.TokenError",
         r"out of range"),
    case("token-eval-float", "new_ctx().eval_tokens([0.5], 0)", "TypeError", r"token"),
    case("token-eval-seq-id", "new_ctx().eval_tokens(HELLO, 0, seq_id=99)", "ValueError",
         r"seq_id 99 is outside 0\.\.0"),
    case("token-eval-too-long", "c = new_ctx(); c.eval_tokens([1] * (c.n_ctx + 1), 0)",
         "lc.ContextFullError", r"do not fit the context"),
    case("token-eval-negative-position", "new_ctx().eval_tokens(HELLO, -5)",
         "lc.InvalidBatchError", r"(position|pos)"),
    case("token-logit-bias-out-of-range", "lc.sampling.logit_bias(model, {N: 1.0})",
         "lc.TokenError", r"out of range"),
    case("token-no-vocab-tokenize",
         "m = lc.Model(crafted_string('tokenizer.ggml.model', b'none'))\n"
         "m.vocab.tokenize('hello')", "lc.TokenError", r"(no vocabulary|none)"),
    case("token-no-vocab-piece",
         "m = lc.Model(crafted_string('tokenizer.ggml.model', b'none'))\n"
         "m.vocab.token_to_piece(1)", "lc.TokenError", r"cannot turn a token into text.*none"),
    case("token-no-vocab-attr",
         "m = lc.Model(crafted_string('tokenizer.ggml.model', b'no_vocab'))\n"
         "m.vocab.attr(1)", "lc.TokenError", r"no vocabulary"),
    case("token-no-vocab-detokenize",
         "m = lc.Model(crafted_string('tokenizer.ggml.model', b'none'))\n"
         "m.vocab.detokenize([1, 2])", "lc.TokenError", r"cannot detokenize"),
    case("token-no-vocab-grammar",
         "m = lc.Model(crafted_string('tokenizer.ggml.model', b'none'))\n"
         "lc.Grammar('root ::= \"a\"').sampler(m)", "lc.TokenError", r"compile a grammar"),
    case("token-no-vocab-dry",
         "m = lc.Model(crafted_string('tokenizer.ggml.model', b'none'))\n"
         "lc.sampling.dry(m, 0.8)", "lc.TokenError", r"DRY"),
    case("token-piece-bool", "vocab.token_to_piece(True)", "TypeError",
         r"token must be an integer token id, got True"),
    case("token-is-eog-str", "vocab.is_eog('1')", "TypeError", r"token must be an integer"),
]

# -- batches -------------------------------------------------------------------------------

BATCHES = [
    case("batch-capacity-0", "lc.Batch(0)", "ValueError", r"capacity must be at least 1"),
    case("batch-capacity-negative", "lc.Batch(-3)", "ValueError", r"capacity must be at least"),
    case("batch-n-seq-max-0", "lc.Batch(4, n_seq_max=0)", "ValueError",
         r"n_seq_max must be at least 1"),
    case("batch-embd-negative", "lc.Batch(4, embd=-1)", "ValueError", r"embd must be >= 0"),
    case("batch-capacity-str", "lc.Batch('4')", "TypeError",
         r"batch capacity must be an integer, got '4'"),
    case("batch-capacity-huge", "lc.Batch(2**40)", "ValueError",
         r"batch capacity 1099511627776 does not fit a 32-bit integer"),
    case("batch-add-token-str", "lc.Batch(2).add('a', 0)", "TypeError",
         r"token must be an integer, got 'a'"),
    case("batch-add-token-float", "lc.Batch(2).add(1.5, 0)", "TypeError",
         r"token must be an integer, got 1\.5"),
    case("batch-add-token-huge", "lc.Batch(2).add(2**40, 0)", "ValueError",
         r"token 1099511627776 does not fit a 32-bit integer"),
    case("batch-add-position-huge", "lc.Batch(2).add(1, -2**40)", "ValueError",
         r"position -1099511627776 does not fit"),
    case("batch-add-seq-id-str", "lc.Batch(2).add(1, 0, seq_ids=('x',))", "TypeError",
         r"sequence id must be an integer"),
    case("batch-set-tokens-float", "lc.Batch(4).set_tokens([1.5, 2.5], 0)", "TypeError",
         r"tokens must be integers, got an array of float64"),
    case("batch-set-tokens-huge", "lc.Batch(4).set_tokens([2**40], 0)", "ValueError",
         r"tokens must fit 32-bit integers"),
    case("batch-set-tokens-positions", "lc.Batch(4).set_tokens([1, 2], 2**31 - 1)",
         "ValueError", r"positions 2147483647\.\.2147483648 do not fit"),
    case("batch-overflow-add", "b = lc.Batch(2)\nfor i in range(3): b.add(1, i)",
         "OverflowError", r"batch is full \(2 tokens\)"),
    case("batch-no-seq-ids", "lc.Batch(2).add(1, 0, seq_ids=())", "ValueError",
         r"needs 1\.\.1 sequence ids, got 0"),
    case("batch-too-many-seq-ids", "lc.Batch(2).add(1, 0, seq_ids=(0, 1))", "ValueError",
         r"needs 1\.\.1 sequence ids, got 2"),
    case("batch-n-tokens-over", "lc.Batch(4).n_tokens = 5", "OverflowError",
         r"5 entries do not fit a batch of 4"),
    case("batch-n-tokens-negative", "lc.Batch(4).n_tokens = -1", "OverflowError",
         r"-1 entries do not fit"),
    case("batch-set-tokens-over", "lc.Batch(4).set_tokens([1] * 10, 0)", "OverflowError",
         r"10 tokens do not fit a batch of 4"),
    case("batch-set-seq-ids-over", "lc.Batch(4).set_seq_ids(10)", "OverflowError",
         r"10 entries do not fit"),
    case("batch-closed-add", "b = lc.Batch(4); b.close(); b.add(1, 0)", "lc.ClosedError",
         r"Batch is closed"),
    case("batch-closed-decode", "b = lc.Batch(4); b.add(1, 0, output=True); b.close()\n"
         "new_ctx().decode(b)", "lc.ClosedError", r"Batch is closed"),
    case("batch-empty-decode", "new_ctx().decode(lc.Batch(4))", "lc.InvalidBatchError",
         r"cannot decode an empty batch"),
    case("batch-empty-encode", "new_ctx().encode(lc.Batch(4))", "lc.InvalidBatchError",
         r"cannot encode an empty batch"),
    case("batch-bad-token", "b = lc.Batch(4); b.add(1, 0); b.tokens[0] = N + 7\n"
         "new_ctx().decode(b)", "lc.InvalidBatchError", r"(token|invalid)"),
    case("batch-negative-token", "b = lc.Batch(4); b.add(1, 0); b.tokens[0] = -3\n"
         "new_ctx().decode(b)", "lc.InvalidBatchError", r"(token|invalid)"),
    case("batch-bad-seq-id", "b = lc.Batch(4); b.add(1, 0, seq_ids=(5,), output=True)\n"
         "new_ctx().decode(b)", "lc.InvalidBatchError", r"(seq_id|sequence)"),
    case("batch-negative-seq-id", "b = lc.Batch(4); b.add(1, 0, seq_ids=(-1,), output=True)\n"
         "new_ctx().decode(b)", "lc.InvalidBatchError", r"(seq_id|sequence)"),
    case("batch-positions-gap", "c = new_ctx(); c.eval_tokens(HELLO, 0)\n"
         "b = lc.Batch(4); b.add(1, 50, output=True); c.decode(b)",
         "lc.InvalidBatchError", r"(position|pos)"),
    case("batch-over-n-batch", "c = new_ctx(n_batch=32, n_ubatch=32)\n"
         "b = lc.Batch(64); b.set_tokens([1] * 40, 0); c.decode(b)", "lc.InvalidBatchError",
         r"a batch of 40 tokens is larger than the context's n_batch \(32\)"),
    case("batch-encode-over-n-ubatch", "c = new_ctx(n_batch=64, n_ubatch=32)\n"
         "b = lc.Batch(64); b.set_tokens([1] * 40, 0); c.encode(b)", "lc.InvalidBatchError",
         r"cannot encode 40 tokens at once.*n_ubatch >= 40 \(the context has 32\)"),
    case("batch-non-causal-over-n-ubatch",
         "c = new_ctx(n_batch=64, n_ubatch=32, attention='non_causal')\n"
         "b = lc.Batch(64); b.set_tokens([1] * 40, 0); c.decode(b)", "lc.InvalidBatchError",
         r"cannot decode 40 tokens at once"),
    case("batch-over-context", "c = new_ctx(n_ctx=64, n_batch=64); b = lc.Batch(64)\n"
         "for step in range(100):\n    b.set_tokens([1] * 64, 64 * step); c.decode(b)",
         "lc.DecodeError", r"(slot|KV|memory|n_ctx|position)"),
    case("batch-embeddings-wrong-size", "b = lc.Batch(2, embd=7); b.n_tokens = 1\n"
         "new_ctx().decode(b)", "lc.InvalidBatchError", r"embeddings of size 7; this model takes"),
    case("batch-embd-add", "lc.Batch(2, embd=8).add(1, 0)", "TypeError",
         r"carries embeddings, not tokens"),
    case("batch-embd-set-tokens", "lc.Batch(2, embd=8).set_tokens([1], 0)", "TypeError",
         r"carries embeddings, not tokens"),
    case("batch-decode-not-a-batch", "new_ctx().decode([1, 2, 3])", "TypeError", r"[Bb]atch"),
]

# -- states --------------------------------------------------------------------------------

STATES = [
    case("state-garbage", "new_ctx().state_set(b'garbage' * 10)", "lc.LlamaError",
         r"could not restore the state"),
    case("state-empty", "new_ctx().state_set(b'')", "lc.LlamaError",
         r"could not restore the state"),
    case("state-truncated", "s = state_bytes(); new_ctx().state_set(s[:len(s) // 2])",
         "lc.LlamaError", r"could not restore the state"),
    case("state-wrong-type", "new_ctx().state_set(123)", "TypeError", r"(bytes|buffer|int)"),
    case("state-str", "new_ctx().state_set('state')", "TypeError",
         r"state data must be bytes, got str"),
    case("state-seq-wrong-type", "new_ctx().seq_state_set(5)", "TypeError",
         r"state data must be bytes, got int"),
    case("state-bigger-context", "small = new_ctx(n_ctx=64); big = new_ctx(n_ctx=2 * small.n_ctx)\n"
         "big.eval_tokens([1] * (small.n_ctx + 8), 0); small.state_set(big.state_get())",
         "lc.LlamaError", r"could not restore the state"),
    case("state-file-missing", "new_ctx().load_state(WORK / 'nope.state')",
         "FileNotFoundError", r"state file not found"),
    case("state-file-directory", "new_ctx().load_state(WORK)", "FileNotFoundError",
         r"state file not found"),
    case("state-file-text", "new_ctx().load_state(write('s.state', 'not a state'))",
         "lc.LlamaError", r"could not load the state"),
    case("state-file-empty", "new_ctx().load_state(write('e.state', b''))", "lc.LlamaError",
         r"could not load the state"),
    case("state-file-truncated",
         "d = state_file().read_bytes(); new_ctx().load_state(write('t.state', d[:len(d) // 3]))",
         "lc.LlamaError", r"could not load the state"),
    case("state-file-wrong-model", "new_ctx().load_state(gemma_state_file())", "lc.LlamaError",
         r"could not load the state"),
    case("state-file-too-many-tokens", "new_ctx().load_state(state_file(), max_tokens=1)",
         "lc.LlamaError", r"could not load the state"),
    case("state-save-bad-dir", "new_ctx().save_state(WORK / 'no' / 'dir' / 's.state')",
         "lc.LlamaError", r"could not save the state"),
    case("state-seq-garbage", "new_ctx().seq_state_set(b'\\x00' * 64)", "lc.LlamaError",
         r"(could not|restore|sequence)"),
    case("state-seq-bad-id", "new_ctx().seq_state_set(state_bytes(), seq_id=7)", "ValueError",
         r"seq_id 7 is outside"),
    case("state-seq-get-bad-id", "new_ctx().seq_state_get(-1)", "ValueError",
         r"seq_id -1 is outside"),
    case("state-seq-file-missing", "new_ctx().load_seq_state(WORK / 'nope.seq')",
         "FileNotFoundError", r"state file not found"),
    case("state-seq-file-garbage", "new_ctx().load_seq_state(write('g.seq', b'\\x01' * 100))",
         "lc.LlamaError", r"(could not|load|sequence)"),
    case("state-seq-file-wrong-model",
         "new_ctx().load_seq_state(gemma_state_file())", "lc.LlamaError",
         r"(could not|load|sequence)"),
    case("state-closed-context", "c = new_ctx(); c.close(); c.state_get()", "lc.ClosedError",
         r"Context is closed"),
]

# -- grammars --------------------------------------------------------------------------------

GRAMMARS = [
    case("grammar-empty", "lc.Grammar('')", "lc.GrammarError", r"root"),
    case("grammar-unknown-rule", "lc.Grammar('root ::= foo')", "lc.GrammarError", r"foo"),
    case("grammar-unterminated-string", "lc.Grammar('root ::= \"abc')", "lc.GrammarError",
         r"(unterminated|end of input|string)"),
    case("grammar-unterminated-class", "lc.Grammar('root ::= [a-')", "lc.GrammarError",
         r"(unterminated|end of input|class)"),
    case("grammar-unbalanced-paren", "lc.Grammar('root ::= (\"a\"')", "lc.GrammarError",
         r"(\)|paren|expect)"),
    case("grammar-bad-assign", "lc.Grammar('root := \"a\"')", "lc.GrammarError", r"::="),
    case("grammar-missing-root", "lc.Grammar('start ::= \"a\"')", "lc.GrammarError", r"root"),
    case("grammar-other-root", "lc.Grammar('root ::= \"a\"', root='start')", "lc.GrammarError",
         r"start"),
    case("grammar-bad-repetition", "lc.Grammar('root ::= \"a\"{3,1}').sampler(model)",
         "lc.GrammarError", r"(repetition|\{|min|max)"),
    case("grammar-bad-escape", "lc.Grammar('root ::= \"\\\\q\"')", "lc.GrammarError",
         r"escape"),
    case("grammar-not-text", "lc.Grammar(123)", "TypeError", r"(str|text|grammar)"),
    case("grammar-root-not-text", "lc.Grammar('root ::= \"a\"', root=1)", "TypeError",
         r"root must be a str"),
    case("grammar-bad-repetition-in-group",
         "lc.Grammar('root ::= (\"a\" [b-c]{5,2}) \"d\"')", "lc.GrammarError",
         r"repetition \{5,2\}: the maximum is smaller than the minimum"),
    case("grammar-file-missing", "lc.Grammar.from_file(WORK / 'nope.gbnf')",
         "FileNotFoundError", r"nope\.gbnf"),
    case("grammar-has-line-column", "try:\n    lc.Grammar('root ::= \"a\"\\nx ::= [')\n"
         "except lc.GrammarError as e:\n    raise lc.GrammarError(f'{e.line}:{e.column}')",
         "lc.GrammarError", r"^2:"),
    case("grammar-lazy-no-trigger", "lc.Grammar('root ::= \"a\"').sampler(model, lazy=True)",
         "ValueError", r"lazy grammar needs trigger"),
    case("grammar-lazy-bad-pattern",
         "lc.Grammar('root ::= \"a\"').sampler(model, lazy=True, trigger_patterns=['('])",
         "lc.GrammarError", r"trigger pattern '\(' is not a regex"),
    case("grammar-lazy-bad-token",
         "lc.Grammar('root ::= \"a\"').sampler(model, lazy=True, trigger_tokens=[N])",
         "lc.TokenError", r"out of range"),
    case("grammar-left-recursion", "lc.Grammar('root ::= root \"a\" | \"b\"').sampler(model)",
         "lc.GrammarError", r"(left recursion|left-recursi)"),
    case("grammar-sampler-closed-model", "lc.Grammar('root ::= \"a\"').sampler(closed_model())",
         "lc.ClosedError", r"closed"),
]

# -- JSON schemas ----------------------------------------------------------------------------

SCHEMAS = [
    case("schema-unknown-type", "lc.Grammar.from_json_schema({'type': 'nosuchtype'})",
         "lc.SchemaError", r"nosuchtype"),
    case("schema-missing-ref", "lc.Grammar.from_json_schema({'$ref': '#/$defs/missing'})",
         "lc.SchemaError", r"missing"),
    case("schema-remote-ref",
         "lc.Grammar.from_json_schema({'$ref': 'https://example.com/s.json'})",
         "lc.SchemaError", r"(remote|fetch|https)"),
    case("schema-bad-pattern",
         "lc.Grammar.from_json_schema({'type': 'string', 'pattern': '('})",
         "lc.SchemaError", r"pattern"),
    case("schema-not-json", "lc.Grammar.from_json_schema('{not json')", "lc.SchemaError",
         r"(JSON|json)"),
    case("schema-number", "lc.Grammar.from_json_schema(42)", "lc.SchemaError",
         r"(schema|42)"),
    case("schema-property-not-schema",
         "lc.Grammar.from_json_schema({'type': 'object', 'properties': {'a': 5}})",
         "lc.SchemaError", r"(a|5|schema)"),
    case("schema-min-gt-max",
         "lc.Grammar.from_json_schema({'type': 'integer', 'minimum': 5, 'maximum': 1})",
         "lc.SchemaError", r"(minimum|maximum)"),
    case("schema-min-items-gt-max",
         "lc.Grammar.from_json_schema({'type': 'array', 'minItems': 3, 'maxItems': 1})",
         "lc.SchemaError", r"(minItems|maxItems)"),
    case("schema-negative-min-length",
         "lc.Grammar.from_json_schema({'type': 'string', 'minLength': -1})",
         "lc.SchemaError", r"minLength"),
    case("schema-min-length-gt-max",
         "lc.Grammar.from_json_schema({'type': 'string', 'minLength': 4, 'maxLength': 2})",
         "lc.SchemaError", r"minLength \(4\) is larger than maxLength \(2\)"),
    case("schema-max-items-fraction",
         "lc.Grammar.from_json_schema({'type': 'array', 'maxItems': 1.5})",
         "lc.SchemaError", r"maxItems must be a non-negative integer, got 1\.5"),
    case("schema-min-items-str",
         "lc.Grammar.from_json_schema({'type': 'array', 'minItems': 'two'})",
         "lc.SchemaError", r"minItems must be a non-negative integer"),
    case("schema-recursive-ref",
         "lc.Grammar.from_json_schema({'$ref': '#/$defs/a', '$defs': {'a': {'$ref': "
         "'#/$defs/a'}}}).sampler(model)", "lc.GrammarError", r"left recursion"),
    case("schema-whitespace", "lc.Grammar.from_json_schema({'type': 'string'}, whitespace='lots')",
         "ValueError", r"whitespace"),
    case("schema-allow-fetch", "lc.Grammar.from_json_schema({'type': 'string'}, allow_fetch=True)",
         "ValueError", r"allow_fetch=True is not supported"),
    case("schema-huge-repetition",
         "lc.Grammar.from_json_schema({'type': 'string', 'pattern': '^a{99999999}$'})"
         ".sampler(model)", "lc.GrammarError", r"llama\.cpp rejected the grammar"),
    case("schema-type-list-bad",
         "lc.Grammar.from_json_schema({'type': ['string', 'nosuchtype']})",
         "lc.SchemaError", r"nosuchtype"),
    case("schema-sampling-params", "lc.SamplingParams(json_schema='{oops')", "ValueError",
         r"json_schema is not valid JSON"),
]

# -- chat templates ------------------------------------------------------------------------

MSGS = "[{'role': 'user', 'content': 'hi'}]"
TEMPLATES = [
    case("template-syntax", "lc.ChatTemplate('{% for %}')", "lc.TemplateError",
         r"does not parse"),
    case("template-unclosed", "lc.ChatTemplate('{{ messages[0].content ')", "lc.TemplateError",
         r"does not parse"),
    case("template-unclosed-block", "lc.ChatTemplate('{% if true %}x')", "lc.TemplateError",
         r"does not parse"),
    case("template-raise-exception",
         f"lc.ChatTemplate(\"{{{{ raise_exception('no system role') }}}}\").render({MSGS})",
         "lc.TemplateError", r"refused the messages: no system role"),
    case("template-unsafe", f"lc.ChatTemplate(\"{{{{ ''.__class__.__mro__ }}}}\").render({MSGS})",
         "lc.TemplateError", r"unsafe"),
    case("template-include", f"lc.ChatTemplate(\"{{% include 'x' %}}\").render({MSGS})",
         "lc.TemplateError", r"failed"),
    case("template-division", f"lc.ChatTemplate('{{{{ 1 / 0 }}}}').render({MSGS})",
         "lc.TemplateError", r"ZeroDivisionError"),
    case("template-unknown-builtin",
         f"from llama_cffi.api.chat_template import render_builtin\n"
         f"render_builtin('no-such-template', {MSGS})", "lc.TemplateError",
         r"does not know the chat template 'no-such-template'"),
    case("template-none", "lc.ChatTemplate(None)", "TypeError", r""),
    case("template-message-without-role",
         "from llama_cffi.api.chat_template import render_builtin\n"
         "render_builtin('chatml', [{'content': 'hi'}])", "lc.TemplateError", r"role"),
]

# -- parameters ------------------------------------------------------------------------------

PARAMS = [
    # ContextParams
    case("ctx-n-ctx-negative", "lc.ContextParams(n_ctx=-1)", "ValueError",
         r"n_ctx must be >= 0, got -1"),
    case("ctx-n-ctx-str", "lc.ContextParams(n_ctx='big')", "TypeError",
         r"n_ctx must be an integer, got 'big'"),
    case("ctx-n-ctx-too-big", "lc.ContextParams(n_ctx=2**40)", "ValueError",
         r"n_ctx must be <= 4294967295"),
    case("ctx-n-batch-0", "lc.ContextParams(n_batch=0)", "ValueError", r"n_batch must be >= 1"),
    case("ctx-n-batch-too-big", "lc.ContextParams(n_batch=2**33)", "ValueError",
         r"n_batch must be <= 4294967295"),
    case("ctx-n-ubatch-float", "lc.ContextParams(n_ubatch=1.5)", "TypeError",
         r"n_ubatch must be an integer"),
    case("ctx-n-seq-max-0", "lc.ContextParams(n_seq_max=0)", "ValueError",
         r"n_seq_max must be >= 1"),
    case("ctx-n-seq-max-huge", "model.context(n_seq_max=100000)", "ValueError",
         r"n_seq_max is at most 256"),
    case("ctx-n-ctx-nan", "lc.ContextParams(n_ctx=float('nan'))", "TypeError",
         r"n_ctx must be an integer, got nan"),
    case("ctx-n-batch-inf", "lc.ContextParams(n_batch=float('inf'))", "TypeError",
         r"n_batch must be an integer, got inf"),
    case("ctx-n-threads-negative", "lc.ContextParams(n_threads=-2)", "ValueError",
         r"n_threads must be >= 1"),
    case("ctx-n-threads-huge", "lc.ContextParams(n_threads=2**31)", "ValueError",
         r"n_threads must be <= 2147483647"),
    case("ctx-flash-attn-int", "lc.ContextParams(flash_attn=7)", "ValueError", r"flash_attn"),
    case("ctx-type-k-unknown", "lc.ContextParams(type_k=999)", "ValueError", r"type_k"),
    case("ctx-type-v-no-fa", "lc.ContextParams(type_v='q8_0', flash_attn='off')", "ValueError",
         r"quantized V cache \(type_v=q8_0\) needs Flash Attention"),
    case("ctx-rope-scaling", "lc.ContextParams(rope_scaling='sideways')", "ValueError",
         r"rope_scaling"),
    case("ctx-rope-freq-nan", "lc.ContextParams(rope_freq_base=float('nan'))", "ValueError",
         r"rope_freq_base must not be NaN"),
    case("ctx-rope-freq-str", "lc.ContextParams(rope_freq_base='x')", "TypeError",
         r"rope_freq_base must be a number"),
    case("ctx-yarn-orig-negative", "lc.ContextParams(yarn_orig_ctx=-1)", "ValueError",
         r"yarn_orig_ctx must be >= 0"),
    case("ctx-pooling", "lc.ContextParams(pooling='median')", "ValueError", r"pooling"),
    case("ctx-attention", "lc.ContextParams(attention='sideways')", "ValueError",
         r"attention must be 'causal' or 'non_causal'"),
    case("ctx-embeddings-str", "lc.ContextParams(embeddings='yes')", "TypeError",
         r"embeddings must be True, False or None"),
    case("ctx-unknown-name", "lc.ContextParams.from_kwargs(n_ctxx=5)", "TypeError",
         r"ContextParams has no parameter 'n_ctxx'"),
    case("ctx-context-unknown-kwarg", "model.context(bogus=1)", "TypeError",
         r"ContextParams has no parameter 'bogus'"),
    case("ctx-params-wrong-class", "model.context(lc.ModelParams())", "TypeError",
         r"expected ContextParams, got ModelParams"),
    case("ctx-huge-n-ctx", "model.context(n_ctx=1_000_000_000, n_batch=32)", "lc.ContextError",
         r"(failed|alloc|memory)"),
    case("ctx-closed-model", "closed_model().context()", "lc.ClosedError", r"closed"),
    case("ctx-not-a-model", "lc.Context('model.gguf')", "TypeError",
         r"model must be a llama_cffi\.Model, not str"),
    # ModelParams
    case("model-n-gpu-layers-float", "lc.ModelParams(n_gpu_layers=1.5)", "TypeError",
         r"n_gpu_layers must be an integer"),
    case("model-split-mode", "lc.ModelParams(split_mode='diagonal')", "ValueError",
         r"split_mode"),
    case("model-main-gpu-negative", "lc.ModelParams(main_gpu=-1)", "ValueError",
         r"main_gpu must be >= 0"),
    case("model-tensor-split-negative", "lc.ModelParams(tensor_split=[-1])", "ValueError",
         r"tensor_split proportions must be >= 0"),
    case("model-tensor-split-str", "lc.ModelParams(tensor_split=['a'])", "TypeError",
         r"tensor_split must be a number"),
    case("model-tensor-split-too-long", "lc.Model(SMOL, tensor_split=[1.0] * 5000)",
         "ValueError", r"tensor_split has 5000 entries; at most"),
    case("model-override-bad-regex", "lc.ModelParams(tensor_overrides={'(': 'CPU'})",
         "ValueError", r"pattern '\(' is not a regex"),
    case("model-override-bad-buffer", "lc.Model(SMOL, tensor_overrides={'blk': 'NOPE'})",
         "ValueError", r"NOPE"),
    case("model-n-cpu-moe-negative", "lc.ModelParams(n_cpu_moe=-1)", "ValueError",
         r"n_cpu_moe must be >= 0"),
    case("model-kv-overrides-not-pairs", "lc.ModelParams(kv_overrides=[('a',)])", "TypeError",
         r"kv_overrides must be a mapping or a sequence of pairs"),
    case("model-kv-overrides-list-value", "lc.ModelParams(kv_overrides={'k': [1]})",
         "TypeError", r"kv_overrides maps metadata keys to int, float, bool or str"),
    case("model-kv-overrides-long-key", "lc.ModelParams(kv_overrides={'k' * 200: 1})",
         "ValueError", r"longer than 127 bytes"),
    case("model-kv-override-block-count-0",
         "lc.Model(SMOL, kv_overrides={'llama.block_count': 0})", "ValueError",
         r"llama\.block_count"),
    case("model-kv-override-experts-on-dense",
         "lc.Model(SMOL, kv_overrides={'llama.expert_used_count': 2})", "lc.ModelLoadError",
         r"llama\.expert_used_count \(2\) must be in 1\.\.expert_count \(0\)"),
    case("model-kv-override-experts-vocab-only",
         "lc.Model(SMOL, vocab_only=True, kv_overrides={'llama.expert_count': 2})",
         "lc.ModelLoadError", r"expert_used_count"),
    case("model-kv-override-eps-negative",
         "lc.ModelParams(kv_overrides={'llama.attention.layer_norm_rms_epsilon': -1.0})",
         "ValueError", r"layer_norm_rms_epsilon"),
    case("model-kv-override-block-count-huge",
         "lc.ModelParams(kv_overrides={'llama.block_count': 600})", "ValueError",
         r"kv_overrides: llama\.block_count is 600; llama\.cpp supports 1 to 512 layers"),
    case("model-n-gpu-layers-huge", "lc.ModelParams(n_gpu_layers=2**40)", "ValueError",
         r"n_gpu_layers must be <= 2147483647"),
    case("model-vocab-only-str", "lc.ModelParams(vocab_only='yes')", "TypeError",
         r"vocab_only must be True or False"),
    case("model-mmap-and-load-mode", "lc.ModelParams.from_kwargs(use_mmap=False, "
         "load_mode='mmap')", "ValueError", r"either load_mode or use_mmap/use_mlock"),
    case("model-load-mode", "lc.ModelParams(load_mode='turbo')", "ValueError", r"load_mode"),
    case("model-extra-bufts-str", "lc.ModelParams(use_extra_bufts='x')", "TypeError",
         r"use_extra_bufts must be True, False or None"),
    case("model-unknown-device", "lc.Model(SMOL, devices=['NoSuchDevice'])", "lc.LlamaError",
         r"no device named 'NoSuchDevice'; available devices:"),
    case("model-unknown-kwarg", "lc.Model(SMOL, n_ctx=5)", "TypeError",
         r"ModelParams has no parameter 'n_ctx'"),
    # SamplingParams
    case("sampling-temperature-str", "lc.SamplingParams(temperature='hot')", "TypeError",
         r"temperature must be a number, got 'hot'"),
    case("sampling-temperature-nan", "lc.SamplingParams(temperature=float('nan'))",
         "ValueError", r"temperature must not be NaN"),
    case("sampling-top-p-range", "lc.SamplingParams(top_p=1.5)", "ValueError",
         r"top_p must be in \[0\.0, 1\.0\], got 1\.5"),
    case("sampling-min-p-negative", "lc.SamplingParams(min_p=-0.1)", "ValueError", r"min_p"),
    case("sampling-top-k-float", "lc.SamplingParams(top_k=2.5)", "TypeError",
         r"top_k must be an integer"),
    case("sampling-top-k-huge", "lc.SamplingParams(top_k=2**40)", "ValueError",
         r"top_k must be <= 2147483647"),
    case("sampling-max-tokens", "lc.SamplingParams(max_tokens=-2)", "ValueError",
         r"max_tokens must be >= -1"),
    case("sampling-stop-int", "lc.SamplingParams(stop=5)", "TypeError",
         r"stop must be a string or a sequence of strings"),
    case("sampling-stop-mixed", "lc.SamplingParams(stop=['a', 1])", "TypeError",
         r"stop must be a string or a sequence of strings"),
    case("sampling-repeat-penalty-0", "lc.SamplingParams(repeat_penalty=0)", "ValueError",
         r"repeat_penalty must be > 0"),
    case("sampling-mirostat-3", "lc.SamplingParams(mirostat=3)", "ValueError",
         r"mirostat must be 0, 1 or 2"),
    case("sampling-unknown-sampler", "lc.SamplingParams(samplers='top_k;nope')", "ValueError",
         r"unknown sampler 'nope'"),
    case("sampling-logit-bias-negative-token", "lc.SamplingParams(logit_bias={-1: 1.0})",
         "ValueError", r"logit_bias token must be >= 0"),
    case("sampling-logit-bias-str-token", "lc.SamplingParams(logit_bias={'a': 1.0})",
         "TypeError", r"logit_bias token must be an integer"),
    case("sampling-logit-bias-str-value", "lc.SamplingParams(logit_bias={1: 'x'})",
         "TypeError", r"logit_bias value must be a number, got 'x'"),
    case("sampling-logit-bias-nan", "lc.SamplingParams(logit_bias={1: float('nan')})",
         "ValueError", r"logit_bias value must not be NaN"),
    case("sampling-json-schema-int", "lc.SamplingParams(json_schema=5)", "TypeError",
         r"json_schema must be a JSON schema"),
    case("sampling-grammar-int", "lc.SamplingParams(grammar=5)", "TypeError",
         r"grammar must be GBNF text or a llama_cffi\.Grammar"),
    case("sampling-grammar-and-schema",
         "lc.SamplingParams(grammar='root ::= \"a\"', json_schema={'type': 'string'})",
         "ValueError", r"either grammar or json_schema"),
    case("sampling-seed-str", "lc.SamplingParams(seed='x')", "TypeError",
         r"seed must be an integer"),
    case("sampling-dry-breakers", "lc.SamplingParams(dry_sequence_breakers=[1])", "TypeError",
         r"dry_sequence_breakers must be strings"),
    case("sampling-xtc-range", "lc.SamplingParams(xtc_probability=2)", "ValueError",
         r"xtc_probability must be in"),
    case("sampling-unknown-name", "lc.SamplingParams.from_kwargs(temperatur=1)", "TypeError",
         r"SamplingParams has no parameter 'temperatur'"),
    case("sampling-chain-from-params", "lc.SamplerChain.from_params(model, temperature='x')",
         "TypeError", r"temperature must be a number"),
    # SpeculativeParams and LLM keywords
    case("spec-type", "lc.SpeculativeParams(spec_type='mtp')", "ValueError",
         r"unknown speculative type 'mtp'"),
    case("spec-draft-n-max-0", "lc.SpeculativeParams(draft_n_max=0)", "ValueError",
         r"draft_n_max must be >= 1"),
    case("spec-draft-p-min", "lc.SpeculativeParams(draft_p_min=2.0)", "ValueError",
         r"draft_p_min must be in"),
    case("spec-draft-type-k", "lc.SpeculativeParams(draft_type_k='nope')", "ValueError",
         r"type_k"),
    case("spec-ngram-size", "lc.SpeculativeParams(ngram_size_n=0)", "ValueError",
         r"ngram_size_n must be >= 1"),
    case("llm-unknown-kwarg", "lc.LLM(SMOL, bogus=1)", "TypeError",
         r"unknown parameter 'bogus'"),
]

# -- samplers ---------------------------------------------------------------------------------

SAMPLERS = [
    case("sampler-top-k-str", "lc.sampling.top_k('a')", "TypeError", r"\bk\b"),
    case("sampler-temp-str", "lc.sampling.temp('hot')", "TypeError", r"\bt\b"),
    case("sampler-penalty-0", "lc.sampling.penalties(repeat=0)", "ValueError",
         r"repeat penalty must be > 0"),
    case("sampler-logit-bias-negative", "lc.sampling.logit_bias(model, {-1: 1.0})",
         "lc.TokenError", r"out of range"),
    case("sampler-logit-bias-value", "lc.sampling.logit_bias(model, {1: 'x'})", "ValueError",
         r"x"),
    case("sampler-dry-breakers", "lc.sampling.dry(model, sequence_breakers=[1])", "TypeError",
         r"sequence_breakers"),
    case("sampler-chain-not-a-sampler", "lc.SamplerChain(['greedy'])", "TypeError",
         r"[Ss]ampler"),
    case("sampler-chain-reuse", "s = lc.sampling.top_k(5); lc.SamplerChain([s])\n"
         "lc.SamplerChain([s])", "lc.LlamaError", r"closed or already in a chain"),
    case("sampler-chain-closed", "c = lc.SamplerChain([lc.sampling.greedy()]); c.close()\n"
         "c.sample(new_ctx())", "lc.ClosedError", r"closed"),
    case("sampler-no-selector", "c = new_ctx(); c.eval_tokens(HELLO, 0)\n"
         "lc.SamplerChain([lc.sampling.top_k(5)]).sample(c)", "lc.LlamaError",
         r"selecting sampler"),
    case("sampler-before-decode", "lc.SamplerChain([lc.sampling.greedy()]).sample(new_ctx())",
         "lc.LlamaError", r"no logits"),
    case("sampler-bad-index", "c = new_ctx(); c.eval_tokens(HELLO, 0)\n"
         "lc.SamplerChain([lc.sampling.greedy()]).sample(c, idx=1000)", "lc.LlamaError",
         r"no logits"),
    case("sampler-accept-out-of-range",
         "lc.SamplerChain([lc.sampling.penalties(), lc.sampling.greedy()], vocab=model)"
         ".accept(N)", "lc.TokenError", r"token id 49152 is out of range.*0\.\.49151"),
    case("sampler-accept-after-sample",
         "c = new_ctx(); c.eval_tokens(HELLO, 0)\n"
         "ch = lc.SamplerChain([lc.sampling.penalties(), lc.sampling.greedy()])\n"
         "ch.sample(c); ch.accept(N)", "lc.TokenError", r"out of range"),
    case("sampler-accept-from-params",
         "lc.SamplerChain.from_params(model, temperature=0, repeat_penalty=1.1).accept(N + 5)",
         "lc.TokenError", r"out of range"),
    case("sampler-accept-negative", "lc.SamplerChain([lc.sampling.greedy()]).accept(-1)",
         "lc.TokenError", r"out of range"),
    case("sampler-accept-str", "lc.SamplerChain([lc.sampling.greedy()]).accept('a')",
         "TypeError", r"token must be an integer"),
    case("sampler-min-p-str", "lc.sampling.min_p('x')", "TypeError", r"\bp must be a number"),
    case("sampler-top-k-huge", "lc.sampling.top_k(2**40)", "ValueError",
         r"k must be in -2147483648\.\.2147483647"),
    case("sampler-seed-float", "lc.sampling.dist(seed=1.5)", "TypeError",
         r"seed must be an integer"),
    case("sampler-min-keep-negative", "lc.sampling.top_p(0.9, min_keep=-1)", "ValueError",
         r"min_keep must be in 0\.\."),
    case("sampler-python-raises",
         "class Bad(lc.PythonSampler):\n"
         "    def apply(self, candidates):\n        raise ZeroDivisionError('boom')\n"
         "c = new_ctx(); c.eval_tokens(HELLO, 0)\n"
         "lc.SamplerChain([Bad(), lc.sampling.greedy()]).sample(c)",
         "ZeroDivisionError", r"boom"),
    case("sampler-candidates-empty", "lc.Candidates.from_logits(np.zeros(0, np.float32))",
         "ValueError", r"at least one token"),
    case("sampler-candidates-size", "c = lc.Candidates.from_logits(np.zeros(4, np.float32))\n"
         "c.size = 9", "ValueError", r"size can only shrink"),
    case("sampler-candidates-selected",
         "c = lc.Candidates.from_logits(np.zeros(4, np.float32)); c.selected = 9",
         "IndexError", r"selected must be -1\.\.3"),
    case("sampler-candidates-none-selected",
         "lc.Candidates.from_logits(np.zeros(4, np.float32)).selected_token()",
         "lc.LlamaError", r"no token was selected"),
    case("sampler-mirostat-closed-model", "lc.sampling.mirostat(closed_model())",
         "lc.ClosedError", r"closed"),
]

# -- LoRA and control vectors -------------------------------------------------------------------

ADAPTERS = [
    case("lora-missing", "lc.LoraAdapter(model, WORK / 'nope.gguf')", "lc.ModelLoadError",
         r"LoRA adapter file not found"),
    case("lora-directory", "lc.LoraAdapter(model, WORK)", "lc.ModelLoadError",
         r"LoRA adapter file not found"),
    case("lora-text-file", "lc.LoraAdapter(model, write('l.gguf', 'text'))", "lc.ModelLoadError",
         r"failed to load LoRA adapter"),
    case("lora-a-model", "lc.LoraAdapter(model, SMOL)", "lc.ModelLoadError",
         r"failed to load LoRA adapter"),
    case("lora-vocab-file", "lc.LoraAdapter(model, ROOT / 'vendor/llama.cpp/models/"
         "ggml-vocab-gpt-2.gguf')", "lc.ModelLoadError", r"failed to load LoRA adapter"),
    case("lora-wrong-shape", "lc.LoraAdapter(model, lora_file(640))", "lc.ModelLoadError",
         r"failed to load LoRA adapter"),
    case("lora-truncated", "d = lora_file(576).read_bytes()\n"
         "lc.LoraAdapter(model, write('lt.gguf', d[:len(d) // 2]))", "lc.ModelLoadError",
         r"failed to load LoRA adapter"),
    case("lora-closed-model", "lc.LoraAdapter(closed_model(), lora_file(576))",
         "lc.ClosedError", r"closed"),
    case("lora-scale-str", "a = lc.LoraAdapter(model, lora_file(576))\n"
         "new_ctx().set_loras({a: 'x'})", "TypeError", r"scale"),
    case("lora-not-an-adapter", "new_ctx().set_loras({'x': 1.0})", "TypeError",
         r"LoraAdapter"),
    case("lora-a-context-as-adapter", "c = new_ctx(); c.set_loras({c: 1.0})", "TypeError",
         r"LoraAdapter keys"),
    case("lora-not-a-mapping", "new_ctx().set_loras([1.0])", "TypeError",
         r"mapping LoraAdapter -> scale"),
    case("cv-missing", "new_ctx().load_control_vectors([(WORK / 'nope.gguf', 1.0)])",
         "FileNotFoundError", r"control vector file not found"),
    case("cv-a-model", "new_ctx().load_control_vectors([(SMOL, 1.0)])", "lc.LlamaError",
         r"is not direction\.<layer >= 1>"),
    case("cv-text-file", "new_ctx().load_control_vectors([write('cv.gguf', 'text')])",
         "lc.LlamaError", r"not a readable GGUF file"),
    case("cv-none", "new_ctx().load_control_vectors([])", "ValueError",
         r"no control vector files given"),
    case("cv-layer-0", "new_ctx().load_control_vectors([cv_file('z.gguf', "
         "{'direction.0': np.ones(576, np.float32)})])", "lc.LlamaError",
         r"'direction\.0' is not direction"),
    case("cv-f16", "new_ctx().load_control_vectors([cv_file('h.gguf', "
         "{'direction.1': np.ones(576, np.float16)})])", "lc.LlamaError",
         r"must be a 1-D F32 tensor"),
    case("cv-mixed-sizes", "new_ctx().load_control_vectors([cv_file('m.gguf', "
         "{'direction.1': np.ones(576, np.float32), 'direction.2': np.ones(8, np.float32)})])",
         "lc.LlamaError", r"different sizes"),
    case("cv-wrong-n-embd", "new_ctx().load_control_vectors([cv_file('w.gguf', "
         "{'direction.1': np.ones(640, np.float32)})])", "lc.LlamaError",
         r"n_embd 640, the model 576"),
    case("cv-array-shape", "new_ctx().set_control_vector(np.zeros((5, 7), np.float32))",
         "ValueError", r"shape \(n_layer, 576\)"),
    case("cv-array-1d", "new_ctx().set_control_vector(np.zeros(576, np.float32))",
         "ValueError", r"shape \(n_layer, 576\)"),
]

# -- RPC and closed objects ----------------------------------------------------------------------

OTHERS = [
    case("rpc-no-port", "lc.rpc.add_server('localhost')", "ValueError",
         r"RPC endpoint must be host:port, got 'localhost'"),
    case("rpc-port-range", "lc.rpc.add_server('127.0.0.1:99999')", "ValueError",
         r"must be host:port"),
    case("rpc-no-host", "lc.rpc.add_server(':50052')", "ValueError", r"must be host:port"),
    case("rpc-unreachable", "lc.rpc.add_server(f'127.0.0.1:{lc.rpc.free_port()}')",
         "lc.LlamaError", r"no RPC server answers at 127\.0\.0\.1:\d+"),
    case("rpc-bad-address", "lc.rpc.add_server('256.1.1.1:50052')", "lc.LlamaError",
         r"no RPC server answers at 256\.1\.1\.1:50052"),
    case("closed-model-metadata", "closed_model().metadata", "lc.ClosedError", r"closed"),
    case("closed-model-vocab", "closed_model().vocab", "lc.ClosedError", r"closed"),
    case("closed-context-logits", "c = new_ctx(); c.close(); c.logits()", "lc.ClosedError",
         r"Context is closed"),
    case("closed-context-eval", "c = new_ctx(); c.close(); c.eval_tokens(HELLO, 0)",
         "lc.ClosedError", r"Context is closed"),
    case("closed-model-context-eval", "m = lc.Model(SMOL); c = m.context(n_ctx=64)\n"
         "m.close(); c.eval_tokens(HELLO, 0)", "lc.ClosedError", r"closed"),
    case("context-vocab-only", "lc.Model(SMOL, vocab_only=True).context()", "lc.ContextError",
         r"vocab_only"),
    case("logits-bad-index", "c = new_ctx(); c.eval_tokens(HELLO, 0); c.logits(5)",
         "lc.LlamaError", r"no logits for output 5"),
    case("embeddings-not-enabled", "c = new_ctx(); c.eval_tokens(HELLO, 0); c.embeddings()",
         "lc.LlamaError", r"embeddings=True"),
    case("seq-rm-bad-seq", "new_ctx().seq_rm(5)", "ValueError", r"seq_id 5 is outside"),
    case("seq-cp-partial-split-kv",
         "c = new_ctx(n_ctx=512, n_seq_max=2, kv_unified=False); c.eval_tokens(HELLO, 0)\n"
         "c.seq_cp(0, 1, 0, 1)", "ValueError",
         r"seq_cp\(0, 1, p0=0, p1=1\): with one KV stream per sequence.*whole sequences"),
    case("seq-cp-partial-start-split-kv",
         "c = new_ctx(n_ctx=512, n_seq_max=2, kv_unified=False); c.eval_tokens(HELLO, 0)\n"
         "c.seq_cp(0, 1, 1, -1)", "ValueError", r"only whole sequences"),
    case("seq-div-zero", "new_ctx().seq_div(0, 0, 10, 0)", "ValueError", r"d must be >= 1"),
    case("shift-too-much", "c = new_ctx(); c.eval_tokens(HELLO, 0); c.shift(0, 1, 50)",
         "ValueError", r"cannot discard 50 tokens"),
]

CASES: list[Case] = (FILES + TOKENS + BATCHES + STATES + GRAMMARS + SCHEMAS + TEMPLATES + PARAMS
                     + SAMPLERS + ADAPTERS + OTHERS)

SETUP = r'''
import gc, json, math, os, re, resource, struct, sys, traceback, warnings
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[5]), int(sys.argv[5])))
warnings.simplefilter("ignore", ResourceWarning)
import numpy as np
import llama_cffi as lc
SMOL, GEMMA, BASE_DIR, ROOT = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
WORK = BASE_DIR / f"child-{os.getpid()}"  # children run side by side: no shared file names
WORK.mkdir()
model = lc.Model(SMOL)
vocab = model.vocab
N = vocab.n_tokens
HELLO = vocab.tokenize("Hello world")
_cache = {}

def once(key, make):
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]

def new_ctx(**kw):
    kw.setdefault("n_ctx", 128)
    kw.setdefault("n_batch", 64)
    return model.context(**kw)

def write(name, data):
    p = WORK / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p

def _state(m, name):
    with m.context(n_ctx=128, n_batch=64) as c:
        c.eval_tokens(m.vocab.tokenize("Hello world"), 0)
        c.save_state(WORK / name, m.vocab.tokenize("Hello world"))
        c.save_seq_state(WORK / (name + ".seq"), 0)
        return c.state_get()

def state_bytes():
    return once("state", lambda: _state(model, "good.state"))

def state_file():
    state_bytes()
    return WORK / "good.state"

def seq_state_file():
    state_bytes()
    return WORK / "good.state.seq"

def gemma_state_file():
    def make():
        with lc.Model(GEMMA) as g:
            _state(g, "gemma.state")
        return WORK / "gemma.state"
    return once("gemma", make)

def lora_file(n_embd):
    from tests import synthetic
    return once(("lora", n_embd), lambda: synthetic.write_lora(
        WORK / f"lora-{n_embd}.gguf", n_embd, range(2)))

def cv_file(name, tensors):
    import gguf
    w = gguf.GGUFWriter(str(WORK / name), "controlvector")
    for key, value in tensors.items():
        w.add_tensor(key, value)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return WORK / name

def _craft(edit, name):
    from dataclasses import asdict
    from tests.test_gguf_mutants import Mutant, materialise, walk_gguf
    layout = walk_gguf(Path(SMOL))
    patches, splices = edit(layout)
    m = Mutant(0, SMOL, name, layout.tensor_info_end, layout.file_size - layout.data_offset,
               patches, splices)
    out = WORK / name
    with open(SMOL, "rb") as fh:
        materialise(asdict(m), fh.read(m.prefix), out)
    return out

def crafted(kind, label, value):
    from tests.test_gguf_mutants import _pack
    def edit(layout):
        slot = next(s for s in layout.slots if s.kind == kind and s.label == label)
        return [(slot.offset, _pack(slot, value))], []
    return _craft(edit, f"crafted-{kind}-{value}.gguf")

def crafted_string(key, value):
    from tests.test_gguf_mutants import STR, gguf_kv
    def edit(layout):
        start, end, _ = layout.kvs[key]
        return [], [(start, end - start, gguf_kv(key, STR, value).hex())]
    return _craft(edit, f"crafted-{key}.gguf")

def closed_model():
    m = lc.Model(SMOL, vocab_only=True)
    m.close()
    return m

BASE = dict(globals())
CASES = json.load(open(BASE_DIR / "cases.json"))
ids = json.loads(sys.stdin.readline())
for cid in ids:
    c = CASES[cid]
    print("BEGIN", json.dumps(cid), flush=True)
    ns = dict(BASE)
    rec = {"id": cid}
    try:
        exec(compile(c["code"], f"<case {cid}>", "exec"), ns)
    except BaseException as e:
        expected = eval(c["exc"], dict(BASE))
        rec.update(result="raised", type=f"{type(e).__module__}.{type(e).__qualname__}",
                   message=str(e), matches_type=isinstance(e, expected),
                   where=traceback.format_exc(limit=-3)[-1500:])
    else:
        rec.update(result="none")
    ns.clear()
    gc.collect()
    print("RESULT", json.dumps(rec), flush=True)
print("DONE", flush=True)
'''


def _params() -> list[Any]:
    out = []
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=c.bug)] if c.bug else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path,
                   gemma3_path: Path) -> dict[str, dict[str, Any]]:
    """Run every case in child processes (two at a time, many cases per child)."""
    import json

    work = tmp_path_factory.mktemp("corpus")
    (work / "cases.json").write_text(json.dumps(
        {c.id: {"code": c.code, "exc": c.exc} for c in CASES}))
    argv = [sys.executable, "-c", SETUP, str(smollm2_path), str(gemma3_path), str(work),
            str(ROOT), str(CHILD_MEMORY_LIMIT)]
    return run_parallel(argv, [c.id for c in CASES], workers=2, timeout=CASE_TIMEOUT_S,
                        env=child_env(ROOT))


def test_corpus_is_large_and_unique() -> None:
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)
    for group in (FILES, TOKENS, BATCHES, STATES, GRAMMARS, SCHEMAS, TEMPLATES, PARAMS,
                  SAMPLERS, ADAPTERS, OTHERS):
        assert len(group) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, corpus_results: dict[str, dict[str, Any]]) -> None:
    r = corpus_results[case.id]
    where = f"case {case.id}:\n{case.code}\n"
    if r["result"] in ("crash", "hang"):
        pytest.fail(f"{where}-> the interpreter {'crashed' if r['result'] == 'crash' else 'hung'}"
                    f" (exit {r['exit']}):\n{r['stderr']}")
    assert r["result"] == "raised", f"{where}-> no exception (expected {case.exc})"
    assert r["matches_type"], (f"{where}-> raised {r['type']}: {r['message']}\n"
                               f"expected {case.exc}\n{r['where']}")
    assert re.search(case.pattern, r["message"], re.DOTALL), (
        f"{where}-> {r['type']}: {r['message']!r} does not match {case.pattern!r}")
