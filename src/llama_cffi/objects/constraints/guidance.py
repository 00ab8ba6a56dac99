"""Grammars compiled by llguidance, and the per-request constraint that masks tokens.

:func:`compile_grammar` turns a JSON schema, a Lark grammar, a regular
expression or GBNF text into llguidance's matcher for a model's vocabulary
(:func:`~.tokenizer.tokenizer_for`), keeping the compiled matcher in a cache
keyed by the model and the grammar text (a repeated schema costs a copy of
the matcher, not a compile). :class:`GuidanceConstraint` is one request's
matcher: it computes the set of tokens the grammar allows next (a bit mask
over the vocabulary, computed by llguidance in Rust) and advances with the
chosen token. :class:`~llama_cffi.objects.chain.SamplerChain` runs it before
its samplers.

JSON schemas are compiled without free whitespace: items are separated by
``", "`` and keys by ``": "`` (llama.cpp's converter allows at most one space
there), which keeps a small model from filling its output with newlines;
``oneOf`` is read as ``anyOf`` (exclusivity not enforced) and an object's
absent ``additionalProperties`` as false (:func:`as_llama_reads`), as
llama.cpp's converter reads them.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._bindings import llg as _llg
from ...errors import GrammarError
from ..handle import Handle
from .tokenizer import Tokenizer, tokenizer_for

if TYPE_CHECKING:
    from ..._bindings.raw import CData
    from ..vocab import Vocab

__all__ = ["CACHE_SIZE", "KINDS", "GuidanceConstraint", "cache_info", "compile_grammar",
           "constraint_for"]

KINDS = ("json_schema", "lark", "regex", "gbnf")
CACHE_SIZE = 64
"""Compiled grammars kept per model (least recently used dropped first)."""
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": True, "whitespace_pattern": r"[ ]?",
                                "coerce_one_of": True}
_LANES = np.arange(32, dtype=np.int64)
_BOUND = 10**16 - 1

_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[str, str],
                                                   GuidanceConstraint | str]] = \
    weakref.WeakKeyDictionary()
_stats = {"hits": 0, "misses": 0}


def _grammar_text(kind: str, source: str) -> str:
    """llguidance's grammar for ``source`` of ``kind`` (ValueError if it cannot be read)."""
    import llguidance

    if kind == "json_schema":
        return llguidance.LLMatcher.grammar_from_json_schema(source, defaults=JSON_OPTIONS)  # type: ignore[arg-type]
    if kind == "lark":
        return llguidance.LLMatcher.grammar_from_lark(source)
    if kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(source)
    if kind == "gbnf":
        return llguidance.grammar_from("gbnf", source)
    raise ValueError(f"unknown grammar kind {kind!r}; known: {', '.join(KINDS)}")


def _compile(vocab: Vocab, kind: str, source: str, step_lexer_fuel: int = 0
             ) -> GuidanceConstraint | str:
    """A new matcher for ``source``, or llguidance's reason for refusing it."""
    tok = tokenizer_for(vocab)
    try:
        text = _grammar_text(kind, source)
    except ValueError as exc:
        return str(exc)
    c_kind = "llguidance" if text.lstrip().startswith("{") else "lark"
    found = GuidanceConstraint(tok, _llg.matcher_new(tok.ptr, c_kind, text, 0, step_lexer_fuel),
                               vocab.n_tokens, kind)
    error = found.error()
    if error is not None:
        found.close()
        return error
    return found


def compile_grammar(vocab: Vocab, kind: str, source: str) -> GuidanceConstraint:
    """The compiled matcher (in its start state) for ``source`` on ``vocab``'s
    model, from the cache when it was compiled before. GrammarError when
    llguidance cannot take it (the reason is cached too). The returned
    matcher is the cache's: copy it (:meth:`GuidanceConstraint.copy`, as
    :func:`constraint_for` does), never advance or close it."""
    owner = vocab.owner
    key = (kind, source)
    with _lock:
        entries = _cache.get(owner)
        found = entries.get(key) if entries is not None else None
        if found is not None:
            entries.move_to_end(key)  # type: ignore[union-attr]
            _stats["hits"] += 1
    if found is None:
        found = _compile(vocab, kind, source)
        with _lock:
            _stats["misses"] += 1
            entries = _cache.setdefault(owner, OrderedDict())
            old = entries.get(key)
            entries[key] = found
            while len(entries) > CACHE_SIZE:
                _, dropped = entries.popitem(last=False)
                if not isinstance(dropped, str):
                    dropped.close()
            if old is not None and not isinstance(old, str):
                old.close()  # compiled twice at once: keep one
    if isinstance(found, str):
        what = kind.replace("_", " ")
        raise GrammarError(f"llguidance cannot compile this {what}: {found.strip()}")
    return found


