"""GBNF building blocks for :mod:`llama_cffi.objects.json_schema`.

String literals, repetitions, exact integer ranges, and the translation of a
schema's ``pattern`` (an ECMA-262 regex subset) into GBNF, either over the
content of a JSON string (the default) or over raw text (``raw_pattern``,
llama.cpp's ``--raw-pattern``). Imports only the standard library and
``..errors``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import SchemaError

# -- literals and repetition ----------------------------------------------------------


def _lit(text: str) -> str:
    """A GBNF string literal for ``text``."""
    out = []
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_lit(value: Any) -> str:
    """GBNF for exactly this JSON value, compact."""
    return _lit(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _rep(item: str, lo: int, hi: int | None) -> str:
    """``item`` repeated lo..hi times (hi None: unbounded); "" for exactly zero."""
    if hi is not None and hi < lo:
        raise SchemaError(f"max ({hi}) is smaller than min ({lo})")
    if hi is None:
        if lo == 0:
            return f"({item})*"
        if lo == 1:
            return f"({item})+"
        return f"({item}){{{lo},}}"
    if lo == hi:
        return "" if lo == 0 else f"({item}){{{lo}}}"
    return f"({item}){{{lo},{hi}}}"


# -- integer ranges ---------------------------------------------------------------


def _digits_range(lo: str, hi: str) -> list[str]:
    """GBNF alternatives for the digit strings of equal length from lo to hi."""
    if not lo:
        return [""]
    if lo == hi:
        return [_lit(lo)]
    if lo[0] == hi[0]:
        rest = " | ".join(_digits_range(lo[1:], hi[1:]))
        return [f"{_lit(lo[0])} ({rest})" if rest else _lit(lo[0])]
    n = len(lo) - 1
    alts = []
    # lo[0] followed by anything >= lo[1:]
    if lo[1:] == "0" * n:
        start = int(lo[0])
    else:
        alts.append(f"{_lit(lo[0])} ({' | '.join(_digits_range(lo[1:], '9' * n))})")
        start = int(lo[0]) + 1
    # hi[0] followed by anything <= hi[1:]
    if hi[1:] == "9" * n:
        end = int(hi[0])
        tail_hi = False
    else:
        end = int(hi[0]) - 1
        tail_hi = True
    if start <= end:
        cls = f"[{start}-{end}]" if start != end else _lit(str(start))
        alts.append(f"{cls} [0-9]{{{n}}}" if n else cls)
    if tail_hi:
        alts.append(f"{_lit(hi[0])} ({' | '.join(_digits_range('0' * n, hi[1:]))})")
    return alts


def _nonneg_range(lo: int, hi: int | None) -> str:
    """GBNF for non-negative integers in [lo, hi] (hi None: unbounded), no leading zeros."""
    alts = []
    width = len(str(lo))
    if hi is None:
        alts += _width_range(lo, 10 ** width - 1)
        alts.append(f"[1-9] [0-9]{{{width},15}}")
        return " | ".join(alts)
    while lo <= hi:
        top = min(hi, 10 ** len(str(lo)) - 1)
        alts += _width_range(lo, top)
        lo = top + 1
    return " | ".join(alts)


def _width_range(lo: int, hi: int) -> list[str]:
    if lo == 0 and hi == 0:
        return ['"0"']
    if lo == 0:
        return ['"0"'] + _width_range(1, hi)
    return _digits_range(str(lo), str(hi))


def _int_range(lo: int | None, hi: int | None) -> str:
    """GBNF for an integer in [lo, hi]; None means unbounded."""
    if lo is not None and hi is not None and lo > hi:
        raise SchemaError(f"minimum {lo} is larger than maximum {hi}")
    alts = []
    # negative part: -k for k in [max(1, -hi), -lo]
    if lo is None or lo < 0:
        kmin = 1 if hi is None or hi >= 0 else -hi
        kmax = None if lo is None else -lo
        alts.append(f'"-" ({_nonneg_range(kmin, kmax)})')
    if hi is None or hi >= 0:
        alts.append(f"({_nonneg_range(max(0, lo) if lo is not None else 0, hi)})")
    return " | ".join(alts)


# -- regex patterns -> GBNF -----------------------------------------------------------

# What ``.`` becomes. In a JSON string (the default) the rule covers the
# JSON encodings of the characters: without dotall everything but the ECMA-262
# line terminators (\n, \r, U+2028, U+2029), raw or as \n, \r, \uXXXX escapes.
_HEX = "[0-9a-fA-F]"
DOT_RULES = {
    # (raw_pattern, dotall) -> rule body; (False, True) is the "char" primitive
    (False, False): (
        r'[^"\\\x7F\x00-\x1F\u2028\u2029] | [\\] (["\\/bft] | "u" ('
        f' [13-9a-fA-F] {_HEX}{{3}}'
        f' | "0" ( [1-9a-fA-F] {_HEX}{{2}} | "0" ( [1-9a-fA-F] {_HEX}'
        ' | "0" [0-9bcefBCEF] ) )'
        f' | "2" ( [1-9a-fA-F] {_HEX}{{2}} | "0" ( [013-9a-fA-F] {_HEX}'
        ' | "2" [0-7a-fA-F] ) ) ))'),
    (True, False): r"[^\n\r\u2028\u2029]",
    (True, True): r"[\U00000000-\U0010FFFF]",
}
# Class escapes as code point ranges; \s also covers \v and \f (0x09-0x0D).
_CLASS_ESCAPES = {
    "d": [(0x30, 0x39)],
    "w": [(0x61, 0x7A), (0x41, 0x5A), (0x30, 0x39), (0x5F, 0x5F)],
    "s": [(0x20, 0x20), (0x09, 0x0D)],
}
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "0": "\0"}
# Code points a JSON string cannot hold raw (DEL is legal but kept escaped, as "char").
_JSON_SPECIAL = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F)]

Ranges = list[tuple[int, int]]


class _Regex:
    """A ``pattern`` (ECMA-262 subset) as a GBNF sequence.

    raw: match the text itself (llama.cpp's ``--raw-pattern``); otherwise the
        content of a JSON string, so that characters JSON escapes are produced
        in their escaped form. dotall: ``.`` also matches line terminators
        (llama.cpp's ``--dotall``). ``used`` names the rules the result refers
        to ("char" or "dot"), which the caller must define.
    """

    def __init__(self, pattern: str, *, dotall: bool = False, raw: bool = False) -> None:
        self.p = pattern
        self.i = 0
        self.end = len(pattern)
        self.dotall = dotall
        self.raw = raw
        self.used: set[str] = set()

    def fail(self, what: str) -> SchemaError:
        return SchemaError(f"pattern {self.p!r}: {what} (at position {self.i}) is not supported")

    def parse(self) -> str:
        p = self.p
        if p.startswith("^"):
            self.i = 1
        self.end = len(p) - 1 if p.endswith("$") and not p.endswith("\\$") else len(p)
        out = self.alternation()
        if self.i != self.end:
            raise self.fail("unbalanced ')'")
        if not p.startswith("^") or self.end == len(p):
            raise SchemaError(
                f"pattern {p!r}: only patterns anchored with ^...$ are supported "
                "(an unanchored pattern allows any surrounding text)")
        return out

    def alternation(self) -> str:
        alts = [self.sequence()]
        while self.i < self.end and self.p[self.i] == "|":
            self.i += 1
            alts.append(self.sequence())
        return alts[0] if len(alts) == 1 else "(" + " | ".join(a or '""' for a in alts) + ")"

    def sequence(self) -> str:
        items = []
        while self.i < self.end and self.p[self.i] not in "|)":
            atom = self.atom()
            items.append(self.quantifier(atom))
        return " ".join(items)

    def quantifier(self, atom: str) -> str:
        if self.i >= self.end:
            return atom
        c = self.p[self.i]
        if c in "*+?":
            self.i += 1
            if self.i < self.end and self.p[self.i] == "?":
                self.i += 1  # lazy quantifier: same language
            return f"({atom}){c}"
        if c == "{":
            m = re.match(r"\{(\d+)(,(\d*))?\}", self.p[self.i:self.end])
            if not m:
                raise self.fail("malformed {m,n}")
            self.i += m.end()
            lo = int(m.group(1))
            hi = lo if not m.group(2) else (int(m.group(3)) if m.group(3) else None)
            return _rep(atom, lo, hi) or '""'
        return atom

    def atom(self) -> str:
        p = self.p
        c = p[self.i]
        if c == "(":
            self.i += 1
            if p.startswith("?:", self.i):
                self.i += 2
            elif p.startswith("?", self.i):
                raise self.fail("lookaround or named group")
            inner = self.alternation()
            if self.i >= self.end or p[self.i] != ")":
                raise self.fail("missing ')'")
            self.i += 1
            return f"({inner or chr(34) * 2})"
        if c == "[":
            return self.char_class()
        if c == ".":
            self.i += 1
            name = "char" if self.dotall and not self.raw else "dot"
            self.used.add(name)
            return name
        if c == "\\":
            ranges, negated = self.escape(in_class=False)
            if not negated and len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
                return self.literal(chr(ranges[0][0]))
            return self.char_set(ranges, negated)
        if c in "^$":
            raise self.fail("anchor inside the pattern")
        self.i += 1
        return self.literal(c)

    def literal(self, ch: str) -> str:
        return _lit(ch) if self.raw else _lit(_json_escape(ch))

    def escape(self, in_class: bool) -> tuple[Ranges, bool]:
        """The escape at self.i as (code point ranges, negated)."""
        p = self.p
        self.i += 1
        if self.i >= self.end:
            raise self.fail("trailing backslash")
        e = p[self.i]
        self.i += 1
        if e in _CLASS_ESCAPES:
            return list(_CLASS_ESCAPES[e]), False
        if e.lower() in _CLASS_ESCAPES:
            if in_class:
                raise self.fail(f"\\{e} inside [...]")
            return list(_CLASS_ESCAPES[e.lower()]), True
        if e in "xu":
            width = 2 if e == "x" else 4
            digits = p[self.i:self.i + width]
            if self.i + width > self.end or not re.fullmatch(f"[0-9a-fA-F]{{{width}}}", digits):
                raise self.fail(f"malformed \\{e} escape")
            self.i += width
            return [(int(digits, 16), int(digits, 16))], False
        if in_class and e == "b":
            return [(0x08, 0x08)], False
        if e in _SIMPLE_ESCAPES:
            cp = ord(_SIMPLE_ESCAPES[e])
            return [(cp, cp)], False
        if e.isalnum():
            raise self.fail(f"escape \\{e}")
        return [(ord(e), ord(e))], False

    def class_atom(self) -> tuple[Ranges, int | None]:
        """One member of a [...] class: its ranges and, for a single character, its code."""
        if self.p[self.i] == "\\":
            ranges, _ = self.escape(in_class=True)
            single = ranges[0][0] if len(ranges) == 1 and ranges[0][0] == ranges[0][1] else None
            return ranges, single
        cp = ord(self.p[self.i])
        self.i += 1
        return [(cp, cp)], cp

    def char_class(self) -> str:
        p = self.p
        self.i += 1
        neg = p.startswith("^", self.i)
        if neg:
            self.i += 1
        ranges: Ranges = []
        while self.i < self.end and p[self.i] != "]":
            member, single = self.class_atom()
            if single is not None and self.i + 1 < self.end and p[self.i] == "-" \
                    and p[self.i + 1] != "]":
                self.i += 1
                _, hi = self.class_atom()
                if hi is None:
                    raise self.fail("a class escape as the end of a range")
                if hi < single:
                    raise self.fail("a range out of order")
                ranges.append((single, hi))
            else:
                ranges += member
        if self.i >= self.end:
            raise self.fail("missing ']'")
        self.i += 1
        if not ranges:
            raise self.fail("an empty character class")
        return self.char_set(ranges, neg)

    def char_set(self, ranges: Ranges, negated: bool) -> str:
        body = "".join(_class_range(lo, hi) for lo, hi in ranges)
        if self.raw:
            return f"[^{body}]" if negated else f"[{body}]"
        if negated:  # never produce characters that would need JSON escaping
            return f'[^{body}"\\\\\\x00-\\x1F\\x7F]'
        # in a JSON string: characters JSON escapes become their escaped literals
        plain: Ranges = []
        escaped: list[str] = []
        for lo, hi in ranges:
            for slo, shi in _JSON_SPECIAL:
                if shi < lo or slo > hi:
                    continue
                if lo < slo:
                    plain.append((lo, slo - 1))
                escaped += [_lit(_json_escape(chr(cp))) for cp in range(max(lo, slo),
                                                                        min(hi, shi) + 1)]
                lo = shi + 1
            if lo <= hi:
                plain.append((lo, hi))
        alts = ([f"[{''.join(_class_range(lo, hi) for lo, hi in plain)}]"] if plain else [])
        alts += list(dict.fromkeys(escaped))
        return alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"


def _json_escape(ch: str) -> str:
    """How ``ch`` appears inside a JSON string."""
    return json.dumps(ch)[1:-1]


def _class_char(cp: int) -> str:
    ch = chr(cp)
    if ch in "]\\-^":
        return "\\" + ch
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
    if ch in named:
        return named[ch]
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02X}"
    return ch


def _class_range(lo: int, hi: int) -> str:
    return _class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}"
