"""A drop-in for llama-cpp-python 0.3's high-level API: change ``import llama_cpp``
to ``import llama_cffi.compat as llama_cpp`` (or ``from llama_cffi.compat import Llama``).

:class:`Llama` is built on :class:`llama_cffi.LLM` and its engine;
:class:`LlamaGrammar`, :class:`LogitsProcessorList`,
:class:`StoppingCriteriaList`, :class:`LlamaState`, the prompt caches
(:class:`LlamaRAMCache`, :class:`LlamaDiskCache`), prompt-lookup decoding
(:class:`LlamaPromptLookupDecoding`), the result and request TypedDicts
(:mod:`.llama_types`) and the chat formatters (:mod:`.llama_chat_format`)
keep their llama-cpp-python names. docs/migrating.md maps every call onto
the native API. ``llama_cpp.llama_*`` C functions are not here: use the
native objects (:class:`llama_cffi.Model`, :class:`~llama_cffi.Context` ...).
"""

from __future__ import annotations

from .._version import __version__
from . import llama_chat_format, llama_types
from .llama import Llama
from .llama_cache import BaseLlamaCache, LlamaCache, LlamaDiskCache, LlamaRAMCache
from .llama_grammar import LlamaGrammar
from .llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding
from .llama_types import (
    ChatCompletionRequestAssistantMessage,
    ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage,
    ChatCompletionRequestToolMessage,
    ChatCompletionRequestUserMessage,
    ChatCompletionTool,
    CreateChatCompletionResponse,
    CreateChatCompletionStreamResponse,
    CreateCompletionResponse,
    CreateEmbeddingResponse,
)
from .state import (
    LlamaState,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

__all__ = [
    "__version__", "Llama", "LlamaGrammar", "LlamaState", "LogitsProcessor",
    "LogitsProcessorList", "StoppingCriteria", "StoppingCriteriaList", "BaseLlamaCache",
    "LlamaCache", "LlamaRAMCache", "LlamaDiskCache", "LlamaDraftModel",
    "LlamaPromptLookupDecoding", "llama_chat_format", "llama_types",
    "ChatCompletionRequestAssistantMessage", "ChatCompletionRequestMessage",
    "ChatCompletionRequestSystemMessage", "ChatCompletionRequestToolMessage",
    "ChatCompletionRequestUserMessage", "ChatCompletionTool", "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse", "CreateCompletionResponse", "CreateEmbeddingResponse",
]