def as_llama_reads(schema: Any) -> Any:
    """A copy of ``schema`` in which an object schema without
    ``additionalProperties`` allows no keys beyond its ``properties``, as this
    package's converter (:func:`~llama_cffi.objects.json_schema.to_gbnf`)
    reads it, so that both engines take a schema the same way (JSON Schema
    allows other keys, which lets a small model add keys without end); and
    numbers without bounds get at most 16 digits before the point and 10
    after it (llama.cpp's converter: 16 and 16; a small model otherwise writes
    digits until ``max_tokens``), and no exponent. Output valid under the copy is valid under
    ``schema``."""
    if isinstance(schema, list):
        return [as_llama_reads(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: as_llama_reads(v) for k, v in schema.items()}
    t = out.get("type")
    if t in ("integer", "number"):  # bounded digits, as llama.cpp's converter
        out.setdefault("minimum", -_BOUND if t == "integer" else -1e16)
        out.setdefault("maximum", _BOUND if t == "integer" else 1e16)
        if t == "number" and "multipleOf" not in out:
            out["multipleOf"] = 1e-10  # the finest step llguidance computes exactly
    is_object = "properties" in out or t == "object" or (isinstance(t, list) and "object" in t)
    if is_object and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    return out


def cache_info() -> dict[str, int]:
    """Hits and misses of the compiled-grammar cache, and its entries (all models)."""
    with _lock:
        return {**_stats, "entries": sum(len(e) for e in _cache.values())}


def constraint_for(vocab: Vocab, kind: str, source: str | dict[str, Any] | bool, *,
                   step_lexer_fuel: int = 0) -> GuidanceConstraint:
    """A fresh constraint for one request (``source``: the grammar text, or a
    JSON schema as a dict); its owner closes it (the request's chain does).
    step_lexer_fuel: llguidance's limit on the lexer's work for one token mask
    (0: its default, 200000; another value compiles the grammar uncached)."""
    if kind == "json_schema" and not isinstance(source, str):
        source = as_llama_reads(source)
    text = source if isinstance(source, str) else json.dumps(source)
    if step_lexer_fuel:
        found = _compile(vocab, kind, text, step_lexer_fuel)
        if isinstance(found, str):
            raise GrammarError(f"llguidance cannot compile this grammar: {found.strip()}")
        return found
    for _ in range(3):
        template = compile_grammar(vocab, kind, text)
        with _lock:  # no cache drop closes the template while it is copied
            if not template.closed:
                return template.copy()
    raise GrammarError("the compiled grammar was dropped from the cache while in use; "
                       "try again")  # only when other threads keep evicting it


class GuidanceConstraint(Handle):
    """One grammar state: llguidance's matcher (``llama_cffi_llg_matcher *``,
    ``cdef/llg.h``) over the vocabulary of ``n_vocab`` tokens of ``tokenizer``.

    It owns its C matcher and frees it once (``close()``, or the chain that
    owns it closing; a ResourceWarning when it is collected unclosed). The
    engine's generation runs advance it in C (:attr:`ptr`). Used by one
    thread at a time (the chain that owns it); :meth:`copy` of a matcher no
    thread advances (a cached compiled one) is safe from any thread.
    """

    def __init__(self, tokenizer: Tokenizer, ptr: CData, n_vocab: int, kind: str) -> None:
        self._own(ptr, _llg.free)
        self.tokenizer = tokenizer  # its C memory outlives the matcher anyway (counted)
        self.kind = kind
        self.n_vocab = n_vocab
        self._mask = np.zeros(_llg.mask_words(ptr), dtype=np.int32)
        tokenizer.owner._adopt(self)  # closed before the model

    def copy(self) -> GuidanceConstraint:
        """A new constraint in this one's state."""
        return GuidanceConstraint(self.tokenizer, _llg.clone(self.ptr), self.n_vocab, self.kind)

    def error(self) -> str | None:
        """llguidance's error, or None."""
        return _llg.error(self.ptr)

    def allows(self, token: int) -> bool:
        """Whether the grammar allows ``token`` next."""
        return _llg.validate(self.ptr, token)

    def allowed(self) -> np.ndarray:
        """The ids of the tokens the grammar allows next (sorted int32)."""
        if not _llg.mask(self.ptr, self._mask):
            raise GrammarError(f"the grammar cannot continue: {(self.error() or '').strip()}")
        words = np.flatnonzero(self._mask)
        bits = np.unpackbits(self._mask[words].view(np.uint8), bitorder="little")
        ids = (words[:, None] * 32 + _LANES)[bits.reshape(-1, 32).astype(bool)]
        out: np.ndarray = ids[ids < self.n_vocab].astype(np.int32)
        return out

    def consume(self, token: int) -> None:
        """Advance with the chosen ``token`` (GrammarError if the grammar forbids
        it). A stopped matcher (the grammar is complete) takes no more tokens:
        the end-of-generation token it allows then leaves it as it is."""
        ptr = self.ptr
        if token in self.tokenizer.eos_tokens and _llg.stopped(ptr):
            return
        if not _llg.consume(ptr, int(token)):
            raise GrammarError(f"token {token} is not allowed by the grammar here: "
                               f"{(self.error() or '').strip()}")

    def reset(self) -> None:
        """Back to the start of the grammar."""
        if not _llg.reset(self.ptr):
            raise GrammarError(f"the grammar cannot be reset: {(self.error() or '').strip()}")

    @property
    def accepting(self) -> bool:
        """Whether the output so far is complete under the grammar."""
        return _llg.accepting(self.ptr)
    def sample(self, logits: np.ndarray, pick: Callable[[np.ndarray, np.ndarray], int],
               greedy: bool) -> int:
        """The next token under the grammar, consumed.

        logits: the output's logits (read only). pick: the chain's samplers
        run over the allowed ids (``pick(logits, ids)``, accepting the token
        in the chain). greedy: the chain is a plain arg-max, so the arg-max
        of all logits, when the grammar allows it, is the answer without
        computing the mask (the constrained arg-max is the same token).
        """
        if greedy:
            token = int(np.argmax(logits))
            if self.allows(token):
                self.consume(token)
                return token
        ids = self.allowed()
        if ids.size == 0:
            raise GrammarError("the grammar allows no token here: the output so far cannot "
                               "be continued")
        token = pick(logits, ids)
        self.consume(token)
        return token
