"""Small synthetic GGUF files written with the ``gguf`` package for tests:
a Mixture-of-Experts model (llama architecture with experts), a dense model
of the same shape (the Vulkan device tests) and a LoRA adapter for SmolLM2.
Weights are random, so output is meaningless but deterministic, which is all
placement and adapter tests need."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_EXPERT = 4
N_LAYER = 4


def _copy_tokenizer(writer: gguf.GGUFWriter, source: Path) -> int:
    """Copy the tokenizer of ``source`` (a GGUF model); returns its vocabulary size."""
    reader = gguf.GGUFReader(source)
    f = reader.fields

    def strings(key: str) -> list[bytes]:
        field = f[key]
        return [bytes(field.parts[i]) for i in field.data]

    def scalar(key: str) -> int:
        return int(f[key].parts[f[key].data[0]][0])

    tokens = strings("tokenizer.ggml.tokens")
    writer.add_tokenizer_model(bytes(f["tokenizer.ggml.model"].parts[-1]).decode())
    if "tokenizer.ggml.pre" in f:
        writer.add_tokenizer_pre(bytes(f["tokenizer.ggml.pre"].parts[-1]).decode())
    writer.add_token_list(tokens)
    types = f["tokenizer.ggml.token_type"]
    writer.add_token_types([int(types.parts[i][0]) for i in types.data])
    if "tokenizer.ggml.merges" in f:
        writer.add_token_merges(strings("tokenizer.ggml.merges"))
    writer.add_bos_token_id(scalar("tokenizer.ggml.bos_token_id"))
    writer.add_eos_token_id(scalar("tokenizer.ggml.eos_token_id"))
    return len(tokens)


def write_moe_model(path: Path, tokenizer_source: Path, seed: int = 0,
                    extra_kv: dict[str, object] | None = None) -> Path:
    """A 4-layer llama-architecture MoE (4 experts, 2 used) with ``ffn_*_exps`` tensors.

    extra_kv: more metadata (int -> uint32, float -> float32, str -> string).
    """
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in (extra_kv or {}).items():
        if isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_string(key, str(value))
    w.add_name("synthetic-moe")
    w.add_context_length(512)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_expert_count(N_EXPERT)
    w.add_expert_used_count(2)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    n_vocab = _copy_tokenizer(w, tokenizer_source)
    w.add_vocab_size(n_vocab)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    w.add_tensor("token_embd.weight", rand(n_vocab, N_EMBD))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + name + ".weight", rand(N_EMBD, N_EMBD))
        w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(p + "ffn_gate_inp.weight", rand(N_EXPERT, N_EMBD))
        w.add_tensor(p + "ffn_gate_exps.weight", rand(N_EXPERT, N_FF, N_EMBD))
        w.add_tensor(p + "ffn_up_exps.weight", rand(N_EXPERT, N_FF, N_EMBD))
        w.add_tensor(p + "ffn_down_exps.weight", rand(N_EXPERT, N_EMBD, N_FF))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


EXPERT_BYTES_PER_LAYER = 3 * N_EXPERT * N_FF * N_EMBD * 4


def write_dense_model(path: Path, tokenizer_source: Path, seed: int = 0, n_head: int = 2) -> Path:
    """A 4-layer dense llama-architecture model (f32) of the same widths as the MoE;
    2 heads of 32 (a q8_0 KV block is 32 values)."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("synthetic-dense")
    w.add_context_length(512)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(N_EMBD // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    n_vocab = _copy_tokenizer(w, tokenizer_source)
    w.add_vocab_size(n_vocab)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    w.add_tensor("token_embd.weight", rand(n_vocab, N_EMBD))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + name + ".weight", rand(N_EMBD, N_EMBD))
        w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", rand(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_up.weight", rand(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_down.weight", rand(N_EMBD, N_FF))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# bytes of one repeating layer of the dense model (f32)
DENSE_BYTES_PER_LAYER = (4 * N_EMBD * N_EMBD + 3 * N_FF * N_EMBD + 2 * N_EMBD) * 4


def write_lora(path: Path, n_embd: int, layers: range, rank: int = 8, seed: int = 0,
               scale: float = 1.0) -> Path:
    """A LoRA adapter for the ``attn_q`` weights of a llama-architecture model."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(rank))
    for i in layers:
        # ne: lora_a [n_in, r], lora_b [r, n_out]; numpy shapes are reversed.
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_a",
                     (rng.standard_normal((rank, n_embd)) * scale).astype(np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_b",
                     (rng.standard_normal((n_embd, rank)) * scale).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
