"""GGUF mutation test: hostile model files are loaded or refused, never a crash.

Seeded mutants of the real test models (SmolLM2, Gemma 3) are generated from a
structural walk of each file's header, metadata and tensor infos: random bit
flips, truncations at many offsets, huge or odd values written into the
counts (``n_tensors``, ``n_kv``), string lengths, array lengths and element
types, metadata values, tensor ``n_dims``/dims/types/offsets, and spliced
edits: hostile key/value pairs added (expert counts, alignment, rope scaling,
special tokens, split keys ...), pairs and the last tensor removed, the
tokenizer model, pre-tokenizer and architecture strings swapped.

Each mutant is materialised as a file (the mutated header region, padded to
the alignment, then the tensor data region as a sparse hole of zeros: loading
never reads the weights' values, so zeros load like the real ones) and loaded
with :class:`Model` in a child process; a child runs many mutants in sequence
and reports each one. A loaded mutant is then used a little (tokenize,
detokenize, token pieces, a context and one decode). The parent notices a
crash (the child dies) or a hang (no report in time), records it against the
mutant in progress, and continues with the next one in a new child, so every
mutant is classified.

Every mutant must end up ``loaded`` or ``refused`` with a
:class:`ModelLoadError` (or subclass) carrying a non-empty message, and using
a loaded one may raise only :class:`LlamaError` s. The crashes this found in
llama.cpp are refused before llama.cpp sees the file by
``llama_cffi.objects.gguf_check`` (docs/safety.md lists them).

Reproduce one mutant: ``materialise(asdict(mutant), prefix, path)`` with the
mutants of ``all_mutants(smollm2, gemma3)`` (same seed, same files).
"""

from __future__ import annotations

import json
import random
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from .child_runner import child_env, run_parallel

ROOT = Path(__file__).resolve().parent.parent
SEED = 20240611
N_SMOLLM2 = 520
N_GEMMA = 80
MUTANT_TIMEOUT_S = 60.0
"""A mutant whose load (or use) takes longer than this is a hang (good loads
take well under 1 s; the margin is for a machine busy with other tests)."""
CHILD_MEMORY_LIMIT = 6 << 30
"""Address-space limit of a child: an absurd allocation fails instead of
exhausting the machine (and shows up as a crash if llama.cpp does not
handle the failure)."""
N_WORKERS = 2

# GGUF value types (gguf.h)
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
              BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}


@dataclass
class Slot:
    """One structural field of a GGUF file: where it is, its width, its role."""

    kind: str
    """header: version, n_tensors, n_kv; kv: key_len, value_type, array_type,
    array_len, string_len, value; tensor: name_len, n_dims, dim, ggml_type,
    tensor_offset."""
    offset: int
    fmt: str
    """struct format of the field (``<I``, ``<Q`` ...)."""
    value: int | float
    label: str
    """Which key or tensor the field belongs to."""


@dataclass
class Layout:
    """The result of walking a GGUF file's header region."""

    slots: list[Slot]
    kv_start: int
    tensor_info_start: int
    tensor_info_end: int
    data_offset: int
    file_size: int
    kvs: dict[str, tuple[int, int, int]]
    """key -> (start, end, value type) of each key/value pair."""
    tensor_infos: list[tuple[str, int, int]]
    """(name, start, end) of each tensor info."""
    strings: dict[str, bytes]
    """The string values (not arrays) by key."""


class _Walker:
    """A minimal GGUF reader that records every field's offset."""

    def __init__(self, buf: bytes, rng: random.Random) -> None:
        self.buf = buf
        self.pos = 0
        self.slots: list[Slot] = []
        self.rng = rng

    def take(self, fmt: str, kind: str | None = None, label: str = "",
             record: bool = True) -> int | float:
        value: int | float = struct.unpack_from(fmt, self.buf, self.pos)[0]
        if kind is not None and record:
            self.slots.append(Slot(kind, self.pos, fmt, value, label))
        self.pos += struct.calcsize(fmt)
        return value

    def string(self, kind: str, label: str, record: bool = True) -> bytes:
        n = int(self.take("<Q", kind, label, record))
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        return s

    def value(self, vtype: int, label: str, record: bool = True) -> None:
        if vtype == STR:
            self.string("string_len", label, record)
        else:
            self.take(SCALAR_FMT[vtype], "value" if record else None, label, record)


