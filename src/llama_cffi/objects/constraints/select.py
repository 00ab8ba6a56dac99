"""Which grammar engine constrains a request: llguidance or llama.cpp's.

``SamplingParams.grammar_engine`` decides (llama.cpp itself chooses at build
time: ``LLAMA_LLGUIDANCE=ON`` makes a grammar that starts with
``%llguidance`` go to llguidance, any other to its own engine):

* ``"auto"`` (the default): llguidance when the package is installed (the
  ``llguidance`` extra), else llama.cpp's engine;
* ``"llguidance"``: llguidance (ValueError when it is not installed);
* ``"llama"``: llama.cpp's grammar engine (GBNF; JSON schemas through
  :func:`~llama_cffi.objects.json_schema.to_gbnf`).

With llguidance, a JSON schema, GBNF or Lark grammar that llguidance cannot
compile falls back to llama.cpp's engine, with the reason logged (logger
``llama_cffi``, level INFO); a schema that only llguidance can compile (one
llama.cpp's converter rejects) is served by llguidance. Lark text
(``%llguidance`` first) has no fallback: only llguidance reads it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from typing import TYPE_CHECKING, Any

from ..._bindings import llg as _llg
from ...errors import GrammarError, SchemaError
from ..grammar import Grammar, is_llguidance
from .guidance import GuidanceConstraint, constraint_for

if TYPE_CHECKING:
    from ..params import SamplingParams
    from ..vocab import Vocab

__all__ = ["available", "choose"]

log = logging.getLogger("llama_cffi")


def available() -> bool:
    """Whether llguidance is installed (``pip install llama-cffi[llguidance]``) and
    its library loads (:func:`llama_cffi._bindings.llg.load`)."""
    return importlib.util.find_spec("llguidance") is not None and not _llg.load()


_BOUNDS = (("minLength", "maxLength"), ("minItems", "maxItems"),
           ("minProperties", "maxProperties"), ("minimum", "maximum"))


def check_bounds(schema: Any) -> None:
    """SchemaError for a lower bound above its upper bound anywhere in
    ``schema`` (no value satisfies both). llama.cpp's converter refuses such a
    schema; llguidance would compile it and quietly generate around the
    impossible part (an optional property left out), so both engines refuse it."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError:
            return  # llguidance's own parser reports it
    stack: list[tuple[Any, str]] = [(schema, "root")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for lo_key, hi_key in _BOUNDS:
                lo, hi = node.get(lo_key), node.get(hi_key)
                if (isinstance(lo, (int, float)) and isinstance(hi, (int, float))
                        and not isinstance(lo, bool) and not isinstance(hi, bool) and lo > hi):
                    raise SchemaError(f"{path}: {lo_key} ({lo}) is larger than {hi_key} "
                                      f"({hi}): no value can satisfy both")
            stack.extend((v, f"{path}.{k}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))


def _llama(sp: SamplingParams) -> Grammar | str | None:
    if sp.json_schema is not None:
        return Grammar.from_json_schema(sp.json_schema)
    grammar: Grammar | str | None = sp.grammar
    return grammar


def choose(vocab: Vocab, sp: SamplingParams) -> tuple[GuidanceConstraint | None,
                                                      Grammar | str | None]:
    """(llguidance constraint, llama.cpp grammar) for ``sp``: at most one is set."""
    grammar: Any = sp.grammar
    if grammar is None and sp.json_schema is None:
        return None, None
    text: str | None = None if grammar is None else \
        (grammar if isinstance(grammar, str) else grammar.text)
    lark = text is not None and is_llguidance(text)
    engine = sp.grammar_engine
    if engine == "llama" or (engine == "auto" and not available()):
        if lark:
            raise ValueError("grammar: a %llguidance (Lark) grammar needs grammar_engine "
                             "'llguidance' (or 'auto' with the llguidance package installed)")
        return None, _llama(sp)
    if sp.json_schema is not None:
        kind, source = "json_schema", sp.json_schema
        check_bounds(source)
    elif lark:
        kind, source = "lark", text
    elif getattr(grammar, "root", "root") != "root":
        log.info("grammar_engine: llguidance reads GBNF from the rule 'root' only; this "
                 "grammar starts at %r, so llama.cpp's grammar engine runs it", grammar.root)
        return None, _llama(sp)
    else:
        kind, source = "gbnf", text
    try:
        return constraint_for(vocab, kind, source), None
    except GrammarError as exc:
        if lark:
            raise
        reason = str(exc)
    try:
        fallback = _llama(sp)
    except SchemaError as exc:  # neither engine takes it: say both
        raise SchemaError(f"{exc}; and {reason}") from None
    log.info("grammar_engine: %s; llama.cpp's grammar engine runs it instead", reason)
    return None, fallback
