"""The Python-side GGUF check (``llama_cffi.objects.gguf_check``).

Every case that llama.cpp was found to crash on (tests/test_gguf_mutants.py,
docs/safety.md) is built here from SmolLM2's header region and must be
refused with a ModelLoadError naming the problem; valid files must pass; a
file that merely ends early is left to llama.cpp.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

import llama_cffi as lc
from llama_cffi.objects.gguf_check import GGML_TYPES, check_gguf

from . import synthetic
from .conftest import ROOT, run_python
from .test_gguf_mutants import (
    ARR, BOOL, STR, U32, Layout, Mutant, Slot, _pack, gguf_kv, gguf_string,
    materialise, walk_gguf,
)

VOCAB_DIR = ROOT / "vendor" / "llama.cpp" / "models"

Edit = Callable[[Layout], tuple[list[tuple[int, str]], list[tuple[int, int, str]]]]
"""Given SmolLM2's layout: (patches, splices) of a crafted file."""


def _slot(layout: Layout, kind: str, label: str) -> Slot:
    return next(s for s in layout.slots if s.kind == kind and s.label == label)


def _set(kind: str, label: str, value: int | float) -> Edit:
    def edit(layout: Layout) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
        slot = _slot(layout, kind, label)
        packed = (struct.pack(slot.fmt, value).hex() if isinstance(value, float)
                  else _pack(slot, value))
        return [(slot.offset, packed)], []
    return edit


def _add_kv(key: str, vtype: int, value: object) -> Edit:
    def edit(layout: Layout) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
        n_kv = _slot(layout, "n_kv", "header")
        return ([(n_kv.offset, _pack(n_kv, int(n_kv.value) + 1))],
                [(layout.tensor_info_start, 0, gguf_kv(key, vtype, value).hex())])
    return edit


def _replace_string(key: str, value: bytes) -> Edit:
    def edit(layout: Layout) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
        start, end, _ = layout.kvs[key]
        return [], [(start, end - start, gguf_kv(key, STR, value).hex())]
    return edit


def _token_1_is_token_0(layout: Layout) -> tuple[list[tuple[int, str]],
                                                  list[tuple[int, int, str]]]:
    first = _slot(layout, "string_len", "tokenizer.ggml.tokens[0]")
    second = _slot(layout, "string_len", "tokenizer.ggml.tokens[1]")
    token0 = b"<|endoftext|>"
    assert int(first.value) == len(token0)
    return [], [(second.offset, 8 + int(second.value), gguf_string(token0).hex())]


def _output_norm_type(ggml_type: int) -> Edit:
    def edit(layout: Layout) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
        slot = _slot(layout, "ggml_type", "output_norm.weight")
        return [(slot.offset, struct.pack("<I", ggml_type).hex())], []
    return edit