def walk_gguf(path: Path, seed: int = 0) -> Layout:
    """Walk ``path``'s header, metadata and tensor infos.

    Fields of long arrays are sampled (the first three elements, the last one
    and a few random ones), so the slot list stays small.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        buf = fh.read(min(size, 64 << 20))
    w = _Walker(buf, random.Random(seed))
    assert buf[:4] == b"GGUF"
    w.pos = 4
    w.take("<I", "version", "header")
    n_tensors = int(w.take("<Q", "n_tensors", "header"))
    n_kv = int(w.take("<Q", "n_kv", "header"))
    kv_start = w.pos
    alignment = 32
    kvs: dict[str, tuple[int, int, int]] = {}
    strings: dict[str, bytes] = {}
    for _ in range(n_kv):
        kv_pos = w.pos
        key = w.string("key_len", "").decode()
        w.slots[-1].label = key
        vtype = int(w.take("<I", "value_type", key))
        if vtype == ARR:
            etype = int(w.take("<I", "array_type", key))
            n = int(w.take("<Q", "array_len", key))
            sampled = {0, 1, 2, n - 1, *(w.rng.randrange(n) for _ in range(3) if n)}
            if etype == STR:
                for i in range(n):
                    w.value(etype, f"{key}[{i}]", record=i in sampled)
            else:
                first = w.pos
                width = struct.calcsize(SCALAR_FMT[etype])
                for i in sorted(x for x in sampled if 0 <= x < n):
                    w.pos = first + i * width
                    w.value(etype, f"{key}[{i}]")
                w.pos = first + n * width
        else:
            if key == "general.alignment":
                alignment = int(struct.unpack_from("<I", buf, w.pos)[0])
            if vtype == STR:
                n = int(struct.unpack_from("<Q", buf, w.pos)[0])
                strings[key] = buf[w.pos + 8:w.pos + 8 + n]
            w.value(vtype, key)
        kvs[key] = (kv_pos, w.pos, vtype)
    tensor_info_start = w.pos
    tensor_infos: list[tuple[str, int, int]] = []
    for _ in range(n_tensors):
        info_pos = w.pos
        name = w.string("name_len", "").decode()
        w.slots[-1].label = name
        n_dims = int(w.take("<I", "n_dims", name))
        for d in range(n_dims):
            w.take("<Q", "dim", f"{name}.ne[{d}]")
        w.take("<I", "ggml_type", name)
        w.take("<Q", "tensor_offset", name)
        tensor_infos.append((name, info_pos, w.pos))
    tensor_info_end = w.pos
    data_offset = -(-tensor_info_end // alignment) * alignment
    return Layout(w.slots, kv_start, tensor_info_start, tensor_info_end, data_offset, size,
                  kvs, tensor_infos, strings)


@dataclass
class Mutant:
    """One mutated file: the original header region (magic .. tensor infos) with
    patches and splices, padded to the alignment, then the tensor data region
    as zeros, cut to ``size``."""

    id: int
    base: str
    """Path of the original model."""
    desc: str
    prefix: int
    """Bytes of the original taken (magic .. end of the tensor infos)."""
    data_size: int
    """Bytes of (zero) tensor data after the header region."""
    patches: list[tuple[int, str]] = field(default_factory=list)
    """(offset, hex bytes) written over the original."""
    splices: list[tuple[int, int, str]] = field(default_factory=list)
    """(offset, bytes removed, hex bytes inserted), applied after the patches
    (from the last offset to the first, so offsets are the original's)."""
    size: int | None = None
    """Size of the file (cut short: truncated); None: header + padding + data."""
    vocab_only: bool = False
    probe_tokens: list[int] = field(default_factory=list)
    """Token ids whose piece and attributes the child reads once loaded (the
    mutated ones)."""


def materialise(m: dict[str, Any], prefix: bytes, out: Path, alignment: int = 32) -> None:
    """Write mutant ``m`` (a :class:`Mutant` as a dict) to ``out``; ``prefix`` holds
    the original's first ``m["prefix"]`` bytes."""
    data = bytearray(prefix)
    for off, hexbytes in m["patches"]:
        b = bytes.fromhex(hexbytes)
        data[off:off + len(b)] = b
    for off, n, hexbytes in sorted(m["splices"], reverse=True):
        data[off:off + n] = bytes.fromhex(hexbytes)
    total = len(data) + (-len(data)) % alignment + int(m["data_size"])
    size = total if m["size"] is None else int(m["size"])
    with out.open("wb") as fh:
        fh.write(data[:size])
        fh.truncate(size)  # the rest is a hole of zeros


def gguf_string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def gguf_kv(key: str, vtype: int, value: object) -> bytes:
    """The bytes of one key/value pair (arrays: ``value`` is ``(etype, items)``)."""
    out = gguf_string(key.encode()) + struct.pack("<I", vtype)
    if vtype == STR:
        return out + gguf_string(value if isinstance(value, bytes) else str(value).encode())
    if vtype == ARR:
        etype, items = cast("tuple[int, list[Any]]", value)
        out += struct.pack("<IQ", etype, len(items))
        for item in items:
            out += (gguf_string(item) if etype == STR
                    else struct.pack(SCALAR_FMT[etype], item))
        return out
    return out + struct.pack(SCALAR_FMT[vtype], value)


def hostile_kvs(arch: str, n_vocab: int, n_layer: int) -> list[tuple[str, int, object]]:
    """Key/value pairs to add to a model: values llama.cpp's loaders must refuse
    or survive (expert counts, alignment, rope scaling, special tokens ...)."""
    a = arch
    nan, inf = float("nan"), float("inf")
    kvs: list[tuple[str, int, object]] = []
    for v in (0, 1, 2, 64, 1025, 0xFFFF_FFFF):
        kvs += [(f"{a}.expert_count", U32, v), (f"{a}.expert_used_count", U32, v),
                (f"{a}.expert_group_count", U32, v)]
    kvs += [(f"{a}.expert_used_count", ARR, (U32, [2] * n)) for n in (0, 1, n_layer, 10_000)]
    kvs += [(f"{a}.attention.head_count", ARR, (U32, [9] * n)) for n in (0, 1, n_layer, 600)]
    kvs += [(f"{a}.attention.head_count_kv", ARR, (U32, [0] * n)) for n in (1, n_layer)]
    kvs += [(f"{a}.nextn_predict_layers", U32, v) for v in (1, n_layer, n_layer + 1, 1 << 31)]
    kvs += [(f"{a}.rope.scaling.type", STR, v) for v in ("bogus", "", "yarn", "longrope", "none")]
    kvs += [(f"{a}.rope.scaling.factor", F32, v) for v in (0.0, -1.0, nan, inf, 1e30)]
    kvs += [(f"{a}.attention.layer_norm_epsilon", F32, v) for v in (nan, -1.0, 0.0)]
    kvs += [(f"{a}.pooling_type", U32, v) for v in (0, 1, 2, 3, 4, 7, 1 << 31)]
    kvs += [(f"{a}.attention.causal", BOOL, v) for v in (0, 1, 2)]
    kvs += [(f"{a}.attention.sliding_window", U32, v) for v in (0, 1, 1 << 31)]
    kvs += [(f"{a}.embedding_length_out", U32, v) for v in (0, 1, 1 << 31)]
    kvs += [(f"{a}.classifier.output_labels", ARR, (STR, [b"a", b"b"]))]
    kvs += [("general.alignment", U32, v) for v in (0, 1, 3, 64, 1 << 31)]
    kvs += [("general.alignment", U64, 32), ("general.alignment", STR, "32")]
    kvs += [("tokenizer.ggml.scores", ARR, (F32, [0.5] * n)) for n in (0, 10, n_vocab)]
    kvs += [("tokenizer.ggml.scores", ARR, (I32, [1] * n_vocab))]
    kvs += [("tokenizer.ggml.precompiled_charsmap", ARR, (U8, list(range(256)) * 4)),
            ("tokenizer.ggml.precompiled_charsmap", ARR, (U8, [255, 255, 255, 127]))]
    for key in ("eot", "eom", "sep", "mask", "fim_pre", "cls"):
        kvs += [(f"tokenizer.ggml.{key}_token_id", U32, v) for v in (n_vocab, 0xFFFF_FFFF)]
    kvs += [(f"tokenizer.ggml.{k}", BOOL, 1) for k in ("add_eos_token", "add_sep_token")]
    kvs += [("tokenizer.ggml.eos_token_ids", ARR, (U32, [n_vocab + 5, 0xFFFF_FFFF]))]
    kvs += [("tokenizer.ggml.suppress_tokens", ARR, (I32, [-1, n_vocab + 1]))]
    kvs += [("split.count", U16, v) for v in (0, 2, 0xFFFF)]
    kvs += [("split.no", U16, 1), ("split.tensors.count", I32, -1)]
    kvs += [("general.architecture", STR, arch)]  # a duplicate key
    return kvs


TOKENIZER_MODELS = ["llama", "bert", "gpt2", "t5", "rwkv", "plamo2", "none", "no_vocab",
                    "hybriddna", "whitespace", "gemma4", "test", "", "x" * 300]
PRE_TOKENIZERS = ["default", "llama3", "qwen2", "gpt-2", "deepseek-llm", "falcon", "bloom",
                  "smollm", "gemma4", "kimi-k2", "no-such-pre"]
ARCHITECTURES = ["llama", "gemma3", "bert", "t5", "mamba", "rwkv6", "rwkv7", "clip", "qwen3moe",
                 "deepseek2", "gpt2", "wavtokenizer-dec", "jamba", "gemma3n", "nomic-bert-moe",
                 "bogus-arch", ""]


def _interesting(slot: Slot, layout: Layout, rng: random.Random) -> list[int]:
    """Values worth writing into an integer slot of width ``slot.fmt``."""
    bits = struct.calcsize(slot.fmt) * 8
    mask = (1 << bits) - 1
    v = int(slot.value)
    values = [0, 1, 2, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF,
              1 << 32, (1 << 32) + 1, 1 << 40, (1 << 62), (1 << 63) - 1, 1 << 63, mask,
              v + 1, v - 1, v * 2, v * 1000, v + 1 << 20, layout.file_size,
              layout.file_size - slot.offset, rng.getrandbits(bits), rng.getrandbits(16)]
    return [x & mask for x in values]


def _pack(slot: Slot, value: int) -> str:
    fmt = slot.fmt.upper() if slot.fmt[-1] in "bhiq" else slot.fmt
    if fmt in ("<f", "<d"):
        return struct.pack(fmt, float(value)).hex()
    return struct.pack(fmt, value & ((1 << struct.calcsize(fmt) * 8) - 1)).hex()


def make_mutants(base: Path, n: int, seed: int, first_id: int = 0) -> list[Mutant]:
    """``n`` seeded mutants of ``base`` (the same seed gives the same mutants)."""
    rng = random.Random(seed)
    layout = walk_gguf(base, seed)
    with base.open("rb") as fh:
        original = fh.read(layout.tensor_info_end)
    by_kind: dict[str, list[Slot]] = {}
    for s in layout.slots:
        by_kind.setdefault(s.kind, []).append(s)
    n_kv_slot, n_tensors_slot = by_kind["n_kv"][0], by_kind["n_tensors"][0]
    header = by_kind["version"] + by_kind["n_tensors"] + by_kind["n_kv"]
    lengths = by_kind["key_len"] + by_kind["string_len"] + by_kind["name_len"]
    arrays = by_kind["array_len"]
    types = by_kind["value_type"] + by_kind["array_type"]
    tensors = by_kind["n_dims"] + by_kind["dim"] + by_kind["ggml_type"] + by_kind["tensor_offset"]
    values = [s for s in by_kind["value"] if s.fmt not in ("<f", "<d")]
    floats = [s for s in by_kind["value"] if s.fmt in ("<f", "<d")]
    small_kv_end = min([s.offset for s in arrays] + [layout.tensor_info_start])
    arch = layout.strings["general.architecture"].decode()
    n_vocab = next(int(s.value) for s in arrays if s.label == "tokenizer.ggml.tokens")
    n_layer = next(int(s.value) for s in values if s.label == f"{arch}.block_count")
    extra_kvs = hostile_kvs(arch, n_vocab, n_layer)
    data_size = layout.file_size - layout.data_offset
    out: list[Mutant] = []

    def add(desc: str, patches: list[tuple[int, str]] | None = None,
            splices: list[tuple[int, int, str]] | None = None, size: int | None = None) -> None:
        out.append(Mutant(first_id + len(out), str(base), desc, layout.tensor_info_end,
                          data_size, patches or [], splices or [], size,
                          vocab_only=rng.random() < 0.2))

    def set_slot(slot: Slot, value: int, what: str) -> None:
        add(f"{what} {slot.kind} of {slot.label!r} @{slot.offset}: {int(slot.value)} -> {value}",
            [(slot.offset, _pack(slot, value))])
        if slot.label.startswith("tokenizer.ggml.") and slot.label.endswith("]"):
            out[-1].probe_tokens = [int(slot.label.rsplit("[", 1)[1][:-1])]

    def count(slot: Slot, delta: int) -> tuple[int, str]:
        return (slot.offset, _pack(slot, int(slot.value) + delta))

    # the mix of operators (weights sum to 1)
    operators = [("flip", 0.17), ("trunc", 0.08), ("header", 0.04), ("length", 0.09),
                 ("array", 0.06), ("type", 0.07), ("tensor", 0.12), ("value", 0.09),
                 ("float", 0.03), ("add_kv", 0.12), ("del_kv", 0.04), ("string", 0.07),
                 ("del_tensor", 0.02)]
    names = [o for o, _ in operators]
    weights = [w for _, w in operators]
    while len(out) < n:
        op = rng.choices(names, weights)[0]
        if op == "flip":
            region = rng.choice([(0, layout.kv_start), (layout.kv_start, small_kv_end),
                                 (layout.kv_start, layout.tensor_info_start),
                                 (layout.tensor_info_start, layout.tensor_info_end)])
            patches = []
            for _ in range(rng.randint(1, 4)):
                off = rng.randrange(*region)
                patches.append((off, bytes([original[off] ^ (1 << rng.randrange(8))]).hex()))
            add(f"bit flips at {[p[0] for p in patches]}", patches)
        elif op == "trunc":
            where = rng.random()
            if where < 0.5:
                size = rng.randrange(0, layout.data_offset)
            elif where < 0.8:
                size = max(0, rng.choice(layout.slots).offset + rng.randint(-2, 10))
            else:
                size = rng.randrange(layout.data_offset, layout.file_size)
            add(f"truncated to {size} bytes", size=size)
        elif op == "header":
            slot = rng.choice(header)
            set_slot(slot, rng.choice(_interesting(slot, layout, rng)), "count")
        elif op == "length":
            slot = rng.choice(lengths)
            set_slot(slot, rng.choice(_interesting(slot, layout, rng)), "length")
        elif op == "array":
            slot = rng.choice(arrays)
            set_slot(slot, rng.choice(_interesting(slot, layout, rng)), "array length")
        elif op == "type":
            slot = rng.choice(types)
            set_slot(slot, rng.choice([*range(0, 14), 0xFF, 0x7FFF_FFFF, 0xFFFF_FFFF,
                                       rng.getrandbits(32)]), "type")
        elif op == "tensor":
            slot = rng.choice(tensors)
            if slot.kind == "n_dims":
                value = rng.choice([0, 1, 2, 3, 4, 5, 8, 0xFFFF_FFFF, rng.getrandbits(32)])
            elif slot.kind == "ggml_type":
                value = rng.choice([*range(0, 44), 0xFFFF_FFFF, 0x8000_0000])
            else:
                value = rng.choice(_interesting(slot, layout, rng))
            set_slot(slot, value, "tensor")
        elif op == "value":
            slot = rng.choice(values)
            choices = _interesting(slot, layout, rng)
            if slot.label.startswith("tokenizer.ggml.token_type"):
                choices = [*range(8)] * 3 + choices  # token types: 6 is BYTE
            set_slot(slot, rng.choice(choices), "value")
        elif op == "float":
            slot = rng.choice(floats)
            bad = rng.choice([float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e38])
            add(f"float {slot.label!r} @{slot.offset}: {slot.value} -> {bad}",
                [(slot.offset, struct.pack(slot.fmt, bad).hex())])
        elif op == "add_kv":
            key, vtype, kv_value = rng.choice(extra_kvs)
            kv = gguf_kv(key, vtype, kv_value)
            shown = (kv_value if vtype != ARR else "{} x type {}".format(
                len(cast("tuple[int, list[Any]]", kv_value)[1]),
                cast("tuple[int, list[Any]]", kv_value)[0]))
            add(f"added {key} = {shown!r} (type {vtype})", [count(n_kv_slot, 1)],
                [(layout.tensor_info_start, 0, kv.hex())])
        elif op == "del_kv":
            key = rng.choice(sorted(layout.kvs))
            start, end, _ = layout.kvs[key]
            add(f"removed {key}", [count(n_kv_slot, -1)], [(start, end - start, "")])
        elif op == "string":
            key = rng.choice(["tokenizer.ggml.model"] * 6 + ["tokenizer.ggml.pre"] * 3
                             + ["general.architecture"] * 4 + sorted(layout.strings))
            if key not in layout.kvs:
                continue
            texts = {"tokenizer.ggml.model": TOKENIZER_MODELS,
                     "tokenizer.ggml.pre": PRE_TOKENIZERS,
                     "general.architecture": ARCHITECTURES}.get(key, ["", "x" * 1000, "\udcff"])
            text = rng.choice(texts).encode("utf-8", "surrogateescape")
            start, end, _ = layout.kvs[key]
            add(f"{key} = {text[:40]!r}", [],
                [(start, end - start, gguf_kv(key, STR, text).hex())])
        else:  # del_tensor: the last tensor info (the others would break the offsets)
            name, start, end = layout.tensor_infos[-1]
            add(f"removed tensor {name}", [count(n_tensors_slot, -1)], [(start, end - start, "")])
    return out


CHILD = r"""
import json, os, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
from tests.test_gguf_mutants import materialise
import llama_cffi as lc
plan = {m["id"]: m for m in json.load(open(sys.argv[1]))}
ids = json.loads(sys.stdin.readline())
workdir = Path(sys.argv[1]).parent
deep = os.environ.get("MUTANT_DEEP", "1") == "1"
prefixes = {}
for i in ids:
    m = plan[i]
    if m["base"] not in prefixes:
        with open(m["base"], "rb") as fh:
            prefixes[m["base"]] = fh.read(m["prefix"])
    path = workdir / f"mutant-{os.getpid()}-{i}.gguf"
    materialise(m, prefixes[m["base"]], path)
    print("BEGIN", i, flush=True)
    try:
        model = lc.Model(path, vocab_only=m["vocab_only"])
        _ = model.vocab.n_tokens, model.description, model.metadata, model.chat_template()
    except lc.ModelLoadError as e:
        rec = {"id": i, "result": "refused", "type": type(e).__name__, "message": str(e)}
    except BaseException as e:
        rec = {"id": i, "result": "other", "type": type(e).__name__, "message": str(e)}
    else:
        rec = {"id": i, "result": "loaded"}
        if deep:  # use it a little: what a caller does next must not crash either
            print("PHASE use", flush=True)
            try:
                toks = model.vocab.tokenize("Hello world, 123! \u00e9\u4e16\U0001f600")
                model.vocab.detokenize(toks)
                n = model.vocab.n_tokens
                for t in [*range(min(n, 8)), *range(max(0, n - 8), n), *m["probe_tokens"]]:
                    if 0 <= t < n:
                        model.vocab.token_to_piece(t, special=True)
                        model.vocab.attr(t)
                if not m["vocab_only"]:
                    with model.context(n_ctx=64, n_batch=64) as ctx:
                        ctx.eval_tokens(toks[:8] or [0], 0)
                        ctx.logits()
                rec["use"] = "ok"
            except Exception as e:
                rec["use"] = "raised" if isinstance(e, lc.LlamaError) else "other"
                rec["use_message"] = type(e).__name__ + ": " + str(e)[:500]
        model.close()
    path.unlink()
    print("RESULT", json.dumps(rec), flush=True)
print("DONE", flush=True)
"""


def run_mutants(plan_path: Path, ids: list[int], workers: int = N_WORKERS,
                timeout: float = MUTANT_TIMEOUT_S) -> dict[int, dict[str, str]]:
    """Classify the mutants ``ids`` of the plan in child processes (many mutants
    per child; after a crash or hang the next child goes on from the mutant
    after the one that failed)."""
    argv = [sys.executable, "-c", CHILD, str(plan_path), str(CHILD_MEMORY_LIMIT)]
    raw = run_parallel(argv, ids, workers=workers, timeout=timeout, env=child_env(ROOT))
    results: dict[int, dict[str, str]] = {}
    for i, rec in raw.items():
        if rec["result"] in ("crash", "hang") and rec["phase"] == "use":
            rec = {"id": i, "result": "loaded", "use": rec["result"],
                   "use_message": f"exit {rec['exit']}: {rec['stderr']}"}
        elif rec["result"] in ("crash", "hang"):
            rec = {"id": i, "result": rec["result"], "type": f"exit {rec['exit']}",
                   "message": rec["stderr"]}
        results[i] = rec
    return results


def write_plan(mutants: list[Mutant], directory: Path) -> Path:
    plan = directory / "plan.json"
    plan.write_text(json.dumps([asdict(m) for m in mutants]))
    return plan


def all_mutants(smollm2: Path, gemma3: Path, seed: int = SEED,
                n_smollm2: int = N_SMOLLM2, n_gemma: int = N_GEMMA) -> list[Mutant]:
    """The seeded mutants of both test models."""
    mutants = make_mutants(smollm2, n_smollm2, seed)
    return mutants + make_mutants(gemma3, n_gemma, seed + 1, first_id=len(mutants))


# -- tests ------------------------------------------------------------------------


def test_mutants_are_reproducible(smollm2_path: Path) -> None:
    a = make_mutants(smollm2_path, 50, SEED)
    b = make_mutants(smollm2_path, 50, SEED)
    assert [asdict(m) for m in a] == [asdict(m) for m in b]
    assert len({m.desc for m in a}) > 40  # and varied
    c = make_mutants(smollm2_path, 50, SEED + 1)
    assert [m.desc for m in a] != [m.desc for m in c]


def test_walker_finds_every_field(smollm2_path: Path, gemma3_path: Path) -> None:
    import gguf

    for path in (smollm2_path, gemma3_path):
        layout = walk_gguf(path)
        reader = gguf.GGUFReader(path)
        assert layout.data_offset == reader.data_offset
        kinds = [s.kind for s in layout.slots]
        assert kinds.count("key_len") == len(reader.fields) - 3  # less GGUF.* pseudo-fields
        assert kinds.count("name_len") == len(reader.tensors)
        assert kinds.count("n_dims") == len(reader.tensors)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path,
             gemma3_path: Path) -> tuple[list[Mutant], dict[int, dict[str, str]], float]:
    """All mutants, loaded and used in child processes: (mutants, results, seconds)."""
    mutants = all_mutants(smollm2_path, gemma3_path)
    plan = write_plan(mutants, tmp_path_factory.mktemp("mutants"))
    start = time.monotonic()
    results = run_mutants(plan, [m.id for m in mutants])
    return mutants, results, time.monotonic() - start


