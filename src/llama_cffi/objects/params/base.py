"""Shared machinery of the parameter classes: validation helpers and ``_Params``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from enum import IntEnum
from typing import Any, TypeVar

from ..._bindings.enums import LoadMode, parse_enum

_P = TypeVar("_P", bound="_Params")
_E = TypeVar("_E", bound=IntEnum)


def _enum_text(member: IntEnum) -> str:
    """The spelling llama.cpp's flags use for an enum member."""
    if isinstance(member, LoadMode):  # IntEnums of other types may share the values
        if member is LoadMode.MMAP_MLOCK:
            return "mmap+mlock"
        if member is LoadMode.DIRECT_IO:
            return "dio"
    return member.name.lower()


def _enum_parser(enum: type[_E], what: str) -> Callable[[str], _E]:
    def parse(text: str) -> _E:
        return parse_enum(enum, text, what)

    return parse


class _Params:
    """Shared behaviour: ``replace``, dict conversion, keyword normalisation."""

    ALIASES: Mapping[str, str] = {}

    def replace(self: _P, **changes: Any) -> _P:
        """A copy with ``changes`` applied (and validated); aliases accepted."""
        return dataclasses.replace(self, **type(self).normalise(changes))  # type: ignore[type-var]

    def to_dict(self, *, only_changed: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        defaults = type(self)() if only_changed else None
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if defaults is not None and value == getattr(defaults, f.name):
                continue
            out[f.name] = value
        return out

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def normalise(cls, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """``kwargs`` with aliases resolved; unknown names raise TypeError."""
        names = cls.field_names()
        out: dict[str, Any] = {}
        for key, value in kwargs.items():
            name = cls.ALIASES.get(key, key)
            if name not in names:
                raise TypeError(f"{cls.__name__} has no parameter {key!r}; known: "
                                f"{', '.join(sorted(names))}")
            out[name] = value
        return out

    @classmethod
    def from_kwargs(cls: type[_P], base: _P | None = None, /, **kwargs: Any) -> _P:
        """``base`` (or the defaults) with ``kwargs`` applied; aliases accepted."""
        if base is not None and not isinstance(base, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(base).__name__}")
        changes = cls.normalise(kwargs)
        if base is None:
            return cls(**changes)
        return dataclasses.replace(base, **changes)  # type: ignore[type-var]

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)


INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1


def _int(value: Any, name: str, *, minimum: int | None = None,
         maximum: int | None = None) -> int:
    """``value`` as an int (an integral float is accepted); ``maximum``: the
    largest value the C field it goes to holds (cffi would raise a bare
    OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or value in (float("inf"), float("-inf")) or int(value) != value:
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def _float(value: Any, name: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if v != v:
        raise ValueError(f"{name} must not be NaN")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return v


def _opt_bool(value: Any, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return bool(value) if value is not None else None
    raise TypeError(f"{name} must be True, False or None, got {value!r}")


def _pairs(value: Any, name: str) -> tuple[tuple[Any, Any], ...]:
    if value is None:
        return ()
    items: Iterable[Any] = value.items() if isinstance(value, Mapping) else value
    out = []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"{name} must be a mapping or a sequence of pairs, got {item!r}")
        out.append((item[0], item[1]))
    return tuple(out)


