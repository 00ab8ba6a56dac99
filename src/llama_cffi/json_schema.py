"""JSON schema -> GBNF grammar, so that generated text is valid JSON under a schema.

Written for llama_cffi (llama.cpp's ``json_schema_to_grammar`` is the
reference for which features matter). Supported:

* ``type`` (one or a list), ``enum``, ``const``, ``nullable`` (OpenAPI);
* objects: ``properties``, ``required``, ``additionalProperties`` (false or
  absent: no other keys, as llama.cpp; true or a schema: other keys allowed),
  ``maxProperties`` (bounds the additional keys so that the total never
  exceeds it), ``minProperties`` up to the number of required keys;
* arrays: ``items``, ``prefixItems`` (tuples), ``minItems``, ``maxItems``;
* strings: ``minLength``, ``maxLength``, ``pattern`` (a regex subset:
  literals, ``.``, classes, groups, ``|``, ``* + ? {m,n}``, ``\\d \\w \\s``),
  ``format`` date, time, date-time, uuid;
* integers: ``minimum``, ``maximum``, ``exclusiveMinimum``,
  ``exclusiveMaximum`` (exact digit-range grammars); numbers: the same with
  integer-valued bounds;
* ``anyOf``, ``oneOf`` (as alternatives: exclusivity is not enforced),
  ``allOf`` (merged), local ``$ref`` into ``$defs``/``definitions``
  (recursion allowed);
* ``True`` / ``{}``: any JSON value.

Anything else that constrains values (``not``, ``if``, ``patternProperties``,
``uniqueItems``, ``multipleOf``, ``minProperties``, ...) raises
:class:`~llama_cffi.errors.SchemaError` naming the keyword, rather than
producing output that does not validate.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import SchemaError

# Keywords that only describe or annotate: ignored.
_ANNOTATIONS = {
    "$schema", "$id", "$comment", "title", "description", "examples", "example", "default",
    "readOnly", "writeOnly", "deprecated", "$defs", "definitions", "contentMediaType",
    "contentEncoding", "discriminator", "xml", "externalDocs",
}
_HANDLED = {
    "type", "enum", "const", "nullable", "properties", "required", "additionalProperties",
    "items", "prefixItems", "minItems", "maxItems", "minLength", "maxLength", "pattern",
    "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf",
    "allOf", "$ref", "minProperties", "maxProperties",
}
_FORMATS = {"date", "time", "date-time", "uuid"}

SPACE = '| " "'
PRIMITIVES = {
    "space": SPACE,
    "boolean": '("true" | "false") space',
    "null": '"null" space',
    "char": r'[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "string": '"\\"" char* "\\"" space',
    "integral-part": "[0] | [1-9] [0-9]{0,15}",
    "decimal-part": "[0-9]{1,16}",
    "integer": '("-"? integral-part) space',
    "number": '("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)? space',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" space ( string ":" space value ("," space string ":" space value)* )? "}" space',
    "array": '"[" space ( value ("," space value)* )? "]" space',
}
_PRIMITIVE_DEPS = {
    "boolean": ["space"], "null": ["space"], "char": [], "string": ["char", "space"],
    "integral-part": [], "decimal-part": [], "integer": ["integral-part", "space"],
    "number": ["integral-part", "decimal-part", "space"],
    "value": ["object", "array", "string", "number", "boolean", "null"],
    "object": ["string", "value", "space"], "array": ["value", "space"], "space": [],
}
_FORMAT_RULES = {
    "date": '[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )',
    "time": '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? '
            '( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
    "uuid": '[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} '
            '"-" [0-9a-fA-F]{12}',
}


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
        return [f"{_lit(lo[0])} ({alt})" if alt else _lit(lo[0])
                for alt in [" | ".join(_digits_range(lo[1:], hi[1:]))]]
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


class _Regex:
    """A ``pattern`` (ECMA-262 subset) as a GBNF sequence over JSON string content."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def fail(self, what: str) -> SchemaError:
        return SchemaError(f"pattern {self.p!r}: {what} (at position {self.i}) is not supported")

    def parse(self) -> str:
        p = self.p
        if p.startswith("^"):
            self.i = 1
        end = len(p) - 1 if p.endswith("$") and not p.endswith("\\$") else len(p)
        self.end = end
        out = self.alternation()
        if self.i != end:
            raise self.fail("unbalanced ')'")
        if not p.startswith("^") or end == len(p):
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
            m = re.match(r"\{(\d+)(,(\d*))?\}", self.p[self.i:])
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
            return "char"
        if c == "\\":
            return self.escape(in_class=False)
        if c in "^$":
            raise self.fail("anchor inside the pattern")
        self.i += 1
        return _lit(_json_escape(c))

    def escape(self, in_class: bool) -> str:
        p = self.p
        self.i += 1
        if self.i >= self.end:
            raise self.fail("trailing backslash")
        e = p[self.i]
        self.i += 1
        classes = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " \\t\\n\\r"}
        if e in classes:
            return classes[e] if in_class else f"[{classes[e]}]"
        if e in "DWS":
            raise self.fail(f"\\{e}")
        simple = {"n": "\n", "t": "\t", "r": "\r"}
        ch = simple.get(e, e)
        if e.isalnum() and e not in simple:
            raise self.fail(f"escape \\{e}")
        if in_class:
            return _class_char(ch)
        return _lit(_json_escape(ch))

    def char_class(self) -> str:
        p = self.p
        self.i += 1
        neg = p.startswith("^", self.i)
        if neg:
            self.i += 1
        parts = []
        while self.i < self.end and p[self.i] != "]":
            if p[self.i] == "\\":
                parts.append(self.escape(in_class=True))
                continue
            ch = p[self.i]
            self.i += 1
            if ch in '"\\' and not neg:
                raise self.fail("a quote or backslash in a character class")
            parts.append(_class_char(ch))
            if self.i + 1 < self.end and p[self.i] == "-" and p[self.i + 1] != "]":
                self.i += 1
                hi = p[self.i]
                if hi == "\\":
                    raise self.fail("escaped range end")
                self.i += 1
                parts.append("-" + _class_char(hi))
        if self.i >= self.end:
            raise self.fail("missing ']'")
        self.i += 1
        body = "".join(parts)
        if neg:  # never produce characters that would need JSON escaping
            return f'[^{body}"\\\\\\x00-\\x1F\\x7F]'
        return f"[{body}]"