CRASH_CASES: list[tuple[str, Edit, str]] = [
    # (what llama.cpp does without the check) / edit / the check's message
    ("GGML_ASSERT n_layer_all > 0", _set("value", "llama.block_count", 0),
     r"llama\.block_count is 0; llama\.cpp supports 1 to 512 layers"),
    ("GGML_ASSERT n_layer_all <= LLAMA_MAX_LAYERS", _set("value", "llama.block_count", 513),
     r"llama\.block_count is 513"),
    ("GGML_ASSERT id_to_token.size() == token_to_id.size()", _token_1_is_token_0,
     r"strings 0 and 1 of tokenizer\.ggml\.tokens are both '<\|endoftext\|>'"),
    ("uncaught std::out_of_range in byte_to_token while tokenizing",
     _replace_string("tokenizer.ggml.model", b"llama"),
     r"SentencePiece vocabulary .* has no byte token <0x00>"),
    ("GGML_ASSERT eps >= 0 in rms_norm at decode",
     _set("value", "llama.attention.layer_norm_rms_epsilon", -1.0),
     r"layer_norm_rms_epsilon is -1\.0; a norm epsilon must be finite and >= 0"),
    ("GGML_ASSERT eps >= 0 (NaN) at decode",
     _set("value", "llama.attention.layer_norm_rms_epsilon", math.nan),
     r"layer_norm_rms_epsilon is nan"),
    ("GGML_ABORT binary_op: unsupported types at decode", _output_norm_type(6),
     r"1-D tensor 'output_norm\.weight' has type q5_0; llama\.cpp computes with 1-D weights"),
    ("GGML_ABORT binary_op: unsupported types (f16 src1) at decode", _output_norm_type(1),
     r"1-D tensor 'output_norm\.weight' has type f16"),
    ("GGML_ASSERT buffer pointer must be aligned (mmap)", _add_kv("general.alignment", U32, 1),
     r"starts at byte \d+ of the file, not a multiple of 32 \(general\.alignment is 1\)"),
    ("GGML_ASSERT n_expert_used_max == 0", _add_kv("llama.expert_used_count", U32, 2),
     r"llama\.expert_used_count \(2\) must be in 1\.\.expert_count \(0\)"),
    ("GGML_ASSERT n_expert <= LLAMA_MAX_EXPERTS", _add_kv("llama.expert_count", U32, 5000),
     r"llama\.expert_count is 5000, above llama\.cpp's 1024"),
    ("GGML_ASSERT n_expert_groups == 0", _add_kv("llama.expert_group_count", U32, 2),
     r"llama\.expert_group_count is 2 for a model without experts"),
    ("GGML_ASSERT n_layer_nextn <= n_layer_all", _add_kv("llama.nextn_predict_layers", U32, 31),
     r"llama\.nextn_predict_layers \(31\) exceeds llama\.block_count \(30\)"),
    ("GGML_ASSERT rope_scaling_type_train != UNSPECIFIED",
     _add_kv("llama.rope.scaling.type", STR, "bogus"),
     r"llama\.rope\.scaling\.type is 'bogus'; llama\.cpp knows none, linear, yarn, longrope"),
    ("ValueError (not a ModelLoadError) creating a context",
     _add_kv("llama.pooling_type", U32, 7), r"llama\.pooling_type is 7"),
]

STRUCTURE_CASES: list[tuple[str, Edit, str]] = [
    ("version 1", _set("version", "header", 1), r"GGUF version 1 is not supported"),
    ("big-endian version", _set("version", "header", 3 << 24), r"\(a big-endian file\?\)"),
    ("huge n_tensors", _set("n_tensors", "header", 1 << 63),
     r"number of tensors \(9223372036854775808\) is negative"),
    ("unknown value type", _set("value_type", "general.name", 13),
     r"key 'general\.name' has an unknown value type 13"),
    ("nested array", _set("array_type", "tokenizer.ggml.merges", ARR),
     r"key 'tokenizer\.ggml\.merges' has an unknown array element type 9"),
    ("duplicate key", _add_kv("general.architecture", STR, "llama"),
     r"key 'general\.architecture' appears twice"),
    ("empty key", _add_kv("", BOOL, 1), r"key/value pair #33 has an empty key"),
    ("alignment not a power of 2", _add_kv("general.alignment", U32, 48),
     r"general\.alignment \(48\) must be a power of two"),
    ("5 dimensions", _set("n_dims", "blk.0.attn_q.weight", 5),
     r"tensor 'blk\.0\.attn_q\.weight' has 5 dimensions \(at most 4\)"),
    ("unknown ggml type", _set("ggml_type", "blk.0.attn_q.weight", 36),
     r"tensor 'blk\.0\.attn_q\.weight' has unknown ggml type 36"),
    ("negative dimension", _set("dim", "blk.0.attn_q.weight.ne[1]", 1 << 63),
     r"tensor 'blk\.0\.attn_q\.weight' has a negative dimension"),
    ("row not a multiple of the block", _set("dim", "blk.0.attn_q.weight.ne[0]", 577),
     r"of type q4_1 has rows of 577 elements, not a multiple of its block size 32"),
    ("overlapping data", _set("tensor_offset", "blk.0.attn_q.weight", 0),
     r"has data offset 0, expected \d+ \(tensor data must follow one another"),
    ("too many elements", _set("dim", "blk.0.attn_q.weight.ne[0]", 1 << 62),
     r"elements, more than a 64-bit count"),
]


