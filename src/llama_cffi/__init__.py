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

from .objects import registry as models
from .objects import rpc
from .objects import sampling
from ._version import __version__
from .objects.batch import Batch
from .objects.context import Context
from ._bindings.enums import (
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
    EngineBusyError,
    EngineDeadError,
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
from .engine.generation import Generation, TextStream
from .objects.grammar import Grammar
from .api.chat_template import ChatTemplate, TemplateError
from .api.llm import LLM, Stream
from .api.prompt_cache import DiskPromptCache, RamPromptCache
from .api.state import LLMState
from .engine.results import ToolCall
from .engine.engine import Engine
from .engine.request import RequestHandle
from .engine.results import Completion, EngineMetrics, Timings, TokenLogprob, Usage
from .objects.params import ContextParams, ModelParams, SamplingParams, SpeculativeParams
from .objects.lora import LoraAdapter
from .objects.quantize import quantize
from .engine.speculative import DraftModel, IncompatibleDraftError, NgramSimple, SpecStats
from .objects.model import Model
from .objects.chain import SamplerChain
from .objects.samplers import Candidates, PythonSampler, Sampler
from .objects.system import Backend, Device, SystemInfo, devices, system_info
from .objects.vocab import Vocab
from .objects.multimodal import Bitmap, MediaPrompt, MultimodalProjector
from .errors import MediaError, MultimodalError, MultimodalUnavailableError, ProjectorLoadError

__all__ = [
    "__version__",
    "ModelParams", "ContextParams", "SamplingParams", "SpeculativeParams",
    "Engine", "EngineMetrics", "RequestHandle", "EngineBusyError", "EngineDeadError",
    "LLM", "LLMState", "RamPromptCache", "DiskPromptCache", "ToolCall", "Completion", "Stream", "Timings", "TokenLogprob", "Usage", "ChatTemplate",
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
    "Bitmap", "MediaPrompt", "MultimodalProjector", "MediaError", "MultimodalError",
    "MultimodalUnavailableError", "ProjectorLoadError",
]
