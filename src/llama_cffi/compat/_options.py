"""llama-cpp-python's ``Llama(...)`` keywords mapped onto llama_cffi's parameter objects.

Each keyword goes to one field of :class:`~llama_cffi.ModelParams`,
:class:`~llama_cffi.ContextParams` or :class:`~llama_cffi.SamplingParams`
(the llama.cpp flag is named in each row), or is handled by the Llama
itself (chat format, LoRA, draft model, seed). A keyword llama-cpp-python
does not have and llama_cffi's parameter classes do not have either raises
TypeError naming it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..objects.params import DEFAULT_SEED, split_kwargs

logger = logging.getLogger("llama_cffi")

# keyword -> (our keyword, llama.cpp flag). Values llama-cpp-python uses for
# "unspecified" (-1 enums) are dropped so that llama.cpp's own default applies.
RENAMED: dict[str, tuple[str, str]] = {
    "n_gpu_layers": ("n_gpu_layers", "-ngl"),
    "split_mode": ("split_mode", "-sm"),
    "main_gpu": ("main_gpu", "-mg"),
    "tensor_split": ("tensor_split", "-ts"),
    "vocab_only": ("vocab_only", "--vocab-only"),
    "use_mmap": ("use_mmap", "--no-mmap"),
    "use_mlock": ("use_mlock", "--mlock"),
    "kv_overrides": ("kv_overrides", "--override-kv"),
    "n_ctx": ("n_ctx", "-c"),
    "n_batch": ("n_batch", "-b"),
    "n_ubatch": ("n_ubatch", "-ub"),
    "n_threads": ("n_threads", "-t"),
    "n_threads_batch": ("n_threads_batch", "-tb"),
    "rope_scaling_type": ("rope_scaling", "--rope-scaling"),
    "pooling_type": ("pooling", "--pooling"),
    "attention_type": ("attention", "--attention"),
    "rope_freq_base": ("rope_freq_base", "--rope-freq-base"),
    "rope_freq_scale": ("rope_freq_scale", "--rope-freq-scale"),
    "yarn_ext_factor": ("yarn_ext_factor", "--yarn-ext-factor"),
    "yarn_attn_factor": ("yarn_attn_factor", "--yarn-attn-factor"),
    "yarn_beta_fast": ("yarn_beta_fast", "--yarn-beta-fast"),
    "yarn_beta_slow": ("yarn_beta_slow", "--yarn-beta-slow"),
    "yarn_orig_ctx": ("yarn_orig_ctx", "--yarn-orig-ctx"),
    "embedding": ("embeddings", "--embeddings"),
    "offload_kqv": ("offload_kqv", "-nkvo"),
    "flash_attn": ("flash_attn", "-fa"),
    "op_offload": ("op_offload", "--no-op-offload"),
    "swa_full": ("swa_full", "--swa-full"),
    "no_perf": ("no_perf", "--no-perf"),
    "type_k": ("type_k", "-ctk"),
    "type_v": ("type_v", "-ctv"),
    "last_n_tokens_size": ("repeat_last_n", "--repeat-last-n"),
    "n_parallel": ("n_seq_max", "-np"),
}

# llama-cpp-python's defaults where they differ from llama.cpp's
LCPP_DEFAULTS: dict[str, Any] = {"n_ctx": 512, "n_batch": 512, "n_ubatch": 512,
                                 "n_gpu_layers": 0, "n_seq_max": 1}

_ATTENTION = {0: "causal", 1: "non_causal"}
_ACCEPTED_NO_EFFECT = ("logits_all", "spm_infill", "verbose")


@dataclass
class Options:
    """The result of :func:`parse`: what LLM gets, and what the Llama keeps."""

    llm_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = DEFAULT_SEED
    chat_format: str | None = None
    lora_path: str | None = None
    lora_scale: float = 1.0
    draft_model: Any = None
    verbose: bool = True
    logits_all: bool = False
    vocab_only: bool = False
    spm_infill: bool = False
    mmproj: str | None = None
    """The projector GGUF of a vision ``chat_handler`` (llama.cpp's ``--mmproj``)."""


def _unspecified(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool)
                             and value == -1)


def parse(kwargs: Mapping[str, Any]) -> Options:
    """Sort ``Llama(**kwargs)`` into an :class:`Options` (TypeError for unknown names)."""
    opts = Options()
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "seed":
            if value is None or value == -1:
                value = DEFAULT_SEED
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"seed must be an int, got {value!r}")
            opts.seed = value & 0xFFFFFFFF
        elif key == "chat_format":
            if value is not None and not isinstance(value, str):
                raise TypeError(f"chat_format must be a format name, got {value!r}")
            opts.chat_format = value
        elif key == "chat_handler":
            projector = getattr(value, "clip_model_path", None)
            if isinstance(projector, str):  # a vision handler: llama.cpp's --mmproj
                opts.mmproj = projector
            elif value is not None:
                raise ValueError(
                    "chat_handler is not supported by llama_cffi.compat.Llama: chat goes "
                    "through llama.cpp's chat templates; pass chat_format='<name>' (or leave "
                    "it None for the model's own template), and use Llama.create_completion "
                    "with a prompt you format yourself for anything else")
        elif key == "tokenizer":
            if value is not None:
                raise ValueError("tokenizer= is not supported: llama_cffi always uses the "
                                 "model's own llama.cpp tokenizer")
        elif key == "lora_base":
            if value is not None:
                raise ValueError("lora_base is not supported: llama.cpp no longer takes a "
                                 "base model for LoRA adapters; pass lora_path only")
        elif key == "lora_path":
            opts.lora_path = None if value is None else os.fspath(value)
        elif key == "lora_scale":
            opts.lora_scale = float(value)
        elif key == "draft_model":
            opts.draft_model = value
        elif key == "numa":
            if value:
                logger.warning("Llama(numa=...) has no effect in llama_cffi")
        elif key in _ACCEPTED_NO_EFFECT:
            setattr(opts, key, bool(value))
        elif key in RENAMED:
            name = RENAMED[key][0]
            if key in ("rope_scaling_type", "pooling_type", "attention_type") and \
                    _unspecified(value):
                continue
            if key == "attention_type":
                value = _ATTENTION.get(value, value)
            if key == "vocab_only":
                opts.vocab_only = bool(value)
            if value is None:
                continue
            out[name] = value
        else:
            out[key] = value  # a llama_cffi parameter name, or an error below
    for name, value in LCPP_DEFAULTS.items():
        out.setdefault(name, value)
    try:
        split_kwargs(out)
    except TypeError:
        unknown = [k for k in out if _unknown(k)]
        raise TypeError(f"Llama() got an unexpected keyword argument "
                        f"{(unknown or list(out))[0]!r}") from None
    opts.llm_kwargs = out
    return opts


def _unknown(key: str) -> bool:
    try:
        split_kwargs({key: None})
    except TypeError:
        return True
    return False