def _craft(base: Path, edit: Edit, out: Path, size: int | None = None) -> Path:
    layout = walk_gguf(base)
    patches, splices = edit(layout)
    m = Mutant(0, str(base), "crafted", layout.tensor_info_end,
               layout.file_size - layout.data_offset, patches, splices, size)
    with base.open("rb") as fh:
        materialise(asdict(m), fh.read(m.prefix), out)
    return out


@pytest.mark.parametrize("crash, edit, message", CRASH_CASES,
                         ids=[c[0] for c in CRASH_CASES])
def test_refuses_what_llama_cpp_crashes_on(tmp_path: Path, smollm2_path: Path, crash: str,
                                           edit: Edit, message: str) -> None:
    bad = _craft(smollm2_path, edit, tmp_path / "bad.gguf")
    with pytest.raises(lc.ModelLoadError, match=message) as info:
        check_gguf(bad)
    assert str(info.value).startswith(f"invalid GGUF file {bad}: ")


@pytest.mark.parametrize("what, edit, message", STRUCTURE_CASES,
                         ids=[c[0] for c in STRUCTURE_CASES])
def test_refuses_invalid_structure(tmp_path: Path, smollm2_path: Path, what: str, edit: Edit,
                                   message: str) -> None:
    bad = _craft(smollm2_path, edit, tmp_path / "bad.gguf")
    with pytest.raises(lc.ModelLoadError, match=message):
        check_gguf(bad)


def test_the_unmodified_craft_passes(tmp_path: Path, smollm2_path: Path) -> None:
    # the crafting itself (header + padding + zero data) makes a valid file
    good = _craft(smollm2_path, lambda layout: ([], []), tmp_path / "good.gguf")
    assert good.stat().st_size == smollm2_path.stat().st_size
    check_gguf(good)


@pytest.mark.parametrize("size", [0, 3, 20, 100, 5000, 1_000_000, 1_785_000, 50_000_000])
def test_a_file_that_ends_early_is_left_to_llama_cpp(tmp_path: Path, smollm2_path: Path,
                                                     size: int) -> None:
    cut = _craft(smollm2_path, lambda layout: ([], []), tmp_path / "cut.gguf", size=size)
    check_gguf(cut)  # llama.cpp refuses it with its own diagnosis (test_bad_input.py)


@pytest.mark.parametrize("kind, label", [("n_kv", "header"), ("n_tensors", "header"),
                                         ("string_len", "general.name"),
                                         ("array_len", "tokenizer.ggml.tokens"),
                                         ("array_len", "tokenizer.ggml.token_type"),
                                         ("name_len", "output_norm.weight")])
def test_huge_counts_and_lengths_end_the_walk_quickly(tmp_path: Path, smollm2_path: Path,
                                                      kind: str, label: str) -> None:
    bad = _craft(smollm2_path, _set(kind, label, (1 << 62) + 1), tmp_path / "huge.gguf")
    start = time.monotonic()
    try:
        check_gguf(bad)
    except lc.ModelLoadError:
        pass  # what follows the huge number may be refused
    assert time.monotonic() - start < 2.0


