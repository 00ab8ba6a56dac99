"""A Python-side check of a GGUF file before llama.cpp reads it.

llama.cpp's GGUF reader bounds what it reads, but the model and vocabulary
loaders behind it trust some of the metadata and end the whole process
(``GGML_ASSERT``/``GGML_ABORT``) when it is inconsistent: a ``block_count``
of 0 or above 512, two identical token strings, a negative norm epsilon, a
1-D weight in a type the compute kernels do not take... (docs/safety.md
lists the cases found by ``tests/test_gguf_mutants.py``). :func:`check_gguf`
streams the header, the key/value section and the tensor infos (never the
tensor data) and raises :class:`ModelLoadError` for those, and for structure
that no valid file has (unknown value types, nested arrays, more than 4
dimensions, unknown tensor types, misplaced data).

A file that ends early (a truncated download, or a count or length that runs
past the end of the file) is left to llama.cpp, which refuses it cleanly with
its own diagnosis; the check stops there. Every loop is bounded by the file's
size, and nothing bigger than one token string is copied.
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NoReturn

from ..errors import ModelLoadError

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
GGML_MAX_DIMS = 4
GGML_MAX_NAME = 64
"""Tensor names are stored in ``char[GGML_MAX_NAME]`` (with the terminator)."""
LLAMA_MAX_LAYERS = 512
LLAMA_MAX_EXPERTS = 1024
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")
GGUF_DEFAULT_ALIGNMENT = 32
TENSOR_ALIGNMENT = 32
"""ggml maps tensor data only at addresses aligned to this (ggml-impl.h)."""
POOLING_TYPES = range(-1, 5)
"""llama_pooling_type: unspecified, none, mean, cls, last, rank."""
INT64_MAX = (1 << 63) - 1
_U64 = struct.Struct("<Q")

# GGUF value types (gguf.h): struct format of the scalar ones
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, \
    T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(13)
SCALAR_FORMAT = {T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h",
                 T_UINT32: "<I", T_INT32: "<i", T_FLOAT32: "<f", T_BOOL: "<b",
                 T_UINT64: "<Q", T_INT64: "<q", T_FLOAT64: "<d"}
TYPE_NAMES = ("u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64",
              "i64", "f64")

GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20),
    6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 9: ("q8_1", 32, 36),
    10: ("q2_K", 256, 84), 11: ("q3_K", 256, 110), 12: ("q4_K", 256, 144),
    13: ("q5_K", 256, 176), 14: ("q6_K", 256, 210), 15: ("q8_K", 256, 292),
    16: ("iq2_xxs", 256, 66), 17: ("iq2_xs", 256, 74), 18: ("iq3_xxs", 256, 98),
    19: ("iq1_s", 256, 50), 20: ("iq4_nl", 32, 18), 21: ("iq3_s", 256, 110),
    22: ("iq2_s", 256, 82), 23: ("iq4_xs", 256, 136), 24: ("i8", 1, 1), 25: ("i16", 1, 2),
    26: ("i32", 1, 4), 27: ("i64", 1, 8), 28: ("f64", 1, 8), 29: ("iq1_m", 256, 56),
    30: ("bf16", 1, 2), 34: ("tq1_0", 256, 54), 35: ("tq2_0", 256, 66),
    39: ("mxfp4", 32, 17), 40: ("nvfp4", 64, 36), 41: ("q1_0", 128, 18), 42: ("q2_0", 64, 18),
}
"""ggml tensor types of the pinned llama.cpp: id -> (name, block size, bytes per block).
Ids 4, 5, 31-33 and 36-38 were removed from ggml (a test compares this table
with the vendored gguf-py)."""


class _EndOfFile(Exception):
    """The file ends before the structure it announces: left to llama.cpp."""


class _Reader:
    """Bounded little-endian reads over a memory-mapped file."""

    def __init__(self, buf: mmap.mmap | bytes, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0

    def need(self, n: int) -> None:
        if n > self.size - self.pos:
            raise _EndOfFile

    def scalar(self, fmt: str) -> int | float:
        n = struct.calcsize(fmt)
        self.need(n)
        value: int | float = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def u32(self) -> int:
        return int(self.scalar("<I"))

    def u64(self) -> int:
        return int(self.scalar("<Q"))

    def string(self) -> bytes:
        n = self.u64()
        self.need(n)
        s = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return s


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class _Checker:
    """One pass over a GGUF file; :meth:`fail` raises the ModelLoadError."""

    def __init__(self, path: Path, reader: _Reader) -> None:
        self.path = path
        self.r = reader
        self.kv: dict[str, object] = {}
        """Scalar values, strings and numeric arrays (up to 1024 elements) by key."""
        self.array_start = 0
        """Where the elements of the array being read start."""
        self.tokens: set[bytes] | None = None
        """The vocabulary's token strings (an empty one named as llama.cpp does)."""

    def fail(self, detail: str) -> NoReturn:
        raise ModelLoadError(f"invalid GGUF file {self.path}: {detail}")

    # -- header and key/value section -----------------------------------------

    def header(self) -> tuple[int, int]:
        r = self.r
        r.need(4)
        if bytes(r.buf[0:4]) != GGUF_MAGIC:
            self.fail("it does not start with the GGUF magic")
        r.pos = 4
        version = r.u32()
        if version not in GGUF_VERSIONS:
            hint = (" (a big-endian file?)" if version & 0xFFFF == 0 else "")
            self.fail(f"GGUF version {version} is not supported{hint}; "
                      f"llama.cpp reads versions {GGUF_VERSIONS[0]}-{GGUF_VERSIONS[-1]}")
        n_tensors, n_kv = r.u64(), r.u64()
        for what, n in (("tensors", n_tensors), ("key/value pairs", n_kv)):
            if n > INT64_MAX:
                self.fail(f"the number of {what} ({n}) is negative as a 64-bit integer")
        return n_tensors, n_kv

    def key_values(self, n_kv: int) -> None:
        r = self.r
        # a pair takes at least 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes
        if n_kv * 14 > r.size - r.pos:
            raise _EndOfFile
        for i in range(n_kv):
            key = _text(r.string())
            if not key:
                self.fail(f"key/value pair #{i} has an empty key")
            if key in self.kv:
                self.fail(f"key {key!r} appears twice")
            vtype = r.u32()
            if vtype == T_ARRAY:
                etype, n = r.u32(), r.u64()
                self.array(key, etype, n)
            else:
                self.kv[key] = self.value(key, vtype)

    def _known_type(self, key: str, vtype: int, what: str = "value") -> None:
        if vtype >= len(TYPE_NAMES) or vtype == T_ARRAY:
            self.fail(f"key {key!r} has an unknown {what} type {vtype} "
                      f"(GGUF types are 0-12, arrays of arrays are not supported)")

    def value(self, key: str, vtype: int) -> int | float | str:
        self._known_type(key, vtype)
        if vtype == T_STRING:
            return _text(self.r.string())
        return self.r.scalar(SCALAR_FORMAT[vtype])

    def array(self, key: str, etype: int, n: int) -> None:
        r = self.r
        self._known_type(key, etype, "array element")
        if etype == T_STRING:
            if n * 8 > r.size - r.pos:
                raise _EndOfFile
            self.array_start = r.pos
            self.strings(n, key if key == "tokenizer.ggml.tokens" else None)
            self.kv[key] = [n]  # only the length matters for strings
            return
        width = struct.calcsize(SCALAR_FORMAT[etype])
        r.need(n * width)
        if n <= 1024:
            fmt = "<" + SCALAR_FORMAT[etype][1] * n
            self.kv[key] = list(struct.unpack_from(fmt, r.buf, r.pos))
        r.pos += n * width

    def strings(self, n: int, unique: str | None = None) -> None:
        """Skip ``n`` strings; with ``unique`` (the key), fail on a repeated one.

        The vocabulary must not repeat a token: llama.cpp aborts when two tokens
        have the same text (it names an empty token ``[EMPTY_<id>]``). This loop
        is the check's hot path (262k tokens for Gemma 3), hence the locals.
        """
        r = self.r
        buf, pos, size = r.buf, r.pos, r.size
        length = _U64.unpack_from
        words: set[bytes] = set()
        keep = words.add
        for i in range(n):
            if pos + 8 > size:
                raise _EndOfFile
            end = pos + 8 + length(buf, pos)[0]
            if end > size:
                raise _EndOfFile
            if unique is not None:
                keep(buf[pos + 8:end] or b"[EMPTY_%d]" % i)
            pos = end
        r.pos = pos
        if unique is not None:
            self.tokens = words
            if len(words) != n:
                self.repeated(unique, n)

    def repeated(self, key: str, n: int) -> None:
        """Name the first repeated string of the array that ends at the reader's
        position (the slow path of :meth:`strings`)."""
        r = self.r
        end = r.pos
        r.pos = self.array_start
        first: dict[bytes, int] = {}
        for i in range(n):
            word = r.string() or b"[EMPTY_%d]" % i
            j = first.setdefault(word, i)
            if j != i:
                self.fail(f"strings {j} and {i} of {key} are both {_text(word)!r}; "
                          f"the tokens of a vocabulary must be unique")
        r.pos = end

    # -- what llama.cpp's loaders assert on --------------------------------------

    def vocabulary(self) -> None:
        """What llama.cpp's tokenizers trust about the vocabulary: a SentencePiece
        vocabulary (``tokenizer.ggml.model = "llama"``) falls back to the byte
        tokens ``<0x00>``..``<0xFF>`` for text it has no token for; without them
        llama.cpp throws an uncaught ``std::out_of_range`` (the process ends) on
        the first such character."""
        tokens = self.tokens
        if tokens is None or self.kv.get("tokenizer.ggml.model") != "llama":
            return
        for b in range(256):
            if b"<0x%02X>" % b not in tokens and bytes([b]) not in tokens:
                self.fail(f"the SentencePiece vocabulary (tokenizer.ggml.model 'llama') has "
                          f"no byte token <0x{b:02X}>: llama.cpp's tokenizer needs the 256 "
                          f"byte tokens <0x00>..<0xFF> to encode text outside the vocabulary")

    def metadata(self) -> None:
        """The values llama.cpp's model loader checks with GGML_ASSERT (which
        ends the process) instead of an error."""
        problem = metadata_problem(self.kv)
        if problem:
            self.fail(problem)

    # -- tensor infos --------------------------------------------------------------

    def tensors(self, n_tensors: int) -> None:
        r = self.r
        # an info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes
        if n_tensors * 24 > r.size - r.pos:
            raise _EndOfFile
        alignment = self.kv.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            self.fail(f"general.alignment ({alignment!r}) must be a power of two")
        infos: list[tuple[str, int, int]] = []  # name, offset, size in bytes
        names: set[str] = set()
        for i in range(n_tensors):
            name = _text(r.string())
            if len(name.encode()) >= GGML_MAX_NAME:
                self.fail(f"tensor #{i} has a name of {len(name.encode())} bytes "
                          f"(at most {GGML_MAX_NAME - 1}): {name[:80]!r}")
            if name in names:
                self.fail(f"tensor {name!r} appears twice")
            names.add(name)
            n_dims = r.u32()
            if n_dims > GGML_MAX_DIMS:
                self.fail(f"tensor {name!r} has {n_dims} dimensions (at most {GGML_MAX_DIMS})")
            ne = [int(r.scalar("<q")) for _ in range(n_dims)]
            ggml_type, offset = r.u32(), r.u64()
            infos.append((name, offset, self.tensor_size(name, ne, ggml_type)))
        data_start = -(-r.pos // alignment) * alignment
        expected = 0
        for name, offset, nbytes in infos:
            if offset != expected:
                self.fail(f"tensor {name!r} has data offset {offset}, expected {expected} "
                          f"(tensor data must follow one another, aligned to {alignment} bytes)")
            if (data_start + offset) % TENSOR_ALIGNMENT and nbytes:
                self.fail(f"the data of tensor {name!r} starts at byte {data_start + offset} of "
                          f"the file, not a multiple of {TENSOR_ALIGNMENT} (general.alignment is "
                          f"{alignment}): llama.cpp aborts when it maps such a file")
            expected += -(-nbytes // alignment) * alignment
        if infos and data_start + infos[-1][1] + infos[-1][2] > r.size:
            raise _EndOfFile  # the data is cut: llama.cpp names the first missing tensor

    def tensor_size(self, name: str, ne: list[int], ggml_type: int) -> int:
        """Bytes of a tensor's data, after checking its shape and type."""
        if any(d < 0 for d in ne):
            self.fail(f"tensor {name!r} has a negative dimension: {ne}")
        n = math.prod(ne)
        if n > INT64_MAX:
            self.fail(f"tensor {name!r} has {n} elements, more than a 64-bit count: {ne}")
        if ggml_type not in GGML_TYPES:
            self.fail(f"tensor {name!r} has unknown ggml type {ggml_type}")
        type_name, block, type_size = GGML_TYPES[ggml_type]
        row = ne[0] if ne else 1
        if row % block:
            self.fail(f"tensor {name!r} of type {type_name} has rows of {row} elements, "
                      f"not a multiple of its block size {block}")
        if len(ne) <= 1 and ggml_type != 0 and row > 0:
            self.fail(f"1-D tensor {name!r} has type {type_name}; llama.cpp computes with "
                      f"1-D weights (norms, biases) only in f32 and aborts otherwise")
        return n // block * type_size


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def value_problem(key: str, value: object) -> str | None:
    """What llama.cpp's model loader would abort on in this one metadata value
    (``<arch>.block_count``, norm epsilons, pooling and rope scaling types,
    expert count), or None. Also used for ``ModelParams.kv_overrides``."""
    arch, _, name = key.partition(".")
    number = _as_int(value)
    if name == "block_count" and number is not None and not 1 <= number <= LLAMA_MAX_LAYERS:
        return f"{key} is {number}; llama.cpp supports 1 to {LLAMA_MAX_LAYERS} layers"
    if name == "expert_count" and number is not None and number > LLAMA_MAX_EXPERTS:
        return f"{key} is {number}, above llama.cpp's {LLAMA_MAX_EXPERTS}"
    if name == "pooling_type" and number is not None and number not in POOLING_TYPES:
        return f"{key} is {number}; llama.cpp knows 0 (none) to 4 (rank)"
    if name == "rope.scaling.type" and isinstance(value, str) \
            and value not in ROPE_SCALING_TYPES:
        return f"{key} is {value!r}; llama.cpp knows {', '.join(ROPE_SCALING_TYPES)}"
    if name in ("attention.layer_norm_epsilon", "attention.layer_norm_rms_epsilon") \
            and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and not (math.isfinite(value) and value >= 0):
        return f"{key} is {value}; a norm epsilon must be finite and >= 0"
    return None


def metadata_problem(kv: Mapping[str, object]) -> str | None:
    """What llama.cpp's model loader would abort on in a model's metadata
    (``kv``: key -> value; arrays as lists), or None."""
    arch = kv.get("general.architecture")
    if not isinstance(arch, str) or arch == "clip":
        return None  # llama.cpp refuses a missing architecture; CLIP has no hparams
    for key, value in kv.items():
        if key.startswith(arch + "."):
            problem = value_problem(key, value)
            if problem:
                return problem
    n_layer = _as_int(kv.get(f"{arch}.block_count"))
    nextn = _as_int(kv.get(f"{arch}.nextn_predict_layers"))
    if nextn is not None and n_layer is not None and nextn > n_layer:
        return f"{arch}.nextn_predict_layers ({nextn}) exceeds {arch}.block_count ({n_layer})"
    n_expert = _as_int(kv.get(f"{arch}.expert_count")) or 0
    used = kv.get(f"{arch}.expert_used_count", 0)
    used_max = _as_int(max(used) if isinstance(used, list) and used else used)
    if used_max is None:
        return None  # a wrong type: llama.cpp refuses it
    groups = _as_int(kv.get(f"{arch}.expert_group_count")) or 0
    group_used = _as_int(kv.get(f"{arch}.expert_group_used_count")) or 0
    problem = None
    if used_max > n_expert or (n_expert > 0 and used_max <= 0):
        problem = f"expert_used_count ({used_max}) must be in 1..expert_count ({n_expert})"
    elif n_expert > 0 and groups >= n_expert:
        problem = f"expert_group_count ({groups}) must be below expert_count ({n_expert})"
    elif n_expert > 0 and groups > 1 and (n_expert % groups or not 0 < group_used < groups):
        problem = (f"expert_count ({n_expert}) must be a multiple of expert_group_count "
                   f"({groups}) and expert_group_used_count ({group_used}) in 1..{groups - 1}")
    elif n_expert == 0 and groups != 0:
        problem = f"expert_group_count is {groups} for a model without experts"
    return f"{arch}.{problem}" if problem else None


def check_gguf(path: str | Path,
               overrides: Mapping[str, object] | Iterable[tuple[str, object]] = ()) -> None:
    """Raise :class:`ModelLoadError` if ``path``'s header, metadata or tensor infos
    are invalid in a way llama.cpp would not survive (or no valid file has).

    overrides: metadata values that replace the file's (``kv_overrides``), so
        that the combination llama.cpp will see is checked.

    Reads the file's metadata only; a file that ends early passes (llama.cpp
    refuses it with its own diagnosis). A file that cannot be opened passes too:
    the caller reports that.
    """
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError:
        return
    with fh:
        size = path.stat().st_size
        if size == 0:
            return
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return
        with buf:
            checker = _Checker(path, _Reader(buf, size))
            try:
                n_tensors, n_kv = checker.header()
                checker.key_values(n_kv)
                checker.kv.update(dict(overrides))
                checker.metadata()
                checker.vocabulary()
                checker.tensors(n_tensors)
            except _EndOfFile:
                return
