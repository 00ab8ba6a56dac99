"""Constrained output with llguidance (the ``llguidance`` extra).

:mod:`.tokenizer` gives llguidance a model's vocabulary, :mod:`.guidance`
compiles grammars (cached) and masks tokens per step, :mod:`.select` chooses
between llguidance and llama.cpp's grammar engine for a request
(``SamplingParams.grammar_engine``).
"""

from .guidance import GuidanceConstraint, cache_info, compile_grammar, constraint_for
from .select import available, choose
from .tokenizer import pieces_of, tokenizer_for

__all__ = ["GuidanceConstraint", "available", "cache_info", "choose", "compile_grammar",
           "constraint_for", "pieces_of", "tokenizer_for"]
