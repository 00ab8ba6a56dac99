"""What Ollama's model listings show (``/api/tags``, ``/api/ps``, ``/api/show``),
read from the GGUF file without loading the model.

:func:`gguf_summary` streams a GGUF file's header, key/value section and
tensor infos (never the tensor data): the scalar and string metadata, the
number of parameters and the tensor types. It reads through a memory map
with every read bounded by the file's size, and is cached per file (path,
size, modification time), so listing models costs one pass per file.

Ollama's ``digest`` is the sha256 of the model's blob; hashing a multi-GiB
file for a listing is not cheap, so the digest here is the sha256 of the
file's resolved path, size and modification time: stable while the file is
unchanged, different when it changes.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import mmap
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# GGUF value types (gguf.h) and the struct format of the scalar ones
_STRING, _ARRAY = 8, 9
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}
_MAX_DIMS = 4

GGML_TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
    23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
    30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0", 42: "Q2_0",
}
"""ggml_type ids (ggml.h) -> names, for a file without ``general.file_type``."""

FILE_TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}
"""``general.file_type`` (llama.h's ``llama_ftype``) -> Ollama's quantization_level."""


class GgufReadError(ValueError):
    """The file is not a GGUF file this reader can follow."""


@dataclass
class GgufSummary:
    """Metadata of a GGUF file: scalar and string values by key, arrays as
    their length only (``array_lengths``), parameters and tensor types."""

    metadata: dict[str, Any] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)
    n_params: int = 0
    tensor_types: Counter[str] = field(default_factory=Counter)
    """Elements per ggml tensor type."""


class _Reader:
    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0

    def take(self, n: int) -> int:
        if n < 0 or n > self.size - self.pos:
            raise GgufReadError("the file ends inside its metadata")
        start = self.pos
        self.pos += n
        return start

    def scalar(self, fmt: str) -> Any:
        start = self.take(struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.buf, start)[0]

    def string(self) -> str:
        n = int(self.scalar("<Q"))
        start = self.take(n)
        return bytes(self.buf[start:start + n]).decode("utf-8", "replace")

    def skip_string(self) -> None:
        self.take(int(self.scalar("<Q")))

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        fmt = _SCALAR.get(kind)
        if fmt is None:
            raise GgufReadError(f"unknown GGUF value type {kind}")
        return self.scalar(fmt)

    def skip_array(self, kind: int, count: int) -> None:
        if kind == _STRING:
            for _ in range(count):
                self.skip_string()
        elif kind in _SCALAR:
            self.take(count * struct.calcsize(_SCALAR[kind]))
        else:
            raise GgufReadError(f"unsupported GGUF array element type {kind}")


def _read(path: Path) -> GgufSummary:
    size = path.stat().st_size
    with path.open("rb") as fh:
        if size < 24:
            raise GgufReadError(f"{path} is too small to be a GGUF file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            r = _Reader(buf, size)
            if bytes(buf[0:4]) != b"GGUF":
                raise GgufReadError(f"{path} is not a GGUF file")
            r.take(4)
            version = int(r.scalar("<I"))
            if version not in (2, 3):
                raise GgufReadError(f"{path}: unsupported GGUF version {version}")
            n_tensors, n_kv = int(r.scalar("<Q")), int(r.scalar("<Q"))
            out = GgufSummary()
            for _ in range(n_kv):
                key = r.string()
                kind = int(r.scalar("<I"))
                if kind == _ARRAY:
                    elem, count = int(r.scalar("<I")), int(r.scalar("<Q"))
                    out.array_lengths[key] = count
                    r.skip_array(elem, count)
                else:
                    out.metadata[key] = r.value(kind)
            for _ in range(n_tensors):
                r.skip_string()  # the tensor's name
                n_dims = int(r.scalar("<I"))
                if n_dims > _MAX_DIMS:
                    raise GgufReadError(f"{path}: a tensor has {n_dims} dimensions")
                n = 1
                for _ in range(n_dims):
                    n *= int(r.scalar("<Q"))
                kind = int(r.scalar("<I"))
                r.take(8)  # data offset
                out.n_params += n
                out.tensor_types[GGML_TYPE_NAMES.get(kind, f"type{kind}")] += n
            return out


@functools.lru_cache(maxsize=64)
def _cached(path: str, size: int, mtime_ns: int) -> GgufSummary:
    return _read(Path(path))


def gguf_summary(path: str | Path) -> GgufSummary:
    """The metadata of the GGUF file at ``path`` (cached while the file is unchanged).

    Raises OSError if the file cannot be read, GgufReadError if it is not GGUF.
    """
    p = Path(path).resolve()
    st = p.stat()
    return _cached(str(p), st.st_size, st.st_mtime_ns)


def file_facts(path: str | Path) -> tuple[int, str, str]:
    """(size in bytes, digest, modified_at as RFC 3339) of a model file."""
    p = Path(path).resolve()
    st = p.stat()
    digest = hashlib.sha256(f"{p}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    modified = dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)
    return st.st_size, digest, rfc3339(modified)


def rfc3339(when: dt.datetime) -> str:
    """``2024-09-12T03:54:03.516566Z`` (Ollama's timestamps)."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def human_number(n: int) -> str:
    """A parameter count as Ollama writes it (``135M``, ``1.7B``)."""
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{unit}" if value >= 100 or value == int(value) \
                else f"{value:.1f}{unit}"
    return str(n)


def details(summary: GgufSummary) -> dict[str, Any]:
    """Ollama's ``details`` object of a model file."""
    meta = summary.metadata
    family = str(meta.get("general.architecture", "")) or None
    size_label = meta.get("general.size_label")
    parameter_size = (str(size_label) if isinstance(size_label, str) and size_label
                      else human_number(summary.n_params) if summary.n_params else "")
    file_type = meta.get("general.file_type")
    if isinstance(file_type, int) and file_type in FILE_TYPE_NAMES:
        quantization = FILE_TYPE_NAMES[file_type]
    elif summary.tensor_types:
        quantization = summary.tensor_types.most_common(1)[0][0]
    else:
        quantization = ""
    return {"parent_model": "", "format": "gguf", "family": family or "",
            "families": [family] if family else None, "parameter_size": parameter_size,
            "quantization_level": quantization}


def model_info(summary: GgufSummary) -> dict[str, Any]:
    """Ollama's ``model_info``: the metadata, arrays as null (as Ollama does
    unless ``verbose``), plus ``general.parameter_count``."""
    out: dict[str, Any] = {k: None for k in summary.array_lengths}
    out.update(summary.metadata)
    out.setdefault("general.parameter_count", summary.n_params)
    return dict(sorted(out.items()))


EMBEDDING_ARCHS = frozenset({"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2",
                             "jina-bert-v3", "modern-bert", "neo-bert", "t5encoder"})


def capabilities(summary: GgufSummary) -> list[str]:
    """What the model does, Ollama's words: completion, embedding, tools, insert."""
    meta = summary.metadata
    arch = str(meta.get("general.architecture", ""))
    if arch in EMBEDDING_ARCHS or meta.get(f"{arch}.pooling_type") not in (None, 0):
        return ["embedding"]
    caps = ["completion"]
    template = meta.get("tokenizer.chat_template")
    if isinstance(template, str) and "tools" in template:
        caps.append("tools")
    if "tokenizer.ggml.fim_pre_token_id" in meta and "tokenizer.ggml.fim_suf_token_id" in meta:
        caps.append("insert")
    return caps
