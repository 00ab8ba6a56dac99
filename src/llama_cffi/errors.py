"""Exceptions raised by llama_cffi.

All derive from :class:`LlamaError`. Where a builtin exception means the same
thing, the class also derives from it, so ``except FileNotFoundError`` or
``except ValueError`` keeps working.
"""

from __future__ import annotations


class LlamaError(Exception):
    """Base class of every error llama_cffi raises.

    ``log`` holds the warning/error lines llama.cpp logged during the failing
    call (may be empty).
    """

    def __init__(self, message: str, *, log: str = "") -> None:
        self.log = log
        super().__init__(f"{message}\nllama.cpp said:\n{log}" if log else message)


class ClosedError(LlamaError, ValueError):
    """An object was used after ``close()`` (or after its parent was closed)."""


class ModelLoadError(LlamaError, OSError):
    """A model file could not be loaded (not a GGUF, truncated, unsupported, ...)."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model path does not exist and is not a known registry name."""


class LoadCancelledError(ModelLoadError):
    """The progress callback asked to stop loading the model."""


class ContextError(LlamaError):
    """A context could not be created (too large, invalid parameters, ...)."""


class TokenError(LlamaError, ValueError):
    """A token id outside the vocabulary, or text that could not be tokenized."""


class DecodeError(LlamaError):
    """``llama_decode``/``llama_encode`` failed; ``code`` is llama.cpp's return value."""

    def __init__(self, message: str, *, code: int, log: str = "") -> None:
        self.code = code
        super().__init__(message, log=log)


class NoKvSlotError(DecodeError):
    """Return code 1: no room in the KV cache for the batch.

    Recoverable: free space (remove sequences, shift the context) or submit a
    smaller batch, then try again.
    """


class DecodeAbortedError(DecodeError):
    """Return code 2: the abort callback stopped the computation.

    The tokens of the ubatches that were already processed stay in memory.
    """


class InvalidBatchError(DecodeError, ValueError):
    """Return code -1: the batch was invalid (bad token, position or sequence id)."""


class ContextFullError(LlamaError):
    """The context has no room left for more tokens."""


class ModelFetchError(LlamaError, OSError):
    """A registry model could not be downloaded or failed its checksum."""


class GrammarError(LlamaError, ValueError):
    """A grammar that does not parse, or generation that the grammar cannot continue.

    ``line``/``column`` locate a parse error (1-based) when known.
    """

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None,
                 log: str = "") -> None:
        self.line = line
        self.column = column
        super().__init__(message, log=log)


class SchemaError(LlamaError, ValueError):
    """A JSON schema that cannot be turned into a grammar; names the feature."""


class EngineBusyError(LlamaError):
    """The engine's queue is full: retry later (a server answers 429/503)."""


class EngineDeadError(LlamaError):
    """The engine thread has stopped (closed, or failed: the cause is attached)."""


class MultimodalError(LlamaError):
    """Images or audio could not be used (libmtmd failed to encode, a text-only model, ...)."""


class MultimodalUnavailableError(MultimodalError, NotImplementedError):
    """This build has no multimodal support (it was built with ``-DLLAMA_CFFI_MTMD=OFF``)."""


class ProjectorLoadError(ModelLoadError, MultimodalError):
    """A multimodal projector (mmproj GGUF) could not be loaded, or does not fit the text model."""


class MediaError(MultimodalError, ValueError):
    """An image or audio input that cannot be used: it does not decode, has the wrong
    shape or type, or the projector does not take that kind of media."""
