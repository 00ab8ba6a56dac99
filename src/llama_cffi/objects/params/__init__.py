"""Parameter objects: the single source of every setting and its default.

:class:`ModelParams` (``llama_model_params``), :class:`ContextParams`
(``llama_context_params``), :class:`SamplingParams` (a request's sampling and
stopping, as llama-server's request fields) and :class:`SpeculativeParams`
(``--spec-*``). Each is a frozen dataclass, validated when created; every
field names the llama.cpp flag it maps to. ``Model``, ``Context``, ``LLM``
and the ``llama-cffi`` command derive their arguments and flags from these
classes (see :mod:`.fields`).

A ``None`` value means "llama.cpp's default" where llama.cpp decides it at
run time (thread counts, batch sizes, flash attention ...).
"""

from .context import ContextParams
from .model import ModelParams
from .sampling import DEFAULT_SEED, DRY_SEQUENCE_BREAKERS, SamplingParams
from .speculative import SpeculativeParams, split_kwargs

__all__ = ["ContextParams", "DEFAULT_SEED", "DRY_SEQUENCE_BREAKERS", "ModelParams",
           "SamplingParams", "SpeculativeParams", "split_kwargs"]
