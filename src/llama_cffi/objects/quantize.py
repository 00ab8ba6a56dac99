"""Model quantization (``llama_model_quantize``, llama.cpp's ``llama-quantize``)."""

from __future__ import annotations

import os
from pathlib import Path

from .._bindings import model as _model
from ..errors import LlamaError, ModelLoadError
from .gguf_check import check_gguf

FTYPES = {
    "f32": "LLAMA_FTYPE_ALL_F32", "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "bf16": "LLAMA_FTYPE_MOSTLY_BF16", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0", "q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K", "q3_k_s": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M", "q3_k_l": "LLAMA_FTYPE_MOSTLY_Q3_K_L",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K", "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL",
    "iq4_xs": "LLAMA_FTYPE_MOSTLY_IQ4_XS",
}


def quantize(src: str | os.PathLike[str], dst: str | os.PathLike[str], ftype: str = "q8_0", *,
             allow_requantize: bool = False, nthread: int = 0, pure: bool = False,
             quantize_output_tensor: bool = True) -> Path:
    """Write ``src`` converted to ``ftype`` (``f16``, ``q8_0``, ``q4_k_m``, ...) at ``dst``.

    allow_requantize: allow converting already quantized tensors (needed to
        make an F16 copy of a Q4 model: the weights keep the Q4 precision).
    nthread: threads, 0 = all (as ``llama-quantize``).
    pure: use ``ftype`` for every tensor (``--pure``).
    """
    if not isinstance(ftype, str):
        raise TypeError(f"ftype must be a str such as 'q8_0', got {ftype!r}")
    key = ftype.lower()
    if key not in FTYPES:
        raise ValueError(f"unknown ftype {ftype!r}; choose from {', '.join(FTYPES)}")
    src_p, dst_p = Path(src), Path(dst)
    if not src_p.is_file():
        raise FileNotFoundError(f"model file not found: {src_p}")
    try:  # llama.cpp's loader aborts on what the check refuses: see docs/safety.md
        check_gguf(src_p)
    except ModelLoadError as exc:
        raise ModelLoadError(f"quantizing {src_p} to {ftype} failed: {exc}") from None
    params = _model.quantize_default_params()
    params.ftype = _model.ftype(FTYPES[key])
    params.allow_requantize = bool(allow_requantize)
    params.nthread = int(nthread)
    params.pure = bool(pure)
    params.quantize_output_tensor = bool(quantize_output_tensor)
    tmp = dst_p.with_name(dst_p.name + ".partial")
    try:
        _model.quantize(src_p, tmp, params, what=f"quantizing {src_p} to {ftype} failed")
    except LlamaError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dst_p)
    return dst_p