def _json_escape(ch: str) -> str:
    """How ``ch`` appears inside a JSON string."""
    return json.dumps(ch)[1:-1]


def _class_char(ch: str) -> str:
    if ch in "]\\-^":
        return "\\" + ch
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    if ch == "\r":
        return "\\r"
    return ch


# -- the converter ---------------------------------------------------------------------


class _Converter:
    def __init__(self, root_schema: Any) -> None:
        self.root_schema = root_schema
        self.rules: dict[str, str] = {}
        self.by_body: dict[str, str] = {}
        self.ref_rules: dict[str, str] = {}

    # rules
    def prim(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = PRIMITIVES[name]
            for dep in _PRIMITIVE_DEPS[name]:
                self.prim(dep)
        return name

    def add(self, hint: str, body: str) -> str:
        if body in self.by_body:
            return self.by_body[body]
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", hint).strip("-") or "rule"
        name, n = base, 1
        while name in self.rules or name in PRIMITIVES:
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = body
        self.by_body[body] = name
        return name

    # schemas
    def visit(self, schema: Any, hint: str) -> str:
        if schema is True or schema == {}:
            return self.prim("value")
        if schema is False:
            raise SchemaError(f"{hint}: the schema `false` allows no value")
        if not isinstance(schema, dict):
            raise SchemaError(f"{hint}: a schema must be an object or a boolean, "
                              f"not {type(schema).__name__}")
        unknown = set(schema) - _HANDLED - _ANNOTATIONS
        if unknown:
            raise SchemaError(f"{hint}: unsupported JSON schema keyword(s): "
                              f"{', '.join(sorted(unknown))}")
        if schema.get("nullable") is True:
            inner = {k: v for k, v in schema.items() if k != "nullable"}
            return self.add(hint, f"{self.visit(inner, hint + '-value')} | {self.prim('null')}")
        if "$ref" in schema:
            return self.ref(schema, hint)
        if "allOf" in schema:
            return self.visit(self.merge_all_of(schema), hint)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                base = {k: v for k, v in schema.items() if k != key}
                alts = [self.visit({**base, **alt} if isinstance(alt, dict) and base else alt,
                                   f"{hint}-{i}")
                        for i, alt in enumerate(schema[key])]
                if not alts:
                    raise SchemaError(f"{hint}: empty {key}")
                return self.add(hint, " | ".join(alts))
        if "const" in schema:
            self.prim("space")
            return self.add(hint, f"{_json_lit(schema['const'])} space")
        if "enum" in schema:
            self.prim("space")
            values = schema["enum"]
            if not values:
                raise SchemaError(f"{hint}: empty enum")
            return self.add(hint, "(" + " | ".join(_json_lit(v) for v in values) + ") space")
        t = schema.get("type")
        if isinstance(t, list):
            if not t:
                raise SchemaError(f"{hint}: empty type list")
            alts = [self.visit({**schema, "type": one}, f"{hint}-{one}") for one in t]
            return self.add(hint, " | ".join(alts))
        if t is None:
            if "properties" in schema or "additionalProperties" in schema:
                t = "object"
            elif "items" in schema or "prefixItems" in schema:
                t = "array"
            elif "format" in schema or "pattern" in schema or "minLength" in schema:
                t = "string"
            else:
                return self.prim("value")
        handler = {"object": self.obj, "array": self.arr, "string": self.string,
                   "integer": self.integer, "number": self.number,
                   "boolean": lambda s, h: self.prim("boolean"),
                   "null": lambda s, h: self.prim("null")}.get(t)
        if handler is None:
            raise SchemaError(f"{hint}: unknown type {t!r}")
        return handler(schema, hint)

    def ref(self, schema: dict[str, Any], hint: str) -> str:
        ref = schema["$ref"]
        if ref in self.ref_rules:
            return self.ref_rules[ref]
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"{hint}: only local $ref (#/$defs/...) is supported, got {ref!r}")
        target: Any = self.root_schema
        for part in ref.lstrip("#/").split("/") if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise SchemaError(f"{hint}: $ref {ref!r} points to nothing")
            target = target[part]
        name = self.add("ref-" + ref.split("/")[-1], f"<pending {ref}>")
        self.ref_rules[ref] = name
        body_rule = self.visit(target, name + "-body")
        del self.by_body[f"<pending {ref}>"]
        self.rules[name] = body_rule
        return name

    def merge_all_of(self, schema: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            while isinstance(part, dict) and "$ref" in part and len(part) == 1:
                part = self.resolve(part["$ref"])
            if not isinstance(part, dict):
                raise SchemaError("allOf parts must be object schemas")
            for key, value in part.items():
                if key == "properties":
                    merged.setdefault("properties", {}).update(value)
                elif key == "required":
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []),
                                                             *value]))
                elif key in merged and merged[key] != value:
                    raise SchemaError(f"allOf: conflicting values for {key!r}")
                else:
                    merged[key] = value
        return merged

    def resolve(self, ref: str) -> Any:
        target: Any = self.root_schema
        for part in ref.lstrip("#/").split("/"):
            if not isinstance(target, dict) or part not in target:
                raise SchemaError(f"$ref {ref!r} points to nothing")
            target = target[part]
        return target

    def obj(self, schema: dict[str, Any], hint: str) -> str:
        props: dict[str, Any] = schema.get("properties", {})
        required = [k for k in props if k in set(schema.get("required", []))]
        missing = set(schema.get("required", [])) - set(props)
        extra = schema.get("additionalProperties")
        if missing and extra in (None, False):
            raise SchemaError(f"{hint}: required properties {sorted(missing)} are not "
                              "defined in properties")
        optional = [k for k in props if k not in required]
        if int(schema.get("minProperties", 0)) > len(required):
            raise SchemaError(f"{hint}: minProperties larger than the number of required "
                              "properties is not supported")
        max_extra: int | None = None
        if "maxProperties" in schema:
            if int(schema["maxProperties"]) < len(required):
                raise SchemaError(f"{hint}: maxProperties is smaller than the required keys")
            if len(props) > int(schema["maxProperties"]) and optional:
                raise SchemaError(f"{hint}: maxProperties below the number of properties "
                                  "is not supported")
            max_extra = int(schema["maxProperties"]) - len(props)
        self.prim("space")
        kv = {k: self.add(f"{hint}-{k}-kv",
                          f'{_json_lit(k)} space ":" space {self.visit(v, f"{hint}-{k}")}')
              for k, v in props.items()}
        extra_kv = None
        if extra not in (None, False) and max_extra != 0:
            value = self.visit(extra if isinstance(extra, dict) else True, f"{hint}-additional")
            extra_kv = self.add(f"{hint}-additional-kv",
                                f'{self.prim("string")} ":" space {value}')
        body_parts = []
        if required:
            body_parts.append(' "," space '.join(kv[k] for k in required))
            for k in optional:
                body_parts.append(f'( "," space {kv[k]} )?')
            if extra_kv:
                body_parts.append(_rep(f'"," space {extra_kv}', 0, max_extra))
            body = " ".join(body_parts)
        else:
            tail_items = [kv[k] for k in optional] + ([extra_kv] if extra_kv else [])
            if not tail_items:
                body = ""
            else:
                alts = []
                extra_rep = (lambda n: _rep(f'"," space {extra_kv}', 0, n)) if extra_kv else None
                for i, item in enumerate(tail_items):
                    rest = []
                    for later in tail_items[i + 1:]:
                        if later == extra_kv and extra_rep:
                            rest.append(extra_rep(max_extra))
                        else:
                            rest.append(f'( "," space {later} )?')
                    if item == extra_kv and extra_rep:
                        rest.append(extra_rep(None if max_extra is None else max_extra - 1))
                    alts.append(" ".join(r for r in [item, *rest] if r))
                body = f"( {' | '.join(alts)} )?"
        return self.add(hint, f'"{{" space {body} "}}" space'.replace("  ", " "))

    def arr(self, schema: dict[str, Any], hint: str) -> str:
        self.prim("space")
        prefix = schema.get("prefixItems")
        if prefix is not None:
            if schema.get("items") not in (None, False):
                raise SchemaError(f"{hint}: prefixItems with additional items is not supported")
            items = [self.visit(s, f"{hint}-{i}") for i, s in enumerate(prefix)]
            body = ' "," space '.join(items)
            return self.add(hint, f'"[" space {body} "]" space')
        item = self.visit(schema.get("items", True), f"{hint}-item")
        lo = int(schema.get("minItems", 0))
        hi = schema.get("maxItems")
        hi = None if hi is None else int(hi)
        if hi == 0:
            return self.add(hint, '"[" space "]" space')
        rest = _rep(f'"," space {item}', max(0, lo - 1), None if hi is None else hi - 1)
        inner = f"{item} {rest}".strip()
        if lo == 0:
            inner = f"( {inner} )?"
        return self.add(hint, f'"[" space {inner} "]" space')

    def string(self, schema: dict[str, Any], hint: str) -> str:
        self.prim("space")
        fmt = schema.get("format")
        if "pattern" in schema:
            if fmt or "minLength" in schema or "maxLength" in schema:
                raise SchemaError(f"{hint}: pattern together with format/minLength/maxLength "
                                  "is not supported")
            self.prim("char")
            body = _Regex(schema["pattern"]).parse()
            return self.add(hint, f'"\\"" {body} "\\"" space')
        if fmt is not None:
            if fmt not in _FORMATS:
                raise SchemaError(f"{hint}: string format {fmt!r} is not supported "
                                  f"(supported: {', '.join(sorted(_FORMATS))})")
            if fmt == "date-time":
                inner = f'{self.add("date", _FORMAT_RULES["date"])} "T" ' \
                        f'{self.add("time", _FORMAT_RULES["time"])}'
            else:
                inner = self.add(fmt, _FORMAT_RULES[fmt])
            return self.add(hint, f'"\\"" {inner} "\\"" space')
        lo = int(schema.get("minLength", 0))
        hi = schema.get("maxLength")
        if lo == 0 and hi is None:
            return self.prim("string")
        chars = _rep(self.prim("char"), lo, None if hi is None else int(hi))
        return self.add(hint, f'"\\"" {chars} "\\"" space')

    def bounds(self, schema: dict[str, Any], integer: bool) -> tuple[int | None, int | None]:
        lo = hi = None
        for key, inclusive, is_lo in (("minimum", True, True), ("exclusiveMinimum", False, True),
                                      ("maximum", True, False), ("exclusiveMaximum", False, False)):
            if key not in schema:
                continue
            v = schema[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SchemaError(f"{key} must be a number (draft-4 boolean form is not "
                                  "supported)")
            if integer:
                import math

                b = math.ceil(v) if is_lo else math.floor(v)
                if not inclusive and b == v:
                    b = b + 1 if is_lo else b - 1
            else:
                if v != int(v):
                    raise SchemaError(f"{key}={v}: only integer-valued bounds are supported "
                                      "for type number")
                b = int(v)
                if not inclusive:
                    raise SchemaError(f"{key} on type number is not supported "
                                      "(use minimum/maximum)")
            if is_lo:
                lo = b if lo is None else max(lo, b)
            else:
                hi = b if hi is None else min(hi, b)
        return lo, hi

    def integer(self, schema: dict[str, Any], hint: str) -> str:
        lo, hi = self.bounds(schema, integer=True)
        if lo is None and hi is None:
            return self.prim("integer")
        self.prim("space")
        return self.add(hint, f"({_int_range(lo, hi)}) space")

    def number(self, schema: dict[str, Any], hint: str) -> str:
        lo, hi = self.bounds(schema, integer=False)
        if lo is None and hi is None:
            return self.prim("number")
        self.prim("space")
        frac = self.prim("decimal-part")
        zeros = '("." "0"+)?'
        alts = []
        # integral part strictly inside the range: any fraction
        inner_lo = lo
        inner_hi = None if hi is None else hi - 1
        if lo is not None and lo < 0:
            # negatives -k.f need k.f <= -lo: k in [0, -lo-1] any fraction, or k = -lo exactly
            neg_hi_k = -lo - 1
            neg_lo_k = 0 if hi is None or hi >= 0 else -hi
            if neg_lo_k <= neg_hi_k:
                alts.append(f'"-" ({_nonneg_range(neg_lo_k, neg_hi_k)}) ("." {frac})?')
            alts.append(f'"-" {_lit(str(-lo))} {zeros}')
            inner_lo = 0
        if hi is None or hi >= 0:
            start = max(0, inner_lo) if inner_lo is not None else 0
            if inner_hi is None or start <= inner_hi:
                alts.append(f'({_nonneg_range(start, inner_hi)}) ("." {frac})?')
            if hi is not None and hi >= start:
                alts.append(f"{_lit(str(hi))} {zeros}")
        elif hi is not None and hi < 0:
            alts.append(f'"-" {_lit(str(-hi))} {zeros}')
        return self.add(hint, f"({' | '.join(alts)}) space")

    def grammar(self, root_rule: str) -> str:
        rules = dict(self.rules)
        if root_rule != "root":
            rules = {"root": root_rule, **{k: v for k, v in rules.items() if k != "root"}}
        else:
            rules = {"root": rules.pop("root"), **rules}
        return "".join(f"{name} ::= {body}\n" for name, body in rules.items())


def to_gbnf(schema: dict[str, Any] | bool | str) -> str:
    """GBNF text for JSON documents that validate under ``schema``.

    ``schema`` may be a dict, a boolean, or a JSON string. ``True`` / ``{}``
    give any JSON value. Raises SchemaError for what cannot be expressed.
    """
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"the schema is not valid JSON: {exc}") from None
    conv = _Converter(schema)
    root = conv.visit(schema, "root")
    return conv.grammar(root)
