"""``LlamaGrammar``: llama-cpp-python's grammar object, over :class:`llama_cffi.Grammar`.

>>> g = LlamaGrammar.from_string('root ::= "yes" | "no"')      # doctest: +SKIP
>>> llm("Answer: ", grammar=g)                                 # doctest: +SKIP

The grammar text is checked when it is made (a
:class:`~llama_cffi.errors.GrammarError` with line and column on a mistake),
not when it is first used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..objects.grammar import Grammar

LLAMA_GRAMMAR_DEFAULT_ROOT = "root"


class LlamaGrammar:
    """A GBNF grammar (llama.cpp's ``--grammar``).

    _grammar: the :class:`llama_cffi.Grammar` it wraps (what the native API takes).
    """

    def __init__(self, *args: Any, _grammar: Grammar, **kwargs: Any) -> None:
        self._grammar = _grammar
        self._root = _grammar.root

    @property
    def grammar(self) -> str:
        """The GBNF text."""
        return self._grammar.text

    @property
    def text(self) -> str:
        """The GBNF text (what :class:`~llama_cffi.SamplingParams` reads)."""
        return self._grammar.text

    @property
    def root(self) -> str:
        return self._root

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> LlamaGrammar:
        """A grammar from GBNF text (``verbose`` is accepted and ignored)."""
        if not isinstance(grammar, str):
            raise TypeError(f"grammar must be GBNF text, got {type(grammar).__name__}")
        return cls(_grammar=Grammar(grammar, root=LLAMA_GRAMMAR_DEFAULT_ROOT))

    @classmethod
    def from_file(cls, file: str | Path, verbose: bool = True) -> LlamaGrammar:
        """A grammar from a ``.gbnf`` file."""
        return cls.from_string(Path(file).read_text(encoding="utf-8"), verbose=verbose)

    @classmethod
    def from_json_schema(cls, json_schema: str | dict[str, Any],
                         verbose: bool = True) -> LlamaGrammar:
        """A grammar for JSON documents valid under ``json_schema`` (JSON text or a
        dict), with llama.cpp's converter rules (``--json-schema``)."""
        schema = json.loads(json_schema) if isinstance(json_schema, str) else json_schema
        return cls(_grammar=Grammar.from_json_schema(schema))

    def __repr__(self) -> str:
        return f"<LlamaGrammar {self._grammar!r}>"
