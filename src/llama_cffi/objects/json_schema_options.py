"""Helpers of the JSON schema converter (:mod:`~llama_cffi.objects.json_schema`):
its options (``prop_order``, flags) and value sets (``allOf`` of enums)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Union

from ..errors import SchemaError

__all__ = ["PropOrder"]


PropOrder = Union[str, Sequence[str], Mapping[str, int]]
"""Property order for ``prop_order``: names ("age,name" as on llama.cpp's
command line, or a list), or a mapping name -> rank (lower first)."""


def _common_values(merged: dict[str, Any], key: str, value: Any) -> list[Any]:
    """The values both ``merged``'s enum/const and ``value`` (an enum or a const) allow."""
    have = merged["enum"] if "enum" in merged else [merged["const"]]
    other = value if key == "enum" else [value]
    if not isinstance(have, list) or not isinstance(other, list):
        raise SchemaError("allOf: enum must be a list")
    same = [v for v in have if any(json.dumps(v, sort_keys=True) == json.dumps(w, sort_keys=True)
                                   for w in other)]
    if not same:
        raise SchemaError("allOf: the enums/consts have no value in common")
    return same


def _prop_ranks(prop_order: PropOrder | None) -> dict[str, int]:
    """``prop_order`` as name -> rank, checked."""
    if prop_order is None:
        return {}
    if isinstance(prop_order, Mapping):
        ranks: dict[str, int] = {}
        for name, rank in prop_order.items():
            if not isinstance(name, str):
                raise TypeError(f"prop_order keys must be property names (str), "
                                f"not {type(name).__name__}")
            if isinstance(rank, bool) or not isinstance(rank, int):
                raise TypeError(f"prop_order[{name!r}] must be an int rank, "
                                f"not {type(rank).__name__}")
            ranks[name] = rank
        return ranks
    if isinstance(prop_order, str):
        names = [n.strip() for n in prop_order.split(",") if n.strip()]
    elif isinstance(prop_order, Sequence):
        names = list(prop_order)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"prop_order must list property names (str), "
                                f"not {type(name).__name__}")
    else:
        raise TypeError("prop_order must be a list of property names, a comma-separated "
                        f"string or a mapping name -> rank, not {type(prop_order).__name__}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"prop_order names {', '.join(map(repr, dupes))} more than once")
    return {name: i for i, name in enumerate(names)}


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value