def test_crafted_crash_cases_are_refused_by_model(tmp_path: Path, smollm2_path: Path) -> None:
    """End to end, in a fresh interpreter: Model() raises instead of aborting."""
    paths = [str(_craft(smollm2_path, edit, tmp_path / f"case{i}.gguf"))
             for i, (_, edit, _) in enumerate(CRASH_CASES)]
    code = (f"import json, llama_cffi as lc\nout = []\nfor p in {paths!r}:\n"
            "    try:\n        lc.Model(p).close()\n        out.append('loaded')\n"
            "    except lc.ModelLoadError as e:\n        out.append(str(e))\n"
            "print(json.dumps(out))\n")
    proc = run_python(code, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    messages = json.loads(proc.stdout.strip().splitlines()[-1])
    for (crash, _, pattern), message in zip(CRASH_CASES, messages):
        assert "invalid GGUF file" in message and __import__("re").search(pattern, message), \
            (crash, message)


def test_valid_files_pass(tmp_path: Path, smollm2_path: Path, gemma3_path: Path,
                          minilm_path: Path) -> None:
    moe = synthetic.write_moe_model(tmp_path / "moe.gguf", smollm2_path)
    lora = synthetic.write_lora(tmp_path / "lora.gguf", 576, range(2))
    files = [smollm2_path, gemma3_path, minilm_path, moe, lora,
             *sorted(VOCAB_DIR.glob("ggml-vocab-*.gguf"))]
    assert len(files) > 15
    for path in files:
        check_gguf(path)


def test_check_is_fast(smollm2_path: Path, gemma3_path: Path) -> None:
    # metadata only: Gemma 3's 262k-token vocabulary is the slow part (~0.15 s)
    for path, limit in ((smollm2_path, 1.0), (gemma3_path, 3.0)):
        best = min(_timed(check_gguf, path) for _ in range(3))
        assert best < limit, (path.name, best)


def _timed(fn: Callable[[Path], None], path: Path) -> float:
    start = time.perf_counter()
    fn(path)
    return time.perf_counter() - start


def test_missing_and_unreadable_paths_are_left_to_the_caller(tmp_path: Path) -> None:
    check_gguf(tmp_path / "missing.gguf")
    check_gguf(tmp_path)  # a directory
    (tmp_path / "empty.gguf").write_bytes(b"")
    check_gguf(tmp_path / "empty.gguf")


def test_ggml_type_table_matches_the_vendored_gguf_py() -> None:
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); import gguf; "
            "print(json.dumps({int(t): [t.name.lower(), *s] for t, s in "
            "gguf.GGML_QUANT_SIZES.items()}))")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "vendor" / "llama.cpp" /
                                                          "gguf-py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    vendored = {int(k): tuple(v) for k, v in json.loads(proc.stdout).items()}
    ours = {k: (name.lower(), block, size) for k, (name, block, size) in GGML_TYPES.items()}
    assert ours == vendored


def test_overrides_are_checked_with_the_file(smollm2_path: Path) -> None:
    # expert_used_count is fine on its own, not on a model without experts
    with pytest.raises(lc.ModelLoadError, match=r"expert_used_count \(2\) must be in 1\.\.expert"):
        check_gguf(smollm2_path, overrides={"llama.expert_used_count": 2})
    check_gguf(smollm2_path, overrides={"llama.expert_used_count": 2, "llama.expert_count": 4})
    check_gguf(smollm2_path, overrides=[("llama.block_count", 10)])
    with pytest.raises(lc.ModelLoadError, match=r"llama\.block_count is 0"):
        check_gguf(smollm2_path, overrides=[("llama.block_count", 0)])


@pytest.mark.parametrize("key, value, message", [
    ("llama.block_count", 0, r"llama\.block_count is 0"),
    ("gemma3.block_count", 513, r"gemma3\.block_count is 513"),
    ("llama.attention.layer_norm_rms_epsilon", -1e-5, r"must be finite and >= 0"),
    ("llama.attention.layer_norm_epsilon", float("inf"), r"must be finite and >= 0"),
    ("llama.rope.scaling.type", "bogus", r"llama\.cpp knows none, linear, yarn, longrope"),
    ("bert.pooling_type", 9, r"llama\.cpp knows 0 \(none\) to 4 \(rank\)"),
    ("llama.expert_count", 2000, r"above llama\.cpp's 1024"),
])
def test_kv_overrides_llama_cpp_would_abort_on_are_refused(key: str, value: Any,
                                                           message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lc.ModelParams(kv_overrides={key: value})


def test_harmless_kv_overrides_pass() -> None:
    lc.ModelParams(kv_overrides={"llama.block_count": 12, "general.name": "x",
                                 "llama.attention.layer_norm_rms_epsilon": 1e-6,
                                 "tokenizer.ggml.add_bos_token": False})
