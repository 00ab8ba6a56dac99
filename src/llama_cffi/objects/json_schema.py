"""JSON schema -> GBNF grammar, so that generated text is valid JSON under a schema.

Written for llama_cffi (llama.cpp's ``json_schema_to_grammar`` is the
reference for which features matter). Supported:

* ``type`` (one or a list), ``enum``, ``const``, ``nullable`` (OpenAPI);
* objects: ``properties``, ``required``, ``additionalProperties`` (false or
  absent: no other keys, as llama.cpp; true or a schema: other keys allowed),
  ``maxProperties`` (bounds the additional keys so that the total never
  exceeds it), ``minProperties`` up to the number of required keys;
* arrays: ``items``, ``prefixItems`` (tuples; also ``items`` as a list,
  with ``additionalItems``; items after the tuple from ``items``),
  ``minItems``, ``maxItems``; one schema as ``prefixItems`` is read like
  ``items`` (ignored beside ``items``) as llama.cpp does, with a logged note;
* strings: ``minLength``, ``maxLength``, ``pattern`` (a regex subset:
  literals, ``.``, classes, groups, ``|``, ``* + ? {m,n}``,
  ``\\d \\w \\s \\D \\W \\S``, ``\\xHH \\uHHHH``; an end without its ``^``/``$``
  anchor allows any text there, as JSON Schema's search semantics), ``format``
  date, time, date-time, uuid (other formats are annotations: any string);
* integers: ``minimum``, ``maximum``, ``exclusiveMinimum``,
  ``exclusiveMaximum`` (exact digit-range grammars); numbers: the same with
  integer-valued bounds;
* ``anyOf``, ``oneOf`` (as alternatives: exclusivity is not enforced),
  ``allOf`` (merged; enums and consts intersected), local ``$ref`` (``#/$defs/...``, ``#/definitions/...``,
  any JSON pointer into the schema, or ``<root $id>#/...``; recursion
  allowed);
* ``True`` / ``{}``: any JSON value.

Anything else that constrains values (``not``, ``if``, ``patternProperties``,
``uniqueItems``, ``multipleOf``, ``minProperties``, remote ``$ref``, ...)
raises :class:`~llama_cffi.errors.SchemaError` naming the keyword, rather than
producing output that does not validate.

:func:`to_gbnf` takes the options of llama.cpp's converter
(``examples/json_schema_to_grammar.py``: ``--prop-order``, ``--dotall``,
``--raw-pattern``, ``--allow-fetch``) under the same names, plus
``whitespace``.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable
from urllib.parse import unquote

from ..errors import SchemaError
from .json_schema_gbnf import (
    DOT_RULES,
    _int_range,
    _json_lit,
    _lit,
    _nonneg_range,
    _Regex,
    _rep,
)
from .json_schema_options import PropOrder, _check_flag, _common_values, _prop_ranks

__all__ = ["PropOrder", "WHITESPACE", "to_gbnf"]

log = logging.getLogger("llama_cffi")

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

# whitespace= -> the "space" rule between tokens; "free" is llama.cpp's SPACE_RULE.
WHITESPACE = {
    "compact": '""',
    "single": '| " "',
    "free": '| " " | "\\n"{1,2} [ \\t]{0,20}',
}
SPACE = WHITESPACE["single"]
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
    "dot": [],
}
_FORMAT_RULES = {
    "date": '[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )',
    "time": '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? '
            '( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
    "uuid": '[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} '
            '"-" [0-9a-fA-F]{12}',
}


# -- the converter ---------------------------------------------------------------------


class _Converter:
    def __init__(self, root_schema: Any, *, prop_order: dict[str, int], dotall: bool,
                 raw_pattern: bool, whitespace: str) -> None:
        self.root_schema = root_schema
        self.prop_order = prop_order
        self.dotall = dotall
        self.raw_pattern = raw_pattern
        self.primitives = {**PRIMITIVES, "space": WHITESPACE[whitespace]}
        if (raw_pattern, dotall) in DOT_RULES:
            self.primitives["dot"] = DOT_RULES[raw_pattern, dotall]
        self.rules: dict[str, str] = {}
        self.by_body: dict[str, str] = {}
        self.ref_rules: dict[str, str] = {}

    # rules
    def prim(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = self.primitives[name]
            for dep in _PRIMITIVE_DEPS[name]:
                self.prim(dep)
        return name

    def add(self, hint: str, body: str) -> str:
        if body in self.by_body:
            return self.by_body[body]
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", hint).strip("-") or "rule"
        name, n = base, 1
        while name in self.rules or name in self.primitives or name == "dot":
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
        if t in ("boolean", "null"):
            return self.prim(t)
        handlers: dict[str, Callable[[dict[str, Any], str], str]] = {
            "object": self.obj, "array": self.arr, "string": self.string,
            "integer": self.integer, "number": self.number}
        if not isinstance(t, str) or t not in handlers:
            raise SchemaError(f"{hint}: unknown type {t!r}")
        return handlers[t](schema, hint)

    def ref(self, schema: dict[str, Any], hint: str) -> str:
        ref = schema["$ref"]
        if isinstance(ref, str) and ref in self.ref_rules:
            return self.ref_rules[ref]
        target = self.resolve(ref, hint)
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
                part = self.resolve(part["$ref"], "allOf")
            if not isinstance(part, dict):
                raise SchemaError("allOf parts must be object schemas")
            for key, value in part.items():
                if key == "properties":
                    merged.setdefault("properties", {}).update(value)
                elif key == "required":
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []),
                                                             *value]))
                elif key in ("enum", "const") and ("enum" in merged or "const" in merged):
                    merged["enum"] = _common_values(merged, key, value)
                    merged.pop("const", None)
                elif key in merged and merged[key] != value:
                    raise SchemaError(f"allOf: conflicting values for {key!r}")
                else:
                    merged[key] = value
        return merged

    def resolve(self, ref: Any, hint: str) -> Any:
        """The schema a local ``$ref`` (a JSON pointer into this schema) points to."""
        if not isinstance(ref, str):
            raise SchemaError(f"{hint}: $ref must be a string, not {type(ref).__name__}")
        base, _, pointer = ref.partition("#")
        root_id = self.root_schema.get("$id") if isinstance(self.root_schema, dict) else None
        if base and base != root_id:
            if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", base):
                raise SchemaError(
                    f"{hint}: $ref {ref!r} is remote: fetching it (llama.cpp's --allow-fetch) "
                    "is not supported, only local $ref (#/$defs/...) is; copy the referenced "
                    "schema into $defs")
            raise SchemaError(f"{hint}: only local $ref (#/$defs/...) is supported, got {ref!r}")
        if pointer and not pointer.startswith("/"):
            raise SchemaError(f"{hint}: $ref {ref!r}: anchors are not supported, only local "
                              "$ref with a JSON pointer (#/$defs/...)")
        target: Any = self.root_schema
        for part in pointer.split("/")[1:]:
            part = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            elif isinstance(target, dict) and part in target:
                target = target[part]
            else:
                raise SchemaError(f"{hint}: $ref {ref!r} points to nothing")
        return target

    def obj(self, schema: dict[str, Any], hint: str) -> str:
        props: dict[str, Any] = schema.get("properties", {})
        if self.prop_order:  # listed names first, by rank; the rest after, as in the schema
            ranks = self.prop_order
            props = dict(sorted(props.items(), key=lambda kv: (kv[0] not in ranks,
                                                               ranks.get(kv[0], 0))))
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

                def extra_rep(n: int | None) -> str:
                    return _rep(f'"," space {extra_kv}', 0, n)

                for i, item in enumerate(tail_items):
                    rest = []
                    for later in tail_items[i + 1:]:
                        if later == extra_kv:
                            rest.append(extra_rep(max_extra))
                        else:
                            rest.append(f'( "," space {later} )?')
                    if item == extra_kv:
                        rest.append(extra_rep(None if max_extra is None else max_extra - 1))
                    alts.append(" ".join(r for r in [item, *rest] if r))
                body = f"( {' | '.join(alts)} )?"
        return self.add(hint, f'"{{" space {body} "}}" space'.replace("  ", " "))

    def arr(self, schema: dict[str, Any], hint: str) -> str:
        self.prim("space")
        prefix = schema.get("prefixItems")
        if isinstance(prefix, (dict, bool)):  # one schema: llama.cpp reads it like items
            log.warning("%s: prefixItems as one schema, not a list, is non-standard: read "
                        "like items (ignored beside items), as llama.cpp does", hint)
            schema = {"items": prefix, **{k: v for k, v in schema.items() if k != "prefixItems"}}
            prefix = None
        extra = schema.get("items", schema.get("additionalItems") if prefix is None else None)
        if isinstance(schema.get("items"), list):  # draft 4-7 tuples: items is a list
            prefix, extra = schema["items"], schema.get("additionalItems")
        if prefix is not None:
            if not isinstance(prefix, list):
                raise SchemaError(f"{hint}: prefixItems must be a list of schemas "
                                  f"(or one schema), not {type(prefix).__name__}")
            items = [self.visit(s, f"{hint}-{i}") for i, s in enumerate(prefix)]
            lo, hi = _count_range(schema, "minItems", "maxItems", hint)
            n = len(items)
            # all positional items are written (as llama.cpp does), at most maxItems
            if hi is not None and hi < n:
                items, n = items[:hi], hi
            lo = max(lo, n)
            body, close = "", ""
            for i, it in enumerate(items):
                sep = '"," space ' if i else ""
                if i < lo:
                    body += f"{sep}{it} "
                else:  # optional from here on: nest so that item i needs item i-1
                    body += f"( {sep}{it} "
                    close += ")? "
            more = ""
            if extra not in (None, False) and (hi is None or hi > n):
                item = self.visit(True if extra is True else extra, f"{hint}-additional")
                need = max(0, lo - n)
                first = '"," space ' if n else ""
                rest = _rep(f'"," space {item}', max(0, need - 1),
                            None if hi is None else hi - n - 1)
                more = f"{first}{item} {rest}".strip()
                if need == 0:
                    more = f"( {more} )?"
            elif lo > n:
                raise SchemaError(f"{hint}: minItems ({lo}) is larger than the number of "
                                  f"prefixItems ({n}) and no more items are allowed")
            inner = f"{body}{more} {close}".strip() if n else more
            return self.add(hint, f'"[" space {inner} "]" space'.replace("  ", " "))
        item = self.visit(schema.get("items", True), f"{hint}-item")
        lo, hi = _count_range(schema, "minItems", "maxItems", hint)
        if hi == 0:
            return self.add(hint, '"[" space "]" space')
        rest = _rep(f'"," space {item}', max(0, lo - 1), None if hi is None else hi - 1)
        inner = f"{item} {rest}".strip()
        if lo == 0:
            inner = f"( {inner} )?"
        return self.add(hint, f'"[" space {inner} "]" space')

    def string(self, schema: dict[str, Any], hint: str) -> str:
        fmt = schema.get("format")
        if not (self.raw_pattern and "pattern" in schema):
            self.prim("space")
        if "pattern" in schema:
            if fmt or "minLength" in schema or "maxLength" in schema:
                raise SchemaError(f"{hint}: pattern together with format/minLength/maxLength "
                                  "is not supported")
            pattern = schema["pattern"]
            if not isinstance(pattern, str):
                raise SchemaError(f"{hint}: pattern must be a string, "
                                  f"not {type(pattern).__name__}")
            # JSON Schema patterns search: an end without its anchor allows any text there
            free_start = not pattern.startswith("^") and not self.raw_pattern
            free_end = not self.raw_pattern and not (pattern.endswith("$")
                                                     and not pattern.endswith("\\$"))
            anchored = pattern
            if free_start or free_end:
                core = pattern[1:] if pattern.startswith("^") else pattern
                if not free_end:
                    core = core[:-1]
                anchored = f"^({core})$"
            regex = _Regex(anchored, dotall=self.dotall, raw=self.raw_pattern)
            body = regex.parse()
            for name in sorted(regex.used):
                self.prim(name)
            if self.raw_pattern:  # the text itself: no quotes, no JSON escapes, no space
                return self.add(hint, body)
            if free_start or free_end:
                anything = f"{self.prim('char')}*"
                body = f"{anything if free_start else ''} ({body}) {anything if free_end else ''}"
            return self.add(hint, f'"\\"" {body.strip()} "\\"" space')
        if fmt is not None and fmt not in _FORMATS:
            if not isinstance(fmt, str):
                raise SchemaError(f"{hint}: format must be a string, not {type(fmt).__name__}")
            fmt = None  # other formats are annotations (JSON Schema 2020-12), as in llama.cpp
        if fmt is not None:
            if fmt == "date-time":
                inner = f'{self.add("date", _FORMAT_RULES["date"])} "T" ' \
                        f'{self.add("time", _FORMAT_RULES["time"])}'
            else:
                inner = self.add(fmt, _FORMAT_RULES[fmt])
            return self.add(hint, f'"\\"" {inner} "\\"" space')
        lo, hi = _count_range(schema, "minLength", "maxLength", hint)
        if lo == 0 and hi is None:
            return self.prim("string")
        chars = _rep(self.prim("char"), lo, hi)
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


def _count(schema: dict[str, Any], key: str, hint: str) -> int | None:
    """The non-negative integer ``schema[key]`` (minItems, maxLength ...), or None."""
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
            or (isinstance(value, float) and not value.is_integer()):
        raise SchemaError(f"{hint}: {key} must be a non-negative integer, got {value!r}")
    return int(value)


def _count_range(schema: dict[str, Any], lo_key: str, hi_key: str,
                 hint: str) -> tuple[int, int | None]:
    """``schema[lo_key]`` (default 0) and ``schema[hi_key]`` (None: unbounded),
    checked: non-negative integers, the minimum not above the maximum."""
    lo = _count(schema, lo_key, hint) or 0
    hi = _count(schema, hi_key, hint)
    if hi is not None and lo > hi:
        raise SchemaError(f"{hint}: {lo_key} ({lo}) is larger than {hi_key} ({hi}): "
                          "no value can satisfy both")
    return lo, hi


def to_gbnf(schema: dict[str, Any] | bool | str, *, prop_order: PropOrder | None = None,
            dotall: bool = False, raw_pattern: bool = False, allow_fetch: bool = False,
            whitespace: str = "single") -> str:
    """GBNF text for JSON documents that validate under ``schema``.

    ``schema`` may be a dict, a boolean, or a JSON string. ``True`` / ``{}``
    give any JSON value. Raises SchemaError for what cannot be expressed.
    The options match llama.cpp's ``examples/json_schema_to_grammar.py``
    (``SchemaConverter``) where they overlap; the defaults are its defaults
    and what llama-server uses for a request's ``json_schema``.

    prop_order: ``--prop-order``: the order of object properties in the
        output. Property names listed here come first, in this order (a
        list, a comma-separated string as on the command line, or a mapping
        name -> rank, lower first); the others follow in schema order. As in
        llama.cpp, required properties still come before optional ones. The
        default is the order of ``properties`` in the schema.
    dotall: ``--dotall``: ``.`` in a ``pattern`` also matches line
        terminators (newline, carriage return, U+2028, U+2029). Off by
        default, as in JSON Schema (ECMA-262) regexes, where ``.`` does not
        match them: then ``.`` matches any other character, raw or escaped.
        Note that text generated with dotall may not validate under the
        schema when ``.`` produced a newline.
    raw_pattern: ``--raw-pattern``: a string ``pattern`` describes the raw
        text itself, not a JSON string: no quotes around it, no JSON
        escaping of its characters and no whitespace after it. Use it for a
        root ``{"type": "string", "pattern": "^...$"}`` to constrain plain
        text; inside an object the result is not JSON.
    allow_fetch: ``--allow-fetch``: only False is accepted. llama_cffi never
        fetches remote schemas, so a ``$ref`` to another document raises
        SchemaError; copy the referenced schema into ``$defs`` instead.
    whitespace: the whitespace allowed between JSON tokens (no llama.cpp
        flag): ``"single"`` (default) at most one space, ``"compact"`` none,
        ``"free"`` llama.cpp's own space rule (a space, or one or two
        newlines and up to 20 spaces or tabs of indentation, so that
        pretty-printed JSON is allowed). Whitespace inside strings is
        governed by the schema, not by this option.
    """
    ranks = _prop_ranks(prop_order)
    dotall = _check_flag("dotall", dotall)
    raw_pattern = _check_flag("raw_pattern", raw_pattern)
    if _check_flag("allow_fetch", allow_fetch):
        raise ValueError("allow_fetch=True is not supported: llama_cffi does not fetch remote "
                         "schemas (llama.cpp's --allow-fetch); inline them under $defs")
    if not isinstance(whitespace, str):
        raise TypeError(f"whitespace must be a str, not {type(whitespace).__name__}")
    if whitespace not in WHITESPACE:
        raise ValueError(f"whitespace must be one of {', '.join(map(repr, WHITESPACE))}, "
                         f"not {whitespace!r}")
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"the schema is not valid JSON: {exc}") from None
    conv = _Converter(schema, prop_order=ranks, dotall=dotall, raw_pattern=raw_pattern,
                      whitespace=whitespace)
    root = conv.visit(schema, "root")
    return conv.grammar(root)
