"""A tiny multimodal projector GGUF with random weights, written with the
``gguf`` package the way llama.cpp's clip loader (tools/mtmd/clip.cpp) reads
a LLaVA-1.5 projector (``clip.projector_type = "mlp"``):

* a CLIP-style vision tower: ``v.patch_embd`` (a patch_size x patch_size
  convolution), ``v.position_embd``, ``n_layer`` pre-norm transformer blocks
  (``v.blk.N.{ln1,attn_q,attn_k,attn_v,attn_out,ln2,ffn_up,ffn_down}``),
  of which LLaVA uses all but the last;
* the MLP projector ``mm.0`` -> GELU -> ``mm.2`` into the text model's
  embedding size (``mm.2.weight``'s rows: what libmtmd checks against the
  text model's ``n_embd``).

With image_size 32 and patch_size 8 an image becomes 16 embeddings; the file
is a few hundred KB and encodes in milliseconds. Weights are random but
seeded: the output is meaningless yet deterministic, which is what a
comparison with llama-mtmd-cli needs.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

IMAGE_SIZE = 32
PATCH_SIZE = 8
N_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2


def write_mmproj(path: Path, n_embd_text: int, *, seed: int = 0, n_embd: int = 32,
                 n_head: int = 4, n_ff: int = 48, n_layer: int = 2, n_hidden: int = 64,
                 out_scale: float = 0.3) -> Path:
    """Write the projector to ``path``; ``n_embd_text`` is the text model's
    embedding size (576 for SmolLM2-135M). ``out_scale`` sets the size of the
    projected embeddings: large enough that two images give different replies."""
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "clip")
    w.add_string("general.name", "llama_cffi test projector")
    w.add_string("clip.projector_type", "mlp")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_audio_encoder", False)
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    w.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    w.add_uint32("clip.vision.embedding_length", n_embd)
    w.add_uint32("clip.vision.feed_forward_length", n_ff)
    w.add_uint32("clip.vision.block_count", n_layer)
    w.add_uint32("clip.vision.projection_dim", n_embd_text)
    w.add_uint32("clip.vision.attention.head_count", n_head)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    # numpy shapes are ggml's ne reversed
    w.add_tensor("v.patch_embd.weight", rand(n_embd, 3, PATCH_SIZE, PATCH_SIZE))
    w.add_tensor("v.patch_embd.bias", rand(n_embd, scale=0.02))
    w.add_tensor("v.position_embd.weight", rand(N_PATCHES, n_embd))
    for il in range(n_layer):
        b = f"v.blk.{il}"
        w.add_tensor(f"{b}.ln1.weight", 1.0 + rand(n_embd, scale=0.05))
        w.add_tensor(f"{b}.ln1.bias", rand(n_embd, scale=0.02))
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(f"{b}.{name}.weight", rand(n_embd, n_embd))
            w.add_tensor(f"{b}.{name}.bias", rand(n_embd, scale=0.02))
        w.add_tensor(f"{b}.ln2.weight", 1.0 + rand(n_embd, scale=0.05))
        w.add_tensor(f"{b}.ln2.bias", rand(n_embd, scale=0.02))
        w.add_tensor(f"{b}.ffn_up.weight", rand(n_ff, n_embd))
        w.add_tensor(f"{b}.ffn_up.bias", rand(n_ff, scale=0.02))
        w.add_tensor(f"{b}.ffn_down.weight", rand(n_embd, n_ff))
        w.add_tensor(f"{b}.ffn_down.bias", rand(n_embd, scale=0.02))
    w.add_tensor("mm.0.weight", rand(n_hidden, n_embd))
    w.add_tensor("mm.0.bias", rand(n_hidden, scale=0.02))
    w.add_tensor("mm.2.weight", rand(n_embd_text, n_hidden, scale=out_scale))
    w.add_tensor("mm.2.bias", rand(n_embd_text, scale=out_scale / 10))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def make_image(seed: int = 0, size: int = 40) -> np.ndarray:
    """A deterministic (size, size, 3) uint8 RGB image: a gradient with noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], axis=-1)
    noise = rng.integers(0, 64, size=(size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """``pixels`` as a PNG file (no image library needed: zlib + the PNG chunks)."""
    import struct
    import zlib

    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
