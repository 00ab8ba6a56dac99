"""llama_cffi: Python bindings to llama.cpp's libllama through compiled cffi.

High level: :class:`LLM` (complete, stream, chat, generate_batch, async variants).

Objects (each owns one C pointer; ``close()`` or ``with`` frees it):

* :class:`Model` - a GGUF model (placement: ``n_gpu_layers``, ``split_mode``,
  ``tensor_split``, ``devices``, load mode, ...)
* :class:`Context` - KV cache and compute buffers (``n_ctx``, ``n_batch``,
  threads, flash attention, KV cache types, ...)
* :class:`Batch` - tokens to decode
* :class:`LoraAdapter` - LoRA adapters, applied per context with a scale
* :class:`SamplerChain` and the samplers in :mod:`llama_cffi.sampling`,
  :class:`PythonSampler` for samplers written in Python
* :class:`Grammar` - GBNF grammars, also from a JSON schema
* :class:`Generation` and :class:`TextStream` - the generation loop

Facts: :func:`system_info`, :func:`devices`; remote devices: :mod:`llama_cffi.rpc`. Models from the package index:
:mod:`llama_cffi.models`. llama.cpp's log goes to the ``llama_cffi`` logger
(quiet by default; ``LLAMA_CFFI_LOG=info`` shows it).
"""

from __future__ import annotations

from . import models, rpc, sampling
from ._version import __version__
from .batch import Batch
from .context import Context
from .enums import (
    FlashAttn,
    GGMLType,
    LoadMode,
    PoolingType,
    RopeScaling,
    RopeType,
    SplitMode,
    TokenAttr,
)
from .errors import (
    ClosedError,
    ContextError,
    ContextFullError,
    DecodeAbortedError,
    DecodeError,
    GrammarError,
    InvalidBatchError,
    LlamaError,
    LoadCancelledError,
    ModelFetchError,
    ModelLoadError,
    ModelNotFoundError,
    NoKvSlotError,
    SchemaError,
    TokenError,
)
from .generation import Generation, TextStream
from .grammar import Grammar
from .chat_template import ChatTemplate, TemplateError
from .llm import LLM, Completion, Stream, Timings, TokenLogprob, Usage
from .lora import LoraAdapter
from .quantize import quantize
from .speculative import DraftModel, IncompatibleDraftError, NgramSimple, SpecStats
from .model import Model
from .sampling import Candidates, PythonSampler, Sampler, SamplerChain
from .system import Backend, Device, SystemInfo, devices, system_info
from .vocab import Vocab

__all__ = [
    "__version__",
    "LLM", "Completion", "Stream", "Timings", "TokenLogprob", "Usage", "ChatTemplate",
    "TemplateError", "DraftModel", "NgramSimple", "IncompatibleDraftError", "SpecStats",
    "quantize",
    "Backend", "Batch", "Candidates", "Context", "Device", "Generation", "Grammar",
    "LoraAdapter", "Model", "PythonSampler", "Sampler", "SamplerChain", "SystemInfo", "TextStream", "Vocab",
    "FlashAttn", "GGMLType", "LoadMode", "PoolingType", "RopeScaling", "RopeType", "SplitMode",
    "TokenAttr",
    "ClosedError", "ContextError", "ContextFullError", "DecodeAbortedError", "DecodeError",
    "GrammarError", "SchemaError",
    "InvalidBatchError", "LlamaError", "LoadCancelledError", "ModelFetchError",
    "ModelLoadError", "ModelNotFoundError", "NoKvSlotError", "TokenError",
    "devices", "models", "rpc", "sampling", "system_info",
]
