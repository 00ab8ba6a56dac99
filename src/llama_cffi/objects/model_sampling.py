"""The sampling settings a GGUF carries (``general.sampling.*``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._bindings import log as _log
from .._bindings import model as _model

if TYPE_CHECKING:
    from .model import Model

__all__ = ["model_sampling_defaults"]


_META_KEYS = {
    "top_k": ("LLAMA_MODEL_META_KEY_SAMPLING_TOP_K", int),
    "top_p": ("LLAMA_MODEL_META_KEY_SAMPLING_TOP_P", float),
    "min_p": ("LLAMA_MODEL_META_KEY_SAMPLING_MIN_P", float),
    "xtc_probability": ("LLAMA_MODEL_META_KEY_SAMPLING_XTC_PROBABILITY", float),
    "xtc_threshold": ("LLAMA_MODEL_META_KEY_SAMPLING_XTC_THRESHOLD", float),
    "temperature": ("LLAMA_MODEL_META_KEY_SAMPLING_TEMP", float),
    "repeat_last_n": ("LLAMA_MODEL_META_KEY_SAMPLING_PENALTY_LAST_N", int),
    "repeat_penalty": ("LLAMA_MODEL_META_KEY_SAMPLING_PENALTY_REPEAT", float),
    "mirostat": ("LLAMA_MODEL_META_KEY_SAMPLING_MIROSTAT", int),
    "mirostat_tau": ("LLAMA_MODEL_META_KEY_SAMPLING_MIROSTAT_TAU", float),
    "mirostat_eta": ("LLAMA_MODEL_META_KEY_SAMPLING_MIROSTAT_ETA", float),
    "samplers": ("LLAMA_MODEL_META_KEY_SAMPLING_SEQUENCE", str),
}


def model_sampling_defaults(model: Model) -> dict[str, Any]:
    """The ``general.sampling.*`` settings a GGUF carries (only those present)."""
    out: dict[str, Any] = {}
    for name, (enum_name, conv) in _META_KEYS.items():
        key = _model.meta_key(enum_name)
        value = model.meta(key)
        if value is not None:
            try:
                out[name] = conv(value)
            except ValueError:
                _log.logger.warning("ignoring malformed %s = %r in the model", key, value)
    return out
