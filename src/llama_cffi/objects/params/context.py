"""``ContextParams``: the KV cache and compute settings (``llama_context_params``)."""

from __future__ import annotations

import dataclasses

from ..._bindings.enums import FlashAttn, GGMLType, PoolingType, RopeScaling, parse_enum
from .base import (
    INT32_MAX,
    UINT32_MAX,
    _enum_parser,
    _enum_text,
    _float,
    _int,
    _opt_bool,
    _Params,
)
from .fields import document, param

# -- context -----------------------------------------------------------------------------

_QUANTIZED_KV = {GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.IQ4_NL,
                 GGMLType.Q5_0, GGMLType.Q5_1}
_KV_TYPES = tuple(m.name.lower() for m in GGMLType)


@document
@dataclasses.dataclass(frozen=True, kw_only=True)
class ContextParams(_Params):
    """The KV cache and compute settings of a context (``llama_context_params``)."""

    n_ctx: int | None = param(None, "-c", "--ctx-size", parse=int, metavar="N",
                              help="context size in tokens, 0 = the model's training context")
    n_batch: int | None = param(None, "-b", "--batch-size", parse=int, metavar="N",
                                help="most tokens one decode call may submit (logical batch)")
    n_ubatch: int | None = param(None, "-ub", "--ubatch-size", parse=int, metavar="N",
                                 help="tokens computed at once (physical batch)")
    n_seq_max: int | None = param(None, "-np", "--parallel", parse=int, metavar="N",
                                  help="number of distinct sequences (parallel slots)")
    n_threads: int | None = param(None, "-t", "--threads", parse=int, metavar="N",
                                  help="threads for generation; default: the CPUs available")
    n_threads_batch: int | None = param(
        None, "-tb", "--threads-batch", parse=int, metavar="N",
        help="threads for prompt processing; default: n_threads")
    flash_attn: FlashAttn | str | bool | None = param(
        None, "-fa", "--flash-attn", parse=_enum_parser(FlashAttn, "flash_attn"),
        format=_enum_text, choices=("on", "off", "auto"), help="Flash Attention")
    type_k: GGMLType | str | None = param(
        None, "-ctk", "--cache-type-k", parse=_enum_parser(GGMLType, "type_k"),
        format=_enum_text, choices=_KV_TYPES, help="KV cache data type for K")
    type_v: GGMLType | str | None = param(
        None, "-ctv", "--cache-type-v", parse=_enum_parser(GGMLType, "type_v"),
        format=_enum_text, choices=_KV_TYPES,
        help="KV cache data type for V (a quantized V cache needs Flash Attention)")
    rope_scaling: RopeScaling | str | None = param(
        None, "--rope-scaling", parse=_enum_parser(RopeScaling, "rope_scaling"),
        format=_enum_text, choices=("none", "linear", "yarn", "longrope"),
        help="RoPE frequency scaling method")
    rope_freq_base: float | None = param(None, "--rope-freq-base", parse=float, metavar="F",
                                         help="RoPE base frequency, 0 = from the model")
    rope_freq_scale: float | None = param(None, "--rope-freq-scale", parse=float, metavar="F",
                                          help="RoPE frequency scale factor, 0 = from the model")
    yarn_ext_factor: float | None = param(None, "--yarn-ext-factor", parse=float, metavar="F",
                                          help="YaRN extrapolation mix factor, < 0 = from model")
    yarn_attn_factor: float | None = param(None, "--yarn-attn-factor", parse=float,
                                           metavar="F", help="YaRN magnitude scaling factor")
    yarn_beta_fast: float | None = param(None, "--yarn-beta-fast", parse=float, metavar="F",
                                         help="YaRN low correction dimension")
    yarn_beta_slow: float | None = param(None, "--yarn-beta-slow", parse=float, metavar="F",
                                         help="YaRN high correction dimension")
    yarn_orig_ctx: int | None = param(None, "--yarn-orig-ctx", parse=int, metavar="N",
                                      help="YaRN original context size of the model")
    embeddings: bool | None = param(None, "--embeddings", "--embedding",
                                    help="also extract embeddings")
    pooling: PoolingType | str | None = param(
        None, "--pooling", parse=_enum_parser(PoolingType, "pooling"), format=_enum_text,
        choices=("none", "mean", "cls", "last", "rank"), help="embedding pooling")
    attention: str | None = param(None, "--attention", parse=str,
                                  choices=("causal", "non_causal"),
                                  help="attention type for embeddings")
    offload_kqv: bool | None = param(
        None, "-kvo", "--kv-offload", negative=("-nkvo", "--no-kv-offload"),
        help="keep the KV cache and attention on the device")
    op_offload: bool | None = param(
        None, "--op-offload", negative=("--no-op-offload",),
        help="offload host tensor operations to the device")
    swa_full: bool | None = param(None, "--swa-full",
                                  help="full-size cache for sliding-window attention")
    kv_unified: bool | None = param(
        None, "-kvu", "--kv-unified", negative=("-no-kvu", "--no-kv-unified"),
        help="one KV buffer shared by all sequences")
    no_perf: bool | None = param(None, "--no-perf", negative=("--perf",),
                                 help="do not measure performance timings")

    ALIASES = {"ctx_size": "n_ctx", "batch_size": "n_batch", "ubatch_size": "n_ubatch",
               "parallel": "n_seq_max", "n_parallel": "n_seq_max", "threads": "n_threads",
               "threads_batch": "n_threads_batch", "cache_type_k": "type_k",
               "cache_type_v": "type_v", "pooling_type": "pooling", "embedding": "embeddings"}

    def __post_init__(self) -> None:
        if self.n_ctx is not None:
            self._set("n_ctx", _int(self.n_ctx, "n_ctx", minimum=0, maximum=UINT32_MAX))
        for name in ("n_batch", "n_ubatch", "n_seq_max", "n_threads", "n_threads_batch"):
            value = getattr(self, name)
            if value is not None:  # uint32_t sizes, int32_t thread counts in C
                top = INT32_MAX if name.startswith("n_threads") else UINT32_MAX
                self._set(name, _int(value, name, minimum=1, maximum=top))
        if self.flash_attn is not None:
            self._set("flash_attn", parse_enum(FlashAttn, self.flash_attn, "flash_attn"))
        for name in ("type_k", "type_v"):
            value = getattr(self, name)
            if value is not None:
                self._set(name, parse_enum(GGMLType, value, name))
        if self.type_v in _QUANTIZED_KV and self.flash_attn == FlashAttn.OFF:
            raise ValueError(
                f"a quantized V cache (type_v={_enum_text(self.type_v)}) needs Flash "
                "Attention: use flash_attn='auto' or 'on', or an f16 V cache")
        if self.rope_scaling is not None:
            self._set("rope_scaling", parse_enum(RopeScaling, self.rope_scaling, "rope_scaling"))
        for name in ("rope_freq_base", "rope_freq_scale", "yarn_ext_factor", "yarn_attn_factor",
                     "yarn_beta_fast", "yarn_beta_slow"):
            value = getattr(self, name)
            if value is not None:
                self._set(name, _float(value, name))
        if self.yarn_orig_ctx is not None:
            self._set("yarn_orig_ctx", _int(self.yarn_orig_ctx, "yarn_orig_ctx", minimum=0,
                                            maximum=UINT32_MAX))
        if self.pooling is not None:
            self._set("pooling", parse_enum(PoolingType, self.pooling, "pooling"))
        if self.attention is not None:
            a = str(self.attention).replace("-", "_")
            if a not in ("causal", "non_causal"):
                raise ValueError(
                    f"attention must be 'causal' or 'non_causal', got {self.attention!r}")
            self._set("attention", a)
        for name in ("embeddings", "offload_kqv", "op_offload", "swa_full", "kv_unified",
                     "no_perf"):
            _opt_bool(getattr(self, name), name)