def _describe(m: Mutant, r: dict[str, str], *keys: str) -> str:
    got = " | ".join(str(r.get(k, ""))[-700:] for k in keys)
    return f"#{m.id} {Path(m.base).name}: {m.desc}\n    -> {got}"


@pytest.mark.slow
def test_gguf_mutants_load_or_refuse(campaign: tuple[list[Mutant], dict[int, dict[str, str]],
                                                     float]) -> None:
    mutants, results, elapsed = campaign
    assert len(mutants) >= 500
    assert sorted(results) == [m.id for m in mutants]  # every mutant classified
    bad = [_describe(m, results[m.id], "result", "type", "message") for m in mutants
           if not (results[m.id]["result"] == "loaded"
                   or (results[m.id]["result"] == "refused"
                       and results[m.id]["message"].strip()))]
    counts = {k: sum(r["result"] == k for r in results.values())
              for k in ("loaded", "refused", "crash", "hang", "other")}
    assert not bad, f"{len(bad)} mutants misbehaved {counts}:\n" + "\n".join(bad)
    # the mutants exercise both outcomes, and both checkers (Python's, llama.cpp's)
    refused = [r["message"] for r in results.values() if r["result"] == "refused"]
    assert counts["loaded"] > 50 and counts["refused"] > 300, counts
    assert sum("invalid GGUF file" in msg for msg in refused) > 50
    assert sum("llama.cpp said" in msg for msg in refused) > 50
    print(f"{len(mutants)} mutants in {elapsed:.0f} s: {counts}")


@pytest.mark.slow
def test_loaded_mutants_can_be_used(campaign: tuple[list[Mutant], dict[int, dict[str, str]],
                                                    float]) -> None:
    mutants, results, _ = campaign
    loaded = [m for m in mutants if results[m.id]["result"] == "loaded"]
    bad = [_describe(m, results[m.id], "use", "use_message") for m in loaded
           if results[m.id].get("use") not in ("ok", "raised")]
    assert not bad, f"{len(bad)} loaded mutants crashed or misbehaved in use:\n" + "\n".join(bad)
    assert sum(results[m.id]["use"] == "ok" for m in loaded) > 50
