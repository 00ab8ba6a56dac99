"""GBNF grammars (llama.cpp's grammar format) for constrained generation.

:class:`Grammar` holds the grammar text; :meth:`Grammar.sampler` compiles it
for a model's vocabulary. The text is checked first by a syntax checker that
follows llama.cpp's parser (``src/llama-grammar.cpp``), so that a mistake is
reported as a :class:`~llama_cffi.errors.GrammarError` with line and column
(llama.cpp itself prints parse errors to stderr only).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._bindings import sampler as _sampler
from ..errors import GrammarError
from .samplers import Sampler, vocab_of

if TYPE_CHECKING:
    from .model import Model
    from .vocab import Vocab

_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_INT = re.compile(r"[0-9]+")
_ESCAPES = set('nrt\\"[]-^')
LLGUIDANCE_PREFIX = "%llguidance"


def is_llguidance(text: str) -> bool:
    """Whether grammar text is for llguidance (Lark, llama.cpp's ``%llguidance``
    prefix) rather than GBNF."""
    return text.lstrip().startswith(LLGUIDANCE_PREFIX)


class _Checker:
    """Syntax check of GBNF text, structured like llama.cpp's recursive parser."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.defined: dict[str, int] = {}
        self.used: dict[str, int] = {}

    def fail(self, message: str, pos: int) -> GrammarError:
        line = self.src.count("\n", 0, pos) + 1
        column = pos - (self.src.rfind("\n", 0, pos) + 1) + 1
        snippet = self.src[pos:pos + 30].split("\n")[0]
        return GrammarError(f"grammar error at line {line}, column {column}: {message}"
                            f" (at {snippet!r})" if snippet else
                            f"grammar error at line {line}, column {column}: {message}",
                            line=line, column=column)

    def space(self, pos: int, newline_ok: bool) -> int:
        src = self.src
        while pos < len(src):
            c = src[pos]
            if c in " \t" or (newline_ok and c in "\r\n"):
                pos += 1
            elif c == "#":
                while pos < len(src) and src[pos] not in "\r\n":
                    pos += 1
            else:
                break
        return pos

    def name(self, pos: int) -> int:
        m = _NAME.match(self.src, pos)
        if not m:
            raise self.fail("expecting name", pos)
        return m.end()

    def char(self, pos: int) -> int:
        src = self.src
        if pos >= len(src):
            raise self.fail("unexpected end of input", pos)
        if src[pos] == "\\":
            if pos + 1 >= len(src):
                raise self.fail("unexpected end of input", pos)
            e = src[pos + 1]
            widths = {"x": 2, "u": 4, "U": 8}
            if e in widths:
                digits = src[pos + 2:pos + 2 + widths[e]]
                if len(digits) != widths[e] or not all(d in "0123456789abcdefABCDEF"
                                                       for d in digits):
                    raise self.fail(f"expecting {widths[e]} hex chars", pos + 2)
                return pos + 2 + widths[e]
            if e in _ESCAPES:
                return pos + 2
            raise self.fail(f"unknown escape \\{e}", pos)
        return pos + 1

    def sequence(self, pos: int, nested: bool) -> int:
        src = self.src
        have_item = False
        while pos < len(src):
            c = src[pos]
            if c == '"':
                pos += 1
                while pos < len(src) and src[pos] != '"':
                    pos = self.char(pos)
                if pos >= len(src):
                    raise self.fail("unexpected end of input in string literal", pos)
                pos = self.space(pos + 1, nested)
            elif c == "[":
                pos += 1
                if pos < len(src) and src[pos] == "^":
                    pos += 1
                while pos < len(src) and src[pos] != "]":
                    pos = self.char(pos)
                    if pos + 1 < len(src) and src[pos] == "-" and src[pos + 1] != "]":
                        pos = self.char(pos + 1)
                if pos >= len(src):
                    raise self.fail("unexpected end of input in character class", pos)
                pos = self.space(pos + 1, nested)
            elif c in "!<":
                start = pos
                if c == "!":
                    pos += 1
                if pos >= len(src) or src[pos] != "<":
                    raise self.fail("expecting '<'", pos)
                end = src.find(">", pos)
                if end < 0:
                    raise self.fail("expecting '>'", start)
                pos = self.space(end + 1, nested)
            elif _NAME.match(src, pos):
                end = self.name(pos)
                self.used.setdefault(src[pos:end], pos)
                pos = self.space(end, nested)
            elif c == "(":
                pos = self.alternates(self.space(pos + 1, True), nested=True)
                if pos >= len(src) or src[pos] != ")":
                    raise self.fail("expecting ')'", pos)
                pos = self.space(pos + 1, nested)
            elif c == ".":
                pos = self.space(pos + 1, nested)
            elif c in "*+?":
                if not have_item:
                    raise self.fail("expecting preceding item to */+/?/{", pos)
                pos = self.space(pos + 1, nested)
                continue
            elif c == "{":
                if not have_item:
                    raise self.fail("expecting preceding item to */+/?/{", pos)
                start = pos
                pos = self.space(pos + 1, nested)
                m = _INT.match(src, pos)
                if not m:
                    raise self.fail("expecting an int", pos)
                low = int(m.group())
                pos = self.space(m.end(), nested)
                if pos < len(src) and src[pos] == ",":
                    pos = self.space(pos + 1, nested)
                    m = _INT.match(src, pos)
                    if m:
                        if int(m.group()) < low:
                            # llama.cpp computes max - min unsigned: an unbounded expansion
                            raise self.fail(f"repetition {{{low},{m.group()}}}: the maximum "
                                            f"is smaller than the minimum", start)
                        pos = self.space(m.end(), nested)
                if pos >= len(src) or src[pos] != "}":
                    raise self.fail("expecting '}'", pos)
                pos = self.space(pos + 1, nested)
                continue
            else:
                break
            have_item = True
        return pos

    def alternates(self, pos: int, nested: bool) -> int:
        pos = self.sequence(pos, nested)
        while pos < len(self.src) and self.src[pos] == "|":
            pos = self.sequence(self.space(pos + 1, True), nested)
        return pos

    def check(self, root: str) -> None:
        src = self.src
        pos = self.space(0, True)
        while pos < len(src):
            start = pos
            end = self.name(pos)
            self.defined.setdefault(src[start:end], start)
            pos = self.space(end, False)
            if not src.startswith("::=", pos):
                raise self.fail("expecting ::=", pos)
            pos = self.alternates(self.space(pos + 3, True), nested=False)
            if pos < len(src) and src[pos] == "\r":
                pos += 2 if src[pos + 1:pos + 2] == "\n" else 1
            elif pos < len(src) and src[pos] == "\n":
                pos += 1
            elif pos < len(src):
                raise self.fail("expecting newline or end", pos)
            pos = self.space(pos, True)
        for name, at in self.used.items():
            if name not in self.defined:
                raise self.fail(f"undefined rule identifier '{name}'", at)
        if not self.defined:
            raise GrammarError("the grammar is empty: it needs at least a root rule",
                               line=1, column=1)
        if root not in self.defined:
            raise GrammarError(f"the grammar has no '{root}' rule (the start symbol)",
                               line=1, column=1)


class Grammar:
    """A GBNF grammar (``--grammar`` / ``--grammar-file``).

    text: the grammar; its syntax is checked at once (GrammarError with
        line/column on a mistake). Text that starts with ``%llguidance`` is a
        Lark grammar for llguidance (llama.cpp's convention; see
        :meth:`lark`), checked when it is compiled.
    root: the start symbol (default ``root``).

    Thread safety: may be shared across threads (plain text, never changed);
    each :meth:`sampler` is a new Sampler, used by one thread at a time.
    """

    def __init__(self, text: str, *, root: str = "root") -> None:
        if not isinstance(text, str):
            raise TypeError(f"grammar text must be a str (GBNF), got {type(text).__name__}")
        if not isinstance(root, str):
            raise TypeError(f"root must be a str (a rule name), got {type(root).__name__}")
        if not is_llguidance(text):
            _Checker(text).check(root)
        self.text = text
        self.root = root

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, root: str = "root") -> Grammar:
        return cls(Path(path).read_text(encoding="utf-8"), root=root)

    @classmethod
    def from_json_schema(cls, schema: dict[str, Any] | bool | str, *,
                         prop_order: str | Sequence[str] | dict[str, int] | None = None,
                         dotall: bool = False, raw_pattern: bool = False,
                         allow_fetch: bool = False, whitespace: str = "single") -> Grammar:
        """A grammar for JSON documents valid under ``schema`` (``--json-schema``).

        The options are those of llama.cpp's ``json_schema_to_grammar.py``;
        :func:`llama_cffi.objects.json_schema.to_gbnf` describes them in full.

        prop_order: ``--prop-order``: property names to put first, in this
            order (a list, ``"a,b"``, or a mapping name -> rank).
        dotall: ``--dotall``: ``.`` in a ``pattern`` also matches newlines.
        raw_pattern: ``--raw-pattern``: a string ``pattern`` describes raw
            text, without JSON quotes or escapes.
        allow_fetch: ``--allow-fetch``: only False; a remote ``$ref`` raises
            SchemaError (nothing is fetched).
        whitespace: between JSON tokens: ``"single"`` (default, at most one
            space), ``"compact"`` (none) or ``"free"`` (llama.cpp's rule:
            newlines and indentation too).
        """
        from .json_schema import to_gbnf

        return cls(to_gbnf(schema, prop_order=prop_order, dotall=dotall,
                           raw_pattern=raw_pattern, allow_fetch=allow_fetch,
                           whitespace=whitespace))

    @classmethod
    def lark(cls, text: str) -> Grammar:
        """A Lark grammar (llguidance's syntax: ``start: ...`` rules, ``/regex/``
        terminals) for ``grammar_engine`` llguidance; the ``%llguidance``
        prefix is added when missing."""
        if not isinstance(text, str):
            raise TypeError(f"Lark grammar text must be a str, got {type(text).__name__}")
        return cls(text if is_llguidance(text) else f"{LLGUIDANCE_PREFIX} {{}}\n{text}")

    @classmethod
    def regex(cls, pattern: str) -> Grammar:
        """Output that matches the regular expression ``pattern`` in full (Rust
        regex syntax; llguidance only)."""
        if not isinstance(pattern, str):
            raise TypeError(f"regex must be a str, got {type(pattern).__name__}")
        escaped = pattern.replace("/", "\\/")
        return cls(f"{LLGUIDANCE_PREFIX} {{}}\nstart: /{escaped}/\n")

    @classmethod
    def any_json(cls) -> Grammar:
        """Any JSON value (llama.cpp's ``json.gbnf`` in spirit)."""
        from .json_schema import to_gbnf

        return cls(to_gbnf(True))

    def sampler(self, vocab: Vocab | Model, *, lazy: bool = False,
                trigger_words: Sequence[str] = (),
                trigger_patterns: Sequence[str] = (),
                trigger_tokens: Sequence[int] = ()) -> Sampler:
        """Compile for ``vocab`` into a grammar sampler for a SamplerChain.

        lazy: only constrain once a trigger appears in the output (tool calls):
            ``trigger_words`` literal strings, ``trigger_patterns`` regexes
            matched against the generated text, ``trigger_tokens`` token ids.
        """
        if is_llguidance(self.text):
            raise GrammarError("a %llguidance (Lark) grammar runs on llguidance, not on "
                               "llama.cpp's grammar engine (built without LLAMA_LLGUIDANCE): "
                               "give it as a request's grammar with grammar_engine "
                               "'llguidance'")
        v = vocab_of(vocab)
        v.require_tokenizer("compile a grammar")
        if lazy:
            trigger_patterns = [*trigger_patterns, *(re.escape(w) for w in trigger_words)]
            if not trigger_patterns and not trigger_tokens:
                raise ValueError("a lazy grammar needs trigger_patterns or trigger_tokens")
            for p in trigger_patterns:
                try:
                    re.compile(p)
                except re.error as exc:
                    raise GrammarError(f"trigger pattern {p!r} is not a regex: {exc}") from None
            tokens = [v.check_token(t) for t in trigger_tokens]
        with v.borrow() as vp:  # the model is not freed before the sampler is adopted
            if lazy:
                ptr = _sampler.grammar_lazy(vp, self.text, self.root, trigger_patterns, tokens)
            else:
                ptr = _sampler.grammar(vp, self.text, self.root)
            return Sampler(ptr, "grammar-lazy" if lazy else "grammar", kind="grammar", vocab=v)

    def __repr__(self) -> str:
        first = self.text.strip().splitlines()[0] if self.text.strip() else ""
        return f"<Grammar {first[:60]!r}>"
